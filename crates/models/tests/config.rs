//! Config arithmetic against published figures, sites, presets and file loading.

use std::collections::HashSet;

use burn::backend::NdArray;
use burn::module::Module;
use fp8_models::{Arch, ConfigError, ModelConfig, PRESETS};

fn preset(name: &str) -> ModelConfig {
    ModelConfig::from_preset_or_file(name).unwrap()
}

#[test]
fn gpt2_124m_param_count_matches_reference() {
    // HF `gpt2`: sum(p.numel() for p in model.parameters()) with tied wte/lm_head.
    assert_eq!(preset("gpt2-124m").param_count(), 124_439_808);
}

#[test]
fn llama2_7b_param_count_matches_reference() {
    // HF `meta-llama/Llama-2-7b-hf`: 6,738,415,616 parameters.
    assert_eq!(preset("llama2-7b").param_count(), 6_738_415_616);
}

#[test]
fn gpt2_124m_flops_per_token() {
    // Hand-computed: GEMM weights per layer 768·2304 + 768² + 2·768·3072 = 7,077,888;
    // ×12 + head 50257·768 = 123,532,032; ×6 = 741,192,192; attention 12·12·1024·768 = 113,246,208.
    let cfg = preset("gpt2-124m");
    assert_eq!(cfg.gemm_param_count(), 123_532_032);
    assert_eq!(cfg.flops_per_token(), 854_438_400);
}

fn tiny_llama() -> ModelConfig {
    ModelConfig::llama(2, 4, 2, 32, 48, 16, 64)
}

#[test]
fn param_count_equals_allocated_parameters() {
    let device = Default::default();
    let mut untied_gpt2 = preset("tiny");
    untied_gpt2.tie_embeddings = false;
    let mut tied_llama = tiny_llama();
    tied_llama.tie_embeddings = true;
    for cfg in [preset("tiny"), untied_gpt2, tiny_llama(), tied_llama] {
        let model = cfg.init::<NdArray>(&device);
        assert_eq!(model.num_params() as u64, cfg.param_count(), "{cfg:?}");
    }
}

#[test]
fn sites_are_unique_ordered_and_match_the_architecture() {
    let tiny = preset("tiny");
    assert_eq!(
        tiny.sites(),
        [
            "h.0.attn.qkv",
            "h.0.attn.scores",
            "h.0.attn.values",
            "h.0.attn.proj",
            "h.0.mlp.fc",
            "h.0.mlp.proj",
            "h.1.attn.qkv",
            "h.1.attn.scores",
            "h.1.attn.values",
            "h.1.attn.proj",
            "h.1.mlp.fc",
            "h.1.mlp.proj",
            "lm_head",
        ]
    );
    let llama = tiny_llama();
    assert!(llama.sites().contains(&"h.1.mlp.gate_up".to_string()));
    assert!(!llama.sites().iter().any(|s| s.ends_with(".fc")));
    for name in PRESETS {
        let cfg = preset(name);
        let sites = cfg.sites();
        assert_eq!(sites.len(), 6 * cfg.n_layer + 1, "{name}");
        assert_eq!(
            sites.iter().collect::<HashSet<_>>().len(),
            sites.len(),
            "{name}"
        );
        assert_eq!(sites, cfg.sites(), "stable");
    }
}

#[test]
fn presets_validate_and_have_documented_shapes() {
    let mini = preset("gpt2-mini");
    assert_eq!(
        (
            mini.n_layer,
            mini.n_head,
            mini.d_model,
            mini.context,
            mini.vocab_size
        ),
        (4, 4, 128, 128, 256)
    );
    let l = preset("llama-120m");
    assert_eq!(l.arch, Arch::Llama);
    assert!(!l.tie_embeddings);
    let n = l.param_count();
    assert!((110_000_000..130_000_000).contains(&n), "{n}");
}

#[test]
fn unknown_preset_lists_presets() {
    let e = ModelConfig::from_preset_or_file("gpt5").unwrap_err();
    assert!(matches!(e, ConfigError::UnknownPreset { .. }));
    let msg = e.to_string();
    for p in PRESETS {
        assert!(msg.contains(p), "{msg}");
    }
}

#[test]
fn ron_file_round_trips_and_errors_have_positions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig {
        smooth_swiglu: true,
        seed: 3,
        ..tiny_llama()
    };
    let path = dir.path().join("m.ron");
    std::fs::write(&path, cfg.to_ron()).unwrap();
    assert_eq!(
        ModelConfig::from_preset_or_file(path.to_str().unwrap()).unwrap(),
        cfg
    );

    // Defaults: a file may omit norm_eps, rope_theta, smooth_swiglu, init_std, seed.
    let minimal = "(arch: Gpt2, n_layer: 1, n_head: 2, n_kv_head: 2, d_model: 8, d_ff: 32,\n\
                   vocab_size: 10, context: 4, tie_embeddings: true)";
    let c = ModelConfig::from_ron(minimal).unwrap();
    assert_eq!((c.norm_eps, c.init_std, c.seed), (1e-5, 0.02, 0));

    let bad = dir.path().join("bad.ron");
    std::fs::write(&bad, "(\n  arch: Gpt2,\n  n_layer: \"two\",\n)").unwrap();
    let e = ModelConfig::from_preset_or_file(bad.to_str().unwrap()).unwrap_err();
    match &e {
        ConfigError::Parse { line, .. } => assert_eq!(*line, 3, "{e}"),
        other => panic!("expected a parse error, got {other}"),
    }
    assert!(e.to_string().contains("bad.ron:3:"), "{e}");

    let missing = ModelConfig::from_preset_or_file("/nonexistent/x.ron").unwrap_err();
    assert!(matches!(missing, ConfigError::Io { .. }), "{missing}");

    let invalid = dir.path().join("inv.ron");
    std::fs::write(&invalid, ModelConfig { n_head: 3, ..cfg }.to_ron()).unwrap();
    let e = ModelConfig::from_preset_or_file(invalid.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
}
