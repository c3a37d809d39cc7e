//! Decoder-only transformers (GPT-2 and Llama families) for reduced-precision training studies.
//!
//! One model type, [`Model`], covers both families; a [`ModelConfig`] (plain data, RON) chooses
//! the family and sizes. The model is generic over any burn [`Backend`](burn::tensor::backend::Backend)
//! so that the `Precision` decorator of `fp8-core` can wrap the real backend, and it names every
//! GEMM with [`fp8_core::sites`] so a recipe can address each one (`h.3.attn.qkv`, `lm_head`, …;
//! see `docs/DESIGN.md` §3 and [`ModelConfig::sites`]).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use fp8_models::ModelConfig;
//!
//! let cfg = ModelConfig::from_preset_or_file("tiny").unwrap();
//! let model = cfg.init::<NdArray>(&Default::default());
//! let tokens = Tensor::<NdArray, 2, Int>::zeros([2, 8], &Default::default());
//! assert_eq!(model.forward(tokens).dims(), [2, 8, cfg.vocab_size]);
//! ```

pub mod config;
pub mod hf;
mod init;
pub mod model;

pub use config::{Arch, ConfigError, ModelConfig, PRESETS};
pub use hf::{HfCheckpoint, HfError};
pub use model::{cross_entropy, Diagnostics, Model};
