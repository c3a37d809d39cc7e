//! AdamW whose per-parameter update is one backend op ([`FusedOps::fused_adamw`]).
//!
//! # Why
//!
//! burn 0.21's `AdamW` updates each parameter with about a dozen whole-tensor ops (moments, bias
//! corrections, `sqrt`, the division, decay, the step), every one a pass over memory that
//! allocates its result, and on Flex every one on the calling thread. This optimizer computes
//! the same update with the same f32 operations per element, so it gives the same bits as
//! burn's `AdamW` (tests compare them step by step), in one pass per parameter on Flex, spread
//! over the kernels' threads for large tensors.
//!
//! # Drop-in
//!
//! [`AdamWConfig`] has the builder of burn's `AdamWConfig` that training uses (`new`,
//! `with_beta_1`, `with_beta_2`, `with_epsilon`, `with_weight_decay`, `init`), and the
//! optimizer's state is burn's own [`AdamWState`], so optimizer records (checkpoints) are the
//! same as with burn's `AdamW`. Not supported: AMSGrad, cautious weight decay and per-parameter
//! gradient clipping (training clips by the global norm itself).

use super::{float, tensor, FusedOps};
use crate::fused::AdamWStep;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// AdamW's settings, with burn's defaults (β₁ 0.9, β₂ 0.999, ε 1e-5, weight decay 1e-4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl AdamWConfig {
    /// burn's defaults.
    pub fn new() -> Self {
        AdamWConfig {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: 1e-4,
        }
    }

    pub fn with_beta_1(self, beta_1: f32) -> Self {
        AdamWConfig { beta_1, ..self }
    }

    pub fn with_beta_2(self, beta_2: f32) -> Self {
        AdamWConfig { beta_2, ..self }
    }

    pub fn with_epsilon(self, epsilon: f32) -> Self {
        AdamWConfig { epsilon, ..self }
    }

    pub fn with_weight_decay(self, weight_decay: f32) -> Self {
        AdamWConfig {
            weight_decay,
            ..self
        }
    }

    /// The bare optimizer (as burn's `AdamWConfig::build`).
    pub fn build(&self) -> AdamW {
        AdamW { config: *self }
    }

    /// The optimizer for module `M` on backend `B` (as burn's `AdamWConfig::init`).
    pub fn init<B, M>(&self) -> OptimizerAdaptor<AdamW, M, B>
    where
        B: AutodiffBackend<InnerBackend: FusedOps>,
        M: AutodiffModule<B>,
    {
        OptimizerAdaptor::from(self.build())
    }
}

/// The optimizer: see the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    config: AdamWConfig,
}

impl<B: FusedOps> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let c = &self.config;
        let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
        let step = AdamWStep::new(c.beta_1, c.beta_2, c.epsilon, c.weight_decay, lr, time);
        let moments = state.map(|s| (float(s.momentum.moment_1), float(s.momentum.moment_2)));
        let (param, m, v) = B::fused_adamw(float(param), float(grad), moments, &step);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: tensor(m),
            moment_2: tensor(v),
            max_moment_2: None,
        };
        (tensor(param), Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
