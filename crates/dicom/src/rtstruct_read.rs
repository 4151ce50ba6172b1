//! RT Structure Set reading: contours → one mask per ROI on the grid of the
//! reference series, rasterised with the even-odd rule at voxel centres
//! ([`crate::contour::rasterise_even_odd`]). This is how clinical contours
//! from a planning system become training data.
//!
//! * A contour is assigned to the slice nearest its plane; points may be off
//!   the slice by up to [`SLICE_TOLERANCE`] of the slice spacing (planning
//!   systems round positions), otherwise the contour is refused.
//! * All contours of one ROI on one slice are combined with the even-odd
//!   rule (XOR: a contour inside another is a hole), or, chosen per file,
//!   as a union ([`Combine`]; planning systems that draw overlapping parts
//!   of one structure as separate contours need it).
//! * POINT and OPEN_PLANAR contours have no inside and are skipped (with a
//!   warning); contours outside the volume are skipped with a warning.
//! * A structure set in another Frame of Reference is refused.
//! * The images the contours reference are collected
//!   ([`RtStructMasks::referenced_images`]): contours drawn on another series
//!   of the same Frame of Reference are legitimate (registered images), so
//!   callers warn rather than refuse when they are not the reference's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use delineate_imaging::{Geometry, Volume};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use crate::contour::{rasterise_even_odd, Polygon};
use crate::header::open_full;
use crate::roi_select::Combine;
use crate::rtstruct_write::RTSTRUCT_SOP_CLASS;
use crate::Error;

/// Largest distance (fraction of the slice spacing) between a contour's
/// points and the slice it is assigned to.
pub const SLICE_TOLERANCE: f64 = 0.3;

/// One ROI read back.
#[derive(Clone, Debug, Serialize)]
pub struct RoiInfo {
    pub number: i64,
    pub name: String,
    pub interpreted_type: String,
    pub description: String,
    pub contours: usize,
    pub voxels: usize,
}

/// The structure set on the reference grid.
#[derive(Clone, Debug)]
pub struct RtStructMasks {
    pub rois: Vec<RoiInfo>,
    /// One mask per ROI, in the order of `rois`.
    pub masks: Vec<Volume<bool>>,
    /// SOP Instance UIDs of the images the contours say they were drawn on.
    pub referenced_images: BTreeSet<String>,
    pub warnings: Vec<String>,
}

impl RtStructMasks {
    /// A label map: voxel = 1-based index into `rois`; where ROIs overlap,
    /// the later ROI wins (the per-ROI masks keep every voxel).
    pub fn label_map(&self, geometry: &Geometry) -> Volume<u32> {
        let mut out = Volume::filled(geometry.clone(), 0u32);
        for (n, m) in self.masks.iter().enumerate() {
            for (o, &b) in out.as_mut_slice().iter_mut().zip(m.as_slice()) {
                if b {
                    *o = n as u32 + 1;
                }
            }
        }
        out
    }
}

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

