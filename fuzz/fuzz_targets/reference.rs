#![no_main]
//! Image references, platforms and --from sources: any text, no panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = imgbuild::fuzzing::Reference::parse(s) {
            let _ = (
                r.canonical(),
                r.familiar_tagged(),
                r.api_host(),
                r.manifest_reference(),
            );
        }
        let _ = imgbuild::fuzzing::Platform::parse(s);
        let _ = imgbuild::fuzzing::Source::parse(s);
    }
});
