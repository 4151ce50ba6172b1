//! Patch sampling for training: uniform, foreground and Tumor Sampling.
//!
//! - **Uniform**: a random patient, a random voxel.
//! - **Foreground** (nnU-Net style): with probability `p` a random lesion
//!   *voxel* of the dataset, so large lesions are seen far more often.
//! - **Tumor Sampling** (the paper): with probability `p` a lesion chosen
//!   uniformly among all lesions of the dataset, then a random voxel of it,
//!   so a 3 mm metastasis is the centre of as many patches as a 3 cm one;
//!   patients are drawn in proportion to their lesion counts, which gives
//!   every lesion the same chance. Otherwise uniform.
//!
//! - **Hard negatives** ([`Negatives`]): before any of the above, with
//!   probability `lookalike` the patch is centred on a recorded look-alike
//!   (`lookalikes.nii.gz` of `delineate synth`: a vessel or a sinus, plexus
//!   or dura voxel, each class half the time when a case has both) of a
//!   case drawn uniformly among those that have any; then, with probability
//!   `false_positive`, on a voxel where the current model is wrong (a false
//!   positive on a training case, mined by the trainer at each validation,
//!   [`crate::trainer`]), of a case drawn uniformly among those that have
//!   any. With Tumor Sampling at p, look-alikes at h and false positives at
//!   f, a patch aims at a look-alike with probability h, at a false
//!   positive with (1 − h)·f, at a lesion with (1 − h)(1 − f)·p, anywhere
//!   with the rest.
//!
//! Patch corners are clamped so the patch lies inside the image when it
//! fits; centres are returned too, for statistics.

use delineate_imaging::{components::label_components, Connectivity, Volume};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Sampling {
    Uniform,
    Foreground { p: f64 },
    Tumor { p: f64 },
}

/// How patch centres are drawn, without its share (the command line's
/// `--sampling`; [`Sampling::of`]).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplingKind {
    /// Tumor Sampling: a lesion chosen uniformly, so small lesions count.
    Tumor,
    Uniform,
    /// A lesion voxel chosen uniformly (large lesions dominate).
    Fg,
}

impl Sampling {
    /// `kind` with `p`, the share of patches centred on a lesion.
    pub fn of(kind: SamplingKind, p: f64) -> Self {
        match kind {
            SamplingKind::Tumor => Sampling::Tumor { p },
            SamplingKind::Fg => Sampling::Foreground { p },
            SamplingKind::Uniform => Sampling::Uniform,
        }
    }
}

/// Hard-negative sampling shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Negatives {
    /// Probability that a patch is centred on a recorded look-alike.
    pub lookalike: f64,
    /// Probability (of the patches not on a look-alike) that it is centred
    /// on a mined false positive of the current model.
    #[serde(default)]
    pub false_positive: f64,
}

/// The lesions (and look-alikes) of one training case.
#[derive(Clone, Debug)]
pub struct CaseLesions {
    pub size: [usize; 3],
    /// Linear voxel indices of each lesion (26-connected components).
    pub lesions: Vec<Vec<usize>>,
    /// Linear voxel indices of look-alikes: vessels, and sinuses, plexus
    /// and dura.
    pub lookalikes: [Vec<usize>; 2],
    /// Linear voxel indices where the current model gives a false positive
    /// (mined during training; empty until then).
    pub false_positives: Vec<usize>,
}

impl CaseLesions {
    pub fn from_truth(truth: &Volume<u8>) -> Self {
        let cc = label_components(truth, Connectivity::TwentySix, |&v| v > 0, true);
        let mut lesions = vec![Vec::new(); cc.stats.len()];
        for (i, &l) in cc.labels.as_slice().iter().enumerate() {
            if l > 0 {
                lesions[l as usize - 1].push(i);
            }
        }
        Self {
            size: truth.geometry().size,
            lesions,
            lookalikes: [Vec::new(), Vec::new()],
            false_positives: Vec::new(),
        }
    }
}

/// One drawn patch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub case: usize,
    pub centre: [usize; 3],
    /// Corner of the patch (clamped into the image where it fits).
    pub corner: [usize; 3],
    /// The lesion aimed at (case, lesion), when the draw targeted one.
    pub lesion: Option<(usize, usize)>,
    /// The look-alike class aimed at (0 vessel, 1 structure), if any.
    pub lookalike: Option<usize>,
    /// True when the draw aimed at a mined false positive.
    pub false_positive: bool,
}

pub struct PatchSampler {
    cases: Vec<CaseLesions>,
    sampling: Sampling,
    negatives: Negatives,
    /// Cases with any look-alike.
    with_lookalikes: Vec<usize>,
    /// Cases with any mined false positive.
    with_false_positives: Vec<usize>,
    patch: [usize; 3],
    /// Every lesion of the dataset as (case, lesion).
    all_lesions: Vec<(usize, usize)>,
    /// Cumulative lesion-voxel counts over `all_lesions`, for voxel-uniform draws.
    cumulative_voxels: Vec<usize>,
}

