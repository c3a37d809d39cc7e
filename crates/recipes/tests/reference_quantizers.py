"""Independent reference quantizers for fp8's production recipes, written from the public
reference code (numpy + ml_dtypes, no GPU), compared bit for bit with fp8's casts.

Usage: reference_quantizers.py MANIFEST.json  -> prints JSON {case: {"mismatches": n, ...}}

Each manifest entry names a raw little-endian f32 input and fp8's output, a [rows, cols] shape
and a scheme. The formulas, with their sources:

- torchao rowwise (torchao/float8/float8_utils.py:32-53 `amax_to_scale`, :244-246
  `_round_scale_down_to_power_of_2`; float8 cast `to_fp8_saturated`: clamp, then cast):
  scale = f32(f64(fmax) / max(amax, 1e-12)), rounded down to 2^floor(log2 scale);
  q = e4m3(clamp(x*scale)); dequantized q / scale.
- TE current / block scaling (transformer_engine/common/recipe/recipe_common.cuh:14-49
  `compute_scale_from_amax`, epsilon 0): scale = fmax / amax; amax 0, inf or NaN -> 1; an
  infinite scale -> FLT_MAX; power of two by clearing the mantissa bits; dequantized q * (1/scale).
- TE MXFP8 (common/cast/mxfp8/quantize_mxfp8.cuh:271 `float_to_e8m0(thread_amax *
  max_norm_rcp)`; common/util/ptx_arch_spec.cuh:72-104 `float_to_e8m0`, the software path):
  biased = exponent bits of amax*(1/448), incremented when the mantissa is non-zero (except
  exponent 0 with mantissa <= 0x400000); q = e4m3(x * 2^(127-biased)), dequantized q*2^(biased-127).
- TE NVFP4 (pytorch/custom_recipes/reference_nvfp4.py:651-777 `_quantize_blockwise_reference`),
  1x16 blocks or, for weights, 2-D 16x16 tiles (lines 677-686: one amax per 16x16 tile, repeated
  over the tile's rows; then the same E4M3 block-scale arithmetic as 1-D).
- TE MXFP8 2-D weight blocks (common/cast/mxfp8/quantize_mxfp8.cuh:421-444: the amax is reduced
  over the 32x32 tile before `float_to_e8m0`, then as 1-D).
- Ragged shapes: TE pads the tensor with zeros to whole tiles and crops the result
  (reference_nvfp4.py:780-824 `_pad_tensor`/`_rm_pad_tensor`, used at :904-924); a zero never
  raises an amax, so an edge tile is the partial tile of the elements it holds, as `blocks` cuts.

Amax over a block is the largest finite |x| (NaN ignored, as CUDA's fmaxf does).
"""

import json
import sys

import ml_dtypes
import numpy as np

F32 = np.float32
E4M3 = ml_dtypes.float8_e4m3fn
E2M1 = ml_dtypes.float4_e2m1fn
FLT_MAX = F32(np.finfo(np.float32).max)


def blocks(shape, tile):
    """Yield index slices of the tiles of a [rows, cols] matrix."""
    rows, cols = shape
    tr, tc = tile
    for r in range(0, rows, tr):
        for c in range(0, cols, tc):
            yield (slice(r, min(r + tr, rows)), slice(c, min(c + tc, cols)))


def amax(block):
    a = np.abs(block[np.isfinite(block)])
    return F32(a.max()) if a.size else F32(0.0)


def cast_e4m3(v):
    with np.errstate(invalid="ignore"):
        v = np.where(np.isnan(v), v, np.clip(v, F32(-448.0), F32(448.0))).astype(F32)
    return v.astype(E4M3).astype(F32)


def torchao_scale(a, fmax, pow2):
    s = F32(np.float64(fmax) / max(np.float64(a), 1e-12))
    if pow2:
        s = F32(np.exp2(np.floor(np.log2(np.float64(s)))))
    return s


def te_scale(a, fmax, pow2):
    if a == 0 or not np.isfinite(a):
        return F32(1.0)
    with np.errstate(over="ignore"):
        s = F32(F32(fmax) / F32(a))
    if np.isinf(s):
        s = FLT_MAX
    if pow2:
        s = np.array([s], dtype=F32).view(np.uint32)
        s = (s & np.uint32(0xFF800000)).view(F32)[0]
    return s


def scaled(x, shape, tile, scale_of, divide):
    out = np.empty_like(x)
    for idx in blocks(shape, tile):
        b = x[idx]
        s = scale_of(amax(b))
        with np.errstate(over="ignore", invalid="ignore"):
            q = cast_e4m3((b * s).astype(F32))
            out[idx] = (q / s) if divide else (q * F32(F32(1.0) / s))
    return out


