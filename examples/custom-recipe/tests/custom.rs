//! The example recipe is registered, listed by the CLI that links it, and applied by the
//! decorator.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use fp8_core::context::activate;
use fp8_core::{sites, Precision, PrecisionContext};
use std::process::Command;

// Link the example crate into this test binary.
use custom_recipe as _;

#[test]
fn the_cli_that_links_it_lists_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_fp8-custom"))
        .arg("recipes")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stochastic_e5m2"), "{text}");
    assert!(
        text.contains("delayed_scaling"),
        "built-ins stay listed: {text}"
    );
}

#[test]
fn the_decorator_applies_it() {
    let recipe = fp8_core::recipe::from_ron_str(
        r#"(kind: "stochastic_e5m2", warmup: 1, seed: 7)"#,
        "example",
    )
    .unwrap();
    let ctx = PrecisionContext::new(recipe).shared();
    let _active = activate(ctx.clone());
    type B = Precision<NdArray>;
    let device = Default::default();
    // x·I = Q(x) when I is representable (it is): the output shows the cast.
    let xs: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 / 64.0 * 0.999).collect();
    let x = Tensor::<B, 1>::from_floats(xs.as_slice(), &device).reshape([8, 8]);
    let eye = Tensor::<B, 2>::eye(8, &device);
    let e5m2: fp8_formats::Format = "float8_e5m2".parse().unwrap();

    // Step 0 is inside the warm-up: untouched.
    let y0: Vec<f32> = sites::with("demo", || x.clone().matmul(eye.clone()))
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(y0, xs);

    ctx.lock().unwrap().end_step();
    let y1: Vec<f32> = sites::with("demo", || x.clone().matmul(eye.clone()))
        .into_data()
        .to_vec()
        .unwrap();
    for (q, x) in y1.iter().zip(&xs) {
        assert!(e5m2.is_representable(*q), "{q} from {x}");
        // Stochastic rounding picks one of the two neighbours: in [1, 2) E5M2 steps by 0.25.
        assert!((q - x).abs() < 0.25, "{q} from {x}");
    }
    assert_ne!(y1, xs);
    let telemetry = ctx.lock().unwrap().end_step();
    assert!(telemetry.keys().any(|(site, _)| site == "demo"));
}
