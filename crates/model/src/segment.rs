//! The segmentation pipeline of `delineate segment` and of validation
//! during training (the same code: validation is deployment), from an
//! image on its own grid to probabilities, lesions and an instance mask on
//! that same grid, following the model's [`Contract`]:
//!
//! 1. the image onto the model grid: exact reorientation, resampling to the
//!    model's spacing, the contract's normalisation
//!    ([`crate::contract::Preprocessing`], as in training);
//! 2. a crop to the head (the contract's crop): air costs nothing;
//! 3. sliding windows of the training patch with Gaussian weighting,
//!    optionally with mirror test-time augmentation ([`crate::infer`]); a
//!    window that fails is an error for the case;
//! 4. **lesions on the model grid**, where the network predicted: the
//!    26-connected components above the contract's extent threshold and
//!    minimum size; a lesion's confidence is its maximum probability there
//!    (a lesion one model voxel thick keeps its peak, whatever the input
//!    grid);
//! 5. the lesion labels back onto the input grid with the exact label
//!    resampler (no lesion vanishes, none is diluted); the probability map
//!    onto the input grid (trilinear), for viewing;
//! 6. with an intracranial stage in the model file ([`crate::intracranial`])
//!    and unless switched off, candidates lying mostly outside the cranial
//!    cavity are dropped (whole; a lesion on the mask's edge is kept whole);
//!    an implausible mask is not applied and the case carries a warning;
//! 7. candidates are numbered by decreasing confidence; those at or above
//!    the operating threshold are delivered.

use std::time::Instant;

use delineate_imaging::measure::{equivalent_diameter_mm, voxel_volume_mm3};
use delineate_imaging::{
    label_components, resample_labels, resample_linear, Connectivity, Geometry, Volume,
};

use crate::classifier::LesionClassifier;
use crate::contract::{Contract, Crop};
use crate::data::head_threshold;
use crate::infer::{predict_sliding, window_count, SlidingOptions, TilePredictor};
use crate::intracranial::{clean_mask, inside, CaseMask, IntracranialReport};
use crate::modelfile::ModelInfo;
use crate::Error;

/// Choices of one segmentation run (everything else is the contract's).
#[derive(Clone, Debug, Default)]
pub struct SegmentOptions {
    /// Deliver lesions with at least this confidence; `None`: the model's
    /// operating threshold.
    pub operating_threshold: Option<f32>,
    /// Mirror test-time augmentation (8 flips).
    pub mirror: bool,
    /// Do not run the model's intracranial stage (`--no-intracranial-mask`).
    pub no_intracranial_mask: bool,
    /// Do not run the model's lesion classifier (`--no-classifier`): the
    /// network's lesions ranked by its probability.
    pub no_classifier: bool,
}

/// A network that runs around the lesion network, with its model file's
/// description (its own contract).
#[derive(Clone, Copy)]
pub struct Stage<'a> {
    pub predictor: &'a dyn TilePredictor,
    pub info: &'a ModelInfo,
}

/// The stages a model file carries (each optional).
#[derive(Clone, Copy, Default)]
pub struct Stages<'a> {
    pub intracranial: Option<Stage<'a>>,
    /// The second-stage lesion classifier ([`crate::second_stage`]).
    pub classifier: Option<&'a LesionClassifier>,
}

/// What the intracranial stage did, with its mask on the input grid.
pub struct IntracranialOutcome {
    pub report: IntracranialReport,
    pub mask: Volume<u8>,
}

/// One lesion, as the result's manifest lists it.
pub use delineate_dicom::manifest::Lesion;

/// Lesions with their instance mask (label n = lesions[n − 1]).
#[derive(Clone)]
pub struct Lesions {
    pub labels: Volume<u32>,
    pub list: Vec<Lesion>,
}

impl Lesions {
    /// The lesions with confidence ≥ `threshold` (their numbers unchanged:
    /// the list is sorted by confidence).
    pub fn at_least(&self, threshold: f32) -> Lesions {
        let keep = self
            .list
            .iter()
            .take_while(|l| l.confidence >= threshold)
            .count() as u32;
        Lesions {
            labels: self.labels.map(|&l| if l <= keep { l } else { 0 }),
            list: self.list[..keep as usize].to_vec(),
        }
    }
}

