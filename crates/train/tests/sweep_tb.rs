//! A finished tiny sweep holds the TensorBoard HParams data and precision layout, as TensorBoard
//! itself reads them: its WSGI app and real hparams / custom_scalars plugins (fp8-io's
//! tests/read_plugins.py) list one session per run with the run's recipe, format, learning rate
//! and seed, and metrics equal to the runs' summary.json; the layout's chart picks the run's
//! logged precision series.
//!
//! Needs a Python with the `tensorboard` package, named by `FP8_PYTHON`; without it the test
//! checks our own reading of the files only, says so, and passes, unless `CI` is set.

use fp8_io::tensorboard::event::What;
use fp8_io::tensorboard::{custom_scalars, hparams, read_events};
use fp8_train::backend::CpuTrain;
use fp8_train::sweep::{run_in_process, Shard, SweepFile};
use fp8_train::{Silent, TrainConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<String> {
    match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but FP8_PYTHON is not: point it at a Python with the `tensorboard` \
                     package (.ci/run does this)"
                );
            }
            eprintln!(
                "SKIPPED the TensorBoard half of sweep_tb: set FP8_PYTHON to a Python with \
                 `tensorboard` installed to run it"
            );
            None
        }
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_finished_sweep_shows_in_tensorboards_hparams_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let recipes = repo().join("recipes");
    let sweep = SweepFile {
        recipes: vec![
            recipes.join("fp32.ron"),
            recipes.join("bit_reduction_e8m4.ron"),
        ],
        learning_rates: vec![3e-3],
        seeds: vec![0],
        steps: 3,
        models: vec!["tiny".into()],
        data: vec!["synthetic:vocab=64,order=1,tokens=20000".into()],
        baseline: None,
        train: Some(TrainConfig {
            batch: 2,
            seq: 16,
            warmup: 1,
            log_every: 1,
            eval_every: 0,
            eval_batches: 1,
            ..TrainConfig::default()
        }),
        ..SweepFile::default()
    };
    let out = tmp.path().join("sweep");
    let report =
        run_in_process::<CpuTrain>(&sweep, &out, Shard::all(), &Default::default(), &mut Silent)
            .unwrap();
    assert_eq!((report.finished, report.failed.len()), (2, 0));

    // Our own reading: the experiment at the root, a session in each run, the layout.
    let root = read_events(out.join(hparams::EVENT_FILE)).unwrap();
    let tags: Vec<String> = root
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => Some(s.value.iter().map(|v| v.tag.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        tags.iter().any(|t| t == hparams::EXPERIMENT_TAG),
        "{tags:?}"
    );
    assert!(out.join(custom_scalars::EVENT_FILE).is_file());
    let mut runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert!(r.join(hparams::EVENT_FILE).is_file(), "{}", r.display());
    }

    let Some(py) = python() else { return };
    let e8m4 = runs
        .iter()
        .find(|r| {
            r.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bit_reduction_e8m4")
        })
        .unwrap();
    let run_name = format!("runs/{}", e8m4.file_name().unwrap().to_string_lossy());
    // The chart the sweep's layout holds first: layer h.0 of the tiny model, x, amax.
    let sites = fp8_models::ModelConfig::preset("tiny").unwrap().sites();
    let regex =
        custom_scalars::precision_layout(&sites, &custom_scalars::ROLES, &custom_scalars::STATS)
            .category[0]
            .chart[0]
            .multiline
            .as_ref()
            .unwrap()
            .tag[0]
            .clone();
    let script = repo().join("crates/io/tests/read_plugins.py");
    let o = Command::new(&py)
        .arg(&script)
        .arg(&out)
        .arg(&run_name)
        .arg(&regex)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "read_plugins.py failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got: Value = serde_json::from_slice(&o.stdout).unwrap();
    for provider in ["multiplexer", "data_server"] {
        let g = &got[provider];
        assert_eq!(g["plugins"]["hparams"], true, "{provider}");
        let infos = g["experiment"]["hparamInfos"].as_array().unwrap();
        let recipe = infos.iter().find(|h| h["name"] == "recipe").unwrap();
        assert_eq!(
            recipe["domainDiscrete"],
            serde_json::json!(["bit_reduction_e8m4", "fp32"])
        );
        let groups = g["session_groups"]["sessionGroups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{provider}: {groups:?}");
        for r in &runs {
            let name = format!("runs/{}", r.file_name().unwrap().to_string_lossy());
            let group = groups.iter().find(|x| x["name"] == name.as_str()).unwrap();
            let summary = json(&r.join("summary.json"));
            let h = &group["hparams"];
            assert_eq!(h["recipe"], summary["recipe"], "{name}");
            assert_eq!(h["lr"], 3e-3);
            assert_eq!(h["seed"], 0.0);
            assert_eq!(h["model"], "tiny");
            let format = if summary["recipe"] == "fp32" {
                "-"
            } else {
                "e8m4"
            };
            assert_eq!(h["format"], format, "{name}");
            let metric = |tag: &str| {
                group["metricValues"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"]["tag"] == tag)
                    .map(|m| m["value"].as_f64().unwrap())
            };
            // Metrics travel as f32 scalars.
            let want = summary["final_train_loss"].as_f64().unwrap() as f32 as f64;
            assert_eq!(metric("hparams/final_loss"), Some(want), "{name}");
            assert_eq!(metric("hparams/diverged"), Some(0.0));
            assert_eq!(group["sessions"][0]["status"], "STATUS_SUCCESS", "{name}");
        }
        // The layout's first chart: layer h.0, role x, amax, over the run's logged sites.
        let cats = g["layout"]["category"].as_array().unwrap();
        let titles: Vec<&str> = cats.iter().map(|c| c["title"].as_str().unwrap()).collect();
        assert_eq!(
            titles,
            ["precision h.0", "precision h.1", "precision lm_head"]
        );
        assert_eq!(cats[0]["chart"][0]["multiline"]["tag"][0], regex.as_str());
        let series = g["scalars"]["tag_to_events"].as_object().unwrap();
        assert!(
            series.contains_key("precision/h.0.attn.qkv/x/amax"),
            "{provider}: {:?}",
            series.keys().collect::<Vec<_>>()
        );
    }
}
