//! The pipeline's stages run without a registry: a release made on disk, built on `scratch`
//! with a cache in a temporary directory and a client that is never asked for anything.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::cache::Cache;
use crate::registry::{Anonymous, ClientOptions, RegistryClient};
use crate::report::Silent;

/// A mix release as `mix release` lays it out, small: ERTS, one application, the start
/// script (a shell script, as mix writes it) and the boot files.
fn release(dir: &Path) {
    let write = |p: &str, text: &str| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("releases/start_erl.data", "14.2.5 0.1.0\n");
    write(
        "releases/0.1.0/hello.rel",
        "{release,{\"hello\",\"0.1.0\"},{erts,\"14.2.5\"},[{kernel,\"9.2.4\"},{hello,\"0.1.0\"}]}.\n",
    );
    write("releases/0.1.0/start.boot", "boot");
    write("releases/0.1.0/vm.args", "-name hello\n");
    write("releases/COOKIE", "secret-cookie\n");
    write("bin/hello", "#!/bin/sh\nexec \"$0\" start\n");
    write("erts-14.2.5/bin/erlexec", "not an ELF file in this test");
    write(
        "lib/kernel-9.2.4/ebin/kernel.app",
        "{application,kernel,[]}.\n",
    );
    write(
        "lib/hello-0.1.0/ebin/hello.app",
        "{application,hello,[]}.\n",
    );
    write("lib/hello-0.1.0/ebin/Elixir.Hello.beam", "beam");
}

fn request(dir: &Path, check: bool) -> BuildRequest {
    BuildRequest {
        release_dir: dir.to_path_buf(),
        from: Source::Scratch,
        platform: None,
        platforms: vec![],
        otp_from: None,
        releases: vec![],
        tags: vec![],
        settings: ImageSettings {
            workdir: "/app".into(),
            ..Default::default()
        },
        own_apps: vec![],
        drop_cookie: true,
        compression: (Codec::Gzip, 6),
        check,
        sbom_out: None,
        packages: Default::default(),
        cache_repo: None,
        launcher: Default::default(),
        debug: None,
    }
}

/// A release on disk, an empty cache and a client that is never asked for anything.
struct Lab {
    release: tempfile::TempDir,
    _store: tempfile::TempDir,
    cache: Cache,
    client: RegistryClient,
}

impl Lab {
    fn new() -> Lab {
        let (rel, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        release(rel.path());
        Lab {
            cache: Cache::open(store.path()).unwrap(),
            client: RegistryClient::new(ClientOptions::default(), Arc::new(Anonymous)).unwrap(),
            release: rel,
            _store: store,
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            cache: &self.cache,
            client: &self.client,
            reporter: &Silent,
        }
    }
}

/// Told of every base and every layer written.
#[derive(Default)]
struct Seen {
    bases: Mutex<Vec<usize>>,
    written: Mutex<Vec<String>>,
}

impl Observer for Seen {
    fn base(&self, platform: usize, _: &Image) {
        self.bases.lock().unwrap().push(platform);
    }
    fn layer_written<'a>(
        &'a self,
        layer: &'a Layer,
        _: Context<'a>,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        self.written
            .lock()
            .unwrap()
            .push(layer.blob.digest.to_string());
        Box::pin(std::future::ready(()))
    }
}

fn image(built: &Built) -> &Image {
    match &built.artifact {
        Artifact::Image(i) => i,
        Artifact::Index(_) => panic!("one platform makes an image"),
    }
}

#[tokio::test]
async fn a_release_on_scratch_builds_without_a_registry_and_again_to_the_same_bytes() {
    let lab = Lab::new();
    let (rel, cache) = (&lab.release, &lab.cache);
    let cx = lab.context();
    let seen = Seen::default();
    let first = build(&request(rel.path(), false), cx, Some(&seen))
        .await
        .unwrap();
    let one = image(&first);
    // Scratch has no layers: every layer is the release's, and each was written and told.
    assert!(one.layers.len() >= 2, "{} layers", one.layers.len());
    assert_eq!(*seen.bases.lock().unwrap(), vec![0]);
    let written = seen.written.lock().unwrap().clone();
    assert_eq!(written.len(), one.layers.len());
    for l in &one.layers {
        assert!(
            cache.has_blob(&l.blob.digest),
            "{} not in the cache",
            l.blob.digest
        );
        assert!(written.contains(&l.blob.digest.to_string()));
    }
    let Report::Image(report) = &first.report else {
        panic!("one platform reports an image");
    };
    assert_eq!(report.reused_layers, 0);
    assert!(report.check.is_none());
    assert!(
        report.sbom.applications >= 1,
        "{:?}",
        report.sbom.applications
    );
    // The cookie is left out of the image (drop_cookie).
    assert!(report.warnings.iter().all(|w| !w.contains("secret-cookie")));

    // Again, same inputs: the same manifest, every layer found in the layer cache, nothing told.
    let seen = Seen::default();
    let second = build(&request(rel.path(), false), cx, Some(&seen))
        .await
        .unwrap();
    assert_eq!(image(&second).digest, one.digest);
    assert_eq!(image(&second).manifest, one.manifest);
    assert!(seen.written.lock().unwrap().is_empty());
    let Report::Image(report) = &second.report else {
        panic!("one platform reports an image");
    };
    assert_eq!(report.reused_layers, one.layers.len());
}

#[tokio::test]
async fn the_check_stage_refuses_scratch_for_a_release_that_starts_through_sh() {
    let lab = Lab::new();
    let rel = &lab.release;
    let cx = lab.context();
    // Without the launcher (the release's own scripts), the check names the missing shell.
    let mut req = request(rel.path(), true);
    req.launcher = crate::pipeline::LauncherMode::Never;
    let err = build(&req, cx, None)
        .await
        .err()
        .expect("scratch has no /bin/sh");
    assert!(matches!(err, Error::Check(_)), "{err}");
    assert!(err.to_string().contains("/bin/sh"), "{err}");
    // With it (auto), a release the launcher cannot start (this one names no Elixir) is refused
    // before anything is written, saying why and what to do.
    let err = build(&request(rel.path(), true), cx, None)
        .await
        .err()
        .expect("no launcher for this release");
    assert!(matches!(err, Error::Input(_)), "{err}");
    assert!(err.to_string().contains("use a base with /bin/sh"), "{err}");
}

#[test]
fn a_deb_base_always_asks_for_the_c_library_and_its_c_utf8_locale() {
    let dir = Path::new("/nonexistent");
    let mut req = request(dir, true);
    req.from = Source::Deb {
        suite: crate::apt::debian::Suite::parse("bookworm").unwrap(),
    };
    req.packages.packages = vec!["libssl3".into(), "libc6".into()];
    let asked = super::examine::asked_packages(&req);
    // libc-bin ships /usr/lib/locale/C.utf8, which the image's LANG=C.UTF-8 needs for UTF-8
    // filename encoding; each is asked for once, after what the user asked for.
    assert_eq!(asked.packages, ["libssl3", "libc6", "libc-bin"]);
    assert!(asked.deb.is_some());
    // Any other base: its own packages, nothing added.
    req.from = Source::Scratch;
    let asked = super::examine::asked_packages(&req);
    assert_eq!(asked.packages, ["libssl3", "libc6"]);
    assert!(asked.deb.is_none());
}
