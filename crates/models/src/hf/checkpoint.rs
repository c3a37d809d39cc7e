//! A checkpoint named by a model spec `hf:DIR`: its architecture, its checked tensors and a
//! hash of its content, so that a run started from it is identified by the weights it starts
//! from rather than by where they are stored.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use sha2::{Digest, Sha256};

use super::{config, files, weights, HfError};
use crate::config::ModelConfig;
use crate::model::Model;

/// The prefix of a model spec that names a Hugging Face checkpoint directory: `hf:DIR`.
pub const SPEC_PREFIX: &str = "hf:";

/// An HF checkpoint directory, read and checked by [`HfCheckpoint::open`].
#[derive(Clone, Debug, PartialEq)]
pub struct HfCheckpoint {
    /// The directory, as given.
    pub dir: PathBuf,
    /// The architecture from its `config.json`.
    pub config: ModelConfig,
    /// SHA-256 (hex) of what loading reads: `config.json`, the shard index if any, and the
    /// weight files in name order, each as its file name, a NUL byte, its length (u64, little
    /// endian) and its bytes.
    pub sha256: String,
}

/// The directory of a model spec `hf:DIR`; `None` for any other spec.
pub fn spec_dir(spec: &str) -> Option<&Path> {
    spec.strip_prefix(SPEC_PREFIX).map(Path::new)
}

/// The configuration, tensors and content hash of the checkpoint in `dir`.
fn read(
    dir: &Path,
) -> Result<
    (
        ModelConfig,
        std::collections::BTreeMap<String, files::HostTensor>,
        String,
    ),
    HfError,
> {
    let mut hash = Sha256::new();
    let mut seen = |path: &Path, bytes: &[u8]| {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io {
        path: path.clone(),
        source,
    })?;
    seen(&path, text.as_bytes());
    let cfg = config::parse(&text, &path)?;
    let tensors = files::read_weights(dir, &mut seen)?;
    let digest = hash.finalize();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((cfg, tensors, hex))
}

impl HfCheckpoint {
    /// Read the checkpoint in `dir` and check every tensor against its `config.json` (names,
    /// shapes, dtypes: the errors of [`Model::load_hf`]) without keeping the weights.
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let (config, tensors, sha256) = read(dir)?;
        // Building the model on the host is the check; the copy is dropped.
        weights::model_from::<burn::backend::NdArray>(&config, tensors, dir, &Default::default())?;
        Ok(HfCheckpoint {
            dir: dir.to_path_buf(),
            config,
            sha256,
        })
    }

    /// The model on `device`, refusing a checkpoint whose files changed since [`open`](Self::open).
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<Model<B>, HfError> {
        let (config, tensors, sha256) = read(&self.dir)?;
        if sha256 != self.sha256 {
            return Err(HfError::Changed {
                dir: self.dir.clone(),
            });
        }
        weights::model_from(&config, tensors, &self.dir, device)
    }

    /// Load the checkpoint in `dir` as [`Model::load_hf`] does.
    pub(crate) fn load_dir<B: Backend>(
        dir: &Path,
        device: &B::Device,
    ) -> Result<Model<B>, HfError> {
        let (config, tensors, _) = read(dir)?;
        weights::model_from(&config, tensors, dir, device)
    }
}
