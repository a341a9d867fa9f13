//! Layer creation throughput on a generated release-like tree (~24 MB, 600 files of mixed
//! compressibility), against the same bytes through `tar | gzip -6` and `tar | pigz -6`, measured
//! in the same run.
//! Run: `cargo bench --bench layer`. Throughput is reported in bytes/s per iteration.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use imgbuild::cache::Cache;
use imgbuild::layer::{Codec, TarOptions, write_layer};
use imgbuild::release::{Entry, EntryKind};

fn main() {
    divan::main();
}

struct Tree {
    root: PathBuf,
    entries: Vec<Entry>,
    bytes: u64,
    _dir: tempfile::TempDir,
}

/// Deterministic pseudo-random bytes: half the files compress like BEAM code, half barely.
fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rel");
        let mut entries = vec![Entry {
            path: "app".into(),
            source: None,
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 65534,
            gid: 0,
        }];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bytes = 0;
        for app in 0..30 {
            let app_dir = root.join(format!("lib/app{app}-1.0/ebin"));
            std::fs::create_dir_all(&app_dir).expect("mkdir");
            entries.push(Entry {
                path: format!("app/lib/app{app}-1.0/ebin"),
                source: None,
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 65534,
                gid: 0,
            });
            for f in 0..20 {
                let size = 40_000usize;
                let data: Vec<u8> = (0..size)
                    .map(|i| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        if f % 2 == 0 {
                            (state % 16) as u8 + b'a'
                        } else {
                            (state >> 24) as u8 ^ (i as u8)
                        }
                    })
                    .collect();
                let p = app_dir.join(format!("m{f}.beam"));
                std::fs::write(&p, &data).expect("write");
                bytes += size as u64;
                entries.push(Entry {
                    path: format!("app/lib/app{app}-1.0/ebin/m{f}.beam"),
                    source: Some(p),
                    kind: EntryKind::File { size: size as u64 },
                    mode: 0o644,
                    uid: 65534,
                    gid: 0,
                });
            }
        }
        Tree {
            root,
            entries,
            bytes,
            _dir: dir,
        }
    })
}

/// imgbuild's layer writer over the tree with `codec` at `level`.
fn bench_layer(bencher: divan::Bencher, codec: Codec, level: u32) {
    let t = tree();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let opts = TarOptions {
        mtime: 0,
        level,
        codec,
    };
    bencher
        .counter(divan::counter::BytesCount::new(t.bytes))
        .bench(|| write_layer(&t.entries, opts, &cache).expect("layer"));
}

#[divan::bench(sample_count = 10)]
fn imgbuild_layer(bencher: divan::Bencher) {
    bench_layer(bencher, Codec::Gzip, 6);
}

#[divan::bench(sample_count = 10)]
fn imgbuild_layer_zstd3(bencher: divan::Bencher) {
    bench_layer(bencher, Codec::Zstd, 3);
}

/// The same tree through a shell pipeline measured in the same run.
fn bench_pipeline(bencher: divan::Bencher, compressor: &str) {
    let t = tree();
    let root: &Path = &t.root;
    bencher
        .counter(divan::counter::BytesCount::new(t.bytes))
        .bench(|| {
            // pipefail: a missing compressor must fail the bench, not time an empty pipe.
            let status = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -o pipefail; tar -C {} -cf - lib | {compressor} | sha256sum",
                    root.display()
                ))
                .stdout(Stdio::null())
                .status()
                .expect("tar | compressor (apt-get install pigz for the parallel one)");
            assert!(status.success());
        });
}

#[divan::bench(sample_count = 10)]
fn tar_pipe_gzip6_sha256(bencher: divan::Bencher) {
    bench_pipeline(bencher, "gzip -6");
}

/// The parallel peer: pigz on every core, the practical floor for a cold gzip layer.
#[divan::bench(sample_count = 10)]
fn tar_pipe_pigz6_sha256(bencher: divan::Bencher) {
    bench_pipeline(bencher, "pigz -6");
}
