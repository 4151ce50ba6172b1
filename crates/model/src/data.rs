//! Training data: a folder of cases, resampled and normalised once, then
//! cut into augmented patches.
//!
//! A case is a folder `CASE/` with `image.nii.gz` and `truth.nii.gz` (as
//! `delineate synth` writes), or `CASE/dicom/` with `CASE/rtstruct.dcm`
//! (all ROIs are lesions).
//!
//! **Preprocessing** is the model's contract ([`crate::contract`]), applied
//! by the same function as at inference: exact reorientation, trilinear
//! resampling of the image to the model grid, lesion-preserving resampling
//! of the truth (no lesion vanishes), z-score over the head. A brain mask
//! in the case folder is not used: clinical scans come without one.
//!
//! **Augmentation** per patch: a flip along each axis with probability ½;
//! for half of the patches a rotation U(±10°) about each axis and a scaling
//! U(0.9, 1.1) around the patch centre; intensity scale U(0.9, 1.1) and
//! shift U(−0.1, 0.1) (in z-score units); and noise with σ U(0, 0.05).
//!
//! Memory layout: volumes are x-fastest; a patch of size [px, py, pz] is
//! handed to burn as a tensor [1, pz, py, px] (the network is symmetric in
//! its axes, and inference uses the same convention).

use std::path::{Path, PathBuf};

use delineate_dicom::{read_rtstruct_with, read_series, ReadOptions, RoiSelection};
use delineate_imaging::resample::trilinear_at;
use delineate_imaging::{read_nifti_f32, Volume};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::contract::Preprocessing;
use crate::sampling::CaseLesions;
use crate::Error;
use delineate_eval::layout::{Layout, LesionLabels};

/// Normalised intensities are clipped to this many standard deviations.
pub const ZSCORE_CLIP: f32 = 5.0;

/// One preprocessed training case.
pub struct Case {
    pub name: String,
    pub image: Volume<f32>,
    pub truth: Volume<u8>,
    pub lesions: CaseLesions,
}

/// Case folders of a dataset, sorted by name.
pub fn case_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(delineate_imaging::IoFailure::on(
        "list the dataset folder",
        dir,
    ))?;
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !p.is_dir() {
            continue;
        }
        let nifti = p.join("image.nii.gz").is_file() && p.join("truth.nii.gz").is_file();
        let dicom = p.join("dicom").is_dir() && p.join("rtstruct.dcm").is_file();
        if nifti || dicom {
            out.push((name, p));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no cases (CASE/image.nii.gz + truth.nii.gz, or CASE/dicom/ + rtstruct.dcm)",
            dir.display()
        )));
    }
    Ok(out)
}

/// Where one case of a training dataset is.
#[derive(Clone, Debug)]
pub enum CaseSource {
    /// A delineate case folder (`image.nii.gz` + `truth.nii.gz`, or
    /// `dicom/` + `rtstruct.dcm`; `lookalikes.nii.gz` when present).
    Folder(PathBuf),
    /// An image and its label map (nnU-Net raw, BraTS), with the label
    /// values that are lesion.
    Files {
        image: PathBuf,
        truth: PathBuf,
        lesions: LesionLabels,
    },
}

/// One case of a training dataset.
#[derive(Clone, Debug)]
pub struct CaseRef {
    pub name: String,
    pub source: CaseSource,
    /// Which ROIs of a case's structure set are lesions (default: GTVs).
    pub rois: RoiSelection,
}

