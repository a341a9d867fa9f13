#![no_main]
//! `.deb` files: ar members, control and data tars. Read from a file, unpacked into staging.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let deb = dir.path().join("x.deb");
    if std::fs::write(&deb, data).is_err() {
        return;
    }
    let _ = imgbuild::fuzzing::read_control(&deb, "fuzz");
    let staging = dir.path().join("staging");
    let _ = std::fs::create_dir_all(&staging);
    let _ = imgbuild::fuzzing::unpack_data(&deb, &staging, "fuzz");
});
