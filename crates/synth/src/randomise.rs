//! Domain randomisation, in the spirit of SynthSeg (Billot et al., Medical
//! Image Analysis 2023: a network trained on images with randomised
//! contrast and resolution generalises to real scans of any contrast),
//! kept within what contrast-enhanced T1 sequences produce most of the
//! time, and beyond it some of the time.
//!
//! Per case, when [`Randomisation`] is on:
//! - **contrast**: the brain's grey matter and CSF intensities (white
//!   matter = 1) are drawn (MPRAGE, SPGR/BRAVO and spin-echo T1 span GM
//!   0.6–0.92 and CSF 0.1–0.5 of WM; 15 % of cases go beyond: GM 0.45–1.05,
//!   CSF 0–0.75), the within-class texture is scaled, and the head outside
//!   the brain (scalp fat, muscle, marrow) gets its own gain. The template's
//!   intensity becomes a smooth random tone curve: each brain voxel blends
//!   the class maps by its intensity's closeness to the template's class
//!   means (Gaussian weights, σ a third of the smaller gap between class
//!   means), so partial-volume voxels stay in between.
//! - **resolution**: 45 % of cases get a random grid: in-plane 0.45–1.2 mm,
//!   slice thickness log-uniform 0.5–6.5 mm, axial, sagittal or coronal;
//!   every voxel integrates the anatomy over its extent (a box slice
//!   profile, sub-sampled every ≤ 1 mm), as thick slices do.
//! - **artefacts**: a Nyquist ghost along a phase-encoding axis (25 % of
//!   cases, 2–8 % of the signal shifted by half the field of view),
//!   wrap-around (8 %: 6–15 % of the field of view folded onto the opposite
//!   side), field-of-view cuts (20 %: 5–30 mm off the top or the bottom of
//!   the head), besides the bias field and Rician noise every case gets.
//! - **lesions**: heterogeneous enhancement, a smooth random texture of
//!   5–30 % relative amplitude inside each lesion
//!   ([`crate::lesions::Texture`]).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::sample::V3;

/// Ranges of the randomisation (docs/synth.md gives each one's source).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Randomisation {
    /// Grey matter and CSF intensity (white matter = 1), usual T1c range.
    pub gm: [f64; 2],
    pub csf: [f64; 2],
    /// Share of cases drawn from the wider ranges below.
    pub beyond_fraction: f64,
    pub beyond_gm: [f64; 2],
    pub beyond_csf: [f64; 2],
    /// Scale of the intensity texture within each class.
    pub texture: [f64; 2],
    /// Gain of the head outside the brain (scalp fat, muscle, marrow).
    pub head_gain: [f64; 2],
    /// Share of cases with a random grid (the others use the named grids).
    pub random_grid_fraction: f64,
    pub in_plane_mm: [f64; 2],
    /// Slice thickness, drawn log-uniformly.
    pub slice_mm: [f64; 2],
    /// Shares of sagittal and coronal random grids (the rest are axial).
    pub sagittal_fraction: f64,
    pub coronal_fraction: f64,
    pub ghost_probability: f64,
    pub ghost_amplitude: [f64; 2],
    pub wrap_probability: f64,
    /// Fraction of the phase-encoding field of view folded over.
    pub wrap_fraction: [f64; 2],
    pub fov_cut_probability: f64,
    pub fov_cut_mm: [f64; 2],
    /// Amplitude of each lesion's heterogeneous enhancement (relative
    /// standard deviation of its intensity).
    pub lesion_texture: [f64; 2],
}

impl Default for Randomisation {
    fn default() -> Self {
        Self {
            gm: [0.6, 0.92],
            csf: [0.1, 0.5],
            beyond_fraction: 0.15,
            beyond_gm: [0.45, 1.05],
            beyond_csf: [0.0, 0.75],
            texture: [0.6, 1.4],
            head_gain: [0.6, 1.5],
            random_grid_fraction: 0.45,
            in_plane_mm: [0.45, 1.2],
            slice_mm: [0.5, 6.5],
            sagittal_fraction: 0.3,
            coronal_fraction: 0.15,
            ghost_probability: 0.25,
            ghost_amplitude: [0.02, 0.08],
            wrap_probability: 0.08,
            wrap_fraction: [0.06, 0.15],
            fov_cut_probability: 0.2,
            fov_cut_mm: [5.0, 30.0],
            lesion_texture: [0.05, 0.3],
        }
    }
}

fn uniform(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    if r[1] > r[0] {
        rng.random_range(r[0]..=r[1])
    } else {
        r[0]
    }
}

/// A case's tissue intensities.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contrast {
    pub csf: f64,
    pub gm: f64,
    pub wm: f64,
    pub texture: f64,
    pub head_gain: f64,
    /// Drawn from the wider ranges.
    pub beyond: bool,
}

impl Contrast {
    /// The template's own contrast (no randomisation).
    pub fn identity(class_means: [f32; 3]) -> Self {
        Self {
            csf: class_means[0] as f64,
            gm: class_means[1] as f64,
            wm: class_means[2] as f64,
            texture: 1.0,
            head_gain: 1.0,
            beyond: false,
        }
    }

