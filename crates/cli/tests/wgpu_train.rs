//! `fp8 train --device wgpu` end to end through the binary, against the same runs on the CPU
//! (`cargo test -p fp8-cli --release --features wgpu --test wgpu_train`).
//!
//! In CI the device is lavapipe, Mesa's software Vulkan device (scripts/install-vulkan.sh), so
//! this checks the GPU code path (CubeCL kernels, device-side quantization, the fused ops'
//! composed defaults, recipe state) on every commit; speed on lavapipe means nothing.
//!
//! Tolerances, relative to the CPU's loss at the same step: fp32 [`FP32_TOL`], fp8 recipes
//! [`FP8_TOL`]. The device's GEMMs, `exp`/`tanh` and reductions sum in another order than the
//! CPU's, so the two runs differ from the first step in the last bits (fp32: about 1e-6 per
//! step); AdamW's normalised update carries that into the weights, and an fp8 cast turns a
//! last-bit difference into a whole fp8 ulp for the few elements that sit on a rounding
//! boundary. Over these few steps the drift stays far below the tolerances, which are still
//! tight enough to catch a wrong scale, rounding or gradient (each of those moves the loss by
//! 1e-2 or more after a step at this learning rate).
//!
//! Without a wgpu adapter the tests print `SKIPPED, not run on a device: …` and return, except
//! under `CI=true`, where CI installed lavapipe and its absence is a broken setup.
//!
//! Without the `wgpu` feature only [`without_the_feature_wgpu_is_a_clear_error`] runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DATA: &str = "synthetic:vocab=64,order=1,tokens=20000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recipe(name: &str) -> String {
    repo().join("recipes").join(name).display().to_string()
}

/// `fp8 train` on the tiny model on `device` with `extra` flags.
fn train_cmd(run_dir: &Path, recipe_file: &str, device: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fp8"));
    c.args(["train", "--recipe", recipe_file, "--model", "tiny"])
        .args(["--data", DATA, "--device", device])
        .args(["--batch", "4", "--seq", "16", "--lr", "1e-2"])
        .args(["--warmup", "2", "--eval-every", "1000"])
        .arg("--run-dir")
        .arg(run_dir)
        .args(extra);
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("fp8 runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn without_the_feature_wgpu_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["wgpu", "wgpu:0"] {
        let o = run(train_cmd(
            &dir.path().join("r"),
            &recipe("fp32.ron"),
            device,
            &["--steps", "1"],
        ));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{device}: {e}");
        assert!(
            e.contains("without the `wgpu` feature") && e.contains("--features wgpu"),
            "{device}: {e}"
        );
    }
}

#[cfg(feature = "wgpu")]
mod on_wgpu {
    use super::*;
    use serde_json::Value;

    /// Relative loss tolerance of an fp32 run on the device against the CPU (module docs).
    const FP32_TOL: f64 = 1e-4;
    /// Relative loss tolerance of an fp8-recipe run on the device against the CPU.
    const FP8_TOL: f64 = 5e-3;

