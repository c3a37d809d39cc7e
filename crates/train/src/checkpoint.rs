//! Checkpoints: model, optimizer, recipe scaling state and loop state, written atomically and
//! verified on reading.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` that is first written under a `.tmp`
//! name and renamed into place only once complete; its last file, `manifest.json`, lists every
//! other file with its size and SHA-256. The file `checkpoints/latest` (itself replaced by rename)
//! names the newest, for people and scripts; readers do not trust it: [`newest_intact`] walks the
//! checkpoints by step number, newest first, verifies each against its manifest, reports the
//! damaged ones and returns the first intact one. A run killed at any moment therefore leaves the
//! previous checkpoint or the new one, and a checkpoint damaged later (a bad disk, a user) is
//! found and skipped. Data position and random state need no storage: batches and
//! stochastic-rounding noise are pure functions of (seed, step).

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// The stability diagnostics' series so far (see [`crate::diagnostics`]).
    #[serde(default, deserialize_with = "fp8_stats::results::nan_for_null_map")]
    pub diagnostics: std::collections::BTreeMap<String, Vec<(u64, f64)>>,
    /// Tokens trained on.
    pub tokens: u64,
    /// Seconds spent training (summed over resumed segments).
    pub train_seconds: f64,
    /// The recipe's state (amax histories …).
    pub recipe_state: serde_json::Value,
    /// Each counterfactual recipe's state by name (see `TrainConfig::counterfactuals`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counterfactual_states: std::collections::BTreeMap<String, serde_json::Value>,
    /// The first step whose gradients had a non-finite global norm. AdamW's moments absorbed
    /// them, so its state is non-finite from then on and no later checkpoint is written.
    #[serde(default)]
    pub nonfinite_grads_at: Option<u64>,
}

/// `manifest.json`: every file of a checkpoint with its size and content hash.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    step: u64,
    files: Vec<ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    name: String,
    bytes: u64,
    sha256: String,
}

const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.json";

/// Where checkpoints live inside a run directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Write `state.step`'s checkpoint: `write_payload` fills a fresh directory with the model and
/// optimizer files; the loop state and the manifest go beside them. Then keeps the newest `keep`
/// checkpoints up to this step and removes any of a later step (left by an abandoned run).
pub fn save(
    run_dir: &Path,
    state: &LoopState,
    keep: usize,
    write_payload: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let root = dir(run_dir);
    let name = step_name(state.step);
    let tmp = root.join(format!("{name}.tmp"));
    let done = root.join(&name);
    let result = (|| {
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        write_payload(&tmp)?;
        write_file(&tmp.join(STATE), &serde_json::to_vec(state)?)?;
        write_manifest(&tmp, state.step)?;
        if done.exists() {
            fs::remove_dir_all(&done)
                .with_context(|| format!("removing the older {}", done.display()))?;
        }
        fs::rename(&tmp, &done).with_context(|| format!("renaming {} into place", tmp.display()))
    })();
    if let Err(e) = result {
        // A full disk, a kill signal's cleanup: leave no half-written directory behind.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fp8_stats::results::write_atomic(&root.join("latest"), name.as_bytes())?;
    prune(&root, state.step, keep)?;
    Ok(done)
}

fn step_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn sha256_of(path: &Path) -> anyhow::Result<(u64, String)> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let hex = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes.len() as u64, hex))
}

fn write_manifest(dir: &Path, step: u64) -> anyhow::Result<()> {
    let mut manifest = Manifest {
        step,
        files: Vec::new(),
    };
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let (bytes, sha256) = sha256_of(&dir.join(&name))?;
        manifest.files.push(ManifestEntry {
            name,
            bytes,
            sha256,
        });
    }
    write_file(&dir.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)
}