def e8m0_rceil(val):
    if np.isnan(val):
        return 0xFF
    if np.isinf(val):
        return 0xFE
    if val == 0:
        return 0
    bits = int(np.array([val], dtype=F32).view(np.uint32)[0])
    exponent, mantissa = bits >> 23, bits & 0x7FFFFF
    if (mantissa > 0 and exponent != 0xFE) and not (exponent == 0 and mantissa <= 0x400000):
        exponent += 1
    return exponent


def mxfp8(x, shape, tile):
    out = np.empty_like(x)
    rcp = F32(F32(1.0) / F32(448.0))
    for idx in blocks(shape, tile):
        b = x[idx]
        biased = e8m0_rceil(F32(amax(b) * rcp))
        e = biased - 127
        with np.errstate(over="ignore", invalid="ignore"):
            q = cast_e4m3((b * F32(np.ldexp(1.0, -e))).astype(F32))
            out[idx] = q * F32(np.ldexp(1.0, e))
    return out


def nvfp4(x, shape, tile):
    out = np.empty_like(x)
    g_amax = amax(x)
    with np.errstate(divide="ignore"):
        g_enc = F32(min(F32(F32(448.0) * F32(6.0)) / g_amax, FLT_MAX))
    if g_enc == 0:
        g_enc = F32(1.0)
    g_dec = F32(F32(1.0) / g_enc)
    mult = F32(g_enc * F32(F32(1.0) / F32(6.0)))
    for idx in blocks(shape, tile):
        b = x[idx]
        dec = F32(min(F32(amax(b) * mult), FLT_MAX))
        dec = F32(np.clip(dec, -448.0, 448.0)).astype(E4M3).astype(F32)
        if dec == 0:
            out[idx] = np.where(np.isnan(b), np.nan, F32(0.0)) * np.sign(b)
            continue
        with np.errstate(divide="ignore"):
            enc = F32(min(F32(F32(1.0) / F32(dec * g_dec)), FLT_MAX))
        v = np.clip((b * enc).astype(F32), F32(-6.0), F32(6.0))
        q = v.astype(E2M1).astype(F32)
        # TE's cast_to_fp4x2 (reference_nvfp4.py:49-71) matches no interval for NaN: code 0.
        q[np.isnan(v)] = F32(0.0)
        out[idx] = q * F32(dec * g_dec)
    return out


def reference(case, x):
    shape = tuple(case["shape"])
    s = case["scheme"]
    tile = tuple(s["tile"])
    kind = s["kind"]
    if kind == "torchao":
        return scaled(x, shape, tile, lambda a: torchao_scale(a, 448.0, s["pow2"]), True)
    if kind == "te":
        return scaled(x, shape, tile, lambda a: te_scale(a, 448.0, s["pow2"]), False)
    if kind == "mxfp8":
        return mxfp8(x, shape, tile)
    if kind == "nvfp4":
        return nvfp4(x, shape, tile)
    raise ValueError(f"unknown scheme {kind}")


def compare(case):
    shape = tuple(case["shape"])
    x = np.fromfile(case["input"], dtype="<f4").reshape(shape)
    got = np.fromfile(case["output"], dtype="<f4").reshape(shape)
    want = reference(case, x)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    # Signed zeros: ml_dtypes and fp8 agree on the sign; compare bits, but let a zero of either
    # sign from a NaN-free zero input pass only when both are zero.
    if case["scheme"]["kind"] == "nvfp4":
        # E2M1 has no NaN: TE encodes a NaN input as +0, fp8 as a zero of the opposite sign.
        # (TE's code for NaN is 0 whatever the block scale, so any NaN input decodes to zero.)
        same |= np.isnan(x) & (got == 0)
    bad = np.argwhere(~same)
    first = [
        {"index": [int(i) for i in ix], "x": repr(float(x[tuple(ix)])),
         "got": repr(float(got[tuple(ix)])), "want": repr(float(want[tuple(ix)]))}
        for ix in bad[:3]
    ]
    # Per-block amax of the mismatching blocks, for documented exceptions.
    small = []
    for idx in blocks(shape, tuple(case["scheme"]["tile"])):
        if not same[idx].all():
            small.append(float(amax(x[idx])))
    return {"mismatches": int(bad.shape[0]), "first": first, "bad_block_amax": small[:8],
            "count": int(x.size)}


def main():
    cases = json.load(open(sys.argv[1]))
    print(json.dumps({c["name"]: compare(c) for c in cases}))


if __name__ == "__main__":
    main()
