//! Series planning (sorting, gap/duplicate/tilt checks, geometry) on
//! arbitrary slice positions and orientations: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

use delineate_dicom::{header::InstanceHeader, plan, ReadOptions};

fn f(bytes: &[u8], i: usize) -> f64 {
    let mut b = [0u8; 4];
    for (k, v) in b.iter_mut().enumerate() {
        *v = *bytes.get(i * 4 + k).unwrap_or(&0);
    }
    // Small decimal values like real positions, plus the odd wild one.
    let x = i32::from_le_bytes(b);
    if x % 97 == 0 { f64::from(x) * 1e3 } else { f64::from(x % 20000) / 100.0 }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let n = (data[0] % 12) as usize + 1;
    let flags = data[1];
    let body = &data[2..];
    let iop = [0, 1, 2, 3, 4, 5].map(|k| f(body, k) / 100.0);
    let slices: Vec<InstanceHeader> = (0..n)
        .map(|s| {
            let mut h = blank();
            h.image_position = Some([f(body, 6 + 3 * s), f(body, 7 + 3 * s), f(body, 8 + 3 * s)]);
            h.image_orientation = Some(if flags & 1 == 0 { [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] } else { iop });
            h.sop_instance_uid = format!("1.2.{}", s % 3);
            h
        })
        .collect();
    let refs: Vec<&InstanceHeader> = slices.iter().collect();
    let opts = ReadOptions { allow_irregular_spacing: flags & 2 != 0, allow_tilt: flags & 4 != 0, ..Default::default() };
    let _ = plan(std::path::Path::new("fuzz"), &refs, &opts);
});

fn blank() -> InstanceHeader {
    InstanceHeader {
        path: "f".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
        sop_instance_uid: String::new(),
        series_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        modality: "MR".into(),
        series_description: String::new(),
        series_number: None,
        instance_number: None,
        manufacturer: String::new(),
        patient: Default::default(),
        study: Default::default(),
        rows: Some(4),
        columns: Some(5),
        pixel_spacing: Some([1.0, 0.5]),
        image_position: None,
        image_orientation: None,
        slice_thickness: None,
        samples_per_pixel: Some(1),
        photometric_interpretation: "MONOCHROME2".into(),
        bits_allocated: Some(16),
        pixel_representation: Some(0),
        number_of_frames: 1,
        frame: None,
        rescale_slope: 1.0,
        rescale_intercept: 0.0,
        has_pixel_data: true,
        problems: vec![],
    }
}
