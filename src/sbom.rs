//! What is inside the image, as an SPDX 2.3 JSON document: the release, its ERTS and every
//! OTP/Elixir application with its version (from the release's `.rel` file), and the Debian
//! packages of the base and of any package layer (dpkg's `status` and distroless-style
//! `status.d/`). Deterministic: the same inputs give the same bytes.

use serde_json::{Value, json};

use crate::apt::index;
use crate::error::Result;
use crate::fs::RootFs;
use crate::oci::document::{canonical_json, rfc3339};
use crate::release::Release;

/// Where the SBOM lives inside the image (the directory apko/Wolfi use, which scanners read).
pub const SBOM_DIR: &str = "var/lib/db/sbom";
pub const MEDIA_TYPE: &str = "application/spdx+json";

pub fn path_in_image(release: &Release) -> String {
    format!("{SBOM_DIR}/{}-{}.spdx.json", release.name, release.version)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: Option<String>,
}

/// Installed packages from dpkg status text.
pub fn parse_dpkg_status(text: &str) -> Vec<DebPackage> {
    installed(index::stanzas(text)).map(package_of).collect()
}

/// Only what is installed: status.d files have no Status field; in status, the field decides.
fn installed(stanzas: Vec<index::Stanza>) -> impl Iterator<Item = index::Stanza> {
    stanzas.into_iter().filter(|s| {
        s.contains_key("Package")
            && s.contains_key("Version")
            && s.get("Status").is_none_or(|st| st.ends_with(" installed"))
    })
}

fn package_of(s: index::Stanza) -> DebPackage {
    DebPackage {
        name: s["Package"].clone(),
        version: s["Version"].clone(),
        architecture: s
            .get("Architecture")
            .cloned()
            .unwrap_or_else(|| "all".into()),
        source: s
            .get("Source")
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string()),
    }
}

/// The installed stanzas of the image's dpkg database (`status` and distroless `status.d/`).
pub fn dpkg_stanzas(fs: &RootFs) -> Vec<index::Stanza> {
    let mut files = vec!["/var/lib/dpkg/status".to_string()];
    files.extend(fs.list("/var/lib/dpkg/status.d"));
    files
        .iter()
        .filter_map(|f| fs.contents(f))
        .flat_map(|b| installed(index::stanzas(&String::from_utf8_lossy(b))))
        .collect()
}

/// Every Debian package the image's dpkg database records.
pub fn debian_packages(fs: &RootFs) -> Vec<DebPackage> {
    let mut all: Vec<DebPackage> = dpkg_stanzas(fs).into_iter().map(package_of).collect();
    all.sort();
    all.dedup();
    all
}

/// The `VERSION_ID` of the image's os-release, for purls (`distro=debian-12`).
pub fn os_version(fs: &RootFs) -> Option<(String, String)> {
    let text = fs
        .contents("/etc/os-release")
        .or_else(|| fs.contents("/usr/lib/os-release"))?;
    let text = String::from_utf8_lossy(text);
    let get = |k: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(k)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        })
    };
    Some((get("ID")?, get("VERSION_ID").unwrap_or_default()))
}

fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

fn package(id: &str, name: &str, version: &str, purpose: &str) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": purpose,
    })
}

pub struct SbomInput<'a> {
    pub release: &'a Release,
    pub base_name: &'a str,
    pub base_digest: Option<&'a str>,
    pub architecture: &'a str,
    pub debs: &'a [DebPackage],
    pub os: Option<(String, String)>,
    pub epoch: u64,
}

