//! Result arrays, with the memory of large ones recycled.
//!
//! A fresh numpy array of many MiB is fresh memory from the kernel, which zeroes every page on
//! first touch; for a 64 MiB result that costs about as much as the cast itself (measured with
//! `perf`: `clear_page_rep` took 26 % of the cycles against 45 % in the cast kernel). The usual
//! way to call `fp8.quantize` is a loop (`for x in batches: y = fp8.quantize(x, ...)`), where
//! each result dies a call or two later, so the last [`KEEP`] large results are kept here: once
//! nobody else holds one (its reference count is ours alone), the next call of the same shape
//! writes into it instead of asking for new memory. Callers see an ordinary, writeable,
//! C-contiguous array that owns its data, exactly as `numpy.empty` makes it; only its memory
//! may be that of an earlier result nobody can reach any more.
//!
//! numpy's own allocator cannot do this: glibc hands allocations this large straight back to
//! the kernel on free, and numpy's small-block cache stops at 1 KiB.

use numpy::{PyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::sync::Mutex;

/// Results smaller than this are left to numpy (its allocation is cheap next to the call).
const MIN_BYTES: usize = 4 << 20;
/// Larger results are not kept, so that at most `KEEP * MAX_BYTES` stays allocated.
const MAX_BYTES: usize = 256 << 20;
/// How many results are kept: two, so that `y = fp8.quantize(x)` in a loop (the old `y` is
/// alive while the new one is made) alternates between two buffers.
const KEEP: usize = 2;

/// The kept results, most recently made last.
static KEPT: Mutex<Vec<Py<PyAny>>> = Mutex::new(Vec::new());

/// A float32 array of `shape` whose contents are undefined: the caller writes every element
/// before Python sees it.
pub fn uninit<'py>(py: Python<'py>, shape: &[usize]) -> Bound<'py, PyArrayDyn<f32>> {
    let bytes = shape.iter().product::<usize>() * std::mem::size_of::<f32>();
    if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
        // SAFETY: the caller writes every element before Python sees the array.
        return unsafe { PyArrayDyn::new(py, shape, false) };
    }
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = kept.iter().find_map(|a| reusable(py, a, shape)) {
        return a;
    }
    // SAFETY: as above.
    let fresh = unsafe { PyArrayDyn::<f32>::new(py, shape, false) };
    kept.push(fresh.clone().into_any().unbind());
    let evicted = (kept.len() > KEEP).then(|| kept.remove(0));
    drop(kept);
    drop(evicted); // after the lock: freeing it runs numpy's deallocator
    fresh
}

/// `a` as a new result of `shape`, when only [`KEPT`] references it and it is still what it
/// was made as (a user may have reshaped it in place or made it read-only while holding it).
fn reusable<'py>(
    py: Python<'py>,
    a: &Py<PyAny>,
    shape: &[usize],
) -> Option<Bound<'py, PyArrayDyn<f32>>> {
    // SAFETY: `a` is a valid object and we hold the GIL.
    if unsafe { pyo3::ffi::Py_REFCNT(a.as_ptr()) } != 1 {
        return None;
    }
    let a = a.bind(py).cast::<PyArrayDyn<f32>>().ok()?;
    let flags = a.getattr("flags").ok()?;
    let flag = |name| {
        flags
            .getattr(name)
            .and_then(|f| f.is_truthy())
            .unwrap_or(false)
    };
    (flag("owndata") && flag("writeable") && a.is_c_contiguous() && a.shape() == shape)
        .then(|| a.clone())
}
