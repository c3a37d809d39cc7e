//! `fp8 train` end to end through the binary: learning, exact resume (also after a kill),
//! divergence as a recorded outcome, bad input as clear errors, and TensorBoard files that
//! TensorBoard itself reads.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DATA: &str = "synthetic:vocab=64,order=1,tokens=50000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recipe(name: &str) -> String {
    repo().join("recipes").join(name).display().to_string()
}

/// `fp8 train` on the tiny model with `extra` flags.
fn train_cmd(run_dir: &Path, recipe_file: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fp8"));
    c.args([
        "train",
        "--recipe",
        recipe_file,
        "--model",
        "tiny",
        "--data",
        DATA,
    ])
    .args([
        "--batch", "8", "--seq", "16", "--lr", "1e-2", "--warmup", "5",
    ])
    .arg("--run-dir")
    .arg(run_dir)
    .args(extra);
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("fp8 runs")
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    serde_json::from_value(json(&run_dir.join("curves.json"))["losses"].clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn loss_falls_toward_the_entropy_floor() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let o = run(train_cmd(
        &run_dir,
        &recipe("fp32.ron"),
        &["--steps", "200", "--eval-every", "100"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = json(&run_dir.join("summary.json"));
    let floor = s["entropy_floor"].as_f64().unwrap();
    let val = s["final_val_loss"].as_f64().unwrap();
    let start = (64f64).ln(); // a uniform guess over the vocabulary
    assert_eq!(s["outcome"], "converged");
    assert!(floor > 1.0 && floor < start, "floor {floor}");
    // Most of the way from a uniform guess to the floor, and not (meaningfully) below it: the
    // floor is the true source's entropy rate, which no model beats in expectation.
    assert!(
        val < floor + 0.35 * (start - floor),
        "val {val}, floor {floor}"
    );
    assert!(val > floor - 0.1, "val {val} below the floor {floor}");
    let first = losses(&run_dir)[0].1;
    assert!(
        (first - start).abs() < 0.3,
        "initial loss {first} should be near ln 64"
    );
}

#[test]
fn resume_reproduces_the_uninterrupted_run_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let args = [
        "--steps",
        "24",
        "--checkpoint-every",
        "8",
        "--eval-every",
        "8",
    ];
    let o = run(train_cmd(&full, &recipe("delayed_scaling.ron"), &args));
    assert!(o.status.success(), "{}", stderr(&o));

    // Rewind a copy to its step-16 checkpoint, as if it had been stopped there, and resume.
    let part = dir.path().join("part");
    copy_dir(&full, &part);
    std::fs::remove_dir_all(part.join("checkpoints/step-00000024")).unwrap();
    std::fs::write(part.join("checkpoints/latest"), "step-00000016").unwrap();
    std::fs::remove_file(part.join("summary.json")).unwrap();
    let mut args_resume = args.to_vec();
    args_resume.push("--resume");
    let o = run(train_cmd(
        &part,
        &recipe("delayed_scaling.ron"),
        &args_resume,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));

    let (a, b) = (losses(&full), losses(&part));
    assert_eq!(a.len(), 24);
    // Bit-for-bit: the recipe's amax histories, AdamW moments and data order all continue.
    assert_eq!(a, b);
    let (sa, sb) = (
        json(&full.join("summary.json")),
        json(&part.join("summary.json")),
    );
    assert_eq!(sa["final_val_loss"], sb["final_val_loss"]);
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--steps",
        "400",
        "--checkpoint-every",
        "20",
        "--eval-every",
        "0",
    ];
    let reference = dir.path().join("reference");
    let o = run(train_cmd(
        &reference,
        &recipe("bit_reduction_e8m5.ron"),
        &args,
    ));
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.path().join("killed");
    let mut child = train_cmd(&killed, &recipe("bit_reduction_e8m5.ron"), &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !latest.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(latest.exists(), "no checkpoint before the deadline");
    let interrupted = !killed.join("summary.json").exists();

    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = run(train_cmd(
        &killed,
        &recipe("bit_reduction_e8m5.ron"),
        &resume,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&reference), losses(&killed));
    // The kill normally lands mid-run; if the machine was fast enough to finish first the
    // comparison above still holds, but say so.
    if !interrupted {
        eprintln!("note: the run finished before it could be killed");
    }
}

#[test]
fn divergence_is_a_recorded_outcome_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let o = run(train_cmd(
        &run_dir,
        &recipe("fp32.ron"),
        &[
            "--steps", "200", "--lr", "10", "--warmup", "0", "--clip", "0",
        ],
    ));
    assert_eq!(
        o.status.code(),
        Some(3),
        "exit code 3 means diverged: {}",
        stderr(&o)
    );
    let s = json(&run_dir.join("summary.json"));
    assert_eq!(s["outcome"], "diverged");
    let step = s["step"].as_u64().unwrap();
    assert!(step < 200);
    assert_eq!(
        s["steps"].as_u64().unwrap(),
        step,
        "the loop stops at the divergence"
    );
    // The events were flushed: the loss at the diverged step is in the file.
    assert!(std::fs::read_dir(&run_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("events.out.tfevents")));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let check = |c: Command, needles: &[&str]| {
        let o = run(c);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
    };

    let bad_recipe = d.join("bad.ron");
    std::fs::write(&bad_recipe, "(kind: \"cast\",\n format: 12)").unwrap();
    check(
        train_cmd(&d.join("a"), bad_recipe.to_str().unwrap(), &[]),
        &["bad.ron:2:"],
    );

    let unknown = d.join("unknown.ron");
    std::fs::write(&unknown, "(kind: \"fp9\")").unwrap();
    check(
        train_cmd(&d.join("b"), unknown.to_str().unwrap(), &[]),
        &["fp9", "delayed_scaling"],
    );

    check(
        train_cmd(&d.join("c"), "/nonexistent/recipe.ron", &[]),
        &["/nonexistent/recipe.ron"],
    );

    let mut c = train_cmd(&d.join("d"), &recipe("fp32.ron"), &[]);
    c.args(["--data", "/nonexistent/corpus.txt"]);
    check(c, &["/nonexistent/corpus.txt"]);

    let shards = d.join("shards");
    std::fs::create_dir(&shards).unwrap();
    std::fs::write(shards.join("train.bin"), [1u8, 2, 3]).unwrap(); // odd length: not uint16
    std::fs::write(shards.join("val.bin"), [1u8, 0]).unwrap();
    let mut c = train_cmd(&d.join("e"), &recipe("fp32.ron"), &[]);
    c.arg("--data").arg(&shards);
    check(c, &["train.bin"]);

    let cfg = d.join("run.ron");
    std::fs::write(&cfg, "(steps: 10,\n lr: \"fast\")").unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_fp8"));
    c.arg("train").arg("--config").arg(&cfg);
    check(c, &["run.ron:2:"]);

    let mut c = train_cmd(&d.join("f"), &recipe("fp32.ron"), &["--seq", "64"]);
    c.args(["--steps", "1"]);
    check(c, &["context"]);
}

#[test]
fn tensorboard_reads_the_training_logs() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let args = ["--steps", "20", "--log-every", "5", "--eval-every", "10"];
    let o = run(train_cmd(&run_dir, &recipe("delayed_scaling.ron"), &args));
    assert!(o.status.success(), "{}", stderr(&o));

    let script = repo().join("crates/io/tests/read_events.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tb: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scalars = tb["scalars"].as_object().unwrap();
    let steps = |tag: &str| -> Vec<i64> {
        scalars[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_i64().unwrap())
            .collect()
    };
    assert_eq!(steps("train/loss"), [0, 5, 10, 15, 19]);
    assert_eq!(steps("val/loss"), [9, 19]);
    assert_eq!(steps("stability/sharpness"), [9, 19]);
    for tag in [
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "val/entropy_floor",
    ] {
        assert!(scalars.contains_key(tag), "{tag}");
    }
    // The logged losses are the ones the run recorded.
    let logged: Vec<f64> = scalars["train/loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    let curve = losses(&run_dir);
    for (i, step) in [0usize, 5, 10, 15, 19].iter().enumerate() {
        assert!((logged[i] - curve[*step].1).abs() < 1e-6 * curve[*step].1.abs());
    }
    // Precision telemetry for every quantized (site, role): HYBRID quantizes x, w and dy of
    // the non-attention GEMMs; scales follow the delayed-scaling formula.
    for site in ["h.0.attn.qkv", "h.1.mlp.proj", "lm_head"] {
        for role in ["x", "w", "dy"] {
            for stat in ["amax", "scale", "underflow", "saturation", "snr_db"] {
                let tag = format!("precision/{site}/{role}/{stat}");
                assert!(scalars.contains_key(&tag), "{tag}");
            }
        }
    }
    assert!(
        !scalars.contains_key("precision/h.0.attn.scores/x/amax"),
        "attention is off in this recipe"
    );
    let first_scale = scalars["precision/h.0.mlp.fc/x/scale"][0][1]
        .as_f64()
        .unwrap();
    assert_eq!(first_scale, 1.0, "step 0 casts with the initial scale 1");
    assert!(tb["histograms"]
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("weights/")));
}

fn python() -> Option<String> {
    match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but FP8_PYTHON is not (.ci/run sets it)")
        }
        _ => {
            eprintln!("SKIPPED: set FP8_PYTHON to a Python with `tensorboard` to run this test");
            None
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
