//! Finding and loading the cases of an evaluation: predictions and truth
//! matched by case name, with every problem named.
//!
//! A case named `X` is, in a prediction folder, `X.nii[.gz]` or a folder
//! `X/` holding `probability.nii.gz` (as `delineate segment` writes),
//! `prob.nii.gz` or `mask.nii.gz`; in a truth folder, `X.nii[.gz]` or `X/`
//! holding `truth.nii.gz` (as `delineate synth` writes), `mask.nii.gz`,
//! `label.nii.gz`, or `rtstruct.dcm` with its image series in `X/dicom/`.
//! Lesion kinds come from `X/lesions.json` (synth) or `X.json` beside the
//! truth file (`{"lesions": [{"id": label, "kind": "met"}]}`), or from RTSTRUCT
//! ROI names (`met_3` → `met`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use delineate_dicom::{read_rtstruct_with, read_series, ReadOptions, RoiSelection};
use delineate_imaging::{read_nifti_any, AnyVolume, Volume};

use crate::layout::{self, Layout, LesionLabels};
use crate::matching::Prediction;
use crate::Error;

const PRED_NAMES: [&str; 3] = ["probability.nii.gz", "prob.nii.gz", "mask.nii.gz"];
const TRUTH_NAMES: [&str; 3] = ["truth.nii.gz", "mask.nii.gz", "label.nii.gz"];

/// Where a case's truth is.
#[derive(Clone, Debug)]
pub enum TruthSource {
    Nifti {
        path: PathBuf,
        kinds: Option<PathBuf>,
        /// Which label values are lesion (dataset layouts).
        lesions: LesionLabels,
    },
    RtStruct {
        rtstruct: PathBuf,
        reference: PathBuf,
        /// Which ROIs are lesions (default: GTVs).
        rois: RoiSelection,
    },
}

impl TruthSource {
    pub fn path(&self) -> &Path {
        match self {
            TruthSource::Nifti { path, .. } => path,
            TruthSource::RtStruct { rtstruct, .. } => rtstruct,
        }
    }
}

fn nifti_stem(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// Visible entries of a folder as (name, path), sorted.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(delineate_imaging::IoFailure::on("read the folder", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().to_string();
            (!name.starts_with('.')).then_some((name, p))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Prediction files by case name.
pub fn discover_predictions(
    dir: &Path,
    score: crate::Score,
) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut out = BTreeMap::new();
    for (name, p) in entries(dir)? {
        if p.is_file() {
            if let Some(stem) = nifti_stem(&name) {
                out.insert(stem.to_string(), p.clone());
            }
        } else if p.is_dir() {
            // A `delineate segment` output: what it delivered, by default.
            if score == crate::Score::Delivered && is_segment_output(&p) {
                out.insert(name, p);
            } else if let Some(f) = PRED_NAMES.iter().map(|n| p.join(n)).find(|f| f.is_file()) {
                out.insert(name, f);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no predictions found (CASE.nii.gz, or CASE/ with one of {})",
            dir.display(),
            PRED_NAMES.join(", ")
        )));
    }
    Ok(out)
}

/// Truth sources by case name, in `layout` (`None`: detected) with
/// `labels` as lesion (`None`: the layout's default).
pub fn discover_truth_in(
    dir: &Path,
    layout: Option<Layout>,
    labels: Option<Vec<u32>>,
    rois: &RoiSelection,
) -> Result<BTreeMap<String, TruthSource>, Error> {
    let layout = layout.unwrap_or_else(|| layout::detect(dir));
    let lesions = match labels {
        Some(l) => LesionLabels(Some(l)),
        None => LesionLabels::default_for(layout),
    };
    if layout == Layout::Delineate {
        let mut out = discover_truth(dir)?;
        for src in out.values_mut() {
            match src {
                TruthSource::Nifti { lesions: l, .. } => *l = lesions.clone(),
                TruthSource::RtStruct { rois: r, .. } => *r = rois.clone(),
            }
        }
        return Ok(out);
    }
    let mut out = BTreeMap::new();
    for c in layout::list(dir, layout, 0)? {
        if let Some(path) = c.truth {
            out.insert(
                c.name,
                TruthSource::Nifti {
                    path,
                    kinds: None,
                    lesions: lesions.clone(),
                },
            );
        }
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no truth label maps in this {layout:?} dataset",
            dir.display()
        )));
    }
    Ok(out)
}

