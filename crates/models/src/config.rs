//! Model configuration: plain data (serde/RON), presets, and the arithmetic that needs no tensors
//! (parameter count, FLOPs per token, GEMM site list).
//!
//! Everything here is computed from the config alone so that `fp8 model info --model llama2-7b`
//! answers instantly without allocating seven billion floats, and so tests can check the
//! formulas against published figures.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which family of decoder-only transformer to build.
///
/// The family fixes the structural choices; sizes live in [`ModelConfig`].
///
/// | | `Gpt2` | `Llama` |
/// |---|---|---|
/// | norm | LayerNorm (weight, bias) | RMSNorm (weight) |
/// | positions | learned, added to the input | RoPE on q and k |
/// | MLP | `fc` → GELU (tanh approx.) → `proj` | fused `gate_up` → SiLU(gate)·up → `proj` |
/// | biases | on every linear | none |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// GPT-2 (Radford et al. 2019), as in nanoGPT.
    Gpt2,
    /// Llama / Llama-2 (Touvron et al. 2023), as in HF `LlamaForCausalLM`.
    Llama,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Gpt2 => "gpt2",
            Arch::Llama => "llama",
        })
    }
}

fn default_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_init_std() -> f64 {
    0.02
}

/// A decoder-only transformer, as data.
///
/// Fields without a `serde(default)` must be written out in a RON file; start from a preset
/// (`fp8 model info --model gpt2-mini --ron`) and edit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Structural family (norm, MLP, positions, biases).
    pub arch: Arch,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (grouped-query attention); equal to `n_head` for plain MHA.
    pub n_kv_head: usize,
    /// Residual stream width; `head_dim = d_model / n_head`.
    pub d_model: usize,
    /// Hidden width of the MLP (GPT-2: `4·d_model`; Llama: the SwiGLU width, e.g. 11008).
    pub d_ff: usize,
    /// Vocabulary size (rows of the token embedding, columns of the logits).
    pub vocab_size: usize,
    /// Maximum sequence length (rows of the GPT-2 position table; RoPE has no table).
    pub context: usize,
    /// Use the token embedding as the output projection (`lm_head = wteᵀ`).
    pub tie_embeddings: bool,
    /// Epsilon of LayerNorm / RMSNorm.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// RoPE base θ (Llama only).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Smooth-SwiGLU (Fishman et al. 2024): per-channel power-of-two scaling around the SwiGLU
    /// product before `mlp.proj`. Llama only; exact in full precision. See [`crate::model`].
    #[serde(default)]
    pub smooth_swiglu: bool,
    /// Standard deviation of the normal init (GPT-2: 0.02); residual projections use
    /// `init_std / sqrt(2·n_layer)`.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// Seed of the parameter init; the same seed gives the same weights on every backend.
    #[serde(default)]
    pub seed: u64,
    /// QK-layernorm (Dehghani et al. 2023, Wortsman et al. 2023): normalise every query and key
    /// head over `head_dim` before the `attn.scores` GEMM (and before RoPE), with the family's
    /// norm (GPT-2: LayerNorm with gain and bias; Llama: RMSNorm with a gain), one learned gain of
    /// `head_dim` shared by all heads of a layer (`h.{i}.attn.q_norm`, `h.{i}.attn.k_norm`), as in
    /// OLMo-2 and Qwen-3. Bounds the attention logits `q·kᵀ/√d` by `√d·|g_q|·|g_k|`, which stops
    /// the attention-logit growth that makes low-precision training diverge. Adds no GEMM site.
    #[serde(default)]
    pub qk_norm: bool,
    /// z-loss coefficient `c` (PaLM, Chowdhery et al. 2022: 1e-4): the training loss
    /// ([`Model::loss`](crate::Model::loss)) adds `c · mean over tokens of (log Z)²`, with
    /// `log Z = logsumexp` of the token's output logits, pulling the log-partition towards 0 so
    /// the softmax stays in a well-conditioned range. 0 turns it off.
    #[serde(default)]
    pub z_loss: f64,
}

