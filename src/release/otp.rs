//! Which of a release's applications are Erlang/OTP's and Elixir's (not Hex packages), and
//! which OTP release its ERTS and OTP applications are.
//!
//! A release does not say its OTP release (no `OTP_VERSION` is copied into it). It is read
//! exactly from an Erlang installation on this machine that holds the release's ERTS and every
//! one of its OTP applications at the same versions (the one `mix release` copied them from,
//! as a rule); else only the OTP major release follows from the ERTS version.

use std::path::{Path, PathBuf};

use super::Release;

/// The applications Erlang/OTP ships (OTP 21 to 28).
const OTP_APPS: &[&str] = &[
    "asn1",
    "common_test",
    "compiler",
    "crypto",
    "debugger",
    "dialyzer",
    "diameter",
    "edoc",
    "eldap",
    "erl_docgen",
    "erl_interface",
    "erts",
    "et",
    "eunit",
    "ftp",
    "hipe",
    "inets",
    "jinterface",
    "kernel",
    "megaco",
    "mnesia",
    "observer",
    "odbc",
    "os_mon",
    "otp_mibs",
    "parsetools",
    "public_key",
    "reltool",
    "runtime_tools",
    "sasl",
    "snmp",
    "ssh",
    "ssl",
    "stdlib",
    "syntax_tools",
    "tftp",
    "tools",
    "wx",
    "xmerl",
];

/// The applications Elixir ships.
const ELIXIR_APPS: &[&str] = &["eex", "elixir", "ex_unit", "iex", "logger", "mix"];

pub(crate) fn is_otp_app(name: &str) -> bool {
    OTP_APPS.contains(&name)
}

pub(crate) fn is_elixir_app(name: &str) -> bool {
    ELIXIR_APPS.contains(&name)
}

/// The OTP release of a release's runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtpRelease {
    /// `25.2.3`, or only the major release (`25`) when `exact` is false.
    pub version: String,
    pub exact: bool,
}

/// The OTP release of `release`'s ERTS and OTP applications (see the module's comment).
pub(crate) fn otp_release(release: &Release) -> Option<OtpRelease> {
    let apps: Vec<(&str, &str)> = release
        .applications
        .iter()
        .filter(|a| is_otp_app(&a.name))
        .map(|a| (a.name.as_str(), a.version.as_str()))
        .collect();
    for root in erlang_roots() {
        if let Some(version) = exact_in(&root, &release.erts_version, &apps) {
            return Some(OtpRelease {
                version,
                exact: true,
            });
        }
    }
    major_of_erts(&release.erts_version).map(|m| OtpRelease {
        version: m.to_string(),
        exact: false,
    })
}

/// Erlang installations to look in: the one `erl` on PATH belongs to, and the usual places.
fn erlang_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| std::fs::canonicalize(d.join("erl")).ok())
        .filter_map(|erl| Some(erl.parent()?.parent()?.to_path_buf()))
        .collect();
    roots.extend(["/usr/lib/erlang", "/usr/local/lib/erlang"].map(PathBuf::from));
    roots.dedup();
    roots
}

/// The OTP release installed at `root`, when it holds `erts` and every one of `apps` at the
/// same versions.
fn exact_in(root: &Path, erts: &str, apps: &[(&str, &str)]) -> Option<String> {
    if !root.join(format!("erts-{erts}")).is_dir()
        || !apps
            .iter()
            .all(|(name, vsn)| root.join("lib").join(format!("{name}-{vsn}")).is_dir())
    {
        return None;
    }
    let major = major_of_erts(erts)?;
    let text = std::fs::read_to_string(
        root.join("releases")
            .join(major.to_string())
            .join("OTP_VERSION"),
    )
    .ok()?;
    let version = text.trim();
    let ok = version.split('.').next() == Some(major.to_string().as_str())
        && version.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then(|| version.to_string())
}

/// The OTP major release an ERTS version belongs to (ERTS 11 came with OTP 23, and each major
/// since with the next; OTP 21 and 22 shared ERTS 10).
pub(crate) fn major_of_erts(erts: &str) -> Option<u32> {
    let mut parts = erts.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    match major {
        11.. => Some(major + 12),
        10 if minor >= 4 => Some(22),
        10 => Some(21),
        9 => Some(20),
        8 => Some(19),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_from_erts() {
        assert_eq!(major_of_erts("13.1.5"), Some(25));
        assert_eq!(major_of_erts("15.0"), Some(27));
        assert_eq!(major_of_erts("10.7.2"), Some(22));
        assert_eq!(major_of_erts("10.3"), Some(21));
        assert_eq!(major_of_erts("x"), None);
    }

    #[test]
    fn exact_only_when_every_application_matches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "erts-13.1.5",
            "lib/kernel-8.5.3",
            "lib/ssl-10.8.7",
            "releases/25",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("releases/25/OTP_VERSION"), "25.2.3\n").unwrap();
        let apps = [("kernel", "8.5.3"), ("ssl", "10.8.7")];
        assert_eq!(exact_in(root, "13.1.5", &apps).as_deref(), Some("25.2.3"));
        // An ssl of another patch release: not this installation's OTP.
        assert_eq!(exact_in(root, "13.1.5", &[("ssl", "10.8.8")]), None);
        assert_eq!(exact_in(root, "13.1.4", &apps), None);
    }

    #[test]
    fn classes() {
        assert!(is_otp_app("ssl") && is_otp_app("kernel") && !is_otp_app("plug"));
        assert!(is_elixir_app("logger") && !is_elixir_app("phoenix"));
    }
}