/// Truth sources by case name (delineate's layout).
pub fn discover_truth(dir: &Path) -> Result<BTreeMap<String, TruthSource>, Error> {
    let mut out = BTreeMap::new();
    for (name, p) in entries(dir)? {
        if p.is_file() {
            if let Some(stem) = nifti_stem(&name) {
                let side = dir.join(format!("{stem}.json"));
                out.insert(
                    stem.to_string(),
                    TruthSource::Nifti {
                        path: p.clone(),
                        kinds: side.is_file().then_some(side),
                        lesions: LesionLabels::default(),
                    },
                );
            }
        } else if p.is_dir() {
            let side = p.join("lesions.json");
            let kinds = side.is_file().then_some(side);
            if let Some(f) = TRUTH_NAMES.iter().map(|n| p.join(n)).find(|f| f.is_file()) {
                out.insert(
                    name,
                    TruthSource::Nifti {
                        path: f,
                        kinds,
                        lesions: LesionLabels::default(),
                    },
                );
            } else if p.join("rtstruct.dcm").is_file() {
                let reference = if p.join("dicom").is_dir() {
                    p.join("dicom")
                } else {
                    p.clone()
                };
                out.insert(
                    name,
                    TruthSource::RtStruct {
                        rtstruct: p.join("rtstruct.dcm"),
                        reference,
                        rois: RoiSelection::default(),
                    },
                );
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no truth found (CASE.nii.gz, or CASE/ with {} or rtstruct.dcm + dicom/)",
            dir.display(),
            TRUTH_NAMES.join(", ")
        )));
    }
    Ok(out)
}

/// A folder written by `delineate segment`: its delivered lesion mask and
/// their list.
fn is_segment_output(p: &Path) -> bool {
    p.join("mask.nii.gz").is_file() && p.join("lesions.json").is_file()
}

/// The delivered lesions of a `delineate segment` output folder: the mask
/// (label n = lesion n) with each lesion's confidence from lesions.json.
fn load_segment_output(dir: &Path) -> Result<Prediction, Error> {
    let (vol, _) = read_nifti_any(&dir.join("mask.nii.gz"))?;
    let labels = vol.to_labels().map_err(|bad| {
        Error::Input(format!(
            "{}: a lesion mask must hold non-negative integers; found {bad}",
            dir.join("mask.nii.gz").display()
        ))
    })?;
    // The ranking score (the classifier's when the model has one; older
    // results rank by the network's maximum probability).
    let manifest = delineate_dicom::ResultManifest::read(dir)?;
    let n = manifest.lesions.iter().map(|l| l.id).max().unwrap_or(0) as usize;
    let mut confidence = vec![0.0; n];
    for l in &manifest.lesions {
        confidence[l.id as usize - 1] = f64::from(l.confidence);
    }
    if let Some(&bad) = labels.as_slice().iter().find(|&&l| l as usize > n) {
        return Err(Error::Input(format!(
            "{}: label {bad} is not in lesions.json",
            dir.join("mask.nii.gz").display()
        )));
    }
    Ok(Prediction::Lesions { labels, confidence })
}

