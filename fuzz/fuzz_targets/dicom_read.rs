//! DICOM instance parsing, header extraction and pixel decoding on
//! arbitrary bytes: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.dcm");
    let Ok(obj) = delineate_dicom::header::parse_bytes(data, path) else { return };
    let h = delineate_dicom::header::extract(&obj, path);
    if delineate_dicom::check_transfer_syntax(&h).is_err() {
        return;
    }
    if let (Some(r), Some(c)) = (h.rows, h.columns) {
        // Bound the work: the real reader checks sizes against the data.
        if (r as usize) * (c as usize) <= 1 << 20 {
            let _ = delineate_dicom::decode_object(&obj, path, c as usize, r as usize);
        }
    }
});
