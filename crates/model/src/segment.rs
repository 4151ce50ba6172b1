//! The segmentation pipeline of `delineate segment`, from an image on its
//! own grid to probabilities, an instance mask and a lesion list on that
//! same grid:
//!
//! 1. resample to the model's spacing (trilinear, same field of view and
//!    directions) and normalise as the model file says;
//! 2. crop to the head (voxels above 10 % of the 99th percentile, plus a
//!    margin of 8 voxels): air costs nothing;
//! 3. sliding-window inference with Gaussian weighting, optionally with
//!    mirror test-time augmentation ([`crate::infer`]);
//! 4. probabilities back onto the input grid (trilinear);
//! 5. threshold, 26-connected components: the lesions, numbered by
//!    decreasing maximum probability (lesion 1 is the most confident).

use std::time::Instant;

use delineate_imaging::measure::{equivalent_diameter_mm, voxel_volume_mm3};
use delineate_imaging::{label_components, resample_linear, Connectivity, Volume};
use serde::Serialize;

use crate::data::{head_threshold, normalise};
use crate::infer::{predict_sliding, window_count, SlidingOptions, TilePredictor};
use crate::modelfile::ModelInfo;
use crate::Error;

/// Default window overlap (docs/inference.md: measured choice).
pub const DEFAULT_OVERLAP: f64 = 0.25;
/// Default minimum lesion size: removes single voxels at 1 mm (1.24 mm).
pub const DEFAULT_MIN_DIAMETER_MM: f64 = 1.5;

/// Voxels of context kept around the head box.
pub const HEAD_MARGIN: usize = 8;

/// Choices of one segmentation run.
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    /// Voxels with probability above this are lesion.
    pub threshold: f32,
    /// Window size (voxels on the model grid); `None` = the training patch.
    pub tile: Option<[usize; 3]>,
    pub overlap: f64,
    pub mirror: bool,
    /// Components smaller than this equivalent diameter (mm) are dropped
    /// (isolated voxels are not lesions a plan would treat).
    pub min_diameter_mm: f64,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            tile: None,
            overlap: DEFAULT_OVERLAP,
            mirror: false,
            min_diameter_mm: DEFAULT_MIN_DIAMETER_MM,
        }
    }
}

/// One found lesion.
#[derive(Clone, Debug, Serialize)]
pub struct Lesion {
    /// Label in the mask; 1 = highest maximum probability.
    pub id: u32,
    pub voxels: usize,
    pub volume_mm3: f64,
    pub equivalent_diameter_mm: f64,
    /// Centroid in patient coordinates (LPS, mm).
    pub centroid_lps_mm: [f64; 3],
    pub max_probability: f32,
    pub mean_probability: f32,
}

