//! A recipe's `optimizer:` section in real training: FP8 AdamW moments (per-tensor scales, or
//! COAT's dynamic range expansion) and bf16 master weights with stochastic rounding change the run, and a run resumed from a checkpoint reproduces the
//! uninterrupted one bit for bit (losses, weights and optimizer state).

mod common;

use fp8_train::backend::CpuTrain;
use fp8_train::{train, Silent, TrainConfig};
use std::path::{Path, PathBuf};

const FP8_STATE: &str = r#"(
    kind: "fp32",
    optimizer: (
        first_moment: "float8_e4m3fn",
        second_moment: "float8_e5m2",
        master_weights: "bfloat16",
        master_rounding: "stochastic",
        seed: 3,
    ),
)"#;

fn config(dir: &Path, recipe: PathBuf, run: &str) -> TrainConfig {
    TrainConfig {
        steps: 12,
        warmup: 2,
        checkpoint_every: 6,
        eval_every: 6,
        ..common::tiny_run(recipe, &dir.join(run))
    }
}

/// The bytes of every file of a checkpoint but its manifest and loop state (which hold times).
fn checkpoint_bytes(run: &Path, step: u64) -> Vec<(String, Vec<u8>)> {
    let dir = run.join(format!("checkpoints/step-{step:08}"));
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("model") || n.starts_with("optim")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{}: {files:?}", dir.display());
    files
}

#[test]
fn fp8_optimizer_state_trains_and_resumes_bit_for_bit() {
    trains_and_resumes_bit_for_bit(FP8_STATE, "(kind: \"fp32\")");
}

/// The shipped COAT recipe: `current_scaling.ron`'s GEMMs plus E4M3 moments with dynamic range
/// expansion over groups of 128, against `current_scaling.ron` itself.
#[test]
fn coat_recipe_trains_and_resumes_bit_for_bit() {
    let file = |name: &str| std::fs::read_to_string(common::recipe(name)).unwrap();
    let coat = file("coat");
    assert!(coat.contains("moment_scaling: expand(128)"), "{coat}");
    trains_and_resumes_bit_for_bit(&coat, &file("current_scaling"));
}

/// Train `recipe_text` and `plain_text` (the same GEMM precision, no optimizer section) for 12
/// steps; the first differs from the second after the first step, and a copy of it resumed
/// from step 6 ends bit for bit where it ended.
fn trains_and_resumes_bit_for_bit(recipe_text: &str, plain_text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("fp8_state.ron");
    std::fs::write(&recipe, recipe_text).unwrap();
    let plain = dir.path().join("plain.ron");
    std::fs::write(&plain, plain_text).unwrap();
    let device = Default::default();

    let base = config(dir.path(), plain, "plain");
    train::<CpuTrain>(&base, &device, false, &mut Silent).unwrap();
    let full = config(dir.path(), recipe, "full");
    let summary = train::<CpuTrain>(&full, &device, false, &mut Silent).unwrap();
    assert_eq!(summary.steps, 12);
    let (a, b) = (
        common::losses(&dir.path().join("full")),
        common::losses(&dir.path().join("plain")),
    );
    assert_eq!(a.len(), 12);
    // The first loss is the same model's before any step; the state's precision shows after.
    assert_eq!(a[0], b[0]);
    assert_ne!(a, b, "the optimizer section changed nothing");

    // Rewind a copy to its step-6 checkpoint and resume it to step 12.
    let part = dir.path().join("part");
    common::copy_dir(&dir.path().join("full"), &part, &|_| false);
    std::fs::remove_dir_all(part.join("checkpoints/step-00000012")).unwrap();
    std::fs::write(part.join("checkpoints/latest"), "step-00000006").unwrap();
    std::fs::remove_file(part.join("summary.json")).unwrap();
    let mut resumed = full.clone();
    resumed.run_dir = Some(part.clone());
    train::<CpuTrain>(&resumed, &device, true, &mut Silent).unwrap();
    assert_eq!(common::losses(&part), a);
    // The step-12 weights agree bit for bit: the same validation loss and the same model file.
    let val = |run: &Path| {
        fp8_stats::results::Summary::read(&run.join("summary.json"))
            .unwrap()
            .final_val_loss
            .unwrap()
            .to_bits()
    };
    assert_eq!(val(&part), val(&dir.path().join("full")));
    let (ours, theirs) = (
        checkpoint_bytes(&part, 12),
        checkpoint_bytes(&dir.path().join("full"), 12),
    );
    let model = |files: &[(String, Vec<u8>)]| {
        files
            .iter()
            .filter(|f| f.0.starts_with("model"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(model(&ours), model(&theirs));
    // The optimizer files hold the same entries, but burn's optimizer record is a `HashMap`
    // keyed by parameter id, whose order differs between processes: compare sizes and the sorted
    // bytes (a content check that ignores the order of the records).
    let sorted = |files: &[(String, Vec<u8>)]| {
        let mut v: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter(|f| f.0.starts_with("optim"))
            .map(|(n, b)| {
                let mut b = b.clone();
                b.sort_unstable();
                (n.clone(), b)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&ours), sorted(&theirs));
}
