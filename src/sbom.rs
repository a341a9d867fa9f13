//! What is inside the image, as an SPDX 2.3 JSON document: the release, its ERTS and every
//! application with its version (from the release's `.rel` file), and the Debian packages of
//! the base and of any package layer (dpkg's `status` and distroless-style `status.d/`).
//! Each carries the identifiers scanners match advisories by: Debian packages `pkg:deb`,
//! Hex packages `pkg:hex` (by mix.lock's package names when the project is at hand), Erlang/OTP
//! and Elixir a CPE and a purl, their applications and ERTS `pkg:otp` (as Erlang/OTP's own
//! advisories name them). Deterministic: the same inputs give the same bytes.

use serde_json::{Value, json};

use crate::apt::index;
use crate::error::Result;
use crate::fs::RootFs;
use crate::oci::document::{canonical_json, rfc3339};
use crate::release::otp::{self, OtpRelease};
use crate::release::{AppVersion, Release, mix_lock};

/// Where the SBOM lives inside the image (the directory apko/Wolfi use, which scanners read).
pub const SBOM_DIR: &str = "var/lib/db/sbom";

pub(crate) fn path_in_image(release: &Release) -> String {
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
pub(crate) fn dpkg_stanzas(fs: &RootFs) -> Vec<index::Stanza> {
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
pub(crate) fn os_version(fs: &RootFs) -> Option<(String, String)> {
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

/// A package URL, as SPDX 2.3 refers to one.
fn purl(locator: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    })
}

/// A CPE 2.3 name, the identifier NVD's advisories (and the scanners matching them) use.
fn cpe(name: &str) -> Value {
    json!({
        "referenceCategory": "SECURITY",
        "referenceType": "cpe23Type",
        "referenceLocator": name,
    })
}

/// A version as a CPE 2.3 component: what is not a letter, digit, `.`, `-` or `_` escaped.
fn cpe_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || "._-".contains(c)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub struct SbomInput<'a> {
    pub release: &'a Release,
    pub base_name: &'a str,
    pub base_digest: Option<&'a str>,
    pub architecture: &'a str,
    pub debs: &'a [DebPackage],
    pub os: Option<(String, String)>,
    pub epoch: u64,
    /// mix.lock's entries, when the project is at hand: which application is which Hex
    /// package (or Git dependency). Without it, an application that is neither Erlang/OTP's
    /// nor Elixir's nor the release's own is taken for a Hex package of its name.
    pub mix_lock: Option<&'a [mix_lock::Dep]>,
    /// The OTP release of the release's ERTS and OTP applications.
    pub otp: Option<&'a OtpRelease>,
    /// imgbuild's launcher, when the image starts through it: its SHA-256 (hex) when known.
    pub launcher: Option<Option<String>>,
}

/// The SPDX 2.3 document, as canonical JSON bytes.
pub(crate) fn document(input: &SbomInput) -> Result<Vec<u8>> {
    let mut graph = Graph::new(input.release);
    let runtime = runtime(&mut graph, input);
    applications(&mut graph, input, &runtime);
    if let Some(sha256) = &input.launcher {
        launcher(&mut graph, input.release, sha256.as_deref());
    }
    base_and_debs(&mut graph, input);
    graph.finish(input)
}

