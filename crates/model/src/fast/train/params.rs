//! Learnable tensors of the training engine: values in the fast engine's
//! packed layouts, with their gradients and optimiser state, converted
//! exactly to and from burn's tensors (model files and checkpoints are
//! burn's, so either engine writes and reads them).
//!
//! The optimisers repeat burn 0.21's arithmetic element for element, in
//! f32 and in the same order (`burn-optim`'s `adam.rs`, `sgd.rs`,
//! `momentum.rs`), so a step on either engine gives the same weights.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How a tensor is stored here versus burn's row-major shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same order (biases, group-norm γ and β).
    Plain,
    /// burn `[cout, cin, taps…]` → packed `[tap][cin][cout]`.
    Conv {
        cout: usize,
        cin: usize,
        taps: usize,
    },
    /// burn `[cin, cout, taps…]` → packed `[cin][tap][cout]`.
    Transposed {
        cin: usize,
        cout: usize,
        taps: usize,
    },
}

impl Layout {
    /// Packed position of burn's row-major element `i`.
    fn packed(self, i: usize) -> usize {
        match self {
            Layout::Plain => i,
            Layout::Conv { cin, taps, cout } => {
                let (co, ci, t) = (i / (cin * taps), (i / taps) % cin, i % taps);
                (t * cin + ci) * cout + co
            }
            Layout::Transposed { cout, taps, .. } => {
                let (ci, co, t) = (i / (cout * taps), (i / taps) % cout, i % taps);
                (ci * taps + t) * cout + co
            }
        }
    }

    /// burn order → packed order.
    pub fn pack(self, burn: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; burn.len()];
        for (i, &v) in burn.iter().enumerate() {
            out[self.packed(i)] = v;
        }
        out
    }

    /// Packed order → burn order.
    pub fn unpack(self, packed: &[f32]) -> Vec<f32> {
        (0..packed.len()).map(|i| packed[self.packed(i)]).collect()
    }
}

/// The optimiser of a run and its settings (burn's defaults where the
/// trainer does not set them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// burn `AdamConfig::new()`: β₁ 0.9, β₂ 0.999, ε 1e-5, no weight decay.
    Adam {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
    },
    /// burn `SgdConfig` with `MomentumConfig { momentum, dampening, nesterov }`.
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
}

impl OptimizerKind {
    /// burn's `AdamConfig::new()`.
    pub const ADAM: Self = Self::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-5,
    };
    /// The trainer's SGD: Nesterov momentum 0.9, no dampening.
    pub const SGD_NESTEROV: Self = Self::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
}

/// One learnable tensor.
#[derive(Clone, Debug)]
pub struct Learnable {
    pub layout: Layout,
    /// burn's shape of the tensor.
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    /// Adam: first moment; SGD: velocity.
    pub moment1: Vec<f32>,
    /// Adam: second moment (empty for SGD).
    pub moment2: Vec<f32>,
    /// Optimiser steps taken on this tensor (0: no state yet).
    pub time: usize,
}

/// Element-wise loops over tensors larger than this run on all threads.
const PAR_MIN: usize = 1 << 15;

impl Learnable {
    /// From burn's row-major values.
    pub fn new(layout: Layout, shape: Vec<usize>, burn_values: &[f32]) -> Self {
        let n = burn_values.len();
        Self {
            layout,
            shape,
            value: layout.pack(burn_values),
            grad: vec![0.0; n],
            moment1: Vec::new(),
            moment2: Vec::new(),
            time: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Values in burn's order.
    pub fn burn_values(&self) -> Vec<f32> {
        self.layout.unpack(&self.value)
    }

    /// The accumulated gradient in burn's order.
    pub fn burn_grad(&self) -> Vec<f32> {
        self.layout.unpack(&self.grad)
    }

    /// One optimiser step with the gradient in `grad` (which is then
    /// zeroed for the next accumulation).
    pub fn step(&mut self, kind: OptimizerKind, lr: f64) {
        let lr = lr as f32;
        let n = self.len();
        let first = self.time == 0;
        if first {
            self.moment1 = vec![0.0; n];
            if matches!(kind, OptimizerKind::Adam { .. }) {
                self.moment2 = vec![0.0; n];
            }
        }
        self.time += 1;
        let chunk = if n >= PAR_MIN { PAR_MIN / 4 } else { n.max(1) };
        match kind {
            OptimizerKind::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let t = self.time as i32;
                let bc2 = (1.0 - beta2.powi(t)).sqrt();
                let factor = bc2 / (1.0 - beta1.powi(t));
                let (f1, f2) = (1.0 - beta1, 1.0 - beta2);
                let eps = epsilon * bc2;
                self.value
                    .par_chunks_mut(chunk)
                    .zip(self.grad.par_chunks_mut(chunk))
                    .zip(self.moment1.par_chunks_mut(chunk))
                    .zip(self.moment2.par_chunks_mut(chunk))
                    .for_each(|(((w, g), m), v)| {
                        for i in 0..w.len() {
                            let gi = g[i];
                            if first {
                                m[i] = gi * f1;
                                v[i] = (gi * gi) * f2;
                            } else {
                                m[i] = m[i] * beta1 + gi * f1;
                                v[i] = v[i] * beta2 + (gi * gi) * f2;
                            }
                            let u = (m[i] * factor) / (v[i].sqrt() + eps);
                            w[i] -= u * lr;
                            g[i] = 0.0;
                        }
                    });
            }
            OptimizerKind::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                let mu = momentum as f32;
                let keep = (1.0 - dampening) as f32;
                self.value
                    .par_chunks_mut(chunk)
                    .zip(self.grad.par_chunks_mut(chunk))
                    .zip(self.moment1.par_chunks_mut(chunk))
                    .for_each(|((w, g), vel)| {
                        for i in 0..w.len() {
                            let gi = g[i];
                            vel[i] = if first { gi } else { gi * keep + vel[i] * mu };
                            let u = if nesterov { vel[i] * mu + gi } else { vel[i] };
                            w[i] -= u * lr;
                            g[i] = 0.0;
                        }
                    });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::identity_op)]
    fn layouts_round_trip_and_match_the_inference_packing() {
        let burn: Vec<f32> = (0..2 * 3 * 8).map(|v| v as f32).collect();
        for l in [
            Layout::Plain,
            Layout::Conv {
                cout: 2,
                cin: 3,
                taps: 8,
            },
            Layout::Transposed {
                cin: 2,
                cout: 3,
                taps: 8,
            },
        ] {
            assert_eq!(l.unpack(&l.pack(&burn)), burn, "{l:?}");
        }
        // burn conv weight [co=1][ci=2][t=5] → packed [t][ci][co].
        let l = Layout::Conv {
            cout: 2,
            cin: 3,
            taps: 8,
        };
        let i = (1 * 3 + 2) * 8 + 5;
        assert_eq!(l.pack(&burn)[(5 * 3 + 2) * 2 + 1], i as f32);
        // Transposed [ci=1][co=2][t=7] → [ci][t][co].
        let l = Layout::Transposed {
            cin: 2,
            cout: 3,
            taps: 8,
        };
        let i = (1 * 3 + 2) * 8 + 7;
        assert_eq!(l.pack(&burn)[(1 * 8 + 7) * 3 + 2], i as f32);
    }
}
