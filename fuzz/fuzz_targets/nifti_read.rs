//! NIfTI reader on arbitrary bytes (gzipped or not): errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.nii");
    if let Ok((vol, _)) = delineate_imaging::nifti_io::read_nifti_from_memory::<f32>(data, path) {
        // Exercise the geometry of whatever parsed.
        let g = vol.geometry();
        let _ = g.world_to_index(g.index_to_world([1.0, 2.0, 3.0]));
        let _ = g.orientation_code();
        let _ = vol.to_canonical();
    }
    if let Ok((any, _)) = delineate_imaging::nifti_io::read_nifti_any_from_memory(data, path) {
        let _ = any.to_labels();
        let _ = any.geometry().orientation_code();
    }
});
