//! Gradients as one flat f32 vector and back, so a whole step's gradients cross the wire in one
//! all-reduce round (as PyTorch DDP's buckets do) instead of one round per parameter.
//!
//! The order is the model's parameter order (a `ModuleVisitor` walk), the same on every rank.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;

struct Flatten<'a> {
    grads: &'a GradientsParams,
    out: Vec<f32>,
    failed: Option<String>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        match g.into_data().convert::<f32>().into_vec::<f32>() {
            Ok(v) => self.out.extend_from_slice(&v),
            Err(e) => self.failed = Some(format!("{e:?}")),
        }
    }
}

/// Every gradient of `model` in `grads`, concatenated in parameter order.
pub fn flatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> anyhow::Result<Vec<f32>> {
    let mut v = Flatten {
        grads,
        out: Vec::new(),
        failed: None,
    };
    model.visit(&mut v);
    match v.failed {
        Some(e) => anyhow::bail!("reading a gradient for the all-reduce: {e}"),
        None => Ok(v.out),
    }
}

struct Unflatten<'a> {
    grads: &'a mut GradientsParams,
    flat: &'a [f32],
    at: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let shape = g.shape();
        let n = shape.num_elements();
        let values = self.flat[self.at..self.at + n].to_vec();
        self.at += n;
        let t =
            Tensor::<B::InnerBackend, D>::from_data(TensorData::new(values, shape), &g.device());
        self.grads.register(param.id, t);
    }
}

/// Replace every gradient of `model` in `grads` with its slice of `flat` (as [`flatten`] laid
/// them out). `flat` must have exactly [`flatten`]'s length.
pub fn unflatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    flat: &[f32],
) {
    let mut v = Unflatten { grads, flat, at: 0 };
    model.visit(&mut v);
    debug_assert_eq!(v.at, flat.len());
}
