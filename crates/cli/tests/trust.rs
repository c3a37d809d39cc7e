//! Runs you can trust, through the `fp8` binary: every result is the run it claims to be.
//!
//! Each test reproduces one of the ways a run or a sweep used to report the wrong run's results
//! (or panic, or leave damage behind) and checks the behaviour that replaced it. All train the
//! `tiny` model for a handful of steps.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_fp8");
const DATA: &str = "synthetic:vocab=64,order=1,tokens=20000";

fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes")
        .join(format!("{name}.ron"))
        .canonicalize()
        .unwrap()
}

/// `fp8 train` on the tiny model for `steps` steps with checkpoints every 4.
fn train(run_dir: &Path, recipe_file: &Path, steps: u32, extra: &[&str]) -> Command {
    let mut c = Command::new(EXE);
    c.arg("train")
        .arg("--recipe")
        .arg(recipe_file)
        .args(["--model", "tiny", "--data", DATA])
        .args([
            "--batch", "4", "--seq", "16", "--lr", "1e-2", "--warmup", "2",
        ])
        .args(["--eval-every", "4", "--checkpoint-every", "4"])
        .args(["--steps", &steps.to_string()])
        .arg("--run-dir")
        .arg(run_dir)
        .args(extra)
        .env("RAYON_NUM_THREADS", "1");
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("fp8 runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(c: Command) -> Output {
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// A clear error: exit code 2, no panic, every needle in the message.
fn refused(c: Command, needles: &[&str]) -> String {
    let o = run(c);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
    e
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    serde_json::from_value(json(&run_dir.join("curves.json"))["losses"].clone()).unwrap()
}

fn checkpoints(run_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("step-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file name under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.unwrap().path();
            out.push(p.display().to_string());
            if p.is_dir() {
                out.extend(all_files(&p));
            }
        }
    }
    out
}

fn sweep_file(dir: &Path, name: &str, recipes: &[PathBuf], body: &str) -> PathBuf {
    let list: Vec<String> = recipes
        .iter()
        .map(|r| format!("{:?}", r.display().to_string()))
        .collect();
    let text = format!(
        r#"(
    recipes: [{}],
    models: ["tiny"],
    data: ["{DATA}"],
    {body}
    train: (batch: 4, seq: 16, warmup: 2, eval_every: 4, eval_batches: 1, log_every: 2,
            checkpoint_every: 4, histogram_every: 0),
)"#,
        list.join(", ")
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn sweep(dir: &Path, file: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(EXE);
    c.arg("sweep")
        .arg(file)
        .args(["--jobs", "2", "--out"])
        .arg(dir.join("out"))
        .args(extra)
        .current_dir(dir);
    c
}

fn results(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("out/results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Found 1: two recipes with one file stem shared one run directory. Found 2: duplicate entries
/// trained one run but wrote several result lines. Found 3: changed `steps` reused old runs.
#[test]
fn sweep_points_are_distinct_configurations_each_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("alt")).unwrap();
    let alt = dir.join("alt/fp32.ron");
    std::fs::copy(recipe("bit_reduction_e8m4"), &alt).unwrap();
    let body = "learning_rates: [1e-2, 1e-2], seeds: [0, 0], steps: 6,";
    let file = sweep_file(
        dir,
        "s.ron",
        &[recipe("fp32"), alt.clone(), recipe("fp32")],
        body,
    );
    let o = ok(sweep(dir, &file, &[]));
    let log = stderr(&o);
    assert!(log.contains("duplicate grid entry dropped"), "{log}");
    let rs = results(dir);
    assert_eq!(rs.len(), 2, "one line per distinct run: {rs:#?}");
    let dirs: BTreeSet<&str> = rs.iter().map(|r| r["run_dir"].as_str().unwrap()).collect();
    assert_eq!(dirs.len(), 2);
    let names: BTreeSet<&str> = rs.iter().map(|r| r["recipe"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Each directory trained its own recipe: the stored recipes differ, and so do the losses.
    let runs: Vec<PathBuf> = dirs.iter().map(|d| dir.join("out").join(d)).collect();
    let texts: BTreeSet<String> = runs
        .iter()
        .map(|r| std::fs::read_to_string(r.join("recipe.ron")).unwrap())
        .collect();
    assert_eq!(texts.len(), 2);
    assert_ne!(losses(&runs[0]), losses(&runs[1]));

    // Longer runs: new points, nothing reported as already finished.
    let file = sweep_file(
        dir,
        "s.ron",
        &[recipe("fp32")],
        "learning_rates: [1e-2], seeds: [0], steps: 8,",
    );
    let o = ok(sweep(dir, &file, &[]));
    let log = stderr(&o);
    assert!(log.contains("0 already finished"), "{log}");
    let rs = results(dir);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0]["steps"], 8);
}

/// Found 4: `--resume` accepted other settings and mislabelled the run; another model panicked
/// after config.ron and model.ron were overwritten.
#[test]
fn resume_refuses_other_settings_before_touching_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    ok(train(&r, &recipe("fp32"), 4, &[]));
    let config = std::fs::read(r.join("config.ron")).unwrap();
    let model = std::fs::read(r.join("model.ron")).unwrap();
    let mut c = train(
        &r,
        &recipe("fp32"),
        8,
        &["--resume", "--lr", "2e-2", "--seed", "3"],
    );
    c.args(["--model", "gpt2-mini"]);
    refused(
        c,
        &[
            "options.lr: 0.01 → 0.02",
            "options.seed: 0 → 3",
            "model.",
            "options.steps",
        ],
    );
    refused(train(&r, &recipe("bf16"), 4, &["--resume"]), &["recipe"]);
    assert_eq!(std::fs::read(r.join("config.ron")).unwrap(), config);
    assert_eq!(std::fs::read(r.join("model.ron")).unwrap(), model);
}

/// Found 5: training again without `--resume` into a used directory deleted each new
/// checkpoint right after writing it (pruning by name kept the old, higher steps).
#[test]
fn a_used_run_directory_needs_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    ok(train(&r, &recipe("fp32"), 12, &[]));
    let before = checkpoints(&r);
    refused(
        train(&r, &recipe("fp32"), 12, &[]),
        &["--resume", "--run-dir", "not empty"],
    );
    refused(
        train(&r, &recipe("fp32"), 4, &[]),
        &["options.steps: 12 → 4"],
    );
    assert_eq!(checkpoints(&r), before);
    assert_eq!(
        std::fs::read_to_string(r.join("checkpoints/latest")).unwrap(),
        "step-00000012"
    );
}

