//! Lesion candidates for a second stage: every place that might be a
//! lesion, found sensitively, for a classifier to sort (false-positive
//! reduction as in LUNA16 and Dikici et al., IEEE TMI 2020).
//!
//! Two sources on the model grid, merged:
//! - **blobs**: local maxima of the scale-normalised Laplacian of Gaussian
//!   of the normalised image ([`delineate_imaging::blobs`]), inside the
//!   intracranial mask (or the head): small round bright spots whatever the
//!   network thinks of them;
//! - **the network**: the components of its probability above a low
//!   threshold, each at its most probable voxel.
//!
//! Candidates closer than `merge_mm` are one (the first source's position
//! is kept, both sources recorded). Each carries the network's maximum
//! probability within 2 voxels, so that a classifier, or a plain threshold,
//! can rank it.

use delineate_imaging::blobs::{bright_blobs, BLOB_SIGMAS_MM};
use delineate_imaging::measure::{equivalent_diameter_mm, voxel_volume_mm3};
use delineate_imaging::{label_components, Connectivity, Volume};
use serde::Serialize;

/// How candidates are found.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateOptions {
    /// LoG scales (mm).
    pub sigmas_mm: Vec<f64>,
    /// Smallest blob response (normalised intensity units, z-score).
    pub min_response: f32,
    /// Network components above this probability are candidates.
    pub network_threshold: f32,
    /// Candidates closer than this (mm) are one.
    pub merge_mm: f64,
}

/// Response of a sphere 2 mm across, about 1.5 SD brighter than white
/// matter in the z-score over the head, at σ = 0.7 mm (measured on the
/// synthetic cases: docs/model-card.md, the small-lesion study).
pub const MIN_BLOB_RESPONSE: f32 = 0.25;
/// Low enough that a network that gives a small lesion 0.01–0.05 (what
/// BCE networks give lesions under 5 mm) still proposes it.
pub const NETWORK_THRESHOLD: f32 = 0.01;

impl Default for CandidateOptions {
    fn default() -> Self {
        Self {
            sigmas_mm: BLOB_SIGMAS_MM.to_vec(),
            min_response: MIN_BLOB_RESPONSE,
            network_threshold: NETWORK_THRESHOLD,
            merge_mm: 3.0,
        }
    }
}

/// One candidate on the model grid.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub ijk: [usize; 3],
    /// LoG response and scale, when a blob.
    pub blob_response: Option<f32>,
    pub sigma_mm: Option<f64>,
    /// The network's maximum probability within 2 voxels.
    pub network_max: f32,
    /// Whether the network's low-threshold components proposed it.
    pub from_network: bool,
}

/// Candidates of one case: `normalised` is the network's input on the
/// model grid, `probability` its output there (if run), `within` where
/// blobs may be (intracranial mask or head).
pub fn find_candidates(
    normalised: &Volume<f32>,
    probability: Option<&Volume<f32>>,
    within: Option<&Volume<u8>>,
    opts: &CandidateOptions,
) -> Vec<Candidate> {
    let g = normalised.geometry();
    let s = g.size;
    let near_max = |ijk: [usize; 3]| -> f32 {
        let Some(p) = probability else { return 0.0 };
        let mut m = 0f32;
        for k in ijk[2].saturating_sub(2)..(ijk[2] + 3).min(s[2]) {
            for j in ijk[1].saturating_sub(2)..(ijk[1] + 3).min(s[1]) {
                for i in ijk[0].saturating_sub(2)..(ijk[0] + 3).min(s[0]) {
                    m = m.max(p.as_slice()[i + s[0] * (j + s[1] * k)]);
                }
            }
        }
        m
    };
    let mut out: Vec<Candidate> = Vec::new();
    if let Some(p) = probability {
        let cc = label_components(
            p,
            Connectivity::TwentySix,
            |&v| v > opts.network_threshold,
            false,
        );
        let mut peak = vec![(f32::MIN, 0usize); cc.stats.len() + 1];
        for (i, (&l, &v)) in cc.labels.as_slice().iter().zip(p.as_slice()).enumerate() {
            if l > 0 && v > peak[l as usize].0 {
                peak[l as usize] = (v, i);
            }
        }
        for &(_, i) in &peak[1..] {
            let ijk = [i % s[0], (i / s[0]) % s[1], i / (s[0] * s[1])];
            out.push(Candidate {
                ijk,
                blob_response: None,
                sigma_mm: None,
                network_max: near_max(ijk),
                from_network: true,
            });
        }
    }
    let merge2 = opts.merge_mm * opts.merge_mm;
    let dist2 = |a: [usize; 3], b: [usize; 3]| -> f64 {
        (0..3)
            .map(|x| ((a[x] as f64 - b[x] as f64) * g.spacing[x]).powi(2))
            .sum()
    };
    let network_count = out.len();
    for b in bright_blobs(normalised, &opts.sigmas_mm, opts.min_response, within) {
        if let Some(c) = out[..network_count]
            .iter_mut()
            .find(|c| dist2(c.ijk, b.ijk) <= merge2)
        {
            if c.blob_response.is_none() {
                c.blob_response = Some(b.response);
                c.sigma_mm = Some(b.sigma_mm);
            }
            continue;
        }
        if out[network_count..]
            .iter()
            .any(|c| dist2(c.ijk, b.ijk) <= merge2)
        {
            continue; // a stronger blob is already here
        }
        out.push(Candidate {
            ijk: b.ijk,
            blob_response: Some(b.response),
            sigma_mm: Some(b.sigma_mm),
            network_max: near_max(b.ijk),
            from_network: false,
        });
    }
    out
}

