//! A float32 numpy array as fp8-formats reads it: a plain slice when C-contiguous, a
//! [`StridedView`] otherwise (slices, transposes, broadcasts), so no copy is made first.
//!
//! The view needs non-negative strides that are whole elements. A reversed slice (`x[::-1]`)
//! or an unaligned array (a field of a packed record array) has neither, so it is first made
//! contiguous by numpy itself; those are rare, and the cost is one copy.

use fp8_formats::{Source, StridedView};
use numpy::{
    PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

const ELEM: isize = std::mem::size_of::<f32>() as isize;

/// A borrowed float32 array with its layout in elements.
pub struct F32Input<'py> {
    array: PyReadonlyArrayDyn<'py, f32>,
    shape: Vec<usize>,
    /// Element strides, present when the array is not C-contiguous.
    strides: Option<Vec<usize>>,
    len: usize,
}

impl<'py> F32Input<'py> {
    /// Accept a float32 ndarray (any layout); anything else is a `TypeError` naming `func`.
    pub fn new(x: &Bound<'py, PyAny>, func: &str) -> PyResult<Self> {
        let Ok(arr) = x.cast::<PyArrayDyn<f32>>() else {
            return Err(PyTypeError::new_err(format!(
                "fp8.{func}: x must be a numpy float32 array, got {}; convert with \
                 np.asarray(x, dtype=np.float32)",
                describe(x)
            )));
        };
        let mut arr = arr.clone();
        if !arr.is_aligned() || arr.strides().iter().any(|&s| s < 0 || s % ELEM != 0) {
            let numpy = PyModule::import(x.py(), "numpy")?;
            arr = numpy
                .call_method1("ascontiguousarray", (arr,))?
                .cast_into::<PyArrayDyn<f32>>()?;
        }
        let array = arr.try_readonly()?;
        let shape = array.shape().to_vec();
        let len = shape.iter().product();
        let strides = (!array.is_c_contiguous()).then(|| {
            array
                .strides()
                .iter()
                .zip(&shape)
                // A length-1 axis is never stepped along; numpy may give it any stride.
                .map(|(&s, &n)| if n == 1 { 0 } else { (s / ELEM) as usize })
                .collect()
        });
        Ok(F32Input {
            array,
            shape,
            strides,
            len,
        })
    }

    /// The array's shape (empty for a 0-d array).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The shape handed to the kernels, whose 2-D view needs at least one dimension.
    pub fn kernel_shape(&self) -> Vec<usize> {
        if self.shape.is_empty() {
            vec![1]
        } else {
            self.shape.clone()
        }
    }

    /// The elements for [`fp8_formats::quantize_into`].
    pub fn source(&self) -> Source<'_> {
        let ptr = self.array.data().cast_const();
        match &self.strides {
            _ if self.len == 0 => Source::Slice(&[]),
            None => {
                // SAFETY: a C-contiguous aligned array of `len` f32 starts at `ptr`; the read
                // borrow keeps it alive and stops Rust code from writing it meanwhile.
                Source::Slice(unsafe { std::slice::from_raw_parts(ptr, self.len) })
            }
            Some(strides) => {
                // The last element is the farthest one from the first (strides are >= 0).
                let reach = 1 + self
                    .shape
                    .iter()
                    .zip(strides)
                    .map(|(&n, &s)| (n - 1) * s)
                    .sum::<usize>();
                Source::Strided(StridedView {
                    // SAFETY: as above; every element of the view lies in `ptr[..reach]`.
                    data: unsafe { std::slice::from_raw_parts(ptr, reach) },
                    offset: 0,
                    shape: &self.shape,
                    strides,
                })
            }
        }
    }
}

/// "an array of dtype float64" / "an object of type list", for error messages.
fn describe(x: &Bound<'_, PyAny>) -> String {
    if let Ok(a) = x.cast::<PyUntypedArray>() {
        let dtype = a
            .dtype()
            .str()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "?".into());
        return format!("an array of dtype {dtype}");
    }
    let ty = x
        .get_type()
        .name()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into());
    format!("an object of type {ty}")
}
