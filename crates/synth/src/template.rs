//! The anatomy a case is built on: a T1 template, its tissue classes, and
//! the places lesions and look-alikes may go.
//!
//! Tissue classes come from intensity and morphology alone (no atlas), so
//! any T1 template works: the brain mask is given (Colin27's `ch2bet`) or
//! derived; inside it a three-class k-means on intensity separates CSF, grey
//! and white matter. Anatomical regions (cerebrum, cerebellum, brainstem,
//! internal auditory canals) are rules in MNI millimetres, applied through
//! [`Frame`], which maps the template's brain bounding box onto Colin27's.

use std::path::{Path, PathBuf};

use delineate_imaging::{
    morphology::{dilate, erode},
    read_nifti_f32, Connectivity, Volume,
};

use crate::lookalikes::template_enhancement;
use crate::sample::{box_blur, V3};
use crate::Error;

/// Colin27 with skull, from Debian's `mricron-data`.
pub const COLIN_T1: &str = "/usr/share/mricron/templates/ch2.nii.gz";
/// Colin27 skull-stripped: its non-zero voxels are the brain mask.
pub const COLIN_BRAIN: &str = "/usr/share/mricron/templates/ch2bet.nii.gz";

/// Colin27's brain bounding box in MNI (RAS) mm, measured from `ch2bet`.
const COLIN_BRAIN_MIN_RAS: V3 = [-72.0, -106.0, -67.0];
const COLIN_BRAIN_MAX_RAS: V3 = [71.0, 73.0, 84.0];

/// Tissue codes in [`Template::tissue`].
pub const AIR: u8 = 0;
pub const CSF: u8 = 1;
pub const GM: u8 = 2;
pub const WM: u8 = 3;
/// Head tissue outside the brain: skull, scalp, dura, muscle.
pub const HEAD: u8 = 4;

/// Where the anatomy comes from.
#[derive(Clone, Debug)]
pub enum TemplateSource {
    /// Colin27 from `mricron-data`, or the phantom when it is not installed.
    Default,
    /// Any T1 NIfTI, with an optional brain mask (non-zero = brain).
    File { t1: PathBuf, brain: Option<PathBuf> },
    /// The procedural head phantom.
    Phantom,
}

/// Anatomical region of a point, by MNI-like coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Cerebrum,
    Cerebellum,
    Brainstem,
}

/// Maps template world points (LPS) to MNI-like RAS mm and back, by
/// matching the brain's bounding box to Colin27's.
#[derive(Clone, Debug)]
pub struct Frame {
    lo_ras: V3,
    hi_ras: V3,
}

impl Frame {
    pub fn to_mni(&self, lps: V3) -> V3 {
        let ras = [-lps[0], -lps[1], lps[2]];
        [0, 1, 2].map(|a| {
            let t = (ras[a] - self.lo_ras[a]) / (self.hi_ras[a] - self.lo_ras[a]);
            COLIN_BRAIN_MIN_RAS[a] + t * (COLIN_BRAIN_MAX_RAS[a] - COLIN_BRAIN_MIN_RAS[a])
        })
    }

    pub fn from_mni(&self, mni: V3) -> V3 {
        let ras = [0, 1, 2].map(|a| {
            let t = (mni[a] - COLIN_BRAIN_MIN_RAS[a])
                / (COLIN_BRAIN_MAX_RAS[a] - COLIN_BRAIN_MIN_RAS[a]);
            self.lo_ras[a] + t * (self.hi_ras[a] - self.lo_ras[a])
        });
        [-ras[0], -ras[1], ras[2]]
    }

    /// Region of a brain point. The brainstem is the midline column in
    /// front of the cerebellum, below the thalami. The cerebellum is below
    /// [`TENTORIUM_Z`], a table fitted to Colin27's AAL cerebellar labels
    /// (91–116, `aal.nii.gz` in mricron-data) by 10 mm cells of y and |x|;
    /// `cerebellar_seeds_agree_with_the_aal_atlas` checks it.
    pub fn region(&self, lps: V3) -> Region {
        let [x, y, z] = self.to_mni(lps);
        if x.abs() < 14.0 && (-44.0..=-10.0).contains(&y) && z < -8.0 {
            return Region::Brainstem;
        }
        let row = ((y + 100.0) / 10.0).floor();
        let col = (x.abs() / 10.0).floor();
        if !(0.0..8.0).contains(&row) || !(0.0..8.0).contains(&col) {
            return Region::Cerebrum;
        }
        if z < TENTORIUM_Z[row as usize][col as usize] {
            Region::Cerebellum
        } else {
            Region::Cerebrum
        }
    }
}

