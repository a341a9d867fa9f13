#![no_main]
//! apt's Release and Packages files, sources, dependency fields and version strings.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    use imgbuild::fuzzing::{index, version};
    for st in index::stanzas(s) {
        let _ = index::release_hashes(&st);
        for v in st.values() {
            let _ = index::parse_depends(v);
            let _ = index::parse_provides(v);
        }
    }
    let _ = index::verify_inrelease(s, &[]);
    let _ = imgbuild::fuzzing::parse_deb822(s);
    for line in s.lines() {
        let _ = imgbuild::fuzzing::parse_source_line(line);
    }
    if s.is_char_boundary(s.len() / 2) {
        let (a, b) = s.split_at(s.len() / 2);
        let _ = version::compare(a, b);
        let _ = version::satisfies(a, ">=", b);
    }
    let _ = imgbuild::fuzzing::parse_dpkg_status(s);
});
