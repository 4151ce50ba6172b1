//! What the DICOM node parses from the network before anything else: PDUs
//! (dicom-ul's reader, with our limits) and DIMSE command sets (ours).
//! Errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        let _ = delineate_service::dimse::parse(rest);
    } else {
        let _ = dicom_ul::pdu::read_pdu(rest, 65_536, true);
    }
});
