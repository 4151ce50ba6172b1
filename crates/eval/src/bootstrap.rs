//! Patient-level bootstrap intervals.
//!
//! The default is the classic percentile bootstrap: 1 000 resamples of the
//! n patients with replacement; the 95 % interval is the 2.5th–97.5th
//! percentile of each number over the resamples. The paper's procedure
//! (100 iterations, each a random 80 % of the patients *without*
//! replacement) is offered under its own name ([`BootstrapOptions::paper`]):
//! its spread is about half a bootstrap's (each draw shares 80 % of the
//! patients with the whole set) and each 2.5 % tail rests on 2–3 draws, so
//! reports call it "the paper's 100 × 80 % subsampling interval", not a
//! 95 % confidence interval. Seeded (ChaCha8): same seed, same intervals.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::curves::{summarize, Bucket, Summary};
use crate::matching::CaseResult;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resampling {
    /// A fraction of the patients without replacement (paper: 0.8).
    Subsample { fraction: f64 },
    /// As many patients as there are, with replacement.
    WithReplacement,
}

/// Which interval procedure (the command line's `--bootstrap`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapKind {
    /// Percentile bootstrap with replacement.
    Classic,
    /// The authors' subsampling without replacement.
    Paper,
    /// No intervals.
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootstrapOptions {
    pub iterations: usize,
    pub resampling: Resampling,
    pub seed: u64,
    /// Two-sided coverage (0.95).
    pub level: f64,
}

impl Default for BootstrapOptions {
    /// The classic percentile bootstrap: 1 000 resamples with replacement.
    fn default() -> Self {
        Self {
            iterations: 1000,
            resampling: Resampling::WithReplacement,
            seed: 0,
            level: 0.95,
        }
    }
}

impl BootstrapOptions {
    /// `kind` with `iterations` resamples (default: 1 000 for classic, 100
    /// for paper), `fraction` of the patients per paper draw, and `seed`.
    pub fn of(kind: BootstrapKind, iterations: Option<usize>, fraction: f64, seed: u64) -> Self {
        let base = match kind {
            BootstrapKind::Paper => BootstrapOptions {
                resampling: Resampling::Subsample { fraction },
                ..BootstrapOptions::paper()
            },
            BootstrapKind::Classic | BootstrapKind::None => BootstrapOptions::default(),
        };
        BootstrapOptions {
            iterations: match kind {
                BootstrapKind::None => 0,
                _ => iterations.unwrap_or(base.iterations),
            },
            seed,
            ..base
        }
    }

    /// The paper's procedure: 100 × 80 % of the patients without
    /// replacement.
    pub fn paper() -> Self {
        Self {
            iterations: 100,
            resampling: Resampling::Subsample { fraction: 0.8 },
            ..Self::default()
        }
    }

    /// What the interval is, for reports.
    pub fn describe(&self) -> String {
        match self.resampling {
            Resampling::WithReplacement => format!(
                "{:.0} % percentile bootstrap ({} resamples of the patients with replacement)",
                self.level * 100.0,
                self.iterations
            ),
            Resampling::Subsample { fraction } => format!(
                "the paper's subsampling interval ({} draws of {:.0} % of the patients without replacement, {:.1}th–{:.1}th percentiles; narrower than a bootstrap, not a {:.0} % confidence interval)",
                self.iterations,
                fraction * 100.0,
                (1.0 - self.level) / 2.0 * 100.0,
                (1.0 + self.level) / 2.0 * 100.0,
                self.level * 100.0
            ),
        }
    }
}

/// A confidence interval; NaN bounds when the number was undefined in
/// every iteration.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Intervals for the numbers of a [`Summary`], in the same order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Intervals {
    pub average_precision: Interval,
    pub recall: Interval,
    pub fp_per_case: Interval,
    pub dice_median: Interval,
    pub recall_at_1fp: Interval,
    pub sensitivity_step: Vec<Interval>,
    pub sensitivity_interpolated: Vec<Interval>,
    /// Per threshold point.
    pub point_recall: Vec<Interval>,
    pub point_precision: Vec<Interval>,
    pub point_fp_per_case: Vec<Interval>,
    pub size_recall: Vec<Interval>,
    pub kind_recall: Vec<Interval>,
}

/// Percentile with linear interpolation between order statistics (numpy's
/// default), ignoring NaN.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().cloned().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let i = pos.floor() as usize;
    let f = pos - i as f64;
    if i + 1 < v.len() {
        v[i] + f * (v[i + 1] - v[i])
    } else {
        v[i]
    }
}

/// The patient indices of each iteration.
pub fn draws(n: usize, opts: &BootstrapOptions) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    (0..opts.iterations)
        .map(|_| match opts.resampling {
            Resampling::Subsample { fraction } => {
                let k = ((n as f64 * fraction).floor() as usize).clamp(1, n.max(1));
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut rng);
                all.truncate(k);
                all.sort_unstable();
                all
            }
            Resampling::WithReplacement => (0..n).map(|_| rng.random_range(0..n.max(1))).collect(),
        })
        .collect()
}

pub fn bootstrap(
    cases: &[CaseResult],
    thresholds: &[f64],
    buckets: &[Bucket],
    kinds: &[String],
    opts: &BootstrapOptions,
) -> Intervals {
    let sets = if cases.is_empty() {
        Vec::new()
    } else {
        draws(cases.len(), opts)
    };
    let reps: Vec<Summary> = sets
        .par_iter()
        .map(|idx| summarize(cases, idx, thresholds, buckets, kinds))
        .collect();
    let a = (1.0 - opts.level) / 2.0;
    let ci = |f: &dyn Fn(&Summary) -> f64| {
        let v: Vec<f64> = reps.iter().map(f).collect();
        Interval {
            lo: percentile(&v, a),
            hi: percentile(&v, 1.0 - a),
        }
    };
    let n_fp = crate::curves::FP_RATES.len();
    Intervals {
        average_precision: ci(&|s| s.average_precision),
        recall: ci(&|s| s.recall),
        fp_per_case: ci(&|s| s.fp_per_case),
        dice_median: ci(&|s| s.dice_median),
        recall_at_1fp: ci(&|s| s.recall_at_1fp),
        sensitivity_step: (0..n_fp).map(|i| ci(&|s| s.sensitivity_step[i])).collect(),
        sensitivity_interpolated: (0..n_fp)
            .map(|i| ci(&|s| s.sensitivity_interpolated[i]))
            .collect(),
        point_recall: (0..thresholds.len())
            .map(|i| ci(&|s| s.points[i].recall))
            .collect(),
        point_precision: (0..thresholds.len())
            .map(|i| ci(&|s| s.points[i].precision.unwrap_or(f64::NAN)))
            .collect(),
        point_fp_per_case: (0..thresholds.len())
            .map(|i| ci(&|s| s.points[i].fp_per_case))
            .collect(),
        size_recall: (0..buckets.len())
            .map(|i| ci(&|s| s.by_size[i].recall))
            .collect(),
        kind_recall: (0..kinds.len())
            .map(|i| ci(&|s| s.by_kind[i].recall))
            .collect(),
    }
}
