//! Cross-check the event writer against TensorBoard itself: write scalars and histograms, read
//! them back with `EventAccumulator` (tests/read_events.py) and compare.
//!
//! Needs a Python with the `tensorboard` package, named by `FP8_PYTHON` (`.ci/run` sets it to
//! `.venv/bin/python`). Without it the test says so and passes, unless `CI` is set: in CI a
//! missing reader is a broken setup, not a reason to skip.

use fp8_io::tensorboard::{histogram, EventWriter};
use serde_json::Value;
use std::collections::BTreeMap;
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
                "SKIPPED tensorboard_python: set FP8_PYTHON to a Python with `tensorboard` \
                 installed (e.g. FP8_PYTHON=.venv/bin/python) to run this test"
            );
            None
        }
    }
}

#[derive(Debug)]
struct Histo {
    step: i64,
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    bucket_limit: Vec<f64>,
    bucket: Vec<f64>,
}

fn read_with_tensorboard(python: &str, dir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_events.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "read_events.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_events.py printed JSON")
}

#[test]
fn tensorboard_reads_what_we_write() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let losses: Vec<(i64, f32)> = (0..50).map(|s| (s, 10.0 / (1.0 + s as f32))).collect();
    let hist_a: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
    let hist_b: Vec<f32> = vec![0.0, 1e-3, -7.5, 448.0, f32::NAN, 2.0e-9];
    {
        let mut w = EventWriter::create(dir.path()).unwrap();
        for &(s, l) in &losses {
            w.add_scalar("train/loss", l, s).unwrap();
            if s % 10 == 0 {
                w.add_scalar("val/loss", l + 0.5, s).unwrap();
            }
        }
        w.add_scalar("precision/h.0.attn.qkv/x/amax", 0.0, 3)
            .unwrap();
        w.add_histogram("weights/h.0", &hist_a, 5).unwrap();
        w.add_histogram("weights/h.0", &hist_b, 9).unwrap();
        w.add_histogram("empty", &[], 9).unwrap();
        w.flush().unwrap();
    }
    let got = read_with_tensorboard(&py, dir.path());

    let mut scalars: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for (tag, events) in got["scalars"].as_object().unwrap() {
        for e in events.as_array().unwrap() {
            scalars
                .entry(tag.clone())
                .or_default()
                .push((e[0].as_i64().unwrap(), e[1].as_f64().unwrap() as f32));
        }
    }
    let val: Vec<(i64, f32)> = losses
        .iter()
        .filter(|(s, _)| s % 10 == 0)
        .map(|&(s, l)| (s, l + 0.5))
        .collect();
    let mut want = BTreeMap::new();
    want.insert("train/loss".to_string(), losses.clone());
    want.insert("val/loss".to_string(), val);
    want.insert("precision/h.0.attn.qkv/x/amax".to_string(), vec![(3, 0.0)]);
    assert_eq!(scalars, want);

    let histos = &got["histograms"];
    let num = |v: &Value| v.as_f64().unwrap();
    let nums = |v: &Value| v.as_array().unwrap().iter().map(num).collect::<Vec<_>>();
    let read: Vec<Histo> = histos["weights/h.0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Histo {
            step: h["step"].as_i64().unwrap(),
            min: num(&h["min"]),
            max: num(&h["max"]),
            num: num(&h["num"]),
            sum: num(&h["sum"]),
            sum_squares: num(&h["sum_squares"]),
            bucket_limit: nums(&h["bucket_limit"]),
            bucket: nums(&h["bucket"]),
        })
        .collect();
    let expect = |step, values: &[f32]| {
        let h = histogram(values);
        Histo {
            step,
            min: h.min,
            max: h.max,
            num: h.num,
            sum: h.sum,
            sum_squares: h.sum_squares,
            bucket_limit: h.bucket_limit,
            bucket: h.bucket,
        }
    };
    // serde_json's default float parser may be one ulp off Python's shortest round-trip
    // printing, so compare floats to a relative 1e-15 (a few ulps) rather than bit for bit.
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-15 * a.abs().max(b.abs());
    let all_close =
        |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y));
    let want = [expect(5, &hist_a), expect(9, &hist_b)];
    assert_eq!(read.len(), want.len());
    for (r, w) in read.iter().zip(&want) {
        assert!(
            r.step == w.step
                && all_close(
                    &[r.min, r.max, r.num, r.sum, r.sum_squares],
                    &[w.min, w.max, w.num, w.sum, w.sum_squares]
                )
                && all_close(&r.bucket_limit, &w.bucket_limit)
                && r.bucket == w.bucket,
            "TensorBoard read\n{r:?}\nwe wrote\n{w:?}"
        );
    }
    assert_eq!(read[0].num, 1000.0);
    assert_eq!(read[1].num, 5.0); // NaN dropped
    assert_eq!(read[1].max, 448.0);
    assert_eq!(histos["empty"].as_array().unwrap().len(), 1);
}
