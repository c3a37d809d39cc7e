//! Walks over a model's parameters: global gradient norm and clipping, and named tensors for
//! histograms.
//!
//! burn 0.21's built-in clipping works per parameter tensor; users expect PyTorch's
//! `clip_grad_norm_`, which scales every gradient by one factor computed from the norm of all of
//! them together. That needs a walk over the module, done here with a `ModuleVisitor`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

struct SumSquares<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.total += g.square().sum().into_scalar().elem::<f64>();
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm of all gradients together.
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SumSquares { grads, total: 0.0 };
    model.visit(&mut v);
    v.total.sqrt()
}

/// Scale all gradients by `max_norm / norm` when `norm > max_norm` (PyTorch adds 1e-6 to the
/// norm). Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = grad_norm::<B, M>(model, grads);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        let mut v = ScaleGrads {
            grads,
            factor: max_norm / (norm + 1e-6),
        };
        model.visit(&mut v);
    }
    norm
}

/// Collects `(path, values)` of every float parameter, and its gradient when `grads` is given.
struct Collect<'a> {
    path: Vec<String>,
    grads: Option<&'a GradientsParams>,
    out: Vec<(String, Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.join(".");
        let values = match self.grads {
            Some(g) => match g.get::<B::InnerBackend, D>(param.id) {
                Some(t) => t.into_data(),
                None => return,
            },
            None => param.val().into_data(),
        };
        if let Ok(v) = values.convert::<f32>().into_vec::<f32>() {
            self.out.push((name, v));
        }
    }
}

/// Every float parameter's dotted path and values (or its gradient's values).
pub fn named_values<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: Option<&GradientsParams>,
) -> Vec<(String, Vec<f32>)> {
    let mut v = Collect {
        path: Vec::new(),
        grads,
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Counts the float parameters holding a NaN or infinity.
struct NonFinite {
    path: Vec<String>,
    found: Vec<String>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for NonFinite {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // x·0 is 0 for every finite x and NaN for ±inf and NaN, so the sum is NaN exactly when
        // some element is not finite (one reduction, no comparison kernels needed).
        let probe = param
            .val()
            .mul_scalar(0.0)
            .sum()
            .into_scalar()
            .elem::<f64>();
        if !probe.is_finite() {
            self.found.push(self.path.join("."));
        }
    }
}

/// The dotted paths of the parameters that hold a non-finite value (empty when all are finite).
pub fn nonfinite_params<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Vec<String> {
    let mut v = NonFinite {
        path: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut v);
    v.found
}
