//! Validation during training is deployment: each held-out case, on its
//! own grid as acquired, goes through [`crate::segment::segment`] with the
//! run's contract, and its lesions (every candidate, with its confidence)
//! are scored lesion-wise against the truth ([`delineate_eval::matching`]).
//!
//! - **Score** (model selection): the lesion-wise average precision over
//!   the candidates' confidences: it grows with every lesion found and every
//!   false positive avoided, and is not 0 for an early, weak model (unlike
//!   recall at a fixed precision).
//! - **Operating threshold**: the lowest confidence threshold at which the
//!   validation cases have at most `target_fp_per_case` false positives
//!   per case, i.e. the most lesions found within that budget. Chosen on
//!   these cases only; written into the model file's contract.

use std::collections::HashMap;
use std::path::PathBuf;

use delineate_eval::curves::{summarize, unique_confidences};
use delineate_eval::matching::{match_case, CaseResult, MatchOptions, Prediction};
use delineate_imaging::{write_nifti, NiftiWriteOptions, Volume};

use crate::backend::Cpu;
use crate::contract::Contract;
use crate::infer::CpuPredictor;
use crate::modelfile::{ModelInfo, FORMAT_VERSION};
use crate::network::Network;
use crate::segment::{segment_staged, SegmentOptions, Stage, Stages};
use crate::trainer::Validation;
use crate::Error;

/// Default false-positive budget of the operating threshold (issue 19's
/// bar: at most 0.5 per case).
pub const TARGET_FP_PER_CASE: f64 = 0.5;

/// A held-out case as acquired.
pub struct ValCase {
    pub name: String,
    pub image: Volume<f32>,
    /// Instance-labelled truth on the image grid.
    pub truth: Volume<u32>,
}

#[derive(Clone, Debug)]
pub struct ValidationOptions {
    pub target_fp_per_case: f64,
    /// Where the latest probability maps, lesion masks and truths go
    /// (`DIR/CASE/`), ready for `delineate evaluate`.
    pub save: Option<PathBuf>,
    /// The intracranial stage the model will carry: validation runs it as
    /// `segment` will (`delineate train --intracranial`).
    pub intracranial: Option<std::sync::Arc<StageNet>>,
}

/// A stage's network with its model file's description.
pub struct StageNet {
    pub net: Network<Cpu>,
    pub info: ModelInfo,
}

impl std::fmt::Debug for StageNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StageNet({})", self.info.network.name())
    }
}

impl Default for ValidationOptions {
    fn default() -> Self {
        Self {
            target_fp_per_case: TARGET_FP_PER_CASE,
            save: None,
            intracranial: None,
        }
    }
}

/// The operating threshold: the lowest candidate confidence at which the
/// cases have at most `target` false positives per case (the most recall
/// within the budget); above every candidate (nothing delivered) when even
/// the most confident ones exceed it. Returns (threshold, recall, FP/case).
pub fn choose_threshold(results: &[CaseResult], target: f64) -> (f32, f64, f64) {
    let cases = results.len().max(1) as f64;
    let lesions: usize = results.iter().map(|c| c.truth.len()).sum();
    // Delivery semantics: a lesion is delivered when its confidence is ≥
    // τ (whatever the scoring rules count as a false positive at τ).
    let at = |tau: f64| {
        let hits: usize = results.iter().map(|c| c.hits(tau)).sum();
        let fp: usize = results
            .iter()
            .flat_map(|c| &c.preds)
            .filter(|p| p.matches.is_empty() && p.confidence >= tau)
            .count();
        (hits as f64 / lesions.max(1) as f64, fp as f64 / cases)
    };
    for tau in unique_confidences(results) {
        let (recall, fp) = at(tau);
        if fp <= target {
            return (tau as f32, recall, fp);
        }
    }
    let top = unique_confidences(results).last().copied().unwrap_or(0.5);
    // The next f32 above the most confident candidate.
    let above = f32::from_bits((top as f32).to_bits() + 1).min(1.0);
    let (recall, fp) = at(above as f64);
    (above, recall, fp)
}

