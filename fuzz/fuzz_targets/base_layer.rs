#![no_main]
//! Base layers as tar streams: hostile names, links, whiteouts and headers stay in the virtual
//! tree; nothing panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fs = imgbuild::fuzzing::RootFs::new();
    if fs.apply_layer(data, "fuzz").is_ok() {
        for p in [
            "/bin/sh",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/etc/ld.so.conf",
            "/",
        ] {
            let _ = fs.resolve(p);
            let _ = fs.list(p);
        }
        let _ = imgbuild::fuzzing::debian_packages(&fs);
        let _ = imgbuild::fuzzing::sources_of(&fs);
    }
});
