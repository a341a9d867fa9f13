use std::fs;
use std::path::Path;

use super::*;
use crate::release::AppVersion;

/// A release on disk with the start script of Elixir 1.14 (the parts the launcher checks).
fn release(dir: &Path, env_sh: &str) -> Release {
    let script = r#"#!/bin/sh
REL_VSN_DIR="$RELEASE_ROOT/releases/$RELEASE_VSN"
. "$REL_VSN_DIR/env.sh"
RELEASE_BOOT_SCRIPT_CLEAN="${RELEASE_BOOT_SCRIPT_CLEAN:-"start_clean"}"
start () {
  exec "$REL_VSN_DIR/$REL_EXEC" \
       --erl "-mode $RELEASE_MODE" \
       --boot-var RELEASE_LIB "$RELEASE_ROOT/lib" \
}
case $1 in
  start)
    start "elixir" --no-halt
    ;;
esac
"#;
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("releases/0.1.0")).unwrap();
    fs::write(dir.join("bin/hello"), script).unwrap();
    fs::write(dir.join("releases/0.1.0/env.sh"), env_sh).unwrap();
    let mut r = Release::for_tests("hello", "0.1.0");
    r.root = dir.to_path_buf();
    r.erts_version = "13.1.5".into();
    r.applications = vec![AppVersion {
        name: "elixir".into(),
        version: "1.14.0".into(),
    }];
    r
}

#[test]
fn elixir_versions_map_to_their_script_shapes() {
    assert_eq!(Cli::of("1.14.0"), Some(Cli::V1_14));
    assert_eq!(Cli::of("1.15.0"), Some(Cli::V1_15_0));
    assert_eq!(Cli::of("1.15.7"), Some(Cli::V1_15));
    assert_eq!(Cli::of("1.16.3"), Some(Cli::V1_15));
    assert_eq!(Cli::of("1.18.4"), Some(Cli::V1_17));
    assert_eq!(Cli::of("1.19.0-rc.1"), Some(Cli::V1_19));
    assert_eq!(Cli::of("1.13.4"), None);
    assert_eq!(Cli::of(""), None);
}

#[test]
fn a_launcher_for_each_carried_machine() {
    let dir = tempfile::tempdir().unwrap();
    let r = release(dir.path(), "# nothing\n");
    let l = for_release(&r, "/app").unwrap();
    assert_eq!(l.path, "app/bin/hello");
    assert_eq!(l.default_command, "start");
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183)] {
        let bin = l.binary(arch).unwrap();
        assert_eq!(&bin[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), machine, "{arch}");
        // The plan is in it, once.
        let at = bin
            .windows(plan::MARKER.len())
            .position(|w| w == plan::MARKER)
            .unwrap();
        assert!(bin[at + plan::MARKER.len() + 1..].starts_with(&[]));
        assert_ne!(&bin[at + 23..at + 25], &[0, 0], "{arch}: a plan length");
    }
    let err = l.binary("s390x").unwrap_err().to_string();
    assert!(err.contains("amd64 and arm64"), "{err}");
}

#[test]
fn refusals_name_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let r = release(dir.path(), "# x\nexport NODE_IP=$(hostname -i)\n");
    let err = for_release(&r, "/app").unwrap_err().to_string();
    assert!(err.contains("env.sh:2"), "{err}");
    assert!(err.contains("hostname -i"), "{err}");
    assert!(err.contains("--env"), "{err}");

    let r = release(dir.path(), "");
    fs::write(
        dir.path().join("bin/hello"),
        "#!/bin/sh\nexec my-own-thing\n",
    )
    .unwrap();
    let err = for_release(&r, "/app").unwrap_err().to_string();
    assert!(
        err.contains("bin/hello") && err.contains("not the start script"),
        "{err}"
    );

    let mut r = release(dir.path(), "");
    r.includes_erts = false;
    let err = for_release(&r, "/app").unwrap_err().to_string();
    assert!(err.contains("include_erts"), "{err}");

    let mut r = release(dir.path(), "");
    r.applications.clear();
    let err = for_release(&r, "/app").unwrap_err().to_string();
    assert!(err.contains("Elixir"), "{err}");
}
