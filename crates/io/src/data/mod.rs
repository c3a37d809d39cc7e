//! Token datasets for training runs.
//!
//! Every source ends as a [`TokenDataset`]: two token streams (train and held-out validation), the
//! vocabulary size, and, when it is known, the *entropy floor*: the lowest cross-entropy (nats
//! per token) any model can reach on this data. Precision studies need that floor: "FP8 reaches
//! loss 2.31 and BF16 2.29" says little until you know whether the floor is 2.28 or 1.5. Only
//! the [`synthetic`] Markov source knows it exactly, which is why it exists.
//!
//! A dataset is named by a spec string (see [`DataSpec::parse`]) so that configs stay plain data:
//!
//! | spec | source |
//! |---|---|
//! | `synthetic` or `synthetic:vocab=256,order=1,tokens=1000000,seed=0,alpha_min=0.8,alpha_max=1.6` | [`synthetic::MarkovSource`] (those are the defaults; `alpha=A` sets both) |
//! | `PATH` (file, or directory of text files) or `bytes:PATH` | bytes as tokens, vocab 256 |
//! | `bpe:PATH[:VOCAB]` | BPE trained on the training split of `PATH` (default vocab 4096) |
//! | `tokenizer:TOKENIZER.json:PATH` | text encoded with a saved `tokenizers` tokenizer |
//! | `DIR` holding `train.bin`/`val.bin`, or `shards:DIR[:VOCAB]` | nanoGPT uint16 shards (default vocab 50257) |
//!
//! Batches come from [`Batcher`], which derives every offset from `(seed, step, micro-batch)` by a
//! counter-based hash, so a run resumed at step `s` sees exactly the batches it would have seen,
//! without any RNG state in the checkpoint.

mod batch;
mod rng;
mod shards;
pub mod synthetic;
mod text;

pub use batch::Batcher;
pub use synthetic::{MarkovSource, SyntheticSpec};
pub use text::train_bpe_to_file;

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong while building a dataset. Messages name the file and say what to change.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The spec string does not parse.
    #[error("bad data spec `{spec}`: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A nanoGPT shard whose length is not a multiple of 2.
    #[error(
        "{}: {len} bytes is not a whole number of little-endian uint16 tokens \
         (is this a nanoGPT train.bin/val.bin shard?)",
        path.display()
    )]
    OddLength {
        /// The shard.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// A token id that does not fit the vocabulary.
    #[error(
        "{}: token {token} at position {index} is not below the vocabulary size {vocab} \
         (give the right size with `shards:DIR:VOCAB`)",
        path.display()
    )]
    TokenOutOfRange {
        /// The file.
        path: PathBuf,
        /// Token position in the file.
        index: usize,
        /// The offending id.
        token: u32,
        /// The vocabulary size in force.
        vocab: usize,
    },
    /// Not enough tokens for what was asked.
    #[error("{what}: need at least {need} tokens, have {have}")]
    TooSmall {
        /// What was being built.
        what: String,
        /// Tokens needed.
        need: usize,
        /// Tokens available.
        have: usize,
    },
    /// The `tokenizers` crate failed (training, loading or encoding).
    #[error("tokenizer ({}): {msg}", path.display())]
    Tokenizer {
        /// The tokenizer file or the corpus.
        path: PathBuf,
        /// The message from `tokenizers`.
        msg: String,
    },
    /// Invalid synthetic-source parameters.
    #[error("synthetic source: {0}")]
    Synthetic(String),
}

/// A tokenized corpus, split into training and held-out validation tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenDataset {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Held-out validation tokens (never overlapping the training tokens).
    pub val: Vec<u32>,
    /// Every token is `< vocab_size`.
    pub vocab_size: usize,
    /// Entropy rate of the source in nats per token, when known (synthetic data only): the loss
    /// of a perfect model.
    pub entropy_floor: Option<f64>,
    /// One line saying what this is, for logs and reports.
    pub description: String,
}

/// Fraction of a text corpus (or shard-less source) held out for validation: its tail.
pub const VAL_FRACTION: f64 = 0.1;

