//! The release's layers: each found in the local layer cache, else in the cache repository
//! (`--cache-repo`, checked against the release), else written — and then shared there.

use crate::cache::Cache;
use crate::context::Context;
use crate::error::{Error, ImageError, Result};
use crate::layer::{self, LayerBlob, TarOptions};
use crate::observe::Observer;
use crate::oci::{Blob, Layer};
use crate::pipeline::cache_repo::{CacheRepo, RemoteLayer};
use crate::release::LayerPlan;
use crate::report::human_size;
use oci_spec::image::Digest;

/// Where a layer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Tarred and compressed now.
    Written,
    /// The local layer cache had it.
    Local,
    /// The cache repository had it: it is mounted, never downloaded or compressed here.
    CacheRepo,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Written => "written",
            Origin::Local => "cache",
            Origin::CacheRepo => "cache-repo",
        }
    }
}

/// The layers of `plans`, in order, each with where it came from. The observer is told of
/// each layer written here as soon as it is made, while the rest of the build goes on (a push
/// sends it ahead: `sink::registry::SendAhead`).
pub(crate) async fn release_layers(
    plans: Vec<LayerPlan>,
    opts: TarOptions,
    cache_repo: Option<&CacheRepo>,
    observer: Option<&dyn Observer>,
    cx: Context<'_>,
) -> Result<Vec<(Layer, Origin)>> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    let plans = std::sync::Arc::new(plans);
    // The keys, and the layers the local cache has.
    let (p, c) = (plans.clone(), cache.clone());
    let keyed: Vec<(Digest, Option<LayerBlob>)> = crate::blocking(move || {
        each(&p, |plan| {
            let key = layer::layer_key(&plan.entries, opts, &c)?;
            let hit = layer::cached(&c, &key)?;
            Ok((key, hit))
        })
    })
    .await?;
    // The cache repository, for the others.
    let mut remote: Vec<Option<RemoteLayer>> = vec![None; plans.len()];
    if let Some(repo) = cache_repo {
        let asks = keyed.iter().map(|(key, hit)| async move {
            match hit {
                Some(_) => None,
                None => repo.layer(client, key, reporter).await,
            }
        });
        remote = futures_util::future::join_all(asks).await;
        // A hit counts only when its diff_id is the tar this release gives (hashed here, not
        // compressed): the image's config then names exactly these bytes.
        if remote.iter().any(Option::is_some) {
            let (p, r) = (plans.clone(), remote.clone());
            let ids: Vec<Option<Digest>> = crate::blocking(move || {
                each_indexed(&p, |i, plan| match &r[i] {
                    Some(_) => layer::diff_id(&plan.entries, opts).map(Some),
                    None => Ok(None),
                })
            })
            .await?;
            for (i, id) in ids.into_iter().enumerate() {
                if let (Some(hit), Some(id)) = (&remote[i], id)
                    && hit.diff_id != id
                {
                    reporter.warn(&format!(
                        "cache repository {}: the entry for the {} layer names diff_id {}, but this release's tar is {id}: a stale or poisoned entry; making the layer here",
                        repo.reference().name(),
                        plans[i].kind.as_str(),
                        hit.diff_id
                    ));
                    remote[i] = None;
                }
            }
        }
    }
    // The rest is written, every layer on its own thread, and each one, as soon as it is
    // made, sent ahead to where the build is to be pushed and to the cache repository.
    let todo: Vec<Option<Digest>> = keyed
        .iter()
        .zip(&remote)
        .map(|((key, hit), r)| (hit.is_none() && r.is_none()).then(|| key.clone()))
        .collect();
    let writes = todo.iter().enumerate().map(|(i, key)| {
        let plans = plans.clone();
        async move {
            let Some(key) = key else {
                return Ok(None);
            };
            let (c, k, p) = (cache.clone(), key.clone(), plans.clone());
            let progress = reporter.task(
                "writing",
                &format!("layer {}", plans[i].kind.as_str()),
                layer::input_size(&plans[i].entries),
            );
            let shown = progress.clone();
            let (blob, reused) =
                crate::blocking(move || layer::write_keyed(&p[i].entries, opts, &c, &k, &shown))
                    .await?;
            progress.done(&if reused {
                "done by another platform's build".to_string()
            } else {
                format!("done: {} compressed", human_size(blob.size))
            });
            if !reused {
                if let Some(o) = observer {
                    o.layer_written(&local_layer(&blob, &plans[i], cache), cx)
                        .await;
                }
                if let Some(repo) = cache_repo.filter(|r| r.writable()) {
                    repo.put_layer(client, cache, key, &blob, reporter).await;
                }
            }
            Ok::<_, Error>(Some((blob, reused)))
        }
    });
    let written: Vec<Option<(LayerBlob, bool)>> =
        futures_util::future::try_join_all(writes).await?;
    let mut out = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let (layer, origin) = match (&keyed[i].1, &remote[i], &written[i]) {
            (Some(local), _, _) => (local_layer(local, plan, cache), Origin::Local),
            (None, Some(hit), _) => (
                Layer {
                    blob: cache_repo_blob(cache_repo, hit)?,
                    diff_id: hit.diff_id.clone(),
                    kind: plan.kind,
                },
                Origin::CacheRepo,
            ),
            (None, None, Some((blob, reused))) => (
                local_layer(blob, plan, cache),
                if *reused {
                    Origin::Local
                } else {
                    Origin::Written
                },
            ),
            (None, None, None) => {
                return Err(ImageError::Internal(format!(
                    "the {} layer was neither found nor written",
                    plan.kind.as_str()
                ))
                .into());
            }
        };
        reporter.step(&format!(
            "layer {:<8} {} ({}){}",
            plan.kind.as_str(),
            layer.blob.digest,
            human_size(layer.blob.size),
            match origin {
                Origin::Written => "",
                Origin::Local => ", unchanged: reused",
                Origin::CacheRepo => ", from the cache repository",
            }
        ));
        out.push((layer, origin));
    }
    Ok(out)
}

fn cache_repo_blob(repo: Option<&CacheRepo>, hit: &RemoteLayer) -> Result<Blob> {
    repo.map(|r| r.blob_of(hit)).ok_or_else(|| {
        Error::from(ImageError::Internal(
            "a cache repository layer without a cache repository".into(),
        ))
    })
}

fn local_layer(b: &LayerBlob, plan: &LayerPlan, cache: &Cache) -> Layer {
    b.layer(plan.kind, cache)
}

/// `f` for every plan, one thread each (the layers are independent; hashing and compression
/// dominate), results in order.
fn each<T: Send>(
    plans: &[LayerPlan],
    f: impl Fn(&LayerPlan) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    each_indexed(plans, |_, p| f(p))
}

fn each_indexed<T: Send>(
    plans: &[LayerPlan],
    f: impl Fn(usize, &LayerPlan) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| s.spawn(move || f(i, plan)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::from(ImageError::Internal(
                        "a layer writer panicked".to_string(),
                    )))
                })
            })
            .collect()
    })
}
