//! Losses on logits `[batch, 1, x, y, z]` against binary targets of the
//! same shape: BCE, inversely weighted BCE (iwBCE), Dice (Milletari) and
//! inversely weighted Dice.
//!
//! **Inverse weights** ([`inverse_weights`]): in a patch with N⁺ lesion
//! voxels in K lesions (26-connected components), a voxel of lesion k
//! weighs N⁺ / (K · |C_k|) and background voxels weigh 1, following the
//! authors' public implementation. Each lesion then carries the same total
//! weight N⁺ / K, whatever its size. We compute them **per patch** (per
//! batch item), from the target the network is trained on: a lesion cut by
//! the patch border weighs by its visible part, and no per-image state has
//! to follow the patch through augmentation.

use burn::tensor::{activation::log_sigmoid, activation::sigmoid, backend::Backend, Tensor};
use delineate_imaging::{components::label_components, Connectivity, Geometry, Volume};

/// Smoothing of the Dice ratio (avoids 0/0 on empty patches).
pub const DICE_EPS: f64 = 1e-6;

/// Per-voxel BCE with logits, numerically stable:
/// −[t·log σ(x) + (1 − t)·log σ(−x)].
fn bce_map<B: Backend>(logits: Tensor<B, 5>, target: Tensor<B, 5>) -> Tensor<B, 5> {
    let pos = target.clone() * log_sigmoid(logits.clone());
    let neg = (target.neg() + 1.0) * log_sigmoid(logits.neg());
    (pos + neg).neg()
}

/// Mean BCE over all voxels.
pub fn bce<B: Backend>(logits: Tensor<B, 5>, target: Tensor<B, 5>) -> Tensor<B, 1> {
    bce_map(logits, target).mean()
}

/// Weighted BCE: Σ w·BCE / Σ w (iwBCE with [`inverse_weights`]).
pub fn weighted_bce<B: Backend>(
    logits: Tensor<B, 5>,
    target: Tensor<B, 5>,
    weights: Tensor<B, 5>,
) -> Tensor<B, 1> {
    let total = weights.clone().sum();
    (bce_map(logits, target) * weights).sum() / total
}

/// Soft Dice loss of Milletari et al. (V-Net): 1 − 2 Σ w p t / (Σ w p² + Σ w t²),
/// with p = σ(logits), over the whole batch; w = 1 gives plain Dice.
pub fn weighted_dice<B: Backend>(
    logits: Tensor<B, 5>,
    target: Tensor<B, 5>,
    weights: Tensor<B, 5>,
) -> Tensor<B, 1> {
    let p = sigmoid(logits);
    let inter = (p.clone() * target.clone() * weights.clone()).sum();
    let denom = (p.clone() * p * weights.clone()).sum() + (target.clone() * target * weights).sum();
    (inter * 2.0 + DICE_EPS).div(denom + DICE_EPS).neg() + 1.0
}

pub fn dice<B: Backend>(logits: Tensor<B, 5>, target: Tensor<B, 5>) -> Tensor<B, 1> {
    let w = target.ones_like();
    weighted_dice(logits, target, w)
}

/// Per-voxel weights of one binary patch (x fastest) from its lesions:
/// background voxels weigh 1, a voxel of lesion k (26-connected component)
/// weighs `weight(|C_k|, N⁺, K)` with N⁺ lesion voxels in K lesions.
fn component_weights(
    target: &[u8],
    size: [usize; 3],
    weight: impl Fn(usize, usize, usize) -> f64,
) -> Vec<f32> {
    let g = Geometry {
        size,
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: Geometry::IDENTITY,
    };
    let Ok(vol) = Volume::from_vec(g, target.to_vec()) else {
        return vec![1.0; target.len()];
    };
    let cc = label_components(&vol, Connectivity::TwentySix, |&v| v > 0, false);
    let k = cc.stats.len();
    let n_pos: usize = cc.stats.iter().map(|s| s.voxels).sum();
    let per: Vec<f32> = cc
        .stats
        .iter()
        .map(|s| weight(s.voxels, n_pos, k) as f32)
        .collect();
    cc.labels
        .as_slice()
        .iter()
        .map(|&l| if l == 0 { 1.0 } else { per[l as usize - 1] })
        .collect()
}

/// Inverse lesion-volume weights of one binary patch (x fastest).
pub fn inverse_weights(target: &[u8], size: [usize; 3]) -> Vec<f32> {
    component_weights(target, size, |n, n_pos, k| {
        n_pos as f64 / (k as f64 * n as f64)
    })
}

/// Voxels of the reference lesion of [`size_weights`]: a sphere 10 mm
/// across on a 1 mm grid (the size above which the network already finds
/// lesions, docs/model-card.md).
pub const SIZE_WEIGHT_REFERENCE_VOXELS: f64 = 523.6;
/// Largest size weight (a single-voxel lesion would otherwise weigh 524).
pub const SIZE_WEIGHT_MAX: f64 = 50.0;

/// Size weights of one binary patch (x fastest): a voxel of lesion k
/// (26-connected component) weighs clamp(V_ref / |C_k|, 1, max), with
/// V_ref = [`SIZE_WEIGHT_REFERENCE_VOXELS`]; background 1. Unlike the
/// inverse weights, the reference is fixed, so a small lesion alone in its
/// patch is weighted too.
pub fn size_weights(target: &[u8], size: [usize; 3]) -> Vec<f32> {
    component_weights(target, size, |n, _, _| {
        (SIZE_WEIGHT_REFERENCE_VOXELS / n as f64).clamp(1.0, SIZE_WEIGHT_MAX)
    })
}