/// Reads a prediction: probabilities (float, all in [0, 1]) or labels
/// (non-negative integers, in any type), or a `delineate segment` output
/// folder (its delivered lesions and their confidences).
pub fn load_prediction(path: &Path) -> Result<Prediction, Error> {
    if path.is_dir() {
        return load_segment_output(path);
    }
    let (vol, _) = read_nifti_any(path)?;
    let p = match vol {
        AnyVolume::Float32(v) => v,
        AnyVolume::Float64(_) => vol.into_f32(),
        other => {
            return other.to_labels().map(Prediction::Labels).map_err(|bad| {
                Error::Input(format!(
                    "{}: a label mask must hold non-negative integers; found {bad}",
                    path.display()
                ))
            })
        }
    };
    let v = p.as_slice();
    // Fast common case: everything in [0, 1] (this also rejects NaN).
    let bad = v.iter().filter(|&&x| !(0.0..=1.0).contains(&x)).count();
    if bad == 0 {
        if v.iter().all(|&x| x == 0.0 || x == 1.0) {
            return Ok(Prediction::Labels(p.map(|&x| x as u32)));
        }
        return Ok(Prediction::Probability(p));
    }
    let nan = v.iter().filter(|x| x.is_nan()).count();
    if nan > 0 {
        return Err(Error::Input(format!(
            "{}: {nan} voxels are NaN",
            path.display()
        )));
    }
    // A float file may hold an instance label mask.
    if v.iter()
        .all(|&x| (0.0..=16_777_216.0).contains(&x) && x == (x as u32) as f32)
    {
        return Ok(Prediction::Labels(p.map(|&x| x as u32)));
    }
    let (lo, hi) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    Err(Error::Input(format!(
        "{}: {bad} voxels lie outside [0, 1] (range {lo} to {hi}); give probabilities, or an integer label mask",
        path.display()
    )))
}

/// Reads a truth: instance labels on the truth grid, and kinds by label.
pub fn load_truth(src: &TruthSource) -> Result<(Volume<u32>, HashMap<u32, String>), Error> {
    match src {
        TruthSource::Nifti {
            path,
            kinds,
            lesions,
        } => {
            let (vol, _) = read_nifti_any(path)?;
            let labels = vol.to_labels().map_err(|bad| {
                Error::Input(format!(
                    "{}: the truth must be a mask of non-negative integer labels; found the value {bad}",
                    path.display()
                ))
            })?;
            let kinds = match kinds {
                Some(k) => read_kinds(k)?,
                None => HashMap::new(),
            };
            Ok((lesions.apply(labels), kinds))
        }
        TruthSource::RtStruct {
            rtstruct,
            reference,
            rois,
        } => {
            let series = read_series(reference, &ReadOptions::default(), None)?;
            let g = series.volume.geometry().clone();
            let rt = read_rtstruct_with(
                rtstruct,
                &g,
                &series.meta.frame_of_reference_uid,
                rois.combine,
            )?;
            let selected = rt.select(rois, &g, rtstruct)?;
            if let Some(note) = selected.ignored_note() {
                tracing::info!("{}: {note}", rtstruct.display());
            }
            let labels = selected.labels;
            let kinds = selected
                .chosen
                .iter()
                .enumerate()
                .filter_map(|(n, r)| kind_of_name(&r.name).map(|k| (n as u32 + 1, k)))
                .collect();
            Ok((labels, kinds))
        }
    }
}

/// `met_3`, `men-1`, `schw` → the kind before the separator, when it is one
/// of the known kinds.
fn kind_of_name(name: &str) -> Option<String> {
    let head = name.split(['_', '-', ' ']).next()?.to_ascii_lowercase();
    ["met", "men", "schw"]
        .contains(&head.as_str())
        .then_some(head)
}

fn read_kinds(path: &Path) -> Result<HashMap<u32, String>, Error> {
    let text = std::fs::read_to_string(path).map_err(delineate_imaging::IoFailure::on(
        "read the lesion kinds",
        path,
    ))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not JSON: {e}", path.display())))?;
    let mut out = HashMap::new();
    if let Some(list) = v.get("lesions").and_then(|l| l.as_array()) {
        for l in list {
            if let (Some(id), Some(kind)) = (
                l.get("id").and_then(|i| i.as_u64()),
                l.get("kind").and_then(|k| k.as_str()),
            ) {
                out.insert(id as u32, kind.to_string());
            }
        }
    }
    Ok(out)
}