/// Highest z (MNI mm) of the cerebellum per 10 mm cell: rows y = −100..−20,
/// columns |x| = 0..80; −99 where there is none.
#[rustfmt::skip]
const TENTORIUM_Z: [[f64; 8]; 8] = [
    [-24.0, -23.0, -26.0, -99.0, -99.0, -99.0, -99.0, -99.0],
    [-17.0, -15.0, -17.0, -20.0, -22.0, -99.0, -99.0, -99.0],
    [-11.0, -13.0, -15.0, -17.0, -19.0, -21.0, -99.0, -99.0],
    [-3.0, -11.0, -15.0, -17.0, -19.0, -21.0, -99.0, -99.0],
    [3.0, -9.0, -15.0, -19.0, -22.0, -26.0, -99.0, -99.0],
    [5.0, -9.0, -17.0, -22.0, -26.0, -27.0, -99.0, -99.0],
    [-70.0, -44.0, -20.0, -25.0, -27.0, -30.0, -99.0, -99.0],
    [-99.0, -70.0, -37.0, -37.0, -99.0, -99.0, -99.0, -99.0],
];

/// A template ready for case generation. All volumes share one grid.
pub struct Template {
    pub name: String,
    /// True for the procedural phantom.
    pub procedural: bool,
    /// T1 intensity scaled so that mean white matter is 1.
    pub t1: Volume<f32>,
    /// Mean CSF, GM and WM intensity of `t1` (k-means inside the brain; WM
    /// = 1): what domain randomisation remaps.
    pub class_means: [f32; 3],
    /// Tissue code per voxel ([`CSF`], [`GM`], ...).
    pub tissue: Volume<u8>,
    /// Brain mask blurred to a smooth 0–1 field (0.5 is the brain surface).
    pub brain_soft: Volume<f32>,
    /// The brain closed over its sulci (5 mm), blurred: its surface is the
    /// inner skull table, where the dura lies.
    pub hull_soft: Volume<f32>,
    /// Normal enhancement on T1c (added to `t1`, scaled per case): venous
    /// sinuses, choroid plexus, dura.
    pub enhance: Volume<f32>,
    pub frame: Frame,
    /// Brain centroid (LPS mm).
    pub center: V3,
    /// Head bounding box (LPS mm).
    pub head_min: V3,
    pub head_max: V3,
    /// White-matter voxels within 2 mm of grey matter, by region (LPS mm):
    /// where metastases seed.
    pub junction: [Vec<V3>; 3],
    /// Points just outside the brain surface (LPS mm): the dura.
    pub dura: Vec<V3>,
    /// Bright head tissue beyond the skull (LPS mm), where fat lies: the
    /// scalp, and the orbits and face (anterior skull base). Where
    /// `synth --extracranial-lookalikes` places lesion-like nodules.
    pub extracranial: Extracranial,
}

/// Sites outside the cranial cavity for look-alike nodules.
#[derive(Clone, Debug, Default)]
pub struct Extracranial {
    pub scalp: Vec<V3>,
    /// Anterior and inferior to the brain: orbital and facial fat.
    pub orbit: Vec<V3>,
}

/// Distance (voxels) beyond the widest cavity (the closed brain with the
/// enhancing structures next to it) that a nodule's centre keeps: past the
/// inner table, the diploe and the outer table, and a nodule's radius.
const BEYOND_SKULL_VOXELS: usize = 9;
/// Distance (voxels) a nodule's centre keeps from the air.
const INSIDE_HEAD_VOXELS: usize = 3;