impl PatchSampler {
    pub fn new(cases: Vec<CaseLesions>, sampling: Sampling, patch: [usize; 3]) -> Self {
        Self::with_negatives(cases, sampling, Negatives::default(), patch)
    }

    pub fn with_negatives(
        cases: Vec<CaseLesions>,
        sampling: Sampling,
        negatives: Negatives,
        patch: [usize; 3],
    ) -> Self {
        let with_lookalikes = (0..cases.len())
            .filter(|&c| cases[c].lookalikes.iter().any(|l| !l.is_empty()))
            .collect();
        let with_false_positives = (0..cases.len())
            .filter(|&c| !cases[c].false_positives.is_empty())
            .collect();
        let mut all_lesions = Vec::new();
        let mut cumulative_voxels = Vec::new();
        let mut total = 0;
        for (c, case) in cases.iter().enumerate() {
            for (l, vox) in case.lesions.iter().enumerate() {
                all_lesions.push((c, l));
                total += vox.len();
                cumulative_voxels.push(total);
            }
        }
        Self {
            cases,
            sampling,
            negatives,
            with_lookalikes,
            with_false_positives,
            patch,
            all_lesions,
            cumulative_voxels,
        }
    }

    pub fn lesion_count(&self) -> usize {
        self.all_lesions.len()
    }

    /// Draws one patch; `None` only when there are no cases.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> Option<Draw> {
        if self.cases.is_empty() {
            return None;
        }
        let h = self.negatives.lookalike.clamp(0.0, 1.0);
        if !self.with_lookalikes.is_empty() && h > 0.0 && rng.random_bool(h) {
            let c = self.with_lookalikes[rng.random_range(0..self.with_lookalikes.len())];
            let l = &self.cases[c].lookalikes;
            let class = match (l[0].is_empty(), l[1].is_empty()) {
                (false, false) => usize::from(rng.random_bool(0.5)),
                (false, true) => 0,
                _ => 1,
            };
            let v = l[class][rng.random_range(0..l[class].len())];
            let mut d = self.around(c, v);
            d.lookalike = Some(class);
            return Some(d);
        }
        let f = self.negatives.false_positive.clamp(0.0, 1.0);
        // No draw is consumed when the mode is off, so that runs without it
        // see exactly the batches they always did.
        if !self.with_false_positives.is_empty() && f > 0.0 && rng.random_bool(f) {
            let c = self.with_false_positives[rng.random_range(0..self.with_false_positives.len())];
            let l = &self.cases[c].false_positives;
            let mut d = self.around(c, l[rng.random_range(0..l.len())]);
            d.false_positive = true;
            return Some(d);
        }
        let targeted = match self.sampling {
            Sampling::Uniform => None,
            Sampling::Tumor { p }
                if !self.all_lesions.is_empty() && rng.random_bool(p.clamp(0.0, 1.0)) =>
            {
                Some(self.all_lesions[rng.random_range(0..self.all_lesions.len())])
            }
            Sampling::Foreground { p }
                if !self.all_lesions.is_empty() && rng.random_bool(p.clamp(0.0, 1.0)) =>
            {
                let total = *self.cumulative_voxels.last().unwrap_or(&0);
                let v = rng.random_range(0..total.max(1));
                let i = self.cumulative_voxels.partition_point(|&c| c <= v);
                Some(self.all_lesions[i.min(self.all_lesions.len() - 1)])
            }
            _ => None,
        };
        let (case, centre_lin) = match targeted {
            Some((c, l)) => {
                let vox = &self.cases[c].lesions[l];
                (c, vox[rng.random_range(0..vox.len())])
            }
            None => {
                let c = rng.random_range(0..self.cases.len());
                let n: usize = self.cases[c].size.iter().product();
                (c, rng.random_range(0..n.max(1)))
            }
        };
        let mut d = self.around(case, centre_lin);
        d.lesion = targeted;
        Some(d)
    }

    /// The patch centred on voxel `centre_lin` of `case`.
    fn around(&self, case: usize, centre_lin: usize) -> Draw {
        let s = self.cases[case].size;
        let centre = [
            centre_lin % s[0],
            (centre_lin / s[0]) % s[1],
            centre_lin / (s[0] * s[1]),
        ];
        let corner = [0, 1, 2].map(|a| {
            let half = self.patch[a] / 2;
            let hi = s[a].saturating_sub(self.patch[a]);
            centre[a].saturating_sub(half).min(hi)
        });
        Draw {
            case,
            centre,
            corner,
            lesion: None,
            lookalike: None,
            false_positive: false,
        }
    }
}