/// Found 6: a truncated summary.json stopped the sweep; a partial curves.json left the loss gap
/// null for good.
#[test]
fn damaged_per_run_files_make_that_point_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let body = "learning_rates: [1e-2], seeds: [0], steps: 6, baseline: \"fp32\",";
    let file = sweep_file(dir, "s.ron", &[recipe("fp32"), recipe("bf16")], body);
    ok(sweep(dir, &file, &[]));
    let rs = results(dir);
    let find = |rs: &[Value], name: &str| rs.iter().find(|r| r["recipe"] == name).unwrap().clone();
    let bf16 = find(&rs, "bf16");
    assert!(bf16["loss_gap"].is_f64(), "{bf16}");
    let fp32_dir = dir
        .join("out")
        .join(find(&rs, "fp32")["run_dir"].as_str().unwrap());
    let bf16_dir = dir.join("out").join(bf16["run_dir"].as_str().unwrap());
    let summary = std::fs::read(fp32_dir.join("summary.json")).unwrap();
    std::fs::write(fp32_dir.join("summary.json"), &summary[..summary.len() / 2]).unwrap();
    let curves = std::fs::read(bf16_dir.join("curves.json")).unwrap();
    std::fs::write(bf16_dir.join("curves.json"), &curves[..curves.len() / 2]).unwrap();

    let o = ok(sweep(dir, &file, &[]));
    let log = stderr(&o);
    assert!(log.contains("running") && log.contains("again"), "{log}");
    assert!(log.contains("2 finished now"), "{log}");
    let again = results(dir);
    assert_eq!(again.len(), 2);
    for name in ["fp32", "bf16"] {
        let (a, b) = (find(&rs, name), find(&again, name));
        assert_eq!(a["final_loss"], b["final_loss"], "{name}");
        assert_eq!(a["loss_gap"], b["loss_gap"], "{name}");
    }
    assert!(json(&fp32_dir.join("summary.json"))["outcome"] == "converged");
}

