//! A few training steps of the tiny GPT-2 on burn's wgpu backend (`--features wgpu`) against the
//! same steps on the CPU (Flex), under the fp32, delayed-scaling and MXFP8 recipes.
//!
//! In CI this runs on lavapipe, Mesa's software Vulkan device. The model's init is deterministic
//! on the host, so both runs start from the same weights; each step is forward, backward, plain
//! SGD and the recipe's end of step (delayed scaling updates its scales from the amax history
//! here, so steps 1 and 2 use scales computed on the device).
//!
//! Tolerances on the loss, relative: fp32 `1e-5` (the GEMMs and reductions sum in another
//! order, nothing else differs); fp8 recipes `1e-3`: a last-bit difference in a GEMM input can
//! move a value across an fp8 rounding boundary, a change of one fp8 ulp (up to 12.5% of that
//! element), and a few of those shift the loss by far less than this.
//!
//! Without a wgpu adapter the test prints why and returns, except under `CI=true`, where it
//! fails.

#![cfg(feature = "wgpu")]

use burn::backend::{Autodiff, Flex};
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use fp8_core::context::activate;
use fp8_core::fused::FusedAutodiffBackend;
use fp8_core::precision::wgpu::{adapters, device, Wgpu};
use fp8_core::{Precision, PrecisionContext, Role};
use fp8_models::ModelConfig;
use fp8_recipes as _;

type Gpu = Precision<Autodiff<Wgpu<f32, i32, u32>>>;
type Cpu = Precision<Autodiff<Flex>>;

const STEPS: usize = 3;

/// Per step: the loss and the amax each (site, role) cast saw.
type Run = Vec<(f32, Vec<((String, Role), f32)>)>;

fn train<B: FusedAutodiffBackend>(recipe: &str, dev: &B::Device) -> Run {
    let cfg = ModelConfig::from_preset_or_file("tiny").unwrap();
    let recipe = fp8_core::recipe::from_ron_str(recipe, "recipe").unwrap();
    let ctx = PrecisionContext::new(recipe).shared();
    let _active = activate(ctx.clone());
    let mut model = cfg.init::<B>(dev);
    let mut optim = SgdConfig::new().init();
    let (b, t) = (2, 16);
    let seq: Vec<i64> = (0..(b * t + 1) as i64)
        .map(|i| (i * 37 + 11) % cfg.vocab_size as i64)
        .collect();
    let tokens =
        Tensor::<B, 2, Int>::from_data(TensorData::new(seq[..b * t].to_vec(), [b, t]), dev);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(seq[1..].to_vec(), [b, t]), dev);
    let mut run = Vec::new();
    for _ in 0..STEPS {
        let loss = model.loss(tokens.clone(), targets.clone());
        let value = loss
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap()[0];
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.5, model, grads);
        let tel = ctx.lock().unwrap().end_step();
        let amax = tel.iter().map(|(k, s)| (k.clone(), s.amax)).collect();
        run.push((value, amax));
    }
    run
}

fn compare(name: &str, recipe: &str, rel: f32, quantizes: bool) {
    let dev = match device(None) {
        Ok(d) => d,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no wgpu adapter: {e}")
        }
        Err(e) => {
            eprintln!("{name}: SKIPPED, not run on a device: {e}");
            return;
        }
    };
    eprintln!("{name}: wgpu adapters {:?}", adapters());
    let gpu = train::<Gpu>(recipe, &dev);
    let cpu = train::<Cpu>(recipe, &Default::default());
    for (step, ((gl, ga), (cl, ca))) in gpu.iter().zip(&cpu).enumerate() {
        eprintln!("{name} step {step}: loss wgpu {gl} cpu {cl}");
        assert!(gl.is_finite(), "{name} step {step}: loss {gl}");
        assert!(
            (gl - cl).abs() <= rel * cl.abs(),
            "{name} step {step}: loss wgpu {gl} vs cpu {cl} (rel tol {rel})"
        );
        // The same casts ran on both, with amaxes as close as the losses.
        assert_eq!(
            ga.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ca.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "{name} step {step}: sites"
        );
        assert_eq!(
            ga.is_empty(),
            !quantizes,
            "{name}: casts recorded: {}",
            ga.len()
        );
        for ((k, g), (_, c)) in ga.iter().zip(ca) {
            assert!(
                (g - c).abs() <= 1e-2 * c.abs().max(1e-6),
                "{name} step {step} {k:?}: amax wgpu {g} cpu {c}"
            );
        }
    }
    // SGD at this learning rate lowers the loss on a repeated batch: the steps did train.
    assert!(
        gpu[STEPS - 1].0 < gpu[0].0,
        "{name}: loss did not decrease: {gpu:?}"
    );
}

#[test]
fn fp32_steps_match_cpu_on_wgpu() {
    compare(
        "fp32",
        include_str!("../../../recipes/fp32.ron"),
        1e-5,
        false,
    );
}

#[test]
fn delayed_scaling_steps_match_cpu_on_wgpu() {
    compare(
        "delayed_scaling",
        include_str!("../../../recipes/delayed_scaling.ron"),
        1e-3,
        true,
    );
}

#[test]
fn mxfp8_steps_match_cpu_on_wgpu() {
    compare(
        "mxfp8",
        include_str!("../../../recipes/mxfp8.ron"),
        1e-3,
        true,
    );
}