/// Whether the candidates reach each truth lesion (instance labels on the
/// model grid): a candidate inside the lesion or touching it (26
/// neighbours).
#[derive(Clone, Debug, Serialize)]
pub struct LesionReach {
    pub label: u32,
    pub diameter_mm: f64,
    pub by_blob: bool,
    pub by_network: bool,
    /// The strongest blob response and network probability among the
    /// candidates that reach it.
    pub blob_response: Option<f32>,
    pub network_max: f32,
}

pub fn reach(candidates: &[Candidate], truth: &Volume<u32>) -> Vec<LesionReach> {
    let g = truth.geometry();
    let s = g.size;
    let voxel = voxel_volume_mm3(g);
    let n = truth.as_slice().iter().copied().max().unwrap_or(0) as usize;
    let mut count = vec![0usize; n + 1];
    for &l in truth.as_slice() {
        count[l as usize] += 1;
    }
    let (mut blob, mut net) = (vec![false; n + 1], vec![false; n + 1]);
    let (mut best_blob, mut best_net) = (vec![None::<f32>; n + 1], vec![0f32; n + 1]);
    for c in candidates {
        for k in c.ijk[2].saturating_sub(1)..(c.ijk[2] + 2).min(s[2]) {
            for j in c.ijk[1].saturating_sub(1)..(c.ijk[1] + 2).min(s[1]) {
                for i in c.ijk[0].saturating_sub(1)..(c.ijk[0] + 2).min(s[0]) {
                    let l = truth.as_slice()[i + s[0] * (j + s[1] * k)] as usize;
                    if l > 0 {
                        blob[l] |= c.blob_response.is_some();
                        net[l] |= c.from_network;
                        if let Some(r) = c.blob_response {
                            best_blob[l] = Some(best_blob[l].map_or(r, |b: f32| b.max(r)));
                        }
                        best_net[l] = best_net[l].max(c.network_max);
                    }
                }
            }
        }
    }
    (1..=n)
        .filter(|&l| count[l] > 0)
        .map(|l| LesionReach {
            label: l as u32,
            diameter_mm: equivalent_diameter_mm(count[l] as f64 * voxel),
            by_blob: blob[l],
            by_network: net[l],
            blob_response: best_blob[l],
            network_max: best_net[l],
        })
        .collect()
}

/// The candidates of one case and how they reach its lesions.
#[derive(Clone, Debug, Serialize)]
pub struct CaseCandidates {
    pub candidates: Vec<Candidate>,
    pub reach: Vec<LesionReach>,
    /// Volume of the intracranial mask the blobs were sought in (ml), when
    /// the model has that stage and its mask was plausible.
    pub intracranial_ml: Option<f64>,
}

/// Candidates of `image` (as acquired) with the lesion network `model`
/// (and its intracranial stage, when given), scored against `truth`
/// (instance labels on the image grid).
pub fn case_candidates(
    model: &dyn crate::infer::TilePredictor,
    info: &crate::modelfile::ModelInfo,
    intracranial: Option<crate::segment::Stage>,
    image: &Volume<f32>,
    truth: &Volume<u32>,
    opts: &CandidateOptions,
) -> Result<CaseCandidates, crate::Error> {
    use crate::segment::probability_on_model_grid;
    let pre = &info.contract.preprocessing;
    let p = probability_on_model_grid(model, info, image, false, &mut |_, _| {})?;
    let model_grid = p.probability.geometry().clone();
    let resampled = pre.resample(image)?;
    let cut = crate::data::head_threshold(resampled.as_slice());
    let head = resampled.map(|&v| u8::from(v > cut));
    let normalised = pre.normalise(&resampled);
    drop(resampled);
    let mask = match intracranial {
        Some(stage) => {
            let m = probability_on_model_grid(
                stage.predictor,
                stage.info,
                image,
                false,
                &mut |_, _| {},
            )?;
            let cm = crate::intracranial::CaseMask::new(
                &crate::intracranial::clean_mask(&m.probability),
                &model_grid,
                image.geometry(),
            )?;
            cm.model_grid.map(|g| (g, cm.volume_ml))
        }
        None => None,
    };
    let within = mask.as_ref().map_or(&head, |(m, _)| m);
    let candidates = find_candidates(&normalised, Some(&p.probability), Some(within), opts);
    let truth = pre.prepare_labels(truth)?;
    Ok(CaseCandidates {
        reach: reach(&candidates, &truth),
        candidates,
        intracranial_ml: mask.map(|(_, v)| v),
    })
}