/// The cases of a dataset in `layout` (`None`: detected; delineate's,
/// nnU-Net raw or BraTS, [`delineate_eval::layout`]), sorted by name;
/// `labels` are the lesion label values (`None`: the layout's default),
/// `channel` the nnU-Net channel of the contrast-enhanced T1, `rois` the
/// lesion ROIs of structure sets.
pub fn dataset(
    dir: &Path,
    layout: Option<Layout>,
    labels: Option<Vec<u32>>,
    channel: usize,
    rois: &RoiSelection,
) -> Result<Vec<CaseRef>, Error> {
    let layout = layout.unwrap_or_else(|| delineate_eval::layout::detect(dir));
    if layout == Layout::Delineate {
        return Ok(case_folders(dir)?
            .into_iter()
            .map(|(name, d)| CaseRef {
                name,
                source: CaseSource::Folder(d),
                rois: rois.clone(),
            })
            .collect());
    }
    let lesions = match labels {
        Some(l) => LesionLabels(Some(l)),
        None => LesionLabels::default_for(layout),
    };
    let cases = delineate_eval::layout::list(dir, layout, channel)
        .map_err(|e| Error::Input(e.to_string()))?;
    let missing: Vec<&str> = cases
        .iter()
        .filter(|c| c.truth.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "{}: {} case(s) have no label map: {}",
            dir.display(),
            missing.len(),
            missing.join(", ")
        )));
    }
    Ok(cases
        .into_iter()
        .filter_map(|c| {
            Some(CaseRef {
                name: c.name,
                source: CaseSource::Files {
                    image: c.image,
                    truth: c.truth?,
                    lesions: lesions.clone(),
                },
                rois: rois.clone(),
            })
        })
        .collect())
}

/// The synthetic background kept out of training and validation: the MNI
/// ICBM152 templates are the independent test background (docs/synth.md).
pub const TEST_BACKGROUND: &str = "mni152";

