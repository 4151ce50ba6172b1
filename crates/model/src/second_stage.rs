//! The lesion classifier inside the segmentation pipeline: from the
//! network's probability and its input on the model grid to lesions whose
//! confidence is the classifier's.
//!
//! 1. candidates ([`crate::candidates::find_candidates`], with the
//!    classifier's own options) inside the cavity (or the head), plus the
//!    peak of every component of the network's probability above the
//!    contract's extent threshold, each scored by the classifier;
//! 2. a network component's confidence is the best score of the
//!    candidates in it or touching it, and never below the network's own
//!    confidence ([`network_confidence`]: a lesion the network delivers
//!    alone stays delivered; the classifier adds and ranks, it does not
//!    veto); its mask is the network's;
//! 3. a candidate that touches no component and scores at least
//!    [`local_floor`] becomes a lesion of its own with a local mask: the
//!    voxels connected to its peak, within √3·σ + 1 mm of it (σ its blob
//!    scale), brighter than halfway between its peak and the ring around
//!    it.

use delineate_imaging::{label_components, Connectivity, Volume};

use crate::candidates::{component_peaks, find_candidates, Candidate};
use crate::classifier::{network_confidence, LesionClassifier};
use crate::intracranial::inside;
use crate::segment::ModelGridLesions;

/// Candidates without a network component become lesions from this score
/// (half the operating threshold, at most 0.1): lower ones are never
/// delivered and would only lengthen the candidate list.
pub fn local_floor(classifier: &LesionClassifier) -> f32 {
    (classifier.operating_threshold / 2.0).min(0.1)
}

/// Lesions on the model grid with the classifier's confidences.
/// `within`: where candidates may be (the cavity, or the head); `mask`:
/// the cavity for the keep rule, when applied; `network_threshold`: the
/// network's own operating threshold (its contract's).
pub fn classified_lesions(
    classifier: &LesionClassifier,
    normalised: &Volume<f32>,
    probability: &Volume<f32>,
    within: &Volume<u8>,
    mask: Option<&Volume<u8>>,
    extent: f32,
    network_threshold: f32,
) -> ModelGridLesions {
    let s = probability.geometry().size;
    let idx = |p: [usize; 3]| p[0] + s[0] * (p[1] + s[1] * p[2]);
    let cc = label_components(probability, Connectivity::TwentySix, |&p| p > extent, false);
    let n = cc.stats.len();
    let mut labels = cc.labels;
    // Every component's peak is a candidate too.
    let seeds = component_peaks(probability, extent);
    let candidates: Vec<Candidate> = find_candidates(
        normalised,
        Some(probability),
        Some(within),
        &classifier.candidates,
        &seeds,
    );
    let features: Vec<Vec<f32>> = candidates.iter().map(|c| c.features.clone()).collect();
    let scores = classifier.score(&features);
    // A network lesion keeps at least the network's own confidence, on the
    // classifier's scale, unless the classifier may veto.
    // With the veto, the classifier's score alone (of the candidates on
    // the lesion; every component's peak is one).
    let mut confidence = vec![0f32; n + 1];
    if !classifier.config.veto {
        for (&l, &p) in labels.as_slice().iter().zip(probability.as_slice()) {
            if l > 0 {
                let c = network_confidence(p, network_threshold, classifier.operating_threshold);
                confidence[l as usize] = confidence[l as usize].max(c);
            }
        }
    }
    let floor = local_floor(classifier);
    let mut local: Vec<(usize, f32)> = Vec::new();
    for (ci, (c, &score)) in candidates.iter().zip(&scores).enumerate() {
        let mut touched = false;
        for k in c.ijk[2].saturating_sub(1)..(c.ijk[2] + 2).min(s[2]) {
            for j in c.ijk[1].saturating_sub(1)..(c.ijk[1] + 2).min(s[1]) {
                for i in c.ijk[0].saturating_sub(1)..(c.ijk[0] + 2).min(s[0]) {
                    let l = labels.as_slice()[idx([i, j, k])] as usize;
                    if l > 0 {
                        confidence[l] = confidence[l].max(score);
                        touched = true;
                    }
                }
            }
        }
        if !touched && score >= floor {
            local.push((ci, score));
        }
    }
    // Strongest first, so that overlapping local masks go to the better.
    local.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut count = n;
    for (ci, score) in local {
        let c = &candidates[ci];
        if labels.as_slice()[idx(c.ijk)] != 0 {
            continue;
        }
        count += 1;
        let region = local_region(normalised, &labels, c);
        for i in region {
            labels.as_mut_slice()[i] = count as u32;
        }
        confidence.push(score);
    }
    let within = match mask {
        Some(m) => inside(&labels, count, m),
        None => vec![true; count + 1],
    };
    ModelGridLesions {
        labels,
        count,
        confidence,
        within,
    }
}

/// The local mask of a candidate (linear indices on the model grid), never
/// taking a labelled voxel; at least its peak.
fn local_region(normalised: &Volume<f32>, labels: &Volume<u32>, c: &Candidate) -> Vec<usize> {
    let g = normalised.geometry();
    let (s, sp) = (g.size, g.spacing);
    let sigma = c
        .sigma_mm
        .unwrap_or_else(|| c.features.get(7).copied().unwrap_or(1.0) as f64);
    let radius = 3f64.sqrt() * sigma + 1.0;
    let z = normalised.as_slice();
    let idx = |p: [usize; 3]| p[0] + s[0] * (p[1] + s[1] * p[2]);
    let peak = z[idx(c.ijk)];
    let ring = c.features.get(15).copied().unwrap_or(peak);
    let cut = (peak + ring) / 2.0;
    let mut region = vec![idx(c.ijk)];
    let mut seen = std::collections::HashSet::from([idx(c.ijk)]);
    let mut head = 0;
    while head < region.len() {
        let i = region[head];
        head += 1;
        let p = [i % s[0], (i / s[0]) % s[1], i / (s[0] * s[1])];
        for dk in -1i64..=1 {
            for dj in -1i64..=1 {
                for di in -1i64..=1 {
                    let q = [p[0] as i64 + di, p[1] as i64 + dj, p[2] as i64 + dk];
                    if (0..3).any(|a| q[a] < 0 || q[a] >= s[a] as i64) {
                        continue;
                    }
                    let q = q.map(|v| v as usize);
                    let d2: f64 = (0..3)
                        .map(|a| ((q[a] as f64 - c.ijk[a] as f64) * sp[a]).powi(2))
                        .sum();
                    let j = idx(q);
                    if d2 <= radius * radius
                        && z[j] >= cut
                        && labels.as_slice()[j] == 0
                        && seen.insert(j)
                    {
                        region.push(j);
                    }
                }
            }
        }
    }
    region
}
