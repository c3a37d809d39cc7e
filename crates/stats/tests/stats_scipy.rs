//! Cross-check the sweep statistics against scipy/numpy (tests/stats_reference.py): Fisher's exact
//! test, Newcombe's interval, the exact power and the smallest detectable failure increase, the
//! paired t interval and detectable gap, the learning-rate sensitivity with its bootstrap interval
//! (same resample indices on both sides), the outcome rule and the early-warning counts.
//!
//! Needs a Python with numpy and scipy, named by `FP8_PYTHON`. Without it the test says so and
//! passes, unless `CI` is set: in CI a missing reference is a broken setup, not a reason to skip.

use fp8_stats::bootstrap::resample_indices;
use fp8_stats::early_warning::{evaluate_warning, RunSeries, Threshold};
use fp8_stats::outcomes::{classify_group, RunLosses, StallRule};
use fp8_stats::paired::{
    fisher_power, fisher_two_sided, min_detectable_increase, newcombe_interval, paired_loss_gap,
    PairedParams,
};
use fp8_stats::sensitivity::{lr_sensitivity, LrRun, SensitivityParams};
use fp8_stats::wilson::Z95;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn python() -> Option<String> {
    match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but FP8_PYTHON is not: point it at a Python with numpy and scipy \
                     (.ci/run does this)"
                );
            }
            eprintln!(
                "SKIPPED stats_scipy: set FP8_PYTHON to a Python with numpy and scipy installed \
                 (e.g. FP8_PYTHON=.venv/bin/python) to run this test"
            );
            None
        }
    }
}

/// JSON number, or "NaN"/"inf"/"-inf" (JSON has no non-finite numbers).
fn f(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

fn reference(python: &str, cases: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stats_reference.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stats_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats_reference.py printed JSON")
}

fn close(what: &str, a: f64, b: f64, tol: f64) {
    assert!(
        (a - b).abs() <= tol * (1.0 + b.abs()),
        "{what}: rust {a} vs scipy {b}"
    );
}

/// A deterministic sweep of one recipe: `seeds` seeds, five rates, losses with seed noise, the
/// top rate blowing up for some seeds.
fn sweep(seeds: u64, blowups: bool) -> Vec<LrRun> {
    let lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2];
    let mut v = Vec::new();
    for (i, &lr) in lrs.iter().enumerate() {
        for s in 0..seeds {
            let noise = ((s * 7 + i as u64 * 3) % 5) as f64 * 0.03;
            let base = [4.0, 3.4, 3.1, 3.2, 3.9][i];
            let final_loss = if blowups && i == 4 && s % 2 == 0 {
                if s % 4 == 0 {
                    f64::NAN
                } else {
                    14.0
                }
            } else {
                base + noise
            };
            v.push(LrRun {
                lr,
                seed: s,
                final_loss,
                initial_loss: 10.8 + 0.01 * s as f64,
                failed: !final_loss.is_finite() || final_loss > 10.0,
            });
        }
    }
    v
}

