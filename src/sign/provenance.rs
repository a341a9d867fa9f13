//! How an image was made, as an in-toto Statement v1 with an SLSA Provenance v1 predicate:
//! the base (reference and digest), every Debian package (SHA256 and where it came from), the
//! release's ERTS and applications with their versions (and mix.lock's checksums when the
//! project's lock file is beside the release), imgbuild's version and the options that shaped
//! the image. Deterministic: the same inputs give the same bytes; times are SOURCE_DATE_EPOCH.

use std::path::Path;

use oci_spec::image::Digest;
use serde::Serialize;

use crate::apt::Locked;
use crate::error::Result;
use crate::oci::document::{canonical_json, rfc3339};

pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const BUILD_TYPE: &str = "https://github.com/imgbuild/imgbuild/blob/main/README.md#provenance";

/// What went into one image.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Materials {
    pub base_name: String,
    pub base_digest: Option<String>,
    pub packages: Vec<Locked>,
    pub release: String,
    pub release_version: String,
    pub erts_version: String,
    /// (application, version), as the release's .rel file lists them.
    pub applications: Vec<(String, String)>,
    /// (package, version, checksum) from mix.lock, when one is beside the release.
    pub mix_lock: Vec<(String, String, String)>,
    /// The options that shaped the image (platform, tags, env keys, labels, …).
    pub parameters: serde_json::Value,
    /// Seconds since the epoch the build is stamped with.
    pub epoch: u64,
}

/// The statement for the image `name`@`digest`.
pub fn statement(name: &str, digest: &Digest, m: &Materials) -> Result<Vec<u8>> {
    let mut deps = Vec::new();
    if let Some(d) = &m.base_digest {
        let (alg, hex) = d.split_once(':').unwrap_or(("sha256", d));
        deps.push(serde_json::json!({
            "uri": format!("oci://{}", m.base_name),
            "digest": {alg: hex},
            "name": "base",
        }));
    }
    for p in &m.packages {
        deps.push(serde_json::json!({
            "uri": p.url,
            "digest": {"sha256": p.sha256},
            "name": format!("pkg:deb/debian/{}@{}?arch={}", p.name, p.version, p.architecture),
        }));
    }
    deps.push(serde_json::json!({
        "uri": format!("pkg:generic/erts@{}", m.erts_version),
        "name": "erts",
    }));
    for (app, vsn) in &m.applications {
        deps.push(serde_json::json!({"uri": format!("pkg:otp/{app}@{vsn}"), "name": app}));
    }
    for (pkg, vsn, sum) in &m.mix_lock {
        deps.push(serde_json::json!({
            "uri": format!("pkg:hex/{pkg}@{vsn}"),
            "digest": {"sha256": sum},
            "name": pkg,
        }));
    }
    let at = rfc3339(m.epoch);
    canonical_json(&serde_json::json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {digest.algorithm().as_ref(): digest.digest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "release": {"name": m.release, "version": m.release_version},
                    "options": m.parameters,
                },
                "internalParameters": {"erts": m.erts_version},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": "https://github.com/imgbuild/imgbuild",
                    "version": {"imgbuild": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {"startedOn": at, "finishedOn": at},
            },
        },
    }))
}

/// mix.lock's hex packages with their checksums, from the project that holds `release_dir`
/// (`<project>/_build/<env>/rel/<name>`), when its lock file is there.
pub fn mix_lock_beside(release_dir: &Path) -> Vec<(String, String, String)> {
    let Some(project) = release_dir.ancestors().nth(4) else {
        return vec![];
    };
    let Ok(text) = std::fs::read_to_string(project.join("mix.lock")) else {
        return vec![];
    };
    let quoted = |s: &str| -> Vec<String> {
        s.split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, q)| q.to_string())
            .collect()
    };
    let mut out = Vec::new();
    for line in text.lines() {
        // "jason": {:hex, :jason, "1.4.1", "<inner sha256>", [:mix], [...], "hexpm", "<outer sha256>"},
        if !line.contains("{:hex,") {
            continue;
        }
        let q = quoted(line);
        let (Some(name), Some(version)) = (q.first(), q.get(1)) else {
            continue;
        };
        let sum = q
            .iter()
            .rev()
            .find(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        if let Some(sum) = sum {
            out.push((name.clone(), version.clone(), sum.to_lowercase()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_deterministic_and_name_their_materials() {
        let d = crate::oci::digest::sha256_of(b"image");
        let m = Materials {
            base_name: "docker.io/library/debian:bookworm-slim".into(),
            base_digest: Some(crate::oci::digest::sha256_of(b"base").to_string()),
            release: "hello".into(),
            release_version: "0.1.0".into(),
            erts_version: "13.1.5".into(),
            applications: vec![("kernel".into(), "8.5.3".into())],
            epoch: 1_700_000_000,
            ..Materials::default()
        };
        let a = statement("r.example/app", &d, &m).unwrap();
        assert_eq!(a, statement("r.example/app", &d, &m).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["predicateType"], PREDICATE_TYPE);
        assert_eq!(v["subject"][0]["digest"]["sha256"], d.digest());
        assert_eq!(
            v["predicate"]["runDetails"]["metadata"]["startedOn"],
            "2023-11-14T22:13:20Z"
        );
        let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
        assert!(deps.contains("kernel@8.5.3") && deps.contains("oci://docker.io/library/debian"));
    }

    #[test]
    fn mix_lock_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("_build/prod/rel/app");
        std::fs::create_dir_all(&rel).unwrap();
        let sum = "a".repeat(64);
        std::fs::write(
            dir.path().join("mix.lock"),
            format!("%{{\n  \"jason\": {{:hex, :jason, \"1.4.1\", \"{}\", [:mix], [], \"hexpm\", \"{sum}\"}},\n}}\n", "b".repeat(64)),
        )
        .unwrap();
        assert_eq!(
            mix_lock_beside(&rel),
            vec![("jason".into(), "1.4.1".into(), sum)]
        );
    }
}
