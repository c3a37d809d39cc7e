//! TransformerEngine-debug-style telemetry from the trainer (`inspect` and `counterfactuals`):
//! it lands in TensorBoard on logging steps only, changes no training number, agrees with the
//! casts' own telemetry, and a counterfactual recipe's scaling state survives a resume.

mod common;

use common::recipe;
use fp8_io::tensorboard::{event::What, read_events, summary::value::Value};
use fp8_train::backend::CpuTrain;
use fp8_train::{train, Silent, TrainConfig};
use std::collections::BTreeMap;
use std::path::Path;

fn config(recipe_name: &str, dir: &Path) -> TrainConfig {
    TrainConfig {
        steps: 6,
        warmup: 1,
        log_every: 2,
        eval_every: 0,
        checkpoint_every: 3,
        grad_noise_every: 0,
        ..common::tiny_run(recipe(recipe_name), dir)
    }
}

/// Every scalar of the run's event files: tag → [(step, value)].
fn scalars(run: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for e in std::fs::read_dir(run).unwrap() {
        let path = e.unwrap().path();
        if !path.to_string_lossy().contains("tfevents") {
            continue;
        }
        for ev in read_events(&path).unwrap() {
            let Some(What::Summary(s)) = &ev.what else {
                continue;
            };
            for v in &s.value {
                if let Some(Value::SimpleValue(x)) = v.value {
                    out.entry(v.tag.clone()).or_default().push((ev.step, x));
                }
            }
        }
    }
    out
}

fn with_prefix<'a>(
    all: &'a BTreeMap<String, Vec<(i64, f32)>>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a Vec<(i64, f32)>)> + 'a {
    all.iter()
        .filter_map(move |(t, v)| t.strip_prefix(prefix).map(|rest| (rest, v)))
}

#[test]
fn inspection_and_counterfactuals_log_on_logging_steps_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    // The active recipe again under another name: its counterfactual statistics must equal
    // the active ones, since both see the very same tensors.
    let same = tmp.path().join("same.ron");
    std::fs::copy(recipe("bit_reduction_e8m3"), &same).unwrap();
    let (a, b) = (tmp.path().join("inspected"), tmp.path().join("plain"));
    let mut inspected = config("bit_reduction_e8m3", &a);
    inspected.inspect = Some("1x16".into());
    inspected.counterfactuals = vec![same, recipe("mxfp8")];
    train::<CpuTrain>(&inspected, &device, false, &mut Silent).unwrap();
    train::<CpuTrain>(
        &config("bit_reduction_e8m3", &b),
        &device,
        false,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(
        common::losses(&a),
        common::losses(&b),
        "the telemetry changed the run"
    );

    let all = scalars(&a);
    assert!(
        !scalars(&b).keys().any(|t| t.starts_with("inspect/")),
        "inspection was off"
    );
    let active: BTreeMap<&str, &Vec<(i64, f32)>> = with_prefix(&all, "inspect/").collect();
    assert!(!active.is_empty(), "no inspect/ tags: {:?}", all.keys());
    for (tag, series) in &active {
        // Logging steps: 0, 2, 4 and the last (5).
        let steps: Vec<i64> = series.iter().map(|p| p.0).collect();
        assert_eq!(steps, vec![0, 2, 4, 5], "{tag}");
        // The counterfactual copy of the active recipe measured the same tensors.
        assert_eq!(
            all.get(&format!("counterfactual/same/{tag}")),
            Some(*series),
            "counterfactual/same/{tag}"
        );
    }
    // Against the casts' own telemetry (a different code path, counting as the kernel does):
    // TE's underflow % is 100 × the share of elements that the cast flushed to zero, and
    // bit reduction (no scaling) saturates nothing here.
    let mut compared = 0;
    for (tag, series) in &active {
        let Some(site_role) = tag.strip_suffix("/underflow_pct") else {
            continue;
        };
        let kernel = &all[&format!("precision/{site_role}/underflow")];
        for ((s, pct), (s2, frac)) in series.iter().zip(kernel) {
            assert_eq!(s, s2);
            assert!(
                (f64::from(*pct) - 100.0 * f64::from(*frac)).abs() <= 1e-4 * 100.0,
                "{tag} at step {s}: {pct} % vs {frac}"
            );
        }
        let overflow = &active[format!("{site_role}/overflow_pct").as_str()];
        assert!(
            overflow.iter().all(|p| p.1 == 0.0),
            "{site_role}: {overflow:?}"
        );
        compared += 1;
    }
    assert!(compared >= 3, "{compared} (site, role) pairs compared");

    // MXFP8's E8M0 block scales are powers of two; its counterfactual is measured too.
    let mx: Vec<_> = with_prefix(&all, "counterfactual/mxfp8/").collect();
    assert!(!mx.is_empty());
    for (tag, series) in mx {
        for (s, v) in series {
            if tag.ends_with("scale_inv_min") || tag.ends_with("scale_inv_max") {
                assert!(*v > 0.0 && v.log2().fract() == 0.0, "{tag} at {s}: {v}");
            }
            if tag.ends_with("underflow_pct") || tag.ends_with("overflow_pct") {
                assert!((0.0..=100.0).contains(v), "{tag} at {s}: {v}");
            }
        }
    }
}

#[test]
fn a_counterfactual_recipes_scaling_state_survives_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let full = tmp.path().join("full");
    let mut cfg = config("bit_reduction_e8m3", &full);
    // Delayed scaling keeps an amax history: its scale at step 4 comes from steps 0 and 2.
    cfg.counterfactuals = vec![recipe("delayed_scaling")];
    train::<CpuTrain>(&cfg, &device, false, &mut Silent).unwrap();

    // A copy rewound to its step-3 checkpoint, without the event files (the resumed run writes
    // its own), resumed to step 6.
    let part = tmp.path().join("part");
    common::copy_dir(&full, &part, &|name| name.contains("tfevents"));
    std::fs::remove_dir_all(part.join("checkpoints/step-00000006")).unwrap();
    std::fs::write(part.join("checkpoints/latest"), "step-00000003").unwrap();
    std::fs::remove_file(part.join("summary.json")).unwrap();
    let mut resumed = cfg.clone();
    resumed.run_dir = Some(part.clone());
    train::<CpuTrain>(&resumed, &device, true, &mut Silent).unwrap();

    let (want, got) = (scalars(&full), scalars(&part));
    let after: Vec<_> = with_prefix(&got, "counterfactual/delayed_scaling/").collect();
    assert!(!after.is_empty());
    for (tag, series) in after {
        let full_series = &want[&format!("counterfactual/delayed_scaling/{tag}")];
        let tail: Vec<_> = full_series.iter().filter(|p| p.0 >= 3).collect();
        assert_eq!(series.iter().collect::<Vec<_>>(), tail, "{tag}");
    }
}
