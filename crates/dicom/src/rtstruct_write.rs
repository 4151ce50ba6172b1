//! RT Structure Set writing: a label volume on the grid of a reference
//! series becomes one RTSTRUCT (DICOM PS3.3 A.19), contours traced along
//! voxel edges ([`crate::contour`]).
//!
//! Modules: Patient, General Study, RT Series, Frame of Reference, General
//! Equipment, Structure Set, ROI Contour, RT ROI Observations, SOP Common;
//! plus the top-level attributes dciodvfy checks for (FrameOfReferenceUID,
//! PositionReferenceIndicator, ReferringPhysicianName, AccessionNumber,
//! OperatorsName). Written in Implicit VR Little Endian.

use std::collections::HashMap;
use std::path::Path;

use delineate_imaging::{Geometry, Volume};
use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, InMemDicomObject};
use rayon::prelude::*;

use crate::build::{
    ds_values, image_ref, item, new_uid, now_da_tm, patient_study_elements, seq, text, with_meta,
    write_atomically, IMPLICIT_VR_LE,
};
use crate::contour::trace;
use crate::read::SeriesMeta;
use crate::Error;

/// RT Structure Set Storage SOP Class.
pub const RTSTRUCT_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.3";
/// Study Component Management SOP Class, the conventional Referenced SOP
/// Class of the RT Referenced Study Sequence.
const STUDY_SOP_CLASS: &str = "1.2.840.10008.3.1.2.3.1";
/// More ROIs than this in one structure set is almost certainly a wrong
/// input (an intensity image passed as a label map); planning systems
/// become unusable well before.
pub const MAX_ROIS: usize = 1000;
/// A mask and the reference series must agree on voxel positions to this (mm).
pub const GRID_TOLERANCE_MM: f64 = 1e-3;

/// One ROI to write: the voxels whose label equals `label`.
#[derive(Clone, Debug)]
pub struct RoiSpec {
    pub label: u32,
    pub name: String,
    /// Display colour (RGB).
    pub color: [u8; 3],
    /// RT ROI Interpreted Type (GTV, CTV, PTV, ORGAN, ...).
    pub interpreted_type: String,
    /// ROI Description: volume, equivalent diameter, confidence, ...
    pub description: String,
}

impl RoiSpec {
    /// The ROI of proposed lesion `id`, the `n`-th written (its colour):
    /// "Lesion {id}", a GTV, with `description` (confidence, size, ...).
    pub fn lesion(id: u32, n: usize, description: String) -> Self {
        RoiSpec {
            label: id,
            name: format!("Lesion {id}"),
            color: PALETTE[n % PALETTE.len()],
            interpreted_type: "GTV".into(),
            description,
        }
    }
}

/// Series-level choices for the structure set.
#[derive(Clone, Debug)]
pub struct RtStructOptions {
    /// Structure Set Label (SH, at most 16 characters).
    pub label: String,
    /// Structure Set Name (LO); empty: not written.
    pub name: String,
    /// Structure Set Description (ST); empty: not written.
    pub description: String,
    pub series_description: String,
    pub series_number: i32,
    /// ROI Generation Algorithm: AUTOMATIC, SEMIAUTOMATIC or MANUAL.
    pub generation_algorithm: String,
    /// ROI Generation Description (LO), for every ROI; empty: not written.
    pub generation_description: String,
    /// Manufacturer's Model Name: what made the contours.
    pub model_name: String,
    /// Fixed UIDs (the service fixes them per job, so a re-run sends the
    /// same object and a later result supersedes an earlier one in the same
    /// series); default: new random UIDs, instance number 1.
    pub uids: Option<FixedUids>,
}

impl Default for RtStructOptions {
    fn default() -> Self {
        Self {
            label: "delineate".into(),
            name: String::new(),
            description: String::new(),
            series_description: "delineate contours".into(),
            series_number: 901,
            generation_algorithm: "AUTOMATIC".into(),
            generation_description: String::new(),
            model_name: "delineate".into(),
            uids: None,
        }
    }
}

/// The UIDs and instance number of one structure set in a series of
/// revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedUids {
    pub series: String,
    pub instance: String,
    pub instance_number: u32,
}

