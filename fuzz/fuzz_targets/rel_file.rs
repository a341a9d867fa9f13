#![no_main]
//! The release's `.rel` file (Erlang terms).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = imgbuild::fuzzing::parse_rel_file(s);
    }
});
