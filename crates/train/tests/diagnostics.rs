//! The stability diagnostics watch a run without changing it, and land in `curves.json` and
//! `summary.json`.

mod common;

use fp8_stats::diagnostics as d;
use fp8_stats::results::{Curves, Summary};
use fp8_train::backend::CpuTrain;
use fp8_train::{train, Silent, TrainConfig};
use std::path::Path;

fn config(recipe_name: &str, dir: &Path, grad_noise_every: u64) -> TrainConfig {
    TrainConfig {
        steps: 6,
        warmup: 1,
        log_every: 2,
        eval_every: 3,
        checkpoint_every: 0,
        grad_noise_every,
        ..common::tiny_run(common::recipe(recipe_name), dir)
    }
}

fn losses(c: &Curves) -> Vec<u64> {
    c.losses.iter().map(|p| p.1.to_bits()).collect()
}

#[test]
fn diagnostics_are_recorded_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let (a, b) = (tmp.path().join("noise"), tmp.path().join("quiet"));
    train::<CpuTrain>(
        &config("bit_reduction_e8m3", &a, 2),
        &device,
        false,
        &mut Silent,
    )
    .unwrap();
    train::<CpuTrain>(
        &config("bit_reduction_e8m3", &b, 0),
        &device,
        false,
        &mut Silent,
    )
    .unwrap();
    let (ca, cb) = (Curves::read(&a).unwrap(), Curves::read(&b).unwrap());
    // The extra unquantized pass of the noise measurement leaves the run's losses bit for bit.
    assert_eq!(losses(&ca), losses(&cb));

    // Logging steps 0, 2, 4 and the last (5).
    let steps = |name: &str| -> Vec<u64> { ca.diagnostics[name].iter().map(|p| p.0).collect() };
    for name in [
        d::ATTN_LOGIT_MAX,
        d::LOG_Z_MAX,
        d::UPDATE_RATIO_MAX,
        d::STAGNATION,
    ] {
        assert_eq!(steps(name), vec![0, 2, 4, 5], "{name}");
    }
    assert_eq!(steps(d::GRAD_NOISE_RATIO), vec![0, 2, 4]);
    assert!(!cb.diagnostics.contains_key(d::GRAD_NOISE_RATIO));
    for (_, v) in &ca.diagnostics[d::GRAD_NOISE_RATIO] {
        // Truncating 4 of bf16's 7 mantissa bits perturbs the gradient, but by far less than
        // the gradient itself.
        assert!(v.is_finite() && *v > 1.0, "{v}");
    }
    // At initialization (std 0.02 weights) the log-partition is ln V = ln 64 within a little.
    let z0 = ca.diagnostics[d::LOG_Z_MAX][0].1;
    assert!((z0 - 64f64.ln()).abs() < 0.5, "{z0}");
    for (_, v) in &ca.diagnostics[d::STAGNATION] {
        assert!((0.0..=1.0).contains(v));
    }

    // The summary holds each series' worst value.
    let s = Summary::read(&a.join("summary.json")).unwrap();
    let worst = |name: &str| {
        let dir = d::find(name).unwrap().threshold.direction;
        d::worst(&ca.diagnostics[name], dir).unwrap()
    };
    assert_eq!(s.diagnostics[d::ATTN_LOGIT_MAX], worst(d::ATTN_LOGIT_MAX));
    assert_eq!(
        s.diagnostics[d::GRAD_NOISE_RATIO],
        worst(d::GRAD_NOISE_RATIO)
    );
    let min_noise = ca.diagnostics[d::GRAD_NOISE_RATIO]
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(s.diagnostics[d::GRAD_NOISE_RATIO], min_noise);
}

#[test]
fn an_exact_recipe_has_no_gradient_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fp32");
    train::<CpuTrain>(
        &config("fp32", &dir, 2),
        &Default::default(),
        false,
        &mut Silent,
    )
    .unwrap();
    let c = Curves::read(&dir).unwrap();
    assert!(!c.diagnostics.contains_key(d::GRAD_NOISE_RATIO));
    // fp32 casts nothing: no underflow or saturation telemetry either.
    assert!(!c.diagnostics.contains_key(d::UNDERFLOW_MAX));
    assert!(c.diagnostics.contains_key(d::UPDATE_RATIO_MAX));
}
