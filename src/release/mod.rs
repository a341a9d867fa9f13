//! Release inspection: find a `mix release` directory, read what it is (name, version, ERTS,
//! applications), and plan the image layers from it, split by how often each part changes.

pub mod erl_term;
pub mod mix_lock;
pub mod otp;
pub mod phoenix;
mod plan;
mod read;

use std::path::PathBuf;

use serde::Serialize;

pub use crate::oci::LayerKind;
pub use plan::{Entry, EntryKind, LayerPlan, PlanOptions, Warnings, plan_layers};
pub use read::{locate, parse_rel_file};

/// uid of `nobody`, as `COPY --chown=nobody:root` in Phoenix's Dockerfile gives.
pub const RUNTIME_UID: u64 = 65534;
pub const RUNTIME_GID: u64 = 0;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppVersion {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug)]
pub struct Release {
    pub root: PathBuf,
    pub name: String,
    pub version: String,
    /// ERTS version from `releases/start_erl.data`.
    pub erts_version: String,
    /// Whether the release ships its own ERTS (`include_erts: true`, the default).
    pub includes_erts: bool,
    /// Applications listed in `releases/<vsn>/<name>.rel`.
    pub applications: Vec<AppVersion>,
    /// Whether Phoenix's `bin/server` overlay is present.
    pub has_server: bool,
}

impl Release {
    /// A release with a name and version and nothing else, for tests of what is built on it.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, version: &str) -> Release {
        Release {
            root: PathBuf::from("/nonexistent"),
            name: name.into(),
            version: version.into(),
            erts_version: "0".into(),
            includes_erts: true,
            applications: vec![],
            has_server: false,
        }
    }
}

/// A small release on disk, for the tests of reading and planning.
#[cfg(test)]
mod fixture {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    pub(super) const REL: &str = r#"%% coding: utf-8
{release,{"hello","0.1.0"},
         {erts,"13.1.5"},
         [{kernel,"8.5.3",permanent},
          {stdlib,"4.2"},
          {'my-app',"1.0",load,[x]},
          {iex,"1.14.0",none}]}.
"#;

    pub(super) fn fake_release(dir: &Path) {
        let mk = |p: &str, content: &str| {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        };
        mk("releases/start_erl.data", "13.1.5 0.1.0");
        mk("releases/0.1.0/hello.rel", REL);
        mk("releases/COOKIE", "secret");
        mk("bin/hello", "#!/bin/sh\n");
        mk("bin/server", "#!/bin/sh\n");
        mk("erts-13.1.5/bin/beam.smp", "ELF");
        mk("lib/kernel-8.5.3/ebin/kernel.app", "{}");
        mk("lib/stdlib-4.2/ebin/stdlib.app", "{}");
        mk("lib/hello-0.1.0/ebin/hello.app", "{}");
        fs::set_permissions(dir.join("bin/hello"), fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink("hello", dir.join("bin/link")).unwrap();
    }
}
