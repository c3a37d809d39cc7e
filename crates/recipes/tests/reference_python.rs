//! The production recipes' casts against an independent numpy reference written from
//! TransformerEngine's and torchao's reference quantizers (tests/reference_quantizers.py), bit
//! for bit on random and adversarial tensors: zero blocks, subnormal-only blocks, NaNs, amaxes on
//! the power-of-two boundaries of RCEIL, ragged shapes.
//!
//! Needs a Python with numpy and ml_dtypes, named by `FP8_PYTHON`. Without it the test says so
//! and passes, unless `CI` is set.

use fp8_core::recipe::from_file;
use fp8_core::{Recipe, Role};
use fp8_formats::rng::SplitMix64;
use fp8_formats::{quantize, QuantSpec};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

use fp8_recipes as _;

fn python() -> Option<String> {
    match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but FP8_PYTHON is not: point it at a Python with numpy and ml_dtypes"
            );
            eprintln!(
                "SKIPPED reference_python: set FP8_PYTHON to a Python with numpy and ml_dtypes"
            );
            None
        }
    }
}

fn recipe(name: &str) -> Box<dyn Recipe> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes")
        .join(name);
    let mut r = from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let sites: Vec<String> = (0..16).map(|b| format!("h.{b}.mlp.fc")).collect();
    r.bind_sites(&sites).unwrap();
    r
}

/// Values whose `region`×`region` squares follow one of six patterns: wide-range random, zeros,
/// subnormal-only, random with a NaN (and, with `inf`, infinities), amaxes just around 448·2^k,
/// tiny normals.
fn adversarial(rows: usize, cols: usize, seed: u64, region: usize, inf: bool) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut u = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut v = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let sign = if u() < 0.5 { -1.0 } else { 1.0 };
            let x = match (r / region + c / region) % 6 {
                0 => sign * (u() * 2.0) * 2f64.powi((u() * 40.0) as i32 - 20),
                1 => 0.0,
                2 => sign * u() * 1e-39,
                3 if (r + c) % 7 == 0 => f64::NAN,
                3 if inf && (r + 2 * c) % 11 == 0 => sign * f64::INFINITY,
                3 => sign * u() * 3.0,
                4 => {
                    let k = (u() * 10.0) as i32 - 5;
                    let bump = ((u() * 3.0) as i32 - 1) as f64 * 2f64.powi(-23);
                    sign * 448.0 * 2f64.powi(k) * (1.0 + bump) * if u() < 0.3 { 1.0 } else { u() }
                }
                _ => sign * u() * 1e-30,
            };
            v.push(x as f32);
        }
    }
    v
}

