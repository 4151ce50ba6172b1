//! Inputs the fuzzer once crashed on (kept in tests/fuzz_regressions/):
//! each must now give an error that names the file, not a panic.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn fuzz_findings_are_clean_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let err = delineate_imaging::nifti_io::read_nifti_from_memory::<f32>(&bytes, &path)
            .expect_err("a fuzz finding must be refused");
        assert!(
            err.to_string()
                .contains(path.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        // The nifti crate reserves an extension's declared size before
        // reading it; we refuse sizes that do not fit the file first.
        if path.to_string_lossy().contains("extension") {
            assert!(
                err.to_string().contains("corrupt header extension"),
                "{err}"
            );
        }
        n += 1;
    }
    assert!(n >= 2);
}
