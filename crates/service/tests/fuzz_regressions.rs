//! Inputs the `dicom_node` fuzzer once failed on (tests/fuzz_regressions/):
//! each must now be refused with an error, quickly and without allocating
//! what it declares. First byte even: a DIMSE command set; odd: a PDU.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn fuzz_findings_are_clean_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (&which, rest) = bytes.split_first().unwrap();
        let refused = if which % 2 == 0 {
            delineate_service::dimse::parse(rest).is_err()
        } else {
            !matches!(dicom_ul::pdu::read_pdu(rest, 65_536, true), Ok(Some(_)))
        };
        assert!(refused, "{} was accepted", path.display());
        n += 1;
    }
    assert!(n >= 1);
}
