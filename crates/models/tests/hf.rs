//! Hugging Face checkpoints: tiny random checkpoints written by tests/hf_reference.py load and
//! give the logits of an independent numpy forward pass of the HF architectures; export → load
//! is bit-exact and the exported directory reads back in numpy as HF would read it; malformed
//! checkpoints and unsupported configs are refused with errors naming the problem.
//!
//! The cross-checks need a Python with `numpy` and `safetensors`, named by `FP8_PYTHON`. Without
//! it they say so and pass, unless `CI` is set. The error tests need no Python.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use burn::backend::NdArray;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Int, Tensor, TensorData};
use fp8_models::{HfError, Model, ModelConfig};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

type B = NdArray;

fn python() -> Option<String> {
    match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but FP8_PYTHON is not: point it at a Python with `numpy` and \
                     `safetensors` (.ci/run does this)"
                );
            }
            eprintln!(
                "SKIPPED hf reference checks: set FP8_PYTHON to a Python with `numpy` and \
                 `safetensors` installed to run them"
            );
            None
        }
    }
}

fn reference_py(python: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "hf_reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(tokens [b, t], logits [b·t·v] in f64)` from `dir/reference.safetensors`.
fn read_reference(dir: &Path) -> (Vec<i64>, [usize; 2], Vec<f64>) {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tokens = file.tensor("tokens").unwrap();
    let shape = [tokens.shape()[0], tokens.shape()[1]];
    let ids = tokens
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let logits = file.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F64);
    let values = logits
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (ids, shape, values)
}

fn logits_of(model: &Model<B>, ids: &[i64], shape: [usize; 2]) -> Vec<f32> {
    let tokens =
        Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), shape), &Default::default());
    model.forward(tokens).into_data().to_vec::<f32>().unwrap()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "{what}: logits differ by up to {worst}");
}

/// Every float parameter's bits, in module order.
struct Bits(Vec<Vec<u32>>);

impl ModuleVisitor<B> for Bits {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let v = param.val().into_data().to_vec::<f32>().unwrap();
        self.0.push(v.iter().map(|x| x.to_bits()).collect());
    }
}

fn bits(model: &Model<B>) -> Vec<Vec<u32>> {
    let mut v = Bits(Vec::new());
    model.visit(&mut v);
    v.0
}

#[test]
fn hf_checkpoints_match_the_numpy_reference_and_round_trip() {
    let Some(py) = python() else { return };
    let device = Default::default();
    for variant in ["gpt2", "gpt2-untied-sharded", "llama-gqa", "llama-tied"] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let src_s = src.to_str().unwrap();
        reference_py(&py, &["make", src_s, variant]);
        reference_py(&py, &["logits", src_s]);
        let (ids, shape, want) = read_reference(&src);

        let model = Model::<B>::load_hf(&src, &device).unwrap_or_else(|e| panic!("{variant}: {e}"));
        let got = logits_of(&model, &ids, shape);
        assert_close(&got, &want, &format!("{variant}: load"));

        // Export, read the export back in numpy as HF would, and load it again.
        let out = tmp.path().join("out");
        model.export_hf(&out).unwrap();
        let out_s = out.to_str().unwrap();
        reference_py(&py, &["logits", out_s]);
        let (ids2, _, want2) = read_reference(&out);
        assert_eq!(ids, ids2);
        assert_close(&got, &want2, &format!("{variant}: numpy on the export"));

        let again = Model::<B>::load_hf(&out, &device).unwrap();
        assert_eq!(again.config, model.config, "{variant}");
        assert_eq!(
            bits(&again),
            bits(&model),
            "{variant}: load → export → load"
        );
        assert_eq!(logits_of(&again, &ids, shape), got, "{variant}");
    }
}

// ---- refusals (no Python needed) -------------------------------------------------------------

fn tiny_gpt2() -> ModelConfig {
    ModelConfig {
        tie_embeddings: false,
        ..ModelConfig::gpt2(1, 2, 8, 6, 11)
    }
}

/// A fresh export of `cfg` in a temporary directory.
fn exported(cfg: &ModelConfig) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    cfg.init::<B>(&Default::default())
        .export_hf(dir.path())
        .unwrap();
    dir
}

/// Rewrite `dir/model.safetensors` through `edit` (name → (dtype, shape, bytes)).
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = file
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
            )
        })
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(json.as_object_mut().unwrap());
    std::fs::write(&path, json.to_string()).unwrap();
}

