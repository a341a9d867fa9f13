use super::*;
use crate::apt::Locked;

fn pin(name: &str, version: &str) -> Locked {
    Locked {
        name: name.into(),
        version: version.into(),
        architecture: "amd64".into(),
        sha256: "0".repeat(64),
        size: 1,
        url: format!("http://deb.example/pool/{name}.deb"),
        filename: format!("pool/{name}.deb"),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The lock a `--package ca-certificates --package libssl3` build writes: openssl comes
/// with ca-certificates.
fn lock() -> LockFile {
    LockFile {
        requested: names(&["ca-certificates", "libssl3"]),
        architecture: "amd64".into(),
        packages: vec![
            pin("ca-certificates", "20230311"),
            pin("libssl3", "3.0.11-1~deb12u2"),
            pin("openssl", "3.0.11-1~deb12u2"),
        ],
        ..Default::default()
    }
}

fn input<'a>(
    recorded: Option<Vec<String>>,
    closure: &'a [String],
    lock: Option<&'a LockFile>,
    base_has: &'a BTreeMap<String, String>,
    update_lock: bool,
) -> PlanInput<'a> {
    PlanInput {
        recorded,
        closure,
        lock,
        base_has,
        lock_path: Path::new("/p/imgbuild.lock"),
        update_lock,
        image: "app.tar",
        base: "new-base",
        arch: "amd64",
    }
}

#[test]
fn the_recorded_request_meets_the_projects_lock() {
    let (l, base) = (lock(), BTreeMap::new());
    let closure = names(&["ca-certificates", "libssl3", "openssl"]);
    let recorded = Some(names(&["ca-certificates", "libssl3"]));
    let p = plan_packages(&input(recorded, &closure, Some(&l), &base, false)).unwrap();
    assert_eq!(p.requested, names(&["ca-certificates", "libssl3"]));
    assert_eq!(p.from, PackagesFrom::Lock);
    assert!(p.note.contains("--update-lock"), "{}", p.note);
    // An image from before the label: the lock's request, since its pins are the image's.
    let p = plan_packages(&input(None, &closure, Some(&l), &base, false)).unwrap();
    assert_eq!(p.requested, names(&["ca-certificates", "libssl3"]));
    assert_eq!(p.from, PackagesFrom::Lock);
}

#[test]
fn update_lock_or_no_lock_resolves_afresh() {
    let (l, base) = (lock(), BTreeMap::new());
    let closure = names(&["libssl3"]);
    let recorded = Some(names(&["libssl3"]));
    // Even a lock of another request: --update-lock rewrites it.
    let p = plan_packages(&input(recorded.clone(), &closure, Some(&l), &base, true)).unwrap();
    assert_eq!(p.from, PackagesFrom::Resolved);
    let p = plan_packages(&input(recorded, &closure, None, &base, false)).unwrap();
    assert_eq!(p.from, PackagesFrom::Resolved);
    assert!(p.note.contains("not written"), "{}", p.note);
    let p = plan_packages(&input(None, &[], Some(&l), &base, false)).unwrap();
    assert_eq!(p.from, PackagesFrom::None);
}

#[test]
fn a_lock_that_does_not_fit_names_the_file_and_the_fix() {
    let l = lock();
    let closure = names(&["libssl3"]);
    let recorded = Some(names(&["libssl3"]));
    let e = plan_packages(&input(
        recorded,
        &closure,
        Some(&l),
        &BTreeMap::new(),
        false,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/p/imgbuild.lock") && e.contains("--update-lock") && e.contains("app.tar"),
        "{e}"
    );
    assert!(!e.contains("this build asks"), "{e}");
    // The new base has libssl3 already, at its own (patched) version.
    let base: BTreeMap<String, String> =
        [("libssl3".to_string(), "3.0.15-1~deb12u1".to_string())].into();
    let closure = names(&["ca-certificates", "libssl3", "openssl"]);
    let recorded = Some(names(&["ca-certificates", "libssl3"]));
    let e = plan_packages(&input(recorded.clone(), &closure, Some(&l), &base, false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("libssl3 3.0.15-1~deb12u1") && e.contains("--update-lock"),
        "{e}"
    );
    // The same version in the base is no clash.
    let base: BTreeMap<String, String> =
        [("libssl3".to_string(), "3.0.11-1~deb12u2".to_string())].into();
    let p = plan_packages(&input(recorded, &closure, Some(&l), &base, false)).unwrap();
    assert_eq!(p.from, PackagesFrom::Lock);
}
