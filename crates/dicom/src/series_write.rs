//! Writing a volume as a DICOM MR Image Storage series (one file per
//! slice, PS3.3 A.4), so that a NIfTI-only user gets a complete study
//! (images plus RTSTRUCT) for a planning system or PACS.
//!
//! Voxel values are stored as 16-bit integers. Integer-valued volumes that
//! fit int16 (or uint16) are stored exactly. Anything else is mapped
//! linearly onto int16 and the map is recorded in Rescale Slope/Intercept
//! (not part of the MR IOD, which dciodvfy reports as a warning; readers,
//! ours included, apply it).

use std::path::Path;

use delineate_imaging::{Geometry, Volume};
use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use rayon::prelude::*;

use crate::build::{
    ds_values, item, new_uid, now_da_tm, patient_study_elements, text, us, with_meta,
    EXPLICIT_VR_LE,
};
use crate::header::{Patient, Study};
use crate::read::{SeriesMeta, SliceRef};
use crate::Error;

/// MR Image Storage SOP Class.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// Identity of the series to write.
#[derive(Clone, Debug)]
pub struct SeriesWriteOptions {
    pub patient: Patient,
    /// Study attributes; an empty Study Instance UID gets a new one.
    pub study: Study,
    pub series_description: String,
    pub series_number: i32,
    /// Frame of Reference UID; empty gets a new one.
    pub frame_of_reference_uid: String,
    /// The acquisition the series stands for (a simulated scan: image type
    /// ORIGINAL\PRIMARY, contrast agent, sequence and timing). None: a
    /// converted volume (DERIVED\SECONDARY, timing unknown).
    pub acquisition: Option<crate::Acquisition>,
}

impl Default for SeriesWriteOptions {
    fn default() -> Self {
        Self {
            patient: Patient {
                name: "ANONYMOUS".into(),
                id: "DELINEATE".into(),
                ..Default::default()
            },
            study: Study::default(),
            series_description: "delineate".into(),
            series_number: 1,
            frame_of_reference_uid: String::new(),
            acquisition: None,
        }
    }
}

/// How voxel values become stored integers.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Storage {
    signed: bool,
    slope: f64,
    intercept: f64,
}

fn or_value(v: &[String], default: &str) -> Vec<String> {
    if v.is_empty() {
        vec![default.to_string()]
    } else {
        v.to_vec()
    }
}

/// A multi-valued code string element.
fn strs(tag: dicom_core::Tag, values: &[String]) -> InMemElement {
    InMemElement::new(tag, VR::CS, PrimitiveValue::Strs(values.to_vec().into()))
}

/// A DS element, present and empty when the value is unknown (type 2).
fn opt_ds(tag: dicom_core::Tag, v: Option<f64>) -> InMemElement {
    match v {
        Some(x) => ds_values(tag, &[x]),
        None => text(tag, VR::DS, ""),
    }
}

fn choose_storage(vol: &Volume<f32>) -> Storage {
    let v = vol.as_slice();
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x as f64), b.max(x as f64))
        });
    let integral = v.iter().all(|x| x.fract() == 0.0);
    if integral && lo >= i16::MIN as f64 && hi <= i16::MAX as f64 {
        return Storage {
            signed: true,
            slope: 1.0,
            intercept: 0.0,
        };
    }
    if integral && lo >= 0.0 && hi <= u16::MAX as f64 {
        return Storage {
            signed: false,
            slope: 1.0,
            intercept: 0.0,
        };
    }
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    Storage {
        signed: true,
        slope: span / 65000.0,
        intercept: lo + 32500.0 * span / 65000.0,
    }
}

