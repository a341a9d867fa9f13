//! A release built with `include_erts: false` runs on the image's own Erlang: found on the
//! image's PATH, of the release's ERTS version, with the OTP applications the release boots.

use crate::fs::Node;
use crate::fs::RootFs;
use crate::fs::elf::ElfInfo;

use super::{DEFAULT_PATH, ImageEnv, Problem};

/// The image's Erlang for a release without ERTS: the `erl` on the image's PATH, whose root
/// must hold `erts-<vsn>` of exactly the release's version (`releases/start_erl.data`), and
/// every OTP application the release boots but does not carry (Mix leaves them out with ERTS)
/// at the version its `.rel` names. Gives that ERTS's ELF files, or the problem (no Erlang,
/// another version, naming both, or the applications missing).
pub(crate) fn base_erts(
    fs: &RootFs,
    env: &ImageEnv,
    release: &crate::release::Release,
    workdir: &str,
    start_script: &str,
) -> std::result::Result<Vec<(String, ElfInfo)>, Problem> {
    let erts_version = release.erts_version.as_str();
    let path_var = env.path.clone().unwrap_or_else(|| DEFAULT_PATH.into());
    let problem = |missing: String| Problem {
        file: start_script.to_string(),
        needs: format!(
            "Erlang with ERTS {erts_version} in the image (the release was built with include_erts: false)"
        ),
        missing,
        fix: format!(
            "use a base with the Erlang/OTP the release was built with (ERTS {erts_version}), such as the official erlang image of that OTP release, or build the release with include_erts: true"
        ),
    };
    let erl = path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/erl", d.trim_end_matches('/')))
        .find(|p| fs.is_executable_file(p))
        .ok_or_else(|| problem(format!("no erl on the image's PATH ({path_var})")))?;
    let real = fs.resolve(&erl).unwrap_or_else(|| erl.clone());
    let parent = |p: &str| {
        p.rsplit_once('/')
            .map_or("/".to_string(), |(a, _)| a.to_string())
    };
    // erl is ROOT/bin/erl (or ROOT/erts-VSN/bin/erl).
    let mut root = parent(&parent(&real));
    if root
        .rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("erts-"))
    {
        root = parent(&root);
    }
    let dir = format!("{root}/erts-{erts_version}");
    if !fs.exists(&format!("{dir}/bin")) {
        let have: Vec<String> = fs
            .list(&root)
            .iter()
            .filter_map(|p| {
                p.rsplit('/')
                    .next()?
                    .strip_prefix("erts-")
                    .map(str::to_string)
            })
            .collect();
        return Err(problem(format!(
            "the image's Erlang ({erl} in {root}) has {}",
            if have.is_empty() {
                "no ERTS directory".to_string()
            } else {
                format!("ERTS {}, not {erts_version}", have.join(", "))
            }
        )));
    }
    let lib = format!("/{}/lib", workdir.trim_matches('/'));
    let missing: Vec<String> = release
        .applications
        .iter()
        .map(|a| format!("{}-{}", a.name, a.version))
        .filter(|a| !fs.exists(&format!("{lib}/{a}")) && !fs.exists(&format!("{root}/lib/{a}")))
        .collect();
    if !missing.is_empty() {
        return Err(Problem {
            file: start_script.to_string(),
            needs: format!(
                "the OTP applications {} from the image's Erlang (the release was built with include_erts: false, so it does not carry them)",
                missing.join(", ")
            ),
            missing: format!("not in {root}/lib"),
            fix: "use a base whose Erlang has them at these versions (on Debian, the erlang-<application> packages of the same OTP; the official erlang images have every one), or build the release with include_erts: true".into(),
        });
    }
    Ok(fs
        .list(&format!("{dir}/bin"))
        .into_iter()
        .filter_map(|p| match fs.lookup(&p) {
            Some((_, Node::File { elf: Some(e), .. })) => Some((p, e.clone())),
            _ => None,
        })
        .collect())
}
