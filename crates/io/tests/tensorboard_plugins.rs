//! Cross-check the HParams and Custom Scalars summaries against TensorBoard itself: write a small
//! sweep (two runs with training scalars, their sessions, the experiment and a precision layout
//! at the root), serve it with TensorBoard's own WSGI app and plugins (tests/read_plugins.py),
//! and compare what its HTTP API returns with what we wrote.
//!
//! Needs a Python with the `tensorboard` package, named by `FP8_PYTHON`; without it the test says
//! so and passes, unless `CI` is set.

use fp8_io::tensorboard::custom_scalars::{
    inspection_layout, precision_layout, write_layout, ROLES, STATS,
};
use fp8_io::tensorboard::hparams::{write_sweep, SweepRun};
use fp8_io::tensorboard::EventWriter;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

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
                "SKIPPED tensorboard_plugins: set FP8_PYTHON to a Python with `tensorboard` \
                 installed (e.g. FP8_PYTHON=.venv/bin/python) to run this test"
            );
            None
        }
    }
}

fn serve_with_tensorboard(python: &str, dir: &Path, run: &str, regex: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_plugins.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(run)
        .arg(regex)
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "read_plugins.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_plugins.py printed JSON")
}

fn sweep_run(name: &str, lr: f64, seed: u64, diverged: bool) -> SweepRun {
    SweepRun {
        run_dir: format!("runs/{name}"),
        recipe: if diverged { "e8m3" } else { "fp32" }.into(),
        format: if diverged { "e8m3" } else { "float32" }.into(),
        lr,
        seed,
        model: "gpt2-mini".into(),
        data: "synthetic".into(),
        final_loss: if diverged { f64::NAN } else { 2.5 },
        best_loss: 2.25 + seed as f64,
        diverged,
        spike_count: seed * 3,
        max_sharpness: (!diverged).then_some(17.5),
        steps: 40,
    }
}

const SITES: [&str; 4] = ["h.0.attn.qkv", "h.0.mlp.fc", "h.1.attn.qkv", "lm_head"];

#[test]
fn tensorboard_shows_our_hparams_and_layout() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        sweep_run("a", 1e-3, 0, false),
        sweep_run("b", 3e-3, 1, true),
    ];
    // Training events, as `fp8 train` writes them, beside the sessions.
    for (i, r) in runs.iter().enumerate() {
        let mut w = EventWriter::create(dir.path().join(&r.run_dir)).unwrap();
        for step in 0..3 {
            w.add_scalar("train/loss", 3.0 - step as f32, step).unwrap();
            for (j, site) in SITES.iter().enumerate() {
                let v = (i * 100 + j * 10) as f32 + step as f32;
                w.add_scalar(&format!("precision/{site}/x/amax"), v, step)
                    .unwrap();
                w.add_scalar(&format!("precision/{site}/w/amax"), -v, step)
                    .unwrap();
            }
        }
    }
    write_sweep(dir.path(), "two runs", &runs).unwrap();
    write_sweep(dir.path(), "two runs", &runs).unwrap(); // a resumed sweep: still one copy
    let layout = precision_layout(&SITES, &ROLES, &STATS);
    write_layout(dir.path(), &layout).unwrap();
    let regex = layout.category[0].chart[0].multiline.as_ref().unwrap().tag[0].clone();

    let got = serve_with_tensorboard(&py, dir.path(), "runs/a", &regex);

    for provider in ["multiplexer", "data_server"] {
        check_answers(&got[provider], provider, &runs, &regex);
    }
    // The same content parsed by the plugin's own protobuf module.
    let raw = &got["raw_experiment"];
    assert_eq!(raw["run"], ".");
    assert_eq!(raw["version"], 0);
    let order: Vec<&str> = raw["experiment"]["hparamInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["recipe", "format", "lr", "seed", "model", "data"]);
}

/// An inspection chart, served by TensorBoard's custom scalars route, holds the active recipe's
/// (`inspect/`) and a counterfactual recipe's series of exactly the layer's sites, and none of
/// another layer's or of the precision telemetry.
#[test]
fn tensorboard_charts_inspection_and_counterfactual_series_together() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let runs = [sweep_run("a", 1e-3, 0, false)];
    {
        let mut w = EventWriter::create(dir.path().join(&runs[0].run_dir)).unwrap();
        for step in 0..2 {
            for site in SITES {
                for prefix in ["inspect", "counterfactual/mxfp8", "precision"] {
                    w.add_scalar(&format!("{prefix}/{site}/x/mse"), step as f32, step)
                        .unwrap();
                }
            }
        }
    }
    write_sweep(dir.path(), "one run", &runs).unwrap();
    let layout = inspection_layout(&SITES, &ROLES);
    write_layout(dir.path(), &layout).unwrap();
    let chart = &layout.category[0].chart[2];
    assert_eq!(chart.title, "h.0 x mse");
    let regex = chart.multiline.as_ref().unwrap().tag[0].clone();

    let got = serve_with_tensorboard(&py, dir.path(), "runs/a", &regex);
    for provider in ["multiplexer", "data_server"] {
        let s = &got[provider]["scalars"];
        assert_eq!(s["regex_valid"], true, "{provider}: {s}");
        let mut tags: Vec<&String> = s["tag_to_events"].as_object().unwrap().keys().collect();
        tags.sort();
        assert_eq!(
            tags,
            [
                "counterfactual/mxfp8/h.0.attn.qkv/x/mse",
                "counterfactual/mxfp8/h.0.mlp.fc/x/mse",
                "inspect/h.0.attn.qkv/x/mse",
                "inspect/h.0.mlp.fc/x/mse",
            ],
            "{provider}"
        );
    }
}