/// The cases of `cases` that `delineate synth` drew on the held-out test
/// background ([`TEST_BACKGROUND`], read from the case's `lesions.json`);
/// training on them would leak the test set into the model. Cases without a
/// `lesions.json` (clinical data, other layouts) are never listed; an
/// unreadable one is an error naming the file.
pub fn on_test_background(cases: &[CaseRef]) -> Result<Vec<String>, Error> {
    #[derive(Deserialize)]
    struct Meta {
        template: Option<String>,
    }
    let mut out = Vec::new();
    for c in cases {
        let CaseSource::Folder(dir) = &c.source else {
            continue;
        };
        let path = dir.join("lesions.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let meta: Meta = serde_json::from_str(&text)
            .map_err(|e| Error::Input(format!("{}: not a lesion table: {e}", path.display())))?;
        if meta.template.as_deref() == Some(TEST_BACKGROUND) {
            out.push(c.name.clone());
        }
    }
    Ok(out)
}

/// Reads a case as acquired, in any layout.
pub fn read_case(c: &CaseRef) -> Result<RawCase, Error> {
    match &c.source {
        CaseSource::Folder(d) => read_raw_case_with(d, &c.rois),
        CaseSource::Files {
            image,
            truth,
            lesions,
        } => {
            let (img, _) = read_nifti_f32(image)?;
            let (t, _) = read_nifti_f32(truth)?;
            if !t.geometry().same_grid(img.geometry(), 1e-3) {
                return Err(Error::Input(format!(
                    "{}: not on the grid of {}",
                    truth.display(),
                    image.display()
                )));
            }
            Ok(RawCase {
                image: img,
                truth: lesions.apply(t.map(|&v| v.max(0.0).round() as u32)),
            })
        }
    }
}

/// A case on its own grid: the image and its instance-labelled truth.
pub struct RawCase {
    pub image: Volume<f32>,
    pub truth: Volume<u32>,
}

/// Reads a case folder as acquired (image and truth on the image grid).
pub fn read_raw_case(dir: &Path) -> Result<RawCase, Error> {
    read_raw_case_with(dir, &RoiSelection::default())
}

/// [`read_raw_case`] taking `rois` of a structure set as the lesions.
pub fn read_raw_case_with(dir: &Path, rois: &RoiSelection) -> Result<RawCase, Error> {
    if dir.join("image.nii.gz").is_file() {
        let (image, _) = read_nifti_f32(&dir.join("image.nii.gz"))?;
        let (t, _) = read_nifti_f32(&dir.join("truth.nii.gz"))?;
        if !t.geometry().same_grid(image.geometry(), 1e-3) {
            return Err(Error::Input(format!(
                "{}: truth.nii.gz is not on the image grid",
                dir.display()
            )));
        }
        return Ok(RawCase {
            image,
            truth: t.map(|&v| v.max(0.0) as u32),
        });
    }
    let series = read_series(&dir.join("dicom"), &ReadOptions::default(), None)?;
    let g = series.volume.geometry().clone();
    let path = dir.join("rtstruct.dcm");
    let rt = read_rtstruct_with(&path, &g, &series.meta.frame_of_reference_uid, rois.combine)?;
    let selected = rt.select(rois, &g, &path)?;
    if let Some(note) = selected.ignored_note() {
        tracing::info!("{}: {note}", path.display());
    }
    Ok(RawCase {
        image: series.volume,
        truth: selected.labels,
    })
}

/// Look-alike voxels kept per class for hard-negative sampling (an even
/// subsample beyond this).
pub const MAX_LOOKALIKE_VOXELS: usize = 50_000;

/// The look-alike voxel lists (vessels; sinuses, plexus, dura) of a mask on
/// the model grid, each evenly subsampled to [`MAX_LOOKALIKE_VOXELS`].
pub fn lookalike_lists(mask: &Volume<u8>) -> [Vec<usize>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for (i, &v) in mask.as_slice().iter().enumerate() {
        if v == 1 || v == 2 {
            out[v as usize - 1].push(i);
        }
    }
    out.map(|l| {
        let step = l.len().div_ceil(MAX_LOOKALIKE_VOXELS).max(1);
        l.into_iter().step_by(step).collect()
    })
}

/// The case's look-alike mask on the model grid, when it has one
/// (`lookalikes.nii.gz`, as `delineate synth` writes).
fn lookalikes_on_model_grid(dir: &Path, pre: &Preprocessing) -> Result<Option<Volume<u8>>, Error> {
    let path = dir.join("lookalikes.nii.gz");
    if !path.is_file() {
        return Ok(None);
    }
    let (m, _) = read_nifti_f32(&path)?;
    let m = pre.prepare_labels(&m.map(|&v| v.max(0.0) as u32))?;
    Ok(Some(m.map(|&v| v.min(255) as u8)))
}

/// Reads one case folder and brings it onto the model grid as the
/// contract says.
pub fn load_case(name: &str, dir: &Path, pre: &Preprocessing) -> Result<Case, Error> {
    let c = CaseRef {
        name: name.to_string(),
        source: CaseSource::Folder(dir.to_path_buf()),
        rois: RoiSelection::default(),
    };
    load_case_ref(&c, pre)
}

/// [`load_case`] for a case of any layout.
pub fn load_case_ref(c: &CaseRef, pre: &Preprocessing) -> Result<Case, Error> {
    let (case, _) = load_case_with_lookalikes(c, pre)?;
    Ok(case)
}

fn load_case_with_lookalikes(
    c: &CaseRef,
    pre: &Preprocessing,
) -> Result<(Case, Option<Volume<u8>>), Error> {
    let name = &c.name;
    let raw = read_case(c)?;
    let image = pre.prepare(&raw.image)?;
    let truth = pre.prepare_labels(&raw.truth)?.map(|&v| u8::from(v > 0));
    let mut lesions = CaseLesions::from_truth(&truth);
    let looks = match &c.source {
        CaseSource::Folder(dir) => lookalikes_on_model_grid(dir, pre)?,
        CaseSource::Files { .. } => None,
    };
    if let Some(m) = &looks {
        if !m.geometry().same_grid(truth.geometry(), 1e-6) {
            return Err(Error::Input(format!(
                "case {name}: lookalikes.nii.gz is not on the image grid"
            )));
        }
        lesions.lookalikes = lookalike_lists(m);
    }
    Ok((
        Case {
            name: name.to_string(),
            image,
            truth,
            lesions,
        },
        looks,
    ))
}

/// Intensity above which a voxel is head rather than air: 10 % of the
/// 99th percentile (of every 7th voxel). Normalisation and the inference
/// crop share this one definition.
pub fn head_threshold(v: &[f32]) -> f32 {
    let mut s: Vec<f32> = v.iter().step_by(7).cloned().collect();
    s.sort_by(f32::total_cmp);
    let p99 = s
        .get((s.len().saturating_sub(1) * 99) / 100)
        .copied()
        .unwrap_or(0.0);
    0.1 * p99
}

/// Augmentation switches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    pub flips: bool,
    /// Half of the patches: rotation about each axis U(±10°) and scaling
    /// U(0.9, 1.1) around the patch centre (trilinear image, nearest truth).
    pub spatial: bool,
    pub intensity: bool,
    pub noise: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            flips: true,
            spatial: true,
            intensity: true,
            noise: true,
        }
    }
}

