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
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::lesion_features::{max_near, FeatureMaps};

/// How candidates are found.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The smallest blob response of a candidate (z-score units). On the 80
/// training cases of the small-lesion study it keeps 1.00 / 0.99 / 1.00 /
/// 0.99 of lesions < 3 / 3–5 / 5–10 / ≥ 10 mm (those it misses the
/// network's components reach) with about 1 750 blobs per case; 0.25 kept
/// every one with about 6 800 (docs/model-card.md, the second stage).
pub const MIN_BLOB_RESPONSE: f32 = 0.6;
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub ijk: [usize; 3],
    /// LoG response and scale, when a blob.
    pub blob_response: Option<f32>,
    pub sigma_mm: Option<f64>,
    /// The network's maximum probability within 2 voxels.
    pub network_max: f32,
    /// Whether the network's low-threshold components proposed it.
    pub from_network: bool,
    /// What the classifier sees ([`crate::lesion_features::FEATURE_NAMES`]).
    pub features: Vec<f32>,
    /// The truth lesion it reaches (in it or touching it), when known.
    pub lesion: Option<u32>,
    /// Reaches no lesion but lies within [`NEAR_VOXELS`] of one (the rim
    /// of a lesion, its oedema): neither a lesion nor a look-alike, left
    /// out of the classifier's fit and of the false positives.
    #[serde(default)]
    pub near_lesion: bool,
}

/// How close (voxels, a cube) a candidate that reaches no lesion may lie
/// to one and still count as near it.
pub const NEAR_VOXELS: usize = 3;

