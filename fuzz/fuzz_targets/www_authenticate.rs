#![no_main]
//! WWW-Authenticate challenges from a registry: any header value, no panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        for c in imgbuild::fuzzing::parse_challenge(s) {
            let _ = c.param("realm");
        }
    }
});