/// The finished checkpoints of a run directory, newest (highest step) first.
pub fn list(run_dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let root = dir(run_dir);
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((step, path));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// Check a checkpoint directory against its manifest and read its loop state.
pub fn verify(path: &Path) -> anyhow::Result<LoopState> {
    let manifest_file = path.join(MANIFEST);
    let bytes = fs::read(&manifest_file).with_context(|| {
        format!(
            "{} is missing (incomplete, or written by an older fp8)",
            manifest_file.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is malformed", manifest_file.display()))?;
    if manifest.files.is_empty() {
        bail!("{} lists no files", manifest_file.display());
    }
    for f in &manifest.files {
        let file = path.join(&f.name);
        let (bytes, sha256) = sha256_of(&file)?;
        if bytes != f.bytes || sha256 != f.sha256 {
            bail!(
                "{} does not match the checkpoint's manifest ({bytes} bytes, expected {}; \
                 content hash differs: {})",
                file.display(),
                f.bytes,
                sha256 != f.sha256
            );
        }
    }
    let state_file = path.join(STATE);
    let state: LoopState = serde_json::from_slice(&fs::read(&state_file)?)
        .with_context(|| format!("{} is malformed", state_file.display()))?;
    if state.step != manifest.step {
        bail!(
            "{}: state is at step {}, manifest says {}",
            path.display(),
            state.step,
            manifest.step
        );
    }
    Ok(state)
}

/// The newest checkpoint that passes [`verify`], if any; `damaged` hears of every newer one
/// that does not.
pub fn newest_intact(
    run_dir: &Path,
    damaged: &mut dyn FnMut(&Path, &anyhow::Error),
) -> anyhow::Result<Option<(PathBuf, LoopState)>> {
    for (_, path) in list(run_dir)? {
        match verify(&path) {
            Ok(state) => return Ok(Some((path, state))),
            Err(e) => damaged(&path, &e),
        }
    }
    Ok(None)
}

/// The newest intact checkpoint, warning on stderr about damaged newer ones (`fp8 sharpness`).
pub fn latest(run_dir: &Path) -> anyhow::Result<Option<(PathBuf, LoopState)>> {
    newest_intact(run_dir, &mut |p, e| {
        eprintln!(
            "warning: skipping damaged checkpoint {}: {e:#}",
            p.display()
        )
    })
}

/// Remove `.tmp` leftovers and checkpoints of steps after `current`, then all but the newest
/// `keep` of the rest: by step number, so the checkpoint just written is never the one removed.
fn prune(root: &Path, current: u64, keep: usize) -> anyhow::Result<()> {
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("step-") && name.ends_with(".tmp") {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing leftover {}", path.display()))?;
        }
    }
    let run_dir = root.parent().unwrap_or(root);
    let mut kept = 0;
    for (step, path) in list(run_dir)? {
        if step <= current && kept < keep.max(1) {
            kept += 1;
            continue;
        }
        fs::remove_dir_all(&path).with_context(|| format!("pruning {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> LoopState {
        LoopState {
            step,
            ..Default::default()
        }
    }

    fn save_byte(run: &Path, step: u64) -> anyhow::Result<PathBuf> {
        save(run, &state(step), 2, |d| {
            Ok(fs::write(d.join("model.bin"), [step as u8])?)
        })
    }

    fn names(run: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir(run))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn save_is_atomic_and_prunes_by_step() {
        let run = tempfile::tempdir().unwrap();
        for step in [10, 20, 30] {
            save_byte(run.path(), step).unwrap();
        }
        let (path, st) = latest(run.path()).unwrap().unwrap();
        assert_eq!(st.step, 30);
        assert_eq!(fs::read(path.join("model.bin")).unwrap(), [30]);
        assert_eq!(
            names(run.path()),
            ["latest", "step-00000020", "step-00000030"]
        );

        // A writer that dies half-way leaves the previous checkpoint as the latest, and no .tmp.
        let r = save(run.path(), &state(40), 2, |d| {
            fs::write(d.join("model.bin"), [40])?;
            anyhow::bail!("killed")
        });
        assert!(r.is_err());
        assert_eq!(latest(run.path()).unwrap().unwrap().1.step, 30);
        assert_eq!(
            names(run.path()),
            ["latest", "step-00000020", "step-00000030"]
        );

        // A checkpoint of an earlier step (a run restarted from scratch) is kept, and the later
        // ones it supersedes are removed.
        save_byte(run.path(), 5).unwrap();
        assert_eq!(names(run.path()), ["latest", "step-00000005"]);
    }

    #[test]
    fn a_damaged_newest_checkpoint_is_reported_and_the_older_used() {
        let run = tempfile::tempdir().unwrap();
        save_byte(run.path(), 10).unwrap();
        let newest = save_byte(run.path(), 20).unwrap();
        fs::write(newest.join("model.bin"), [99]).unwrap();
        // `latest` is not trusted either: delete it.
        fs::remove_file(dir(run.path()).join("latest")).unwrap();
        let mut reported = Vec::new();
        let (path, st) = newest_intact(run.path(), &mut |p, e| {
            reported.push((p.to_path_buf(), format!("{e:#}")))
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            (st.step, fs::read(path.join("model.bin")).unwrap()),
            (10, vec![10])
        );
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].0, newest);
        assert!(reported[0].1.contains("model.bin"), "{}", reported[0].1);
    }
}
