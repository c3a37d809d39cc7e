//! Today's production recipes (NVIDIA MXFP8 and NVFP4, torchao float8, TE block and current
//! scaling) answer every role with the format, scaling and rounding their reference code uses,
//! and the schema's per-role rules and layer-range overrides behave as documented.
//!
//! The expectations are transcribed from the reference sources cited in each recipe file
//! (TransformerEngine `transformer_engine/common/recipe/__init__.py`, torchao
//! `torchao/float8/config.py`), not from this crate's code.

use fp8_core::recipe::{from_file, from_ron_str};
use fp8_core::{Recipe, Role};
use fp8_formats::{BlockAxis, Format, MxRule, QuantSpec, Rounding, Scaling, TensorScale};
use std::path::PathBuf;

use fp8_recipes as _;

fn load(name: &str) -> Box<dyn Recipe> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes")
        .join(name);
    from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fmt(name: &str) -> Format {
    name.parse().unwrap()
}

fn spec(r: &dyn Recipe, site: &str, role: Role) -> QuantSpec {
    r.spec(site, role, 3)
        .unwrap_or_else(|| panic!("{site}/{role} should be quantized"))
}

fn sites(blocks: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..blocks)
        .flat_map(|b| ["attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"].map(|g| format!("h.{b}.{g}")))
        .collect();
    v.push("lm_head".into());
    v
}

#[test]
fn mxfp8_nvidia_is_e4m3_everywhere_with_rceil_blocks_along_each_gemms_reduction_axis() {
    let r = load("mxfp8_nvidia.ron");
    assert!(r.requantizes_backward());
    let e4m3 = fmt("float8_e4m3fn");
    // (role, axis): forward x [T, K] along K, w [K, N] along K; dgrad dy along N, wᵀ along N;
    // wgrad xᵀ and dy along the tokens.
    for (role, axis) in [
        (Role::X, BlockAxis::Cols),
        (Role::W, BlockAxis::Rows),
        (Role::Dy, BlockAxis::Cols),
        (Role::WDgrad, BlockAxis::Cols),
        (Role::XWgrad, BlockAxis::Rows),
        (Role::DyWgrad, BlockAxis::Rows),
    ] {
        let s = spec(r.as_ref(), "h.0.mlp.fc", role);
        assert_eq!(s.cast.format, e4m3, "{role}: E4M3 for gradients too");
        assert_eq!(s.cast.rounding, Rounding::NearestEven);
        assert_eq!(
            s.scaling,
            Scaling::Mx {
                block: 32,
                rule: MxRule::Rceil,
                axis
            },
            "{role}"
        );
    }
    for role in [Role::Y, Role::Dx, Role::Dw] {
        assert_eq!(r.spec("h.0.mlp.fc", role, 0), None, "{role}");
    }
    assert_eq!(r.spec("h.0.attn.scores", Role::X, 0), None);
}

#[test]
fn torchao_rowwise_scales_per_row_or_column_with_power_of_two_scales() {
    let r = load("torchao_rowwise.ron");
    assert!(r.requantizes_backward());
    let row = Scaling::Row { pow2: true };
    let col = Scaling::Col { pow2: true };
    for (role, scaling) in [
        (Role::X, row),
        (Role::W, col),
        (Role::Dy, row),
        (Role::WDgrad, row),
        (Role::XWgrad, col),
        (Role::DyWgrad, col),
    ] {
        let s = spec(r.as_ref(), "h.1.attn.qkv", role);
        assert_eq!(s.scaling, scaling, "{role}");
        assert_eq!(s.cast.format, fmt("float8_e4m3fn"), "{role}");
    }
}

#[test]
fn torchao_rowwise_with_gw_hp_keeps_the_weight_gradient_in_high_precision() {
    let r = load("torchao_rowwise_with_gw_hp.ron");
    assert!(r.requantizes_backward());
    assert_eq!(
        spec(r.as_ref(), "h.0.mlp.proj", Role::X).scaling,
        Scaling::Row { pow2: true }
    );
    assert_eq!(
        spec(r.as_ref(), "h.0.mlp.proj", Role::W).scaling,
        Scaling::Col { pow2: true }
    );
    assert_eq!(
        spec(r.as_ref(), "h.0.mlp.proj", Role::Dy).scaling,
        Scaling::Row { pow2: true }
    );
    assert_eq!(
        spec(r.as_ref(), "h.0.mlp.proj", Role::WDgrad).scaling,
        Scaling::Tensor(TensorScale::Current { pow2: true })
    );
    for role in [Role::XWgrad, Role::DyWgrad, Role::Dw] {
        assert_eq!(
            r.spec("h.0.mlp.proj", role, 0),
            None,
            "{role}: high precision"
        );
    }
}

