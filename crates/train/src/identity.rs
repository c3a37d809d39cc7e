//! Run identity: what makes two runs the same run.
//!
//! A run *is* its resolved configuration: the recipe's name and the *content* of its file (not
//! its path), the resolved model configuration (preset or file, with the run's seed), the data
//! spec, and every training option (a Hugging Face checkpoint `hf:DIR` as the SHA-256 of its
//! files, not its path) ([`TrainConfig`], without the run directory). Its id is the
//! first 12 hex digits of the SHA-256 of that configuration serialized as JSON (fields in
//! declaration order, f64 in shortest round-trip form), so it is stable across processes and
//! machines. A run directory is named `<recipe>-<model>-lr<lr>-s<seed>-<id>` and holds the
//! identity in `identity.json`; every reuse of the directory (a resume, a sweep skipping a
//! finished point) compares the stored identity with the one asked for and refuses a mismatch,
//! naming the fields that differ.
//!
//! What the identity does not cover: the content of data *files* (the spec string is hashed, a
//! text corpus is not), and the code version (a changed kernel gives different numbers under the
//! same identity).

use crate::config::TrainConfig;
use anyhow::Context;
use fp8_models::ModelConfig;
use fp8_stats::results::{read_json, write_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file inside a run directory that holds the run's identity.
pub const FILE: &str = "identity.json";

/// The resolved configuration of one run; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The recipe's name in results (the file stem unless the configuration sets `recipe_label`).
    pub recipe_name: String,
    /// The recipe file's text.
    pub recipe: String,
    /// The model configuration the run initializes, with its seed.
    pub model: ModelConfig,
    /// Every training option, with `recipe`, `counterfactuals` (paths) and `run_dir` cleared:
    /// where a run's files are does not change what it computes.
    pub options: TrainConfig,
    /// The counterfactual recipes' names and file texts, in the configured order (see
    /// [`RunIdentity::with_counterfactuals`]). They change no training number, but the
    /// statistics the run logs for them are results too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counterfactuals: Vec<(String, String)>,
}

/// `identity.json`: the id and the identity it is the hash of.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    identity: RunIdentity,
}

impl RunIdentity {
    /// The identity of `cfg`, given the recipe text and the resolved model it names, and for a
    /// run that starts from a Hugging Face checkpoint (`model` = `hf:DIR`) the SHA-256 of its
    /// content, which replaces the path in `options.model` as `hf:sha256:<hex>`.
    pub fn new(
        cfg: &TrainConfig,
        recipe_text: &str,
        model: &ModelConfig,
        weights_sha256: Option<&str>,
    ) -> Self {
        let mut options = cfg.clone();
        if let Some(sha) = weights_sha256 {
            options.model = format!("hf:sha256:{sha}");
        }
        options.recipe = PathBuf::new();
        options.counterfactuals.clear();
        options.run_dir = None;
        options.recipe_label = None;
        RunIdentity {
            recipe_name: cfg.recipe_name(),
            recipe: recipe_text.to_string(),
            model: model.clone(),
            options,
            counterfactuals: Vec::new(),
        }
    }

    /// The identity with the counterfactual recipes `(name, file text)` the run measures.
    pub fn with_counterfactuals(mut self, recipes: Vec<(String, String)>) -> Self {
        self.counterfactuals = recipes;
        self
    }

    /// The short stable id: 12 hex digits of the SHA-256 of the identity's JSON.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("an identity always serializes");
        let digest = Sha256::digest(&json);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The run directory's name: a readable prefix and the id.
    pub fn dir_name(&self, cfg: &TrainConfig) -> String {
        format!("{}-{}", cfg.run_name_prefix(), self.id())
    }

    /// Store the identity in `run_dir` (atomically).
    pub fn store(&self, run_dir: &Path) -> anyhow::Result<()> {
        let stored = Stored {
            id: self.id(),
            identity: self.clone(),
        };
        Ok(write_json(&run_dir.join(FILE), &stored)?)
    }

    /// The identity stored in `run_dir`, `None` when there is none.
    pub fn load(run_dir: &Path) -> anyhow::Result<Option<RunIdentity>> {
        match read_json::<Stored>(&run_dir.join(FILE)) {
            Ok(s) => Ok(Some(s.identity)),
            Err(e) if e.is_missing() => Ok(None),
            Err(e) => Err(e).context("the run's identity cannot be verified"),
        }
    }

    /// The fields in which `self` (what was stored) and `now` differ, as `field: old → new`
    /// lines. Empty when they are equal.
    pub fn differences(&self, now: &RunIdentity) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(now).unwrap_or_default(),
        );
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out
    }

    /// Refuse unless the identity stored in `run_dir` (if any) equals `self`.
    pub fn check_against_stored(&self, run_dir: &Path) -> anyhow::Result<bool> {
        let Some(stored) = RunIdentity::load(run_dir)? else {
            return Ok(false);
        };
        let diffs = stored.differences(self);
        if !diffs.is_empty() {
            anyhow::bail!(
                "{} holds a different run (id {}) than the one asked for (id {}); differing \
                 settings (stored → now):\n  {}\nchoose another run directory for the new \
                 settings",
                run_dir.display(),
                stored.id(),
                self.id(),
                diffs.join("\n  ")
            );
        }
        Ok(true)
    }
}

/// Compare two JSON values field by field (dotted paths) for [`RunIdentity::differences`].
fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                let null = Value::Null;
                diff(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a == b => {}
        (Value::String(x), Value::String(y)) if x.contains('\n') || y.contains('\n') => {
            out.push(format!("{path}: the file content differs"));
        }
        _ => out.push(format!("{path}: {a} → {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cfg: &TrainConfig) -> RunIdentity {
        let model = ModelConfig::preset("tiny").unwrap();
        RunIdentity::new(cfg, "(kind: \"fp32\")\n", &model, None)
    }

    #[test]
    fn id_is_stable_and_ignores_where_files_are() {
        let a = TrainConfig::default();
        let b = TrainConfig {
            recipe: "/elsewhere/fp32.ron".into(),
            run_dir: Some("x".into()),
            ..a.clone()
        };
        assert_eq!(identity(&a).id(), identity(&b).id());
        assert_eq!(identity(&a).id().len(), 12);
        // Any option changes it.
        let c = TrainConfig {
            steps: 999,
            ..a.clone()
        };
        assert_ne!(identity(&a).id(), identity(&c).id());
        let d = RunIdentity::new(
            &a,
            "(kind: \"bf16\")\n",
            &ModelConfig::preset("tiny").unwrap(),
            None,
        );
        assert_ne!(identity(&a).id(), d.id());
    }

    #[test]
    fn differences_name_the_fields() {
        let a = identity(&TrainConfig::default());
        let b = identity(&TrainConfig {
            lr: 0.5,
            seed: 7,
            ..TrainConfig::default()
        });
        let d = a.differences(&b);
        assert_eq!(d, ["options.lr: 0.003 → 0.5", "options.seed: 0 → 7"]);
        assert!(a.differences(&a).is_empty());
    }

    #[test]
    fn stored_identity_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = identity(&TrainConfig::default());
        assert!(!a.check_against_stored(dir.path()).unwrap());
        a.store(dir.path()).unwrap();
        assert!(a.check_against_stored(dir.path()).unwrap());
        let b = identity(&TrainConfig {
            steps: 5,
            ..TrainConfig::default()
        });
        let e = b.check_against_stored(dir.path()).unwrap_err().to_string();
        assert!(e.contains("options.steps: 1000 → 5"), "{e}");
    }
}