/// imgbuild's launcher at `bin/NAME`: the program the image starts, so a scanner and an auditor
/// see it (and, for a built image, which bytes it is).
fn launcher(graph: &mut Graph, release: &Release, sha256: Option<&str>) {
    let id = "SPDXRef-launcher-imgbuild";
    let mut p = package(
        id,
        "imgbuild-launcher",
        env!("CARGO_PKG_VERSION"),
        "APPLICATION",
    );
    p["comment"] = json!(format!(
        "imgbuild's shell-less start program, installed as bin/{} of the release",
        release.name
    ));
    p["supplier"] = json!("Organization: imgbuild");
    if let Some(sum) = sha256 {
        p["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sum }]);
    }
    graph.packages.push(p);
    let release_id = graph.release_id.clone();
    graph.contains(&release_id, id);
}

const OTP_ID: &str = "SPDXRef-runtime-erlang-otp";
const ELIXIR_ID: &str = "SPDXRef-runtime-elixir";

/// The packages of the document so far and how they relate, the release first.
struct Graph {
    release_id: String,
    packages: Vec<Value>,
    relationships: Vec<Value>,
}

impl Graph {
    /// The release, which the document describes.
    fn new(r: &Release) -> Graph {
        let release_id = spdx_id("release", &r.name);
        Graph {
            packages: vec![package(&release_id, &r.name, &r.version, "APPLICATION")],
            relationships: vec![json!({
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": release_id,
            })],
            release_id,
        }
    }

    fn contains(&mut self, from: &str, to: &str) {
        self.relationships.push(json!({
            "spdxElementId": from, "relationshipType": "CONTAINS", "relatedSpdxElement": to,
        }));
    }

    /// The document around the packages and relationships, with a namespace unique to this
    /// content and stable across rebuilds of the same content.
    fn finish(self, input: &SbomInput) -> Result<Vec<u8>> {
        let r = input.release;
        let fingerprint = crate::oci::digest::sha256_of(&canonical_json(&self.packages)?);
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
            "packages": self.packages,
            "relationships": self.relationships,
        }))
    }
}

/// Where the runtime's applications go: the parent of Erlang/OTP's, and Elixir when the
/// release has it.
struct Runtime<'a> {
    otp_parent: String,
    elixir: Option<&'a AppVersion>,
}

/// Erlang/OTP, ERTS and Elixir, each with the identifiers their advisories use.
fn runtime<'a>(graph: &mut Graph, input: &SbomInput<'a>) -> Runtime<'a> {
    let r = input.release;
    if let Some(otp) = input.otp {
        let mut p = package(OTP_ID, "Erlang/OTP", &otp.version, "FRAMEWORK");
        let mut refs = vec![cpe(&format!(
            "cpe:2.3:a:erlang:erlang\\/otp:{}:*:*:*:*:*:*:*",
            cpe_escape(&otp.version)
        ))];
        if otp.exact {
            refs.push(purl(&format!("pkg:github/erlang/otp@OTP-{}", otp.version)));
        } else {
            p["comment"] = json!(format!(
                "OTP {} by the ERTS version {}; the patch release is not known (each OTP application carries its own version)",
                otp.version, r.erts_version
            ));
        }
        p["externalRefs"] = json!(refs);
        graph.packages.push(p);
        let release_id = graph.release_id.clone();
        graph.contains(&release_id, OTP_ID);
    }
    let otp_parent = if input.otp.is_some() {
        OTP_ID.to_string()
    } else {
        graph.release_id.clone()
    };
    if r.includes_erts {
        let id = spdx_id("erts", &r.erts_version);
        let mut p = package(&id, "erts", &r.erts_version, "FRAMEWORK");
        p["externalRefs"] = json!([purl(&format!("pkg:otp/erts@{}", r.erts_version))]);
        graph.packages.push(p);
        graph.contains(&otp_parent, &id);
    }
    let elixir = r.applications.iter().find(|a| a.name == "elixir");
    if let Some(ex) = elixir {
        let mut p = package(ELIXIR_ID, "Elixir", &ex.version, "FRAMEWORK");
        p["externalRefs"] = json!([
            cpe(&format!(
                "cpe:2.3:a:elixir-lang:elixir:{}:*:*:*:*:*:*:*",
                cpe_escape(&ex.version)
            )),
            purl(&format!("pkg:github/elixir-lang/elixir@v{}", ex.version)),
        ]);
        graph.packages.push(p);
        let release_id = graph.release_id.clone();
        graph.contains(&release_id, ELIXIR_ID);
    }
    Runtime { otp_parent, elixir }
}

