//! `fp8 formats`, `fp8 cast` and `fp8 bench cast` through the built binary.

use std::path::Path;
use std::process::Command;

fn fp8() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fp8"))
}

/// A float32 .npy v1.0 file written by hand (not by the code under test).
fn write_npy(path: &Path, shape: &str, data: &[f32]) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for x in data {
        b.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

fn read_npy_data(path: &Path, n: usize) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    let body = &b[b.len() - 4 * n..];
    body.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn cast_round_trip_with_stats() {
    let dir = tempfile::tempdir().unwrap();
    let (i, o) = (dir.path().join("in.npy"), dir.path().join("out.npy"));
    // Expected e4m3fn values by hand: 0.3 → 0.3125, 1000 → NaN (overflow), −1e-4 → −0.
    write_npy(&i, "(2, 2)", &[0.3, 1000.0, -1e-4, 2.0]);
    let out = fp8()
        .args(["cast", "--format", "FLOAT8_E4M3FN", "--stats"])
        .arg(&i)
        .arg(&o)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_npy_data(&o, 4);
    assert_eq!(v[0], 0.3125);
    assert!(v[1].is_nan());
    assert_eq!(v[2].to_bits(), 0x8000_0000);
    assert_eq!(v[3], 2.0);
    let header = std::fs::read(&o).unwrap();
    assert!(String::from_utf8_lossy(&header[..80]).contains("'shape': (2, 2)"));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["count"], 4);
    assert_eq!(stats["amax"], 1000.0);
    assert_eq!(stats["saturation"], 0.25);
    // MX with the RCEIL rule, one ragged block of 4: amax 1000/57344 rounds up to 2^−5, so
    // 1000·32 = 32000 → 32768 (e5m2 spacing 4096 in [16384, 32768]) → 1024.
    let out = fp8()
        .args(["cast", "--format", "float8_e5m2", "--scaling", "mx:rceil"])
        .arg(&i)
        .arg(&o)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_npy_data(&o, 4)[1], 1024.0);
}

fn fails_with(args: &[&str], needle: &str) {
    let out = fp8().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks `{needle}`:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.npy");
    write_npy(&good, "(3,)", &[1.0, 2.0, 3.0]);
    let out = dir.path().join("out.npy");
    let (g, o) = (good.to_str().unwrap(), out.to_str().unwrap());
    fails_with(&["cast", "--format", "float9_e9m9", g, o], "float8_e4m3fn");
    fails_with(
        &["cast", "--format", "e4m3", "--rounding", "up", g, o],
        "stochastic",
    );
    fails_with(
        &["cast", "--format", "e4m3", "--scaling", "block:0x3", g, o],
        "block",
    );
    fails_with(
        &["cast", "--format", "e4m3", "/nonexistent/x.npy", o],
        "cannot read",
    );
    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"not an npy file").unwrap();
    fails_with(
        &["cast", "--format", "e4m3", junk.to_str().unwrap(), o],
        "magic",
    );
    let f64file = dir.path().join("f64.npy");
    let mut h = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }".to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(&1.0f64.to_le_bytes());
    std::fs::write(&f64file, b).unwrap();
    fails_with(
        &["cast", "--format", "e4m3", f64file.to_str().unwrap(), o],
        "float32",
    );
    let short = dir.path().join("short.npy");
    write_npy(&short, "(5,)", &[1.0, 2.0]);
    fails_with(
        &["cast", "--format", "e4m3", short.to_str().unwrap(), o],
        "needs 20 data bytes",
    );
}

#[test]
fn formats_and_bench_print_json() {
    let out = fp8().args(["formats", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e4m3 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "float8_e4m3fn")
        .unwrap();
    assert_eq!(e4m3["max"], 448.0);
    assert_eq!(e4m3["bias"], 7);
    let out = fp8()
        .args(["bench", "cast", "--elements", "4096", "--seconds", "0.01"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        b["quantize_melem_s"].as_f64().unwrap() > 0.0 && b["copy_melem_s"].as_f64().unwrap() > 0.0
    );
}
