//! Every shipped recipe file builds, the specs match the documented semantics, and bad files give
//! errors that say where and what.

use fp8_core::recipe::{from_file, from_ron_str};
use fp8_core::{Recipe, RecipeError, Role};
use fp8_formats::{Format, Rounding, Scaling, Stats, TensorScale};
use std::path::PathBuf;

// Link the built-in kinds.
use fp8_recipes as _;

fn recipes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes")
}

fn load(name: &str) -> Box<dyn Recipe> {
    from_file(&recipes_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fmt(name: &str) -> Format {
    name.parse().unwrap()
}

#[test]
fn every_shipped_file_builds() {
    let mut n = 0;
    for entry in std::fs::read_dir(recipes_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ron") {
            from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    // fp32, bf16, delayed, current, mxfp8, blockwise, nvfp4, e8m6..e8m3, e7m7, progressive, and
    // today's production recipes: mxfp8_nvidia, mxfp8_nvidia_2d, nvfp4_nvidia,
    // torchao_{tensorwise, rowwise, rowwise_with_gw_hp}, te_float8_{block,current}_scaling,
    // and coat (current scaling with COAT's optimizer states).
    assert_eq!(n, 22);
}

#[test]
fn fp32_quantizes_nothing() {
    let r = load("fp32.ron");
    for role in Role::ALL {
        assert_eq!(r.spec("h.0.mlp.fc", role, 0), None);
    }
}

#[test]
fn bit_reduction_is_truncation_on_every_gemm_input() {
    let r = load("bit_reduction_e8m3.ron");
    for site in [
        "h.1.attn.qkv",
        "h.1.attn.scores",
        "h.1.attn.values",
        "lm_head",
    ] {
        for role in [Role::X, Role::W, Role::Dy] {
            let s = r.spec(site, role, 7).expect("quantized");
            assert_eq!(s.cast.format, fmt("e8m3"));
            assert_eq!(s.cast.rounding, Rounding::TowardZero);
            assert!(s.cast.saturate);
            assert_eq!(s.scaling, Scaling::None);
        }
        assert_eq!(r.spec(site, Role::Dw, 7), None, "dw stays f32");
    }
}

#[test]
fn delayed_scaling_is_hybrid_and_uses_the_previous_steps_amax() {
    let mut r = load("delayed_scaling.ron");
    let x = r.spec("h.0.mlp.fc", Role::X, 0).unwrap();
    let dy = r.spec("h.0.mlp.fc", Role::Dy, 0).unwrap();
    assert_eq!(x.cast.format, fmt("float8_e4m3fn"));
    assert_eq!(dy.cast.format, fmt("float8_e5m2"));
    assert_eq!(x.scaling, Scaling::Tensor(TensorScale::Given(1.0)));
    assert_eq!(r.spec("h.0.attn.scores", Role::X, 0), None, "attention off");
    assert_eq!(r.spec("h.0.mlp.fc", Role::Dw, 0), None);

    let seen = |amax| Stats {
        amax,
        ..Stats::default()
    };
    r.observe("h.0.mlp.fc", Role::X, &seen(3.5));
    r.observe("h.0.mlp.fc", Role::Dy, &seen(0.5));
    // Within the step the scale does not move.
    assert_eq!(
        r.spec("h.0.mlp.fc", Role::X, 0).unwrap().scaling,
        Scaling::Tensor(TensorScale::Given(1.0))
    );
    r.end_step();
    assert_eq!(
        r.spec("h.0.mlp.fc", Role::X, 1).unwrap().scaling,
        Scaling::Tensor(TensorScale::Given(448.0 / 3.5))
    );
    assert_eq!(
        r.spec("h.0.mlp.fc", Role::Dy, 1).unwrap().scaling,
        Scaling::Tensor(TensorScale::Given(57344.0 / 0.5))
    );

    // State round-trips into a fresh recipe.
    let mut fresh = load("delayed_scaling.ron");
    fresh.restore(r.state()).unwrap();
    assert_eq!(
        fresh.spec("h.0.mlp.fc", Role::X, 1),
        r.spec("h.0.mlp.fc", Role::X, 1)
    );
    assert!(load("fp32.ron").restore(r.state()).is_err());
}

#[test]
fn block_recipes_block_along_the_reduction_axis() {
    let mx = load("mxfp8.ron");
    let spec = |r: &dyn Recipe, role| r.spec("h.0.mlp.fc", role, 0).unwrap().scaling;
    assert!(matches!(
        spec(mx.as_ref(), Role::X),
        Scaling::Mx {
            block: 32,
            axis: fp8_formats::BlockAxis::Cols,
            ..
        }
    ));
    assert!(matches!(
        spec(mx.as_ref(), Role::W),
        Scaling::Mx {
            block: 32,
            axis: fp8_formats::BlockAxis::Rows,
            ..
        }
    ));
    let bw = load("blockwise.ron");
    assert!(matches!(
        spec(bw.as_ref(), Role::X),
        Scaling::Block {
            rows: 1,
            cols: 128,
            ..
        }
    ));
    assert!(matches!(
        spec(bw.as_ref(), Role::W),
        Scaling::Block {
            rows: 128,
            cols: 128,
            ..
        }
    ));
}

#[test]
fn nvfp4_keeps_lm_head_in_bf16_and_rounds_gradients_stochastically() {
    let r = load("nvfp4.ron");
    let head = r.spec("lm_head", Role::X, 0).unwrap();
    assert_eq!(head.cast.format, fmt("bfloat16"));
    assert_eq!(head.scaling, Scaling::None);
    let x = r.spec("h.0.mlp.fc", Role::X, 0).unwrap();
    assert_eq!(x.cast.format, fmt("float4_e2m1fn"));
    let dy0 = r.spec("h.0.mlp.fc", Role::Dy, 0).unwrap();
    let dy1 = r.spec("h.0.mlp.fc", Role::Dy, 1).unwrap();
    assert_eq!(dy0.cast.rounding, Rounding::Stochastic);
    assert_ne!(dy0.cast.seed, dy1.cast.seed, "fresh noise every step");
}

#[test]
fn progressive_switches_format_at_the_phase_boundary() {
    let r = load("progressive.ron");
    assert_eq!(
        r.spec("h.0.mlp.fc", Role::X, 199).unwrap().cast.format,
        fmt("bfloat16")
    );
    assert_eq!(
        r.spec("h.0.mlp.fc", Role::X, 200).unwrap().cast.format,
        fmt("e8m5")
    );

    let drop = from_ron_str(
        r#"(kind: "progressive", drop_bit_every: 10, min_mantissa: 5)"#,
        "t",
    )
    .unwrap();
    let at = |s| drop.spec("h.0.mlp.fc", Role::W, s).unwrap().cast.format;
    assert_eq!(at(0), fmt("e8m7"));
    assert_eq!(at(9), fmt("e8m7"));
    assert_eq!(at(10), fmt("e8m6"));
    assert_eq!(at(25), fmt("e8m5"));
    assert_eq!(at(1000), fmt("e8m5"));
}

#[test]
fn overrides_by_glob_and_attention_switch() {
    let r = from_ron_str(
        r#"(kind: "cast", format: "e8m4", attention: false,
            overrides: [(sites: "h.0.*", keep: true), (sites: "lm_head", format: "bfloat16", roles: [x])])"#,
        "t",
    )
    .unwrap();
    assert_eq!(r.spec("h.0.mlp.fc", Role::X, 0), None);
    assert_eq!(r.spec("h.1.attn.scores", Role::X, 0), None);
    assert_eq!(
        r.spec("h.1.mlp.fc", Role::X, 0).unwrap().cast.format,
        fmt("e8m4")
    );
    assert_eq!(
        r.spec("lm_head", Role::X, 0).unwrap().cast.format,
        fmt("bfloat16")
    );
    // The lm_head override names only x, so w falls through to the recipe's own rule.
    assert_eq!(
        r.spec("lm_head", Role::W, 0).unwrap().cast.format,
        fmt("e8m4")
    );
}

fn err(text: &str) -> String {
    match from_ron_str(text, "bad.ron") {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_say_where_and_what() {
    let e = err("(kind: \"cast\",\n format: \"e8m4\"\n roles: [x])");
    assert!(e.starts_with("bad.ron:3:"), "{e}");

    let e = err(r#"(kind: "fp9")"#);
    assert!(e.contains("unknown recipe kind `fp9`"), "{e}");
    assert!(
        e.contains("delayed_scaling") && e.contains("bit_reduction"),
        "{e}"
    );

    let e = err(r#"(kind: "cast", format: "float7_e9m9")"#);
    assert!(
        e.contains("float7_e9m9") && e.contains("float8_e4m3fn"),
        "{e}"
    );

    let e = err(r#"(kind: "delayed_scaling", algo: maximum)"#);
    assert!(e.contains("maximum") && e.contains("most_recent"), "{e}");

    let e = err(r#"(kind: "cast", format: "e8m4", colour: 3)"#);
    assert!(e.contains("colour"), "{e}");

    let e = err(r#"(kind: "cast", format: "e8m4", rounding: "up")"#);
    assert!(e.contains("up") && e.contains("stochastic"), "{e}");

    assert!(matches!(
        from_file(std::path::Path::new("/nonexistent/r.ron")),
        Err(RecipeError::Io { .. })
    ));
}

#[test]
fn only_delayed_scaling_observes_its_casts() {
    use fp8_formats::Measure;
    // Steps without telemetry measure what the recipe reads: the amax for delayed scaling,
    // nothing for the stateless kinds.
    for entry in std::fs::read_dir(recipes_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ron") {
            continue;
        }
        let r = from_file(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let want = if name == "delayed_scaling" {
            Measure::Amax
        } else {
            Measure::Nothing
        };
        assert_eq!(r.observe_needs(), want, "{name}");
    }
}