/// Every application of the release: the applications Erlang/OTP and Elixir ship are theirs,
/// the others the project's (Hex packages, Git or path dependencies).
fn applications(graph: &mut Graph, input: &SbomInput, runtime: &Runtime) {
    for app in &input.release.applications {
        let id = spdx_id("otp-app", &app.name);
        let mut p = package(&id, &app.name, &app.version, "LIBRARY");
        let (parent, comment, reference) = origin(app, input, &graph.release_id, runtime);
        let parent = parent.to_string();
        if let Some(c) = comment {
            p["comment"] = json!(c);
        }
        p["externalRefs"] = json!([reference]);
        graph.packages.push(p);
        graph.contains(&parent, &id);
    }
}

/// Whose application `app` is (the id of its parent), what to say about that, and the package
/// URL scanners match it by.
fn origin<'a>(
    app: &AppVersion,
    input: &SbomInput,
    release_id: &'a str,
    runtime: &'a Runtime,
) -> (&'a str, Option<&'static str>, Value) {
    let otp_purl = || purl(&format!("pkg:otp/{}@{}", app.name, app.version));
    if app.name == input.release.name {
        (release_id, None, otp_purl())
    } else if otp::is_otp_app(&app.name) {
        (
            &runtime.otp_parent,
            Some("an application of Erlang/OTP"),
            otp_purl(),
        )
    } else if otp::is_elixir_app(&app.name) && runtime.elixir.is_some() {
        (ELIXIR_ID, Some("an application of Elixir"), otp_purl())
    } else {
        match input.mix_lock {
            Some(lock) => match lock.iter().find(|d| d.app == app.name) {
                Some(dep) => {
                    let what = match dep.source {
                        mix_lock::Source::Hex { .. } => "a Hex package (mix.lock)",
                        mix_lock::Source::Git { .. } => "a Git dependency (mix.lock)",
                    };
                    (release_id, Some(what), purl(&dep.purl()))
                }
                None => (
                    release_id,
                    Some(
                        "an application of the project (a path or umbrella dependency: not in mix.lock)",
                    ),
                    otp_purl(),
                ),
            },
            None => (
                release_id,
                Some("a Hex package by its application's name (no mix.lock beside the release)"),
                purl(&format!("pkg:hex/{}@{}", app.name, app.version)),
            ),
        }
    }
}

