//! How an image was made, as an in-toto Statement v1 with an SLSA Provenance v1 predicate:
//! the base (reference and digest), every Debian package (SHA256 and where it came from), the
//! release's ERTS and applications with their versions (and mix.lock's checksums when the
//! project's lock file is beside the release), imgbuild's version and the options that shaped
//! the image. Deterministic: the same inputs give the same bytes; times are SOURCE_DATE_EPOCH.

use oci_spec::image::Digest;
use serde::Serialize;

use crate::apt::Locked;
use crate::error::Result;
use crate::oci::document::{canonical_json, rfc3339};
use crate::release::mix_lock::Source;

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
    /// mix.lock's entries, when the project's lock file is beside the release.
    pub mix_lock: Vec<crate::release::mix_lock::Dep>,
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
    // The same package URLs as the SBOM's; the digest of what was locked.
    for dep in &m.mix_lock {
        let mut d = serde_json::json!({"uri": dep.purl(), "name": dep.app});
        match &dep.source {
            Source::Hex {
                checksum: Some(sum),
                ..
            } => d["digest"] = serde_json::json!({"sha256": sum}),
            Source::Git { rev, .. } => d["digest"] = serde_json::json!({"gitCommit": rev}),
            Source::Hex { checksum: None, .. } => {}
        }
        deps.push(d);
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
    fn mix_lock_entries_by_their_package_urls() {
        let d = crate::oci::digest::sha256_of(b"image");
        let sum = "a".repeat(64);
        let m = Materials {
            mix_lock: crate::release::mix_lock::parse(&format!(
                "%{{\n  \"my_json\": {{:hex, :jason, \"1.4.1\", \"{}\", [:mix], [], \"hexpm\", \"{sum}\"}},\n  \"dep\": {{:git, \"https://github.com/o/dep.git\", \"abc123\", []}},\n}}\n",
                "b".repeat(64)
            )),
            ..Materials::default()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&statement("r.example/app", &d, &m).unwrap()).unwrap();
        let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        let by = |uri: &str| deps.iter().find(|x| x["uri"] == uri).cloned();
        let hex = by("pkg:hex/jason@1.4.1").unwrap();
        assert_eq!(hex["digest"]["sha256"], sum.as_str());
        assert_eq!(hex["name"], "my_json");
        let git = by("pkg:github/o/dep@abc123").unwrap();
        assert_eq!(git["digest"]["gitCommit"], "abc123");
    }
}
