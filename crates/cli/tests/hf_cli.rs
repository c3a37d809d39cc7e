//! Hugging Face checkpoints through the `fp8` binary: `fp8 logits` of a tiny random checkpoint
//! (written by the models crate's tests/hf_reference.py) against that script's independent numpy
//! forward pass of GPT2LMHeadModel / LlamaForCausalLM; `fp8 train --model hf:DIR` fine-tuning
//! from the checkpoint's weights, with the checkpoint's content hash (not its path) in the run's
//! identity; `fp8 export` of the run read back by numpy and by `fp8 logits` bit for bit; and bad
//! checkpoints, tokens and export targets as exit code 2 with a message naming the problem.
//!
//! The numpy cross-checks need a Python with `numpy` and `safetensors`, named by `FP8_PYTHON`;
//! without it they say so and pass, unless `CI` is set. The error tests need no Python.

use fp8_models::ModelConfig;
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recipe(name: &str) -> String {
    repo().join("recipes").join(name).display().to_string()
}

fn python() -> Option<String> {
    match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but FP8_PYTHON is not: point it at a Python with `numpy` and \
                     `safetensors` (.ci/run does this)"
                );
            }
            eprintln!(
                "SKIPPED hf_cli numpy checks: set FP8_PYTHON to a Python with `numpy` and \
                 `safetensors` installed to run them"
            );
            None
        }
    }
}

