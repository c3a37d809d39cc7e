//! Hugging Face checkpoints: load `GPT2LMHeadModel` and `LlamaForCausalLM` from a directory with
//! `config.json` and `model.safetensors` (or shards with `model.safetensors.index.json`), and
//! export a model as such a directory that `transformers` loads.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use fp8_models::Model;
//! # fn main() -> Result<(), fp8_models::HfError> {
//! let model = Model::<NdArray>::load_hf("checkpoints/gpt2".as_ref(), &Default::default())?;
//! model.export_hf("out/gpt2-copy".as_ref())?;
//! # Ok(()) }
//! ```
//!
//! The architecture comes from `config.json` ([`ModelConfig::from_hf_dir`]); the weights are
//! mapped name by name (table in `weights.rs`), and a missing, unexpected or mis-shaped tensor
//! is an error naming it. Weights in F32, F16, BF16 or F64 are read as `f32`; export writes F32.
//! Where the HF class computes something this model does not (another activation, RoPE scaling,
//! Llama with biases, a head dimension other than `hidden_size / num_attention_heads`), loading
//! refuses; where this model has something the HF class lacks (QK-norm, GQA on GPT-2), export
//! refuses. Smooth-SwiGLU is exact in f32 and exports as the plain SwiGLU it equals.
//!
//! A model spec `hf:DIR` (`fp8 train --model hf:DIR`, sweep files, `fp8 bench train`) names
//! such a directory: [`HfCheckpoint`] reads and checks it once and hashes its content, so a
//! run's identity holds the weights it starts from, not their path.
//!
//! Written on the `safetensors` crate directly rather than `burn-store`: the mapping fuses
//! `q/k/v` and `gate/up` into one GEMM each and transposes `nn.Linear` weights, which is most of
//! the code either way, and this keeps the error messages in HF's names.

mod checkpoint;
mod config;
mod files;
mod weights;

pub use checkpoint::{spec_dir, HfCheckpoint, SPEC_PREFIX};

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::config::{ConfigError, ModelConfig};
use crate::model::Model;

/// Why an HF checkpoint could not be loaded or a model not exported.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `config.json` or the shard index is not the JSON expected.
    #[error("{}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A `config.json` field has a value this model does not implement, or a bad type.
    #[error("{}: `{field}` {message}", path.display())]
    Field {
        /// The `config.json`.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value and what is supported.
        message: String,
    },
    /// Neither `model.safetensors` nor `model.safetensors.index.json` is in the directory.
    #[error("{}: no model.safetensors or model.safetensors.index.json (only safetensors weights are read)", dir.display())]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// A weight file is not valid safetensors.
    #[error("{}: invalid safetensors file: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A tensor is stored in a dtype other than F32, F16, BF16 or F64.
    #[error("{}: tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16, F64", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// The config needs a tensor that the checkpoint lacks.
    #[error("{}: missing tensor `{name}`", dir.display())]
    MissingTensor {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The HF name.
        name: String,
    },
    /// The checkpoint holds tensors the config does not use.
    #[error("{}: unexpected tensor(s) for this config: {}", dir.display(), names.join(", "))]
    UnexpectedTensors {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Their HF names.
        names: Vec<String>,
    },
    /// A tensor's shape does not match the config.
    #[error("{}: tensor `{name}` has shape {got:?}, the config needs {expected:?}", dir.display())]
    Shape {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The HF name.
        name: String,
        /// The shape from `config.json`.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// The sizes in `config.json` do not describe a buildable model.
    #[error("config.json: {0}")]
    Config(#[from] ConfigError),
    /// The checkpoint's files changed between checking and loading them.
    #[error("{}: the checkpoint's files changed after it was checked; start again", dir.display())]
    Changed {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// The model has a feature the HF class cannot express.
    #[error("cannot export as a Hugging Face checkpoint: {0}")]
    Export(String),
}

impl ModelConfig {
    /// The architecture of the HF checkpoint in `dir`, from its `config.json` (`model_type`
    /// `gpt2` or `llama`); validated. Fields this crate does not model (init, seed, the stability
    /// options) take their defaults.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, HfError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io {
            path: path.clone(),
            source,
        })?;
        config::parse(&text, &path)
    }
}

impl<B: Backend> Model<B> {
    /// Load the HF checkpoint in `dir` (see the [module docs](self)).
    pub fn load_hf(dir: &Path, device: &B::Device) -> Result<Self, HfError> {
        checkpoint::HfCheckpoint::load_dir(dir, device)
    }

    /// Write `config.json` and `model.safetensors` (F32, HF names) into `dir`, creating it.
    /// [`load_hf`](Self::load_hf) of the result gives back this model's parameters bit for bit.
    pub fn export_hf(&self, dir: &Path) -> Result<(), HfError> {
        let json = config::to_json(&self.config)?;
        let index = dir.join(files::INDEX);
        if index.exists() {
            return Err(HfError::Export(format!(
                "{} holds a sharded checkpoint's index, which would shadow the exported weights; export into another directory",
                index.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|source| HfError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&json).expect("a JSON value always serializes");
        std::fs::write(&path, text + "\n").map_err(|source| HfError::Io { path, source })?;
        files::write_weights(&dir.join(files::WEIGHTS), weights::tensors_of(self))
    }
}