/// The base image, which the release depends on, and the Debian packages it holds (with any
/// package layer's).
fn base_and_debs(graph: &mut Graph, input: &SbomInput) {
    let base_id = spdx_id("base", input.base_name);
    let mut base = package(
        &base_id,
        input.base_name,
        input.base_digest.unwrap_or("NOASSERTION"),
        "CONTAINER",
    );
    base["comment"] = json!("the base image");
    graph.packages.push(base);
    graph.relationships.push(json!({
        "spdxElementId": graph.release_id, "relationshipType": "DEPENDS_ON", "relatedSpdxElement": base_id,
    }));
    let distro = input
        .os
        .as_ref()
        .map(|(id, v)| format!("&distro={id}-{v}"))
        .unwrap_or_default();
    for d in input.debs {
        let id = spdx_id("deb", &format!("{}-{}", d.name, d.architecture));
        let mut p = package(&id, &d.name, &d.version, "LIBRARY");
        p["externalRefs"] = json!([purl(&format!(
            "pkg:deb/debian/{}@{}?arch={}{distro}",
            d.name,
            purl_escape(&d.version),
            d.architecture
        ))]);
        if let Some(src) = &d.source {
            p["sourceInfo"] = json!(format!("built from Debian source package {src}"));
        }
        graph.packages.push(p);
        graph.contains(&base_id, &id);
    }
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

    fn refs(doc: &Value, name: &str) -> Vec<String> {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            // The application, not the release of the same name.
            .rfind(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))["externalRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["referenceLocator"].as_str().unwrap().to_string())
            .collect()
    }

    fn release() -> Release {
        let mut r = Release::for_tests("shop", "0.2.0");
        r.erts_version = "13.1.5".into();
        for (n, v) in [
            ("kernel", "8.5.3"),
            ("ssl", "10.8.7"),
            ("elixir", "1.14.0"),
            ("logger", "1.14.0"),
            ("my_json", "1.4.1"),
            ("shop", "0.2.0"),
        ] {
            r.applications.push(crate::release::AppVersion {
                name: n.into(),
                version: v.into(),
            });
        }
        r
    }

    fn doc(mix_lock: Option<&[mix_lock::Dep]>, otp: &OtpRelease) -> Value {
        let r = release();
        let bytes = document(&SbomInput {
            release: &r,
            base_name: "debian:bookworm-slim",
            base_digest: None,
            architecture: "amd64",
            debs: &[],
            os: None,
            epoch: 0,
            mix_lock,
            otp: Some(otp),
            launcher: None,
        })
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn identifiers_scanners_match() {
        let lock = mix_lock::parse(&format!(
            "%{{\"my_json\": {{:hex, :jason, \"1.4.1\", \"{s}\", [:mix], [], \"hexpm\", \"{s}\"}}}}",
            s = "c".repeat(64)
        ));
        let exact = OtpRelease {
            version: "25.2.3".into(),
            exact: true,
        };
        let d = doc(Some(&lock), &exact);
        assert_eq!(
            refs(&d, "Erlang/OTP"),
            [
                "cpe:2.3:a:erlang:erlang\\/otp:25.2.3:*:*:*:*:*:*:*",
                "pkg:github/erlang/otp@OTP-25.2.3"
            ]
        );
        assert_eq!(refs(&d, "erts"), ["pkg:otp/erts@13.1.5"]);
        assert_eq!(refs(&d, "ssl"), ["pkg:otp/ssl@10.8.7"]);
        assert_eq!(
            refs(&d, "Elixir"),
            [
                "cpe:2.3:a:elixir-lang:elixir:1.14.0:*:*:*:*:*:*:*",
                "pkg:github/elixir-lang/elixir@v1.14.0"
            ]
        );
        assert_eq!(refs(&d, "logger"), ["pkg:otp/logger@1.14.0"]);
        // The Hex package's name from mix.lock, not the application's.
        assert_eq!(refs(&d, "my_json"), ["pkg:hex/jason@1.4.1"]);
        assert_eq!(refs(&d, "shop"), ["pkg:otp/shop@0.2.0"]);
        // ssl is Erlang/OTP's; logger Elixir's.
        let rels = d["relationships"].to_string();
        assert!(rels.contains(r#""relatedSpdxElement":"SPDXRef-otp-app-ssl","relationshipType":"CONTAINS","spdxElementId":"SPDXRef-runtime-erlang-otp""#), "{rels}");
        assert!(rels.contains(r#""relatedSpdxElement":"SPDXRef-otp-app-logger","relationshipType":"CONTAINS","spdxElementId":"SPDXRef-runtime-elixir""#), "{rels}");

        // No mix.lock at hand, and only the OTP major release known.
        let major = OtpRelease {
            version: "25".into(),
            exact: false,
        };
        let d = doc(None, &major);
        assert_eq!(refs(&d, "my_json"), ["pkg:hex/my_json@1.4.1"]);
        assert_eq!(
            refs(&d, "Erlang/OTP"),
            ["cpe:2.3:a:erlang:erlang\\/otp:25:*:*:*:*:*:*:*"]
        );
    }

    /// The exact bytes of two documents, one with every kind of package and one with the
    /// fewest, pinned by their SHA-256 (with the tool's version, which a document names, read
    /// as `VERSION`): a change of the output is then a decision, never an accident.
    #[test]
    fn documents_are_pinned_byte_for_byte() {
        let lock = mix_lock::parse(&format!(
            "%{{\n  \"my_json\": {{:hex, :jason, \"1.4.1\", \"{s}\", [:mix], [], \"hexpm\", \"{s}\"}},\n  \"git_dep\": {{:git, \"https://github.com/o/git_dep.git\", \"{c}\", [branch: \"main\"]}},\n}}\n",
            s = "c".repeat(64),
            c = "a".repeat(40)
        ));
        assert_eq!(lock.len(), 2);
        let mut rich = release();
        for (n, v) in [("git_dep", "0.1.0"), ("path_dep", "0.3.0")] {
            rich.applications.push(crate::release::AppVersion {
                name: n.into(),
                version: v.into(),
            });
        }
        let otp = OtpRelease {
            version: "25.2.3".into(),
            exact: true,
        };
        let debs = [
            DebPackage {
                name: "libc6".into(),
                version: "2.36-9+deb12u4".into(),
                architecture: "amd64".into(),
                source: Some("glibc".into()),
            },
            DebPackage {
                name: "tzdata".into(),
                version: "1:2024a-0".into(),
                architecture: "all".into(),
                source: None,
            },
        ];
        let digest = format!("sha256:{}", "b".repeat(64));
        let rich = document(&SbomInput {
            release: &rich,
            base_name: "debian:bookworm-slim",
            base_digest: Some(&digest),
            architecture: "amd64",
            debs: &debs,
            os: Some(("debian".into(), "12".into())),
            epoch: 1_700_000_000,
            mix_lock: Some(&lock),
            otp: Some(&otp),
            launcher: None,
        })
        .unwrap();
        let mut bare = Release::for_tests("tiny", "1.0.0");
        bare.includes_erts = false;
        for (n, v) in [("kernel", "8.5.3"), ("tiny", "1.0.0"), ("other", "2.0.0")] {
            bare.applications.push(crate::release::AppVersion {
                name: n.into(),
                version: v.into(),
            });
        }
        let bare = document(&SbomInput {
            release: &bare,
            base_name: "scratch",
            base_digest: None,
            architecture: "arm64",
            debs: &[],
            os: None,
            epoch: 0,
            mix_lock: None,
            otp: None,
            launcher: None,
        })
        .unwrap();
        let pin = |doc: &[u8]| {
            let text = String::from_utf8(doc.to_vec()).unwrap().replace(
                concat!("imgbuild-", env!("CARGO_PKG_VERSION")),
                "imgbuild-VERSION",
            );
            crate::oci::digest::sha256_of(text.as_bytes()).to_string()
        };
        assert_eq!(
            pin(&rich),
            "sha256:765e23a7768f1846fce5557f7190f1a8cc9e3e4a81019f8331ed6a5954fcb1a9",
            "{}",
            String::from_utf8_lossy(&rich)
        );
        assert_eq!(
            pin(&bare),
            "sha256:b169af0509fa707a60a21dfbcaadc95d12bb0c375c45821f1d58664526809473",
            "{}",
            String::from_utf8_lossy(&bare)
        );
    }

    #[test]
    fn the_launcher_is_a_package_of_the_release() {
        let r = release();
        let input = |launcher| SbomInput {
            release: &r,
            base_name: "deb:bookworm",
            base_digest: None,
            architecture: "amd64",
            debs: &[],
            os: None,
            epoch: 0,
            mix_lock: None,
            otp: None,
            launcher,
        };
        let doc: Value =
            serde_json::from_slice(&document(&input(Some(Some("ab".repeat(32))))).unwrap())
                .unwrap();
        let p = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "imgbuild-launcher")
            .expect("the launcher is listed");
        assert_eq!(p["versionInfo"], env!("CARGO_PKG_VERSION"));
        assert_eq!(p["checksums"][0]["checksumValue"], "ab".repeat(32));
        assert!(doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["relationshipType"] == "CONTAINS" && r["relatedSpdxElement"] == p["SPDXID"]
        }));
        // Known to be there (a rebased image) but not which bytes: no checksum.
        let doc: Value = serde_json::from_slice(&document(&input(Some(None))).unwrap()).unwrap();
        let listed = doc["packages"].as_array().unwrap();
        let p = listed
            .iter()
            .find(|p| p["name"] == "imgbuild-launcher")
            .unwrap();
        assert!(p.get("checksums").is_none());
        let doc: Value = serde_json::from_slice(&document(&input(None)).unwrap()).unwrap();
        assert!(!doc.to_string().contains("imgbuild-launcher"));
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