/// The SPDX 2.3 document, as canonical JSON bytes.
pub fn document(input: &SbomInput) -> Result<Vec<u8>> {
    let r = input.release;
    let release_id = spdx_id("release", &r.name);
    let mut packages = vec![package(&release_id, &r.name, &r.version, "APPLICATION")];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": release_id,
    })];
    let contains = |rels: &mut Vec<Value>, from: &str, to: &str| {
        rels.push(json!({
            "spdxElementId": from, "relationshipType": "CONTAINS", "relatedSpdxElement": to,
        }));
    };
    if r.includes_erts {
        let id = spdx_id("erts", &r.erts_version);
        packages.push(package(&id, "erts", &r.erts_version, "FRAMEWORK"));
        contains(&mut relationships, &release_id, &id);
    }
    for app in &r.applications {
        let id = spdx_id("otp-app", &app.name);
        let mut p = package(&id, &app.name, &app.version, "LIBRARY");
        if app.name != r.name {
            p["comment"] = json!("an OTP or Elixir application of the release");
        }
        packages.push(p);
        contains(&mut relationships, &release_id, &id);
    }
    let base_id = spdx_id("base", input.base_name);
    let mut base = package(
        &base_id,
        input.base_name,
        input.base_digest.unwrap_or("NOASSERTION"),
        "CONTAINER",
    );
    base["comment"] = json!("the base image");
    packages.push(base);
    relationships.push(json!({
        "spdxElementId": release_id, "relationshipType": "DEPENDS_ON", "relatedSpdxElement": base_id,
    }));
    let distro = input
        .os
        .as_ref()
        .map(|(id, v)| format!("&distro={id}-{v}"))
        .unwrap_or_default();
    for d in input.debs {
        let id = spdx_id("deb", &format!("{}-{}", d.name, d.architecture));
        let mut p = package(&id, &d.name, &d.version, "LIBRARY");
        p["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:deb/debian/{}@{}?arch={}{distro}", d.name, purl_escape(&d.version), d.architecture),
        }]);
        if let Some(src) = &d.source {
            p["sourceInfo"] = json!(format!("built from Debian source package {src}"));
        }
        packages.push(p);
        contains(&mut relationships, &base_id, &id);
    }
    // A namespace unique to this content, and stable across rebuilds of the same content.
    let fingerprint = crate::oci::digest::sha256_of(&canonical_json(&packages)?);
    let namespace = format!(
        "https://imgbuild.invalid/spdx/{}-{}-{}",
        r.name,
        r.version,
        &fingerprint.digest()[..16]
    );
    canonical_json(&json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} {} ({})", r.name, r.version, input.architecture),
        "documentNamespace": namespace,
        "creationInfo": {
            "created": rfc3339(input.epoch),
            "creators": [concat!("Tool: imgbuild-", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    }))
}

fn purl_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// Counts for a summary line: (releases+apps, Debian packages, total).
pub fn summary(doc: &[u8]) -> Option<(usize, usize, usize)> {
    let v: Value = serde_json::from_slice(doc).ok()?;
    let pkgs = v.get("packages")?.as_array()?;
    let debs = pkgs
        .iter()
        .filter(|p| {
            p["SPDXID"]
                .as_str()
                .is_some_and(|id| id.starts_with("SPDXRef-deb-"))
        })
        .count();
    let apps = pkgs
        .iter()
        .filter(|p| {
            p["SPDXID"]
                .as_str()
                .is_some_and(|id| id.starts_with("SPDXRef-otp-app-"))
        })
        .count();
    Some((apps, debs, pkgs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_installed_only() {
        let text = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nSource: glibc\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n";
        let p = parse_dpkg_status(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "libc6");
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
        assert_eq!(p[1].architecture, "all");
    }

    #[test]
    fn packages_from_status_and_status_d() {
        // A Debian base's status file plus a distroless-style status.d entry, from a layer.
        let mut b = tar::Builder::new(Vec::new());
        for (path, text) in [
            (
                "var/lib/dpkg/status",
                "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n",
            ),
            (
                "var/lib/dpkg/status.d/tzdata",
                "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        let mut fs = RootFs::new();
        fs.apply_layer(&b.into_inner().unwrap()[..], "test")
            .unwrap();
        let names: Vec<String> = debian_packages(&fs).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["libc6", "tzdata"]);
    }

    #[test]
    fn ids_are_valid() {
        assert_eq!(
            spdx_id("deb", "libstdc++6-amd64"),
            "SPDXRef-deb-libstdc--6-amd64"
        );
        assert_eq!(purl_escape("2.36-9+deb12u4"), "2.36-9%2Bdeb12u4");
    }
}
