//! Which vector instruction set the hot loops of this CPU run with: detected once, for every
//! crate of the workspace.
//!
//! The hot loops (the casts here, fp8-kernels' softmax/norm/cross-entropy rows) are plain
//! `#[inline(always)]` Rust over `f32`/`u32` lanes that LLVM vectorizes. [`dispatch`] compiles
//! the closure it is given once per [`SimdLevel`] (inside a `#[target_feature]` wrapper, so the
//! inlined body is vectorized for that ISA) and runs the copy this CPU supports. Every copy
//! computes the same bits: Rust never contracts `a * b + c` into an FMA on its own, and the
//! loops fix their summation order by the data layout, not by the vector width. So the level
//! changes speed, never results.
//!
//! `FP8_SIMD_LEVEL=0` (baseline) or `=1` (AVX2) caps the level, to exercise the other copies
//! on a newer CPU; any other value (or none) leaves the detected level.

use std::sync::OnceLock;

/// A compiled copy of the hot loops, in increasing order of capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// The target's baseline (SSE2 on x86-64; the only level on other architectures).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW, VL and DQ, besides AVX2 and FMA.
    Avx512,
}

impl SimdLevel {
    /// A short name for logs and benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Baseline => "baseline",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
}

/// The level of this CPU, capped by `FP8_SIMD_LEVEL` (read once per process).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("FP8_SIMD_LEVEL").as_deref() {
            Ok("0") => SimdLevel::Baseline,
            Ok("1") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        detect().min(cap)
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    let avx512 = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512dq");
    match (avx2, avx512) {
        (true, true) => SimdLevel::Avx512,
        (true, false) => SimdLevel::Avx2,
        _ => SimdLevel::Baseline,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Baseline
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Run `f` compiled for the best [`SimdLevel`] of this CPU.
///
/// Pass an `#[inline(always)]` closure that calls only `#[inline(always)]` code: whatever LLVM
/// leaves out of line is compiled for the baseline ISA (a plain closure in fp8-kernels ran 2–4×
/// slower).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the CPU supports these features (checked by `simd_level`).
        SimdLevel::Avx512 => return unsafe { run_avx512(f) },
        // SAFETY: as above.
        SimdLevel::Avx2 => return unsafe { run_avx2(f) },
        SimdLevel::Baseline => {}
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_what_the_cpu_reports() {
        let l = simd_level();
        assert_eq!(l, simd_level(), "detected once");
        #[cfg(target_arch = "x86_64")]
        if std::env::var_os("FP8_SIMD_LEVEL").is_none() {
            assert_eq!(
                l >= SimdLevel::Avx2,
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            );
            assert_eq!(
                l == SimdLevel::Avx512,
                std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx2")
            );
        }
    }

    #[test]
    fn dispatch_runs_the_closure_once() {
        let mut calls = 0;
        let r = dispatch(|| {
            calls += 1;
            41 + 1
        });
        assert_eq!((r, calls), (42, 1));
    }
}
