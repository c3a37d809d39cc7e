//! Checkpoints: model, optimizer, recipe scaling state and loop state, written atomically.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` that is first written under a `.tmp`
//! name and renamed into place only once complete; the file `checkpoints/latest` (itself replaced
//! by rename) names the newest. A run killed at any moment therefore leaves either the previous
//! checkpoint or the new one, never a torn one. Data position and random state need no storage:
//! batches and stochastic-rounding noise are pure functions of (seed, step).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Everything the loop needs besides the model and optimizer to continue exactly.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoopState {
    /// The next step to run.
    pub step: u64,
    /// Training loss per step so far.
    pub losses: Vec<(u64, f64)>,
    /// Validation loss per evaluation.
    pub val_losses: Vec<(u64, f64)>,
    /// Mean logit sharpness per evaluation.
    pub sharpness: Vec<(u64, f64)>,
    /// Tokens trained on.
    pub tokens: u64,
    /// Seconds spent training (summed over resumed segments).
    pub train_seconds: f64,
    /// The recipe's state (amax histories …).
    pub recipe_state: serde_json::Value,
}

/// Where checkpoints live inside a run directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Write `step`'s checkpoint: `write_payload` fills a fresh directory with the model and
/// optimizer files; the loop state goes beside them. Keeps the newest `keep` checkpoints.
pub fn save(
    run_dir: &Path,
    state: &LoopState,
    keep: usize,
    write_payload: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let root = dir(run_dir);
    let name = format!("step-{:08}", state.step);
    let tmp = root.join(format!("{name}.tmp"));
    let done = root.join(&name);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write_payload(&tmp)?;
    fs::write(tmp.join("state.json"), serde_json::to_vec(state)?)
        .with_context(|| format!("writing state into {}", tmp.display()))?;
    if done.exists() {
        fs::remove_dir_all(&done)?;
    }
    fs::rename(&tmp, &done).with_context(|| format!("renaming {} into place", tmp.display()))?;
    let latest_tmp = root.join("latest.tmp");
    fs::write(&latest_tmp, &name)?;
    fs::rename(&latest_tmp, root.join("latest"))?;
    prune(&root, keep)?;
    Ok(done)
}

/// Remove all but the newest `keep` finished checkpoints, and any `.tmp` leftovers.
fn prune(root: &Path, keep: usize) -> anyhow::Result<()> {
    let mut done = Vec::new();
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("step-") {
            if name.ends_with(".tmp") {
                fs::remove_dir_all(&path)?;
            } else {
                done.push(path);
            }
        }
    }
    done.sort();
    let excess = done.len().saturating_sub(keep.max(1));
    for path in &done[..excess] {
        fs::remove_dir_all(path)?;
    }
    Ok(())
}

/// The newest finished checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> anyhow::Result<Option<(PathBuf, LoopState)>> {
    let root = dir(run_dir);
    let Ok(name) = fs::read_to_string(root.join("latest")) else {
        return Ok(None);
    };
    let path = root.join(name.trim());
    let state_file = path.join("state.json");
    let bytes = fs::read(&state_file)
        .with_context(|| format!("checkpoint {} is unreadable", path.display()))?;
    let state: LoopState = serde_json::from_slice(&bytes)
        .with_context(|| format!("checkpoint state {} is malformed", state_file.display()))?;
    Ok(Some((path, state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_is_atomic_and_prunes() {
        let run = tempfile::tempdir().unwrap();
        for step in [10, 20, 30] {
            let st = LoopState {
                step,
                ..Default::default()
            };
            save(run.path(), &st, 2, |d| {
                Ok(fs::write(d.join("model.bin"), [step as u8])?)
            })
            .unwrap();
        }
        let (path, st) = latest(run.path()).unwrap().unwrap();
        assert_eq!(st.step, 30);
        assert_eq!(fs::read(path.join("model.bin")).unwrap(), [30]);
        let mut names: Vec<_> = fs::read_dir(dir(run.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["latest", "step-00000020", "step-00000030"]);

        // A writer that dies half-way leaves the previous checkpoint as the latest.
        let st = LoopState {
            step: 40,
            ..Default::default()
        };
        let r = save(run.path(), &st, 2, |d| {
            fs::write(d.join("model.bin"), [40])?;
            anyhow::bail!("killed")
        });
        assert!(r.is_err());
        assert_eq!(latest(run.path()).unwrap().unwrap().1.step, 30);
    }
}
