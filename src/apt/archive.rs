//! Reading an apt archive: each source's signed `InRelease` (or `Release` with its detached
//! signature), the `Packages` indexes it vouches for, and the `.deb` files a lock pins, every
//! one verified by its hash.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use super::sources::{AptSource, keys_for};
use super::{Candidate, Resolution, deb, index};
use crate::cache::Cache;
use crate::error::{Error, ImageError, Result};
use crate::fs::RootFs;
use crate::net::Policy;
use crate::oci::digest;

/// An index file, retried and watched like every request (indexes are a few MB at most).
async fn fetch(http: &reqwest::Client, policy: &Policy, url: &str) -> Result<Vec<u8>> {
    crate::net::get_small(http, policy, url, 512 << 20).await
}

/// Keys given for every source (a `deb:` base's: Debian's, which imgbuild carries, and a
/// mirror's own), with what to tell the user when none of them signed an index.
pub(super) struct Trusted<'a> {
    pub(super) keys: &'a [pgp::composed::SignedPublicKey],
    pub(super) hint: String,
}

/// What a failed signature check says to do, for a base image's own sources.
const BASE_KEYS_HINT: &str = "The keys are the base image's (/etc/apt/trusted.gpg.d and the source's Signed-By): add the repository's key there";

/// Read every source's verified indexes and return the candidates for `arch`. Each source is
/// verified against its keys in `fs` ([`keys_for`]), or against `trusted` when given.
pub(super) async fn candidates(
    fs: &RootFs,
    sources: &[AptSource],
    trusted: Option<&Trusted<'_>>,
    arch: &str,
    http: &reqwest::Client,
    policy: &Policy,
    cache: &Cache,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for src in sources {
        let base = format!("{}/dists/{}", src.uri, src.suite);
        let keys = trusted.map_or_else(|| keys_for(fs, src), |t| t.keys.to_vec());
        let hint = trusted.map_or(BASE_KEYS_HINT, |t| t.hint.as_str());
        let untrusted = |file: &str, why: String| {
            Error::from(ImageError::Package(format!(
                "{base}/{file}: signature check failed: {why}. {hint}"
            )))
        };
        // InRelease (clearsigned), else Release with its detached Release.gpg, as apt does.
        let text = match fetch(http, policy, &format!("{base}/InRelease")).await {
            Ok(inrelease) => index::verify_inrelease(&String::from_utf8_lossy(&inrelease), &keys)
                .map_err(|why| untrusted("InRelease", why))?,
            Err(_) => {
                let release = fetch(http, policy, &format!("{base}/Release")).await?;
                let sig = fetch(http, policy, &format!("{base}/Release.gpg")).await?;
                index::verify_detached(&release, &sig, &keys)
                    .map_err(|why| untrusted("Release.gpg", why))?;
                String::from_utf8_lossy(&release).into_owned()
            }
        };
        let release = index::stanzas(&text).into_iter().next().unwrap_or_default();
        let hashes = index::release_hashes(&release);
        for comp in &src.components {
            let stem = format!("{comp}/binary-{arch}/Packages");
            let chosen = ["xz", "gz", ""].iter().find_map(|ext| {
                let name = if ext.is_empty() {
                    stem.clone()
                } else {
                    format!("{stem}.{ext}")
                };
                hashes.get(&name).map(|h| (name, h.clone()))
            });
            let Some((name, (sha, size))) = chosen else {
                continue;
            };
            let url = format!("{base}/{name}");
            // Indexes live in the content-addressed cache under the hash the Release names.
            let cached = digest::parse(&format!("sha256:{sha}"))
                .ok()
                .filter(|d| cache.has_blob(d));
            let bytes = match cached {
                Some(d) => cache.read_verified(&d)?,
                None => {
                    let bytes = fetch(http, policy, &url).await?;
                    let actual = hex::encode(Sha256::digest(&bytes));
                    if actual != sha || bytes.len() as u64 != size {
                        return Err(Error::DigestMismatch {
                            what: format!("{url} (against the hash in its signed Release file)"),
                            expected: format!("sha256:{sha}"),
                            actual: format!("sha256:{actual}"),
                        });
                    }
                    cache.put_bytes(&bytes)?;
                    bytes
                }
            };
            let mut raw = Vec::new();
            deb::decoder(&name, std::io::Cursor::new(bytes), &url)?
                .read_to_end(&mut raw)
                .map_err(|e| Error::from(ImageError::Package(format!("{url}: {e}"))))?;
            let text = String::from_utf8_lossy(&raw);
            for s in index::stanzas(&text) {
                let (Some(name), Some(version), Some(file), Some(sha)) = (
                    s.get("Package"),
                    s.get("Version"),
                    s.get("Filename"),
                    s.get("SHA256"),
                ) else {
                    continue;
                };
                let a = s.get("Architecture").cloned().unwrap_or_default();
                if a != arch && a != "all" {
                    continue;
                }
                out.push(Candidate {
                    name: name.clone(),
                    version: version.clone(),
                    architecture: a,
                    url: format!("{}/{}", src.uri, file.trim_start_matches('/')),
                    filename: file.trim_start_matches('/').to_string(),
                    sha256: sha.to_ascii_lowercase(),
                    size: s.get("Size").and_then(|v| v.parse().ok()).unwrap_or(0),
                    stanza: s.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Download (or find in the cache) each locked `.deb`, verified by its SHA256; the downloads
/// shown by `reporter` as one task (`downloading N Debian packages`).
pub async fn fetch_debs(
    res: &Resolution,
    cache: &Cache,
    http: &reqwest::Client,
    policy: &Policy,
    reporter: &dyn crate::report::Reporter,
) -> Result<()> {
    let mut missing = Vec::new();
    for p in &res.lock.packages {
        let d = digest::parse(&format!("sha256:{}", p.sha256))?;
        if !cache.has_blob(&d) {
            missing.push((p, d));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let total: u64 = missing.iter().map(|(p, _)| p.size).sum();
    let (n, plural) = (missing.len(), if missing.len() == 1 { "" } else { "s" });
    let progress = reporter.task("downloading", &format!("{n} Debian package{plural}"), total);
    for (p, d) in missing {
        // The mirrors first (an air-gapped site's own), then where the lock found it.
        let mut urls: Vec<String> = res
            .mirrors
            .iter()
            .filter(|_| !p.filename.is_empty())
            .map(|m| format!("{m}/{}", p.filename))
            .collect();
        if !urls.contains(&p.url) {
            urls.push(p.url.clone());
        }
        let mut tried = Vec::new();
        for url in &urls {
            let what = format!("{url} (against the SHA256 in Packages / imgbuild.lock)");
            // Retried, watched for stalls, resumed with a range where it breaks off.
            let got = crate::net::download(policy, url, &what, cache, &d, &progress, |offset| {
                crate::net::get_url(http, policy, url, offset)
            })
            .await;
            match got {
                Ok(_) => break,
                Err(e @ Error::DigestMismatch { .. }) => {
                    progress.done("failed");
                    return Err(naming_the_package(p, e));
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        if !cache.has_blob(&d) {
            progress.done("failed");
            return Err(crate::net::NetError::Unreachable {
                who: format!("every source of {} {}", p.name, p.version),
                detail: tried.join("; "),
                attempts: urls.len() as u32,
                hint: "check the apt sources (--apt-source) and the network".into(),
            }
            .into());
        }
    }
    progress.done(&format!(
        "done: {n} package{plural}, {}",
        crate::report::human_size(total)
    ));
    Ok(())
}

/// A `.deb` that is not the bytes its index and the lock pin: the error names the package
/// and its version before the URL and the two SHA256 sums.
fn naming_the_package(p: &super::Locked, e: Error) -> Error {
    match e {
        Error::DigestMismatch {
            what,
            expected,
            actual,
        } => Error::DigestMismatch {
            what: format!("package {} {}: {what}", p.name, p.version),
            expected,
            actual,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_deb_is_named_by_package() {
        let p = super::super::Locked {
            name: "libssl3".into(),
            version: "3.0.17-1~deb12u2".into(),
            architecture: "amd64".into(),
            sha256: "ab".repeat(32),
            size: 1,
            url:
                "http://mirror.local/debian/pool/main/o/openssl/libssl3_3.0.17-1~deb12u2_amd64.deb"
                    .into(),
            filename: "pool/main/o/openssl/libssl3_3.0.17-1~deb12u2_amd64.deb".into(),
        };
        let e = Error::DigestMismatch {
            what: format!("{} (against the SHA256 in Packages / imgbuild.lock)", p.url),
            expected: format!("sha256:{}", p.sha256),
            actual: format!("sha256:{}", "cd".repeat(32)),
        };
        let said = naming_the_package(&p, e).to_string();
        assert!(
            said.starts_with("package libssl3 3.0.17-1~deb12u2: http://mirror.local/debian/pool/")
                && said.contains("SHA256")
                && said.contains(&format!("expected sha256:{}", "ab".repeat(32))),
            "{said}"
        );
        // Other errors pass through as they are.
        let other = naming_the_package(&p, Error::Usage("x".into()));
        assert!(matches!(other, Error::Usage(m) if m == "x"));
    }
}
