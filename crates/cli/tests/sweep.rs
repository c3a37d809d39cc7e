//! `fp8 sweep` and `fp8 report` end to end, through the built binary: interruption and restart,
//! shards, forced divergence, and the report's divergence table.
//!
//! The grid is small on purpose (the `tiny` model, 600 steps of 64 tokens, 2 recipes × 2 learning rates × 2
//! seeds) so the whole file runs in well under a minute on two cores.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

const EXE: &str = env!("CARGO_BIN_EXE_fp8");
const GRID: usize = 8;
const DIVERGING_LR: f64 = 100.0;

fn recipe(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes")
        .join(format!("{name}.ron"))
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// 2 recipes × 2 learning rates × 2 seeds; lr 100 is sure to blow up.
fn write_sweep(dir: &Path) -> PathBuf {
    let text = format!(
        r#"(
    recipes: ["{}", "{}"],
    learning_rates: [1e-2, {DIVERGING_LR:?}],
    seeds: [1, 2],
    steps: 600,
    models: ["tiny"],
    data: ["synthetic:vocab=64,order=1,tokens=20000"],
    train: (
        batch: 4,
        seq: 16,
        warmup: 2,
        eval_every: 100,
        eval_batches: 1,
        log_every: 50,
        checkpoint_every: 25,
        histogram_every: 0,
    ),
)"#,
        recipe("fp32"),
        recipe("bf16"),
    );
    let path = dir.join("tiny.ron");
    std::fs::write(&path, text).unwrap();
    path
}