impl FixedUids {
    /// Revision `revision` (≥ 1) of the AI result under `root`: Series
    /// `root.2`, SOP Instance `root.1.revision`.
    pub fn result(root: &str, revision: u32) -> Self {
        Self {
            series: format!("{root}.2"),
            instance: format!("{root}.1.{revision}"),
            instance_number: revision,
        }
    }

    /// Revision `revision` (≥ 1) of the reviewed export under `root`: its
    /// own series (`root.3`), SOP Instance `root.4.revision`.
    pub fn reviewed(root: &str, revision: u32) -> Self {
        Self {
            series: format!("{root}.3"),
            instance: format!("{root}.4.{revision}"),
            instance_number: revision,
        }
    }
}

/// Checks a UID root given from outside (command line, database): digits
/// and dots, no empty or zero-padded component, room for the suffixes
/// [`FixedUids`] appends (a UID has at most 64 characters, PS3.5 9.1).
pub fn check_uid_root(root: &str) -> Result<(), String> {
    let ok = !root.is_empty()
        && root.len() <= 52
        && root.split('.').all(|c| {
            !c.is_empty()
                && c.chars().all(|d| d.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "UID root {root:?}: digits and dots, no empty or zero-padded component, at most 52 characters"
        ))
    }
}

/// Distinct display colours, cycled over ROIs.
pub const PALETTE: [[u8; 3]; 8] = [
    [255, 0, 0],
    [0, 200, 0],
    [0, 100, 255],
    [255, 200, 0],
    [255, 0, 255],
    [0, 220, 220],
    [255, 120, 0],
    [160, 80, 255],
];

/// Inclusive bounding box of every label value, in one pass.
fn label_boxes(labels: &Volume<u32>) -> HashMap<u32, ([usize; 3], [usize; 3])> {
    let [nx, ny, _] = labels.geometry().size;
    let mut boxes: HashMap<u32, ([usize; 3], [usize; 3])> = HashMap::new();
    for (idx, &l) in labels.as_slice().iter().enumerate() {
        if l == 0 {
            continue;
        }
        let p = [idx % nx, (idx / nx) % ny, idx / (nx * ny)];
        let b = boxes.entry(l).or_insert((p, p));
        for (a, &v) in p.iter().enumerate() {
            b.0[a] = b.0[a].min(v);
            b.1[a] = b.1[a].max(v);
        }
    }
    boxes
}

/// The patient position of in-plane index `ij` on the slice whose
/// ImagePositionPatient is `ipp`: contours lie exactly in the plane of the
/// image they reference (PS3.3 C.8.8.6.2), not on the regular grid built
/// from all slices, which may differ by up to [`GRID_TOLERANCE_MM`].
pub fn on_slice(g: &Geometry, ipp: [f64; 3], ij: [f64; 2]) -> [f64; 3] {
    let m = g.index_to_world_matrix();
    let v = m * nalgebra::Vector3::new(ij[0], ij[1], 0.0);
    [ipp[0] + v.x, ipp[1] + v.y, ipp[2] + v.z]
}

