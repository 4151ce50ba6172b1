//! The second stage: a lesion classifier that sorts the candidates
//! ([`crate::candidates`]) into lesions and look-alikes (false-positive
//! reduction as in LUNA16 and Dikici et al., IEEE TMI 2020), from their
//! measurements ([`crate::lesion_features`]).
//!
//! The classifier is gradient-boosted trees (forust-ml, binary log-loss),
//! fitted on the candidates of training cases found with the lesion
//! network it will run behind: its features include that network's
//! probability, so a classifier belongs to one network (the SHA-256 of its
//! weights is recorded and checked when it is attached). Each lesion
//! counts once in the fit whatever its size: its candidates share one
//! lesion's weight ([`LESION_WEIGHT`]).
//!
//! It is stored in the model file as a stage of kind `lesion-classifier`
//! (JSON: this struct), and the operating threshold on its score is chosen
//! on validation cases, never on the fit's.

use std::collections::HashMap;
use std::path::Path;

use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};

use crate::candidates::{CandidateOptions, CandidateSet};
use crate::lesion_features::{FEATURES, FEATURE_NAMES};
use crate::Error;

/// The confidence of a network lesion on the classifier's scale: its
/// maximum probability `p`, mapped piecewise linearly so that the
/// network's own operating threshold `network` lands on the classifier's
/// `classifier` (monotone; 0 → 0, 1 → 1). A lesion the network delivers
/// alone is therefore still delivered, whatever the classifier scores it:
/// the classifier adds and ranks, it does not veto. (Fitted on metastases
/// alone, it scored meningiomas low: set A's meningioma recall fell from
/// 0.82 to 0.27 when it could veto.)
pub fn network_confidence(p: f32, network: f32, classifier: f32) -> f32 {
    let (n, c) = (network.clamp(1e-6, 1.0 - 1e-6), classifier.clamp(0.0, 1.0));
    if p >= n {
        c + (p - n) / (1.0 - n) * (1.0 - c)
    } else {
        p / n * c
    }
}

/// Format of the stage's JSON.
pub const CLASSIFIER_FORMAT: u32 = 1;

/// The weight of one lesion in the fit, in look-alikes (each look-alike
/// weighs 1). Balancing the classes outright (a lesion weighing thousands
/// of look-alikes) let single lesions carve their own leaves and the
/// trees learn them by heart; the ranking, which is all the threshold
/// needs, does not need balanced classes.
pub const LESION_WEIGHT: f64 = 20.0;

/// How the classifier is fitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Boosting rounds (trees).
    pub trees: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    pub seed: u64,
    /// The operating threshold is the lowest score that keeps the
    /// validation cases at or under this many false positives per case.
    pub target_fp_per_case: f64,
    /// Whether the classifier's score alone ranks the network's lesions
    /// too, so that it may drop one the network would deliver (`false`:
    /// a network lesion keeps at least the network's own confidence,
    /// [`network_confidence`]). Files before 2026-12-07 have no veto.
    #[serde(default)]
    pub veto: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            trees: 300,
            learning_rate: 0.05,
            max_depth: 5,
            seed: 7,
            target_fp_per_case: 1.0,
            veto: false,
        }
    }
}

/// A fitted lesion classifier with what it needs to run.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LesionClassifier {
    pub format: u32,
    /// The features, by name, in order ([`FEATURE_NAMES`] when fitted).
    pub features: Vec<String>,
    /// How its candidates are found.
    pub candidates: CandidateOptions,
    /// SHA-256 of the lesion network's weights it was fitted behind.
    pub lesion_network_sha256: String,
    /// Deliver lesions whose score is at least this.
    pub operating_threshold: f32,
    pub config: ClassifierConfig,
    /// What it was fitted and validated on.
    pub summary: FitSummary,
    booster: GradientBooster,
}

