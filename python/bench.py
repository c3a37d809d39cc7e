"""Throughput of fp8.quantize against ml_dtypes' round trip x.astype(fmt).astype(np.float32).

Both run in this one process on the same 16 Mi-element float32 array, alternating, so a busy
machine slows both alike; the figure that matters is the ratio of the medians. Each call makes
a new output array, and each function's last --hold results stay alive until its next call, as
in a loop `y = f(x)` (--hold 1, the default). fp8 recycles the memory of large results nobody
holds any more (python/src/results.rs); --hold 3 keeps every result it could recycle alive, so
each call of either function writes into memory fresh from the kernel.

Usage: python bench.py [--elements N] [--repeats R] [--format NAME] [--hold K]
"""

import argparse
import os
import statistics
import time

import ml_dtypes
import numpy as np

import fp8


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", type=int, default=16 << 20)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--format", default="float8_e4m3fn")
    p.add_argument("--hold", type=int, default=1,
                   help="results of each function kept alive across calls (default 1)")
    a = p.parse_args()
    dtype = getattr(ml_dtypes, a.format)
    x = np.random.default_rng(0).standard_normal(a.elements).astype(np.float32)

    def ml():
        return x.astype(dtype).astype(np.float32)

    def ours():
        return fp8.quantize(x, a.format)

    # Warm up, and make sure both compute the same thing before timing them.
    if not np.array_equal(ml().view(np.uint32), ours().view(np.uint32)):
        raise SystemExit("fp8.quantize and ml_dtypes disagree; not timing")
    if a.hold < 0:
        raise SystemExit("--hold takes a count >= 0")
    times = {"ml_dtypes": [], "fp8": []}
    held = {"ml_dtypes": [], "fp8": []}
    for _ in range(a.repeats):
        for name, f in (("ml_dtypes", ml), ("fp8", ours)):
            t = time.perf_counter()
            y = f()
            times[name].append(time.perf_counter() - t)
            held[name] = (held[name] + [y])[-a.hold:] if a.hold else []
            del y
    med = {k: statistics.median(v) for k, v in times.items()}
    n = a.elements
    print(f"{n} float32 elements, f32 -> {a.format} -> f32, {a.repeats} alternating repeats, "
          f"{os.cpu_count()} CPUs, {a.hold} result(s) held, load average {os.getloadavg()[0]:.1f}")
    for k in ("ml_dtypes", "fp8"):
        print(f"  {k:<9}  median {med[k] * 1e3:8.2f} ms  {n / med[k] / 1e6:8.0f} Melem/s  "
              f"(min {min(times[k]) * 1e3:.2f} ms)")
    print(f"  ratio      {med['ml_dtypes'] / med['fp8']:.1f}x  (ml_dtypes time / fp8 time)")


if __name__ == "__main__":
    main()