/// Why a model config could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither a preset name nor a path ending in `.ron`.
    #[error("unknown model preset `{name}`; presets are: {}; or pass a path to a .ron file, or hf:DIR for a Hugging Face checkpoint directory", PRESETS.join(", "))]
    UnknownPreset {
        /// What the user passed.
        name: String,
    },
    /// The file could not be read.
    #[error("cannot read model config {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid RON for a [`ModelConfig`].
    #[error("{path}:{line}:{col}: invalid model config: {message}")]
    Parse {
        /// The path as given.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        col: usize,
        /// What the parser expected.
        message: String,
    },
    /// The values parse but do not describe a buildable model.
    #[error("invalid model config: {0}")]
    Invalid(String),
    /// `hf:DIR` names a Hugging Face checkpoint whose `config.json` cannot be used.
    #[error("{0}")]
    Hf(Box<crate::hf::HfError>),
}

/// Names accepted by [`ModelConfig::preset`].
pub const PRESETS: &[&str] = &["tiny", "gpt2-mini", "gpt2-124m", "llama-120m", "llama2-7b"];

impl ModelConfig {
    /// A GPT-2 config with the usual derived sizes (`d_ff = 4·d`, MHA, tied embeddings).
    pub fn gpt2(
        n_layer: usize,
        n_head: usize,
        d_model: usize,
        context: usize,
        vocab_size: usize,
    ) -> Self {
        Self {
            arch: Arch::Gpt2,
            n_layer,
            n_head,
            n_kv_head: n_head,
            d_model,
            d_ff: 4 * d_model,
            vocab_size,
            context,
            tie_embeddings: true,
            norm_eps: default_norm_eps(),
            rope_theta: default_rope_theta(),
            smooth_swiglu: false,
            init_std: default_init_std(),
            seed: 0,
            qk_norm: false,
            z_loss: 0.0,
        }
    }