#[test]
fn production_casts_match_the_numpy_reference_bit_for_bit() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // (case, recipe, role, shape, scheme for the reference); the 2-D cases use adversarial
    // regions the size of their tiles (so whole tiles are zero or subnormal-only) and infinities.
    let site = "h.4.mlp.fc";
    let cases: Vec<(&str, &str, Role, [usize; 2], Value)> = vec![
        (
            "nvfp4_w_2d",
            "nvfp4_nvidia.ron",
            Role::W,
            [88, 72],
            json!({"kind": "nvfp4", "tile": [16, 16]}),
        ),
        (
            "nvfp4_w_dgrad_2d_ragged",
            "nvfp4_nvidia.ron",
            Role::WDgrad,
            [41, 57],
            json!({"kind": "nvfp4", "tile": [16, 16]}),
        ),
        (
            "nvfp4_w_2d_thin",
            "nvfp4_nvidia.ron",
            Role::W,
            [7, 100],
            json!({"kind": "nvfp4", "tile": [16, 16]}),
        ),
        (
            "mxfp8_w_2d",
            "mxfp8_nvidia_2d.ron",
            Role::W,
            [192, 160],
            json!({"kind": "mxfp8", "tile": [32, 32]}),
        ),
        (
            "mxfp8_w_dgrad_2d_ragged",
            "mxfp8_nvidia_2d.ron",
            Role::WDgrad,
            [70, 101],
            json!({"kind": "mxfp8", "tile": [32, 32]}),
        ),
        (
            "torchao_rowwise_x",
            "torchao_rowwise.ron",
            Role::X,
            [64, 96],
            json!({"kind": "torchao", "pow2": true, "tile": [1, 96]}),
        ),
        (
            "torchao_rowwise_w",
            "torchao_rowwise.ron",
            Role::W,
            [48, 40],
            json!({"kind": "torchao", "pow2": true, "tile": [48, 1]}),
        ),
        (
            "torchao_rowwise_w_dgrad",
            "torchao_rowwise.ron",
            Role::WDgrad,
            [48, 40],
            json!({"kind": "torchao", "pow2": true, "tile": [1, 40]}),
        ),
        (
            "te_block_x",
            "te_float8_block_scaling.ron",
            Role::X,
            [40, 300],
            json!({"kind": "te", "pow2": true, "tile": [1, 128]}),
        ),
        (
            "te_block_w",
            "te_float8_block_scaling.ron",
            Role::W,
            [130, 200],
            json!({"kind": "te", "pow2": true, "tile": [128, 128]}),
        ),
        (
            "te_block_x_wgrad",
            "te_float8_block_scaling.ron",
            Role::XWgrad,
            [200, 24],
            json!({"kind": "te", "pow2": true, "tile": [128, 1]}),
        ),
        (
            "te_current_x",
            "te_float8_current_scaling.ron",
            Role::X,
            [32, 33],
            json!({"kind": "te", "pow2": false, "tile": [32, 33]}),
        ),
        (
            "mxfp8_x",
            "mxfp8_nvidia.ron",
            Role::X,
            [48, 100],
            json!({"kind": "mxfp8", "tile": [1, 32]}),
        ),
        (
            "mxfp8_dy",
            "mxfp8_nvidia.ron",
            Role::Dy,
            [48, 64],
            json!({"kind": "mxfp8", "tile": [1, 32]}),
        ),
        (
            "mxfp8_x_wgrad",
            "mxfp8_nvidia.ron",
            Role::XWgrad,
            [70, 40],
            json!({"kind": "mxfp8", "tile": [32, 1]}),
        ),
        (
            "nvfp4_x",
            "nvfp4_nvidia.ron",
            Role::X,
            [48, 70],
            json!({"kind": "nvfp4", "tile": [1, 16]}),
        ),
        (
            "nvfp4_w",
            "nvfp4.ron",
            Role::W,
            [40, 48],
            json!({"kind": "nvfp4", "tile": [16, 1]}),
        ),
    ];
    let mut manifest = Vec::new();
    for (i, (name, file, role, shape, scheme)) in cases.iter().enumerate() {
        let spec: QuantSpec = recipe(file)
            .spec(site, *role, 0)
            .unwrap_or_else(|| panic!("{name}: {file} quantizes {role}"));
        let two_d = name.contains("_2d");
        let region = if two_d {
            scheme["tile"][0].as_u64().unwrap() as usize
        } else {
            16
        };
        let x = adversarial(shape[0], shape[1], i as u64 + 1, region, two_d);
        let mut y = x.clone();
        quantize(&mut y, shape, &spec);
        let write = |tag: &str, v: &[f32]| -> String {
            let p = dir.path().join(format!("{name}.{tag}.f32"));
            let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            std::fs::write(&p, bytes).unwrap();
            p.display().to_string()
        };
        manifest.push(json!({
            "name": name, "shape": shape, "scheme": scheme,
            "input": write("in", &x), "output": write("out", &y),
        }));
    }
    let mpath = dir.path().join("manifest.json");
    std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference_quantizers.py");
    let out = Command::new(&py).arg(&script).arg(&mpath).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut failures = Vec::new();
    for (name, r) in report.as_object().unwrap() {
        let bad = r["mismatches"].as_u64().unwrap();
        if name.starts_with("torchao") {
            // torchao clamps the amax at 1e-12 (float8_utils.py:20 `EPS`); fp8's current
            // scaling follows TE (no epsilon). Only blocks with amax in (0, 1e-12) may differ.
            let ok = r["bad_block_amax"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a.as_f64().unwrap() > 0.0 && a.as_f64().unwrap() < 1e-12);
            if !ok {
                failures.push(format!("{name}: {r}"));
            }
        } else if bad != 0 {
            failures.push(format!("{name}: {r}"));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
