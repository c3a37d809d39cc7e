#!/usr/bin/env python3
"""Optional cross-check of the default cast against ml_dtypes (pip install ml_dtypes numpy).

Casts every f32 bit pattern with a stride (plus edge values) through `cast_raw` and through
`x.astype(fmt).astype(float32)`, and compares bit for bit. Not needed by the Rust tests.
Usage: python3 crates/formats/scripts/crosscheck_ml_dtypes.py [STRIDE]
"""
import subprocess, sys
import numpy as np
import ml_dtypes

FORMATS = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3",
           "float8_e3m4", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn", "float8_e8m0fnu",
           "bfloat16", "float16"]
stride = int(sys.argv[1]) if len(sys.argv) > 1 else 997
bits = np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32)
x = bits.view(np.float32)
subprocess.run(["cargo", "build", "--release", "-q", "-p", "fp8-formats", "--example", "cast_raw"], check=True)
import os
exe = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "examples", "cast_raw")
bad = 0
for name in FORMATS:
    want = x.astype(np.float16 if name == 'float16' else getattr(ml_dtypes, name)).astype(np.float32).view(np.uint32)
    got = np.frombuffer(subprocess.run([exe, name], input=x.tobytes(), capture_output=True, check=True).stdout,
                        dtype=np.uint32)
    mism = want != got
    if name == "float16":  # numpy keeps NaN payloads; we return the canonical quiet NaN
        mism &= ~(np.isnan(want.view(np.float32)) & np.isnan(got.view(np.float32)))
    diff = np.nonzero(mism)[0]
    print(f"{name:16} {len(x)} values, {len(diff)} mismatches")
    for i in diff[:5]:
        print(f"   x={x[i]!r} ({bits[i]:#010x}) want {want[i]:#010x} got {got[i]:#010x}")
    bad += len(diff)
sys.exit(1 if bad else 0)