/// Found 7: a corrupt newest checkpoint gave an unhelpful error and no fallback; a deleted
/// `latest` restarted from scratch.
#[test]
fn resume_uses_the_newest_intact_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    ok(train(&full, &recipe("delayed_scaling"), 12, &[]));
    let expected = losses(&full);

    // The same run stopped after its last step's checkpoint, which was then damaged, and its
    // `latest` pointer deleted: checkpoints 8 (intact) and 12 (damaged) remain.
    let part = tmp.path().join("part");
    ok(train(&part, &recipe("delayed_scaling"), 12, &[]));
    assert_eq!(checkpoints(&part), ["step-00000008", "step-00000012"]);
    std::fs::remove_file(part.join("summary.json")).unwrap();
    let model = part.join("checkpoints/step-00000012/model.bin");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    std::fs::remove_file(part.join("checkpoints/latest")).unwrap();
    let o = ok(train(&part, &recipe("delayed_scaling"), 12, &["--resume"]));
    let log = stderr(&o);
    assert!(
        log.contains("damaged checkpoint") && log.contains("step-00000012"),
        "{log}"
    );
    assert!(log.contains("at step 8"), "{log}");
    assert_eq!(bits(&losses(&part)), bits(&expected));
}

fn bits(v: &[(u64, f64)]) -> Vec<(u64, u64)> {
    v.iter().map(|&(s, l)| (s, l.to_bits())).collect()
}

/// Found 9: after a resume some earlier losses in curves.json differed by one ulp.
#[test]
fn resumed_curves_equal_the_uninterrupted_ones_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    ok(train(
        &full,
        &recipe("fp32"),
        40,
        &["--checkpoint-every", "20"],
    ));
    let part = tmp.path().join("part");
    ok(train(
        &part,
        &recipe("fp32"),
        40,
        &["--checkpoint-every", "20"],
    ));
    std::fs::remove_dir_all(part.join("checkpoints/step-00000040")).unwrap();
    std::fs::remove_file(part.join("summary.json")).unwrap();
    ok(train(
        &part,
        &recipe("fp32"),
        40,
        &["--checkpoint-every", "20", "--resume"],
    ));
    let (a, b) = (losses(&full), losses(&part));
    assert_eq!(a.len(), 40);
    assert_eq!(bits(&a), bits(&b));
    let (sa, sb) = (
        json(&full.join("summary.json")),
        json(&part.join("summary.json")),
    );
    assert_eq!(sa["initial_loss"], sb["initial_loss"]);
    assert_eq!(sa["initial_loss"].as_f64(), Some(a[0].1));
}

/// Found 10: with a huge divergence threshold a checkpoint of NaN weights became `latest`.
#[test]
fn no_checkpoint_holds_non_finite_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    // lr 1e39 is infinite in f32: the first update makes the weights non-finite.
    let o = run(train(
        &r,
        &recipe("fp32"),
        4,
        &[
            "--lr",
            "1e39",
            "--warmup",
            "0",
            "--clip",
            "0",
            "--checkpoint-every",
            "1",
            "--divergence-threshold",
            "1e30",
        ],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no checkpoint written"),
        "{}",
        stderr(&o)
    );
    assert!(checkpoints(&r).is_empty(), "{:?}", checkpoints(&r));
    assert!(!r.join("checkpoints/latest").exists());
}

