//! Inputs the fuzzer once crashed on (tests/fuzz_regressions/): each must
//! now be refused with an error naming the file, never a panic.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn fuzz_findings_are_clean_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        // Refused when parsing (structure) or when decoding (pixel data).
        let err = match delineate_dicom::header::parse_bytes(&bytes, &path) {
            Err(e) => e,
            Ok(obj) => {
                let h = delineate_dicom::header::extract(&obj, &path);
                let (r, c) = (
                    h.rows.unwrap_or(1) as usize,
                    h.columns.unwrap_or(1) as usize,
                );
                delineate_dicom::decode_object(&obj, &path, c, r).expect_err("must be refused")
            }
        };
        assert!(
            err.to_string()
                .contains(path.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        n += 1;
    }
    assert!(n >= 1);
}
