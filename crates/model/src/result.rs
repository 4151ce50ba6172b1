//! A segmentation result on disk: the one function that writes it
//! ([`write_result`]), called by `delineate segment` (and so by the
//! service's workers) and the demo. A result folder is one result: it is
//! written beside its destination and moved in whole, so that it never
//! mixes files of two runs (an old `rtstruct.dcm`, review decisions made on
//! other lesions), and a folder that holds something else is replaced
//! only when asked.

use std::path::{Path, PathBuf};

use delineate_dicom::manifest::{Grid, StageTiming, AI_DRAFT, MANIFEST_FILE};
use delineate_dicom::{
    write_mr_series, FixedUids, LesionSummary, ModelId, Provenance, ResultManifest, SeriesMeta,
    SeriesWriteOptions,
};
use delineate_imaging::{write_nifti, AnyVolume, NiftiWriteOptions, Volume};

use crate::segment::{Lesion, Segmentation};
use crate::Error;

/// What the result records about how it was made.
pub struct ResultInfo<'a> {
    /// The case's name (messages, descriptions).
    pub name: &'a str,
    pub input_path: &'a Path,
    pub model: &'a ModelId,
    pub engine: &'a str,
    pub model_info: &'a crate::modelfile::ModelInfo,
    pub tta: bool,
}

/// Output choices.
#[derive(Clone, Debug)]
pub struct ResultOptions {
    /// Also write a DICOM SEG beside the RTSTRUCT.
    pub seg: bool,
    /// A NIfTI input is written as a DICOM series (`dicom/`) for the RTSTRUCT.
    pub dicom_out: bool,
    /// UID root and revision of the structure set.
    pub uid_root: String,
    pub revision: u32,
    /// Replace a folder that is not empty.
    pub force: bool,
}

/// What was written.
pub struct Written {
    pub rtstruct: Option<PathBuf>,
    /// Identifies this result; review decisions name it.
    pub result_id: String,
}

/// The identity of a model file: its name and the first 12 hex digits of
/// the SHA-256 of its bytes.
pub fn model_id(name: &str, bytes: &[u8], research_only: bool) -> ModelId {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(bytes);
    ModelId {
        name: name.to_string(),
        version: h.iter().take(6).map(|b| format!("{b:02x}")).collect(),
        research_only,
    }
}

/// The lesion as the structure set describes it.
pub fn summary(l: &Lesion) -> LesionSummary {
    LesionSummary {
        id: l.id,
        confidence: f64::from(l.confidence),
        mean_probability: f64::from(l.mean_probability),
        volume_mm3: l.volume_mm3,
        equivalent_diameter_mm: l.equivalent_diameter_mm,
    }
}

/// Refuses an output folder that holds something unless `force`: a result
/// is never written over, or mixed with, another.
pub fn check_out(out: &Path, force: bool) -> Result<(), Error> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Input(format!(
            "{}: exists and is not a folder",
            out.display()
        )));
    }
    let busy = std::fs::read_dir(out)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if busy && !force {
        return Err(Error::Input(format!(
            "{}: is not empty (an earlier result?); give --force to replace it as a whole, or another --out",
            out.display()
        )));
    }
    Ok(())
}

