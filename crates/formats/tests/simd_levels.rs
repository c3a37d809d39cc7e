//! Every compiled copy of the loops (`fp8_formats::cpu::SimdLevel`) computes the same bits.
//!
//! The level is detected once per process, so this test runs its own binary again with
//! `FP8_SIMD_LEVEL` capped at 0 (baseline) and 1 (AVX2) and compares a digest of many casts —
//! values and statistics, every rounding, every scaling scheme, element indices across a 2^32
//! boundary — with the digest of the uncapped run. On a CPU without AVX2 the levels coincide
//! and the test still checks that the child runs agree.

use fp8_formats::cpu::simd_level;
use fp8_formats::*;
use std::process::Command;

const CHILD: &str = "FP8_SIMD_LEVELS_CHILD";

fn fold(acc: &mut u64, bits: impl IntoIterator<Item = u64>) {
    for b in bits {
        *acc = (*acc ^ b).wrapping_mul(0x0000_0100_0000_01b3); // FNV-1a step
    }
}

fn fold_f32(acc: &mut u64, v: &[f32]) {
    fold(acc, v.iter().map(|x| u64::from(x.to_bits())));
}

fn fold_stats(acc: &mut u64, s: &Stats) {
    fold(
        acc,
        [
            u64::from(s.amax.to_bits()),
            u64::from(s.scale.to_bits()),
            s.underflow.to_bits(),
            s.saturation.to_bits(),
            s.snr_db.to_bits(),
            s.count,
        ],
    );
}

/// Values of every kind: normals over a wide range, subnormals, ±0, ±inf, NaN.
fn data(n: usize) -> Vec<f32> {
    let mut rng = fp8_formats::rng::SplitMix64::new(0x5eed);
    (0..n)
        .map(|i| {
            let r = rng.next_u64();
            match i % 101 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -0.0,
                3 => f32::from_bits((r as u32) & 0x007f_ffff),
                _ => {
                    let m = (r >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    m * 2f32.powi(((r >> 8) % 60) as i32 - 30)
                }
            }
        })
        .collect()
}

fn digest() -> u64 {
    let formats = [
        Format::FLOAT8_E4M3FN,
        Format::FLOAT8_E5M2,
        Format::FLOAT8_E4M3FNUZ,
        Format::FLOAT4_E2M1FN,
        Format::FLOAT8_E8M0FNU,
        Format::BFLOAT16,
    ];
    let roundings = [
        Rounding::NearestEven,
        Rounding::TowardZero,
        Rounding::NearestAway,
        Rounding::Stochastic,
    ];
    let scalings = [
        Scaling::None,
        Scaling::Tensor(TensorScale::Current { pow2: false }),
        Scaling::Tensor(TensorScale::Given(3.5)),
        Scaling::Row { pow2: true },
        Scaling::Col { pow2: false },
        Scaling::Block {
            rows: 2,
            cols: 128,
            pow2: false,
        },
        Scaling::MX,
        Scaling::Mx {
            block: 32,
            rule: MxRule::Even,
            axis: BlockAxis::Rows,
        },
        Scaling::Nvfp4 {
            axis: BlockAxis::Cols,
        },
    ];
    let shape = [150, 256];
    let base = data(150 * 256);
    let big = data(1 << 17);
    let mut acc = 0xcbf2_9ce4_8422_2325;
    for f in formats {
        for r in roundings {
            let cast = CastSpec::new(f).with_rounding(r).with_seed(99);
            let mut v = big.clone();
            cast_slice(&mut v, &cast, (1u64 << 32) - 1000);
            fold_f32(&mut acc, &v);
            for scaling in scalings {
                let spec = QuantSpec { cast, scaling };
                let mut v = base.clone();
                let st = quantize(&mut v, &shape, &spec);
                fold_f32(&mut acc, &v);
                fold_stats(&mut acc, &st);
                let mut d = vec![0.0; base.len()];
                let st = quantize_from(Source::Slice(&base), &mut d, &shape, &spec, Measure::Amax);
                fold_f32(&mut acc, &d);
                fold_stats(&mut acc, &st);
            }
        }
    }
    acc
}

/// Prints the digest when run as the child of the test below; does nothing otherwise.
#[test]
fn digest_child() {
    if std::env::var_os(CHILD).is_some() {
        println!("DIGEST {:016x} {}", digest(), simd_level().name());
    }
}

#[test]
fn every_simd_level_gives_the_same_bits() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let here = digest();
    for cap in ["0", "1"] {
        let out = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "digest_child", "--nocapture", "--test-threads=1"])
            .env("FP8_SIMD_LEVEL", cap)
            .env(CHILD, "1")
            .output()
            .expect("run the test binary again");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("DIGEST ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no digest in the child's output: {stdout}"));
        let (hex, level) = line.split_once(' ').expect("digest and level");
        assert_eq!(
            u64::from_str_radix(hex, 16).expect("hex digest"),
            here,
            "FP8_SIMD_LEVEL={cap} ({level}) differs from {}",
            simd_level().name()
        );
    }
}