/// What a classifier was fitted and validated on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitSummary {
    pub fit_cases: usize,
    pub fit_candidates: usize,
    pub fit_lesions: usize,
    pub validation_cases: usize,
    /// Lesions found and false positives per case on the validation cases
    /// at the operating threshold.
    pub validation_recall: f64,
    pub validation_fp_per_case: f64,
}

/// Rows of a candidate set: features (row-major), label (reaches a
/// lesion), case index and lesion label (0: none).
struct Rows {
    x: Vec<f64>,
    y: Vec<f64>,
    case: Vec<usize>,
    lesion: Vec<u32>,
}

fn rows(set: &CandidateSet) -> Rows {
    let mut r = Rows {
        x: Vec::new(),
        y: Vec::new(),
        case: Vec::new(),
        lesion: Vec::new(),
    };
    for (ci, c) in set.cases.iter().enumerate() {
        for cand in c.result.candidates.iter().filter(|k| !k.near_lesion) {
            r.x.extend(cand.features.iter().map(|&v| v as f64));
            r.y.push(f64::from(u8::from(cand.lesion.is_some())));
            r.case.push(ci);
            r.lesion.push(cand.lesion.unwrap_or(0));
        }
    }
    r
}

/// Column-major copy of row-major features (forust's layout).
fn column_major(x: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..n {
        for f in 0..FEATURES {
            out[f * n + i] = x[i * FEATURES + f];
        }
    }
    out
}

fn check_features(set: &CandidateSet, path: &Path) -> Result<(), Error> {
    for c in &set.cases {
        if let Some(bad) = c
            .result
            .candidates
            .iter()
            .find(|k| k.features.len() != FEATURES)
        {
            return Err(Error::Input(format!(
                "{}: case {}: a candidate has {} features, this version measures {FEATURES} (rerun `delineate candidates`)",
                path.display(),
                c.case,
                bad.features.len()
            )));
        }
    }
    Ok(())
}

/// Lesions found and false positives at `threshold`, lesion-wise: a lesion
/// is found when a candidate reaching it scores at least `threshold`.
fn found_and_fp(scores: &[f32], r: &Rows, threshold: f32) -> (usize, usize) {
    let mut found = std::collections::HashSet::new();
    let mut fp = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s >= threshold {
            if r.lesion[i] > 0 {
                found.insert((r.case[i], r.lesion[i]));
            } else {
                fp += 1;
            }
        }
    }
    (found.len(), fp)
}

fn lesion_count(set: &CandidateSet) -> usize {
    set.cases.iter().map(|c| c.result.reach.len()).sum()
}