/// Runs the deployment pipeline on `cases` with `net` under `contract`.
pub fn validate(
    net: &Network<Cpu>,
    info_network: &crate::network::NetworkConfig,
    contract: &Contract,
    cases: &[ValCase],
    opts: &ValidationOptions,
) -> Result<Validation, Error> {
    let info = ModelInfo {
        format_version: FORMAT_VERSION,
        delineate_version: env!("CARGO_PKG_VERSION").into(),
        network: info_network.clone(),
        contract: contract.clone(),
        training: serde_json::Value::Null,
        weights_bytes: None,
        stages: Vec::new(),
    };
    let predictor = CpuPredictor::new(net)?;
    let stage_predictor = match &opts.intracranial {
        Some(st) => Some(CpuPredictor::new(&st.net)?),
        None => None,
    };
    let stages = Stages {
        intracranial: match (&stage_predictor, &opts.intracranial) {
            (Some(p), Some(st)) => Some(Stage {
                predictor: p,
                info: &st.info,
            }),
            _ => None,
        },
        // A classifier belongs to one network's weights: none while they
        // are being trained.
        classifier: None,
    };
    let seg_opts = SegmentOptions {
        operating_threshold: Some(0.0),
        ..Default::default()
    };
    let mut results = Vec::with_capacity(cases.len());
    for c in cases {
        let s = segment_staged(
            &predictor,
            &info,
            stages,
            &c.image,
            &seg_opts,
            &mut |_, _| {},
        )
        .map_err(|e| Error::Input(format!("validation case {}: {e}", c.name)))?;
        let confidence: Vec<f64> = s
            .candidates
            .list
            .iter()
            .map(|l| l.confidence as f64)
            .collect();
        if let Some(dir) = &opts.save {
            let d = dir.join(&c.name);
            let o = NiftiWriteOptions::default();
            let saved = std::fs::create_dir_all(&d)
                .map_err(|e| delineate_imaging::Error::Io {
                    path: d.clone(),
                    action: "cannot create".into(),
                    source: e,
                })
                .and_then(|_| write_nifti(&d.join("probability.nii.gz"), &s.probability, &o))
                .and_then(|_| write_nifti(&d.join("candidates.nii.gz"), &s.candidates.labels, &o))
                .and_then(|_| write_nifti(&d.join("truth.nii.gz"), &c.truth, &o));
            if let Err(e) = saved {
                tracing::warn!("cannot save the validation maps of {}: {e}", c.name);
            }
        }
        results.push(match_case(
            &c.name,
            &c.truth,
            &Prediction::Lesions {
                labels: s.candidates.labels,
                confidence,
            },
            &HashMap::new(),
            &MatchOptions::default(),
        ));
    }
    let idx: Vec<usize> = (0..results.len()).collect();
    let grid = unique_confidences(&results);
    let summary = summarize(&results, &idx, &grid, &[], &[]);
    let (threshold, recall, fp) = choose_threshold(&results, opts.target_fp_per_case);
    let lesions: usize = results.iter().map(|c| c.truth.len()).sum();
    Ok(Validation {
        score: if summary.average_precision.is_finite() {
            summary.average_precision
        } else {
            0.0
        },
        threshold,
        summary: serde_json::json!({
            "cases": results.len(), "lesions": lesions,
            "average_precision": summary.average_precision,
            "recall_all_candidates": summary.recall,
            "candidates_per_case": summary.fp_per_case,
            "threshold": threshold, "recall_at_threshold": recall,
            "fp_per_case_at_threshold": fp, "target_fp_per_case": opts.target_fp_per_case,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use delineate_eval::matching::{PredLesion, TruthLesion};

    fn truth(id: u32, hit: Option<f64>) -> TruthLesion {
        TruthLesion {
            id,
            label: id,
            kind: None,
            voxels: 10,
            volume_mm3: 10.0,
            diameter_mm: 2.7,
            hit_confidence: hit,
            best_dice: 0.5,
            best_iou: 0.3,
        }
    }

    fn pred(id: u32, confidence: f64, matches: Vec<u32>) -> PredLesion {
        PredLesion {
            id,
            voxels: 10,
            diameter_mm: 2.7,
            confidence,
            matches,
            centre_mm: [0.0; 3],
        }
    }

    #[test]
    fn the_threshold_is_the_lowest_within_the_false_positive_budget() {
        let a = CaseResult {
            case: "a".into(),
            truth: vec![truth(1, Some(0.9)), truth(2, Some(0.4))],
            preds: vec![
                pred(1, 0.9, vec![1]),
                pred(2, 0.4, vec![2]),
                pred(3, 0.3, vec![]),
                pred(4, 0.6, vec![]),
            ],
            rules: Default::default(),
        };
        let b = CaseResult {
            case: "b".into(),
            truth: vec![truth(1, None)],
            preds: vec![pred(1, 0.95, vec![])],
            rules: Default::default(),
        };
        // Two cases, ≤ 0.5 FP/case: at most one false positive in all.
        let (t, recall, fp) = choose_threshold(&[a.clone(), b.clone()], 0.5);
        assert_eq!(t, 0.9);
        assert!((recall - 1.0 / 3.0).abs() < 1e-12 && fp == 0.5);
        // A larger budget goes lower and finds more.
        let (t, recall, _) = choose_threshold(&[a.clone(), b.clone()], 1.0);
        assert_eq!(t, 0.4);
        assert!((recall - 2.0 / 3.0).abs() < 1e-12);
        // No budget at all: above the most confident false positive.
        let (t, recall, fp) = choose_threshold(&[a, b], 0.0);
        assert!(t > 0.95 && recall == 0.0 && fp == 0.0);
    }
}
