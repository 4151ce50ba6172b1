//! # delineate-eval
//!
//! Judges detection the way the paper does: lesion by lesion. Matches
//! predicted components to truth lesions ([`matching`]), builds
//! precision–recall and FROC curves with patient-level bootstrap intervals
//! ([`curves`], [`bootstrap`]), writes reports and figures ([`report`],
//! [`plots`]), and computes the clinical study's inter-rater agreement,
//! sign tests and contouring-time tables ([`study`]).

pub mod bootstrap;
pub mod brats;
pub mod cases;
pub mod curves;
pub mod curves_plot;
pub mod layout;
pub mod matching;
pub mod overlay;
pub mod plots;
pub mod report;
pub mod stats;
pub mod study;
pub mod study_report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use bootstrap::{BootstrapKind, BootstrapOptions, Intervals, Resampling};
pub use curves::{Bucket, Summary};
pub use matching::{CaseResult, Criterion, MatchOptions};

/// Errors name the file or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Imaging(#[from] delineate_imaging::Error),
    #[error(transparent)]
    Dicom(#[from] delineate_dicom::Error),
    #[error("{0}")]
    Input(String),
    /// A file or folder could not be read or written.
    #[error(transparent)]
    Io(#[from] delineate_imaging::IoFailure),
}

/// Which confidence thresholds the curves use.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Thresholds {
    /// sigmoid(linspace(0, 5, 51)), as in the authors' code.
    Sigmoid,
    /// Every distinct component confidence (exact curve).
    Unique,
}

/// What is scored in a `delineate segment` output folder.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// The delivered lesions (`mask.nii.gz`) with their confidences
    /// (`lesions.json`): what reaches the planning system.
    #[default]
    Delivered,
    /// `probability.nii.gz`, with components formed at the component
    /// threshold.
    Probability,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalOptions {
    pub matching: MatchOptions,
    #[serde(default)]
    pub score: Score,
    pub thresholds: Thresholds,
    /// Bucket edges by equivalent diameter (mm).
    pub size_edges: Vec<f64>,
    pub bootstrap: BootstrapOptions,
    /// Skip (and report) cases missing on either side instead of failing.
    pub allow_missing: bool,
    /// BraTS 2023 lesion-wise metrics with this challenge's settings.
    #[serde(default)]
    pub brats: Option<brats::Challenge>,
    /// The truth folder's layout (`None`: detected).
    #[serde(default)]
    pub layout: Option<layout::Layout>,
    /// Label values that are lesion (`None`: the layout's default).
    #[serde(default)]
    pub labels: Option<Vec<u32>>,
    /// Which ROIs of structure-set truths are lesions (default: GTVs).
    #[serde(skip)]
    pub rois: delineate_dicom::RoiSelection,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            matching: MatchOptions::default(),
            score: Score::Delivered,
            thresholds: Thresholds::Sigmoid,
            size_edges: vec![5.0, 10.0, 20.0],
            bootstrap: BootstrapOptions::default(),
            allow_missing: false,
            brats: None,
            layout: None,
            labels: None,
            rois: Default::default(),
        }
    }
}

/// One experiment's evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Experiment {
    pub name: String,
    pub predictions: PathBuf,
    pub cases: Vec<CaseResult>,
    pub skipped: Vec<Skipped>,
    pub thresholds: Vec<f64>,
    pub buckets: Vec<Bucket>,
    pub kinds: Vec<String>,
    pub summary: Summary,
    pub intervals: Intervals,
    /// BraTS 2023 lesion-wise results per case, and their means.
    pub brats: Option<(Vec<brats::BratsCase>, brats::BratsSummary)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub case: String,
    pub reason: String,
}

