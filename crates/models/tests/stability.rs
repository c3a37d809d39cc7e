//! The stability options' training behaviour: the z-loss gradient against finite differences,
//! and the layer order of the attention-logit diagnostic.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Int, Tensor, TensorData};
use fp8_models::{Model, ModelConfig};

/// f64 throughout, so central differences resolve the gradient to ~1e-9.
type AB = Autodiff<NdArray<f64>>;

/// A trainable f64 parameter (burn creates float tensors in the device's default dtype, f32,
/// unless told otherwise).
fn param_f64<const D: usize>(data: TensorData) -> Param<Tensor<AB, D>> {
    let t = Tensor::from_data(data.convert::<f64>(), (&Default::default(), DType::F64));
    Param::from_tensor(t.require_grad())
}

/// Every parameter widened to f64.
struct ToF64;

impl ModuleMapper<AB> for ToF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        param_f64(param.val().into_data())
    }
}

fn f64_model(cfg: &ModelConfig) -> Model<AB> {
    cfg.init::<AB>(&Default::default()).map(&mut ToF64)
}

fn ids(cfg: &ModelConfig, mul: i64, add: i64) -> Tensor<AB, 2, Int> {
    let (b, t) = (2usize, 6usize);
    let v = cfg.vocab_size as i64;
    let x: Vec<i64> = (0..(b * t) as i64).map(|i| (i * mul + add) % v).collect();
    Tensor::from_data(TensorData::new(x, [b, t]), &Default::default())
}

fn loss_of(model: &Model<AB>, cfg: &ModelConfig) -> f64 {
    model
        .loss(ids(cfg, 7, 3), ids(cfg, 11, 5))
        .into_data()
        .to_vec::<f64>()
        .unwrap()[0]
}

fn head(model: &Model<AB>) -> &Param<Tensor<AB, 2>> {
    &model.lm_head.as_ref().expect("an untied head").weight
}

/// `model` with `lm_head.weight[i] += delta` (the flat index `i`).
fn nudged(model: &Model<AB>, i: usize, delta: f64) -> Model<AB> {
    let w = head(model).val();
    let shape = w.dims();
    let mut v = w.into_data().to_vec::<f64>().unwrap();
    v[i] += delta;
    let mut out = model.clone();
    out.lm_head.as_mut().unwrap().weight = param_f64(TensorData::new(v, shape));
    out
}

/// The gradient of the loss with z-loss, by autodiff, equals central finite differences; and it
/// differs from the gradient without z-loss by far more than the tolerance, so a z-loss term
/// that autodiff cannot see through (the fused op's `log Z` is a constant) would fail here.
///
/// The parameter is the untied `lm_head`, whose gradient reaches it from the logits alone: the
/// test checks the loss's gradient, not the backward of the blocks below it.
#[test]
fn z_loss_gradient_matches_finite_differences() {
    let base = ModelConfig {
        init_std: 0.5, // large logits, so log Z is far from ln V and the z-loss pulls hard
        tie_embeddings: false,
        ..ModelConfig::gpt2(1, 2, 8, 8, 16)
    };
    let with = ModelConfig {
        z_loss: 0.5,
        ..base.clone()
    };
    let grad_of = |cfg: &ModelConfig| {
        let model = f64_model(cfg);
        let loss = model.loss(ids(cfg, 7, 3), ids(cfg, 11, 5));
        let grads = loss.backward();
        let g = head(&model).grad(&grads).unwrap();
        g.into_data().to_vec::<f64>().unwrap()
    };
    let (g_with, g_without) = (grad_of(&with), grad_of(&base));

    let model = f64_model(&with);
    let h = 1e-5;
    let mut largest_effect = 0.0f64;
    for i in (0..g_with.len()).step_by(7) {
        let fd = (loss_of(&nudged(&model, i, h), &with) - loss_of(&nudged(&model, i, -h), &with))
            / (2.0 * h);
        assert!(
            (fd - g_with[i]).abs() < 1e-7 * (1.0 + fd.abs()),
            "lm_head.weight[{i}]: autodiff {}, finite differences {fd}",
            g_with[i]
        );
        largest_effect = largest_effect.max((g_with[i] - g_without[i]).abs());
    }
    assert!(
        largest_effect > 1e-3,
        "the z-loss barely changed the gradient ({largest_effect})"
    );
}

/// Layer order of `max_attn_logit`: in a two-layer model whose first block adds nothing to the
/// residual stream (zero output projections), each layer sees what it would see alone, so entry
/// `i` must equal the single entry of the one-layer model made of block `i` alone (one-block
/// models are checked against a hand-computed reference in `forward.rs`).
#[test]
fn max_attn_logit_is_reported_per_layer_in_order() {
    type B = NdArray;
    let device = Default::default();
    for cfg in [
        ModelConfig::gpt2(2, 2, 16, 8, 32),
        ModelConfig {
            qk_norm: true,
            ..ModelConfig::llama(2, 4, 2, 16, 24, 8, 32)
        },
    ] {
        let mut model: Model<B> = ModelConfig {
            init_std: 0.3,
            ..cfg.clone()
        }
        .init(&device);
        let zero = |l: &mut burn::nn::Linear<B>| {
            l.weight = Param::from_tensor(l.weight.val().zeros_like());
            l.bias = l
                .bias
                .take()
                .map(|b| Param::from_tensor(b.val().zeros_like()));
        };
        zero(&mut model.h[0].attn.proj);
        zero(&mut model.h[0].mlp.proj);
        let tokens = |m: i64| {
            let x: Vec<i64> = (0..16).map(|i| (i * m + 1) % 32).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(x, [2, 8]), &device)
        };
        let (_, diag) = model.loss_with_diagnostics(tokens(5), tokens(3));
        assert_eq!(diag.max_attn_logit.len(), 2);
        for (i, (block, &got)) in model.h.iter().zip(&diag.max_attn_logit).enumerate() {
            let mut alone = model.clone();
            alone.h = vec![block.clone()];
            alone.config.n_layer = 1;
            let (_, d1) = alone.loss_with_diagnostics(tokens(5), tokens(3));
            assert_eq!(got, d1.max_attn_logit[0], "{cfg:?} layer {i}");
        }
        assert_ne!(diag.max_attn_logit[0], diag.max_attn_logit[1]);
    }
}
