"""Shared helpers: the ml_dtypes type of each named format, and bit-exact comparison."""

import ml_dtypes
import numpy as np
import pytest

import fp8

# fp8's names for the formats that have a numpy/ml_dtypes type. float16 and float32 are numpy's.
NUMPY_TYPES = {"float16": np.float16, "float32": np.float32}


def ml_dtype(name):
    """The numpy dtype of format `name`, or None when neither ml_dtypes nor numpy has it."""
    return NUMPY_TYPES.get(name) or getattr(ml_dtypes, name, None)


NAMES = [f["name"] for f in fp8.formats()]
ML_NAMES = [n for n in NAMES if ml_dtype(n) is not None]


def round_trip(x, name):
    """The reference: x.astype(fmt).astype(float32) by ml_dtypes.

    float16 and float32 are numpy's own types, which carry NaN payloads through; fp8 (like
    ml_dtypes for its formats) returns the quiet NaN of the input's sign, so for those two the
    reference NaNs are made quiet the same way.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        y = x.astype(ml_dtype(name)).astype(np.float32)
    if name in NUMPY_TYPES:
        nan = np.isnan(y)
        y[nan] = np.copysign(np.float32(np.nan), y[nan])
    return y


def assert_bits_equal(got, want, context=""):
    """Bit-for-bit equality of two float32 arrays (so NaN == NaN, and -0 != +0), naming the
    first few mismatching inputs when it fails."""
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert got.shape == want.shape
    g, w = got.view(np.uint32), want.view(np.uint32)
    bad = np.flatnonzero(g.ravel() != w.ravel())
    if bad.size:
        i = bad[:5]
        pytest.fail(
            f"{context}: {bad.size} of {g.size} differ; at {i.tolist()}: got "
            f"{got.ravel()[i].tolist()} want {want.ravel()[i].tolist()}"
        )
