//! Platforms (`os/arch[/variant]`) and how to match them against index entries, with
//! containerd's normalisation: arm64 `v8` is arm64, arm without variant is `v7`, amd64 `v1` is amd64.

use std::fmt;

use crate::error::{Error, Result};

/// Which images of a multi-platform source to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Platforms {
    /// One image: for this platform (`None`: the host's when choosing from an index).
    One(Option<Platform>),
    /// The whole index, every platform.
    All,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::Usage(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"
            ))
        };
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'))
        {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        }
        .normalized())
    }

    /// The platform this process runs on.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    pub(crate) fn normalized(mut self) -> Platform {
        let arch = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            "armhf" => {
                self.variant.get_or_insert_with(|| "v7".into());
                "arm"
            }
            "armel" => {
                self.variant.get_or_insert_with(|| "v6".into());
                "arm"
            }
            "i386" | "i686" => "386",
            other => other,
        }
        .to_string();
        self.architecture = arch;
        self.variant = match (self.architecture.as_str(), self.variant.take()) {
            ("arm64", Some(v)) if v == "v8" || v == "8" => None,
            ("amd64", Some(v)) if v == "v1" => None,
            ("arm", None) => Some("v7".into()),
            ("arm", Some(v)) if !v.starts_with('v') => Some(format!("v{v}")),
            (_, v) => v.filter(|v| !v.is_empty()),
        };
        self
    }

    /// Whether an index entry's platform is this one, after normalisation of both.
    pub(crate) fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let other = Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
        .normalized();
        let me = self.clone().normalized();
        me.os == other.os && me.architecture == other.architecture && me.variant == other.variant
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_normalise() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/amd64/v1/x").is_err());
        assert!(Platform::parse("linux//v7").is_err());
    }

    #[test]
    fn matching() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(arm64.matches("linux", "arm64", None));
        assert!(!arm64.matches("linux", "amd64", None));
        let arm = Platform::parse("linux/arm/v7").unwrap();
        assert!(arm.matches("linux", "arm", None));
        assert!(!arm.matches("linux", "arm", Some("v6")));
        assert!(!Platform::host().matches("unknown", "unknown", None));
    }
}
