#![no_main]
//! ELF files of a release or a base: any bytes, no panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = imgbuild::fuzzing::ElfInfo::parse(data) {
        let _ = info.glibc_release();
    }
    let _ = imgbuild::fuzzing::subject_hash(data);
});