/// Writes `vol` as an MR series into the folder `dir` (created; it must not
/// exist yet or be empty). The files appear together: they are written to
/// a temporary folder beside `dir`, which is then renamed.
pub fn write_mr_series(
    vol: &Volume<f32>,
    dir: &Path,
    opts: &SeriesWriteOptions,
) -> Result<SeriesMeta, Error> {
    let g: &Geometry = vol.geometry();
    if !g.is_orthonormal() {
        return Err(Error::file(dir, "the volume's axes are not orthogonal; DICOM images need an orthogonal grid (resample first)"));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::file(
            dir,
            "the output folder exists and is not empty",
        ));
    }
    let parent = delineate_imaging::atomic::parent_dir(dir);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, "cannot create", e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".delineate-series-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, "cannot create a temporary folder in", e))?;
    let storage = choose_storage(vol);
    let mut study = opts.study.clone();
    if study.instance_uid.is_empty() {
        study.instance_uid = new_uid();
    }
    let (date, time, tz) = now_da_tm();
    if study.date.is_empty() {
        study.date = date.clone();
        study.time = time.clone();
    }
    let series_uid = new_uid();
    let for_uid = if opts.frame_of_reference_uid.is_empty() {
        new_uid()
    } else {
        opts.frame_of_reference_uid.clone()
    };
    let [nx, ny, nz] = g.size;
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(Error::file(
            dir,
            format!("{nx}x{ny} slices are larger than DICOM Rows/Columns allow"),
        ));
    }
    let d = g.direction;
    let iop = [d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]];
    let normal = [d[0][2], d[1][2], d[2][2]];
    let acq = opts.acquisition.clone().unwrap_or_default();
    let (image_type, scanning, variant) = match &opts.acquisition {
        Some(a) => (
            if a.image_type.is_empty() {
                vec!["ORIGINAL".into(), "PRIMARY".into(), "M".into(), "ND".into()]
            } else {
                a.image_type.clone()
            },
            or_value(&a.scanning_sequence, "GR"),
            or_value(&a.sequence_variant, "NONE"),
        ),
        None => (
            vec!["DERIVED".into(), "SECONDARY".into(), "OTHER".into()],
            vec!["RM".into()],
            vec!["NONE".into()],
        ),
    };
    let slices: Vec<SliceRef> = (0..nz)
        .into_par_iter()
        .map(|k| {
            let sop_uid = new_uid();
            let ipp = g.index_to_world([0.0, 0.0, k as f64]);
            let position = ipp.iter().zip(&normal).map(|(a, b)| a * b).sum::<f64>();
            let plane = &vol.as_slice()[k * nx * ny..(k + 1) * nx * ny];
            let mut bytes = Vec::with_capacity(plane.len() * 2);
            for &x in plane {
                let stored = ((x as f64 - storage.intercept) / storage.slope).round();
                if storage.signed {
                    bytes.extend_from_slice(
                        &(stored.clamp(i16::MIN as f64, i16::MAX as f64) as i16).to_le_bytes(),
                    );
                } else {
                    bytes.extend_from_slice(
                        &(stored.clamp(0.0, u16::MAX as f64) as u16).to_le_bytes(),
                    );
                }
            }
            let mut elements: Vec<InMemElement> = patient_study_elements(&opts.patient, &study);
            elements.extend([
                text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
                strs(tags::IMAGE_TYPE, &image_type),
                text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, tz.clone()),
                text(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone()),
                text(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone()),
                text(tags::SOP_CLASS_UID, VR::UI, MR_IMAGE_STORAGE),
                text(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()),
                text(tags::SERIES_DATE, VR::DA, date.clone()),
                text(tags::SERIES_TIME, VR::TM, time.clone()),
                text(tags::MODALITY, VR::CS, "MR"),
                text(tags::MANUFACTURER, VR::LO, "delineate"),
                text(
                    tags::SERIES_DESCRIPTION,
                    VR::LO,
                    opts.series_description.clone(),
                ),
                // Type 2C: unknown for a converted image, so present and empty.
                text(tags::LATERALITY, VR::CS, ""),
                text(tags::PATIENT_POSITION, VR::CS, ""),
                text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "delineate"),
                strs(tags::SCANNING_SEQUENCE, &scanning),
                strs(tags::SEQUENCE_VARIANT, &variant),
                text(tags::SCAN_OPTIONS, VR::CS, ""),
                text(tags::MR_ACQUISITION_TYPE, VR::CS, "3D"),
                ds_values(tags::SLICE_THICKNESS, &[g.spacing[2]]),
                opt_ds(tags::REPETITION_TIME, acq.repetition_time_ms),
                opt_ds(tags::ECHO_TIME, acq.echo_time_ms),
                text(tags::IMAGES_IN_ACQUISITION, VR::IS, nz.to_string()),
                text(tags::ECHO_TRAIN_LENGTH, VR::IS, ""),
                ds_values(tags::SPACING_BETWEEN_SLICES, &[g.spacing[2]]),
                text(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
                text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
                text(tags::SERIES_NUMBER, VR::IS, opts.series_number.to_string()),
                text(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string()),
                ds_values(tags::IMAGE_POSITION_PATIENT, &ipp),
                ds_values(tags::IMAGE_ORIENTATION_PATIENT, &iop),
                text(tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid.clone()),
                text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
                ds_values(tags::SLICE_LOCATION, &[position]),
                us(tags::SAMPLES_PER_PIXEL, 1),
                text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
                us(tags::ROWS, ny as u16),
                us(tags::COLUMNS, nx as u16),
                ds_values(tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]),
                us(tags::BITS_ALLOCATED, 16),
                us(tags::BITS_STORED, 16),
                us(tags::HIGH_BIT, 15),
                us(tags::PIXEL_REPRESENTATION, u16::from(storage.signed)),
                InMemElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U8(bytes.into())),
            ]);
            if let Some(agent) = &acq.contrast_agent {
                elements.push(text(tags::CONTRAST_BOLUS_AGENT, VR::LO, agent.clone()));
            }
            if let Some(ti) = acq.inversion_time_ms {
                elements.push(ds_values(tags::INVERSION_TIME, &[ti]));
            }
            if let Some(fa) = acq.flip_angle_deg {
                elements.push(ds_values(tags::FLIP_ANGLE, &[fa]));
            }
            if storage.slope != 1.0 || storage.intercept != 0.0 {
                elements.push(ds_values(tags::RESCALE_INTERCEPT, &[storage.intercept]));
                elements.push(ds_values(tags::RESCALE_SLOPE, &[storage.slope]));
                elements.push(text(tags::RESCALE_TYPE, VR::LO, "US"));
            }
            let name = tmp.path().join(format!("MR{:05}.dcm", k + 1));
            let file = with_meta(item(elements), EXPLICIT_VR_LE, &name)?;
            file.write_to_file(&name)
                .map_err(|e| Error::file(&name, format!("cannot write DICOM: {e}")))?;
            Ok(SliceRef {
                path: dir.join(format!("MR{:05}.dcm", k + 1)),
                sop_class_uid: MR_IMAGE_STORAGE.into(),
                sop_instance_uid: sop_uid,
                image_position: ipp,
                position_mm: position,
                instance_number: Some(k as i64 + 1),
                frame: None,
            })
        })
        .collect::<Result<_, Error>>()?;
    let kept = tmp.keep();
    delineate_imaging::atomic::ordinary_mode(&kept, true)
        .map_err(|e| Error::io(dir, "cannot set permissions of", e))?;
    if dir.exists() {
        std::fs::remove_dir(dir)
            .map_err(|e| Error::io(dir, "cannot replace the empty folder", e))?;
    }
    std::fs::rename(&kept, dir).map_err(|e| Error::io(dir, "cannot move the series into", e))?;
    Ok(SeriesMeta {
        patient: opts.patient.clone(),
        study,
        series_instance_uid: series_uid,
        series_description: opts.series_description.clone(),
        series_number: Some(i64::from(opts.series_number)),
        modality: "MR".into(),
        manufacturer: "delineate".into(),
        frame_of_reference_uid: for_uid,
        sop_class_uid: MR_IMAGE_STORAGE.into(),
        slices,
        slices_are_instances: true,
        transfer_syntaxes: vec!["Explicit VR Little Endian".into()],
        integer_valued: storage.slope == 1.0 && storage.intercept == 0.0,
        warnings: vec![],
    })
}