fn roi_items(
    labels: &Volume<u32>,
    meta: &SeriesMeta,
    roi: &RoiSpec,
    number: usize,
    bbox: Option<&([usize; 3], [usize; 3])>,
) -> (InMemDicomObject, usize) {
    let g = labels.geometry();
    let [nx, ny, _] = g.size;
    let data = labels.as_slice();
    let mut contours = Vec::new();
    // Only the label's bounding box is traced (in a window of its own).
    let (lo, hi) = bbox.copied().unwrap_or(([1, 1, 1], [0, 0, 0]));
    let (w, h) = (
        (hi[0] + 1).saturating_sub(lo[0]),
        (hi[1] + 1).saturating_sub(lo[1]),
    );
    for k in lo[2]..=hi[2].max(lo[2]) {
        if bbox.is_none() {
            break;
        }
        let mut mask = vec![false; w * h];
        for j in 0..h {
            let row = &data[lo[0] + nx * (lo[1] + j + ny * k)..][..w];
            for (m, &l) in mask[j * w..(j + 1) * w].iter_mut().zip(row) {
                *m = l == roi.label;
            }
        }
        if !mask.iter().any(|&m| m) {
            continue;
        }
        let slice = &meta.slices[k];
        for poly in trace(&mask, w, h) {
            let mut points = Vec::with_capacity(poly.len() * 3);
            for p in &poly {
                points.extend_from_slice(&on_slice(
                    g,
                    slice.image_position,
                    [p[0] + lo[0] as f64, p[1] + lo[1] as f64],
                ));
            }
            let image_ref = image_ref(slice);
            contours.push(item([
                seq(tags::CONTOUR_IMAGE_SEQUENCE, vec![image_ref]),
                text(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR"),
                text(
                    tags::NUMBER_OF_CONTOUR_POINTS,
                    VR::IS,
                    poly.len().to_string(),
                ),
                text(
                    tags::CONTOUR_NUMBER,
                    VR::IS,
                    (contours.len() + 1).to_string(),
                ),
                ds_values(tags::CONTOUR_DATA, &points),
            ]));
        }
    }
    let n = contours.len();
    let color: Vec<String> = roi.color.iter().map(|c| c.to_string()).collect();
    let mut elements: Vec<InMemElement> = vec![
        InMemElement::new(
            tags::ROI_DISPLAY_COLOR,
            VR::IS,
            PrimitiveValue::Strs(color.into()),
        ),
        text(tags::REFERENCED_ROI_NUMBER, VR::IS, number.to_string()),
    ];
    if !contours.is_empty() {
        elements.push(seq(tags::CONTOUR_SEQUENCE, contours));
    }
    (item(elements), n)
}

/// Checks that `labels` lie on the grid of the reference series and that
/// its slices are its DICOM images (not a resampled volume), so that
/// contours and segments can point at them.
pub fn check_reference(
    labels: &Volume<u32>,
    reference: &Geometry,
    meta: &SeriesMeta,
    path: &Path,
) -> Result<(), Error> {
    if !meta.slices_are_instances || meta.slices.len() != reference.size[2] {
        return Err(Error::file(
            path,
            "the reference volume was resampled (irregular spacing or tilt), so contours cannot point at its DICOM images",
        ));
    }
    if !labels.geometry().same_grid(reference, GRID_TOLERANCE_MM) {
        return Err(Error::file(
            path,
            format!(
                "the mask grid ({:?} voxels, origin {:?}) differs from the reference series grid ({:?} voxels, origin {:?})",
                labels.geometry().size,
                labels.geometry().origin,
                reference.size,
                reference.origin
            ),
        ));
    }
    Ok(())
}

/// Builds the structure set for `rois` of `labels`, which must lie on the
/// grid of the reference series described by `meta` and `reference`.
pub fn build_rtstruct(
    labels: &Volume<u32>,
    reference: &Geometry,
    meta: &SeriesMeta,
    rois: &[RoiSpec],
    opts: &RtStructOptions,
    path: &Path,
) -> Result<FileDicomObject<InMemDicomObject>, Error> {
    check_reference(labels, reference, meta, path)?;
    if rois.is_empty() {
        return Err(Error::file(
            path,
            "nothing to contour: the mask is empty (no ROI has a voxel)",
        ));
    }
    if rois.len() > MAX_ROIS {
        return Err(Error::file(
            path,
            format!(
                "{} ROIs requested; at most {MAX_ROIS} are written (is the mask an image?)",
                rois.len()
            ),
        ));
    }
    let (date, time, tz) = now_da_tm();
    let for_uid = meta.frame_of_reference_uid.clone();
    let mut roi_contours = Vec::new();
    let mut set_rois = Vec::new();
    let mut observations = Vec::new();
    let boxes = label_boxes(labels);
    let traced: Vec<(InMemDicomObject, usize)> = rois
        .par_iter()
        .enumerate()
        .map(|(n, roi)| roi_items(labels, meta, roi, n + 1, boxes.get(&roi.label)))
        .collect();
    for ((n, roi), (contour_item, count)) in rois.iter().enumerate().zip(traced) {
        let number = n + 1;
        if count == 0 {
            return Err(Error::file(
                path,
                format!("ROI {:?} (label {}) has no voxels", roi.name, roi.label),
            ));
        }
        roi_contours.push(contour_item);
        let mut set = vec![
            text(tags::ROI_NUMBER, VR::IS, number.to_string()),
            text(
                tags::REFERENCED_FRAME_OF_REFERENCE_UID,
                VR::UI,
                for_uid.clone(),
            ),
            text(tags::ROI_NAME, VR::LO, roi.name.clone()),
            text(
                tags::ROI_GENERATION_ALGORITHM,
                VR::CS,
                opts.generation_algorithm.clone(),
            ),
        ];
        if !roi.description.is_empty() {
            set.push(text(tags::ROI_DESCRIPTION, VR::ST, roi.description.clone()));
        }
        if !opts.generation_description.is_empty() {
            set.push(text(
                tags::ROI_GENERATION_DESCRIPTION,
                VR::LO,
                opts.generation_description.clone(),
            ));
        }
        set_rois.push(item(set));
        observations.push(item([
            text(tags::OBSERVATION_NUMBER, VR::IS, number.to_string()),
            text(tags::REFERENCED_ROI_NUMBER, VR::IS, number.to_string()),
            text(
                tags::RTROI_INTERPRETED_TYPE,
                VR::CS,
                roi.interpreted_type.clone(),
            ),
            text(tags::ROI_INTERPRETER, VR::PN, ""),
        ]));
    }
    let images: Vec<InMemDicomObject> = meta.slices.iter().map(image_ref).collect();
    let series_ref = item([
        text(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            meta.series_instance_uid.clone(),
        ),
        seq(tags::CONTOUR_IMAGE_SEQUENCE, images),
    ]);
    let study_ref = item([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, STUDY_SOP_CLASS),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            meta.study.instance_uid.clone(),
        ),
        seq(tags::RT_REFERENCED_SERIES_SEQUENCE, vec![series_ref]),
    ]);
    let for_ref = item([
        text(tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid.clone()),
        seq(tags::RT_REFERENCED_STUDY_SEQUENCE, vec![study_ref]),
    ]);
    let uids = opts.uids.clone().unwrap_or_else(|| FixedUids {
        series: new_uid(),
        instance: new_uid(),
        instance_number: 1,
    });
    let mut obj = item([
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, tz.clone()),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone()),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone()),
        text(tags::SOP_CLASS_UID, VR::UI, RTSTRUCT_SOP_CLASS),
        text(tags::SOP_INSTANCE_UID, VR::UI, uids.instance),
        text(tags::MODALITY, VR::CS, "RTSTRUCT"),
        text(tags::MANUFACTURER, VR::LO, "delineate"),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
        text(tags::OPERATORS_NAME, VR::PN, ""),
        text(
            tags::MANUFACTURER_MODEL_NAME,
            VR::LO,
            opts.model_name.clone(),
        ),
        text(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        text(tags::SERIES_INSTANCE_UID, VR::UI, uids.series),
        text(tags::SERIES_NUMBER, VR::IS, opts.series_number.to_string()),
        text(
            tags::INSTANCE_NUMBER,
            VR::IS,
            uids.instance_number.to_string(),
        ),
        text(tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid),
        text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        text(tags::STRUCTURE_SET_LABEL, VR::SH, opts.label.clone()),
        text(tags::STRUCTURE_SET_DATE, VR::DA, date),
        text(tags::STRUCTURE_SET_TIME, VR::TM, time),
        seq(tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, vec![for_ref]),
        seq(tags::STRUCTURE_SET_ROI_SEQUENCE, set_rois),
        seq(tags::ROI_CONTOUR_SEQUENCE, roi_contours),
        seq(tags::RTROI_OBSERVATIONS_SEQUENCE, observations),
    ]);
    for (tag, vr, v) in [
        (tags::STRUCTURE_SET_NAME, VR::LO, &opts.name),
        (tags::STRUCTURE_SET_DESCRIPTION, VR::ST, &opts.description),
    ] {
        if !v.is_empty() {
            obj.put(text(tag, vr, v.clone()));
        }
    }
    for e in patient_study_elements(&meta.patient, &meta.study) {
        obj.put(e);
    }
    with_meta(obj, IMPLICIT_VR_LE, path)
}

/// Builds and writes the structure set atomically to `path`.
pub fn write_rtstruct(
    path: &Path,
    labels: &Volume<u32>,
    reference: &Geometry,
    meta: &SeriesMeta,
    rois: &[RoiSpec],
    opts: &RtStructOptions,
) -> Result<(), Error> {
    let file = build_rtstruct(labels, reference, meta, rois, opts, path)?;
    write_atomically(&file, path)
}
