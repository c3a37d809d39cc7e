//! `config.json` of `GPT2LMHeadModel` / `LlamaForCausalLM` ↔ [`ModelConfig`].
//!
//! Missing fields take the defaults of `transformers`' `GPT2Config` / `LlamaConfig`, so a file
//! means here what it means there. A field whose value selects something this model does not
//! compute (another activation, RoPE scaling, biases on Llama's projections, …) is refused with
//! the field, the value and what is supported; fields that only matter for training in PyTorch
//! (dropout rates, token ids, `torch_dtype`, `use_cache`, …) are ignored.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::HfError;
use crate::config::{Arch, ModelConfig};

/// Typed reads of a `config.json` object, with the path for errors.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: String) -> HfError {
        HfError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message,
        }
    }

    /// The field, treating JSON `null` as absent.
    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn usize(&self, field: &str, default: Option<usize>) -> Result<usize, HfError> {
        match self.get(field) {
            None => default.ok_or_else(|| self.err(field, "is required".to_string())),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.err(field, format!("must be a non-negative integer, got {v}"))),
        }
    }

    fn f64(&self, field: &str, default: f64) -> Result<f64, HfError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(field, format!("must be a number, got {v}"))),
        }
    }

    fn bool(&self, field: &str, default: bool) -> Result<bool, HfError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("must be true or false, got {v}"))),
        }
    }

    fn str<'s>(&'s self, field: &str, default: &'s str) -> Result<&'s str, HfError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(field, format!("must be a string, got {v}"))),
        }
    }

    /// Refuse a boolean field unless it has the one value this model computes.
    fn require_bool(&self, field: &str, default: bool, supported: bool) -> Result<(), HfError> {
        let v = self.bool(field, default)?;
        if v != supported {
            return Err(self.err(
                field,
                format!("= {v} is not supported; only {supported} is implemented"),
            ));
        }
        Ok(())
    }

    /// Refuse a string field unless it is one of `supported`.
    fn require_one_of(
        &self,
        field: &str,
        default: &str,
        supported: &[&str],
    ) -> Result<(), HfError> {
        let v = self.str(field, default)?;
        if !supported.contains(&v) {
            return Err(self.err(
                field,
                format!(
                    "= \"{v}\" is not supported; supported: {}",
                    supported.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// GPT-2's GELU is the tanh approximation; these are its two names in `transformers`.
const GPT2_ACTIVATIONS: &[&str] = &["gelu_new", "gelu_pytorch_tanh"];
/// Llama's SwiGLU gate; `swish` is the same function in `transformers`' `ACT2FN`.
const LLAMA_ACTIVATIONS: &[&str] = &["silu", "swish"];

/// Parse the text of `path` (a `config.json`). Validates the result.
pub(crate) fn parse(text: &str, path: &Path) -> Result<ModelConfig, HfError> {
    let value: Value = serde_json::from_str(text).map_err(|e| HfError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = value.as_object().ok_or_else(|| HfError::Json {
        path: path.to_path_buf(),
        message: "the top level is not a JSON object".to_string(),
    })?;
    let f = Fields { map, path };
    let model_type = f.str("model_type", "")?;
    let (arch, expected_architecture) = match model_type {
        "gpt2" => (Arch::Gpt2, "GPT2LMHeadModel"),
        "llama" => (Arch::Llama, "LlamaForCausalLM"),
        other => {
            return Err(f.err(
                "model_type",
                format!("= \"{other}\" is not supported; supported: gpt2, llama"),
            ))
        }
    };
    if let Some(list) = f.get("architectures") {
        let names: Vec<&str> = list
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if names.as_slice() != [expected_architecture] {
            return Err(f.err(
                "architectures",
                format!("= {list} is not supported; a {model_type} checkpoint must be [\"{expected_architecture}\"]"),
            ));
        }
    }
    let config = match arch {
        Arch::Gpt2 => gpt2(&f)?,
        Arch::Llama => llama(&f)?,
    };
    config.validate()?;
    Ok(config)
}

fn gpt2(f: &Fields) -> Result<ModelConfig, HfError> {
    f.require_one_of("activation_function", "gelu_new", GPT2_ACTIVATIONS)?;
    f.require_bool("scale_attn_weights", true, true)?;
    f.require_bool("scale_attn_by_inverse_layer_idx", false, false)?;
    f.require_bool("add_cross_attention", false, false)?;
    let d = f.usize("n_embd", Some(768))?;
    let mut cfg = ModelConfig::gpt2(
        f.usize("n_layer", Some(12))?,
        f.usize("n_head", Some(12))?,
        d,
        f.usize("n_positions", Some(1024))?,
        f.usize("vocab_size", Some(50257))?,
    );
    cfg.d_ff = f.usize("n_inner", Some(4 * d))?;
    cfg.norm_eps = f.f64("layer_norm_epsilon", 1e-5)?;
    cfg.tie_embeddings = f.bool("tie_word_embeddings", true)?;
    Ok(cfg)
}

fn llama(f: &Fields) -> Result<ModelConfig, HfError> {
    f.require_one_of("hidden_act", "silu", LLAMA_ACTIVATIONS)?;
    f.require_bool("attention_bias", false, false)?;
    f.require_bool("mlp_bias", false, false)?;
    let d = f.usize("hidden_size", Some(4096))?;
    let n_head = f.usize("num_attention_heads", Some(32))?;
    let mut cfg = ModelConfig::llama(
        f.usize("num_hidden_layers", Some(32))?,
        n_head,
        f.usize("num_key_value_heads", Some(n_head))?,
        d,
        f.usize("intermediate_size", Some(11008))?,
        f.usize("max_position_embeddings", Some(2048))?,
        f.usize("vocab_size", Some(32000))?,
    );
    if n_head > 0 && d.is_multiple_of(n_head) {
        let head_dim = f.usize("head_dim", Some(d / n_head))?;
        if head_dim != d / n_head {
            return Err(f.err(
                "head_dim",
                format!(
                    "= {head_dim} is not supported; only hidden_size / num_attention_heads = {} is",
                    d / n_head
                ),
            ));
        }
    }
    cfg.norm_eps = f.f64("rms_norm_eps", 1e-6)?;
    cfg.tie_embeddings = f.bool("tie_word_embeddings", false)?;
    cfg.rope_theta = rope_theta(f)?;
    Ok(cfg)
}

/// θ of plain RoPE, from `rope_theta` (+ `rope_scaling`) or, in newer files, `rope_parameters`.
/// Any RoPE variant other than the default (linear, dynamic, YaRN, llama3, …) is refused.
fn rope_theta(f: &Fields) -> Result<f64, HfError> {
    let mut theta = f.f64("rope_theta", 10_000.0)?;
    for field in ["rope_scaling", "rope_parameters"] {
        let Some(v) = f.get(field) else { continue };
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind != "default" {
            return Err(f.err(
                field,
                format!("= {v} is not supported; only plain RoPE (rope_type \"default\") is implemented"),
            ));
        }
        if let Some(t) = v.get("rope_theta") {
            theta = t
                .as_f64()
                .ok_or_else(|| f.err(field, format!("rope_theta must be a number, got {t}")))?;
        }
    }
    Ok(theta)
}

/// The `config.json` that `transformers` builds this model from. Errors for a model that the
/// HF class cannot express.
pub(crate) fn to_json(cfg: &ModelConfig) -> Result<Value, HfError> {
    if cfg.qk_norm {
        return Err(HfError::Export(
            "the model uses QK-norm, which GPT2LMHeadModel and LlamaForCausalLM do not have"
                .to_string(),
        ));
    }
    Ok(match cfg.arch {
        Arch::Gpt2 => {
            if cfg.n_kv_head != cfg.n_head {
                return Err(HfError::Export(format!(
                    "a GPT-2 model with n_kv_head {} != n_head {} (grouped-query attention) has no GPT2LMHeadModel equivalent",
                    cfg.n_kv_head, cfg.n_head
                )));
            }
            json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": cfg.vocab_size,
                "n_positions": cfg.context,
                "n_embd": cfg.d_model,
                "n_layer": cfg.n_layer,
                "n_head": cfg.n_head,
                "n_inner": cfg.d_ff,
                "activation_function": "gelu_new",
                "layer_norm_epsilon": cfg.norm_eps,
                "tie_word_embeddings": cfg.tie_embeddings,
                "scale_attn_weights": true,
                "resid_pdrop": 0.0,
                "embd_pdrop": 0.0,
                "attn_pdrop": 0.0,
                "torch_dtype": "float32",
            })
        }
        Arch::Llama => json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "intermediate_size": cfg.d_ff,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_kv_head,
            "head_dim": cfg.head_dim(),
            "hidden_act": "silu",
            "max_position_embeddings": cfg.context,
            "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta,
            "rope_scaling": null,
            "attention_bias": false,
            "mlp_bias": false,
            "tie_word_embeddings": cfg.tie_embeddings,
            "torch_dtype": "float32",
        }),
    })
}
