//! One AdamW update of a parameter tensor in a single pass: [`adamw`].
//!
//! # Why
//!
//! burn's `AdamW` composes the update from a dozen whole-tensor ops per parameter (moment
//! updates, bias corrections, `sqrt`, the division, decay, the step), each a memory pass that
//! allocates its result, all on one thread. Here each element's new moments and value are
//! computed together while they are in registers, and large tensors are spread over the team
//! of [`crate::par`].
//!
//! # Same bits as burn's `AdamW`
//!
//! Every element goes through exactly the f32 operations burn 0.21's `AdamW::step` applies to it,
//! in the same order (`mul_scalar`, `add`, `square` as `g·g`, `div_scalar` as a true division,
//! `sqrt`, `add_scalar`, `div`, `sub`), each rounded once, with the scalars rounded to f32 as
//! burn-flex's `scalar_op` rounds them. Rust never contracts `a * b + c` into an FMA, so the
//! result is the same for any vector width and thread count, and equal to burn's (tests compare).

use crate::par::{self, Chunks};
use crate::simd::dispatch;

/// The scalars of one AdamW step, as burn's `AdamW` derives them for step `time` (1-based).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// The learning rate (rounded to f32 where it multiplies, as burn-flex rounds scalars).
    pub lr: f64,
    /// The decay factor `1 − lr·weight_decay` (in f64; rounded to f32 where it multiplies), or
    /// `None` when `lr·weight_decay` is 0 (burn then skips the decay).
    pub decay: Option<f64>,
    /// `1 − β₁^time` and `1 − β₂^time` (f32, `powi`).
    pub correction_1: f32,
    pub correction_2: f32,
    /// The first step: the moments start from the gradient alone (their old values are ignored).
    pub first: bool,
}

impl AdamWStep {
    /// The scalars for step `time` (≥ 1) with learning rate `lr` and decoupled weight decay
    /// `weight_decay`, exactly as burn 0.21's `AdamW` computes them.
    pub fn new(
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
        lr: f64,
        time: usize,
    ) -> Self {
        let decay_rate = lr * weight_decay as f64;
        let t = time as i32;
        AdamWStep {
            beta_1,
            beta_2,
            epsilon,
            lr,
            decay: (decay_rate != 0.0).then_some(1.0 - decay_rate),
            correction_1: 1f32 - beta_1.powi(t),
            correction_2: 1f32 - beta_2.powi(t),
            first: time <= 1,
        }
    }
}

/// Below this many elements the update runs on the calling thread.
const PAR_MIN: usize = 32 * 1024;
/// Elements per task.
const TASK: usize = 16 * 1024;

/// Update `param`, and the moments `m` and `v`, in place with gradient `grad` (all the same
/// length). On the first step `m` and `v` are only written.
pub fn adamw(s: &AdamWStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adamw: param {n}, grad {}, m {}, v {} elements: all must be equal",
        grad.len(),
        m.len(),
        v.len()
    );
    if n < PAR_MIN {
        dispatch(
            #[inline(always)]
            || update(s, param, grad, m, v),
        );
        return;
    }
    let (p, mc, vc) = (
        Chunks::new(param, TASK),
        Chunks::new(m, TASK),
        Chunks::new(v, TASK),
    );
    par::for_each(p.count(), |i| {
        // SAFETY: task i takes chunk i of each slice only.
        let (p, m, v) = unsafe { (p.get(i), mc.get(i), vc.get(i)) };
        let g = &grad[i * TASK..i * TASK + p.len()];
        dispatch(
            #[inline(always)]
            || update(s, p, g, m, v),
        )
    });
}

#[inline(always)]
fn update(s: &AdamWStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    let (f1, f2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    let (lr, decay) = (s.lr as f32, s.decay.map(|d| d as f32));
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
        let (mn, vn) = if s.first {
            (g * f1, (g * g) * f2)
        } else {
            (*m * s.beta_1 + g * f1, *v * s.beta_2 + (g * g) * f2)
        };
        *m = mn;
        *v = vn;
        let delta = (mn / s.correction_1) / ((vn / s.correction_2).sqrt() + s.epsilon);
        let decayed = match decay {
            Some(d) => *p * d,
            None => *p,
        };
        *p = decayed - delta * lr;
    }
}
