//! What an ELF file needs and offers for dynamic linking: machine, interpreter, `DT_NEEDED`,
//! run paths, and GNU symbol versions (required from `.gnu.version_r`, defined in
//! `.gnu.version_d`). Parsed with goblin; anything malformed is simply "not an ELF we can use".

use goblin::elf::Elf;
use goblin::elf::header;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElfInfo {
    pub machine: u16,
    pub is_64: bool,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub soname: Option<String>,
    /// Versions this file defines (`GLIBC_2.34`, `OPENSSL_3.0.0`).
    pub defines: Vec<String>,
    /// Versions this file requires, per library file name.
    pub requires: Vec<(String, Vec<String>)>,
    /// For glibc's libc.so.6: the release named in its banner ("release version 2.31").
    pub libc_release: Option<String>,
}

pub(crate) fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

impl ElfInfo {
    pub fn parse(bytes: &[u8]) -> Result<ElfInfo, String> {
        if !is_elf(bytes) {
            return Err("not an ELF file".into());
        }
        let elf = Elf::parse(bytes).map_err(|e| e.to_string())?;
        let split = |v: &Vec<&str>| -> Vec<String> {
            v.iter()
                .flat_map(|p| p.split(':'))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut defines = Vec::new();
        if let Some(verdef) = &elf.verdef {
            for def in verdef.iter() {
                // The first auxiliary entry names the version; the rest name its parents.
                if let Some(aux) = def.iter().next()
                    && let Some(name) = elf.dynstrtab.get_at(aux.vda_name)
                {
                    defines.push(name.to_string());
                }
            }
        }
        let mut requires = Vec::new();
        if let Some(verneed) = &elf.verneed {
            for need in verneed.iter() {
                let file = elf.dynstrtab.get_at(need.vn_file).unwrap_or("").to_string();
                let versions = need
                    .iter()
                    .filter_map(|aux| elf.dynstrtab.get_at(aux.vna_name))
                    .map(str::to_string)
                    .collect();
                requires.push((file, versions));
            }
        }
        let soname = elf.soname.map(str::to_string);
        // Not every glibc release adds a symbol version (2.31 defines none newer than
        // GLIBC_2.30), so the banner is the reliable source of the release number.
        let libc_release = if soname.as_deref() == Some("libc.so.6") {
            banner_release(bytes)
        } else {
            None
        };
        Ok(ElfInfo {
            libc_release,
            machine: elf.header.e_machine,
            is_64: elf.is_64,
            interpreter: elf.interpreter.map(str::to_string),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            rpath: split(&elf.rpaths),
            runpath: split(&elf.runpaths),
            soname,
            defines,
            requires,
        })
    }

    /// A GLIBC_x.y version as numbers, for comparisons.
    pub(crate) fn glibc_version(name: &str) -> Option<Vec<u32>> {
        let v = name.strip_prefix("GLIBC_")?;
        v.split('.').map(|p| p.parse().ok()).collect()
    }

    /// The glibc release of a `libc.so.6`: its banner, else the highest `GLIBC_x.y` it defines.
    pub fn glibc_release(&self) -> Option<String> {
        if let Some(r) = &self.libc_release {
            return Some(r.clone());
        }
        self.defines
            .iter()
            .filter_map(|d| Self::glibc_version(d).map(|v| (v, d)))
            .max()
            .map(|(_, d)| d.trim_start_matches("GLIBC_").to_string())
    }
}

/// "... stable release version 2.31." inside glibc's libc.so.6.
fn banner_release(bytes: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"release version ";
    let at = bytes.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let version: String = bytes[at..]
        .iter()
        .take(16)
        .map(|&b| b as char)
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.').to_string();
    (!version.is_empty()).then_some(version)
}

/// The ELF machine for an OCI architecture name.
pub(crate) fn machine_for(arch: &str) -> Option<u16> {
    Some(match arch {
        "amd64" => header::EM_X86_64,
        "arm64" => header::EM_AARCH64,
        "arm" => header::EM_ARM,
        "386" => header::EM_386,
        "ppc64le" => header::EM_PPC64,
        "s390x" => header::EM_S390,
        "riscv64" => header::EM_RISCV,
        "mips64le" => header::EM_MIPS,
        _ => return None,
    })
}

/// A readable name for an ELF machine.
pub(crate) fn machine_name(m: u16) -> String {
    match m {
        header::EM_X86_64 => "x86-64 (amd64)".into(),
        header::EM_AARCH64 => "AArch64 (arm64)".into(),
        header::EM_ARM => "32-bit ARM".into(),
        header::EM_386 => "x86 (386)".into(),
        header::EM_PPC64 => "POWER (ppc64le)".into(),
        header::EM_S390 => "s390x".into(),
        header::EM_RISCV => "RISC-V".into(),
        other => format!("ELF machine {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binary() {
        // The running test executable is a dynamically linked ELF for the host.
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        let info = ElfInfo::parse(&bytes).unwrap();
        assert_eq!(
            Some(info.machine),
            machine_for(crate::oci::platform::Platform::host().architecture.as_str())
        );
        assert!(
            info.needed.iter().any(|n| n.starts_with("libc.so")),
            "{info:?}"
        );
        assert!(info.interpreter.is_some());
        assert!(
            info.requires
                .iter()
                .any(|(f, v)| f.starts_with("libc.so") && v.iter().any(|v| v.starts_with("GLIBC_"))),
            "{info:?}"
        );
        assert!(ElfInfo::parse(b"#!/bin/sh\n").is_err());
        assert!(ElfInfo::parse(b"\x7fELF\x02\x01garbage").is_err());
    }

    #[test]
    fn glibc_versions() {
        let info = ElfInfo {
            defines: vec![
                "GLIBC_2.2.5".into(),
                "GLIBC_2.36".into(),
                "GLIBC_2.4".into(),
                "GLIBC_PRIVATE".into(),
            ],
            ..ElfInfo::default()
        };
        assert_eq!(info.glibc_release().as_deref(), Some("2.36"));
        assert!(ElfInfo::glibc_version("GLIBC_2.34") > ElfInfo::glibc_version("GLIBC_2.4"));
        assert_eq!(
            banner_release(
                b"xx GNU C Library (Debian GLIBC 2.31-13) stable release version 2.31.\nCopyright"
            )
            .as_deref(),
            Some("2.31")
        );
    }
}