    pub fn draw(rng: &mut ChaCha8Rng, r: &Randomisation) -> Self {
        let beyond = rng.random_bool(r.beyond_fraction.clamp(0.0, 1.0));
        let (gm, csf) = if beyond {
            (r.beyond_gm, r.beyond_csf)
        } else {
            (r.gm, r.csf)
        };
        Self {
            gm: uniform(rng, gm),
            csf: uniform(rng, csf),
            wm: 1.0,
            texture: uniform(rng, r.texture),
            head_gain: uniform(rng, r.head_gain),
            beyond,
        }
    }

    /// The case intensity of template intensity `t` (white matter = 1)
    /// where the soft brain mask is `b`; `means` are the template's CSF,
    /// GM and WM means.
    pub fn map(&self, means: [f32; 3], t: f32, b: f32) -> f32 {
        let target = [self.csf as f32, self.gm as f32, self.wm as f32];
        // Sharp enough that each class mean maps to (about) its target.
        let gap = (means[1] - means[0]).abs().min((means[2] - means[1]).abs());
        let sigma = (gap / 3.0).max(1e-3);
        let (mut num, mut den) = (0f32, 0f32);
        for c in 0..3 {
            let d = (t - means[c]) / sigma;
            let w = (-0.5 * d * d).exp() + 1e-12;
            num += w * (target[c] + self.texture as f32 * (t - means[c]));
            den += w;
        }
        let brain = (num / den).max(0.0);
        let head = t * self.head_gain as f32;
        let b = b.clamp(0.0, 1.0);
        b * brain + (1.0 - b) * head
    }
}

/// Slice orientation of a grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    Axial,
    Sagittal,
    Coronal,
}

impl Plane {
    pub fn name(self) -> &'static str {
        match self {
            Self::Axial => "axial",
            Self::Sagittal => "sagittal",
            Self::Coronal => "coronal",
        }
    }

    /// Direction cosines (columns = voxel axes, LPS): in-plane rows and
    /// columns, then the slice axis.
    pub fn direction(self) -> [[f64; 3]; 3] {
        match self {
            Self::Axial => [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            // i → posterior, j → inferior, k → left.
            Self::Sagittal => [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
            // i → left, j → inferior, k → posterior.
            Self::Coronal => [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]],
        }
    }
}

/// A random grid: (in-plane, in-plane, slice) spacing and its plane.
pub fn draw_grid(rng: &mut ChaCha8Rng, r: &Randomisation) -> ([f64; 3], Plane) {
    let ip = uniform(rng, r.in_plane_mm);
    let (lo, hi) = (r.slice_mm[0].max(1e-3).ln(), r.slice_mm[1].max(1e-3).ln());
    let slice = if hi > lo {
        rng.random_range(lo..=hi).exp()
    } else {
        lo.exp()
    };
    let u: f64 = rng.random();
    let plane = if u < r.sagittal_fraction {
        Plane::Sagittal
    } else if u < r.sagittal_fraction + r.coronal_fraction {
        Plane::Coronal
    } else {
        Plane::Axial
    };
    ([ip, ip, slice], plane)
}

/// Artefacts of one acquisition.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Artefacts {
    /// Nyquist ghost: (in-plane axis, amplitude).
    pub ghost: Option<(usize, f64)>,
    /// Wrap-around: (in-plane axis, folded fraction of the field of view).
    pub wrap: Option<(usize, f64)>,
    /// Field-of-view cut: mm removed from the top (true) or bottom of the
    /// head box.
    pub fov_cut: Option<(bool, f64)>,
}

impl Artefacts {
    pub fn draw(rng: &mut ChaCha8Rng, r: &Randomisation) -> Self {
        let ghost = rng
            .random_bool(r.ghost_probability.clamp(0.0, 1.0))
            .then(|| (rng.random_range(0..2), uniform(rng, r.ghost_amplitude)));
        let wrap = rng
            .random_bool(r.wrap_probability.clamp(0.0, 1.0))
            .then(|| (rng.random_range(0..2), uniform(rng, r.wrap_fraction)));
        let fov_cut = rng
            .random_bool(r.fov_cut_probability.clamp(0.0, 1.0))
            .then(|| (rng.random_bool(0.5), uniform(rng, r.fov_cut_mm)));
        Self {
            ghost,
            wrap,
            fov_cut,
        }
    }
}

/// Offsets (world mm) of the sub-samples that integrate a voxel of
/// `spacing` along its `axes`: one per ≤ 1 mm along each axis coarser than
/// 1.25 mm, centred in the voxel (a box slice profile).
pub fn voxel_samples(spacing: [f64; 3], axes: &[V3; 3]) -> Vec<V3> {
    let n = spacing.map(|s| if s > 1.25 { s.ceil() as usize } else { 1 });
    let mut out = Vec::with_capacity(n[0] * n[1] * n[2]);
    for c in 0..n[2] {
        for b in 0..n[1] {
            for a in 0..n[0] {
                let f = [a, b, c];
                let t = [0, 1, 2].map(|k| ((f[k] as f64 + 0.5) / n[k] as f64 - 0.5) * spacing[k]);
                out.push([0, 1, 2].map(|w| (0..3).map(|k| axes[k][w] * t[k]).sum::<f64>()));
            }
        }
    }
    out
}