/// Largest rotation about each axis and scale change of spatial augmentation.
pub const ROTATION_DEG: f64 = 10.0;
pub const SCALE: f64 = 0.1;

/// Rotation (about x, y, z in turn) times isotropic scale.
fn random_transform(rng: &mut ChaCha8Rng) -> [[f64; 3]; 3] {
    let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for axis in 0..3 {
        let a = rng.random_range(-ROTATION_DEG..ROTATION_DEG).to_radians();
        let (sn, cs) = a.sin_cos();
        let (p, q) = ((axis + 1) % 3, (axis + 2) % 3);
        let mut r = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        r[p][p] = cs;
        r[p][q] = -sn;
        r[q][p] = sn;
        r[q][q] = cs;
        let mut out = [[0.0; 3]; 3];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| r[i][k] * m[k][j]).sum();
            }
        }
        m = out;
    }
    let s = rng.random_range(1.0 - SCALE..1.0 + SCALE);
    m.map(|row| row.map(|v| v * s))
}

/// Trilinear image value and nearest truth at a continuous index.
fn sample(case: &Case, p: [f64; 3], fill: f32) -> (f32, u8) {
    let Some(v) = trilinear_at(&case.image, p, 0.0) else {
        return (fill, 0);
    };
    let s = case.truth.geometry().size;
    let n = [0, 1, 2].map(|a| (p[a].round() as usize).min(s[a] - 1));
    (v, case.truth.as_slice()[n[0] + s[0] * (n[1] + s[1] * n[2])])
}

/// Cuts a patch (x-fastest) at `corner`; outside the image it is padded
/// with the image minimum (background) and 0 (no lesion).
pub fn patch(
    case: &Case,
    corner: [usize; 3],
    size: [usize; 3],
    aug: &Augment,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<u8>) {
    let s = case.image.geometry().size;
    let n: usize = size.iter().product();
    let min = case
        .image
        .as_slice()
        .iter()
        .cloned()
        .fold(f32::INFINITY, f32::min);
    let fill = if min.is_finite() { min } else { 0.0 };
    let mut img = vec![fill; n];
    let mut tgt = vec![0u8; n];
    let flip = [0; 3].map(|_| aug.flips && rng.random_bool(0.5));
    let transform = (aug.spatial && rng.random_bool(0.5)).then(|| random_transform(rng));
    let centre = [0, 1, 2].map(|a| corner[a] as f64 + (size[a] as f64 - 1.0) / 2.0);
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                let d = [
                    if flip[0] { size[0] - 1 - i } else { i },
                    if flip[1] { size[1] - 1 - j } else { j },
                    if flip[2] { size[2] - 1 - k } else { k },
                ];
                let dst = d[0] + size[0] * (d[1] + size[1] * d[2]);
                if let Some(m) = &transform {
                    let o = [i, j, k].map(|v| v as f64);
                    let o = [0, 1, 2].map(|a| o[a] - (size[a] as f64 - 1.0) / 2.0);
                    let p = [0, 1, 2]
                        .map(|r| centre[r] + m[r][0] * o[0] + m[r][1] * o[1] + m[r][2] * o[2]);
                    (img[dst], tgt[dst]) = sample(case, p, fill);
                    continue;
                }
                let src = [corner[0] + i, corner[1] + j, corner[2] + k];
                if src.iter().zip(s).any(|(&c, n)| c >= n) {
                    continue;
                }
                let lin = src[0] + s[0] * (src[1] + s[1] * src[2]);
                img[dst] = case.image.as_slice()[lin];
                tgt[dst] = case.truth.as_slice()[lin];
            }
        }
    }
    if aug.intensity {
        let scale: f32 = rng.random_range(0.9..1.1);
        let shift: f32 = rng.random_range(-0.1..0.1);
        for v in &mut img {
            *v = *v * scale + shift;
        }
    }
    if aug.noise {
        let sigma: f32 = rng.random_range(0.0..0.05);
        for v in &mut img {
            // Sum of 4 uniforms: mean 0, variance 1/3; scaled to σ.
            let u: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            *v += sigma * u * 3f32.sqrt();
        }
    }
    (img, tgt)
}