impl Template {
    /// Loads the requested anatomy. For [`TemplateSource::Default`] without
    /// Colin27 installed, returns the phantom and a warning.
    pub fn load(source: &TemplateSource) -> Result<(Self, Option<String>), Error> {
        match source {
            TemplateSource::Default => {
                if Path::new(COLIN_T1).exists() && Path::new(COLIN_BRAIN).exists() {
                    Ok((
                        Self::from_files(
                            Path::new(COLIN_T1),
                            Some(Path::new(COLIN_BRAIN)),
                            "colin27",
                        )?,
                        None,
                    ))
                } else {
                    let warning = format!(
                        "Colin27 is not installed ({COLIN_T1}; Debian package mricron-data): using the procedural head phantom"
                    );
                    Ok((Self::phantom()?, Some(warning)))
                }
            }
            TemplateSource::File { t1, brain } => {
                let name = t1
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "template".into());
                Ok((Self::from_files(t1, brain.as_deref(), &name)?, None))
            }
            TemplateSource::Phantom => Ok((Self::phantom()?, None)),
        }
    }

    pub fn phantom() -> Result<Self, Error> {
        let (t1, brain) = crate::phantom::head_phantom();
        let mut t = Self::from_volumes(t1, brain, "phantom")?;
        t.procedural = true;
        Ok(t)
    }

    pub fn from_files(t1_path: &Path, brain: Option<&Path>, name: &str) -> Result<Self, Error> {
        let (t1, _) = read_nifti_f32(t1_path)?;
        if t1.geometry().size.iter().any(|&n| n < 32) {
            return Err(Error::Input(format!(
                "{}: the template must be a 3-D head image (at least 32 voxels per axis), got {:?}",
                t1_path.display(),
                t1.geometry().size
            )));
        }
        let brain = match brain {
            Some(p) => {
                let (b, _) = read_nifti_f32(p)?;
                if !b.geometry().same_grid(t1.geometry(), 1e-3) {
                    return Err(Error::Input(format!(
                        "{}: the brain mask is not on the template's grid ({})",
                        p.display(),
                        t1_path.display()
                    )));
                }
                b.map(|&v| v > 0.0)
            }
            None => derive_brain_mask(&t1),
        };
        Self::from_volumes(t1, brain, name)
    }

    /// Builds tissue classes, look-alike enhancement and candidate lists.
    pub fn from_volumes(t1: Volume<f32>, brain: Volume<bool>, name: &str) -> Result<Self, Error> {
        let g = t1.geometry().clone();
        let n_brain = brain.as_slice().iter().filter(|&&b| b).count();
        if n_brain < 1000 {
            return Err(Error::Input(format!(
                "template {name}: the brain mask is empty or tiny ({n_brain} voxels)"
            )));
        }
        let values: Vec<f32> = t1
            .as_slice()
            .iter()
            .zip(brain.as_slice())
            .filter(|(_, &b)| b)
            .map(|(&v, _)| v)
            .collect();
        let means = kmeans3(&values);
        let wm_mean = means[2].max(f32::MIN_POSITIVE);
        let class_means = means.map(|m| m / wm_mean);
        let t1n = t1.map(|&v| v / wm_mean);
        let cuts = [
            (means[0] + means[1]) / 2.0 / wm_mean,
            (means[1] + means[2]) / 2.0 / wm_mean,
        ];
        let air_cut = 0.5 * means[0] / wm_mean;
        let tissue_data: Vec<u8> = t1n
            .as_slice()
            .iter()
            .zip(brain.as_slice())
            .map(|(&v, &b)| {
                if b {
                    if v < cuts[0] {
                        CSF
                    } else if v < cuts[1] {
                        GM
                    } else {
                        WM
                    }
                } else if v > air_cut {
                    HEAD
                } else {
                    AIR
                }
            })
            .collect();
        let tissue = Volume::from_vec(g.clone(), tissue_data)?;
        let brain_f = brain.map(|&b| if b { 1.0f32 } else { 0.0 });
        let brain_soft = box_blur(&brain_f, 1, 2);
        let hull = erode(&dilate(&brain, Connectivity::Six, 5), Connectivity::Six, 5);
        let hull_soft = box_blur(&hull.map(|&b| if b { 1.0f32 } else { 0.0 }), 1, 2);

        // Bounding boxes and centroid.
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        let mut hlo = [f64::INFINITY; 3];
        let mut hhi = [f64::NEG_INFINITY; 3];
        let mut sum = [0.0; 3];
        let s = g.size;
        for k in 0..s[2] {
            for j in 0..s[1] {
                for i in 0..s[0] {
                    let lin = i + j * s[0] + k * s[0] * s[1];
                    let t = tissue.as_slice()[lin];
                    if t == AIR {
                        continue;
                    }
                    let w = g.index_to_world([i as f64, j as f64, k as f64]);
                    for a in 0..3 {
                        hlo[a] = hlo[a].min(w[a]);
                        hhi[a] = hhi[a].max(w[a]);
                    }
                    if brain.as_slice()[lin] {
                        let ras = [-w[0], -w[1], w[2]];
                        for a in 0..3 {
                            lo[a] = lo[a].min(ras[a]);
                            hi[a] = hi[a].max(ras[a]);
                            sum[a] += w[a];
                        }
                    }
                }
            }
        }
        let center = sum.map(|v| v / n_brain as f64);
        let frame = Frame {
            lo_ras: lo,
            hi_ras: hi,
        };

        // Grey–white junction: WM voxels with GM within 2 voxels.
        let gm = tissue.map(|&t| t == GM);
        let near_gm = dilate(&gm, Connectivity::Six, 2);
        let mut junction: [Vec<V3>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        // The dura: one voxel outside the closed brain's surface.
        let outer = dilate(&hull, Connectivity::Six, 1);
        let mut dura = Vec::new();
        for k in 0..s[2] {
            for j in 0..s[1] {
                for i in 0..s[0] {
                    let lin = i + j * s[0] + k * s[0] * s[1];
                    let w = || g.index_to_world([i as f64, j as f64, k as f64]);
                    if tissue.as_slice()[lin] == WM && near_gm.as_slice()[lin] {
                        let p = w();
                        let r = match frame.region(p) {
                            Region::Cerebrum => 0,
                            Region::Cerebellum => 1,
                            Region::Brainstem => 2,
                        };
                        junction[r].push(p);
                    } else if outer.as_slice()[lin] && !hull.as_slice()[lin] {
                        dura.push(w());
                    }
                }
            }
        }
        // The brainstem is mostly white matter without nearby cortex.
        if junction[2].len() < 50 {
            junction[2] = brainstem_points(&tissue, &frame);
        }
        if junction[0].is_empty() || dura.is_empty() {
            return Err(Error::Input(format!(
                "template {name}: found no grey–white junction or brain surface; is it a T1 head image?"
            )));
        }
        let enhance = template_enhancement(&tissue, &brain_soft, &hull_soft, &frame, center);
        let extracranial = extracranial_sites(&t1n, &tissue, &hull_soft, &frame);
        Ok(Self {
            name: name.to_string(),
            procedural: false,
            t1: t1n,
            class_means,
            tissue,
            brain_soft,
            hull_soft,
            enhance,
            frame,
            center,
            head_min: hlo,
            head_max: hhi,
            junction,
            dura,
            extracranial,
        })
    }
}

