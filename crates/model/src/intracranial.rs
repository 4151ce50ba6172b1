//! The intracranial-mask stage: a small network, stored in the model file
//! beside the lesion network ([`crate::modelfile`], format 3), that marks
//! the cranial cavity (inside the inner table of the skull: brain, CSF,
//! ventricles, dura, venous sinuses, pituitary fossa, internal auditory
//! canals). Candidates that lie mostly outside it (scalp, orbital and
//! facial fat, the commonest false positives on real scans) are dropped.
//!
//! Trained SynthStrip-style (Hoopes et al., NeuroImage 2022): only on
//! synthetic images of the training backgrounds under randomised contrast,
//! grids, bias, noise and field-of-view cuts, with lesions inserted so that
//! a tumour never punches a hole in the mask (`delineate synth` writes the
//! target, `intracranial.nii.gz`; `delineate train --target intracranial`).
//!
//! Safety, as the clinic needs it:
//! - a mask outside a plausible volume ([`MIN_VOLUME_ML`]–[`MAX_VOLUME_ML`])
//!   or empty is not applied, and the case carries a warning;
//! - a lesion is judged as a whole and never clipped at the mask's edge:
//!   it is dropped only when less than [`MIN_INSIDE`] of it lies inside
//!   and it is not in contact with the mask over [`MIN_CONTACT_VOXELS`]
//!   voxels (a meningioma on the dura is in contact; fat beyond the bone
//!   is not).

use delineate_imaging::{label_components, resample_nearest, Connectivity, Geometry, Volume};
use serde::{Deserialize, Serialize};

/// What a network is trained to segment.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Lesions (`truth.nii.gz`, or the lesion ROIs of a structure set).
    #[default]
    Lesions,
    /// The intracranial cavity (`intracranial.nii.gz` of `delineate synth`).
    Intracranial,
}

/// Smallest plausible intracranial volume (ml). Adult intracranial volume
/// is about 1 100–1 800 ml (1 200–1 500 ml on average, women to men); a
/// mask far below means the network did not see a head.
pub const MIN_VOLUME_ML: f64 = 900.0;
/// Largest plausible intracranial volume (ml); a mask far above has taken
/// in scalp or face (a whole head is 3 500–5 000 ml). 2 200 ml refused
/// correct masks of large synthetic heads (truth 2 326–2 480 ml, masks
/// 2 288–2 437 ml at Dice 0.96: 3 of the study's 20 held-out cases, whose
/// scale draws reach +8 % per axis); the largest adult heads come close.
pub const MAX_VOLUME_ML: f64 = 2700.0;
/// A candidate is kept when at least this share of its voxels lie inside
/// the mask (it is then kept whole).
pub const MIN_INSIDE: f64 = 0.5;
/// Probability above which a voxel is inside the cavity.
pub const MASK_THRESHOLD: f32 = 0.5;

/// The mask a probability map (on its own grid) stands for: voxels above
/// [`MASK_THRESHOLD`], the largest 6-connected part, with its holes filled
/// (a dark cyst or necrosis the network hesitated over is inside).
pub fn clean_mask(probability: &Volume<f32>) -> Volume<u8> {
    let cc = label_components(
        probability,
        Connectivity::Six,
        |&p| p > MASK_THRESHOLD,
        false,
    );
    let Some(largest) = cc.stats.iter().max_by_key(|c| c.voxels).map(|c| c.label) else {
        return probability.map(|_| 0u8);
    };
    delineate_imaging::morphology::fill_holes(&cc.labels.map(|&l| u8::from(l == largest)))
}

/// The mask's volume in millilitres.
pub fn volume_ml(mask: &Volume<u8>) -> f64 {
    let g = mask.geometry();
    let voxel_mm3: f64 = g.spacing.iter().product();
    mask.as_slice().iter().filter(|&&v| v > 0).count() as f64 * voxel_mm3 / 1000.0
}

/// Why a mask cannot be trusted, if it cannot.
pub fn implausible(volume_ml: f64) -> Option<String> {
    if volume_ml <= 0.0 {
        return Some("the intracranial mask is empty".into());
    }
    if !(MIN_VOLUME_ML..=MAX_VOLUME_ML).contains(&volume_ml) {
        return Some(format!(
            "the intracranial mask holds {volume_ml:.0} ml, outside the plausible \
             {MIN_VOLUME_ML:.0}–{MAX_VOLUME_ML:.0} ml"
        ));
    }
    None
}

/// What the stage did to a case (in the result's manifest).
pub use delineate_dicom::manifest::IntracranialReport;

/// The stage's mask of one case on the grids that need it.
pub struct CaseMask {
    /// On the lesion network's model grid (what candidates are judged on);
    /// `None` when the mask is not applied.
    pub model_grid: Option<Volume<u8>>,
    /// On the input grid (written as `intracranial.nii.gz`).
    pub input_grid: Volume<u8>,
    pub volume_ml: f64,
    pub warning: Option<String>,
}

impl CaseMask {
    /// From the cleaned mask on the mask network's own grid.
    pub fn new(
        mask: &Volume<u8>,
        model: &Geometry,
        input: &Geometry,
    ) -> Result<Self, crate::Error> {
        let volume = volume_ml(mask);
        let warning = implausible(volume);
        let model_grid = match warning {
            None => Some(resample_nearest(mask, model, 0u8)?),
            Some(_) => None,
        };
        Ok(Self {
            model_grid,
            input_grid: resample_nearest(mask, input, 0u8)?,
            volume_ml: volume,
            warning,
        })
    }
}

