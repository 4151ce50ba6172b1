//! The train/inference contract: everything that must be the same when a
//! model is trained, validated and used, as types stored in the model file
//! and applied by one function ([`Preprocessing::prepare`]) at both ends.
//!
//! - **Orientation**: the image is reoriented exactly (axis permutation and
//!   flips, no interpolation) to [`Orientation::Ras`], so an axial, a
//!   sagittal and a coronal acquisition of the same head look the same to
//!   the network.
//! - **Spacing**: then resampled (trilinear) to the model's voxel size over
//!   the same field of view.
//! - **Normalisation**: a z-score over the head (voxels above 10 % of the
//!   99th percentile, [`crate::data::head_threshold`]), clipped: computable
//!   on any clinical scan, no brain mask needed at either end.
//! - **Windows**: inference runs on windows of the training patch (group
//!   norm statistics depend on the window: docs/inference.md measured the
//!   damage), with the contract's overlap, after a crop to the head box.
//! - **Lesions**: 26-connected components of probability above
//!   `extent_threshold` on the model grid (the authors' rule, 0.5), at least
//!   `min_diameter_mm` across; a lesion's confidence is its maximum
//!   probability there; lesions with confidence at or above the
//!   `operating_threshold` (chosen on validation cases only) are delivered.
//!
//! Every field is required and every enum is closed: an unknown or missing
//! value makes the model file unreadable, with the field named.

use delineate_imaging::{resample_labels, resample_linear, Volume};
use serde::{Deserialize, Serialize};

use crate::data::{head_threshold, ZSCORE_CLIP};
use crate::Error;

/// Voxel axes of the network's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Orientation {
    /// Exactly reoriented to RAS (nibabel's closest canonical).
    Ras,
    /// The acquisition's own axis order (model files of format 1).
    Acquisition,
}

/// Intensity normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Normalisation {
    /// (x − mean) / sd over the head voxels, clipped to ±`clip`.
    ZscoreHead { clip: f32 },
}

/// Crop before the sliding windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Crop {
    /// The head's bounding box plus `margin` voxels of context.
    HeadBox { margin: usize },
    /// The whole volume.
    None,
}

/// How an image becomes the network's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    pub orientation: Orientation,
    /// Voxel size of the model grid (mm), along its (reoriented) axes.
    pub spacing: [f64; 3],
    pub normalisation: Normalisation,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            orientation: Orientation::Ras,
            spacing: [1.0; 3],
            normalisation: Normalisation::ZscoreHead { clip: ZSCORE_CLIP },
        }
    }
}

/// How lesions are formed from the probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LesionRule {
    /// Voxels above this probability form the lesions (and their extent).
    pub extent_threshold: f32,
    /// Smaller components (equivalent diameter, mm) are not lesions.
    pub min_diameter_mm: f64,
}

/// Default extent threshold: the authors' 0.5.
pub const EXTENT_THRESHOLD: f32 = 0.5;
/// Default minimum lesion size: removes single voxels at 1 mm (1.24 mm).
pub const MIN_DIAMETER_MM: f64 = 1.5;
/// Default window overlap (docs/inference.md: measured choice).
pub const OVERLAP: f64 = 0.25;
/// Voxels of context kept around the head box.
pub const HEAD_MARGIN: usize = 8;

impl Default for LesionRule {
    fn default() -> Self {
        Self {
            extent_threshold: EXTENT_THRESHOLD,
            min_diameter_mm: MIN_DIAMETER_MM,
        }
    }
}

/// The whole contract, as stored in the model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub preprocessing: Preprocessing,
    /// Training patch = inference window (x, y, z voxels of the model grid).
    pub patch: [usize; 3],
    pub crop: Crop,
    /// Minimum overlap of neighbouring windows (fraction of a window).
    pub overlap: f64,
    pub lesions: LesionRule,
    /// Lesions with confidence ≥ this are delivered (chosen on validation).
    pub operating_threshold: f32,
}

impl Contract {
    /// The contract of a model trained on `patch` with `preprocessing`,
    /// before validation has chosen its operating threshold.
    pub fn new(preprocessing: Preprocessing, patch: [usize; 3]) -> Self {
        Self {
            preprocessing,
            patch,
            crop: Crop::HeadBox {
                margin: HEAD_MARGIN,
            },
            overlap: OVERLAP,
            lesions: LesionRule::default(),
            operating_threshold: EXTENT_THRESHOLD,
        }
    }