    /// Whether a wgpu adapter exists; prints why not (and fails under `CI=true`).
    fn have_device(test: &str) -> bool {
        match fp8_core::precision::wgpu::device(None) {
            Ok(_) => {
                eprintln!(
                    "{test}: wgpu adapters {:?}",
                    fp8_core::precision::wgpu::adapters()
                );
                true
            }
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{test}: CI=true but no wgpu adapter: {e}")
            }
            Err(e) => {
                eprintln!("{test}: SKIPPED, not run on a device: {e}");
                false
            }
        }
    }

    fn json(path: &Path) -> Value {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    }

    fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
        serde_json::from_value(json(&run_dir.join("curves.json"))["losses"].clone()).unwrap()
    }

    /// Train and return the losses; panics with fp8's stderr when it fails.
    fn train_ok(
        run_dir: &Path,
        recipe_file: &str,
        device: &str,
        extra: &[&str],
    ) -> Vec<(u64, f64)> {
        let started = std::time::Instant::now();
        let o = run(train_cmd(run_dir, recipe_file, device, extra));
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        let l = losses(run_dir);
        eprintln!(
            "{} on {device}: {} steps in {:.1} s",
            Path::new(recipe_file).display(),
            l.len(),
            started.elapsed().as_secs_f64()
        );
        l
    }

    /// Per step: same step numbers, finite, and within `rel` of the CPU's loss.
    fn assert_close(what: &str, got: &[(u64, f64)], want: &[(u64, f64)], rel: f64) {
        assert_eq!(got.len(), want.len(), "{what}: steps");
        for (&(gs, g), &(ws, w)) in got.iter().zip(want) {
            assert_eq!(gs, ws, "{what}: step numbers");
            let d = (g - w).abs() / w.abs();
            eprintln!("{what} step {gs}: {g} vs {w} (rel {d:.2e})");
            assert!(
                g.is_finite() && d <= rel,
                "{what} step {gs}: {g} vs {w}, rel {d:.2e} > {rel:.0e}"
            );
        }
    }

    /// Train `recipe_file` for a few steps on wgpu and on the CPU and compare the losses.
    fn matches_cpu(recipe_file: &str, rel: f64) {
        let test = Path::new(recipe_file)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !have_device(&test) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let args = ["--steps", "6"];
        let gpu = train_ok(&dir.path().join("wgpu"), recipe_file, "wgpu", &args);
        let cpu = train_ok(&dir.path().join("cpu"), recipe_file, "cpu", &args);
        assert_close(&format!("{test} wgpu vs cpu"), &gpu, &cpu, rel);
        // It trained: on this learnable source the last three steps' mean loss is below the
        // first (one step's batch loss is too noisy to compare: MXFP8's step 5 is above step 0).
        let tail = gpu[3..].iter().map(|p| p.1).sum::<f64>() / 3.0;
        assert!(tail < gpu[0].1, "{test}: loss did not fall: {gpu:?}");
        let s = json(&dir.path().join("wgpu/summary.json"));
        assert_eq!(s["outcome"], "converged", "{s}");
    }

    #[test]
    fn fp32_training_matches_the_cpu() {
        matches_cpu(&recipe("fp32.ron"), FP32_TOL);
    }

    #[test]
    fn delayed_scaling_training_matches_the_cpu() {
        matches_cpu(&recipe("delayed_scaling.ron"), FP8_TOL);
    }

    #[test]
    fn mxfp8_training_matches_the_cpu() {
        matches_cpu(&recipe("mxfp8.ron"), FP8_TOL);
    }

    /// `--resume` refuses another `--device` (the device is part of the run's identity), but
    /// a checkpoint is device-independent: copied into a run directory of the other device, it
    /// resumes there. Here the step-4 checkpoint of a wgpu run continues on the CPU, and the
    /// CPU's on wgpu, under delayed scaling (whose amax history is recipe state in the
    /// checkpoint).
    #[test]
    fn a_wgpu_checkpoint_resumes_on_the_cpu_and_back() {
        if !have_device("resume") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let r = recipe("delayed_scaling.ron");
        let args = ["--steps", "8", "--checkpoint-every", "4"];
        let (gpu_dir, cpu_dir) = (dir.path().join("wgpu"), dir.path().join("cpu"));
        let gpu = train_ok(&gpu_dir, &r, "wgpu", &args);
        let cpu = train_ok(&cpu_dir, &r, "cpu", &args);

        let mut resumed = args.to_vec();
        resumed.push("--resume");
        for (from, from_dir, onto, onto_dir, onto_losses) in [
            ("wgpu", &gpu_dir, "cpu", &cpu_dir, &cpu),
            ("cpu", &cpu_dir, "wgpu", &gpu_dir, &gpu),
        ] {
            // A copy of the `onto` run rewound to before step 4, holding `from`'s checkpoint.
            let part = dir.path().join(format!("{from}-to-{onto}"));
            copy_dir(onto_dir, &part);
            let ckpts = part.join("checkpoints");
            std::fs::remove_dir_all(&ckpts).unwrap();
            std::fs::create_dir(&ckpts).unwrap();
            copy_dir(
                &from_dir.join("checkpoints/step-00000004"),
                &ckpts.join("step-00000004"),
            );
            std::fs::write(ckpts.join("latest"), "step-00000004").unwrap();
            std::fs::remove_file(part.join("summary.json")).unwrap();

            let o = run(train_cmd(&part, &r, onto, &resumed));
            assert!(o.status.success(), "{from} → {onto}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("at step 4"),
                "{from} → {onto}: {}",
                stderr(&o)
            );
            let l = losses(&part);
            let from_losses = if from == "wgpu" { &gpu } else { &cpu };
            // Steps 0–3 are the checkpoint's record of the `from` run, exactly.
            assert_eq!(&l[..4], &from_losses[..4], "{from} → {onto}: steps 0–3");
            // Steps 4–7 ran on `onto` from `from`'s weights, optimizer and scales.
            assert_close(
                &format!("{from} → {onto}"),
                &l[4..],
                &onto_losses[4..],
                FP8_TOL,
            );
        }

        // `--resume` with another device is refused, naming the field.
        let o = run(train_cmd(&gpu_dir, &r, "cpu", &resumed));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("options.device: \"wgpu\" → \"cpu\"")
                || stderr(&o).contains("options.device: wgpu → cpu"),
            "{}",
            stderr(&o)
        );

        // `fp8 sharpness` reads the wgpu run's checkpoint on either device.
        let sharp = |device: &str| -> Value {
            let o = Command::new(env!("CARGO_BIN_EXE_fp8"))
                .args(["sharpness", "--batches", "2", "--device", device])
                .arg("--checkpoint")
                .arg(&gpu_dir)
                .output()
                .unwrap();
            assert!(o.status.success(), "sharpness on {device}: {}", stderr(&o));
            serde_json::from_slice(&o.stdout).unwrap()
        };
        let (sg, sc) = (sharp("wgpu"), sharp("cpu"));
        for k in ["val_loss", "sharpness"] {
            let (g, c) = (sg[k].as_f64().unwrap(), sc[k].as_f64().unwrap());
            assert!(
                (g - c).abs() <= FP8_TOL * c.abs(),
                "sharpness {k}: wgpu {g} cpu {c}"
            );
        }
    }

    #[test]
    fn a_device_index_that_names_no_adapter_is_a_clear_error() {
        if !have_device("index") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let n = fp8_core::precision::wgpu::adapters().len();
        let device = format!("wgpu:{n}");
        let o = run(train_cmd(
            &dir.path().join("r"),
            &recipe("fp32.ron"),
            &device,
            &["--steps", "1"],
        ));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(&format!("N must be below {n}")), "{e}");
        let o = run(train_cmd(
            &dir.path().join("r"),
            &recipe("fp32.ron"),
            "wgpu",
            &["--steps", "1", "--compute-dtype", "bf16"],
        ));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("wgpu has no bf16"), "{}", stderr(&o));
    }

    #[test]
    fn bench_train_runs_on_wgpu() {
        if !have_device("bench") {
            return;
        }
        let o = Command::new(env!("CARGO_BIN_EXE_fp8"))
            .args(["bench", "train", "--model", "tiny", "--device", "wgpu"])
            .args(["--recipe", &recipe("delayed_scaling.ron")])
            .args(["--baseline-recipe", "none", "--batch", "4", "--seq", "16"])
            .args(["--steps", "2", "--warmup-steps", "1", "--data", DATA])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        eprintln!("bench train on wgpu: {out}");
        assert!(
            out.to_lowercase().contains("wgpu") || out.contains("cubecl"),
            "{out}"
        );
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
}
