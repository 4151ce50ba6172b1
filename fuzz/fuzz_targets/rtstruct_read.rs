//! RTSTRUCT parsing and rasterisation on arbitrary bytes, onto a small
//! fixed grid: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

use delineate_imaging::Geometry;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz_rt.dcm");
    let Ok(obj) = delineate_dicom::header::parse_bytes(data, path) else { return };
    let Ok(grid) = Geometry::new([24, 20, 12], [1.0, 1.0, 2.0], [-12.0, -10.0, -12.0], Geometry::IDENTITY) else { return };
    let for_uid = obj.get(dicom_dictionary_std::tags::FRAME_OF_REFERENCE_UID).and_then(|e| e.to_str().ok()).map(|s| s.to_string()).unwrap_or_default();
    if let Ok(rt) = delineate_dicom::rtstruct_read::rtstruct_masks(&obj, path, &grid, &for_uid) {
        let _ = rt.label_map(&grid);
    }
});