#[test]
fn statistics_match_scipy() {
    let Some(py) = python() else { return };
    let params = PairedParams::default();

    let fisher_cases: Vec<[u64; 4]> = vec![
        [3, 4, 1, 4],
        [3, 3, 0, 3],
        [2, 3, 0, 3],
        [7, 12, 2, 12],
        [0, 10, 5, 10],
        [10, 10, 10, 10],
        [1, 20, 9, 20],
        [17, 40, 5, 40],
        [4, 8, 4, 8],
        [15, 60, 3, 60],
        [0, 0, 0, 0],
        [0, 5, 0, 5],
        [12, 30, 0, 25],
    ];
    let newcombe_cases: Vec<[u64; 4]> = vec![
        [3, 5, 0, 5],
        [1, 15, 4, 15],
        [20, 20, 0, 20],
        [7, 40, 7, 40],
        [0, 3, 3, 3],
    ];
    // (n1, n0, p0): the smallest detectable increase, checked on both sides of the boundary.
    let mde_cases: Vec<(u64, u64, f64)> = vec![
        (4, 4, 0.0),
        (10, 10, 0.1),
        (20, 20, 0.0),
        (15, 25, 0.2),
        (6, 6, 0.5),
        (3, 3, 0.0),
        (16, 16, 0.9),
    ];
    let mut power_cases: Vec<(u64, f64, u64, f64)> =
        vec![(8, 0.7, 8, 0.1), (12, 0.5, 9, 0.0), (5, 1.0, 5, 0.0)];
    let mut mdes = Vec::new();
    for &(n1, n0, p0) in &mde_cases {
        let d = min_detectable_increase(n1, n0, p0, params.alpha, params.power);
        mdes.push(d);
        match d {
            Some(d) => {
                power_cases.push((n1, p0 + d, n0, p0));
                power_cases.push((n1, p0 + d - 1e-5, n0, p0));
            }
            None => power_cases.push((n1, 1.0, n0, p0)),
        }
    }
    let gap_cases: Vec<Vec<f64>> = vec![
        vec![0.12, -0.03, 0.25, 0.08, 0.11, 0.02],
        vec![1.0, 2.0, 3.0, 4.0],
        vec![0.5, f64::NAN, 0.7, f64::INFINITY, 0.4],
        vec![0.3],
        vec![],
    ];
    let b = SensitivityParams::default().bootstrap;
    let sens_cases: Vec<Vec<LrRun>> = vec![
        sweep(5, true),
        sweep(3, false),
        sweep(1, true),
        // All blown up.
        sweep(4, true)
            .into_iter()
            .map(|r| LrRun {
                final_loss: f64::INFINITY,
                failed: true,
                ..r
            })
            .collect(),
        vec![],
    ];
    let sens_json: Vec<Value> = sens_cases
        .iter()
        .map(|runs| {
            let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
            seeds.sort_unstable();
            seeds.dedup();
            json!({
                "runs": runs.iter().map(|r| json!({
                    "lr": r.lr, "seed": r.seed, "final_loss": f(r.final_loss),
                    "initial_loss": f(r.initial_loss),
                })).collect::<Vec<_>>(),
                "indices": resample_indices(seeds.len(), b.resamples, b.rng_seed),
            })
        })
        .collect();
    let rule = StallRule::default();
    let outcome_cases: Vec<Vec<RunLosses>> = vec![
        vec![
            RunLosses {
                diverged: false,
                initial_loss: Some(10.8),
                best_loss: 3.0,
            },
            RunLosses {
                diverged: false,
                initial_loss: Some(10.9),
                best_loss: 9.7,
            },
            RunLosses {
                diverged: true,
                initial_loss: Some(10.8),
                best_loss: 2.9,
            },
            RunLosses {
                diverged: false,
                initial_loss: None,
                best_loss: 4.0,
            },
            RunLosses {
                diverged: false,
                initial_loss: Some(10.7),
                best_loss: 10.7,
            },
            RunLosses {
                diverged: false,
                initial_loss: Some(10.8),
                best_loss: f64::NAN,
            },
        ],
        vec![
            RunLosses {
                diverged: false,
                initial_loss: Some(5.0),
                best_loss: 4.99,
            },
            RunLosses {
                diverged: false,
                initial_loss: Some(5.0),
                best_loss: 4.995,
            },
        ],
        vec![RunLosses {
            diverged: false,
            initial_loss: None,
            best_loss: 2.0,
        }],
        vec![],
    ];
    let warn_runs = vec![
        RunSeries {
            failure_step: Some(50),
            points: vec![(0, 1.0), (10, 2.0), (20, 6.0)],
        },
        RunSeries {
            failure_step: Some(30),
            points: vec![(0, 1.0), (10, 7.0), (30, 8.0)],
        },
        RunSeries {
            failure_step: Some(20),
            points: vec![(0, 1.0), (20, 9.0)],
        },
        RunSeries {
            failure_step: Some(40),
            points: vec![(0, 1.0), (5, f64::NAN)],
        },
        RunSeries {
            failure_step: None,
            points: vec![(0, 1.0), (10, 5.5)],
        },
        RunSeries {
            failure_step: None,
            points: vec![(0, 1.0), (10, 4.0)],
        },
        RunSeries {
            failure_step: None,
            points: vec![],
        },
    ];
    let warn_cases = [
        (Threshold::above(5.0), true),
        (Threshold::below(1.5), false),
    ];

    let cases = json!({
        "alpha": params.alpha,
        "power_level": params.power,
        "fisher": fisher_cases,
        "newcombe": newcombe_cases,
        "power": power_cases.iter().map(|&(a, b, c, d)| json!([a, b, c, d])).collect::<Vec<_>>(),
        "loss_gap": gap_cases.iter().map(|d| d.iter().map(|&x| f(x)).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "sensitivity": sens_json,
        "outcomes": outcome_cases.iter().map(|runs| json!({
            "min_progress": rule.min_progress,
            "min_drop": rule.min_drop,
            "runs": runs.iter().map(|r| json!({
                "diverged": r.diverged,
                "initial": r.initial_loss.map(f),
                "best": f(r.best_loss),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "warnings": warn_cases.iter().map(|(t, above)| json!({
            "threshold": t.value,
            "above": above,
            "runs": warn_runs.iter().map(|r| json!({
                "failure_step": r.failure_step,
                "points": r.points.iter().map(|&(s, v)| json!([s, f(v)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let py_out = reference(&py, &cases);

    // Fisher's exact test.
    for (t, p) in fisher_cases
        .iter()
        .zip(py_out["fisher"].as_array().unwrap())
    {
        let rust = fisher_two_sided(t[0], t[1], t[2], t[3]);
        close(&format!("fisher {t:?}"), rust, num(p), 1e-9);
    }
    // Newcombe with scipy's Wilson intervals.
    for (t, p) in newcombe_cases
        .iter()
        .zip(py_out["newcombe"].as_array().unwrap())
    {
        let (lo, hi) = newcombe_interval(t[0], t[1], t[2], t[3], Z95);
        close(&format!("newcombe lo {t:?}"), lo, num(&p[0]), 1e-9);
        close(&format!("newcombe hi {t:?}"), hi, num(&p[1]), 1e-9);
    }
    // Exact power, and the detectable increase sitting on the power boundary.
    let pw = py_out["power"].as_array().unwrap();
    for (&(n1, p1, n0, p0), p) in power_cases.iter().zip(pw) {
        let rust = fisher_power(n1, p1, n0, p0, params.alpha);
        close(&format!("power {n1} {p1} {n0} {p0}"), rust, num(p), 1e-9);
    }
    let mut k = 3;
    for (c, d) in mde_cases.iter().zip(&mdes) {
        match d {
            Some(_) => {
                let (at, below) = (num(&pw[k]), num(&pw[k + 1]));
                assert!(
                    at >= params.power && below < params.power,
                    "{c:?}: {at} {below}"
                );
                k += 2;
            }
            None => {
                assert!(
                    num(&pw[k]) < params.power,
                    "{c:?}: power at p1 = 1 is {}",
                    pw[k]
                );
                k += 1;
            }
        }
    }
    // Paired t interval and detectable gap.
    for (d, p) in gap_cases.iter().zip(py_out["loss_gap"].as_array().unwrap()) {
        let g = paired_loss_gap(d, &params);
        if p.is_null() {
            assert!(g.is_none_or(|g| g.interval.is_none()), "{d:?}: {g:?}");
            continue;
        }
        let g = g.unwrap();
        let (lo, hi) = g.interval.unwrap();
        close("gap mean", g.mean, num(&p["mean"]), 1e-12);
        close("gap lo", lo, num(&p["lo"]), 1e-9);
        close("gap hi", hi, num(&p["hi"]), 1e-9);
        close("gap mde", g.min_detectable.unwrap(), num(&p["mde"]), 1e-9);
    }
    // Sensitivity and its bootstrap on the same resamples.
    let sp = SensitivityParams::default();
    for (i, (runs, p)) in sens_cases
        .iter()
        .zip(py_out["sensitivity"].as_array().unwrap())
        .enumerate()
    {
        let s = lr_sensitivity(runs, &sp);
        if p.is_null() {
            assert!(s.is_none(), "case {i}: {s:?}");
            continue;
        }
        let s = s.unwrap();
        close(&format!("S case {i}"), s.sensitivity, num(&p["s"]), 1e-12);
        assert_eq!(s.best_lr, num(&p["best_lr"]), "case {i}");
        let means: Vec<f64> = p["means"].as_array().unwrap().iter().map(num).collect();
        assert_eq!(s.per_lr.len(), means.len(), "case {i}");
        for (a, b) in s.per_lr.iter().zip(&means) {
            close(&format!("L(η) case {i}"), a.mean_loss, *b, 1e-12);
        }
        match (&s.interval, &p["interval"]) {
            (None, Value::Null) => {}
            (Some((lo, hi)), iv) => {
                close(&format!("S lo case {i}"), *lo, num(&iv[0]), 1e-12);
                close(&format!("S hi case {i}"), *hi, num(&iv[1]), 1e-12);
            }
            (a, b) => panic!("case {i}: interval {a:?} vs {b}"),
        }
    }
    // Outcomes.
    for (runs, p) in outcome_cases
        .iter()
        .zip(py_out["outcomes"].as_array().unwrap())
    {
        let got: Vec<&str> = classify_group(runs, &rule)
            .outcomes
            .iter()
            .map(|o| o.as_str())
            .collect();
        let want: Vec<&str> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got, want);
    }
    // Early warning.
    for ((t, _), p) in warn_cases
        .iter()
        .zip(py_out["warnings"].as_array().unwrap())
    {
        let e = evaluate_warning(&warn_runs, t);
        assert_eq!(e.hits, p["hits"].as_u64().unwrap(), "{t:?}");
        assert_eq!(e.failed_runs, p["failed"].as_u64().unwrap(), "{t:?}");
        assert_eq!(e.false_alarms, p["alarms"].as_u64().unwrap(), "{t:?}");
        assert_eq!(e.healthy_runs, p["healthy"].as_u64().unwrap(), "{t:?}");
        let leads: Vec<u64> = p["leads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(e.lead_times, leads, "{t:?}");
    }
}
