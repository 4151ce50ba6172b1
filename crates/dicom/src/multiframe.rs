//! Enhanced (multi-frame) MR: one instance holds the whole series, and each
//! frame's position, orientation, pixel spacing and rescale live in
//! functional groups (PS3.3 C.7.6.16), per frame or shared. A multi-frame
//! instance is expanded into one header per frame, so that series planning,
//! decoding and RTSTRUCT references treat frames like single-frame slices.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::header::InstanceHeader;

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

fn floats(obj: &InMemDicomObject, tag: Tag, n: usize) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    (v.len() == n && v.iter().all(|x| x.is_finite())).then_some(v)
}

/// One header per frame (`frame` = Some(k), 0-based), or `h` itself for a
/// single-frame instance. The error says which frame lacks what.
pub fn expand(obj: &InMemDicomObject, h: InstanceHeader) -> Result<Vec<InstanceHeader>, String> {
    if h.number_of_frames <= 1 {
        return Ok(vec![h]);
    }
    let n = h.number_of_frames as usize;
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per: Vec<&InMemDicomObject> = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| items.iter().collect())
        .unwrap_or_default();
    if per.len() != n {
        return Err(format!(
            "Number of Frames is {n} but the Per-frame Functional Groups Sequence has {} item(s)",
            per.len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    for (k, f) in per.iter().enumerate() {
        // A functional group is per frame, else shared (PS3.3 C.7.6.16.1).
        let group =
            |seq: Tag| first_item(f, seq).or_else(|| shared.and_then(|s| first_item(s, seq)));
        let missing = |what: &str| format!("frame {}: no {what} in its functional groups", k + 1);
        let pos = group(tags::PLANE_POSITION_SEQUENCE)
            .and_then(|g| floats(g, tags::IMAGE_POSITION_PATIENT, 3))
            .ok_or_else(|| missing("ImagePositionPatient (Plane Position)"))?;
        let ori = group(tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|g| floats(g, tags::IMAGE_ORIENTATION_PATIENT, 6))
            .ok_or_else(|| missing("ImageOrientationPatient (Plane Orientation)"))?;
        let measures = group(tags::PIXEL_MEASURES_SEQUENCE);
        let spacing = measures
            .and_then(|g| floats(g, tags::PIXEL_SPACING, 2))
            .ok_or_else(|| missing("PixelSpacing (Pixel Measures)"))?;
        let mut fh = h.clone();
        fh.image_position = Some([pos[0], pos[1], pos[2]]);
        fh.image_orientation = Some([ori[0], ori[1], ori[2], ori[3], ori[4], ori[5]]);
        fh.pixel_spacing = Some([spacing[0], spacing[1]]);
        if let Some(t) = measures.and_then(|g| floats(g, tags::SLICE_THICKNESS, 1)) {
            fh.slice_thickness = Some(t[0]);
        }
        if let Some(g) = group(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
            fh.rescale_slope = floats(g, tags::RESCALE_SLOPE, 1).map_or(1.0, |v| v[0]);
            fh.rescale_intercept = floats(g, tags::RESCALE_INTERCEPT, 1).map_or(0.0, |v| v[0]);
        }
        fh.frame = Some(k as u32);
        fh.instance_number = Some(k as i64 + 1);
        out.push(fh);
    }
    Ok(out)
}