/// Voxels of a candidate that lie inside the mask or touch it (a face
/// neighbour inside) from which it is kept whatever lies outside: a tumour
/// on the dura (a meningioma bulging where the mask network hesitated)
/// sits on the cavity, while scalp, orbital and facial fat lie beyond the
/// bone, out of contact.
pub const MIN_CONTACT_VOXELS: usize = 10;

/// Whether each component of `labels` (1..=n, on the grid of `mask`) is
/// kept: at least [`MIN_INSIDE`] of it inside the mask, or at least
/// [`MIN_CONTACT_VOXELS`] of its voxels inside or touching it (index 0
/// unused).
pub fn inside(labels: &Volume<u32>, n: usize, mask: &Volume<u8>) -> Vec<bool> {
    let s = labels.geometry().size;
    let (l, m) = (labels.as_slice(), mask.as_slice());
    let (mut all, mut ins, mut contact) = (
        vec![0usize; n + 1],
        vec![0usize; n + 1],
        vec![0usize; n + 1],
    );
    for (i, &c) in l.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let c = c as usize;
        all[c] += 1;
        if m[i] > 0 {
            ins[c] += 1;
            contact[c] += 1;
            continue;
        }
        let (x, y, z) = (i % s[0], (i / s[0]) % s[1], i / (s[0] * s[1]));
        let touches = (x > 0 && m[i - 1] > 0)
            || (x + 1 < s[0] && m[i + 1] > 0)
            || (y > 0 && m[i - s[0]] > 0)
            || (y + 1 < s[1] && m[i + s[0]] > 0)
            || (z > 0 && m[i - s[0] * s[1]] > 0)
            || (z + 1 < s[2] && m[i + s[0] * s[1]] > 0);
        contact[c] += usize::from(touches);
    }
    (0..=n)
        .map(|c| {
            c > 0
                && (ins[c] as f64 >= MIN_INSIDE * all[c] as f64 || contact[c] >= MIN_CONTACT_VOXELS)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize, mm: f64) -> Geometry {
        Geometry::new([n; 3], [mm; 3], [0.0; 3], Geometry::IDENTITY).unwrap_or_else(|_| {
            Geometry::new([1; 3], [1.0; 3], [0.0; 3], Geometry::IDENTITY).expect("grid")
        })
    }

    #[test]
    fn the_mask_is_the_largest_part_with_its_holes_filled() {
        let g = grid(20, 1.0);
        let mut p = Volume::filled(g.clone(), 0f32);
        let d = p.as_mut_slice();
        for z in 2..16 {
            for y in 2..16 {
                for x in 2..16 {
                    d[x + 20 * (y + 20 * z)] = 0.9;
                }
            }
        }
        // A hole in the middle (a cyst the network hesitated over), and a
        // separate blob (scalp) that is not the cavity.
        for z in 7..10 {
            for y in 7..10 {
                for x in 7..10 {
                    d[x + 20 * (y + 20 * z)] = 0.2;
                }
            }
        }
        d[18 + 20 * (18 + 20 * 18)] = 0.9;
        let m = clean_mask(&p);
        assert_eq!(
            m.as_slice().iter().filter(|&&v| v > 0).count(),
            14 * 14 * 14
        );
        assert_eq!(m.as_slice()[8 + 20 * (8 + 20 * 8)], 1);
        assert_eq!(m.as_slice()[18 + 20 * (18 + 20 * 18)], 0);
        assert!((volume_ml(&m) - 2.744).abs() < 1e-9);
    }

    #[test]
    fn implausible_volumes_are_named() {
        assert!(implausible(0.0).is_some_and(|w| w.contains("empty")));
        assert!(implausible(450.0).is_some_and(|w| w.contains("450 ml")));
        assert!(implausible(3000.0).is_some());
        assert!(implausible(1400.0).is_none());
    }

    #[test]
    fn a_lesion_mostly_inside_is_kept_whole() {
        let g = grid(10, 1.0);
        let mut mask = Volume::filled(g.clone(), 0u8);
        let mut labels = Volume::filled(g, 0u32);
        for x in 0..5 {
            mask.as_mut_slice()[x] = 1;
        }
        // Lesion 1 straddles the edge (3 of 4 inside), lesion 2 is outside.
        for x in 2..6 {
            labels.as_mut_slice()[x] = 1;
        }
        labels.as_mut_slice()[8] = 2;
        labels.as_mut_slice()[9] = 2;
        assert_eq!(inside(&labels, 2, &mask), vec![false, true, false]);
        // A large lesion mostly outside but on the mask over 12 voxels (a
        // meningioma the mask network cut off) is kept.
        let g = grid(10, 1.0);
        let mut mask = Volume::filled(g.clone(), 0u8);
        let mut labels = Volume::filled(g, 0u32);
        for y in 0..10 {
            for x in 0..10 {
                mask.as_mut_slice()[x + 10 * y] = 1; // the slab z = 0
                for z in 1..4 {
                    if (3..7).contains(&x) && (2..5).contains(&y) {
                        labels.as_mut_slice()[x + 10 * (y + 10 * z)] = 1;
                    }
                }
            }
        }
        assert_eq!(inside(&labels, 1, &mask), vec![false, true]);
        // The same lesion lifted off the mask by one voxel is dropped.
        let lifted = labels.map(|_| 0u32);
        let mut lifted = lifted;
        for (i, &v) in labels.as_slice().iter().enumerate() {
            if v > 0 && i + 100 < 1000 {
                lifted.as_mut_slice()[i + 100] = v;
            }
        }
        assert_eq!(inside(&lifted, 1, &mask), vec![false, false]);
    }
}