#[test]
fn torchao_tensorwise_and_te_current_scaling_are_hybrid_per_tensor() {
    for name in ["torchao_tensorwise.ron", "te_float8_current_scaling.ron"] {
        let r = load(name);
        assert!(!r.requantizes_backward(), "{name}: one cast per tensor");
        let cur = Scaling::Tensor(TensorScale::Current { pow2: false });
        assert_eq!(
            spec(r.as_ref(), "h.0.mlp.fc", Role::X).cast.format,
            fmt("float8_e4m3fn")
        );
        assert_eq!(
            spec(r.as_ref(), "h.0.mlp.fc", Role::W).cast.format,
            fmt("float8_e4m3fn")
        );
        assert_eq!(
            spec(r.as_ref(), "h.0.mlp.fc", Role::Dy).cast.format,
            fmt("float8_e5m2")
        );
        assert_eq!(
            spec(r.as_ref(), "h.0.mlp.fc", Role::Dy).scaling,
            cur,
            "{name}"
        );
    }
}

#[test]
fn mxfp8_nvidia_2d_puts_weights_in_32x32_tiles_and_keeps_1x32_elsewhere() {
    let r = load("mxfp8_nvidia_2d.ron");
    assert!(r.requantizes_backward());
    let mx = |axis| Scaling::Mx {
        block: 32,
        rule: MxRule::Rceil,
        axis,
    };
    for (role, axis) in [
        (Role::X, BlockAxis::Cols),
        (Role::W, BlockAxis::Square),
        (Role::Dy, BlockAxis::Cols),
        (Role::WDgrad, BlockAxis::Square),
        (Role::XWgrad, BlockAxis::Rows),
        (Role::DyWgrad, BlockAxis::Rows),
    ] {
        let s = spec(r.as_ref(), "h.0.mlp.fc", role);
        assert_eq!(s.scaling, mx(axis), "{role}");
        assert_eq!(s.cast.format, fmt("float8_e4m3fn"), "{role}");
    }
}

#[test]
fn nvfp4_nvidia_quantizes_weights_in_16x16_tiles() {
    let mut r = load("nvfp4_nvidia.ron");
    r.bind_sites(&sites(16)).unwrap();
    for (role, axis) in [
        (Role::X, BlockAxis::Cols),
        (Role::W, BlockAxis::Square),
        (Role::WDgrad, BlockAxis::Square),
        (Role::Dy, BlockAxis::Cols),
        (Role::XWgrad, BlockAxis::Rows),
        (Role::DyWgrad, BlockAxis::Rows),
    ] {
        let s = spec(r.as_ref(), "h.4.mlp.fc", role);
        assert_eq!(s.scaling, Scaling::Nvfp4 { axis }, "{role}");
        assert_eq!(s.cast.format, fmt("float4_e2m1fn"), "{role}");
    }
}

