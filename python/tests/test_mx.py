"""scaling="mx" against a numpy implementation of the OCP Microscaling Formats (MX) v1.0 spec,
section 6.3 (conversion from scalar floats to an MX block):

    shared_exp = floor(log2(max_i |V_i|)) - emax_elem,  clamped to the E8M0 range [-127, 127]
    X          = 2^shared_exp
    P_i        = quantize_to_element_format(V_i / X), normals clamped to +-max (saturation)

and the dequantized value is P_i * X. Blocks are `block` consecutive elements along the last
axis (",rows": down the columns); a ragged tail forms a shorter block. An all-zero block
dequantizes to zeros whatever its exponent. Inputs are finite: the spec's NaN scale for a
block holding NaN is not what fp8 does (it ignores non-finite values in the amax).
"""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bits_equal

import fp8

# emax_elem from the spec's table 1 (largest normal exponent of each element type).
EMAX = {
    "float8_e4m3fn": 8,
    "float8_e5m2": 15,
    "float6_e3m2fn": 4,
    "float6_e2m3fn": 2,
    "float4_e2m1fn": 2,
}


def mx_reference(x, name, block):
    """OCP MX v1.0 quantize-dequantize of a 2-D float32 array, blocks along the last axis.
    Returns the result and the per-block scales 2^-shared_exp (what fp8 multiplies by)."""
    dt = getattr(ml_dtypes, name)
    fmax = float(ml_dtypes.finfo(dt).max)
    rows, cols = x.shape
    out = np.empty_like(x)
    scales = []
    for r in range(rows):
        for c0 in range(0, cols, block):
            v = x[r, c0 : c0 + block].astype(np.float64)
            amax = np.max(np.abs(v))
            if amax > 0:
                # frexp: amax = m * 2^e with m in [0.5, 1), so floor(log2(amax)) = e - 1, exactly.
                shared = np.frexp(amax)[1] - 1 - EMAX[name]
            else:
                shared = 0
            shared = int(np.clip(shared, -127, 127))
            scale = 2.0**shared
            p = np.clip(v / scale, -fmax, fmax).astype(dt).astype(np.float64)
            out[r, c0 : c0 + block] = (p * scale).astype(np.float32)
            scales.append(2.0**-shared)
    return out, np.array(scales)


def mx_data(rows, cols, seed):
    """Blocks of very different magnitudes (float32 subnormals up to near float32 max), an
    all-zero block, exact powers of two as block maxima and values near element midpoints."""
    rng = np.random.default_rng(seed)
    mag = 2.0 ** rng.uniform(-145, 120, size=(rows, 1))
    x = rng.standard_normal((rows, cols)) * mag
    x[0, :] = 0.0
    x[1, :] = rng.choice([-1, 1], cols) * 2.0 ** rng.integers(-3, 4, cols)
    if rows > 2:
        # Halfway between e4m3 neighbours once scaled: 1 + 1/16 (ties), with an amax of 256.
        x[2, :] = 1.0625 * 2.0 ** rng.integers(-8, 1, cols)
        x[2, ::7] = 256.0
    return x.astype(np.float32)


@pytest.mark.parametrize("name", sorted(EMAX))
@pytest.mark.parametrize("block", [32, 16])
def test_mx_matches_ocp_reference(name, block):
    x = mx_data(24, 3 * block + 5, seed=block)  # a ragged tail block of 5
    want, scales = mx_reference(x, name, block)
    assert_bits_equal(fp8.quantize(x, name, scaling="mx", block=block), want, f"{name} mx")
    stats = fp8.quantize_stats(x, name, scaling="mx", block=block)
    # The reported scale is the mean of the block scales 2^-shared_exp.
    assert stats["scale"] == pytest.approx(scales.mean(), rel=1e-6)
    assert stats["amax"] == np.max(np.abs(x))
    assert stats["count"] == x.size


def test_mx_floor_is_the_default_rule_and_saturates():
    x = mx_data(8, 64, seed=3)
    want, _ = mx_reference(x, "float8_e4m3fn", 32)
    assert_bits_equal(fp8.quantize(x, "float8_e4m3fn", scaling="mx:floor"), want, "mx:floor")
    # 480 = 1.875 * 2^8 with amax 480: shared_exp = 8 - 8 = 0, and 480 > 448 saturates to 448
    # (the floor rule is the one that can saturate; e4m3fn has no code for 480).
    x = np.array([[480.0] + [1.0] * 31], dtype=np.float32)
    assert fp8.quantize(x, "float8_e4m3fn", scaling="mx")[0, 0] == 448.0
    assert fp8.quantize_stats(x, "float8_e4m3fn", scaling="mx")["saturation"] == 1 / 32


def test_mx_rows_axis_and_leading_dims():
    x = mx_data(40, 9, seed=5)
    want, _ = mx_reference(np.ascontiguousarray(x.T), "float8_e5m2", 32)
    got = fp8.quantize(x, "float8_e5m2", scaling="mx,rows")
    assert_bits_equal(got, np.ascontiguousarray(want.T), "mx,rows")
    # Leading dimensions fold into rows: a [2, 3, 70] tensor is a [6, 70] matrix.
    y = mx_data(6, 70, seed=6)
    want, _ = mx_reference(y, "float6_e2m3fn", 32)
    got = fp8.quantize(y.reshape(2, 3, 70), "float6_e2m3fn", scaling="mx")
    assert_bits_equal(got, want.reshape(2, 3, 70), "mx 3-D")


def test_mx_exponent_clamps_at_e8m0_range():
    # amax 2^-140: floor(log2) - 8 = -148, clamped to -127, so X = 2^-127 and the elements are
    # v / 2^-127 = 2^-13, below e4m3fn's smallest subnormal 2^-9: they flush to zero.
    x = np.full((1, 32), 2.0**-140, dtype=np.float32)
    want, scales = mx_reference(x, "float8_e4m3fn", 32)
    assert scales[0] == 2.0**127 and np.all(want == 0)
    assert_bits_equal(fp8.quantize(x, "float8_e4m3fn", scaling="mx"), want, "clamp")