/// Run the models crate's reference script (checkpoint maker and numpy forward pass).
fn reference_py(python: &str, args: &[&str]) {
    let script = repo().join("crates/models/tests/hf_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "hf_reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(tokens, [b, t], logits in f64)` from `dir/reference.safetensors`.
fn read_reference(dir: &Path) -> (Vec<i64>, [usize; 2], Vec<f64>) {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tokens = file.tensor("tokens").unwrap();
    assert_eq!(tokens.dtype(), Dtype::I64);
    let shape = [tokens.shape()[0], tokens.shape()[1]];
    let ids = tokens
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let logits = file.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F64);
    let values = logits
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (ids, shape, values)
}

/// An int32 (`wide` false) or int64 `.npy` file of token ids of `shape`, written per the
/// NumPy format spec (version 1.0, header padded to 64 bytes).
fn write_tokens(path: &Path, ids: &[i64], shape: &[usize], wide: bool) {
    let descr = if wide { "<i8" } else { "<i4" };
    let dims: Vec<String> = shape.iter().map(|d| format!("{d},")).collect();
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(" ")
    );
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for &id in ids {
        if wide {
            b.extend_from_slice(&id.to_le_bytes());
        } else {
            b.extend_from_slice(&(id as i32).to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

fn fp8(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fp8"))
        .args(args)
        .output()
        .expect("fp8 runs")
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `fp8 logits` of `model` for `tokens`, as `(shape, values)`.
fn logits(model: &str, tokens: &Path, out: &Path, extra: &[&str]) -> (Vec<usize>, Vec<f32>) {
    let mut args = vec![
        "logits",
        "--model",
        model,
        "--tokens",
        tokens.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(fp8(&args), &format!("fp8 logits --model {model}"));
    let a = fp8_io::npy::read(out).unwrap();
    (a.shape, a.data)
}

fn worst(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The content hash the run identity documents, computed here independently: SHA-256 over
/// `config.json` then the weight file, each as name, NUL, u64 LE length, bytes.
fn content_hash(dir: &Path) -> String {
    let mut h = Sha256::new();
    for name in ["config.json", "model.safetensors"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `fp8 train --model hf:DIR` for a few steps on synthetic data within the tiny vocabularies.
fn fine_tune(model: &str, run_dir: &Path, lr: &str, seq: usize) -> Output {
    fp8(&[
        "train",
        "--model",
        model,
        "--recipe",
        &recipe("bit_reduction_e8m4.ron"),
        "--data",
        "synthetic:vocab=24,order=1,tokens=4000",
        "--steps",
        "3",
        "--batch",
        "2",
        "--seq",
        &seq.to_string(),
        "--lr",
        lr,
        "--min-lr",
        "0",
        "--warmup",
        "1",
        "--eval-every",
        "0",
        "--run-dir",
        run_dir.to_str().unwrap(),
    ])
}

#[test]
fn logits_fine_tuning_and_export_agree_with_the_numpy_reference() {
    let Some(py) = python() else { return };
    for (variant, wide) in [("gpt2", true), ("llama-gqa", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let src_s = src.to_str().unwrap();
        reference_py(&py, &["make", src_s, variant]);
        reference_py(&py, &["logits", src_s]);
        let (ids, shape, want) = read_reference(&src);
        let tokens = tmp.path().join("tokens.npy");
        write_tokens(&tokens, &ids, &shape, wide);
        let hf_src = format!("hf:{src_s}");

        // The checkpoint's logits, f32 forward, against numpy's f64 transcription.
        let (dims, got) = logits(&hf_src, &tokens, &tmp.path().join("l.npy"), &[]);
        let vocab = want.len() / (shape[0] * shape[1]);
        assert_eq!(dims, [shape[0], shape[1], vocab], "{variant}");
        let err = worst(&got, &want);
        assert!(
            err < 1e-4,
            "{variant}: fp8 logits differ from numpy by {err}"
        );

        // Under a recipe: the fp32 recipe casts nothing (bit-identical); E8M3 truncation moves
        // the logits, but by far less than their spread.
        let (_, same) = logits(
            &hf_src,
            &tokens,
            &tmp.path().join("fp32.npy"),
            &["--recipe", &recipe("fp32.ron")],
        );
        assert_eq!(same, got, "{variant}: the fp32 recipe changed the logits");
        let (_, cast) = logits(
            &hf_src,
            &tokens,
            &tmp.path().join("e8m3.npy"),
            &["--recipe", &recipe("bit_reduction_e8m3.ron")],
        );
        let moved = worst(&cast, &want);
        let spread = want.iter().fold(0f64, |m, w| m.max(w.abs()));
        assert!(
            moved > 1e-3 && moved < 0.5 * spread,
            "{variant}: e8m3 moved logits by {moved} (spread {spread})"
        );

        // Fine-tune at a learning rate too small to move the weights measurably: the run's
        // checkpoint must then still be the HF model, which a random init could not be.
        let run = tmp.path().join("run");
        ok(fine_tune(&hf_src, &run, "1e-12", shape[1]), "fine-tune");
        let summary = json(&run.join("summary.json"));
        assert_eq!(summary["steps"], 3, "{variant}: {summary}");
        let identity = json(&run.join("identity.json"));
        let model = identity["identity"]["options"]["model"].as_str().unwrap();
        assert_eq!(model, format!("hf:sha256:{}", content_hash(&src)));
        let text = std::fs::read_to_string(run.join("identity.json")).unwrap();
        assert!(!text.contains(src_s), "the identity holds the path: {text}");
        let run_s = run.to_str().unwrap();
        let (_, tuned) = logits(run_s, &tokens, &tmp.path().join("run.npy"), &[]);
        let err = worst(&tuned, &want);
        assert!(
            err < 1e-4,
            "{variant}: fine-tuned run's logits moved by {err}"
        );

        // Export the run; numpy reads the export as HF would, and fp8 loads it back exactly.
        let exp = tmp.path().join("exported");
        ok(
            fp8(&[
                "export",
                "--checkpoint",
                run_s,
                "--hf",
                exp.to_str().unwrap(),
            ]),
            "fp8 export",
        );
        reference_py(&py, &["logits", exp.to_str().unwrap()]);
        let (ids2, _, want2) = read_reference(&exp);
        assert_eq!(ids2, ids);
        let hf_exp = format!("hf:{}", exp.display());
        let (_, again) = logits(&hf_exp, &tokens, &tmp.path().join("exp.npy"), &[]);
        assert_eq!(again, tuned, "{variant}: export → load is not exact");
        let err = worst(&again, &want2);
        assert!(
            err < 1e-4,
            "{variant}: numpy on the export differs by {err}"
        );

        // The same content elsewhere is the same run (same id); changed content is another.
        let copy = tmp.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(src.join(f), copy.join(f)).unwrap();
        }
        let run2 = tmp.path().join("run2");
        ok(
            fine_tune(&format!("hf:{}", copy.display()), &run2, "1e-12", shape[1]),
            "fine-tune from a copy",
        );
        assert_eq!(json(&run2.join("identity.json"))["id"], identity["id"]);
    }
}

#[test]
fn fine_tuning_learns_from_the_checkpoint() {
    // Without Python: a checkpoint exported by fp8-models itself, then trained at a real rate.
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    let cfg = ModelConfig {
        seed: 3,
        ..ModelConfig::llama(1, 2, 1, 16, 24, 8, 24)
    };
    cfg.init::<burn::backend::NdArray>(&Default::default())
        .export_hf(&ckpt)
        .unwrap();
    let run = tmp.path().join("run");
    ok(
        fine_tune(&format!("hf:{}", ckpt.display()), &run, "1e-2", 8),
        "fine-tune",
    );
    let s = json(&run.join("summary.json"));
    assert_eq!(s["outcome"], "converged", "{s}");
    // The run's model is the checkpoint's architecture: model.ron says Llama with GQA.
    let saved = ModelConfig::from_preset_or_file(run.join("model.ron").to_str().unwrap()).unwrap();
    assert_eq!((saved.n_head, saved.n_kv_head, saved.d_ff), (2, 1, 24));
    // A changed weight file is another run: the id differs.
    let id = json(&run.join("identity.json"))["id"].clone();
    let other = ModelConfig { seed: 4, ..cfg };
    let ckpt2 = tmp.path().join("ckpt2");
    other
        .init::<burn::backend::NdArray>(&Default::default())
        .export_hf(&ckpt2)
        .unwrap();
    let run2 = tmp.path().join("run2");
    ok(
        fine_tune(&format!("hf:{}", ckpt2.display()), &run2, "1e-2", 8),
        "fine-tune 2",
    );
    assert_ne!(json(&run2.join("identity.json"))["id"], id);
    // The initial loss is the checkpoint's: two different weight files start differently.
    assert_ne!(
        json(&run2.join("summary.json"))["initial_loss"],
        s["initial_loss"]
    );
}

/// A tiny GPT-2 exported by fp8-models, and its config.json edited by `edit`.
fn broken_checkpoint(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    ModelConfig {
        tie_embeddings: false,
        ..ModelConfig::gpt2(2, 2, 8, 8, 24)
    }
    .init::<burn::backend::NdArray>(&Default::default())
    .export_hf(dir)
    .unwrap();
    let path = dir.join("config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(json.as_object_mut().unwrap());
    std::fs::write(&path, json.to_string()).unwrap();
}

fn fails_with(o: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

#[test]
fn bad_checkpoints_tokens_and_targets_exit_2_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("t.npy");
    write_tokens(&tokens, &[1, 2, 3, 4], &[2, 2], true);
    let t = tokens.to_str().unwrap();
    let out = tmp.path().join("o.npy");
    let o = out.to_str().unwrap();

    // A config that needs a third layer: the missing tensor is named, and nothing is created.
    let deeper = tmp.path().join("deeper");
    broken_checkpoint(&deeper, |c| {
        c.insert("n_layer".into(), 3.into());
    });
    let spec = format!("hf:{}", deeper.display());
    let run = tmp.path().join("run");
    fails_with(
        fine_tune(&spec, &run, "1e-2", 8),
        &["missing tensor `", "h.2.ln_1"],
    );
    assert!(
        !run.exists(),
        "a failed load must not create the run directory"
    );
    fails_with(
        fp8(&["logits", "--model", &spec, "--tokens", t, o]),
        &["missing tensor `", "h.2.ln_1"],
    );
    // One layer fewer: the extra tensors are named.
    let shallower = tmp.path().join("shallower");
    broken_checkpoint(&shallower, |c| {
        c.insert("n_layer".into(), 1.into());
    });
    fails_with(
        fp8(&[
            "logits",
            "--model",
            &format!("hf:{}", shallower.display()),
            "--tokens",
            t,
            o,
        ]),
        &["unexpected tensor(s) for this config", "h.1.attn.c_attn"],
    );
    // Another width: the first mis-shaped tensor is named with both shapes.
    let wider = tmp.path().join("wider");
    broken_checkpoint(&wider, |c| {
        c.insert("n_embd".into(), 12.into());
        c.insert("n_head".into(), 3.into());
    });
    fails_with(
        fp8(&[
            "bench",
            "train",
            "--model",
            &format!("hf:{}", wider.display()),
            "--recipe",
            &recipe("fp32.ron"),
            "--steps",
            "1",
        ]),
        &["has shape [", "8], the config needs [", "12]"],
    );
    fails_with(
        fp8(&["model", "info", "--model", "hf:/nonexistent/ckpt"]),
        &["/nonexistent/ckpt/config.json"],
    );

    // Tokens: out of the vocabulary, not integers, not [B, T].
    let good = tmp.path().join("good");
    broken_checkpoint(&good, |_| {});
    let g = format!("hf:{}", good.display());
    write_tokens(&tokens, &[1, 24, 3, 4], &[2, 2], false);
    fails_with(
        fp8(&["logits", "--model", &g, "--tokens", t, o]),
        &["id 24 at [0, 1] is outside the vocabulary 0..24"],
    );
    write_tokens(&tokens, &[0; 18], &[2, 9], false);
    fails_with(
        fp8(&["logits", "--model", &g, "--tokens", t, o]),
        &["9 tokens per sequence exceed the model's context of 8"],
    );
    fp8_io::npy::write(
        &tokens,
        &fp8_io::npy::Array {
            shape: vec![2, 2],
            data: vec![0.0; 4],
        },
    )
    .unwrap();
    fails_with(
        fp8(&["logits", "--model", &g, "--tokens", t, o]),
        &["expected little-endian int32"],
    );
    write_tokens(&tokens, &[0; 4], &[4], true);
    fails_with(
        fp8(&["logits", "--model", &g, "--tokens", t, o]),
        &["shape [4]; expected two dimensions [batch, tokens]"],
    );
    write_tokens(&tokens, &[0; 4], &[1, 4], true);
    let run_dir_spec = tmp.path().join("nothing-here");
    fails_with(
        fp8(&[
            "logits",
            "--model",
            run_dir_spec.to_str().unwrap(),
            "--tokens",
            t,
            o,
        ]),
        &["expected hf:DIR"],
    );

    // Export: into a non-empty directory, from something that is no run.
    fails_with(
        fp8(&[
            "export",
            "--checkpoint",
            good.to_str().unwrap(),
            "--hf",
            good.to_str().unwrap(),
        ]),
        &["is not empty"],
    );
    fails_with(
        fp8(&[
            "export",
            "--checkpoint",
            good.to_str().unwrap(),
            "--hf",
            tmp.path().join("new").to_str().unwrap(),
        ]),
        &["is neither a run directory"],
    );
}

#[test]
fn an_exported_tiny_model_logits_equal_the_library_forward() {
    // fp8 logits is the model's forward pass: the same numbers as calling fp8-models directly.
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("c");
    let cfg = ModelConfig::gpt2(1, 2, 8, 6, 11);
    let model = cfg.init::<burn::backend::NdArray>(&Default::default());
    model.export_hf(&ckpt).unwrap();
    let ids: Vec<i64> = vec![0, 10, 3, 3, 7, 1, 2, 9, 4, 5, 6, 8];
    let tokens = tmp.path().join("t.npy");
    write_tokens(&tokens, &ids, &[2, 6], true);
    let (dims, got) = logits(
        &format!("hf:{}", ckpt.display()),
        &tokens,
        &tmp.path().join("o.npy"),
        &[],
    );
    assert_eq!(dims, [2, 6, 11]);
    let want: Vec<f32> = model
        .forward(burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(ids, [2, 6]),
            &Default::default(),
        ))
        .into_data()
        .to_vec()
        .unwrap();
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Another backend (Flex against NdArray): equal up to f32 summation order.
    assert!(err < 1e-5, "{err}");
}