/// Candidates of one case: `normalised` is the network's input on the
/// model grid, `probability` its output there (if run), `within` where
/// blobs may be (intracranial mask or head), `seeds` places that are
/// candidates whatever (the peaks of the network's lesions:
/// [`component_peaks`]).
pub fn find_candidates(
    normalised: &Volume<f32>,
    probability: Option<&Volume<f32>>,
    within: Option<&Volume<u8>>,
    opts: &CandidateOptions,
    seeds: &[[usize; 3]],
) -> Vec<Candidate> {
    let g = normalised.geometry();
    let near_max = |ijk: [usize; 3]| probability.map_or(0.0, |p| max_near(p, ijk, 2));
    let mut out: Vec<Candidate> = Vec::new();
    let peaks = probability.map_or_else(Vec::new, |p| component_peaks(p, opts.network_threshold));
    for ijk in peaks.into_iter().chain(seeds.iter().copied()) {
        if !out.iter().any(|c| c.ijk == ijk) {
            out.push(Candidate {
                ijk,
                blob_response: None,
                sigma_mm: None,
                network_max: near_max(ijk),
                from_network: true,
                features: Vec::new(),
                lesion: None,
                near_lesion: false,
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
            features: Vec::new(),
            lesion: None,
            near_lesion: false,
        });
    }
    let maps = FeatureMaps::new(normalised, probability, within);
    out.par_iter_mut()
        .for_each(|c| c.features = maps.features(c.ijk, c.from_network).to_vec());
    out
}

/// The most probable voxel of each component of `probability` above
/// `extent` (the network's lesions of the segmentation pipeline).
pub fn component_peaks(probability: &Volume<f32>, extent: f32) -> Vec<[usize; 3]> {
    let s = probability.geometry().size;
    let cc = label_components(probability, Connectivity::TwentySix, |&p| p > extent, false);
    let mut peaks = vec![(f32::MIN, 0usize); cc.stats.len() + 1];
    for (i, (&l, &p)) in cc
        .labels
        .as_slice()
        .iter()
        .zip(probability.as_slice())
        .enumerate()
    {
        if l > 0 && p > peaks[l as usize].0 {
            peaks[l as usize] = (p, i);
        }
    }
    peaks[1..]
        .iter()
        .map(|&(_, i)| [i % s[0], (i / s[0]) % s[1], i / (s[0] * s[1])])
        .collect()
}

/// Whether the candidates reach each truth lesion (instance labels on the
/// model grid): a candidate inside the lesion or touching it (26
/// neighbours).
#[derive(Clone, Debug, Serialize, Deserialize)]
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

pub fn reach(candidates: &mut [Candidate], truth: &Volume<u32>) -> Vec<LesionReach> {
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
    for c in candidates.iter_mut() {
        for k in c.ijk[2].saturating_sub(1)..(c.ijk[2] + 2).min(s[2]) {
            for j in c.ijk[1].saturating_sub(1)..(c.ijk[1] + 2).min(s[1]) {
                for i in c.ijk[0].saturating_sub(1)..(c.ijk[0] + 2).min(s[0]) {
                    let l = truth.as_slice()[i + s[0] * (j + s[1] * k)] as usize;
                    if l > 0 {
                        c.lesion.get_or_insert(l as u32);
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
    for c in candidates.iter_mut().filter(|c| c.lesion.is_none()) {
        let r = NEAR_VOXELS;
        c.near_lesion = (c.ijk[2].saturating_sub(r)..(c.ijk[2] + r + 1).min(s[2])).any(|k| {
            (c.ijk[1].saturating_sub(r)..(c.ijk[1] + r + 1).min(s[1])).any(|j| {
                (c.ijk[0].saturating_sub(r)..(c.ijk[0] + r + 1).min(s[0]))
                    .any(|i| truth.as_slice()[i + s[0] * (j + s[1] * k)] > 0)
            })
        });
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    let mask = match intracranial {
        Some(stage) => {
            let cm = crate::segment::intracranial_mask(stage, image, &model_grid)?;
            cm.model_grid.map(|g| (g, cm.volume_ml))
        }
        None => None,
    };
    let within = mask.as_ref().map_or(&p.head, |(m, _)| m);
    let seeds = component_peaks(&p.probability, info.contract.lesions.extent_threshold);
    let mut candidates = find_candidates(
        &p.normalised,
        Some(&p.probability),
        Some(within),
        opts,
        &seeds,
    );
    let truth = pre.prepare_labels(truth)?;
    Ok(CaseCandidates {
        reach: reach(&mut candidates, &truth),
        candidates,
        intracranial_ml: mask.map(|(_, v)| v),
    })
}

/// One case's candidates, by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseEntry {
    pub case: String,
    pub result: CaseCandidates,
}

/// The candidates of a dataset (`delineate candidates` writes it as
/// candidates.json; the lesion classifier is fitted on it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CandidateSet {
    /// The model file they were found with.
    pub model: String,
    /// SHA-256 of its lesion network's weights.
    #[serde(default)]
    pub lesion_network_sha256: String,
    pub options: CandidateOptions,
    pub cases: Vec<CaseEntry>,
}

impl CandidateSet {
    pub fn read(path: &std::path::Path) -> Result<Self, crate::Error> {
        let bytes = std::fs::read(path).map_err(delineate_imaging::IoFailure::on(
            "read the candidate set",
            path,
        ))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            crate::Error::Input(format!(
                "{}: not a candidate set (delineate candidates): {e}",
                path.display()
            ))
        })
    }

    /// Reads several sets and joins them into one (each case named
    /// `FILE'S FOLDER/CASE`); they must come from the same lesion network
    /// with the same options, or the file that differs is named.
    pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Self, crate::Error> {
        let mut out: Option<CandidateSet> = None;
        for path in paths {
            let mut set = Self::read(path)?;
            let tag = path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if paths.len() > 1 {
                for c in &mut set.cases {
                    c.case = format!("{tag}/{}", c.case);
                }
            }
            match &mut out {
                None => out = Some(set),
                Some(all) => {
                    let same_options = serde_json::to_value(&all.options).ok()
                        == serde_json::to_value(&set.options).ok();
                    if all.lesion_network_sha256 != set.lesion_network_sha256 || !same_options {
                        return Err(crate::Error::Input(format!(
                            "{}: found with another lesion network or other options than {}",
                            path.display(),
                            paths[0].display()
                        )));
                    }
                    all.cases.extend(set.cases);
                }
            }
        }
        out.ok_or_else(|| crate::Error::Input("no candidate set given".into()))
    }

    /// Lesions by size with whether the candidates reach them.
    pub fn reach(&self) -> impl Iterator<Item = &LesionReach> {
        self.cases.iter().flat_map(|c| c.result.reach.iter())
    }
}