/// Output of [`segment`], all on the input grid.
pub struct Segmentation {
    pub probability: Volume<f32>,
    /// 0 = background, n = lesion n.
    pub labels: Volume<u32>,
    pub lesions: Vec<Lesion>,
    /// Seconds per stage, in order.
    pub timings: Vec<(&'static str, f64)>,
    /// Windows run by the network.
    pub windows: usize,
    /// Things the user should know (an unusual field of view, ...).
    pub warnings: Vec<String>,
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
    let spacing = info.preprocessing.spacing;
    let max_ratio = (0..3)
        .map(|a| g.spacing[a] / spacing[a])
        .fold(0f64, f64::max);
    if max_ratio > 4.0 {
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
    let warnings = check_input(image, info)?;
    let mut timings = Vec::new();
    let t = Instant::now();
    let pre = &info.preprocessing;
    if pre.normalisation != "zscore-brain" {
        return Err(Error::Input(format!(
            "the model asks for normalisation {:?}, which this build does not know",
            pre.normalisation
        )));
    }
    let input_grid = image.geometry().clone();
    let target = input_grid.with_spacing(pre.spacing)?;
    let resampled = resample_linear(image, &target, 0.0)?;
    let mult = info.network.size_multiple().max(1);
    let tile = opts.tile.unwrap_or(info.patch);
    if tile.iter().any(|&t| t == 0 || t % mult != 0) {
        return Err(Error::Input(format!(
            "window {tile:?}: each side must be a positive multiple of {mult} for this {}",
            info.network.name()
        )));
    }
    // Crop to the head, with a margin of context for the border.
    let s = target.size;
    let (lo, hi) = head_box(&resampled).unwrap_or(([0; 3], s.map(|n| n - 1)));
    let lo = [0, 1, 2].map(|a| lo[a].saturating_sub(HEAD_MARGIN));
    let hi = [0, 1, 2].map(|a| (hi[a] + 1 + HEAD_MARGIN).min(s[a]));
    // Normalise on the whole resampled image (as in training), then crop.
    let normalised = normalise(&resampled, None, pre.clip);
    drop(resampled);
    let cropped = normalised.crop(lo, hi)?;
    drop(normalised);
    timings.push(("preprocess", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let sliding = SlidingOptions {
        tile,
        overlap: opts.overlap,
        mirror: opts.mirror,
    };
    let windows = window_count(cropped.geometry().size, &sliding);
    let prob_crop = predict_sliding(model, &cropped, &sliding, progress);
    timings.push(("network", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let mut prob_model = Volume::filled(target.clone(), 0f32);
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
    let probability = if target.same_grid(&input_grid, 1e-6) {
        let mut p = prob_model;
        p.set_geometry(input_grid.clone())?;
        p
    } else {
        resample_linear(&prob_model, &input_grid, 0.0)?
    };
    let (labels, lesions) = lesions_of(&probability, opts.threshold, opts.min_diameter_mm);
    timings.push(("postprocess", t.elapsed().as_secs_f64()));
    Ok(Segmentation {
        probability,
        labels,
        lesions,
        timings,
        windows,
        warnings,
    })
}

/// 26-connected components of `probability > threshold` with an equivalent
/// diameter of at least `min_diameter_mm`, numbered by decreasing maximum
/// probability (then size), with their measures.
pub fn lesions_of(
    probability: &Volume<f32>,
    threshold: f32,
    min_diameter_mm: f64,
) -> (Volume<u32>, Vec<Lesion>) {
    let g = probability.geometry().clone();
    let cc = label_components(
        probability,
        Connectivity::TwentySix,
        |&p| p > threshold,
        false,
    );
    let n = cc.stats.len();
    let (mut max, mut sum) = (vec![0f32; n + 1], vec![0f64; n + 1]);
    for (&l, &p) in cc.labels.as_slice().iter().zip(probability.as_slice()) {
        if l > 0 {
            max[l as usize] = max[l as usize].max(p);
            sum[l as usize] += p as f64;
        }
    }
    let voxel = voxel_volume_mm3(&g);
    let mut order: Vec<usize> = (0..n)
        .filter(|&c| equivalent_diameter_mm(cc.stats[c].voxels as f64 * voxel) >= min_diameter_mm)
        .collect();
    order.sort_by(|&a, &b| {
        max[b + 1]
            .total_cmp(&max[a + 1])
            .then(cc.stats[b].voxels.cmp(&cc.stats[a].voxels))
            .then(a.cmp(&b))
    });
    let mut rank = vec![0u32; n + 1];
    let lesions = order
        .iter()
        .enumerate()
        .map(|(r, &c)| {
            let st = &cc.stats[c];
            rank[c + 1] = r as u32 + 1;
            let v = st.voxels as f64 * voxel;
            Lesion {
                id: r as u32 + 1,
                voxels: st.voxels,
                volume_mm3: v,
                equivalent_diameter_mm: equivalent_diameter_mm(v),
                centroid_lps_mm: g.index_to_world(st.centroid),
                max_probability: max[c + 1],
                mean_probability: (sum[c + 1] / st.voxels.max(1) as f64) as f32,
            }
        })
        .collect();
    let labels = cc.labels.map(|&l| rank[l as usize]);
    (labels, lesions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use delineate_imaging::Geometry;

    #[test]
    fn lesions_are_numbered_by_confidence_and_measured() {
        let g = Geometry::new(
            [10, 10, 10],
            [1.0, 1.0, 2.0],
            [5.0, 0.0, 0.0],
            Geometry::IDENTITY,
        )
        .unwrap();
        let mut p = Volume::filled(g, 0f32);
        let d = p.as_mut_slice();
        // A big, less confident lesion (8 voxels) and a small, sure one.
        for (x, y, z) in [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)] {
            d[x + 10 * (y + 10 * z)] = 0.7;
            d[x + 10 * (y + 10 * (z + 1))] = 0.6;
        }
        d[7 + 10 * (7 + 10 * 7)] = 0.95;
        d[5 + 10 * (5 + 10 * 5)] = 0.4; // below the threshold
        let (labels, lesions) = lesions_of(&p, 0.5, 0.0);
        assert_eq!(lesions.len(), 2);
        // A minimum size drops the single voxel (1 voxel of 2 mm³: 1.56 mm).
        let (big, only) = lesions_of(&p, 0.5, 2.0);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].voxels, 8);
        assert_eq!(big.as_slice()[7 + 10 * (7 + 10 * 7)], 0);
        assert_eq!(big.as_slice()[1 + 10 * (1 + 10)], 1);
        assert_eq!(lesions[0].voxels, 1);
        assert_eq!(lesions[0].max_probability, 0.95);
        assert_eq!(lesions[0].centroid_lps_mm, [12.0, 7.0, 14.0]);
        assert_eq!(lesions[1].voxels, 8);
        assert!((lesions[1].volume_mm3 - 16.0).abs() < 1e-9);
        assert!((lesions[1].mean_probability - 0.65).abs() < 1e-6);
        assert_eq!(lesions[1].centroid_lps_mm, [6.5, 1.5, 3.0]);
        assert_eq!(labels.as_slice()[7 + 10 * (7 + 10 * 7)], 1);
        assert_eq!(labels.as_slice()[1 + 10 * (1 + 10)], 2);
        assert_eq!(labels.as_slice().iter().filter(|&&l| l > 0).count(), 9);
    }
}
