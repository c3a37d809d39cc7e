"""The Python surface: argument checking, layouts, shapes, statistics, formats(), the GIL."""

import sys
import threading
import weakref

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bits_equal, round_trip

import fp8

E4M3 = "float8_e4m3fn"


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32) * 100


# --- argument checking ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, named",
    [
        (np.zeros(4, np.float64), "float64"),
        (np.zeros(4, np.float16), "float16"),
        (np.zeros(4, np.int32), "int32"),
        (np.zeros(4, ml_dtypes.bfloat16), "bfloat16"),
        (np.zeros(4, ">f4"), ">f4"),
        ([1.0, 2.0], "list"),
        (3.0, "float"),
        (None, "NoneType"),
    ],
)
def test_anything_but_float32_arrays_is_a_type_error(bad, named):
    for f in (fp8.quantize, fp8.quantize_stats):
        with pytest.raises(TypeError, match="float32") as e:
            f(bad, E4M3)
        assert named in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(format="float9_e4m3"), "unknown format `float9_e4m3`; valid names: float8_e4m3fn"),
        (dict(format=E4M3, rounding="up"), "unknown rounding `up`; valid: nearest, zero"),
        (dict(format=E4M3, scaling="block"), "unknown scaling 'block'; valid: none, tensor"),
        (dict(format=E4M3, scaling="mx:up"), "unknown scaling 'mx:up'"),
        (dict(format=E4M3, scaling="tensor,pow3"), "unknown scaling option 'pow3'"),
        (dict(format=E4M3, scaling="block:0x4"), "block size must be positive"),
        (dict(format=E4M3, scaling="nvfp4"), "needs format 'float4_e2m1fn'"),
        (dict(format=E4M3, scaling="tensor", block=16), "block=16 applies only to mx"),
        (dict(format=E4M3, scaling="mx", block=0), "block must be a positive"),
        (dict(format=E4M3, scaling="mx", saturate=False), "scaled casts always saturate"),
    ],
)
def test_bad_options_are_value_errors_naming_the_value(x, kwargs, message):
    for f in (fp8.quantize, fp8.quantize_stats):
        with pytest.raises(ValueError) as e:
            f(x, **kwargs)
        assert message in str(e.value)


def test_negative_seed_or_block_is_rejected(x):
    with pytest.raises(OverflowError):
        fp8.quantize(x, E4M3, seed=-1)
    with pytest.raises(OverflowError):
        fp8.quantize(x, E4M3, scaling="mx", block=-32)


def test_options_use_the_cli_spellings(x):
    # Formats: canonical names, aliases and eXmY with family suffixes, case-insensitive.
    assert_bits_equal(fp8.quantize(x, "E4M3FN"), fp8.quantize(x, E4M3), "alias")
    assert_bits_equal(fp8.quantize(x, "e5m2"), round_trip(x, "float8_e5m2"), "e5m2")
    # Every documented scaling parses.
    for s in ["none", "tensor", "tensor,pow2", "row", "col,pow2", "block:1x8", "block:2x4,pow2",
              "mx", "mx:rceil", "mx:ceil", "mx:even", "mx,rows"]:
        assert fp8.quantize(x, E4M3, scaling=s).shape == x.shape, s
    assert fp8.quantize(x, "float4_e2m1fn", scaling="nvfp4,rows").shape == x.shape


# --- semantics of the options --------------------------------------------------------------


def test_saturate_clamps_overflow_to_max():
    x = np.array([1000.0, -1000.0, np.inf, 300.0], dtype=np.float32)
    plain = fp8.quantize(x, E4M3)
    assert np.isnan(plain[:3]).all() and plain[3] == 288.0  # fn overflows to NaN
    sat = fp8.quantize(x, E4M3, saturate=True)
    assert sat[:2].tolist() == [448.0, -448.0] and sat[3] == 288.0
    assert_bits_equal(fp8.quantize(x, E4M3, saturate=False), plain, "saturate=False")


def test_roundings_by_hand():
    # e4m3 around 1: neighbours 1, 1.125, 1.25. 1.0625 is a tie; 1.1 is below the next tie.
    x = np.array([1.0625, -1.0625, 1.1, 1.1875], dtype=np.float32)
    assert fp8.quantize(x, E4M3, rounding="zero").tolist() == [1.0, -1.0, 1.0, 1.125]
    assert fp8.quantize(x, E4M3, rounding="away").tolist() == [1.125, -1.125, 1.125, 1.25]
    assert fp8.quantize(x, E4M3, rounding="nearest").tolist() == [1.0, -1.0, 1.125, 1.25]


def test_stochastic_rounding_is_seeded_and_unbiased():
    x = np.full(200_000, 1.0 + 1.0 / 32, dtype=np.float32)  # a quarter of the way to 1.125
    a = fp8.quantize(x, E4M3, rounding="stochastic", seed=7)
    assert_bits_equal(a, fp8.quantize(x, E4M3, rounding="stochastic", seed=7), "same seed")
    assert not np.array_equal(a, fp8.quantize(x, E4M3, rounding="stochastic", seed=8))
    assert set(np.unique(a).tolist()) == {1.0, 1.125}
    # P(up) = 0.25; the standard error of the mean of 200k draws is about 0.001.
    assert abs(np.mean(a == 1.125) - 0.25) < 0.005