fn load_err(dir: &Path) -> String {
    match Model::<B>::load_hf(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_missing_extra_or_misshaped_tensor_is_named() {
    let dir = exported(&tiny_gpt2());
    edit_weights(dir.path(), |m| {
        m.remove("transformer.h.0.ln_1.bias").unwrap();
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("missing tensor `transformer.h.0.ln_1.bias`"),
        "{e}"
    );

    let dir = exported(&tiny_gpt2());
    edit_weights(dir.path(), |m| {
        let extra = m["transformer.ln_f.bias"].clone();
        m.insert("transformer.h.0.attn.q_norm.weight".to_string(), extra);
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("unexpected tensor(s)") && e.contains("transformer.h.0.attn.q_norm.weight"),
        "{e}"
    );

    let dir = exported(&tiny_gpt2());
    edit_weights(dir.path(), |m| {
        let (d, _, b) = m["transformer.wpe.weight"].clone();
        m.insert("transformer.wpe.weight".to_string(), (d, vec![8, 6], b));
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("`transformer.wpe.weight` has shape [8, 6], the config needs [6, 8]"),
        "{e}"
    );

    let dir = exported(&tiny_gpt2());
    edit_weights(dir.path(), |m| {
        let (_, s, b) = m["transformer.wte.weight"].clone();
        m.insert("transformer.wte.weight".to_string(), (Dtype::I32, s, b));
    });
    let e = load_err(dir.path());
    assert!(e.contains("`transformer.wte.weight` has dtype I32"), "{e}");
}

#[test]
fn half_precision_weights_are_widened_exactly() {
    // BF16 and F16 values are exactly representable in f32: the loaded weight is the value.
    let dir = exported(&tiny_gpt2());
    let w: Vec<f32> = (0..11 * 8).map(|i| (i as f32 - 40.0) * 0.015625).collect();
    edit_weights(dir.path(), |m| {
        let bf: Vec<u8> = w
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        m.insert(
            "transformer.wte.weight".to_string(),
            (Dtype::BF16, vec![11, 8], bf),
        );
        let h: Vec<u8> = (0..6 * 8)
            .flat_map(|i| half::f16::from_f32(i as f32 * 0.25).to_le_bytes())
            .collect();
        m.insert(
            "transformer.wpe.weight".to_string(),
            (Dtype::F16, vec![6, 8], h),
        );
    });
    let model = Model::<B>::load_hf(dir.path(), &Default::default()).unwrap();
    assert_eq!(model.wte.val().into_data().to_vec::<f32>().unwrap(), w);
    let wpe = model
        .wpe
        .unwrap()
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(wpe, (0..48).map(|i| i as f32 * 0.25).collect::<Vec<_>>());
}

#[test]
fn unsupported_config_values_are_refused_with_the_field() {
    let cases: [(&str, serde_json::Value, &str); 5] = [
        ("activation_function", "gelu".into(), "`activation_function` = \"gelu\" is not supported; supported: gelu_new, gelu_pytorch_tanh"),
        ("model_type", "mistral".into(), "`model_type` = \"mistral\" is not supported; supported: gpt2, llama"),
        ("scale_attn_by_inverse_layer_idx", true.into(), "`scale_attn_by_inverse_layer_idx` = true is not supported"),
        ("n_head", 3.into(), "d_model (8) must be a multiple of n_head (3)"),
        ("architectures", serde_json::json!(["GPT2ForSequenceClassification"]), "[\"GPT2LMHeadModel\"]"),
    ];
    for (field, value, message) in cases {
        let dir = exported(&tiny_gpt2());
        edit_config(dir.path(), |c| {
            c.insert(field.to_string(), value.clone());
        });
        let e = load_err(dir.path());
        assert!(e.contains(message), "{field} = {value}: {e}");
        assert!(e.contains("config.json"), "{e}");
    }

    let llama = ModelConfig::llama(1, 2, 1, 8, 12, 6, 11);
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "hidden_act",
            "gelu".into(),
            "`hidden_act` = \"gelu\" is not supported; supported: silu, swish",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "`rope_scaling`",
        ),
        (
            "attention_bias",
            true.into(),
            "`attention_bias` = true is not supported",
        ),
        (
            "mlp_bias",
            true.into(),
            "`mlp_bias` = true is not supported",
        ),
        (
            "head_dim",
            8.into(),
            "`head_dim` = 8 is not supported; only hidden_size / num_attention_heads = 4",
        ),
    ];
    for (field, value, message) in cases {
        let dir = exported(&llama);
        edit_config(dir.path(), |c| {
            c.insert(field.to_string(), value.clone());
        });
        let e = load_err(dir.path());
        assert!(e.contains(message), "{field} = {value}: {e}");
    }

    // Newer files state θ in `rope_parameters`; a default rope_type there is accepted.
    let dir = exported(&llama);
    edit_config(dir.path(), |c| {
        c.remove("rope_theta");
        c.insert(
            "rope_parameters".to_string(),
            serde_json::json!({"rope_type": "default", "rope_theta": 123.0}),
        );
    });
    assert_eq!(
        ModelConfig::from_hf_dir(dir.path()).unwrap().rope_theta,
        123.0
    );

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ModelConfig::from_hf_dir(empty.path()),
        Err(HfError::Io { .. })
    ));
    std::fs::write(
        empty.path().join("config.json"),
        r#"{"model_type": "gpt2"}"#,
    )
    .unwrap();
    let e = load_err(empty.path());
    assert!(
        e.contains("no model.safetensors or model.safetensors.index.json"),
        "{e}"
    );
}

#[test]
fn models_hf_cannot_express_are_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let qk = ModelConfig {
        qk_norm: true,
        ..tiny_gpt2()
    };
    let e = qk
        .init::<B>(&Default::default())
        .export_hf(dir.path())
        .unwrap_err();
    assert!(e.to_string().contains("QK-norm"), "{e}");
    let gqa = ModelConfig {
        n_kv_head: 1,
        ..tiny_gpt2()
    };
    let e = gqa
        .init::<B>(&Default::default())
        .export_hf(dir.path())
        .unwrap_err();
    assert!(e.to_string().contains("grouped-query"), "{e}");
    assert!(
        !dir.path().join("config.json").exists(),
        "nothing is written on refusal"
    );
}