fn string(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

/// Reads `path` and rasterises every ROI on `reference` (the grid of the
/// series the structure set references), whose Frame of Reference is
/// `frame_of_reference_uid`.
pub fn read_rtstruct(
    path: &Path,
    reference: &Geometry,
    frame_of_reference_uid: &str,
) -> Result<RtStructMasks, Error> {
    read_rtstruct_with(path, reference, frame_of_reference_uid, Combine::EvenOdd)
}

/// [`read_rtstruct`] with the contour combination rule chosen.
pub fn read_rtstruct_with(
    path: &Path,
    reference: &Geometry,
    frame_of_reference_uid: &str,
    combine: Combine,
) -> Result<RtStructMasks, Error> {
    let file = open_full(path)?;
    rtstruct_masks_with(&file, path, reference, frame_of_reference_uid, combine)
}

/// Rasterises a parsed structure set (`path` only names it in messages);
/// the fuzz target's entry.
pub fn rtstruct_masks(
    obj: &InMemDicomObject,
    path: &Path,
    reference: &Geometry,
    frame_of_reference_uid: &str,
) -> Result<RtStructMasks, Error> {
    rtstruct_masks_with(
        obj,
        path,
        reference,
        frame_of_reference_uid,
        Combine::EvenOdd,
    )
}

/// [`rtstruct_masks`] with the contour combination rule chosen.
pub fn rtstruct_masks_with(
    obj: &InMemDicomObject,
    path: &Path,
    reference: &Geometry,
    frame_of_reference_uid: &str,
    combine: Combine,
) -> Result<RtStructMasks, Error> {
    let sop = string(obj, tags::SOP_CLASS_UID);
    if sop != RTSTRUCT_SOP_CLASS {
        return Err(Error::file(
            path,
            format!("not an RT Structure Set (SOP Class {sop})"),
        ));
    }
    let fors: Vec<String> = items(obj, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE)
        .iter()
        .map(|i| string(i, tags::FRAME_OF_REFERENCE_UID))
        .collect();
    let mut warnings = Vec::new();
    if !fors.is_empty() && !fors.iter().any(|f| f == frame_of_reference_uid) {
        return Err(Error::file(
            path,
            format!(
                "the structure set belongs to Frame of Reference {} but the reference series is in {frame_of_reference_uid}: \
                 these contours do not belong to these images",
                fors.join(", ")
            ),
        ));
    }
    let mut names: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for r in items(obj, tags::STRUCTURE_SET_ROI_SEQUENCE) {
        let Some(n) = int(r, tags::ROI_NUMBER) else {
            continue;
        };
        let rfor = string(r, tags::REFERENCED_FRAME_OF_REFERENCE_UID);
        if !rfor.is_empty() && rfor != frame_of_reference_uid {
            return Err(Error::file(path, format!("ROI {n} is in Frame of Reference {rfor}, not the reference series' {frame_of_reference_uid}")));
        }
        names.insert(
            n,
            (string(r, tags::ROI_NAME), string(r, tags::ROI_DESCRIPTION)),
        );
    }
    let mut types: BTreeMap<i64, String> = BTreeMap::new();
    for o in items(obj, tags::RTROI_OBSERVATIONS_SEQUENCE) {
        if let Some(n) = int(o, tags::REFERENCED_ROI_NUMBER) {
            types.insert(n, string(o, tags::RTROI_INTERPRETED_TYPE));
        }
    }
    let [nx, ny, nz] = reference.size;
    let slice_spacing = reference.spacing[2];
    let mut rois = Vec::new();
    let mut masks = Vec::new();
    let mut referenced_images = BTreeSet::new();
    for rc in items(obj, tags::ROI_CONTOUR_SEQUENCE) {
        let number = int(rc, tags::REFERENCED_ROI_NUMBER)
            .ok_or_else(|| Error::file(path, "an ROI Contour item has no Referenced ROI Number"))?;
        let (name, description) = names
            .get(&number)
            .cloned()
            .unwrap_or_else(|| (format!("ROI {number}"), String::new()));
        let mut per_slice: BTreeMap<usize, Vec<Polygon>> = BTreeMap::new();
        let mut count = 0;
        for c in items(rc, tags::CONTOUR_SEQUENCE) {
            for image in items(c, tags::CONTOUR_IMAGE_SEQUENCE) {
                referenced_images.insert(string(image, tags::REFERENCED_SOP_INSTANCE_UID));
            }
            let kind = string(c, tags::CONTOUR_GEOMETRIC_TYPE);
            if kind != "CLOSED_PLANAR" {
                warnings.push(format!(
                    "ROI {name:?}: a {kind} contour has no inside; skipped"
                ));
                continue;
            }
            let data = c
                .get(tags::CONTOUR_DATA)
                .and_then(|e| e.to_multi_float64().ok())
                .ok_or_else(|| {
                    Error::file(
                        path,
                        format!("ROI {name:?}: ContourData is missing or not numeric"),
                    )
                })?;
            if data.len() < 9 || data.len() % 3 != 0 || data.iter().any(|v| !v.is_finite()) {
                return Err(Error::file(
                    path,
                    format!(
                        "ROI {name:?}: ContourData holds {} values, not 3 per point for 3+ points",
                        data.len()
                    ),
                ));
            }
            let pts: Vec<[f64; 3]> = data
                .chunks_exact(3)
                .map(|p| reference.world_to_index([p[0], p[1], p[2]]))
                .collect();
            let k_mean = pts.iter().map(|p| p[2]).sum::<f64>() / pts.len() as f64;
            let k = k_mean.round();
            let off = pts.iter().map(|p| (p[2] - k).abs()).fold(0.0, f64::max);
            if off > SLICE_TOLERANCE {
                return Err(Error::file(
                    path,
                    format!(
                        "ROI {name:?}: a contour lies {:.2} mm off the nearest image slice (tolerance {:.2} mm): \
                         not drawn on this series' slices",
                        off * slice_spacing,
                        SLICE_TOLERANCE * slice_spacing
                    ),
                ));
            }
            if k < 0.0 || k >= nz as f64 {
                warnings.push(format!(
                    "ROI {name:?}: a contour at slice index {k} is outside the volume; skipped"
                ));
                continue;
            }
            per_slice
                .entry(k as usize)
                .or_default()
                .push(pts.iter().map(|p| [p[0], p[1]]).collect());
            count += 1;
        }
        let mut mask = vec![false; nx * ny * nz];
        for (k, polys) in &per_slice {
            let plane = &mut mask[k * nx * ny..(k + 1) * nx * ny];
            match combine {
                Combine::EvenOdd => rasterise_even_odd(polys, nx, ny, plane),
                Combine::Union => {
                    let mut one = vec![false; nx * ny];
                    for p in polys {
                        one.fill(false);
                        rasterise_even_odd(std::slice::from_ref(p), nx, ny, &mut one);
                        for (m, &o) in plane.iter_mut().zip(&one) {
                            *m |= o;
                        }
                    }
                }
            }
        }
        let voxels = mask.iter().filter(|&&b| b).count();
        rois.push(RoiInfo {
            number,
            name,
            interpreted_type: types.get(&number).cloned().unwrap_or_default(),
            description,
            contours: count,
            voxels,
        });
        masks.push(Volume::from_vec(reference.clone(), mask)?);
    }
    if rois.is_empty() {
        warnings.push("the structure set has no ROI contours".into());
    }
    Ok(RtStructMasks {
        referenced_images,
        rois,
        masks,
        warnings,
    })
}
