//! One training step, shared by `delineate train` and the tests.

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{backend::AutodiffBackend, Tensor};
use serde::{Deserialize, Serialize};

use crate::losses::{bce, dice, weighted_bce, weighted_dice};
use crate::network::Network;

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    Bce,
    #[cfg_attr(feature = "clap", value(name = "iwbce"))]
    IwBce,
    Dice,
    #[cfg_attr(feature = "clap", value(name = "iwdice"))]
    IwDice,
    /// BCE with each lesion's voxels weighted by its size against a fixed
    /// reference lesion ([`crate::losses::size_weights`]): a small lesion
    /// counts as much as a 10 mm one even alone in its patch, where iwBCE's
    /// weights are all 1.
    #[cfg_attr(feature = "clap", value(name = "swbce"))]
    SwBce,
}

impl LossKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bce" => Some(Self::Bce),
            "iwbce" => Some(Self::IwBce),
            "dice" => Some(Self::Dice),
            "iwdice" => Some(Self::IwDice),
            "swbce" => Some(Self::SwBce),
            _ => None,
        }
    }

    /// Whether the loss needs voxel weights.
    pub fn weighted(self) -> bool {
        matches!(self, Self::IwBce | Self::IwDice | Self::SwBce)
    }

    /// The voxel weights of one binary patch (x fastest) for this loss.
    pub fn voxel_weights(self, target: &[u8], size: [usize; 3]) -> Vec<f32> {
        match self {
            Self::IwBce | Self::IwDice => crate::losses::inverse_weights(target, size),
            Self::SwBce => crate::losses::size_weights(target, size),
            Self::Bce | Self::Dice => vec![1.0; target.len()],
        }
    }
}

/// Patches `[batch, 1, x, y, z]`: image, binary target and voxel weights
/// (ones for unweighted losses).
pub struct Batch<B: burn::tensor::backend::Backend> {
    pub image: Tensor<B, 5>,
    pub target: Tensor<B, 5>,
    pub weights: Tensor<B, 5>,
}

pub fn loss<B: burn::tensor::backend::Backend>(
    kind: LossKind,
    logits: Tensor<B, 5>,
    b: &Batch<B>,
) -> Tensor<B, 1> {
    match kind {
        LossKind::Bce => bce(logits, b.target.clone()),
        LossKind::IwBce | LossKind::SwBce => {
            weighted_bce(logits, b.target.clone(), b.weights.clone())
        }
        LossKind::Dice => dice(logits, b.target.clone()),
        LossKind::IwDice => weighted_dice(logits, b.target.clone(), b.weights.clone()),
    }
}

/// Forward, loss, backward and one optimiser step; returns the updated
/// network and the loss value.
pub fn step<B, O>(
    net: Network<B>,
    opt: &mut O,
    kind: LossKind,
    batch: &Batch<B>,
    lr: f64,
) -> (Network<B>, f32)
where
    B: AutodiffBackend,
    O: Optimizer<Network<B>, B>,
    Network<B>: AutodiffModule<B>,
{
    let logits = net.forward(batch.image.clone());
    let l = loss(kind, logits, batch);
    let value = l
        .clone()
        .into_data()
        .to_vec::<f32>()
        .map(|v| v[0])
        .unwrap_or(f32::NAN);
    let grads = GradientsParams::from_grads(l.backward(), &net);
    (opt.step(lr, net, grads), value)
}
