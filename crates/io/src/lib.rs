//! Input and output for fp8 training runs, kept free of burn so it compiles fast and can be
//! tested on its own:
//!
//! - [`tensorboard`]: a small TensorBoard event-file writer (scalars and histograms), with the
//!   HParams summaries of a sweep ([`tensorboard::hparams`]) and Custom Scalars layouts
//!   ([`tensorboard::custom_scalars`]).
//! - [`data`]: token datasets (a synthetic Markov source with a known entropy rate, byte-level or
//!   BPE-tokenized text, nanoGPT `.bin` shards) and deterministic, resumable batching.
//! - [`npy`]: float32 `.npy` files (`fp8 cast`, `fp8 sharpness --dump-logits`).

pub mod data;
pub mod npy;
pub mod tensorboard;