/// Adds a Nyquist ghost: the image shifted by half the field of view along
/// in-plane `axis`, scaled by `amplitude` (x-fastest `img` of `size`).
pub fn add_ghost(img: &mut [f32], size: [usize; 3], axis: usize, amplitude: f64) {
    let src = img.to_vec();
    let n = size[axis];
    let half = n / 2;
    let a = amplitude as f32;
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                let mut q = [i, j, k];
                q[axis] = (q[axis] + half) % n;
                img[i + size[0] * (j + size[1] * k)] +=
                    a * src[q[0] + size[0] * (q[1] + size[1] * q[2])];
            }
        }
    }
}

/// Wrap-around along `axis`: the last `fold` voxels of the field of view
/// are cut off and their signal added to the first `fold` (aliasing). The
/// other arrays are cropped the same way (truth is not folded: the ghost
/// of a lesion is not a lesion). Returns the new size.
pub fn wrap_around(
    img: &mut Vec<f32>,
    others: &mut [&mut dyn Crop],
    size: [usize; 3],
    axis: usize,
    fold: usize,
) -> [usize; 3] {
    let n = size[axis];
    if fold == 0 || fold >= n / 2 {
        return size;
    }
    let keep = n - fold;
    let mut out_size = size;
    out_size[axis] = keep;
    let at = |s: [usize; 3], i: usize, j: usize, k: usize| i + s[0] * (j + s[1] * k);
    let mut out = vec![0f32; out_size.iter().product()];
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                let mut q = [i, j, k];
                q[axis] %= keep;
                out[at(out_size, q[0], q[1], q[2])] += img[at(size, i, j, k)];
            }
        }
    }
    *img = out;
    for o in others.iter_mut() {
        o.crop_axis(size, axis, keep);
    }
    out_size
}

/// Arrays that a wrap-around crops.
pub trait Crop {
    fn crop_axis(&mut self, size: [usize; 3], axis: usize, keep: usize);
}

impl<T: Copy> Crop for Vec<T> {
    fn crop_axis(&mut self, size: [usize; 3], axis: usize, keep: usize) {
        let mut out = Vec::with_capacity(self.len() / size[axis] * keep);
        for k in 0..size[2] {
            for j in 0..size[1] {
                for i in 0..size[0] {
                    if [i, j, k][axis] < keep {
                        out.push(self[i + size[0] * (j + size[1] * k)]);
                    }
                }
            }
        }
        *self = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_identity_contrast_keeps_intensities_and_draws_stay_in_range() {
        let means = [0.3f32, 0.75, 1.0];
        let id = Contrast::identity(means);
        for t in [0.1f32, 0.3, 0.5, 0.75, 0.9, 1.0, 1.3] {
            assert!((id.map(means, t, 1.0) - t).abs() < 1e-4, "{t}");
            assert!((id.map(means, t, 0.0) - t).abs() < 1e-6, "{t}");
        }
        let r = Randomisation::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let c = Contrast::draw(&mut rng, &r);
            let (gm, csf) = if c.beyond {
                (r.beyond_gm, r.beyond_csf)
            } else {
                (r.gm, r.csf)
            };
            assert!((gm[0]..=gm[1]).contains(&c.gm) && (csf[0]..=csf[1]).contains(&c.csf));
            // The class means land on the drawn intensities.
            assert!((c.map(means, 0.75, 1.0) as f64 - c.gm).abs() < 0.03);
            assert!((c.map(means, 1.0, 1.0) as f64 - 1.0).abs() < 0.03);
            assert!((c.map(means, 0.3, 1.0) as f64 - c.csf).abs() < 0.03);
        }
    }

    #[test]
    fn voxel_samples_cover_thick_slices() {
        let axes = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(voxel_samples([1.0, 1.0, 1.0], &axes), vec![[0.0; 3]]);
        let s = voxel_samples([0.5, 0.5, 6.0], &axes);
        assert_eq!(s.len(), 6);
        let z: Vec<f64> = s.iter().map(|p| p[2]).collect();
        for (a, b) in z.iter().zip([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]) {
            assert!((a - b).abs() < 1e-12, "{z:?}");
        }
    }

    #[test]
    fn wrap_around_folds_signal_and_crops_the_rest() {
        let size = [4, 2, 1];
        let mut img: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let mut truth: Vec<u16> = (0..8).collect();
        let s = wrap_around(&mut img, &mut [&mut truth], size, 0, 1);
        assert_eq!(s, [3, 2, 1]);
        // Column 3 folds onto column 0.
        assert_eq!(img, vec![3.0, 1.0, 2.0, 11.0, 5.0, 6.0]);
        assert_eq!(truth, vec![0, 1, 2, 4, 5, 6]);
        let mut g = vec![1.0f32; 8];
        add_ghost(&mut g, size, 0, 0.1);
        assert!(g.iter().all(|&v| (v - 1.1).abs() < 1e-6));
    }
}
