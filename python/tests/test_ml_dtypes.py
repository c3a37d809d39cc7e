"""fp8.quantize with the default options equals ml_dtypes' x.astype(fmt).astype(float32), bit
for bit, for every named format that ml_dtypes (or numpy) has: exhaustively over every code of
the format, at and around every midpoint between neighbours (where rounding ties live), and on
random float32 bit patterns (NaN, inf, subnormals and all)."""

import numpy as np
import pytest
from conftest import ML_NAMES, NAMES, assert_bits_equal, ml_dtype, round_trip

import fp8


def test_every_named_format_but_none_is_checked():
    # fp8 names no format that ml_dtypes lacks; were one added, it would need its own reference.
    assert ML_NAMES == NAMES
    assert "float8_e4m3fn" in NAMES and "bfloat16" in NAMES


def all_codes(name):
    """Every code of the format decoded to float32 by ml_dtypes (NaN codes included)."""
    dt = np.dtype(ml_dtype(name))
    if dt.itemsize == 4:
        return None
    bits = fp8_bits(name)
    codes = np.arange(2**bits, dtype=np.uint16 if dt.itemsize == 2 else np.uint8)
    return codes.view(dt).astype(np.float32)


def fp8_bits(name):
    return next(f["bits"] for f in fp8.formats() if f["name"] == name)


def near_midpoints(values):
    """Midpoints between consecutive finite values, one float32 step either side of each, and
    the same past the largest value (the overflow threshold). float32 holds every midpoint of a
    format of at most 16 bits exactly."""
    v = np.unique(values[np.isfinite(values)].astype(np.float64))
    top = v[-1] + (v[-1] - v[-2]) / 2
    exact = np.concatenate([(v[:-1] + v[1:]) / 2, [top, -top]])
    exact = np.concatenate([exact, -exact])
    mids = exact.astype(np.float32)
    assert np.all(mids.astype(np.float64) == exact), "a midpoint is not a float32"
    up = np.nextafter(mids, np.float32(np.inf))
    down = np.nextafter(mids, np.float32(-np.inf))
    return np.concatenate([mids, up, down, values])


@pytest.mark.parametrize("name", ML_NAMES)
def test_exhaustive_codes_and_midpoints(name):
    codes = all_codes(name)
    if codes is None:
        pytest.skip("float32 has 2^32 codes; covered by the random test")
    assert_bits_equal(fp8.quantize(codes, name), round_trip(codes, name), f"{name} codes")
    x = near_midpoints(codes)
    assert_bits_equal(fp8.quantize(x, name), round_trip(x, name), f"{name} near midpoints")


SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38,
     3.4028235e38, -3.4028235e38, 1.0, -1.0, 448.0, 464.0, 465.0, 57344.0, 61440.0, 6.0, 7.0,
     7.5, 28.0, 32.0, 2.0**-10, 2.0**-17, 2.0**-24, 2.0**-133, 2.0**-149],
    dtype=np.float32,
)


@pytest.mark.parametrize("name", ML_NAMES)
def test_random_bit_patterns_and_specials(name):
    rng = np.random.default_rng(fp8_bits(name))
    raw = rng.integers(0, 2**32, size=1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32)
    # Values in and around the format's range, where the interesting roundings are.
    info = next(f for f in fp8.formats() if f["name"] == name)
    lo, hi = np.log2(info["min_subnormal"]) - 2, np.log2(info["max"]) + 2
    with np.errstate(over="ignore"):  # float32's own range + 2 binades overflows to inf
        scaled = rng.choice([-1, 1], 1 << 18) * 2.0 ** rng.uniform(lo, hi, 1 << 18)
        scaled = scaled.astype(np.float32)
    x = np.concatenate([raw, scaled, SPECIALS])
    assert_bits_equal(fp8.quantize(x, name), round_trip(x, name), f"{name} random")


def test_default_rounding_is_nearest_even_by_every_spelling():
    x = np.array([464.0, 465.0, 0.0009765625, 1.0625, 1.1875, -1.0625], dtype=np.float32)
    want = round_trip(x, "float8_e4m3fn")
    for r in ["nearest", "nearest-even", "RNE", "nearest_even"]:
        assert_bits_equal(fp8.quantize(x, "float8_e4m3fn", rounding=r), want, r)
    # Hand-checked ties: 464 lies halfway between 448 (mantissa 110) and the NaN code 480
    # (111), so it rounds to even 448, and 465 past it overflows to NaN (no inf in `fn`);
    # 2^-10 is halfway between 0 and 2^-9 (even: 0); 1.0625 between 1 and 1.125 (even: 1);
    # 1.1875 between 1.125 and 1.25 (even: 1.25).
    assert want[0] == 448.0 and np.isnan(want[1])
    assert want[2:].tolist() == [0.0, 1.0, 1.25, -1.0]


def test_e8m0_float32_subnormals():
    # 1.25 * 2^-127 is nearer 2^-127 (distance 0.25 * 2^-127) than 2^-126 (0.75 * 2^-127).
    # 1.5 * 2^-127 is the tie, which rounds up (as for every e8m0 value); above it, up too.
    x = np.array([1.25 * 2.0**-127, 1.4999 * 2.0**-127, 1.0001 * 2.0**-127, 1.5 * 2.0**-127,
                  1.75 * 2.0**-127], dtype=np.float32)
    want = np.array([2.0**-127] * 3 + [2.0**-126] * 2, dtype=np.float32)
    assert_bits_equal(round_trip(x, "float8_e8m0fnu"), want, "ml_dtypes")
    assert_bits_equal(fp8.quantize(x, "float8_e8m0fnu"), want, "fp8")