/// Block shapes in `role_rules.scaling`: what each format takes, and errors naming the field and
/// the shapes allowed for what it cannot.
#[test]
fn block_shapes_are_validated_per_format() {
    let build = |scaling: &str| {
        let text = format!(
            "(kind: \"nvfp4\", roles: [x, w, dy], role_rules: [(roles: [w], scaling: {scaling})])"
        );
        from_ron_str(&text, "test.ron").map(|r| r.spec("h.0.mlp.fc", Role::W, 0).unwrap().scaling)
    };
    let nv = |axis| Scaling::Nvfp4 { axis };
    assert_eq!(
        build("nvfp4(block: (16, 16))").unwrap(),
        nv(BlockAxis::Square)
    );
    assert_eq!(build("nvfp4(block: 16)").unwrap(), nv(BlockAxis::Cols));
    assert_eq!(build("nvfp4()").unwrap(), nv(BlockAxis::Cols));
    assert_eq!(
        build("nvfp4(block: 16, axis: rows)").unwrap(),
        nv(BlockAxis::Rows)
    );
    assert_eq!(build("nvfp4(block: (1, 16))").unwrap(), nv(BlockAxis::Cols));
    assert_eq!(build("nvfp4(block: (16, 1))").unwrap(), nv(BlockAxis::Rows));
    let mx = |block, axis| Scaling::Mx {
        block,
        rule: MxRule::Rceil,
        axis,
    };
    assert_eq!(
        build("mx(block: (32, 32), rule: rceil)").unwrap(),
        mx(32, BlockAxis::Square)
    );
    assert_eq!(
        build("mx(block: 32, rule: rceil)").unwrap(),
        mx(32, BlockAxis::Cols)
    );
    assert_eq!(
        build("mx(block: (64, 1), rule: rceil)").unwrap(),
        mx(64, BlockAxis::Rows)
    );
    for (bad, says) in [
        (
            "nvfp4(block: (32, 32))",
            "NVFP4 takes: 16, (1, 16), (16, 1) or TE's 2-D weight tile (16, 16)",
        ),
        (
            "nvfp4(block: 32)",
            "field `role_rules.scaling.block`: 32 is not a block NVFP4 takes",
        ),
        (
            "nvfp4(block: (16, 8))",
            "(16, 8) is not a block NVFP4 takes",
        ),
        ("mx(block: (32, 16))", "(32, 16) is not a block MX takes"),
        ("mx(block: (0, 0))", "(0, 0) is not a block MX takes"),
        ("mx(block: 0)", "0 is not a block MX takes"),
        (
            "mx(block: (32, 32), axis: rows)",
            "field `role_rules.scaling.axis`",
        ),
        ("mx(block: (32, 32, 32))", "a tile (rows, cols)"),
        ("mx(block: \"big\")", "a tile (rows, cols)"),
    ] {
        let err = build(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn te_block_scaling_uses_1x128_activations_128x128_weights_and_128x1_wgrad_copies() {
    let r = load("te_float8_block_scaling.ron");
    assert!(r.requantizes_backward());
    let b = |rows, cols| Scaling::Block {
        rows,
        cols,
        pow2: true,
    };
    for (role, scaling) in [
        (Role::X, b(1, 128)),
        (Role::Dy, b(1, 128)),
        (Role::W, b(128, 128)),
        (Role::WDgrad, b(128, 128)),
        (Role::XWgrad, b(128, 1)),
        (Role::DyWgrad, b(128, 1)),
    ] {
        let s = spec(r.as_ref(), "lm_head", role);
        assert_eq!(s.scaling, scaling, "{role}");
        assert_eq!(s.cast.format, fmt("float8_e4m3fn"), "{role}");
    }
}

#[test]
fn nvfp4_nvidia_keeps_first_two_and_last_eight_blocks_in_bf16_and_transforms_wgrad() {
    let mut r = load("nvfp4_nvidia.ron");
    r.bind_sites(&sites(16)).unwrap();
    let e2m1 = fmt("float4_e2m1fn");
    let bf16 = fmt("bfloat16");
    for b in 0..16 {
        let s = spec(r.as_ref(), &format!("h.{b}.mlp.fc"), Role::X);
        let high = !(2..8).contains(&b);
        assert_eq!(s.cast.format, if high { bf16 } else { e2m1 }, "block {b}");
    }
    assert_eq!(spec(r.as_ref(), "lm_head", Role::W).cast.format, bf16);
    // Stochastic rounding on the gradient copies only.
    for role in Role::ALL {
        let Some(s) = r.spec("h.4.mlp.fc", role, 0) else {
            continue;
        };
        let want = if role.is_gradient() {
            Rounding::Stochastic
        } else {
            Rounding::NearestEven
        };
        assert_eq!(s.cast.rounding, want, "{role}");
    }
    // One transform for every layer and step, TE's signs by default.
    assert_eq!(
        r.wgrad_hadamard("h.3.attn.qkv", 0),
        Some(fp8_formats::RandomHadamard::te())
    );
    assert_eq!(
        r.wgrad_hadamard("h.7.mlp.proj", 100),
        r.wgrad_hadamard("h.3.attn.qkv", 0)
    );
    // None where the wgrad operands stay in BF16: TE quantizes (and transforms) nothing there.
    for site in [
        "h.0.mlp.fc",
        "h.1.attn.proj",
        "h.8.attn.qkv",
        "h.15.mlp.proj",
        "lm_head",
    ] {
        assert_eq!(r.wgrad_hadamard(site, 0), None, "{site}");
    }
}

#[test]
fn seeded_hadamard_signs_are_a_function_of_seed_and_step() {
    let text = |seed: u64, every: u64| {
        format!(
            "(kind: \"nvfp4\", rht: true, rht_signs: seeded, rht_seed: {seed}, \
             rht_resample_every: {every}, roles: [x, w, dy, x_wgrad, w_dgrad, dy_wgrad])"
        )
    };
    let a = from_ron_str(&text(5, 10), "a").unwrap();
    let b = from_ron_str(&text(5, 10), "b").unwrap();
    let c = from_ron_str(&text(6, 10), "c").unwrap();
    let h = |r: &dyn Recipe, step| r.wgrad_hadamard("h.0.mlp.fc", step).unwrap();
    assert_eq!(h(a.as_ref(), 3), h(b.as_ref(), 3));
    assert_eq!(h(a.as_ref(), 3), h(a.as_ref(), 9), "same epoch");
    assert_ne!(
        h(a.as_ref(), 3),
        h(a.as_ref(), 10),
        "redrawn every 10 steps"
    );
    assert_ne!(h(a.as_ref(), 3), h(c.as_ref(), 3));
    // The transform needs the wgrad copies.
    let e = from_ron_str("(kind: \"nvfp4\", rht: true)", "x.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("x_wgrad") && e.contains("x.ron"), "{e}");
}

#[test]
fn layer_ranges_need_the_models_sites_and_combine_with_globs() {
    let text = r#"(
        kind: "cast", format: "float8_e4m3fn",
        overrides: [
            (sites: "*.attn.*", last: 1, keep: true),
            (first: 1, format: "bfloat16"),
        ],
    )"#;
    let mut r = from_ron_str(text, "t").unwrap();
    // Before binding, `last` matches nothing; `first` needs no model.
    assert_eq!(
        spec(r.as_ref(), "h.0.mlp.fc", Role::X).cast.format,
        fmt("bfloat16")
    );
    assert_eq!(
        spec(r.as_ref(), "h.3.attn.qkv", Role::X).cast.format,
        fmt("float8_e4m3fn")
    );
    r.bind_sites(&sites(4)).unwrap();
    assert_eq!(
        r.spec("h.3.attn.qkv", Role::X, 0),
        None,
        "last block, attention"
    );
    assert_eq!(
        spec(r.as_ref(), "h.3.mlp.fc", Role::X).cast.format,
        fmt("float8_e4m3fn")
    );
    assert_eq!(
        spec(r.as_ref(), "h.2.attn.qkv", Role::X).cast.format,
        fmt("float8_e4m3fn")
    );
    assert_eq!(
        spec(r.as_ref(), "lm_head", Role::X).cast.format,
        fmt("float8_e4m3fn")
    );
    // A model without numbered blocks cannot serve `last`.
    let e = r
        .bind_sites(&["lm_head".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("last"), "{e}");
    // An override must say where it applies.
    let e = from_ron_str(
        "(kind: \"cast\", format: \"e8m3\", overrides: [(keep: true)])",
        "o.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("o.ron") && e.contains("`sites`, `first` or `last`"),
        "{e}"
    );
}

#[test]
fn role_rules_replace_parts_of_a_roles_rule_add_roles_and_keep_roles() {
    let text = r#"(
        kind: "mx", rule: rceil,
        roles: [x, w, dy],
        role_rules: [
            (roles: [dy], format: "float8_e5m2", rounding: "stochastic"),
            (roles: [w], keep: true),
            (roles: [dx], format: "bfloat16", scaling: none),
        ],
    )"#;
    let r = from_ron_str(text, "t").unwrap();
    let dy = spec(r.as_ref(), "h.0.mlp.fc", Role::Dy);
    assert_eq!(dy.cast.format, fmt("float8_e5m2"));
    assert_eq!(dy.cast.rounding, Rounding::Stochastic);
    assert!(
        matches!(
            dy.scaling,
            Scaling::Mx {
                rule: MxRule::Rceil,
                ..
            }
        ),
        "kind's scaling kept"
    );
    assert_eq!(r.spec("h.0.mlp.fc", Role::W, 0), None);
    let dx = spec(r.as_ref(), "h.0.mlp.fc", Role::Dx);
    assert_eq!(
        (dx.cast.format, dx.scaling),
        (fmt("bfloat16"), Scaling::None)
    );
    assert!(!r.requantizes_backward(), "no backward copy named");
    // Bad rules name the field.
    for (bad, want) in [
        (
            "(kind: \"mx\", role_rules: [(roles: [dy], scaling: delayed)])",
            "delayed_scaling",
        ),
        (
            "(kind: \"mx\", role_rules: [(roles: [], keep: true)])",
            "role_rules.roles",
        ),
        (
            "(kind: \"mx\", role_rules: [(roles: [x], scaling: block(rows: 0, cols: 4))])",
            "role_rules.scaling",
        ),
        ("(kind: \"mx\", role_rules: [(roles: [q])])", "x_wgrad"),
    ] {
        let e = from_ron_str(bad, "bad.ron").unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("bad.ron"), "{bad}: {e}");
    }
}