fn fp8(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(EXE)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fp8 {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn results(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (recipe, lr, seed) of a result line.
fn key(r: &Value) -> (String, String, u64) {
    (
        r["recipe"].as_str().unwrap().to_string(),
        r["lr"].as_f64().unwrap().to_string(),
        r["seed"].as_u64().unwrap(),
    )
}

/// Every grid point exactly once.
fn assert_complete(out: &Path) -> Vec<Value> {
    let rs = results(out);
    let keys: BTreeSet<_> = rs.iter().map(key).collect();
    assert_eq!(rs.len(), GRID, "{rs:#?}");
    assert_eq!(keys.len(), GRID, "duplicate lines: {rs:#?}");
    rs
}

/// summary.json modification times of every run that has one.
fn summaries(out: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let Ok(dirs) = std::fs::read_dir(out.join("runs")) else {
        return BTreeMap::new();
    };
    dirs.filter_map(|e| {
        let p = e.unwrap().path().join("summary.json");
        let t = std::fs::metadata(&p).ok()?.modified().ok()?;
        Some((p, t))
    })
    .collect()
}

/// Run directories with a checkpoint but no summary.json: started and not finished.
fn interrupted(out: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(out.join("runs")) else {
        return Vec::new();
    };
    dirs.map(|e| e.unwrap().path())
        .filter(|d| d.join("checkpoints/latest").exists() && !d.join("summary.json").exists())
        .collect()
}

#[test]
fn interrupted_sweep_resumes_without_rerunning_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sweep = write_sweep(dir);
    let sweep_arg = sweep.to_str().unwrap();

    // Start; once a result is in and another run is part-way (it has a checkpoint but no
    // summary), kill the sweep and its workers (its process group).
    let mut child = Command::new(EXE)
        .args(["sweep", sweep_arg, "--jobs", "2", "--out", "out"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let out = dir.join("out");
    let start = Instant::now();
    while results(&out).is_empty() || interrupted(&out).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no result within 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep finished before it could be interrupted: make the runs longer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    // Workers die with the group; give the kernel a moment to reap them.
    std::thread::sleep(Duration::from_millis(200));
    let before = summaries(&out);
    let part_way = interrupted(&out);
    assert!(!before.is_empty() && !part_way.is_empty());

    // Restart: every point ends with one line, and runs that had finished are not run again.
    fp8(dir, &["sweep", sweep_arg, "--jobs", "2", "--out", "out"]);
    let rs = assert_complete(&out);
    let after = summaries(&out);
    for (path, t) in &before {
        assert_eq!(after.get(path), Some(t), "{} was rewritten", path.display());
    }
    for run in &part_way {
        let log = std::fs::read_to_string(run.join("train.log")).unwrap();
        assert!(log.contains("resuming"), "{}: {log}", run.display());
    }

    // A run whose summary.json is gone but whose checkpoint remains is resumed, not restarted.
    let converged = rs
        .iter()
        .find(|r| r["outcome"] == "converged")
        .expect("lr 1e-2 converges");
    let run_dir = out.join(converged["run_dir"].as_str().unwrap());
    std::fs::remove_file(run_dir.join("summary.json")).unwrap();
    let mtimes = summaries(&out);
    let again = fp8(dir, &["sweep", sweep_arg, "--jobs", "2", "--out", "out"]);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(log.contains("1 finished now"), "{log}");
    let train_log = std::fs::read_to_string(run_dir.join("train.log")).unwrap();
    assert!(train_log.contains("resuming"), "{train_log}");
    assert!(run_dir.join("summary.json").exists());
    let now = summaries(&out);
    for (path, t) in &mtimes {
        assert_eq!(now.get(path), Some(t), "{} was rewritten", path.display());
    }
    let rs = assert_complete(&out);

    // Forced divergence.
    for r in &rs {
        if r["lr"].as_f64() == Some(DIVERGING_LR) {
            assert_eq!(r["outcome"], "diverged", "{r}");
            assert!(r["diverged_step"].as_u64().is_some(), "{r}");
        } else {
            assert_eq!(r["outcome"], "converged", "{r}");
            assert!(r["diverged_step"].is_null(), "{r}");
        }
    }

    // The report's table: diverged/total per recipe and learning rate, counted here from
    // results.jsonl.
    fp8(dir, &["report", "out"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let mut cells: BTreeMap<(String, u64), (usize, usize)> = BTreeMap::new();
    for r in &rs {
        let c = cells
            .entry((
                r["recipe"].as_str().unwrap().to_string(),
                r["lr"].as_f64().unwrap().to_bits(),
            ))
            .or_default();
        c.0 += (r["outcome"] == "diverged") as usize;
        c.1 += 1;
    }
    let mut lrs: Vec<f64> = rs.iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    for recipe in ["fp32", "bf16"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| `{recipe}` |")))
            .unwrap_or_else(|| panic!("no row for {recipe} in\n{md}"));
        let got: Vec<&str> = row.split('|').map(str::trim).skip(2).collect();
        for (i, lr) in lrs.iter().enumerate() {
            let (k, n) = cells[&(recipe.to_string(), lr.to_bits())];
            let frac = if k == 0 {
                format!("**{k}/{n}**")
            } else {
                format!("{k}/{n}")
            };
            assert!(
                got[i].starts_with(&frac),
                "{recipe} at lr {lr}: expected {frac}, row is {row}"
            );
        }
    }
    for svg in ["divergence_rate.svg", "loss_curves.svg", "sharpness.svg"] {
        let text =
            std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}\n{md}"));
        assert!(text.contains("<svg"), "{svg}");
    }

    // `fp8 sharpness` on a finished run reproduces the run's last evaluation (up to summation
    // order: the sweep's workers run one thread, this command the default).
    let dump = dir.join("logits.npy");
    let s = fp8(
        dir,
        &[
            "sharpness",
            "--checkpoint",
            run_dir.to_str().unwrap(),
            "--batches",
            "1",
            "--dump-logits",
            dump.to_str().unwrap(),
        ],
    );
    let s: Value = serde_json::from_slice(&s.stdout).unwrap();
    let curves: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("curves.json")).unwrap()).unwrap();
    let last_sharp = curves["sharpness"].as_array().unwrap().last().unwrap()[1]
        .as_f64()
        .unwrap();
    let last_val = curves["val_losses"].as_array().unwrap().last().unwrap()[1]
        .as_f64()
        .unwrap();
    let phi = s["sharpness"].as_f64().unwrap();
    assert!(
        (phi - last_sharp).abs() <= 1e-4 * last_sharp.abs().max(1e-3),
        "{s} vs curves {last_sharp}"
    );
    assert!(
        (s["val_loss"].as_f64().unwrap() - last_val).abs() < 1e-5,
        "{s}"
    );
    assert_eq!(s["sequences"], 4);
    let logits = fp8_io::npy::read(&dump).unwrap();
    assert_eq!(logits.shape, [4, 64]);
    let targets = fp8_io::npy::read(&dir.join("logits.targets.npy")).unwrap();
    assert_eq!(targets.shape, [4]);
    let recomputed = fp8_stats::sharpness::mean_sharpness(
        &logits.data,
        &targets.data.iter().map(|&t| t as usize).collect::<Vec<_>>(),
        s["eps"].as_f64().unwrap(),
    );
    assert!((recomputed - phi).abs() <= 1e-9 * phi.abs().max(1.0));
}

#[test]
fn shards_cover_the_grid_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sweep = write_sweep(dir);
    let sweep_arg = sweep.to_str().unwrap();
    let n = 3;
    let mut ran = 0;
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let o = fp8(
            dir,
            &[
                "sweep", sweep_arg, "--jobs", "2", "--out", "out", "--shard", &shard,
            ],
        );
        let log = String::from_utf8_lossy(&o.stderr);
        let line = log
            .lines()
            .find(|l| l.contains("finished now"))
            .unwrap_or_else(|| panic!("{log}"));
        // "sweep: K finished now, 0 were already done, 0 failed; …"
        let k: usize = line
            .trim_start_matches("sweep: ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(line.contains(", 0 were already done, 0 failed"), "{line}");
        ran += k;
    }
    assert_eq!(ran, GRID);
    assert_complete(&dir.join("out"));
}