impl LesionClassifier {
    /// Fits a classifier on `fit` and chooses its operating threshold on
    /// `validation` (both found with the same lesion network and options).
    pub fn fit(
        fit: &CandidateSet,
        fit_path: &Path,
        validation: &CandidateSet,
        validation_path: &Path,
        config: &ClassifierConfig,
    ) -> Result<Self, Error> {
        check_features(fit, fit_path)?;
        check_features(validation, validation_path)?;
        let (a, b) = (
            serde_json::to_value(&fit.options).ok(),
            serde_json::to_value(&validation.options).ok(),
        );
        if a != b {
            return Err(Error::Input(format!(
                "{} and {}: candidates found with different options ({:?} against {:?})",
                fit_path.display(),
                validation_path.display(),
                fit.options,
                validation.options
            )));
        }
        if fit.lesion_network_sha256 != validation.lesion_network_sha256 {
            return Err(Error::Input(format!(
                "{} and {}: found with different lesion networks",
                fit_path.display(),
                validation_path.display()
            )));
        }
        let r = rows(fit);
        let n = r.y.len();
        let lesions: usize = r.y.iter().filter(|&&y| y > 0.0).count();
        if lesions == 0 || lesions == n {
            return Err(Error::Input(format!(
                "{}: {n} candidates of which {lesions} on lesions: a classifier needs both",
                fit_path.display()
            )));
        }
        // Each lesion weighs the same whatever its size (its candidates
        // share its weight), as much as LESION_WEIGHT look-alikes.
        let mut per_lesion: HashMap<(usize, u32), usize> = HashMap::new();
        for i in 0..n {
            if r.lesion[i] > 0 {
                *per_lesion.entry((r.case[i], r.lesion[i])).or_default() += 1;
            }
        }
        let each = LESION_WEIGHT;
        let weights: Vec<f64> = (0..n)
            .map(|i| match r.lesion[i] {
                0 => 1.0,
                l => each / per_lesion[&(r.case[i], l)] as f64,
            })
            .collect();
        let cols = column_major(&r.x, n);
        let matrix = Matrix::new(&cols, n, FEATURES);
        let mut booster = GradientBooster::default()
            .set_iterations(config.trees)
            .set_learning_rate(config.learning_rate)
            .set_max_depth(config.max_depth)
            .set_seed(config.seed)
            .set_parallel(true);
        booster
            .fit(&matrix, &r.y, &weights, None)
            .map_err(|e| Error::Input(format!("fitting the lesion classifier: {e}")))?;
        let mut c = LesionClassifier {
            format: CLASSIFIER_FORMAT,
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            candidates: fit.options.clone(),
            lesion_network_sha256: fit.lesion_network_sha256.clone(),
            operating_threshold: 0.5,
            config: config.clone(),
            summary: FitSummary {
                fit_cases: fit.cases.len(),
                fit_candidates: n,
                fit_lesions: per_lesion.len(),
                validation_cases: validation.cases.len(),
                validation_recall: 0.0,
                validation_fp_per_case: 0.0,
            },
            booster,
        };
        // The operating threshold: the lowest score at which the validation
        // cases stay within the false-positive budget.
        let v = rows(validation);
        let vs = c.score_rows(&v.x);
        let budget = (config.target_fp_per_case * validation.cases.len() as f64).floor() as usize;
        let mut sorted = vs.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        sorted.dedup();
        let mut threshold = sorted.first().copied().unwrap_or(1.0);
        for &t in &sorted {
            if found_and_fp(&vs, &v, t).1 > budget {
                break;
            }
            threshold = t;
        }
        let (found, fp) = found_and_fp(&vs, &v, threshold);
        c.operating_threshold = threshold;
        c.summary.validation_recall = found as f64 / lesion_count(validation).max(1) as f64;
        c.summary.validation_fp_per_case = fp as f64 / validation.cases.len().max(1) as f64;
        Ok(c)
    }

    fn score_rows(&self, x: &[f64]) -> Vec<f32> {
        let n = x.len() / FEATURES;
        if n == 0 {
            return Vec::new();
        }
        let cols = column_major(x, n);
        self.booster
            .predict(&Matrix::new(&cols, n, FEATURES), true)
            .into_iter()
            .map(|z| (1.0 / (1.0 + (-z).exp())) as f32)
            .collect()
    }

    /// Scores (probability of a lesion) of candidates' feature vectors.
    pub fn score(&self, features: &[Vec<f32>]) -> Vec<f32> {
        let x: Vec<f64> = features
            .iter()
            .flat_map(|f| f.iter().map(|&v| v as f64))
            .collect();
        self.score_rows(&x)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Input(format!("lesion classifier: {e}")))
    }

    /// Reads a classifier stage; `path` names where it came from.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let c: LesionClassifier = serde_json::from_slice(bytes).map_err(|e| {
            Error::Input(format!(
                "{}: the lesion-classifier stage is unreadable: {e}",
                path.display()
            ))
        })?;
        if c.format != CLASSIFIER_FORMAT {
            return Err(Error::Input(format!(
                "{}: lesion-classifier format {} (this version reads {CLASSIFIER_FORMAT})",
                path.display(),
                c.format
            )));
        }
        if c.features != FEATURE_NAMES {
            return Err(Error::Input(format!(
                "{}: the lesion classifier uses features {:?}; this version measures {:?}",
                path.display(),
                c.features,
                FEATURE_NAMES
            )));
        }
        Ok(c)
    }
}
