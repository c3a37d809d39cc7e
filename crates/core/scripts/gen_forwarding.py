#!/usr/bin/env python3
"""Generate crates/core/src/precision/forward.rs: the op-trait impls of `Precision<B>` that
forward every method to `B`.

burn's backend op traits have ~430 methods, many with default bodies. A decorator must forward
*all* of them, defaults included: otherwise the default body runs on the decorator (e.g. the
default `float_zeros` calls `Self::float_from_data`) and the inner backend's own version - its
fused kernel, or Autodiff's backward formula - is lost. Typing 430 forwarders invites mistakes,
so this script reads the trait definitions of the pinned burn-backend and writes them.

Usage (from the workspace root; only needed when the burn version changes):

    python3 crates/core/scripts/gen_forwarding.py \
        ~/.cargo/registry/src/*/burn-backend-0.21.0 > crates/core/src/precision/forward.rs
    cargo fmt

The generated file is committed; building fp8-core does not need Python.
"""
import re
import sys
from pathlib import Path

# trait file (relative to burn-backend/src/backend/ops) -> trait name
TRAITS = [
    ("tensor.rs", "FloatTensorOps"),
    ("int_tensor.rs", "IntTensorOps"),
    ("bool_tensor.rs", "BoolTensorOps"),
    ("modules/base.rs", "ModuleOps"),
    ("activation.rs", "ActivationOps"),
    ("qtensor.rs", "QTensorOps"),
]

# Methods that `Precision` implements itself (in precision.rs): generated as calls to
# `Self::<name>_with_recipe(args)`.
OVERRIDES = {"float_matmul", "linear"}

# Types generic over the backend that are not plain aliases of its associated types: the same
# data, but `X<Precision<B>>` and `X<B>` are different Rust types, so values are moved across
# field by field (helpers in precision/convert.rs).
CONVERT = {
    "TensorPrimitive": ("convert::tp_in", "convert::tp_out"),
    "QuantizationParametersPrimitive": ("convert::qparams_in", None),
    "MaxPool1dWithIndices": (None, "convert::max_pool1d_out"),
    "MaxPool1dBackward": (None, "convert::max_pool1d_backward_out"),
    "MaxPool2dWithIndices": (None, "convert::max_pool2d_out"),
    "MaxPool2dBackward": (None, "convert::max_pool2d_backward_out"),
    "DeformConv2dBackward": (None, "convert::deform_conv2d_backward_out"),
}


def strip_comments(src):
    out = []
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("//"):
            continue
        out.append(line)
    return "\n".join(out)


def skip_angle(s, i):
    """s[i] == '<'; return index after the matching '>' (ignoring '->')."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c == "<":
            depth += 1
        elif c == ">" and s[i - 1] != "-":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced <>")


def split_top(s):
    parts, depth, cur, i = [], 0, "", 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "<":
            depth += 1
        elif c == ">" and (i == 0 or s[i - 1] != "-"):
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def trait_body(src, name):
    m = re.search(r"pub trait " + name + r"<B: Backend>\s*\{", src)
    if not m:
        raise ValueError(f"trait {name} not found")
    i, depth = m.end(), 1
    start = i
    while depth:
        if src[i] == "{":
            depth += 1
        elif src[i] == "}":
            depth -= 1
        i += 1
    return src[start : i - 1]


def methods(body):
    """Yield (name, signature-text) for each fn at the top level of a trait body."""
    i, depth = 0, 0
    while i < len(body):
        c = body[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and body.startswith("fn ", i) and (i == 0 or not body[i - 1].isalnum()):
            j, paren = i, 0
            while True:
                ch = body[j]
                if ch in "([":
                    paren += 1
                elif ch in ")]":
                    paren -= 1
                elif paren == 0 and ch in ";{":
                    break
                j += 1
            sig = body[i:j].strip()
            name = re.match(r"fn\s+(\w+)", sig).group(1)
            yield name, sig
            if body[j] == "{":
                # skip the default body
                depth_b, j = 1, j + 1
                while depth_b:
                    if body[j] == "{":
                        depth_b += 1
                    elif body[j] == "}":
                        depth_b -= 1
                    j += 1
            i = j
            continue
        i += 1


def params_of(sig):
    m = re.match(r"fn\s+\w+\s*", sig)
    i = m.end()
    if sig[i] == "<":
        i = skip_angle(sig, i)
    assert sig[i] == "(", sig
    depth, j = 0, i
    while True:
        if sig[j] == "(":
            depth += 1
        elif sig[j] == ")":
            depth -= 1
            if depth == 0:
                break
        j += 1
    return i, j, split_top(sig[i + 1 : j])


def subst_b(text):
    text = re.sub(r"\bcrate::", "burn_backend::", text)
    return re.sub(r"\bB\b", "Self", text)


def generate(root):
    out = [
        "// @generated by crates/core/scripts/gen_forwarding.py from burn-backend 0.21.0.",
        "// Do not edit by hand: change the script and regenerate (see its docstring).",
        "//! Forwarding impls of burn's backend op traits for [`Precision`]: every method,",
        "//! including those with default bodies, calls the inner backend's version.",
        "",
        "#![allow(clippy::too_many_arguments, unused_variables)]",
        "",
        "use super::{convert, Precision, QuantizeBackend};",
        "use burn_backend::ops::*;",
        "use burn_backend::quantization::*;",
        "use burn_backend::tensor::*;",
        "use burn_backend::*;",
        "// Names that more than one of the globs above export.",
        "use burn_backend::tensor::Device;",
        "use core::future::Future;",
        "use core::ops::Range;",
        "",
    ]
    total = 0
    for fname, trait in TRAITS:
        src = strip_comments((root / "src/backend/ops" / fname).read_text())
        body = trait_body(src, trait)
        out.append(f"impl<B: QuantizeBackend> {trait}<Self> for Precision<B> {{")
        for name, sig in methods(body):
            total += 1
            lp, rp, params = params_of(sig)
            args, new_params = [], []
            for p in params:
                pname, ptype = p.split(":", 1)
                pname = pname.strip().removeprefix("mut ").strip()
                ptype = ptype.strip()
                new_params.append(f"{pname}: {subst_b(ptype)}")
                conv_in = None
                for ty, (cin, _) in CONVERT.items():
                    if re.match(ty + r"<B>$", ptype):
                        conv_in = cin
                        assert cin, (name, ptype)
                args.append(f"{conv_in}({pname})" if conv_in else pname)
            rest = sig[rp + 1 :]
            ret = re.search(r"->\s*(.*?)\s*(where\b.*)?$", rest, re.S)
            ret_ty = ret.group(1).strip() if ret else ""
            conv_out = None
            for ty, (_, cout) in CONVERT.items():
                if re.fullmatch(ty + r"<B>", ret_ty):
                    conv_out = cout
                    assert cout, (name, ret_ty)
                elif re.search(r"\b" + ty + r"<B>", ret_ty):
                    raise ValueError(f"{name}: cannot convert return type {ret_ty}")
            new_sig = subst_b(sig[:lp]) + "(" + ", ".join(new_params) + ")" + subst_b(rest)
            if name in OVERRIDES:
                call = f"Self::{name}_with_recipe({', '.join(args)})"
            else:
                call = f"B::{name}({', '.join(args)})"
                if conv_out:
                    call = f"{conv_out}({call})"
            out.append(f"    {new_sig} {{ {call} }}")
        out.append("}")
        out.append("")
    sys.stderr.write(f"{total} methods forwarded\n")
    return "\n".join(out)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    print(generate(root))
