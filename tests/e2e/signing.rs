//! A verifiable supply chain (`signing::*`), with real cosign 2 and 3 (Debian trixie and forky)
//! as the independent verifiers: images signed and their provenance attested on push, cosign's
//! signatures accepted by imgbuild, tampering and wrong keys refused, and a wrong password
//! stopping the push before any tag is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde_json::Value;

use crate::lab::{self, TestResult, fail, json_of, run, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "docker-registry",
    "skopeo",
    "umoci",
    "debootstrap",
    "mix",
    "openssl",
];

/// cosign 2 and 3 from Debian's newer suites (`scripts/newer-peers`).
fn cosigns() -> Result<Vec<PathBuf>, Failed> {
    let out = run(Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/newer-peers"))
        .args(["cosign2", "cosign3"]))?;
    let dir = PathBuf::from(stdout(&out).trim()).join("bin");
    Ok(vec![dir.join("cosign2"), dir.join("cosign3")])
}

const INSECURE: &[&str] = &[
    "--insecure-ignore-tlog=true",
    "--allow-http-registry",
    "--allow-insecure-registry",
];

fn cosign_verify(cosign: &Path, key: &Path, reference: &str, attestation: bool) -> Output {
    let mut c = Command::new(cosign);
    if attestation {
        c.args(["verify-attestation", "--type", "slsaprovenance1"]);
    } else {
        c.arg("verify");
    }
    c.arg("--key")
        .arg(key)
        .args(INSECURE)
        .arg(reference)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", cosign.display()))
}

/// Keys: one from `cosign generate-key-pair` (password "e2e"), one from openssl (PKCS#8).
fn keys(dir: &Path, cosign: &Path) -> Result<(PathBuf, PathBuf, PathBuf, PathBuf), Failed> {
    run(Command::new(cosign)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "e2e")
        .arg("generate-key-pair"))?;
    let ec = dir.join("ec.pem");
    run(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&ec))?;
    run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(&ec)
        .arg("-out")
        .arg(dir.join("ec.p8")))?;
    run(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&ec)
        .arg("-out")
        .arg(dir.join("ec.pub")))?;
    Ok((
        dir.join("cosign.key"),
        dir.join("cosign.pub"),
        dir.join("ec.p8"),
        dir.join("ec.pub"),
    ))
}

fn statement_of(reference: &str, digest: &str) -> Result<Value, Failed> {
    let (repo, _) = reference.rsplit_once(':').unwrap_or((reference, ""));
    let tag = format!("{repo}:sha256-{}.att", digest.trim_start_matches("sha256:"));
    let raw: Value = serde_json::from_slice(
        &run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{tag}")))?
        .stdout,
    )
    .map_err(|e| fail(e.to_string()))?;
    let layer = raw["layers"][0]["digest"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let dir = lab::scratch_dir("att-blob");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .arg(format!("dir:{}", dir.display())))?;
    let env: Value = serde_json::from_slice(
        &std::fs::read(dir.join(layer.trim_start_matches("sha256:")))
            .map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap_or(""))
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_slice(&payload).map_err(|e| fail(e.to_string()))
}

