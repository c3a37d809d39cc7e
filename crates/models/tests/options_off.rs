//! The stability options (QK-norm, z-loss) change nothing when they are off.
//!
//! The fingerprints below were recorded with the model code as it was before those options
//! existed (commit f333285): the FNV-1a hash of the bits of every logit, of the loss, and of every
//! parameter gradient, for the `tiny` GPT-2 preset and a tiny Llama, on `NdArray` (whose f32
//! arithmetic is deterministic). A config that leaves the new fields at their defaults must
//! reproduce them bit for bit, and so must a RON file written before the fields existed.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use fp8_models::ModelConfig;

type AB = Autodiff<NdArray>;

/// FNV-1a over the bit patterns of `values`.
fn fnv(values: &[f32], mut h: u64) -> u64 {
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// Hashes every parameter gradient in module order.
struct GradHash<'a> {
    grads: &'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients,
    hash: u64,
    count: usize,
}

impl ModuleVisitor<AB> for GradHash<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let g = param
            .grad(self.grads)
            .expect("every parameter gets a gradient");
        self.hash = fnv(&g.into_data().to_vec::<f32>().unwrap(), self.hash);
        self.count += 1;
    }
}

fn batch<B: Backend>(cfg: &ModelConfig) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let (b, t, v) = (2usize, 12usize, cfg.vocab_size as i64);
    let x: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 7 + 3) % v).collect();
    let y: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 11 + 5) % v).collect();
    let device = Default::default();
    (
        Tensor::from_data(TensorData::new(x, [b, t]), &device),
        Tensor::from_data(TensorData::new(y, [b, t]), &device),
    )
}

/// `(logits hash, loss bits, gradient hash, number of parameters with a gradient)`.
fn fingerprint(cfg: &ModelConfig) -> (u64, u32, u64, usize) {
    let device = Default::default();
    let model = cfg.init::<AB>(&device);
    let (x, y) = batch::<AB>(cfg);
    let logits = model
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let loss = model.loss(x, y);
    let loss_bits = loss.clone().into_scalar().to_bits();
    let grads = loss.backward();
    let mut visitor = GradHash {
        grads: &grads,
        hash: FNV_OFFSET,
        count: 0,
    };
    model.visit(&mut visitor);
    (
        fnv(&logits, FNV_OFFSET),
        loss_bits,
        visitor.hash,
        visitor.count,
    )
}

fn tiny_llama() -> ModelConfig {
    ModelConfig::llama(2, 4, 2, 32, 48, 16, 64)
}

/// `(logits hash, loss bits, gradient hash, parameters)` recorded before the options existed.
/// x86-64 only: `NdArray`'s GEMM picks its SIMD kernel by CPU family, and another family may
/// round differently.
#[cfg(target_arch = "x86_64")]
#[test]
fn options_off_reproduce_the_model_before_the_options_bit_for_bit() {
    let gpt2 = ModelConfig::preset("tiny").unwrap();
    let llama = tiny_llama();
    let gpt2_before = (8684535649310236284, 1082474258, 16874853869758812552, 28);
    let llama_before = (4881569870730412849, 1082482348, 355941617457758511, 15);
    assert_eq!(fingerprint(&gpt2), gpt2_before);
    assert_eq!(fingerprint(&llama), llama_before);

    // A RON file written before the fields existed reads as the options off.
    let old_ron = gpt2
        .to_ron()
        .replace("qk_norm: false,", "")
        .replace("z_loss: 0.0,", "");
    assert!(
        !old_ron.contains("qk_norm") && !old_ron.contains("z_loss"),
        "{old_ron}"
    );
    let parsed = ModelConfig::from_ron(&old_ron).unwrap();
    assert_eq!(parsed, gpt2);
    assert_eq!(fingerprint(&parsed), gpt2_before);
}

/// With the options off, `loss` is the plain cross-entropy of the logits, bit for bit, on any
/// CPU; with z-loss on it is not (so this comparison can tell).
#[test]
fn loss_without_z_loss_is_the_cross_entropy_of_the_logits() {
    let device = Default::default();
    for cfg in [ModelConfig::preset("tiny").unwrap(), tiny_llama()] {
        let model = cfg.init::<NdArray>(&device);
        let (x, y) = batch::<NdArray>(&cfg);
        let plain = fp8_models::cross_entropy(model.forward(x.clone()), y.clone()).into_scalar();
        assert_eq!(
            model.loss(x.clone(), y.clone()).into_scalar().to_bits(),
            plain.to_bits()
        );
        let (with_diag, _) = model.loss_with_diagnostics(x.clone(), y.clone());
        assert_eq!(with_diag.into_scalar().to_bits(), plain.to_bits());
        let z = ModelConfig {
            z_loss: 1e-2,
            ..cfg
        };
        let zmodel = z.init::<NdArray>(&device);
        assert!(
            zmodel.loss(x, y).into_scalar() > plain,
            "z-loss adds a positive term"
        );
    }
}
