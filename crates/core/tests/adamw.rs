//! The fused AdamW (`fp8_core::fused::adamw`) against burn 0.21's own `AdamW`, the reference it
//! replaces: the same parameter and moments, bit for bit, step after step, with and without
//! weight decay, on Flex (the one-pass kernel, serial and split over threads) and on NdArray (the
//! composed default); and whole optimizer steps on a module through `OptimizerAdaptor`.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, Optimizer, SimpleOptimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use fp8_core::fused::adamw::AdamWConfig;
use fp8_core::fused::FusedOps;
use fp8_core::Precision;

/// Deterministic values in `[-scale, scale)`.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor<B: Backend>(v: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn bits<B: Backend>(t: &Tensor<B, 2>) -> Vec<u32> {
    t.clone()
        .into_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Four steps of burn's `AdamW` and of the fused one from the same start, with the learning
/// rates of a warm-up; every step's parameter and both moments must have the same bits.
fn same_as_burn<B: FusedOps>(shape: [usize; 2], weight_decay: f32) {
    let n = shape[0] * shape[1];
    let theirs = burn::optim::AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay)
        .build();
    let ours = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay)
        .build();
    let start = tensor::<B>(&values(n, 1, 0.5), shape);
    let (mut p_theirs, mut p_ours) = (start.clone(), start);
    let (mut s_theirs, mut s_ours) = (None, None);
    for (step, lr) in [3e-4, 6e-4, 1e-3, 1e-3].into_iter().enumerate() {
        // Gradients spanning magnitudes, some exactly zero.
        let mut g = values(n, 10 + step as u64, 1.0);
        for (i, v) in g.iter_mut().enumerate() {
            *v *= [1e-6, 1e-2, 1.0, 30.0][i % 4];
            if i % 7 == 0 {
                *v = 0.0;
            }
        }
        let g = tensor::<B>(&g, shape);
        let (p, s) = SimpleOptimizer::<B>::step(&theirs, lr, p_theirs, g.clone(), s_theirs);
        (p_theirs, s_theirs) = (p, s);
        let (p, s) = SimpleOptimizer::<B>::step(&ours, lr, p_ours, g, s_ours);
        (p_ours, s_ours) = (p, s);
        let what = format!("{shape:?}, weight decay {weight_decay}, step {}", step + 1);
        assert_eq!(bits(&p_ours), bits(&p_theirs), "parameter, {what}");
        let (a, b) = (
            &s_ours.as_ref().unwrap().momentum,
            &s_theirs.as_ref().unwrap().momentum,
        );
        assert_eq!(a.time, b.time, "time, {what}");
        assert_eq!(bits(&a.moment_1), bits(&b.moment_1), "moment 1, {what}");
        assert_eq!(bits(&a.moment_2), bits(&b.moment_2), "moment 2, {what}");
        assert_ne!(bits(&p_ours), bits(&tensor::<B>(&values(n, 1, 0.5), shape)));
    }
}

#[test]
fn flex_kernel_gives_the_bits_of_burns_adamw() {
    same_as_burn::<Flex>([7, 13], 0.1);
    same_as_burn::<Flex>([7, 13], 0.0);
}

#[test]
fn flex_kernel_split_over_threads_gives_the_bits_of_burns_adamw() {
    // 96 Ki elements: several parallel tasks and a short last one.
    for threads in [1, 2] {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| same_as_burn::<Flex>([384, 257], 0.1));
    }
}

#[test]
fn composed_default_gives_the_bits_of_burns_adamw() {
    same_as_burn::<NdArray<f32>>([7, 13], 0.1);
    same_as_burn::<Precision<Flex>>([7, 13], 0.1);
}

#[derive(Module, Debug)]
struct Pair<B: Backend> {
    a: Param<Tensor<B, 2>>,
    b: Param<Tensor<B, 1>>,
}

/// Whole optimizer steps (`OptimizerAdaptor`, as training uses it) on a two-parameter module.
fn module_steps<B: burn::tensor::backend::AutodiffBackend<InnerBackend: FusedOps>>(
    fused: bool,
) -> Vec<Vec<u32>> {
    let device = Default::default();
    let mut m = Pair::<B> {
        a: Param::from_tensor(tensor::<B>(&values(12, 3, 1.0), [3, 4]).require_grad()),
        b: Param::from_tensor(Tensor::from_data(
            TensorData::new(values(4, 4, 1.0), [4]),
            &device,
        )),
    };
    let config = (0.9, 0.999, 1e-5, 0.01);
    let mut theirs = burn::optim::AdamWConfig::new()
        .with_beta_1(config.0)
        .with_beta_2(config.1)
        .with_epsilon(config.2)
        .with_weight_decay(config.3)
        .init::<B, Pair<B>>();
    let mut ours = AdamWConfig::new()
        .with_beta_1(config.0)
        .with_beta_2(config.1)
        .with_epsilon(config.2)
        .with_weight_decay(config.3)
        .init::<B, Pair<B>>();
    for step in 0..3 {
        let x = tensor::<B>(&values(8, 20 + step, 1.0), [2, 4]);
        let loss = (x.matmul(m.a.val().transpose()).sum_dim(1) * 0.5).sum()
            + (m.b.val() * m.b.val()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = if fused {
            ours.step(1e-2, m, grads)
        } else {
            theirs.step(1e-2, m, grads)
        };
    }
    let b = m.b.val().reshape([1, 4]);
    vec![bits(&m.a.val()), bits(&b)]
}

#[test]
fn optimizer_steps_on_a_module_match_burns_adamw() {
    type B = Autodiff<Flex>;
    assert_eq!(module_steps::<B>(true), module_steps::<B>(false));
    type P = Precision<Autodiff<Flex>>;
    assert_eq!(module_steps::<P>(true), module_steps::<P>(false));
}
