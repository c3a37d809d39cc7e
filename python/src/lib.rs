//! The Python module `fp8`: fp8-formats' quantizers on numpy float32 arrays.
//!
//! `fp8.quantize(x, format, ...)` returns `dequantize(quantize(x))` as a new float32 array of
//! `x`'s shape, bit for bit what `fp8 cast` writes for the same options. The input is read in
//! place (contiguous or strided, no copy) and the output written once, by fp8-formats'
//! vectorized, multi-threaded kernels with the GIL released, into memory recycled from earlier
//! results where it can be ([`results`]).

mod input;
mod options;
mod results;

use fp8_formats::{quantize_into, Format, Measure, Stats};
use input::F32Input;
use numpy::{PyArrayDyn, PyArrayMethods};
use options::Options;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::mem::MaybeUninit;

/// Quantize a float32 array through `format` and back: a new float32 array of x's shape.
///
/// format: a name from fp8.formats() (float8_e4m3fn, bfloat16, ...) or eXmY[fn|fnuz|ns].
/// rounding: nearest (ties to even), zero, away (ties away), stochastic (a pure function of
///     seed and the element's C-order index).
/// scaling: none, tensor, row, col, block:RxC, mx, mx:rceil, mx:ceil, mx:even, nvfp4; add
///     ",pow2" to tensor/row/col/block for power-of-two scales and ",rows" to mx/nvfp4 for
///     blocks down the columns. Tensors are viewed as [rows, last dim].
/// block: the MX block size (mx scalings only).
/// saturate: True clamps overflow to +-max; None (default) does not for scaling="none", and
///     scaled casts always saturate.
/// subnormals: False flushes results below the smallest normal to zero.
///
/// With the defaults the result equals ml_dtypes' x.astype(fmt).astype(np.float32).
/// A large result (4 to 256 MiB) may reuse the memory of one of the last two large results
/// once nothing references it any more (see python/README.md).
/// Raises TypeError for anything but a float32 ndarray and ValueError for unknown options.
#[pyfunction]
#[pyo3(signature = (x, format, *, rounding="nearest", scaling="none", block=32, seed=0,
                    saturate=None, subnormals=true))]
#[allow(clippy::too_many_arguments)] // mirrors the Python signature
fn quantize<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    format: &str,
    rounding: &str,
    scaling: &str,
    block: usize,
    seed: u64,
    saturate: Option<bool>,
    subnormals: bool,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let spec = spec(format, rounding, scaling, block, seed, saturate, subnormals)?;
    let input = F32Input::new(x, "quantize")?;
    Ok(cast(py, &input, &spec, Measure::Nothing).0)
}

/// `dequantize(quantize(x))` into a new array, and the statistics `measure` asks for (an
/// empty input has none: scale 1, exact).
fn cast<'py>(
    py: Python<'py>,
    input: &F32Input<'py>,
    spec: &fp8_formats::QuantSpec,
    measure: Measure,
) -> (Bound<'py, PyArrayDyn<f32>>, Stats) {
    let out = results::uninit(py, input.shape());
    let n = input.len();
    if n == 0 {
        let exact = Stats {
            scale: 1.0,
            snr_db: f64::INFINITY,
            ..Stats::default()
        };
        return (out, exact);
    }
    // SAFETY: `out` is a C-contiguous array of `n` elements that nothing else references, and
    // `quantize_into` writes every one of them.
    let dst = unsafe { std::slice::from_raw_parts_mut(out.data().cast::<MaybeUninit<f32>>(), n) };
    let (src, shape) = (input.source(), input.kernel_shape());
    let stats = py.detach(|| quantize_into(src, dst, &shape, spec, measure));
    (out, stats)
}

/// The telemetry of fp8.quantize with the same arguments, as a dict: amax (largest finite |x|),
/// scale (the tensor scale; for row/col/block/MX the mean of the tile scales), underflow
/// (non-zero finite inputs that became zero) and saturation (finite inputs that saturated to
/// +-max or overflowed), both as fractions of all elements, snr_db (10 log10 of signal over
/// error energy over finite inputs; inf when exact) and count (elements). The same names as
/// `fp8 cast --stats`.
#[pyfunction]
#[pyo3(signature = (x, format, *, rounding="nearest", scaling="none", block=32, seed=0,
                    saturate=None, subnormals=true))]
#[allow(clippy::too_many_arguments)] // mirrors the Python signature
fn quantize_stats<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    format: &str,
    rounding: &str,
    scaling: &str,
    block: usize,
    seed: u64,
    saturate: Option<bool>,
    subnormals: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let spec = spec(format, rounding, scaling, block, seed, saturate, subnormals)?;
    let input = F32Input::new(x, "quantize_stats")?;
    let (_, stats) = cast(py, &input, &spec, Measure::Full);
    let d = PyDict::new(py);
    d.set_item("amax", f64::from(stats.amax))?;
    d.set_item("scale", f64::from(stats.scale))?;
    d.set_item("underflow", stats.underflow)?;
    d.set_item("saturation", stats.saturation)?;
    d.set_item("snr_db", stats.snr_db)?;
    d.set_item("count", stats.count)?;
    Ok(d)
}

/// The named formats as a list of dicts (the rows of `fp8 formats --json`): name, bits,
/// exp_bits, man_bits, bias, max, min_normal, min_subnormal, epsilon, inf, nan, neg_zero.
#[pyfunction]
fn formats(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for (name, f) in Format::named() {
        let d = PyDict::new(py);
        d.set_item("name", name)?;
        d.set_item("bits", f.bits())?;
        d.set_item("exp_bits", f.exp_bits)?;
        d.set_item("man_bits", f.man_bits)?;
        d.set_item("bias", f.bias())?;
        d.set_item("max", f64::from(f.max()))?;
        d.set_item("min_normal", f64::from(f.min_normal()))?;
        d.set_item("min_subnormal", f64::from(f.min_subnormal()))?;
        d.set_item("epsilon", f64::from(f.epsilon()))?;
        d.set_item("inf", f.family.has_inf())?;
        d.set_item("nan", f.family.has_nan())?;
        d.set_item("neg_zero", f.family.has_neg_zero())?;
        list.append(d)?;
    }
    Ok(list)
}

fn spec(
    format: &str,
    rounding: &str,
    scaling: &str,
    block: usize,
    seed: u64,
    saturate: Option<bool>,
    subnormals: bool,
) -> PyResult<fp8_formats::QuantSpec> {
    options::spec(&Options {
        format,
        rounding,
        scaling,
        block,
        seed,
        saturate,
        subnormals,
    })
    .map_err(PyValueError::new_err)
}

#[pymodule]
fn fp8(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_stats, m)?)?;
    m.add_function(wrap_pyfunction!(formats, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