pub fn test_sign_on_push_and_verify_both_ways() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = lab::base_in_registry()?;
    let reg = lab::registry()?;
    let dir = lab::scratch_dir("signing");
    let cosigns = cosigns()?;
    let (key, public, pem_key, pem_public) = keys(&dir, &cosigns[0])?;
    let r = rel.to_str().unwrap_or_default();
    let signed = format!("{}/signed/hello:1", reg.host());
    let report = json_of(&run(lab::imgbuild()
        .env("COSIGN_PASSWORD", "e2e")
        .args([
            "build",
            "--json",
            "--push",
            "--from",
            &base,
            "-t",
            &signed,
            "--sign-key",
        ])
        .arg(&key)
        .arg(r))?)?;
    let digest = report["digest"].as_str().unwrap_or("?").to_string();
    for cosign in &cosigns {
        for attestation in [false, true] {
            let out = cosign_verify(cosign, &public, &signed, attestation);
            assert!(
                out.status.success(),
                "{} {}: {}",
                cosign.display(),
                if attestation {
                    "verify-attestation"
                } else {
                    "verify"
                },
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let verified = json_of(&run(lab::imgbuild()
        .args(["verify", "--json", &signed, "--key"])
        .arg(&public))?)?;
    assert_eq!(verified["digest"], digest.as_str());
    // Both forms: the classic .sig tag and the Sigstore bundle referrer.
    assert_eq!(verified["signatures"], 2, "{verified}");
    assert_eq!(verified["provenance"], true);
    // The provenance names the base, the applications and imgbuild; the same build again
    // (another repository, a cold cache) attests the same bytes.
    let statement = statement_of(&signed, &digest)?;
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    assert!(
        deps.contains("pkg:otp/kernel@") && deps.contains("oci://") && deps.contains("erts@13."),
        "{deps}"
    );
    let again = format!("{}/signed/again:1", reg.host());
    run(lab::imgbuild()
        .env("COSIGN_PASSWORD", "e2e")
        .env("IMGBUILD_CACHE", dir.join("cold"))
        .args([
            "build",
            "--push",
            "--from",
            &base,
            "-t",
            &again,
            "--sign-key",
        ])
        .arg(&key)
        .arg(r))?;
    let name_free = |mut v: Value| {
        v["subject"][0]["name"] = Value::Null;
        v
    };
    assert_eq!(
        name_free(statement_of(&again, &digest)?),
        name_free(statement)
    );

    // The Sigstore bundle form alone (the classic tags deleted): cosign 3 and imgbuild still
    // verify the signature and the provenance, through the referrers.
    let bundled = format!("{}/signed/bundled:1", reg.host());
    run(lab::imgbuild()
        .env("COSIGN_PASSWORD", "e2e")
        .args([
            "build",
            "--push",
            "--from",
            &base,
            "-t",
            &bundled,
            "--sign-key",
        ])
        .arg(&key)
        .arg(r))?;
    let hex = digest.trim_start_matches("sha256:");
    for suffix in ["sig", "att"] {
        run(Command::new("skopeo")
            .args(["delete", "--tls-verify=false"])
            .arg(format!(
                "docker://{}/signed/bundled:sha256-{hex}.{suffix}",
                reg.host()
            )))?;
    }
    for attestation in [false, true] {
        let out = cosign_verify(&cosigns[1], &public, &bundled, attestation);
        assert!(
            out.status.success(),
            "cosign 3 on bundles: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let only_bundles = json_of(&run(lab::imgbuild()
        .args(["verify", "--json", &bundled, "--key"])
        .arg(&public))?)?;
    assert_eq!(only_bundles["signatures"], 1, "{only_bundles}");
    assert_eq!(only_bundles["provenance"], true, "{only_bundles}");

    // An openssl PKCS#8 key signs as well, and cosign verifies with its public key.
    let pem_signed = format!("{}/signed/pem:1", reg.host());
    run(lab::imgbuild()
        .args([
            "build",
            "--push",
            "--from",
            &base,
            "-t",
            &pem_signed,
            "--sign-key",
        ])
        .arg(&pem_key)
        .arg(r))?;
    let out = cosign_verify(&cosigns[1], &pem_public, &pem_signed, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // cosign signs, imgbuild verifies.
    let by_cosign = format!("{}/signed/by-cosign:1", reg.host());
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{signed}"))
        .arg(format!("docker://{by_cosign}")))?;
    run(Command::new(&cosigns[0])
        .env("COSIGN_PASSWORD", "e2e")
        .args([
            "sign",
            "--tlog-upload=false",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "-y",
            "--key",
        ])
        .arg(&key)
        .arg(&by_cosign))?;
    run(lab::imgbuild()
        .args(["verify", &by_cosign, "--key"])
        .arg(&public))?;

    // A wrong key, and another image re-tagged onto the signed tag: both verifiers refuse.
    let refused = |reference: &str, k: &Path| -> TestResult {
        for cosign in &cosigns {
            let out = cosign_verify(cosign, k, reference, false);
            assert!(
                !out.status.success(),
                "{} accepted {reference}",
                cosign.display()
            );
        }
        let out = lab::imgbuild()
            .args(["verify", reference, "--key"])
            .arg(k)
            .output()
            .map_err(|e| fail(e.to_string()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("verification failed"), "{err}");
        Ok(())
    };
    refused(&signed, &pem_public)?;
    let tampered = format!("{}/signed/hello:1", reg.host());
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{base}"))
        .arg(format!("docker://{tampered}")))?;
    refused(&tampered, &public)?;

    // A signed tarball: verified offline, read by skopeo as usual, and published with its
    // signatures by `imgbuild push`, where cosign verifies them.
    let tar = dir.join("signed.tar");
    run(lab::imgbuild()
        .env("COSIGN_PASSWORD", "e2e")
        .args(["build", "--from", &base, "-t", &signed, "-o"])
        .arg(&tar)
        .arg("--sign-key")
        .arg(&key)
        .arg(r))?;
    let offline = json_of(&run(lab::imgbuild()
        .args(["verify", "--json"])
        .arg(&tar)
        .arg("--key")
        .arg(&public))?)?;
    assert_eq!(offline["provenance"], true, "{offline}");
    let out = lab::imgbuild()
        .args(["verify"])
        .arg(&tar)
        .arg("--key")
        .arg(&pem_public)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert_eq!(out.status.code(), Some(1), "a wrong key accepted offline");
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", tar.display())))?;
    let second = lab::start_registry("signing-second")?;
    let elsewhere = format!("{}/air-gapped/hello:1", second.host());
    run(lab::imgbuild().arg("push").arg(&tar).arg(&elsewhere))?;
    for cosign in &cosigns {
        for attestation in [false, true] {
            let out = cosign_verify(cosign, &public, &elsewhere, attestation);
            assert!(
                out.status.success(),
                "{}: {}",
                cosign.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // Multi-platform: the index and each platform's manifest are signed.
    let multi = format!("{}/signed/multi:1", reg.host());
    let base_multi = format!("oci:{}:multi", crate::platforms::multi_base()?.display());
    let otp = format!(
        "oci:{}:otp",
        crate::platforms::otp_layout("good", None)?.display()
    );
    run(lab::imgbuild()
        .env("COSIGN_PASSWORD", "e2e")
        .args([
            "build",
            "--push",
            "--from",
            &base_multi,
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["--otp-from", &otp, "-t", &multi, "--sign-key"])
        .arg(&key)
        .arg(r))?;
    let v = json_of(&run(lab::imgbuild()
        .args(["verify", "--json", &multi, "--key"])
        .arg(&public))?)?;
    assert_eq!(v["platforms"].as_array().map(Vec::len), Some(2), "{v}");
    for p in v["platforms"].as_array().into_iter().flatten() {
        assert!(
            p["signatures"].as_u64().unwrap_or(0) >= 1 && p["provenance"] == true,
            "{p}"
        );
    }
    let out = cosign_verify(&cosigns[0], &public, &multi, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A registry with the referrers API (the proxy answers OCI-Subject, as such a registry
    // does): the bundles go there by digest, and no sha256-<hex> fallback tag is written.
    let proxy = crate::servers::start_proxy(reg.port)?;
    proxy.set_rules(vec![crate::servers::Rule {
        method: "PUT",
        target_contains: "/v2/signed/api/manifests/sha256:",
        fault: crate::servers::Fault::AddHeader(
            "OCI-Subject: sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        times: u32::MAX,
    }]);
    let api = format!("{}/signed/api:1", proxy.host());
    let out = run(lab::imgbuild()
        .env("COSIGN_PASSWORD", "e2e")
        .args(["build", "--push", "--from", &base, "-t", &api, "--sign-key"])
        .arg(&key)
        .arg(r))?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        log.matches("application/vnd.dev.sigstore.bundle.v0.3+json")
            .filter(|_| true)
            .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("(referrers-api)") && !log.contains("(tag-schema)"),
        "{log}"
    );
    let fallback = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/signed/api:sha256-{hex}", reg.host()))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert!(!fallback.status.success(), "a fallback tag was written");
    let out = cosign_verify(
        &cosigns[1],
        &public,
        &format!("{}/signed/api:1", reg.host()),
        false,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong password: exit 1, and nothing under the tag.
    let never = format!("{}/signed/never:1", reg.host());
    let out = lab::imgbuild()
        .env("COSIGN_PASSWORD", "wrong")
        .args([
            "build",
            "--push",
            "--from",
            &base,
            "-t",
            &never,
            "--sign-key",
        ])
        .arg(&key)
        .arg(r)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("wrong password") && err.contains("COSIGN_PASSWORD"),
        "{err}"
    );
    let gone = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{never}"))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert!(
        !gone.status.success(),
        "a tag was written for an unsigned image"
    );
    Ok(())
}
