//! The four losses of [`crate::losses`] on the engine's logits, with their
//! gradients: the same definitions (BCE, iwBCE, Dice, iwDice over the
//! whole batch), sums in f64.

use rayon::prelude::*;

use crate::losses::DICE_EPS;
use crate::train::LossKind;

/// Softplus(x) = log(1 + eˣ), stable for large |x|.
fn softplus(x: f32) -> f64 {
    let x = x as f64;
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Loss of `logits` against `target` with voxel `weights` (all of the
/// batch, same order), and its gradient with respect to each logit,
/// written into `grad`.
pub fn loss_and_grad(
    kind: LossKind,
    logits: &[f32],
    target: &[f32],
    weights: &[f32],
    grad: &mut [f32],
) -> f32 {
    let n = logits.len();
    debug_assert!(target.len() == n && weights.len() == n && grad.len() == n);
    const CH: usize = 1 << 14;
    match kind {
        LossKind::Bce | LossKind::IwBce | LossKind::SwBce => {
            // BCE per voxel = softplus(x) − t·x; weights 1 for plain BCE.
            let weighted = kind != LossKind::Bce;
            let total: f64 = if weighted {
                weights.par_iter().map(|&w| w as f64).sum()
            } else {
                n as f64
            };
            let inv = (1.0 / total.max(f64::MIN_POSITIVE)) as f32;
            let sum: f64 = grad
                .par_chunks_mut(CH)
                .enumerate()
                .map(|(c, g)| {
                    let mut s = 0f64;
                    for (i, gi) in g.iter_mut().enumerate() {
                        let j = c * CH + i;
                        let (x, t) = (logits[j], target[j]);
                        let w = if weighted { weights[j] } else { 1.0 };
                        s += w as f64 * (softplus(x) - (t * x) as f64);
                        *gi = w * (sigmoid(x) - t) * inv;
                    }
                    s
                })
                .sum();
            (sum / total.max(f64::MIN_POSITIVE)) as f32
        }
        LossKind::Dice | LossKind::IwDice => {
            let weighted = kind == LossKind::IwDice;
            let w_at = |j: usize| if weighted { weights[j] } else { 1.0 };
            let (inter, denom) = (0..n)
                .into_par_iter()
                .map(|j| {
                    let (p, t, w) = (sigmoid(logits[j]) as f64, target[j] as f64, w_at(j) as f64);
                    (w * p * t, w * p * p + w * t * t)
                })
                .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            let (num, den) = (2.0 * inter + DICE_EPS, denom + DICE_EPS);
            grad.par_chunks_mut(CH).enumerate().for_each(|(c, g)| {
                for (i, gi) in g.iter_mut().enumerate() {
                    let j = c * CH + i;
                    let (p, t, w) = (sigmoid(logits[j]) as f64, target[j] as f64, w_at(j) as f64);
                    // L = 1 − num/den; ∂num/∂p = 2wt, ∂den/∂p = 2wp.
                    let dl_dp = -(2.0 * w * t * den - num * 2.0 * w * p) / (den * den);
                    *gi = (dl_dp * p * (1.0 - p)) as f32;
                }
            });
            (1.0 - num / den) as f32
        }
    }
}