/// Evaluates experiments (name, prediction folder) against one truth
/// folder. Cases run in parallel; each case's truth is read once.
pub fn evaluate(
    experiments: &[(String, PathBuf)],
    truth_dir: &Path,
    opts: &EvalOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<Vec<Experiment>, Error> {
    if !(opts.matching.component_threshold >= 0.0 && opts.matching.component_threshold < 1.0) {
        return Err(Error::Input(
            "--component-threshold must lie in [0, 1)".into(),
        ));
    }
    let truth = cases::discover_truth_in(truth_dir, opts.layout, opts.labels.clone(), &opts.rois)?;
    let preds: Vec<BTreeMap<String, PathBuf>> = experiments
        .iter()
        .map(|(_, d)| cases::discover_predictions(d, opts.score))
        .collect::<Result<_, _>>()?;
    let mut skipped: Vec<Vec<Skipped>> = vec![Vec::new(); experiments.len()];
    let mut problems = Vec::new();
    for (e, p) in preds.iter().enumerate() {
        for c in truth.keys().filter(|c| !p.contains_key(*c)) {
            problems.push(format!(
                "{}: no prediction for truth case {c}",
                experiments[e].0
            ));
            skipped[e].push(Skipped {
                case: c.clone(),
                reason: "no prediction".into(),
            });
        }
        for c in p.keys().filter(|c| !truth.contains_key(*c)) {
            problems.push(format!(
                "{}: no truth for predicted case {c}",
                experiments[e].0
            ));
            skipped[e].push(Skipped {
                case: c.clone(),
                reason: "no truth".into(),
            });
        }
    }
    if !problems.is_empty() && !opts.allow_missing {
        return Err(Error::Input(format!(
            "cases do not match ({} problems; --allow-missing skips them):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    let names: Vec<&String> = truth
        .keys()
        .filter(|c| preds.iter().any(|p| p.contains_key(*c)))
        .collect();
    type Row = Vec<Option<(CaseResult, Option<brats::BratsCase>)>>;
    let per_case: Vec<Row> = names
        .par_iter()
        .map(|name| {
            let src = &truth[*name];
            let t0 = std::time::Instant::now();
            let (labels, kinds) = cases::load_truth(src)?;
            tracing::debug!("{name}: truth read in {:.3} s", t0.elapsed().as_secs_f64());
            let mut row = Vec::new();
            for p in &preds {
                let Some(path) = p.get(*name) else {
                    row.push(None);
                    continue;
                };
                let t0 = std::time::Instant::now();
                let pred = on_truth_axes(cases::load_prediction(path)?, labels.geometry());
                let t1 = std::time::Instant::now();
                let pg = match &pred {
                    matching::Prediction::Probability(v) => v.geometry(),
                    matching::Prediction::Labels(v)
                    | matching::Prediction::Lesions { labels: v, .. } => v.geometry(),
                };
                if !pg.same_grid(labels.geometry(), 1e-3) {
                    return Err(Error::Input(format!(
                        "{}: not on the grid of the truth {} (size {:?} vs {:?}, spacing {:?} vs {:?}); resample the prediction to the truth grid",
                        path.display(),
                        src.path().display(),
                        pg.size,
                        labels.geometry().size,
                        pg.spacing,
                        labels.geometry().spacing
                    )));
                }
                let m = matching::match_case(name, &labels, &pred, &kinds, &opts.matching);
                let b = opts.brats.map(|ch| {
                    let t = labels.map(|&v| v > 0);
                    let thr = opts.matching.component_threshold as f32;
                    let p = match &pred {
                        matching::Prediction::Probability(v) => v.map(|&x| x > thr),
                        matching::Prediction::Labels(v)
                        | matching::Prediction::Lesions { labels: v, .. } => v.map(|&x| x > 0),
                    };
                    brats::brats_case(name, &t, &p, ch)
                });
                row.push(Some((m, b)));
                tracing::debug!(
                    "{name}: prediction read in {:.3} s, matched in {:.3} s",
                    (t1 - t0).as_secs_f64(),
                    t1.elapsed().as_secs_f64()
                );
            }
            tick();
            Ok(row)
        })
        .collect::<Result<_, Error>>()?;
    let mut out = Vec::new();
    for (e, (ename, dir)) in experiments.iter().enumerate() {
        let results: Vec<CaseResult> = per_case
            .iter()
            .filter_map(|row| row[e].as_ref().map(|r| r.0.clone()))
            .collect();
        let mut x =
            summarize_experiment(ename, dir, results, std::mem::take(&mut skipped[e]), opts);
        if let Some(ch) = opts.brats {
            let cases: Vec<brats::BratsCase> = per_case
                .iter()
                .filter_map(|row| row[e].as_ref().and_then(|r| r.1.clone()))
                .collect();
            let summary = brats::summarize(&cases, ch);
            x.brats = Some((cases, summary));
        }
        out.push(x);
    }
    Ok(out)
}

/// Curves, summary and intervals of already matched cases.
pub fn summarize_experiment(
    name: &str,
    dir: &Path,
    results: Vec<CaseResult>,
    skipped: Vec<Skipped>,
    opts: &EvalOptions,
) -> Experiment {
    let thresholds = match opts.thresholds {
        Thresholds::Sigmoid => curves::sigmoid_grid(),
        Thresholds::Unique => {
            let mut u = curves::unique_confidences(&results);
            if u.is_empty() {
                u.push(1.0);
            }
            u
        }
    };
    let buckets = curves::buckets_from_edges(&opts.size_edges);
    let mut kinds: Vec<String> = results
        .iter()
        .flat_map(|c| c.truth.iter().filter_map(|t| t.kind.clone()))
        .collect();
    kinds.sort();
    kinds.dedup();
    let idx: Vec<usize> = (0..results.len()).collect();
    let summary = curves::summarize(&results, &idx, &thresholds, &buckets, &kinds);
    let intervals = bootstrap::bootstrap(&results, &thresholds, &buckets, &kinds, &opts.bootstrap);
    Experiment {
        name: name.to_string(),
        predictions: dir.to_path_buf(),
        cases: results,
        skipped,
        thresholds,
        buckets,
        kinds,
        summary,
        intervals,
        brats: None,
    }
}

/// A prediction on the truth's voxels in another axis order (a DICOM
/// series is stacked along its slice normal, a NIfTI file may run the
/// other way) is brought to the truth's axes exactly; anything else is
/// left for the grid check to refuse.
fn on_truth_axes(
    pred: matching::Prediction,
    truth: &delineate_imaging::Geometry,
) -> matching::Prediction {
    use matching::Prediction;
    let pg = match &pred {
        Prediction::Probability(v) => v.geometry(),
        Prediction::Labels(v) | Prediction::Lesions { labels: v, .. } => v.geometry(),
    };
    if pg.same_grid(truth, 1e-3) {
        return pred;
    }
    let code = truth.orientation_code();
    let re = match &pred {
        Prediction::Probability(v) => v.reorient(&code).map(Prediction::Probability),
        Prediction::Labels(v) => v.reorient(&code).map(Prediction::Labels),
        Prediction::Lesions { labels, confidence } => {
            labels.reorient(&code).map(|labels| Prediction::Lesions {
                labels,
                confidence: confidence.clone(),
            })
        }
    };
    match re {
        Ok(p) => p,
        Err(_) => pred,
    }
}

#[cfg(test)]
mod axis_tests {
    use super::*;
    use delineate_imaging::{Geometry, Volume};

    #[test]
    fn a_prediction_stacked_the_other_way_is_brought_to_the_truth_axes() {
        let g = Geometry::new(
            [4, 3, 5],
            [0.9, 0.9, 1.0],
            [1.0, 2.0, 3.0],
            Geometry::IDENTITY,
        )
        .unwrap();
        let vals: Vec<f32> = (0..60).map(|v| v as f32 / 60.0).collect();
        let truth = Volume::from_vec(g.clone(), vals).unwrap();
        // The same voxels, slices stacked from the other end (LPI).
        let flipped = truth.reorient("LPI").unwrap();
        assert!(!flipped.geometry().same_grid(&g, 1e-3));
        let back = on_truth_axes(matching::Prediction::Probability(flipped), &g);
        let matching::Prediction::Probability(v) = back else {
            panic!("still a probability map")
        };
        assert!(v.geometry().same_grid(&g, 1e-6));
        assert_eq!(v.as_slice(), truth.as_slice());
        // Another grid is left alone (and refused later by the grid check).
        let other = Volume::filled(g.with_spacing([2.0; 3]).unwrap(), 0f32);
        let kept = on_truth_axes(matching::Prediction::Probability(other), &g);
        let matching::Prediction::Probability(v) = kept else {
            panic!()
        };
        assert!(!v.geometry().same_grid(&g, 1e-3));
    }
}
