//! What the training tests share: the tiny run they start from, the built-in recipes, a run's
//! losses and a copy of a run directory.

#![allow(dead_code)] // each test file uses a part

use fp8_train::TrainConfig;
use std::path::{Path, PathBuf};

/// A built-in recipe file, `recipes/<name>.ron`.
pub fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../recipes/{name}.ron"))
}

/// A run of the tiny model on a small learnable synthetic source, batch 4 × 16 tokens, into
/// `run_dir`, without histograms; tests set the steps and cadences they need on top.
pub fn tiny_run(recipe: PathBuf, run_dir: &Path) -> TrainConfig {
    TrainConfig {
        recipe,
        model: "tiny".into(),
        data: "synthetic:vocab=64,order=1,tokens=20000".into(),
        batch: 4,
        seq: 16,
        histogram_every: 0,
        run_dir: Some(run_dir.to_path_buf()),
        ..TrainConfig::default()
    }
}

/// The run's training losses (`curves.json`), as bits.
pub fn losses(run: &Path) -> Vec<u64> {
    fp8_stats::results::Curves::read(run)
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
        .losses
        .iter()
        .map(|p| p.1.to_bits())
        .collect()
}

/// Copy a run directory, leaving out the files whose name `skip` says.
pub fn copy_dir(from: &Path, to: &Path, skip: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let target = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target, skip);
        } else if !skip(&name) {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