/// Default vocabulary of `bpe:PATH`.
pub const DEFAULT_BPE_VOCAB: usize = 4096;

/// Default vocabulary of nanoGPT shards: GPT-2's.
pub const DEFAULT_SHARD_VOCAB: usize = 50257;

/// A parsed data spec; see the module docs for the grammar.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// Seeded Markov source with a known entropy rate.
    Synthetic(SyntheticSpec),
    /// A text file or directory, one token per byte.
    Bytes(PathBuf),
    /// A text file or directory, BPE trained on its training split.
    Bpe {
        /// Corpus.
        path: PathBuf,
        /// Target vocabulary size.
        vocab: usize,
    },
    /// A text file or directory, encoded with a saved `tokenizer.json`.
    Tokenizer {
        /// The `tokenizer.json`.
        tokenizer: PathBuf,
        /// Corpus.
        path: PathBuf,
    },
    /// nanoGPT `train.bin`/`val.bin` in a directory.
    Shards {
        /// Directory holding the two files.
        dir: PathBuf,
        /// Vocabulary size the ids are checked against.
        vocab: usize,
    },
}

impl DataSpec {
    /// Parse a spec string. A bare path is looked at on disk: a directory holding `train.bin`
    /// is nanoGPT shards, anything else is text read as bytes. Paths containing `:` need a
    /// prefix (`bytes:`), and cannot be the corpus of `bpe:`/`tokenizer:` if the part after the
    /// last `:` looks like a number.
    pub fn parse(spec: &str) -> Result<Self, DataError> {
        let bad = |reason: &str| DataError::BadSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let nonempty = |p: &str, what: &str| {
            if p.is_empty() {
                Err(bad(&format!("missing {what}")))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if spec == "synthetic" {
            return Ok(DataSpec::Synthetic(SyntheticSpec::default()));
        }
        if let Some(rest) = spec.strip_prefix("synthetic:") {
            return SyntheticSpec::parse(rest)
                .map(DataSpec::Synthetic)
                .map_err(|reason| bad(&reason));
        }
        if let Some(rest) = spec.strip_prefix("bytes:") {
            return Ok(DataSpec::Bytes(nonempty(rest, "path")?));
        }
        if let Some(rest) = spec.strip_prefix("bpe:") {
            let (path, vocab) = split_count(rest, DEFAULT_BPE_VOCAB).map_err(|r| bad(&r))?;
            if vocab < 257 {
                return Err(bad("BPE vocabulary must be above 256 (the byte alphabet)"));
            }
            return Ok(DataSpec::Bpe {
                path: nonempty(path, "corpus path")?,
                vocab,
            });
        }
        if let Some(rest) = spec.strip_prefix("tokenizer:") {
            let Some((tok, path)) = rest.split_once(':') else {
                return Err(bad("expected tokenizer:TOKENIZER.json:PATH"));
            };
            return Ok(DataSpec::Tokenizer {
                tokenizer: nonempty(tok, "tokenizer.json path")?,
                path: nonempty(path, "corpus path")?,
            });
        }
        if let Some(rest) = spec.strip_prefix("shards:") {
            let (dir, vocab) = split_count(rest, DEFAULT_SHARD_VOCAB).map_err(|r| bad(&r))?;
            if vocab == 0 || vocab > 65536 {
                return Err(bad("uint16 shards need a vocabulary size in 1..=65536"));
            }
            return Ok(DataSpec::Shards {
                dir: nonempty(dir, "directory")?,
                vocab,
            });
        }
        let path = nonempty(spec, "path")?;
        if path.is_dir() && path.join("train.bin").is_file() {
            Ok(DataSpec::Shards {
                dir: path,
                vocab: DEFAULT_SHARD_VOCAB,
            })
        } else {
            Ok(DataSpec::Bytes(path))
        }
    }

    /// Read, tokenize and split the data.
    pub fn load(&self) -> Result<TokenDataset, DataError> {
        match self {
            DataSpec::Synthetic(s) => s.load(),
            DataSpec::Bytes(p) => text::load_bytes(p),
            DataSpec::Bpe { path, vocab } => text::load_bpe(path, *vocab),
            DataSpec::Tokenizer { tokenizer, path } => text::load_with_tokenizer(tokenizer, path),
            DataSpec::Shards { dir, vocab } => shards::load(dir, *vocab),
        }
    }
}

impl std::str::FromStr for DataSpec {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        DataSpec::parse(s)
    }
}

impl fmt::Display for DataSpec {
    /// The canonical spec string; `parse` of it gives the same value back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Synthetic(s) => write!(f, "synthetic:{s}"),
            DataSpec::Bytes(p) => write!(f, "bytes:{}", p.display()),
            DataSpec::Bpe { path, vocab } => write!(f, "bpe:{}:{vocab}", path.display()),
            DataSpec::Tokenizer { tokenizer, path } => {
                write!(f, "tokenizer:{}:{}", tokenizer.display(), path.display())
            }
            DataSpec::Shards { dir, vocab } => write!(f, "shards:{}:{vocab}", dir.display()),
        }
    }
}