def test_subnormals_false_flushes_below_min_normal():
    x = np.array([2.0**-7, 2.0**-8, 2.0**-9, 0.01], dtype=np.float32)  # e4m3 min normal 2^-6
    assert fp8.quantize(x, E4M3).tolist() == [2.0**-7, 2.0**-8, 2.0**-9, 0.009765625]
    assert fp8.quantize(x, E4M3, subnormals=False).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_tensor_scaling_uses_max_over_amax(x):
    # Current tensor scaling: scale = 448 / amax (float32), q = sat(cast(x*scale)) * (1/scale).
    amax = np.max(np.abs(x))
    scale = np.float32(448.0) / amax
    want = np.clip(x * scale, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    want = want * (np.float32(1) / scale)
    assert_bits_equal(fp8.quantize(x, E4M3, scaling="tensor"), want, "tensor")
    s = fp8.quantize_stats(x, E4M3, scaling="tensor")
    assert s["scale"] == scale and s["amax"] == amax


# --- statistics ----------------------------------------------------------------------------


def reference_stats(x, q, fmax):
    """The telemetry computed by numpy from an input and its quantized result. Both fractions
    count over all elements (non-finite inputs included), as fp8-formats reports them."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    finite = np.isfinite(x64)
    nonzero = finite & (x64 != 0)
    err = x64[finite] - q64[finite]
    return {
        "amax": float(np.max(np.abs(x64[finite]))),
        "underflow": np.sum(nonzero & (q64 == 0)) / x.size,
        # Inputs beyond the format's range (clamped to +-max, or overflowed to inf/NaN); an
        # input that merely rounds up to max, like 440 -> 448 in e4m3, is not saturation.
        "saturation": np.sum(finite & (np.abs(x64) > fmax)) / x.size,
        "snr_db": 10 * np.log10(np.sum(x64[finite] ** 2) / np.sum(err**2)),
        "count": x.size,
    }


@pytest.mark.parametrize("saturate", [True, None])
def test_stats_match_numpy(saturate):
    rng = np.random.default_rng(1)
    # Magnitudes from far below e4m3's smallest subnormal to far above its max; none in the
    # ambiguous band [448, 464] around max, and some non-finite values that must not count.
    x = (rng.standard_normal(100_000) * 2.0 ** rng.uniform(-14, 11, 100_000)).astype(np.float32)
    x = x[(np.abs(x) < 440) | (np.abs(x) > 470)]
    x[:5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    q = fp8.quantize(x, E4M3, saturate=saturate)
    got = fp8.quantize_stats(x, E4M3, saturate=saturate)
    finite = np.isfinite(x)
    if saturate:
        want = reference_stats(x, q, 448.0)
    else:
        # Overflow makes NaN, and then the error energy, and so snr_db, is no longer finite.
        want = reference_stats(x, q, 448.0)
        del want["snr_db"]
    assert set(got) == {"amax", "scale", "underflow", "saturation", "snr_db", "count"}
    assert got["scale"] == 1.0
    for k, v in want.items():
        # Fractions and amax are exact; the SNR's sums are accumulated in another order.
        assert got[k] == pytest.approx(v, rel=1e-6 if k == "snr_db" else 1e-12), k
    assert 0.01 < got["underflow"] < 0.5 and 0.01 < got["saturation"] < 0.5  # both exercised
    assert np.sum(~finite) == 3
    assert np.sum((np.abs(x) > 432) & (np.abs(x) < 448)) > 10  # inputs that round up to max


def test_stats_of_an_exact_cast_and_of_an_empty_array():
    x = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    s = fp8.quantize_stats(x, E4M3)
    assert s == {"amax": 2.0, "scale": 1.0, "underflow": 0.0, "saturation": 0.0,
                 "snr_db": float("inf"), "count": 3}
    e = fp8.quantize_stats(np.zeros((0, 3), np.float32), E4M3, scaling="mx")
    assert e["count"] == 0 and e["amax"] == 0.0


# --- layouts, shapes, the input left alone -------------------------------------------------


def views():
    base = np.random.default_rng(2).standard_normal((8, 12, 10)).astype(np.float32) * 30
    flat = base.reshape(-1)
    return {
        "slice": base[1:7:2, ::3, 2:],
        "transpose": base.transpose(2, 0, 1),
        "fortran": np.asfortranarray(base[0]),
        "reversed": flat[::-1],
        "negative-2d": base[0, ::-1, ::-2],
        "broadcast": np.broadcast_to(flat[:10], (5, 10)),
        "column": base[:, :, 3],
        "size-1 axes": base[:1, 4:5, :],
        "unaligned": np.frombuffer(b"\0" + flat.tobytes(), dtype=np.float32, offset=1),
    }


@pytest.mark.parametrize("kind", list(views()))
@pytest.mark.parametrize("scaling", ["none", "mx", "row"])
def test_non_contiguous_inputs_equal_their_contiguous_copy(kind, scaling):
    v = views()[kind]
    dense = np.ascontiguousarray(v)
    opts = dict(scaling=scaling, rounding="stochastic", seed=3)
    got = fp8.quantize(v, E4M3, **opts)
    assert got.shape == v.shape and got.flags.c_contiguous
    assert_bits_equal(got, fp8.quantize(dense, E4M3, **opts), kind)
    if scaling == "none":
        assert_bits_equal(fp8.quantize(v, E4M3), round_trip(dense, E4M3), kind)
    assert fp8.quantize_stats(v, E4M3, **opts) == fp8.quantize_stats(dense, E4M3, **opts)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (7,), (2, 3, 4, 5)])
def test_shape_preserved(shape):
    x = np.full(shape, 1.3, dtype=np.float32)
    y = fp8.quantize(x, E4M3, scaling="mx")
    assert y.shape == shape and y.dtype == np.float32
    assert np.all(y == np.float32(1.25))  # 1.3 → 1.25 in e4m3, whatever the scale (2^-0)


def test_input_is_not_modified_and_read_only_input_is_fine(x):
    before = x.copy()
    fp8.quantize(x, E4M3, scaling="tensor")
    fp8.quantize_stats(x[:, ::2], E4M3)
    assert_bits_equal(x, before, "input")
    x.flags.writeable = False
    assert_bits_equal(fp8.quantize(x, E4M3), round_trip(before, E4M3), "read-only")


# --- recycled result memory ----------------------------------------------------------------

BIG = (1 << 20) + 3  # elements: just over 4 MiB, so results are recycled (python/src/results.rs)


def test_a_large_result_nobody_holds_is_recycled_and_held_ones_never_change():
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal(BIG).astype(np.float32) * s for s in (1.0, 100.0, 1e-3, 3.0)]
    refs = [round_trip(x, E4M3) for x in xs]
    y0 = fp8.quantize(xs[0], E4M3)
    first = weakref.ref(y0)
    view = fp8.quantize(xs[1], E4M3)[::2]  # only a view of the second result stays alive
    del y0
    assert first() is not None, "the dropped result is kept for the next call"
    y2 = fp8.quantize(xs[2], E4M3)
    assert y2 is first(), "the next call of that shape writes into it"
    assert y2.flags.owndata and y2.flags.writeable and y2.flags.c_contiguous and y2.base is None
    y3 = fp8.quantize(xs[3], E4M3)  # every kept result is held now: fresh memory
    assert y3 is not y2 and y3 is not view.base
    assert_bits_equal(y2, refs[2], "recycled")
    assert_bits_equal(view, refs[1][::2], "held through a view")
    assert_bits_equal(y3, refs[3], "fresh")
    small = xs[0][:4096].reshape(64, 64)[:, :7]
    assert_bits_equal(fp8.quantize(small, E4M3), round_trip(small, E4M3), "a small result")


def test_a_result_made_read_only_or_reshaped_is_not_recycled():
    x = np.random.default_rng(8).standard_normal(BIG).astype(np.float32)
    y = fp8.quantize(x, E4M3)
    y.flags.writeable = False
    z = fp8.quantize(x, E4M3)
    z.shape = (1, BIG)
    gone = [weakref.ref(y), weakref.ref(z)]
    del y, z
    w = fp8.quantize(x * 2, E4M3)
    assert all(w is not r() for r in gone)
    assert_bits_equal(w, round_trip(x * 2, E4M3), "fresh")


# --- formats() and the GIL -----------------------------------------------------------------


def test_formats_lists_the_named_formats_with_known_constants():
    fmts = {f["name"]: f for f in fp8.formats()}
    assert set(fmts) >= {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                         "float8_e8m0fnu", "float4_e2m1fn", "bfloat16", "float16", "float32"}
    e4m3 = fmts["float8_e4m3fn"]
    assert (e4m3["bits"], e4m3["exp_bits"], e4m3["man_bits"], e4m3["bias"]) == (8, 4, 3, 7)
    assert (e4m3["max"], e4m3["min_normal"], e4m3["min_subnormal"]) == (448.0, 2.0**-6, 2.0**-9)
    assert (e4m3["inf"], e4m3["nan"]) == (False, True)
    for name, f in fmts.items():
        info = ml_dtypes.finfo(np.float16 if name == "float16" else
                               np.float32 if name == "float32" else getattr(ml_dtypes, name))
        assert f["max"] == float(info.max), name
        assert f["min_normal"] == float(info.smallest_normal), name


def test_gil_is_released_while_casting():
    """Another Python thread runs while a cast is in progress. The switch interval is raised so
    that, were the GIL held during the cast, the other thread could not run at all then."""
    big = np.random.default_rng(4).standard_normal(1 << 23).astype(np.float32)
    ticks = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.2)
    t = threading.Thread(target=spin)
    t.start()
    try:
        advanced = 0
        for _ in range(3):
            before = ticks[0]
            fp8.quantize(big, E4M3, rounding="stochastic")
            advanced += ticks[0] > before
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert advanced >= 2, "the spinning thread never ran during a cast"