    /// A Llama config (untied head, no biases).
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        n_layer: usize,
        n_head: usize,
        n_kv_head: usize,
        d_model: usize,
        d_ff: usize,
        context: usize,
        vocab_size: usize,
    ) -> Self {
        Self {
            arch: Arch::Llama,
            n_kv_head,
            d_ff,
            tie_embeddings: false,
            ..Self::gpt2(n_layer, n_head, d_model, context, vocab_size)
        }
    }

    /// A named preset; see [`PRESETS`].
    ///
    /// - `tiny`: GPT-2, 2 layers, d 32, 2 heads, ctx 16, vocab 64 (tests).
    /// - `gpt2-mini`: GPT-2, 4 layers, 4 heads, d 128, ctx 128, vocab 256 (the benchmark model).
    /// - `gpt2-124m`: GPT-2 small, 12 layers, 12 heads, d 768, ctx 1024, vocab 50257, tied.
    /// - `llama-120m`: a TinyLlama-shaped small Llama: 12 layers, d 768, 12 heads, 4 KV heads
    ///   (GQA 3:1, as TinyLlama's 32:4 is too coarse at this width), SwiGLU width 2048
    ///   (≈ 8/3·d rounded to a multiple of 256), vocab 32000 (Llama tokenizer), ctx 1024, untied.
    ///   124.7 M parameters, of which 49.2 M are the two embedding tables.
    /// - `llama2-7b`: Llama-2-7B (32 layers, d 4096, 32 heads, MHA, d_ff 11008, vocab 32000,
    ///   ctx 4096); for counting, too large to train here.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "tiny" => Self::gpt2(2, 2, 32, 16, 64),
            "gpt2-mini" => Self::gpt2(4, 4, 128, 128, 256),
            "gpt2-124m" => Self::gpt2(12, 12, 768, 1024, 50257),
            "llama-120m" => Self::llama(12, 12, 4, 768, 2048, 1024, 32000),
            "llama2-7b" => Self::llama(32, 32, 32, 4096, 11008, 4096, 32000),
            _ => return None,
        })
    }

    /// Resolve a preset name, read a `.ron` file when `spec` is not a preset, or read the
    /// `config.json` of the Hugging Face checkpoint a spec `hf:DIR` names (the architecture
    /// only: [`crate::HfCheckpoint`] reads the weights).
    ///
    /// The result is validated.
    pub fn from_preset_or_file(spec: &str) -> Result<Self, ConfigError> {
        if let Some(dir) = crate::hf::spec_dir(spec) {
            return Self::from_hf_dir(dir).map_err(|e| ConfigError::Hf(Box::new(e)));
        }
        let config = match Self::preset(spec) {
            Some(c) => c,
            None => {
                let path = Path::new(spec);
                let looks_like_file = path.extension().is_some_and(|e| e == "ron") || path.exists();
                if !looks_like_file {
                    return Err(ConfigError::UnknownPreset {
                        name: spec.to_string(),
                    });
                }
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: spec.to_string(),
                    source,
                })?;
                Self::from_ron(&text).map_err(|e| match e {
                    ConfigError::Parse {
                        line, col, message, ..
                    } => ConfigError::Parse {
                        path: spec.to_string(),
                        line,
                        col,
                        message,
                    },
                    other => other,
                })?
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Parse RON text (the path in a parse error is `<string>`). Does not validate.
    pub fn from_ron(text: &str) -> Result<Self, ConfigError> {
        ron::from_str(text).map_err(|e: ron::error::SpannedError| ConfigError::Parse {
            path: "<string>".to_string(),
            line: e.position.line,
            col: e.position.col,
            message: e.code.to_string(),
        })
    }

    /// Pretty RON, readable back by [`ModelConfig::from_ron`].
    pub fn to_ron(&self) -> String {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
            .expect("a ModelConfig always serializes")
    }

    /// Check that the sizes fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("d_model", self.d_model),
            ("d_ff", self.d_ff),
            ("vocab_size", self.vocab_size),
            ("context", self.context),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return bad(format!(
                "d_model ({}) must be a multiple of n_head ({})",
                self.d_model, self.n_head
            ));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad(format!(
                "n_head ({}) must be a multiple of n_kv_head ({})",
                self.n_head, self.n_kv_head
            ));
        }
        if self.arch == Arch::Llama && !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "RoPE needs an even head_dim, got {}",
                self.head_dim()
            ));
        }
        if self.smooth_swiglu && self.arch != Arch::Llama {
            return bad("smooth_swiglu applies to the Llama (SwiGLU) MLP only".to_string());
        }
        if !(self.norm_eps > 0.0 && self.init_std > 0.0 && self.rope_theta > 0.0) {
            return bad("norm_eps, init_std and rope_theta must be positive".to_string());
        }
        if !(self.z_loss >= 0.0 && self.z_loss.is_finite()) {
            return bad(format!(
                "z_loss must be a finite coefficient >= 0 (0 turns it off), got {}",
                self.z_loss
            ));
        }
        Ok(())
    }

    /// `d_model / n_head`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    /// Output width of the fused `attn.qkv` GEMM: `(n_head + 2·n_kv_head)·head_dim`.
    pub fn qkv_dim(&self) -> usize {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim()
    }

    /// Output width of the first MLP GEMM (`fc`: `d_ff`; fused `gate_up`: `2·d_ff`).
    pub fn mlp_in_dim(&self) -> usize {
        match self.arch {
            Arch::Gpt2 => self.d_ff,
            Arch::Llama => 2 * self.d_ff,
        }
    }

    fn has_bias(&self) -> bool {
        self.arch == Arch::Gpt2
    }

    /// Weight shapes `[d_in, d_out]` of the GEMMs with a weight, per block and for the head,
    /// in site order. Attention score/value products have no weight and are not listed.
    fn weight_gemms(&self) -> (Vec<(usize, usize)>, (usize, usize)) {
        let d = self.d_model;
        let block = vec![
            (d, self.qkv_dim()),
            (self.n_head * self.head_dim(), d),
            (d, self.mlp_in_dim()),
            (self.d_ff, d),
        ];
        (block, (d, self.vocab_size))
    }

    /// Number of trainable parameters, counted from the config (no allocation).
    ///
    /// Tied embeddings are counted once. Equals `Module::num_params` of [`ModelConfig::init`].
    pub fn param_count(&self) -> u64 {
        let d = self.d_model as u64;
        let bias = self.has_bias();
        let (block_gemms, _) = self.weight_gemms();
        let norm_params = |width: u64| if bias { 2 * width } else { width };
        let norm = norm_params(d);
        let qk_norm = if self.qk_norm {
            2 * norm_params(self.head_dim() as u64)
        } else {
            0
        };
        let per_block: u64 = block_gemms
            .iter()
            .map(|&(i, o)| (i * o) as u64 + if bias { o as u64 } else { 0 })
            .sum::<u64>()
            + 2 * norm
            + qk_norm;
        let embed = self.vocab_size as u64 * d;
        let pos = if self.arch == Arch::Gpt2 {
            self.context as u64 * d
        } else {
            0
        };
        let head = if self.tie_embeddings { 0 } else { embed };
        embed + pos + self.n_layer as u64 * per_block + norm + head
    }

    /// Weight elements that take part in a GEMM (every linear's weight and the output head,
    /// counted even when tied); biases, norms and the embedding lookup are excluded.
    pub fn gemm_param_count(&self) -> u64 {
        let (block, (hi, ho)) = self.weight_gemms();
        let per_block: u64 = block.iter().map(|&(i, o)| (i * o) as u64).sum();
        self.n_layer as u64 * per_block + (hi * ho) as u64
    }

    /// Training FLOPs (forward + backward) per token at full context:
    /// `6·N_gemm + 12·n_layer·context·(n_head·head_dim)`.
    ///
    /// This is the PaLM/nanoGPT estimate with `N` replaced by [`gemm_param_count`]
    /// (so the tied head's `V·d` GEMM counts and embedding lookups don't): each weight
    /// element costs 2 FLOPs forward and 4 backward; attention adds `q·kᵀ` and `p·v`, each
    /// `2·T·d` per token per layer forward, times 3 for training. No causal discount, so this
    /// matches how MFU is usually reported. Forward-only FLOPs are a third of this.
    ///
    /// [`gemm_param_count`]: ModelConfig::gemm_param_count
    pub fn flops_per_token(&self) -> u64 {
        let attn =
            12 * self.n_layer as u64 * self.context as u64 * (self.n_head * self.head_dim()) as u64;
        6 * self.gemm_param_count() + attn
    }

    /// Names of the GEMM sites in execution order (forward pass).
    ///
    /// Per block `h.{i}`: `attn.qkv`, `attn.scores`, `attn.values`, `attn.proj`, then
    /// `mlp.fc` (GPT-2) or `mlp.gate_up` (Llama), then `mlp.proj`; last `lm_head`.
    /// That is `6·n_layer + 1` names.
    pub fn sites(&self) -> Vec<String> {
        let first_mlp = match self.arch {
            Arch::Gpt2 => "fc",
            Arch::Llama => "gate_up",
        };
        let mut out = Vec::with_capacity(6 * self.n_layer + 1);
        for i in 0..self.n_layer {
            for s in ["attn.qkv", "attn.scores", "attn.values", "attn.proj"] {
                out.push(format!("h.{i}.{s}"));
            }
            out.push(format!("h.{i}.mlp.{first_mlp}"));
            out.push(format!("h.{i}.mlp.proj"));
        }
        out.push("lm_head".to_string());
        out
    }
}