/// `PATH[:N]` → (PATH, N or default).
fn split_count(s: &str, default: usize) -> Result<(&str, usize), String> {
    match s.rsplit_once(':') {
        Some((p, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
            .parse()
            .map(|n| (p, n))
            .map_err(|e| format!("vocabulary size `{n}`: {e}")),
        _ => Ok((s, default)),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert_eq!(
            DataSpec::parse("synthetic").unwrap(),
            DataSpec::Synthetic(SyntheticSpec::default())
        );
        let DataSpec::Synthetic(s) =
            DataSpec::parse("synthetic:vocab=64,order=2,tokens=5000,seed=7").unwrap()
        else {
            panic!()
        };
        assert_eq!((s.vocab, s.order, s.tokens, s.seed), (64, 2, 5000, 7));
        assert_eq!(
            DataSpec::parse("bpe:corpus.txt:1000").unwrap(),
            DataSpec::Bpe {
                path: "corpus.txt".into(),
                vocab: 1000
            }
        );
        assert_eq!(
            DataSpec::parse("bpe:corpus.txt").unwrap(),
            DataSpec::Bpe {
                path: "corpus.txt".into(),
                vocab: DEFAULT_BPE_VOCAB
            }
        );
        assert_eq!(
            DataSpec::parse("tokenizer:t.json:dir/x").unwrap(),
            DataSpec::Tokenizer {
                tokenizer: "t.json".into(),
                path: "dir/x".into()
            }
        );
        assert_eq!(
            DataSpec::parse("shards:d:65").unwrap(),
            DataSpec::Shards {
                dir: "d".into(),
                vocab: 65
            }
        );
        assert_eq!(
            DataSpec::parse("no/such/file.txt").unwrap(),
            DataSpec::Bytes("no/such/file.txt".into())
        );
        for bad in [
            "synthetic:vocab=x",
            "synthetic:colour=3",
            "bpe:c.txt:10",
            "tokenizer:only",
            "shards:d:70000",
            "",
        ] {
            let e = DataSpec::parse(bad).unwrap_err();
            assert!(e.to_string().contains("bad data spec"), "{bad}: {e}");
        }
        // Display round-trips.
        for s in [
            "synthetic:vocab=64,order=2,tokens=5000,seed=7",
            "bpe:c.txt:1000",
            "shards:d:65",
            "tokenizer:a.json:b",
            "bytes:x",
        ] {
            let spec = DataSpec::parse(s).unwrap();
            assert_eq!(DataSpec::parse(&spec.to_string()).unwrap(), spec, "{s}");
        }
    }

    #[test]
    fn bare_directory_with_shards_is_shards() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.bin"), [1u8, 0]).unwrap();
        let spec = DataSpec::parse(dir.path().to_str().unwrap()).unwrap();
        assert!(matches!(spec, DataSpec::Shards { vocab: 50257, .. }));
    }
}
