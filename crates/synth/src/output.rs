//! Writing a dataset: one folder per case, then `manifest.json`.
//!
//! A case folder appears whole: it is written under a hidden temporary name
//! beside its final place, then renamed.

use std::path::{Path, PathBuf};

use delineate_dicom::{
    write_mr_series, write_rtstruct, Patient, RoiSpec, RtStructOptions, SeriesWriteOptions, Study,
};
use delineate_imaging::{atomic::write_atomically, write_nifti, NiftiWriteOptions};
use serde::Serialize;

use crate::case::SynthCase;
use crate::params::SynthParams;
use crate::Error;

/// The dataset's self-description.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub generator: &'static str,
    pub version: &'static str,
    pub seed: u64,
    pub template: String,
    pub procedural_template: bool,
    pub cases: Vec<String>,
    pub params: SynthParams,
    /// Per-case files, relative to the case folder.
    pub files: Vec<&'static str>,
}

pub const IMAGE: &str = "image.nii.gz";
pub const TRUTH: &str = "truth.nii.gz";
pub const BRAIN: &str = "brain.nii.gz";
/// Where the enhancing look-alikes are (1 vessel, 2 sinus/plexus/dura).
pub const LOOKALIKES: &str = "lookalikes.nii.gz";
/// The intracranial cavity (brain, CSF, dura, sinuses, lesions): the
/// target of the intracranial-mask network.
pub const INTRACRANIAL: &str = "intracranial.nii.gz";
pub const LESIONS: &str = "lesions.json";

/// Writes `case` into `out/<name>/` (which must not exist yet).
pub fn write_case(out: &Path, case: &SynthCase, dicom: bool) -> Result<PathBuf, Error> {
    let name = &case.record.name;
    let final_dir = out.join(name);
    if final_dir.exists() {
        return Err(Error::Input(format!(
            "{}: already exists",
            final_dir.display()
        )));
    }
    let tmp = out.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let opts = NiftiWriteOptions {
        description: format!("delineate synth {name}"),
        ..Default::default()
    };
    write_nifti(&tmp.join(IMAGE), &case.image, &opts)?;
    write_nifti(&tmp.join(TRUTH), &case.truth, &opts)?;
    write_nifti(&tmp.join(BRAIN), &case.brain, &opts)?;
    write_nifti(&tmp.join(LOOKALIKES), &case.lookalikes, &opts)?;
    write_nifti(&tmp.join(INTRACRANIAL), &case.intracranial, &opts)?;
    write_json(&tmp.join(LESIONS), &case.record)?;
    if dicom {
        let series_opts = SeriesWriteOptions {
            patient: Patient {
                name: format!("SYNTH^{name}"),
                id: name.clone(),
                ..Default::default()
            },
            study: Study {
                id: "1".into(),
                description: "delineate synthetic case".into(),
                ..Default::default()
            },
            series_description: "T1 post-contrast (synthetic)".into(),
            series_number: 1,
            // What the synthetic image stands for: a contrast-enhanced 3D
            // T1 gradient echo (MPRAGE-like), so that DICOM routing treats
            // it as a real post-contrast series would be treated.
            acquisition: Some(delineate_dicom::Acquisition {
                contrast_agent: Some("gadobutrol (synthetic)".into()),
                scanning_sequence: vec!["GR".into(), "IR".into()],
                sequence_variant: vec!["SK".into(), "SP".into(), "MP".into()],
                repetition_time_ms: Some(2300.0),
                echo_time_ms: Some(2.3),
                inversion_time_ms: Some(900.0),
                flip_angle_deg: Some(8.0),
                ..Default::default()
            }),
            frame_of_reference_uid: String::new(),
        };
        let image = case.image.map(|&v| v as f32);
        let series_dir = tmp.join("dicom");
        let meta = write_mr_series(&image, &series_dir, &series_opts)?;
        let labels = case.truth.map(|&v| v as u32);
        let rois: Vec<RoiSpec> = case
            .record
            .lesions
            .iter()
            .map(|l| RoiSpec {
                label: l.id,
                name: format!("{}_{}", l.kind.short(), l.id),
                color: delineate_dicom::rtstruct_write::PALETTE[(l.id as usize - 1) % 8],
                interpreted_type: "GTV".into(),
                description: format!(
                    "{} {:?}, {:.1} mm equivalent diameter (ground truth)",
                    l.kind.short(),
                    l.region,
                    l.equivalent_diameter_mm
                ),
            })
            .collect();
        if !rois.is_empty() {
            let rt_opts = RtStructOptions {
                label: "ground truth".into(),
                series_description: "synthetic ground truth".into(),
                generation_algorithm: "MANUAL".into(),
                ..Default::default()
            };
            write_rtstruct(
                &tmp.join("rtstruct.dcm"),
                &labels,
                image.geometry(),
                &meta,
                &rois,
                &rt_opts,
            )?;
        }
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    Ok(final_dir)
}

/// Writes a case into an nnU-Net raw dataset: `imagesTr/NAME_0000.nii.gz`
/// (the image) and `labelsTr/NAME.nii.gz` (1 = lesion; nnU-Net labels are
/// classes, so instances become one class). `dataset.json` is the caller's
/// (it needs the case count).
pub fn write_case_nnunet(out: &Path, case: &SynthCase) -> Result<(), Error> {
    let name = &case.record.name;
    let opts = NiftiWriteOptions {
        description: format!("delineate synth {name}"),
        ..Default::default()
    };
    for d in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(out.join(d)).map_err(|e| Error::io(&out.join(d), e))?;
    }
    write_nifti(
        &out.join(format!("imagesTr/{name}_0000.nii.gz")),
        &case.image,
        &opts,
    )?;
    let labels = case.truth.map(|&v| u8::from(v > 0));
    write_nifti(&out.join(format!("labelsTr/{name}.nii.gz")), &labels, &opts)?;
    Ok(())
}

/// Pretty JSON with a trailing newline, written atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    text.push('\n');
    write_atomically(path, ".json", |p, _| {
        std::fs::write(p, text.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(())
}
