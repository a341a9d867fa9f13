//! What several commands share: flag value parsers, registry clients, sinks, JSON output.

use std::path::PathBuf;
use std::sync::Arc;

use imgbuild::error::{Error, ImageError, Result};
use imgbuild::layer::Codec;
use imgbuild::oci::reference::Reference;
use imgbuild::registry::credentials::DockerCredentials;
use imgbuild::registry::{ClientOptions, RegistryClient};
use imgbuild::report::Reporter;
use imgbuild::sink::registry::PushOptions;
use imgbuild::sink::{self, Naming, Sink};

pub const DEFAULT_BASE: &str = "debian:bookworm-slim";

pub(crate) fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?}: use k, M or G")),
            };
            (&t[..i], m)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4M"))?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive size")),
    }
}

pub fn parse_compression(s: &str) -> std::result::Result<(Codec, u32), String> {
    imgbuild::layer::parse_compression(s)
}

pub(crate) fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(Error::Usage(format!(
            "invalid {flag} {s:?}: expected KEY=VALUE with a non-empty KEY"
        ))),
    }
}

pub(crate) fn words(flag: &str, s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s).map_err(|e| {
            Error::Usage(format!(
                "invalid {flag} {s:?}: not a JSON array of strings ({e})"
            ))
        })
    } else {
        let w: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        if w.is_empty() {
            return Err(Error::Usage(format!("invalid {flag}: it is empty")));
        }
        Ok(w)
    }
}

pub(crate) fn port(s: &str) -> Result<String> {
    let (num, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    match num.parse::<u16>() {
        Ok(n) if n > 0 && ["tcp", "udp", "sctp"].contains(&proto.as_str()) => {
            Ok(format!("{n}/{proto}"))
        }
        _ => Err(Error::Usage(format!(
            "invalid --expose {s:?}: expected PORT[/tcp|udp|sctp] with PORT in 1-65535"
        ))),
    }
}

/// `SOURCE_DATE_EPOCH`, else 0: images are reproducible by default.
pub(crate) fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970"
            ))
        }),
        _ => Ok(0),
    }
}

/// Where a build's image goes, besides the request itself.
pub(crate) struct Outputs {
    pub output: Option<PathBuf>,
    pub oci_layout: Option<PathBuf>,
    /// Add to the layout (a second ref) instead of replacing it.
    pub add_to_layout: bool,
}

/// A client whose credentials come from the user's usual places; the CI variables apply to
/// the registries in `targets`.
pub fn client_for(opts: ClientOptions, targets: &[Reference]) -> Result<RegistryClient> {
    let hosts: Vec<String> = targets.iter().map(|t| t.api_host().to_string()).collect();
    RegistryClient::new(opts, Arc::new(DockerCredentials::from_env(&hosts)?))
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| Error::from(ImageError::Internal(format!("{e}"))))?;
    println!("{json}");
    Ok(())
}

/// A signing key, its password from COSIGN_PASSWORD.
pub fn load_key(path: &std::path::Path) -> Result<imgbuild::sign::keys::Key> {
    let password = std::env::var("COSIGN_PASSWORD").ok();
    imgbuild::sign::keys::Key::load(path, password.as_deref())
}

/// A push to the tags a command names: how, signed or not, and what the build sent ahead.
pub(crate) struct Push {
    pub(crate) opts: PushOptions,
    pub(crate) signing: Option<imgbuild::sink::registry::Signing>,
    pub(crate) sent_ahead: Option<Arc<imgbuild::sink::registry::SendAhead>>,
}

/// The sinks a command writes to, in order: tarball, layout, engine, registries (the tags of
/// `naming`, signed with `push`'s signing when given).
pub(crate) fn sinks_for(
    outputs: &Outputs,
    early: Option<Arc<sink::tarball::Early>>,
    engine: Option<sink::engine::Engine>,
    push: Option<Push>,
    naming: &Naming,
    mtime: u64,
    reporter: &dyn Reporter,
) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &outputs.output {
        warn_tags(&naming.tags, reporter, path);
        sinks.push(Box::new(sink::TarballSink {
            path: path.clone(),
            naming: naming.clone(),
            mtime,
            early,
        }));
    }
    if let Some(path) = &outputs.oci_layout {
        sinks.push(Box::new(sink::LayoutSink {
            path: path.clone(),
            naming: naming.clone(),
            add: outputs.add_to_layout,
        }));
    }
    if let Some(engine) = engine {
        sinks.push(Box::new(sink::EngineSink {
            engine,
            naming: naming.clone(),
        }));
    }
    if let Some(Push {
        opts,
        signing,
        sent_ahead,
    }) = push
    {
        sinks.push(Box::new(sink::RegistrySink {
            targets: naming.tags.clone(),
            opts,
            signing,
            sent_ahead,
        }));
    }
    sinks
}

/// More than one tag in an archive: the rule every reader gets, said once at build time.
pub(crate) fn warn_tags(tags: &[Reference], reporter: &dyn Reporter, path: &std::path::Path) {
    if tags.len() > 1 {
        reporter.warn(&format!(
            "{} holds {} tags: docker, podman, ctr and containerd load every one, but skopeo and other oci-archive readers must name one ({}:{})",
            path.display(),
            tags.len(),
            format_args!("oci-archive:{}", path.display()),
            tags[0].tag_or_latest()
        ));
    }
}

/// Destinations given on the command line: references without digests.
pub fn destinations(given: &[String]) -> Result<Vec<Reference>> {
    let refs = given
        .iter()
        .map(|d| Reference::parse(d))
        .collect::<Result<Vec<_>>>()?;
    if refs.iter().any(|r| r.digest.is_some()) {
        return Err(Error::Usage(
            "a push destination cannot carry a digest: give NAME[:TAG]".into(),
        ));
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        assert_eq!(
            key_value("--env", "A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(key_value("--env", "=x").is_err());
        assert!(
            key_value("--env", "novalue")
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
        assert_eq!(port("4000").unwrap(), "4000/tcp");
        assert_eq!(port("53/UDP").unwrap(), "53/udp");
        assert!(port("0").is_err() && port("70000").is_err() && port("80/icmp").is_err());
        assert_eq!(words("--cmd", r#"["/a b","c"]"#).unwrap(), ["/a b", "c"]);
        assert_eq!(
            words("--cmd", "/app/bin/x start").unwrap(),
            ["/app/bin/x", "start"]
        );
        assert!(words("--cmd", "[oops").is_err());
    }
}
