//! The allocator settings a training process wants.

/// glibc's malloc, set up for a training loop, which frees and allocates the same few-megabyte
/// tensors (activations, gradients, GEMM outputs) every step.
///
/// By default glibc serves blocks over 128 KiB (a threshold that then adapts, up to 32 MiB) with
/// fresh `mmap`s and gives freed memory back to the kernel (`munmap`, or `madvise` when it trims
/// a heap), so every step page-faults its tensors in again (zero-filled by the kernel, then
/// often zero-filled or copied once more by the backend). Keeping freed memory in the heap
/// (no trimming, no `mmap` below 32 MiB, the largest threshold glibc accepts) makes steady-state
/// allocation a free-list pop: `fp8 bench train` on gpt2-mini was ~1.4× faster on 2 cores.
/// The price is a resident set that stays at its peak, which a training process reaches anyway.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune_malloc() {
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, std::ffi::c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune_malloc() {}