/// What one data provider's TensorBoard answered, against what we wrote.
fn check_answers(got: &Value, provider: &str, runs: &[SweepRun], regex: &str) {
    eprintln!("checking TensorBoard with the {provider} data provider");
    assert_eq!(got["plugins"]["hparams"], true, "{}", got["plugins"]);
    assert_eq!(got["plugins"]["custom_scalars"], true, "{}", got["plugins"]);

    // The experiment, as the dashboard receives it.
    let e = &got["experiment"];
    assert_eq!(e["description"], "two runs");
    // TensorBoard lists the hyperparameters by name.
    let hparam = |name: &str| {
        e["hparamInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no hparam {name}: {e}"))
    };
    assert_eq!(e["hparamInfos"].as_array().unwrap().len(), 6);
    let lr = hparam("lr");
    assert_eq!(lr["type"], "DATA_TYPE_FLOAT64");
    assert_eq!(lr["domainDiscrete"], serde_json::json!([0.001, 0.003]));
    assert_eq!(
        hparam("seed")["domainDiscrete"],
        serde_json::json!([0.0, 1.0])
    );
    let recipe = hparam("recipe");
    assert_eq!(recipe["type"], "DATA_TYPE_STRING");
    assert_eq!(
        recipe["domainDiscrete"],
        serde_json::json!(["e8m3", "fp32"])
    );
    for name in ["format", "model", "data"] {
        assert_eq!(hparam(name)["type"], "DATA_TYPE_STRING");
    }
    let metrics: Vec<&str> = e["metricInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"]["tag"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        [
            "hparams/final_loss",
            "hparams/best_loss",
            "hparams/diverged",
            "hparams/spike_count",
            "hparams/max_sharpness"
        ]
    );
    // One session group per run, with our hyperparameters and metric values.
    let groups = got["session_groups"]["sessionGroups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{}", got["session_groups"]);
    assert_eq!(got["session_groups"]["totalSize"], 2);
    for r in runs {
        let g = groups
            .iter()
            .find(|g| g["name"] == r.run_dir.as_str())
            .unwrap_or_else(|| panic!("no group {}: {groups:?}", r.run_dir));
        assert_eq!(g["hparams"]["recipe"], r.recipe.as_str());
        assert_eq!(g["hparams"]["format"], r.format.as_str());
        assert_eq!(g["hparams"]["lr"], r.lr);
        assert_eq!(g["hparams"]["seed"], r.seed as f64);
        assert_eq!(g["hparams"]["model"], "gpt2-mini");
        assert_eq!(g["hparams"]["data"], "synthetic");
        let sessions = g["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1);
        let status = if r.diverged {
            "STATUS_FAILURE"
        } else {
            "STATUS_SUCCESS"
        };
        assert_eq!(sessions[0]["status"], status);
        let metric = |tag: &str| {
            g["metricValues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"]["tag"] == tag)
                .map(|m| (m["value"].clone(), m["trainingStep"].clone()))
        };
        assert_eq!(
            metric("hparams/best_loss"),
            Some((serde_json::json!(r.best_loss), serde_json::json!(40)))
        );
        assert_eq!(
            metric("hparams/diverged").unwrap().0,
            if r.diverged { 1.0 } else { 0.0 }
        );
        assert_eq!(
            metric("hparams/spike_count").unwrap().0,
            r.spike_count as f64
        );
        match r.max_sharpness {
            Some(s) => assert_eq!(metric("hparams/max_sharpness").unwrap().0, s),
            None => assert_eq!(metric("hparams/max_sharpness"), None),
        }
        if r.diverged {
            // NaN travels as the JSON string "NaN".
            assert_eq!(metric("hparams/final_loss").unwrap().0, "NaN");
        } else {
            assert_eq!(metric("hparams/final_loss").unwrap().0, 2.5);
        }
    }

    // The custom scalars layout, and the chart's regex picking exactly the layer's sites.
    let cats = got["layout"]["category"].as_array().unwrap();
    let titles: Vec<&str> = cats.iter().map(|c| c["title"].as_str().unwrap()).collect();
    assert_eq!(
        titles,
        ["precision h.0", "precision h.1", "precision lm_head"]
    );
    assert_eq!(
        cats[0]["chart"].as_array().unwrap().len(),
        ROLES.len() * STATS.len()
    );
    assert_eq!(cats[0]["chart"][0]["title"], "h.0 x amax");
    assert_eq!(cats[0]["chart"][0]["multiline"]["tag"][0], regex);
    let s = &got["scalars"];
    assert_eq!(s["regex_valid"], true);
    let mut tags: Vec<&String> = s["tag_to_events"].as_object().unwrap().keys().collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "precision/h.0.attn.qkv/x/amax",
            "precision/h.0.mlp.fc/x/amax"
        ]
    );
    let events = s["tag_to_events"]["precision/h.0.mlp.fc/x/amax"]
        .as_array()
        .unwrap();
    let steps_values: Vec<(i64, f64)> = events
        .iter()
        .map(|e| (e[1].as_i64().unwrap(), e[2].as_f64().unwrap()))
        .collect();
    assert_eq!(steps_values, [(0, 10.0), (1, 11.0), (2, 12.0)]);
}
