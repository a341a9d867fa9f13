#![no_main]
//! Manifests, indexes and configs as a registry or archive might serve them.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for media in [
        "",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] {
        if let Ok(imgbuild::fuzzing::Document::Index(index)) =
            imgbuild::fuzzing::parse_document(data, media, "fuzz")
        {
            let _ = imgbuild::fuzzing::select_from_index(&index, None, "fuzz");
        }
    }
    let _ = imgbuild::fuzzing::sbom_summary(data);
});