    /// Refuses values no pipeline can follow (named in the error).
    pub fn check(&self) -> Result<(), String> {
        let p = &self.preprocessing;
        if p.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "preprocessing.spacing {:?}: must be positive",
                p.spacing
            ));
        }
        let Normalisation::ZscoreHead { clip } = p.normalisation;
        if !(clip.is_finite() && clip > 0.0) {
            return Err(format!(
                "preprocessing.normalisation.clip {clip}: must be positive"
            ));
        }
        if self.patch.contains(&0) {
            return Err(format!("patch {:?}: must be positive", self.patch));
        }
        if !(0.0..0.95).contains(&self.overlap) {
            return Err(format!("overlap {}: must lie in [0, 0.95)", self.overlap));
        }
        let t = self.lesions.extent_threshold;
        if !(0.0..1.0).contains(&t) {
            return Err(format!("lesions.extent_threshold {t}: must lie in [0, 1)"));
        }
        if self.lesions.min_diameter_mm.is_nan() || self.lesions.min_diameter_mm < 0.0 {
            return Err("lesions.min_diameter_mm: must be ≥ 0".into());
        }
        if !(0.0..=1.0).contains(&self.operating_threshold) {
            return Err(format!(
                "operating_threshold {}: must lie in [0, 1]",
                self.operating_threshold
            ));
        }
        Ok(())
    }
}

/// The model grid of an image grid: reoriented (exactly) as the contract
/// says, with the contract's spacing over the same field of view.
pub fn model_grid(
    g: &delineate_imaging::Geometry,
    p: &Preprocessing,
) -> Result<delineate_imaging::Geometry, Error> {
    let oriented = match p.orientation {
        Orientation::Ras => {
            // Reorienting an empty volume of this grid gives the grid.
            let probe = Volume::filled(g.clone(), 0u8);
            probe
                .reorient(delineate_imaging::orient::CANONICAL)?
                .geometry()
                .clone()
        }
        Orientation::Acquisition => g.clone(),
    };
    Ok(oriented.with_spacing(p.spacing)?)
}

impl Preprocessing {
    /// The network's input for `image`: reoriented, resampled to the model
    /// grid and normalised. Training and inference both call this.
    pub fn prepare(&self, image: &Volume<f32>) -> Result<Volume<f32>, Error> {
        Ok(self.normalise(&self.resample(image)?))
    }

    /// The first half of [`Self::prepare`]: the image on its model grid,
    /// intensities untouched.
    pub fn resample(&self, image: &Volume<f32>) -> Result<Volume<f32>, Error> {
        let target = model_grid(image.geometry(), self)?;
        Ok(resample_linear(image, &target, 0.0)?)
    }

    /// Truth labels on the model grid of their image (no lesion vanishes:
    /// [`resample_labels`]).
    pub fn prepare_labels(&self, truth: &Volume<u32>) -> Result<Volume<u32>, Error> {
        let target = model_grid(truth.geometry(), self)?;
        Ok(resample_labels(truth, &target)?)
    }

    /// The contract's normalisation of an image already on the model grid.
    pub fn normalise(&self, image: &Volume<f32>) -> Volume<f32> {
        let Normalisation::ZscoreHead { clip } = self.normalisation;
        zscore_head(image, clip)
    }
}

/// Z-score over the head (voxels above [`head_threshold`]), clipped to
/// ±`clip`.
pub fn zscore_head(image: &Volume<f32>, clip: f32) -> Volume<f32> {
    let v = image.as_slice();
    let cut = head_threshold(v);
    let (mut n, mut sum) = (0usize, 0f64);
    for &x in v.iter().filter(|&&x| x > cut) {
        n += 1;
        sum += x as f64;
    }
    let n = n.max(1) as f64;
    let mean = sum / n;
    let var = v
        .iter()
        .filter(|&&x| x > cut)
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = var.sqrt().max(1e-6);
    image.map(|&x| (((x as f64 - mean) / sd) as f32).clamp(-clip, clip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_json_names_unknown_values() {
        let c = Contract::new(Preprocessing::default(), [48, 48, 48]);
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert!(json.contains("\"orientation\":\"ras\""), "{json}");
        assert!(json.contains("\"kind\":\"zscore-head\""), "{json}");
        let back: Contract = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, c);
        let bad = json.replace("zscore-head", "zscore-brain");
        let e = serde_json::from_str::<Contract>(&bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("zscore-brain"), "{e}");
        let missing = json.replace("\"overlap\":0.25,", "");
        let e = serde_json::from_str::<Contract>(&missing)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("overlap"), "{e}");
    }
}
