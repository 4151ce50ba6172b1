//! DICOM Segmentation (SEG, PS3.3 A.51) writing: binary, one segment per
//! ROI, for PACS and viewers that prefer SEG to RTSTRUCT.
//!
//! One frame per (segment, slice) where the segment has voxels, each frame
//! pointing at its source image and carrying its plane position; dimension
//! index (Referenced Segment Number, Image Position Patient). Pixels are
//! 1 bit, packed least significant bit first across frame boundaries
//! (PS3.5 8.1.1), Explicit VR Little Endian.

use std::collections::HashMap;
use std::path::Path;

use delineate_imaging::{Geometry, Volume};
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, InMemDicomObject};

use crate::build::{
    ds_values, image_ref, item, new_uid, now_da_tm, patient_study_elements, seq, text, us,
    with_meta, write_atomically, EXPLICIT_VR_LE,
};
use crate::read::SeriesMeta;
use crate::rtstruct_write::{check_reference, RoiSpec, MAX_ROIS};
use crate::Error;

/// Segmentation Storage SOP Class.
pub const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item([
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn at(tag: Tag, value: Tag) -> InMemElement {
    InMemElement::new(tag, VR::AT, PrimitiveValue::Tags(vec![value].into()))
}

/// Builds the SEG object; `labels` must lie on `reference`'s grid.
pub fn build_seg(
    labels: &Volume<u32>,
    reference: &Geometry,
    meta: &SeriesMeta,
    rois: &[RoiSpec],
    path: &Path,
) -> Result<FileDicomObject<InMemDicomObject>, Error> {
    check_reference(labels, reference, meta, path)?;
    if rois.is_empty() || rois.len() > MAX_ROIS {
        return Err(Error::file(
            path,
            format!(
                "{} segments: between 1 and {MAX_ROIS} are written",
                rois.len()
            ),
        ));
    }
    let [nx, ny, nz] = reference.size;
    let plane = nx * ny;
    let data = labels.as_slice();
    let number_of: HashMap<u32, usize> = rois
        .iter()
        .enumerate()
        .map(|(n, r)| (r.label, n + 1))
        .collect();
    // Frames: per segment, per slice with voxels, in segment order.
    let mut frames: Vec<(usize, usize)> = Vec::new(); // (segment number, k)
    for (n, roi) in rois.iter().enumerate() {
        for k in 0..nz {
            if data[k * plane..(k + 1) * plane].contains(&roi.label) {
                frames.push((n + 1, k));
            }
        }
    }
    if frames.is_empty() {
        return Err(Error::file(path, "nothing to segment: the mask is empty"));
    }
    let mut bits = vec![0u8; (frames.len() * plane).div_ceil(8)];
    for (f, &(seg, k)) in frames.iter().enumerate() {
        for (p, &l) in data[k * plane..(k + 1) * plane].iter().enumerate() {
            if l != 0 && number_of.get(&l) == Some(&seg) {
                let b = f * plane + p;
                bits[b / 8] |= 1 << (b % 8);
            }
        }
    }
    if bits.len() % 2 == 1 {
        bits.push(0);
    }
    let (date, time, tz) = now_da_tm();
    let dim_uid = new_uid();
    let d = reference.direction;
    let iop = [d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]];
    let segments: Vec<InMemDicomObject> = rois
        .iter()
        .enumerate()
        .map(|(n, r)| {
            item([
                us(tags::SEGMENT_NUMBER, n as u16 + 1),
                text(tags::SEGMENT_LABEL, VR::LO, r.name.clone()),
                text(tags::SEGMENT_DESCRIPTION, VR::ST, r.description.clone()),
                text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "delineate"),
                seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code(
                        "49755003",
                        "SCT",
                        "Morphologically Abnormal Structure",
                    )],
                ),
                seq(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![code("108369006", "SCT", "Neoplasm")],
                ),
            ])
        })
        .collect();
    let per_frame: Vec<InMemDicomObject> = frames
        .iter()
        .map(|&(seg, k)| {
            let mut source = image_ref(&meta.slices[k]);
            source.put(seq(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            ));
            item([
                seq(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item([
                        seq(
                            tags::DERIVATION_CODE_SEQUENCE,
                            vec![code("113076", "DCM", "Segmentation")],
                        ),
                        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]),
                    ])],
                ),
                seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item([InMemElement::new(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        PrimitiveValue::U32([seg as u32, k as u32 + 1].into()),
                    )])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item([ds_values(
                        tags::IMAGE_POSITION_PATIENT,
                        // The referenced image's own position, not the
                        // regular grid's: the two differ by up to the grid
                        // tolerance, and viewers match frames to images by it.
                        &meta.slices[k].image_position,
                    )])],
                ),
                seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item([us(tags::REFERENCED_SEGMENT_NUMBER, seg as u16)])],
                ),
            ])
        })
        .collect();
    let shared = item([
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item([
                ds_values(tags::SLICE_THICKNESS, &[reference.spacing[2]]),
                ds_values(tags::SPACING_BETWEEN_SLICES, &[reference.spacing[2]]),
                ds_values(
                    tags::PIXEL_SPACING,
                    &[reference.spacing[1], reference.spacing[0]],
                ),
            ])],
        ),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item([ds_values(tags::IMAGE_ORIENTATION_PATIENT, &iop)])],
        ),
    ]);
    let dimension = |pointer: Tag, group: Tag, label: &str| {
        item([
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_uid.clone()),
            at(tags::DIMENSION_INDEX_POINTER, pointer),
            at(tags::FUNCTIONAL_GROUP_POINTER, group),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    let referenced: Vec<InMemDicomObject> = meta.slices.iter().map(image_ref).collect();
    let mut obj = item([
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        InMemElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED", "PRIMARY"].map(String::from).to_vec().into()),
        ),
        text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, tz.clone()),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone()),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone()),
        text(tags::SOP_CLASS_UID, VR::UI, SEG_SOP_CLASS),
        text(tags::SOP_INSTANCE_UID, VR::UI, new_uid()),
        text(tags::SERIES_DATE, VR::DA, date.clone()),
        text(tags::CONTENT_DATE, VR::DA, date.clone()),
        text(tags::SERIES_TIME, VR::TM, time.clone()),
        text(tags::CONTENT_TIME, VR::TM, time),
        text(tags::MODALITY, VR::CS, "SEG"),
        text(tags::MANUFACTURER, VR::LO, "delineate"),
        text(tags::SERIES_DESCRIPTION, VR::LO, "delineate segmentation"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "delineate"),
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item([
                text(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    meta.series_instance_uid.clone(),
                ),
                seq(tags::REFERENCED_INSTANCE_SEQUENCE, referenced),
            ])],
        ),
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        text(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        text(tags::SERIES_INSTANCE_UID, VR::UI, new_uid()),
        text(tags::SERIES_NUMBER, VR::IS, "902"),
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            meta.frame_of_reference_uid.clone(),
        ),
        text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item([text(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                dim_uid.clone(),
            )])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dimension(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Segment",
                ),
                dimension(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Position",
                ),
            ],
        ),
        us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        text(tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string()),
        us(tags::ROWS, ny as u16),
        us(tags::COLUMNS, nx as u16),
        us(tags::BITS_ALLOCATED, 1),
        us(tags::BITS_STORED, 1),
        us(tags::HIGH_BIT, 0),
        us(tags::PIXEL_REPRESENTATION, 0),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        text(tags::CONTENT_LABEL, VR::CS, "DELINEATE"),
        text(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            "automatic tumour segmentation",
        ),
        text(tags::CONTENT_CREATOR_NAME, VR::PN, ""),
        seq(tags::SEGMENT_SEQUENCE, segments),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
        InMemElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bits.into())),
    ]);
    for e in patient_study_elements(&meta.patient, &meta.study) {
        obj.put(e);
    }
    with_meta(obj, EXPLICIT_VR_LE, path)
}

/// Builds and writes the SEG atomically to `path`.
pub fn write_seg(
    path: &Path,
    labels: &Volume<u32>,
    reference: &Geometry,
    meta: &SeriesMeta,
    rois: &[RoiSpec],
) -> Result<(), Error> {
    let file = build_seg(labels, reference, meta, rois, path)?;
    write_atomically(&file, path)
}