/// Output of [`segment`], on the input grid.
pub struct Segmentation {
    pub probability: Volume<f32>,
    /// Every candidate lesion, whatever its confidence.
    pub candidates: Lesions,
    /// The delivered lesions (confidence ≥ `threshold`).
    pub delivered: Lesions,
    /// The operating threshold applied.
    pub threshold: f32,
    /// Seconds per stage, in order.
    pub timings: Vec<(&'static str, f64)>,
    /// Windows run by the network.
    pub windows: usize,
    /// Things the user should know (an unusual field of view, ...).
    pub warnings: Vec<String>,
    /// The intracranial stage's work, when it ran.
    pub intracranial: Option<IntracranialOutcome>,
}

/// Checks that `image` can be segmented by this model; warnings for
/// fields of view that do not look like a head.
pub fn check_input(image: &Volume<f32>, info: &ModelInfo) -> Result<Vec<String>, Error> {
    let g = image.geometry();
    if g.size.iter().filter(|&&n| n > 1).count() < 3 {
        return Err(Error::Input(format!(
            "the image is {}×{}×{} voxels: a 3-D volume is needed (a single slice or a line cannot be segmented)",
            g.size[0], g.size[1], g.size[2]
        )));
    }
    let mut warnings = Vec::new();
    let ext = g.extent();
    let (lo, hi) = (
        ext.iter().cloned().fold(f64::INFINITY, f64::min),
        ext.iter().cloned().fold(0f64, f64::max),
    );
    if lo < 80.0 || hi > 400.0 {
        warnings.push(format!(
            "the field of view is {:.0}×{:.0}×{:.0} mm: it does not look like a whole brain (the model was trained on heads of 150–250 mm); check the result",
            ext[0], ext[1], ext[2]
        ));
    }
    let spacing = info.contract.preprocessing.spacing;
    let finest = spacing.iter().cloned().fold(f64::INFINITY, f64::min);
    let coarsest = g.spacing.iter().cloned().fold(0f64, f64::max);
    if coarsest > 4.0 * finest {
        warnings.push(format!(
            "voxels of {:.2}×{:.2}×{:.2} mm are much coarser than the model's {:.2}×{:.2}×{:.2} mm: small lesions may be missed",
            g.spacing[0], g.spacing[1], g.spacing[2], spacing[0], spacing[1], spacing[2]
        ));
    }
    Ok(warnings)
}

/// Head box of a volume: voxels above 10 % of the 99th percentile.
fn head_box(image: &Volume<f32>) -> Option<([usize; 3], [usize; 3])> {
    let v = image.as_slice();
    let cut = head_threshold(v);
    let [nx, ny, nz] = image.geometry().size;
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for z in 0..nz {
        for y in 0..ny {
            let row = &v[nx * (y + ny * z)..nx * (y + ny * z + 1)];
            let first = row.iter().position(|&x| x > cut);
            let last = row.iter().rposition(|&x| x > cut);
            if let (Some(f), Some(l)) = (first, last) {
                lo = [lo[0].min(f), lo[1].min(y), lo[2].min(z)];
                hi = [hi[0].max(l), hi[1].max(y), hi[2].max(z)];
            }
        }
    }
    (lo[0] != usize::MAX).then_some((lo, hi))
}

/// Runs the pipeline. `progress` gets (windows done, windows in total).
pub fn segment(
    model: &dyn TilePredictor,
    info: &ModelInfo,
    image: &Volume<f32>,
    opts: &SegmentOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Segmentation, Error> {
    segment_staged(model, info, Stages::default(), image, opts, progress)
}

/// A network's probability on its model grid (zero outside the head
/// crop), as its contract says: preprocessing, crop, sliding windows.
pub struct ModelGridProbability {
    pub probability: Volume<f32>,
    /// The network's input on the whole model grid (the contract's
    /// normalisation) and the head there (above the head threshold).
    pub normalised: Volume<f32>,
    pub head: Volume<u8>,
    pub windows: usize,
    pub preprocess_s: f64,
    pub network_s: f64,
}

/// Steps 1–3 of the pipeline for one network.
pub fn probability_on_model_grid(
    model: &dyn TilePredictor,
    info: &ModelInfo,
    image: &Volume<f32>,
    mirror: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ModelGridProbability, Error> {
    let c: &Contract = &info.contract;
    let mult = info.network.size_multiple().max(1);
    if c.patch.iter().any(|&t| t == 0 || t % mult != 0) {
        return Err(Error::Input(format!(
            "the model's window {:?} is not a multiple of {mult} for this {}",
            c.patch,
            info.network.name()
        )));
    }
    let t = Instant::now();
    let pre = &c.preprocessing;
    let resampled = pre.resample(image)?;
    let model_grid = resampled.geometry().clone();
    let s = model_grid.size;
    let (lo, hi) = match c.crop {
        Crop::HeadBox { margin } => {
            let (lo, hi) = head_box(&resampled).unwrap_or(([0; 3], s.map(|n| n - 1)));
            (
                [0, 1, 2].map(|a| lo[a].saturating_sub(margin)),
                [0, 1, 2].map(|a| (hi[a] + 1 + margin).min(s[a])),
            )
        }
        Crop::None => ([0; 3], s),
    };
    // Normalise the whole volume (as in training), then crop.
    let normalised = pre.normalise(&resampled);
    let cut = head_threshold(resampled.as_slice());
    let head = resampled.map(|&v| u8::from(v > cut));
    drop(resampled);
    let cropped = normalised.crop(lo, hi)?;
    let preprocess_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let sliding = SlidingOptions {
        tile: c.patch,
        overlap: c.overlap,
        mirror,
    };
    let windows = window_count(cropped.geometry().size, &sliding);
    let prob_crop = predict_sliding(model, &cropped, &sliding, progress)?;
    let network_s = t.elapsed().as_secs_f64();

    let mut prob_model = Volume::filled(model_grid, 0f32);
    {
        let cs = prob_crop.geometry().size;
        let src = prob_crop.as_slice();
        let dst = prob_model.as_mut_slice();
        for z in 0..cs[2] {
            for y in 0..cs[1] {
                let d = lo[0] + s[0] * (lo[1] + y + s[1] * (lo[2] + z));
                let o = cs[0] * (y + cs[1] * z);
                dst[d..d + cs[0]].copy_from_slice(&src[o..o + cs[0]]);
            }
        }
    }
    Ok(ModelGridProbability {
        probability: prob_model,
        normalised,
        head,
        windows,
        preprocess_s,
        network_s,
    })
}

/// The intracranial stage on `image`: its cleaned mask on the lesion
/// network's `model_grid` and on the image's grid, with its plausibility.
pub fn intracranial_mask(
    stage: Stage,
    image: &Volume<f32>,
    model_grid: &Geometry,
) -> Result<CaseMask, Error> {
    let m = probability_on_model_grid(stage.predictor, stage.info, image, false, &mut |_, _| {})
        .map_err(|e| Error::Input(format!("the intracranial stage: {e}")))?;
    CaseMask::new(&clean_mask(&m.probability), model_grid, image.geometry())
}

/// [`segment`] with the stages of the model file.
pub fn segment_staged(
    model: &dyn TilePredictor,
    info: &ModelInfo,
    stages: Stages,
    image: &Volume<f32>,
    opts: &SegmentOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Segmentation, Error> {
    let mut warnings = check_input(image, info)?;
    let c: &Contract = &info.contract;
    let classifier = stages.classifier.filter(|_| !opts.no_classifier);
    let threshold = opts.operating_threshold.unwrap_or(match classifier {
        Some(k) => k.operating_threshold,
        None => c.operating_threshold,
    });
    let input_grid = image.geometry().clone();
    let p = probability_on_model_grid(model, info, image, opts.mirror, progress)?;
    let mut timings = vec![("preprocess", p.preprocess_s), ("network", p.network_s)];
    let prob_model = p.probability;
    let model_grid = prob_model.geometry().clone();

    let mask = match stages.intracranial {
        Some(stage) if !opts.no_intracranial_mask => {
            let t = Instant::now();
            let mask = intracranial_mask(stage, image, &model_grid)?;
            if let Some(w) = &mask.warning {
                warnings.push(format!(
                    "{w}: the mask was not applied, candidates outside the skull were not removed"
                ));
            }
            timings.push(("intracranial", t.elapsed().as_secs_f64()));
            Some(mask)
        }
        _ => None,
    };
    let cavity = mask.as_ref().and_then(|m| m.model_grid.as_ref());
    let extent = c.lesions.extent_threshold;
    let parts = match classifier {
        Some(k) => {
            let t = Instant::now();
            let within = cavity.unwrap_or(&p.head);
            let parts = crate::second_stage::classified_lesions(
                k,
                &p.normalised,
                &prob_model,
                within,
                cavity,
                extent,
                c.operating_threshold,
            );
            timings.push(("classifier", t.elapsed().as_secs_f64()));
            parts
        }
        None => network_lesions(&prob_model, extent, cavity),
    };
    drop(p.normalised);
    drop(p.head);

    let t = Instant::now();
    let (candidates, removed) =
        parts.into_lesions(&prob_model, c.lesions.min_diameter_mm, &input_grid)?;
    let intracranial = mask.map(|m| IntracranialOutcome {
        report: IntracranialReport {
            applied: m.model_grid.is_some(),
            volume_ml: m.volume_ml,
            removed_candidates: removed.len(),
            removed_delivered: removed.iter().filter(|&&p| p >= threshold).count(),
            warning: m.warning.clone(),
        },
        mask: m.input_grid,
    });
    let probability = if model_grid.same_grid(&input_grid, 1e-6) {
        let mut p = prob_model;
        p.set_geometry(input_grid.clone())?;
        p
    } else {
        resample_linear(&prob_model, &input_grid, 0.0)?
    };
    let delivered = candidates.at_least(threshold);
    timings.push(("postprocess", t.elapsed().as_secs_f64()));
    Ok(Segmentation {
        probability,
        candidates,
        delivered,
        threshold,
        timings,
        windows: p.windows,
        warnings,
        intracranial,
    })
}

/// Lesions of a probability map on the model grid: 26-connected
/// components above `extent` with an equivalent diameter of at least
/// `min_diameter_mm`, numbered by decreasing maximum probability (then
/// size), their labels carried onto `input` (exact label resampling) and
/// measured there.
pub fn lesions_on_model_grid(
    probability: &Volume<f32>,
    extent: f32,
    min_diameter_mm: f64,
    input: &Geometry,
) -> Result<Lesions, Error> {
    Ok(lesions_on_model_grid_within(probability, extent, min_diameter_mm, input, None)?.0)
}

/// [`lesions_on_model_grid`] keeping only the components that lie mostly
/// inside `mask` (on the model grid; [`crate::intracranial::MIN_INSIDE`]),
/// whole; also returns the confidences of those dropped.
pub fn lesions_on_model_grid_within(
    probability: &Volume<f32>,
    extent: f32,
    min_diameter_mm: f64,
    input: &Geometry,
    mask: Option<&Volume<u8>>,
) -> Result<(Lesions, Vec<f32>), Error> {
    network_lesions(probability, extent, mask).into_lesions(probability, min_diameter_mm, input)
}

/// The network's lesions on the model grid: the 26-connected components
/// of `probability` above `extent`, each with its maximum probability as
/// confidence, and whether it lies inside `mask`.
pub fn network_lesions(
    probability: &Volume<f32>,
    extent: f32,
    mask: Option<&Volume<u8>>,
) -> ModelGridLesions {
    let cc = label_components(probability, Connectivity::TwentySix, |&p| p > extent, false);
    let n = cc.stats.len();
    let within = match mask {
        Some(m) => inside(&cc.labels, n, m),
        None => vec![true; n + 1],
    };
    let mut max = vec![0f32; n + 1];
    for (&l, &p) in cc.labels.as_slice().iter().zip(probability.as_slice()) {
        if l > 0 {
            max[l as usize] = max[l as usize].max(p);
        }
    }
    ModelGridLesions {
        labels: cc.labels,
        count: n,
        confidence: max,
        within,
    }
}

/// Lesions on the model grid before they are ranked and carried onto the
/// input grid: labels 1..=count, each with its confidence and whether it
/// lies inside the cranial cavity (index 0 unused).
pub struct ModelGridLesions {
    pub labels: Volume<u32>,
    pub count: usize,
    pub confidence: Vec<f32>,
    pub within: Vec<bool>,
}

impl ModelGridLesions {
    /// Keeps those of at least `min_diameter_mm` that lie within the
    /// cavity, numbers them by decreasing confidence (then size), carries
    /// their labels onto `input` (exact label resampling) and measures
    /// them there; also returns the confidences of those dropped as
    /// outside.
    pub fn into_lesions(
        self,
        probability: &Volume<f32>,
        min_diameter_mm: f64,
        input: &Geometry,
    ) -> Result<(Lesions, Vec<f32>), Error> {
        let g = probability.geometry();
        let n = self.count;
        let (mut max, mut sum, mut voxels) =
            (vec![0f32; n + 1], vec![0f64; n + 1], vec![0usize; n + 1]);
        for (&l, &p) in self.labels.as_slice().iter().zip(probability.as_slice()) {
            if l > 0 {
                let l = l as usize;
                max[l] = max[l].max(p);
                sum[l] += p as f64;
                voxels[l] += 1;
            }
        }
        let voxel = voxel_volume_mm3(g);
        let sized: Vec<usize> = (1..=n)
            .filter(|&c| {
                voxels[c] > 0 && equivalent_diameter_mm(voxels[c] as f64 * voxel) >= min_diameter_mm
            })
            .collect();
        let confidence = &self.confidence;
        let removed: Vec<f32> = sized
            .iter()
            .filter(|&&c| !self.within[c])
            .map(|&c| confidence[c])
            .collect();
        let mut order: Vec<usize> = sized.into_iter().filter(|&c| self.within[c]).collect();
        order.sort_by(|&a, &b| {
            confidence[b]
                .total_cmp(&confidence[a])
                .then(voxels[b].cmp(&voxels[a]))
                .then(a.cmp(&b))
        });
        let mut rank = vec![0u32; n + 1];
        for (r, &c) in order.iter().enumerate() {
            rank[c] = r as u32 + 1;
        }
        let model_labels = self.labels.map(|&l| rank[l as usize]);
        let labels = if g.same_grid(input, 1e-6) {
            let mut l = model_labels;
            l.set_geometry(input.clone())?;
            l
        } else {
            resample_labels(&model_labels, input)?
        };
        // Measures on the input grid.
        let k = order.len();
        let (mut count, mut centre) = (vec![0usize; k + 1], vec![[0f64; 3]; k + 1]);
        let [nx, ny, _] = input.size;
        for (i, &l) in labels.as_slice().iter().enumerate() {
            if l > 0 {
                let l = l as usize;
                count[l] += 1;
                let ijk = [i % nx, (i / nx) % ny, i / (nx * ny)];
                for a in 0..3 {
                    centre[l][a] += ijk[a] as f64;
                }
            }
        }
        let vin = voxel_volume_mm3(input);
        let list = order
            .iter()
            .enumerate()
            .map(|(r, &c)| {
                let id = r + 1;
                let vox = count[id];
                let mean_idx = centre[id].map(|v| v / vox.max(1) as f64);
                let volume = vox as f64 * vin;
                Lesion {
                    id: id as u32,
                    voxels: vox,
                    volume_mm3: volume,
                    equivalent_diameter_mm: equivalent_diameter_mm(volume),
                    centroid_lps_mm: input.index_to_world(mean_idx),
                    confidence: confidence[c],
                    max_probability: max[c],
                    mean_probability: (sum[c] / voxels[c].max(1) as f64) as f32,
                }
            })
            .collect();
        Ok((Lesions { labels, list }, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lesions_are_numbered_by_confidence_and_measured() {
        let g = Geometry::new(
            [10, 10, 10],
            [1.0, 1.0, 2.0],
            [5.0, 0.0, 0.0],
            Geometry::IDENTITY,
        )
        .unwrap();
        let mut p = Volume::filled(g.clone(), 0f32);
        let d = p.as_mut_slice();
        // A big, less confident lesion (8 voxels) and a small, sure one.
        for (x, y, z) in [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)] {
            d[x + 10 * (y + 10 * z)] = 0.7;
            d[x + 10 * (y + 10 * (z + 1))] = 0.6;
        }
        d[7 + 10 * (7 + 10 * 7)] = 0.95;
        d[5 + 10 * (5 + 10 * 5)] = 0.4; // below the extent threshold
        let l = lesions_on_model_grid(&p, 0.5, 0.0, &g).unwrap();
        assert_eq!(l.list.len(), 2);
        // A minimum size drops the single voxel (1 voxel of 2 mm³: 1.56 mm).
        let only = lesions_on_model_grid(&p, 0.5, 2.0, &g).unwrap();
        assert_eq!(only.list.len(), 1);
        assert_eq!(only.list[0].voxels, 8);
        assert_eq!(only.labels.as_slice()[7 + 10 * (7 + 10 * 7)], 0);
        assert_eq!(only.labels.as_slice()[1 + 10 * (1 + 10)], 1);
        let lesions = &l.list;
        assert_eq!(lesions[0].voxels, 1);
        assert_eq!(lesions[0].max_probability, 0.95);
        assert_eq!(lesions[0].centroid_lps_mm, [12.0, 7.0, 14.0]);
        assert_eq!(lesions[1].voxels, 8);
        assert!((lesions[1].volume_mm3 - 16.0).abs() < 1e-9);
        assert!((lesions[1].mean_probability - 0.65).abs() < 1e-6);
        assert_eq!(lesions[1].centroid_lps_mm, [6.5, 1.5, 3.0]);
        assert_eq!(l.labels.as_slice()[7 + 10 * (7 + 10 * 7)], 1);
        assert_eq!(l.labels.as_slice()[1 + 10 * (1 + 10)], 2);
        assert_eq!(l.labels.as_slice().iter().filter(|&&v| v > 0).count(), 9);
        // Delivery keeps the most confident ones, numbers unchanged.
        let d = l.at_least(0.9);
        assert_eq!(d.list.len(), 1);
        assert_eq!(d.labels.as_slice().iter().filter(|&&v| v > 0).count(), 1);
    }
}