/// Cache key of a case: the target spacing and the size and modification
/// time of every source file (FNV-1a, hex).
fn cache_key(c: &CaseRef, pre: &Preprocessing) -> String {
    let mut text = serde_json::to_string(pre).unwrap_or_default();
    let files: Vec<PathBuf> = match &c.source {
        CaseSource::Folder(dir) => [
            "image.nii.gz",
            "truth.nii.gz",
            "lookalikes.nii.gz",
            "rtstruct.dcm",
            "dicom",
        ]
        .iter()
        .map(|f| dir.join(f))
        .collect(),
        CaseSource::Files {
            image,
            truth,
            lesions,
        } => {
            text.push_str(&format!("{lesions:?}"));
            vec![image.clone(), truth.clone()]
        }
    };
    for f in files {
        if let Ok(m) = std::fs::metadata(&f) {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            text.push_str(&format!("|{name}:{}:{t}", m.len()));
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// [`load_case`] through an on-disk cache of preprocessed arrays in
/// `cache/CASE-KEY/` (uncompressed NIfTI): a changed source file or
/// preprocessing gives a new key. Returns the case and whether it came
/// from the cache.
pub fn load_case_cached(
    name: &str,
    dir: &Path,
    pre: &Preprocessing,
    cache: &Path,
) -> Result<(Case, bool), Error> {
    let c = CaseRef {
        name: name.to_string(),
        source: CaseSource::Folder(dir.to_path_buf()),
        rois: RoiSelection::default(),
    };
    load_case_ref_cached(&c, pre, cache)
}

/// [`load_case_cached`] for a case of any layout.
pub fn load_case_ref_cached(
    c: &CaseRef,
    pre: &Preprocessing,
    cache: &Path,
) -> Result<(Case, bool), Error> {
    use delineate_imaging::{read_nifti, write_nifti, NiftiWriteOptions};
    let name = c.name.as_str();
    let slot = cache.join(format!("{name}-{}", cache_key(c, pre)));
    let (img_path, tgt_path) = (slot.join("image.nii"), slot.join("truth.nii"));
    let look_path = slot.join("lookalikes.nii");
    let has_looks = match &c.source {
        CaseSource::Folder(dir) => dir.join("lookalikes.nii.gz").is_file(),
        CaseSource::Files { .. } => false,
    };
    if img_path.is_file() && tgt_path.is_file() && (!has_looks || look_path.is_file()) {
        if let (Ok((image, _)), Ok((truth, _))) =
            (read_nifti::<f32>(&img_path), read_nifti::<u8>(&tgt_path))
        {
            let looks = if has_looks {
                read_nifti::<u8>(&look_path).ok().map(|(m, _)| m)
            } else {
                None
            };
            let grids_agree = image.geometry().same_grid(truth.geometry(), 1e-6)
                && looks
                    .as_ref()
                    .is_none_or(|m| m.geometry().same_grid(truth.geometry(), 1e-6));
            if grids_agree && has_looks == looks.is_some() {
                let mut lesions = CaseLesions::from_truth(&truth);
                if let Some(m) = &looks {
                    lesions.lookalikes = lookalike_lists(m);
                }
                return Ok((
                    Case {
                        name: name.to_string(),
                        image,
                        truth,
                        lesions,
                    },
                    true,
                ));
            }
        }
    }
    let (case, looks) = load_case_with_lookalikes(c, pre)?;
    if std::fs::create_dir_all(&slot).is_ok() {
        let o = NiftiWriteOptions::default();
        // A cache that cannot be written only costs time next run.
        let written = write_nifti(&img_path, &case.image, &o)
            .and_then(|_| write_nifti(&tgt_path, &case.truth, &o))
            .and_then(|_| match &looks {
                Some(m) => write_nifti(&look_path, m, &o),
                None => Ok(()),
            });
        if let Err(e) = written {
            tracing::warn!("cannot cache {name}: {e}");
        }
    }
    Ok((case, false))
}