/// Bright voxels (fat on T1: at least white matter's intensity) of the
/// head well beyond the closed brain and away from the air, every fifth
/// one, split by site.
fn extracranial_sites(
    t1: &Volume<f32>,
    tissue: &Volume<u8>,
    hull_soft: &Volume<f32>,
    frame: &Frame,
) -> Extracranial {
    let g = tissue.geometry();
    let widest = hull_soft.map(|&h| h >= crate::acquire::INTRACRANIAL_STRUCTURE_HULL);
    let near = dilate(&widest, Connectivity::Six, BEYOND_SKULL_VOXELS);
    let head = erode(
        &tissue.map(|&t| t != AIR),
        Connectivity::Six,
        INSIDE_HEAD_VOXELS,
    );
    let s = g.size;
    let mut out = Extracranial::default();
    for k in 0..s[2] {
        for j in 0..s[1] {
            for i in 0..s[0] {
                let lin = i + j * s[0] + k * s[0] * s[1];
                if lin % 5 != 0
                    || near.as_slice()[lin]
                    || !head.as_slice()[lin]
                    || t1.as_slice()[lin] < 1.0
                {
                    continue;
                }
                let p = g.index_to_world([i as f64, j as f64, k as f64]);
                let [_, y, z] = frame.to_mni(p);
                if y > 20.0 && z < 0.0 {
                    out.orbit.push(p);
                } else {
                    out.scalp.push(p);
                }
            }
        }
    }
    out
}