/// Found 11: a full disk gave "No space left on device" without the path and left a `.tmp`.
/// A file-size limit stands in for the full disk (the write fails the same way, with EFBIG).
#[test]
fn a_failed_write_names_the_file_and_leaves_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    let inner = train(&r, &recipe("fp32"), 8, &[]);
    let args: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    // 16 KiB per file: enough for the run's small files, not for a checkpoint.
    let script = format!("trap '' XFSZ; ulimit -f 32; exec {}", args.join(" "));
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&r.display().to_string()),
        "the error names the path: {e}"
    );
    let leftovers: Vec<String> = all_files(&r)
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Found 8: options that panicked or were silently accepted although meaningless.
#[test]
fn every_option_is_checked_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fp32 = recipe("fp32");
    let cases: &[(&[&str], &str)] = &[
        (&["--sharpness-eps", "nan"], "`sharpness_eps` = NaN"),
        (
            &["--divergence-threshold", "nan"],
            "`divergence_threshold` = NaN",
        ),
        (
            &["--divergence-threshold", "inf"],
            "`divergence_threshold` = inf",
        ),
        (&["--weight-decay=-0.1"], "`weight_decay` = -0.1"),
        (&["--min-lr", "0.5"], "`min_lr` = 0.5"),
    ];
    for (i, (flags, needle)) in cases.iter().enumerate() {
        let r = d.join(format!("flag{i}"));
        refused(train(&r, &fp32, 4, flags), &[needle]);
        assert!(
            !r.join("checkpoints").exists(),
            "{needle}: no work was done"
        );
    }
    for (i, (field, needle)) in [
        ("beta1: 2.0", "`beta1` = 2"),
        ("beta2: 1.5", "`beta2` = 1.5"),
        ("adam_eps: -1.0", "`adam_eps` = -1"),
    ]
    .iter()
    .enumerate()
    {
        let cfg = d.join(format!("cfg{i}.ron"));
        std::fs::write(&cfg, format!("({field})")).unwrap();
        let mut c = train(&d.join(format!("cfg{i}")), &fp32, 4, &[]);
        c.arg("--config").arg(&cfg);
        refused(c, &[needle]);
    }
    for (i, (text, needle)) in [
        (r#"(kind: "cast", format: "e4m3", roles: [])"#, "roles: []"),
        (r#"(kind: "cast", format: "e4m3", overrides: [(sites: "h.7.*", keep: true)])"#, "h.7.*"),
        (
            r#"(kind: "progressive", phases: [(from_step: 0, format: "bfloat16"), (from_step: 0, format: "e8m5")], rounding: "zero")"#,
            "from_step: 0",
        ),
    ]
    .iter()
    .enumerate()
    {
        let file = d.join(format!("recipe{i}.ron"));
        std::fs::write(&file, text).unwrap();
        refused(train(&d.join(format!("recipe{i}")), &file, 4, &[]), &[needle, "recipe"]);
    }
    let file = sweep_file(
        d,
        "s.ron",
        std::slice::from_ref(&fp32),
        "learning_rates: [1e-2], seeds: [0], steps: 2,",
    );
    let mut c = Command::new(EXE);
    c.arg("sweep")
        .arg(&file)
        .args(["--jobs", "0", "--out"])
        .arg(d.join("out"));
    refused(c, &["`--jobs` = 0"]);
    let mut c = Command::new(EXE);
    c.args(["bench", "cast", "--elements", "1099511627776"]);
    refused(c, &["--elements 1099511627776", "cannot allocate"]);
    // The default synthetic data has more token ids than the tiny model's 64: refused as
    // training refuses it, not an out-of-bounds panic in the embedding.
    let mut c = Command::new(EXE);
    c.args([
        "bench", "train", "--model", "tiny", "--seq", "16", "--steps", "2",
    ])
    .arg("--recipe")
    .arg(recipe("fp32"));
    refused(c, &["token ids but the model's vocabulary has 64"]);
}