/// Writes the result of one case into `out` (all files or none):
/// probability.nii.gz, mask.nii.gz, lesions.json (with what the
/// intracranial stage did), intracranial.nii.gz when that stage ran, and
/// for DICOM input (or
/// `dicom_out`) rtstruct.dcm, an unreviewed AI draft with its provenance
/// in the labels a planning system shows, and seg.dcm when asked.
pub fn write_result(
    out: &Path,
    image: &Volume<f32>,
    meta: Option<SeriesMeta>,
    seg: &Segmentation,
    info: &ResultInfo,
    opts: &ResultOptions,
) -> Result<Written, Error> {
    check_out(out, opts.force)?;
    delineate_dicom::check_uid_root(&opts.uid_root).map_err(Error::Input)?;
    let staging = Staging::new(out)?;
    let dir = staging.dir();
    let nopts = NiftiWriteOptions::default();
    write_nifti(&dir.join("probability.nii.gz"), &seg.probability, &nopts)?;
    if let Some(ic) = &seg.intracranial {
        write_nifti(&dir.join("intracranial.nii.gz"), &ic.mask, &nopts)?;
    }
    let lesions = &seg.delivered;
    if lesions.list.len() <= u16::MAX as usize {
        let labels = AnyVolume::Uint16(lesions.labels.map(|&l| l as u16));
        delineate_imaging::write_nifti_any(&dir.join("mask.nii.gz"), &labels, &nopts)?;
    } else {
        write_nifti(&dir.join("mask.nii.gz"), &lesions.labels, &nopts)?;
    }
    let meta = match meta {
        Some(m) => Some(m),
        None if opts.dicom_out => {
            let o = SeriesWriteOptions {
                series_description: format!("{} (written by delineate)", info.name),
                ..Default::default()
            };
            Some(write_mr_series(image, &dir.join("dicom"), &o)?)
        }
        None => None,
    };
    let provenance = Provenance::AiDraft {
        model: info.model.clone(),
        warnings: seg.warnings.clone(),
    };
    let mut rtstruct = None;
    if let Some(meta) = &meta {
        if lesions.list.is_empty() {
            tracing::info!(
                "no lesion found: no RTSTRUCT (planning systems refuse empty structure sets)"
            );
        } else {
            let summaries: Vec<LesionSummary> = lesions.list.iter().map(summary).collect();
            let rois = provenance.lesion_rois(&summaries);
            let uids = FixedUids::result(&opts.uid_root, opts.revision);
            let g = image.geometry();
            delineate_dicom::write_rtstruct(
                &dir.join("rtstruct.dcm"),
                &lesions.labels,
                g,
                meta,
                &rois,
                &provenance.options(Some(uids)),
            )?;
            if opts.seg {
                delineate_dicom::write_seg(&dir.join("seg.dcm"), &lesions.labels, g, meta, &rois)?;
            }
            rtstruct = Some(out.join("rtstruct.dcm"));
        }
    }
    let result_id = delineate_dicom::build::new_uid();
    let to_value = |what: &str, v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| Error::Input(format!("{}: cannot record the {what}: {e}", info.name)))
    };
    let manifest = ResultManifest {
        result_id: result_id.clone(),
        provenance: AI_DRAFT.into(),
        input: info.name.to_string(),
        input_path: std::path::absolute(info.input_path)
            .unwrap_or_else(|_| info.input_path.to_path_buf()),
        model: info.model.name.clone(),
        model_sha256: info.model.version.clone(),
        research_use_only: info.model.research_only,
        engine: info.engine.to_string(),
        model_network: to_value("network", serde_json::to_value(&info.model_info.network))?,
        threshold: seg.threshold,
        contract: to_value("contract", serde_json::to_value(&info.model_info.contract))?,
        tta: info.tta,
        windows: seg.windows,
        grid: Grid {
            size: image.geometry().size,
            spacing_mm: image.geometry().spacing,
        },
        uid_root: opts.uid_root.clone(),
        revision: opts.revision,
        lesions: lesions.list.clone(),
        timings: seg
            .timings
            .iter()
            .map(|(s, t)| StageTiming {
                stage: s.to_string(),
                seconds: *t,
            })
            .collect(),
        warnings: seg.warnings.clone(),
        intracranial: seg.intracranial.as_ref().map(|i| i.report.clone()),
    };
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, manifest.to_json()).map_err(delineate_imaging::IoFailure::on(
        "write the lesion list",
        &path,
    ))?;
    staging.commit()?;
    Ok(Written {
        rtstruct,
        result_id,
    })
}

/// Outputs are written into a hidden folder beside OUT and take its place
/// only when all are complete; on error the folder is removed.
pub struct Staging {
    tmp: tempfile::TempDir,
    out: PathBuf,
}

impl Staging {
    pub fn new(out: &Path) -> Result<Self, Error> {
        let parent = delineate_imaging::atomic::parent_dir(out);
        std::fs::create_dir_all(&parent).map_err(|e| {
            Error::Input(format!(
                "{}: cannot create the output folder: {e}",
                parent.display()
            ))
        })?;
        let tmp = tempfile::Builder::new()
            .prefix(".delineate-partial-")
            .tempdir_in(&parent)
            .map_err(|e| {
                Error::Input(format!(
                    "{}: cannot write here ({e}); no output written",
                    parent.display()
                ))
            })?;
        Ok(Self {
            tmp,
            out: out.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Puts the staged folder in OUT's place; an earlier OUT is moved aside
    /// first and removed after, so OUT is at every moment one whole result.
    pub fn commit(self) -> Result<(), Error> {
        let ctx = |e: std::io::Error| {
            Error::Input(format!(
                "{}: cannot move the outputs in place: {e}",
                self.out.display()
            ))
        };
        let tmp = self.tmp.keep();
        delineate_imaging::atomic::ordinary_mode(&tmp, true).map_err(ctx)?;
        let old = if self.out.exists() {
            let aside = tmp.with_extension("old");
            std::fs::rename(&self.out, &aside).map_err(ctx)?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&tmp, &self.out) {
            if let Some(a) = &old {
                let _ = std::fs::rename(a, &self.out);
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ctx(e));
        }
        if let Some(a) = old {
            std::fs::remove_dir_all(&a).map_err(ctx)?;
        }
        Ok(())
    }
}