fn brainstem_points(tissue: &Volume<u8>, frame: &Frame) -> Vec<V3> {
    let g = tissue.geometry();
    let s = g.size;
    let mut out = Vec::new();
    for k in 0..s[2] {
        for j in 0..s[1] {
            for i in 0..s[0] {
                let t = tissue.as_slice()[i + j * s[0] + k * s[0] * s[1]];
                if t == WM || t == GM {
                    let p = g.index_to_world([i as f64, j as f64, k as f64]);
                    if frame.region(p) == Region::Brainstem {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// One-dimensional k-means with three classes, started at the 10th, 50th
/// and 90th percentiles; returns the sorted class means.
pub fn kmeans3(values: &[f32]) -> [f32; 3] {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return [0.0, 0.5, 1.0];
    }
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f) as usize];
    let mut c = [q(0.1), q(0.5), q(0.9)];
    for _ in 0..30 {
        let mut sum = [0.0f64; 3];
        let mut n = [0usize; 3];
        for &v in &sorted {
            let k = (0..3)
                .min_by(|&a, &b| (v - c[a]).abs().total_cmp(&(v - c[b]).abs()))
                .unwrap_or(0);
            sum[k] += v as f64;
            n[k] += 1;
        }
        let next = [0, 1, 2].map(|k| {
            if n[k] > 0 {
                (sum[k] / n[k] as f64) as f32
            } else {
                c[k]
            }
        });
        if next == c {
            break;
        }
        c = next;
    }
    c.sort_by(|a, b| a.total_cmp(b));
    c
}

/// Erosion depth (voxels) that separates the brain from the scalp when a
/// brain mask is derived.
const SKULL_CUT_VOXELS: usize = 5;

/// A brain mask for a template given without one: Otsu threshold of the
/// head, eroded by [`SKULL_CUT_VOXELS`] to cut the scalp away, the largest
/// component grown back inside the foreground, closed and hole-filled.
/// Checked against Colin27's BET mask (`derived_brain_mask_matches_bet`).
pub fn derive_brain_mask(t1: &Volume<f32>) -> Volume<bool> {
    let v = t1.as_slice();
    let max = v
        .iter()
        .cloned()
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let mut hist = [0u64; 256];
    for &x in v {
        let b = ((x / max) * 255.0).clamp(0.0, 255.0) as usize;
        hist[b] += 1;
    }
    let total: u64 = hist.iter().sum();
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &h)| i as f64 * h as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut cut) = (0u64, 0.0f64, 0.0f64, 0usize);
    for (i, &h) in hist.iter().enumerate() {
        w0 += h;
        sum0 += i as f64 * h as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (sum_all - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1).powi(2);
        if between > best {
            best = between;
            cut = i;
        }
    }
    let thr = (cut as f32 + 0.5) / 255.0 * max;
    let fg = t1.map(|&x| x > thr);
    // Erosion cuts the thin bridges between brain and scalp; the largest
    // piece left is the brain, grown back inside the foreground.
    let opened = erode(&fg, Connectivity::Six, SKULL_CUT_VOXELS);
    let cc = delineate_imaging::connected_components(&opened, Connectivity::Six);
    let largest = cc
        .stats
        .iter()
        .max_by_key(|c| c.voxels)
        .map(|c| c.label)
        .unwrap_or(0);
    let core = cc.labels.map(|&l| l == largest && largest != 0);
    let grown = dilate(&core, Connectivity::Six, SKULL_CUT_VOXELS);
    let inside: Vec<bool> = grown
        .as_slice()
        .iter()
        .zip(fg.as_slice())
        .map(|(&a, &b)| a && b)
        .collect();
    let inside = Volume::from_vec(fg.geometry().clone(), inside).unwrap_or(grown);
    // Close over sulci, then fill the ventricles and other holes.
    let closed = erode(&dilate(&inside, Connectivity::Six, 3), Connectivity::Six, 3);
    // Fill holes: background not connected to the grid border.
    let bg = closed.map(|&b| !b);
    let bcc = delineate_imaging::connected_components(&bg, Connectivity::Six);
    let s = closed.geometry().size;
    let mut border = std::collections::HashSet::new();
    for c in &bcc.stats {
        if (0..3).any(|a| c.bbox_min[a] == 0 || c.bbox_max[a] + 1 == s[a]) {
            border.insert(c.label);
        }
    }
    bcc.labels.map(|&l| l == 0 || !border.contains(&l))
}
