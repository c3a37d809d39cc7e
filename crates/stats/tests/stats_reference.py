"""Reference computations for tests/stats_scipy.rs, with scipy and numpy.

Reads a JSON object of cases on stdin and prints a JSON object of results. Every statistic is
computed here from its definition with scipy/numpy, independently of the Rust code; only the
bootstrap resample indices are taken from the input, so both sides resample the same seeds.
Non-finite floats travel as the strings "NaN", "inf", "-inf".
"""

import functools
import json
import math
import sys

import numpy as np
from scipy import stats


def num(v):
    return float(v) if isinstance(v, str) else v


def out(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


@functools.lru_cache(maxsize=None)
def fisher(x1, n1, x0, n0):
    return float(stats.fisher_exact([[x1, n1 - x1], [x0, n0 - x0]]).pvalue)


def wilson(x, n):
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def newcombe(x1, n1, x0, n0):
    p1, p0 = x1 / n1, x0 / n0
    l1, u1 = wilson(x1, n1)
    l0, u0 = wilson(x0, n0)
    d = p1 - p0
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )


def power(n1, p1, n0, p0, alpha):
    """Exact power of the two-sided Fisher test: enumerate every outcome."""
    f1 = stats.binom.pmf(np.arange(n1 + 1), n1, p1)
    f0 = stats.binom.pmf(np.arange(n0 + 1), n0, p0)
    total = 0.0
    for x1 in range(n1 + 1):
        for x0 in range(n0 + 1):
            if fisher(x1, n1, x0, n0) <= alpha:
                total += f1[x1] * f0[x0]
    return float(total)


def loss_gap(diffs, alpha, pw):
    d = np.array([num(x) for x in diffs], dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return None
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(confidence_level=1 - alpha)
    se = stats.sem(d)
    mde = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(pw)) * se
    return {"mean": float(d.mean()), "lo": float(ci.low), "hi": float(ci.high), "mde": float(mde)}


def capped(run):
    f, i = num(run["final_loss"]), num(run["initial_loss"])
    if math.isfinite(f) and math.isfinite(i):
        return min(f, i)
    if math.isfinite(f):
        return f
    if math.isfinite(i):
        return i
    return None


def sensitivity_of(runs, seeds):
    """S over the runs of the drawn seeds (with multiplicity)."""
    cell = {}
    for r in runs:
        v = capped(r)
        if v is not None:
            cell.setdefault(r["lr"], {}).setdefault(r["seed"], []).append(v)
    means = []
    for lr in sorted(cell):
        vals = [v for s in seeds for v in cell[lr].get(s, [])]
        if vals:
            means.append(np.mean(vals))
    if not means:
        return None
    means = np.array(means)
    return float(np.mean(means - means.min()))


def sensitivity(case):
    runs = case["runs"]
    seeds = sorted({r["seed"] for r in runs if capped(r) is not None})
    s = sensitivity_of(runs, seeds)
    if s is None:
        return None
    per_lr = []
    for lr in sorted({r["lr"] for r in runs}):
        vals = [capped(r) for r in runs if r["lr"] == lr]
        vals = [v for v in vals if v is not None]
        if vals:
            per_lr.append((lr, float(np.mean(vals))))
    best = min(per_lr, key=lambda p: (p[1], -p[0]))
    res = {"s": s, "best_lr": best[0], "means": [m for _, m in per_lr], "interval": None}
    if len(seeds) >= 2:
        reps = [sensitivity_of(runs, [seeds[i] for i in draw]) for draw in case["indices"]]
        lo, hi = np.percentile(reps, [2.5, 97.5])
        res["interval"] = [float(lo), float(hi)]
        res["reps_mean"] = float(np.mean(reps))
    return res


def outcomes(case):
    f, drop = case["min_progress"], case["min_drop"]
    runs = case["runs"]
    bests = [num(r["best"]) for r in runs if math.isfinite(num(r["best"]))]
    gbest = min(bests) if bests else math.nan
    inits = [num(r["initial"]) for r in runs if r["initial"] is not None]
    fallback = float(np.median(inits)) if inits else None
    res = []
    for r in runs:
        best = num(r["best"])
        if r["diverged"] or not math.isfinite(best):
            res.append("diverged")
            continue
        l0 = num(r["initial"]) if r["initial"] is not None else fallback
        if l0 is None:
            res.append("converged")
            continue
        gap = l0 - gbest
        prog = (l0 - best) / gap if gap > 0 else 0.0
        res.append("stalled" if prog < f or (l0 - best) < drop * abs(l0) else "converged")
    return res


def warnings(case):
    thr, above = case["threshold"], case["above"]

    def crossed(v):
        v = num(v)
        return (not math.isfinite(v)) or (v > thr if above else v < thr)

    hits, failed, alarms, healthy, leads = 0, 0, 0, 0, []
    for r in case["runs"]:
        fs = r["failure_step"]
        if fs is None:
            healthy += 1
            alarms += any(crossed(v) for _, v in r["points"])
        else:
            failed += 1
            first = next((s for s, v in r["points"] if s < fs and crossed(v)), None)
            if first is not None:
                hits += 1
                leads.append(fs - first)
    return {"hits": hits, "failed": failed, "alarms": alarms, "healthy": healthy, "leads": leads}


def main():
    cases = json.load(sys.stdin)
    a, pw = cases["alpha"], cases["power_level"]
    result = {
        "fisher": [fisher(*map(int, t)) for t in cases["fisher"]],
        "newcombe": [list(newcombe(*t)) for t in cases["newcombe"]],
        "power": [power(n1, p1, n0, p0, a) for (n1, p1, n0, p0) in cases["power"]],
        "loss_gap": [loss_gap(d, a, pw) for d in cases["loss_gap"]],
        "sensitivity": [sensitivity(c) for c in cases["sensitivity"]],
        "outcomes": [outcomes(c) for c in cases["outcomes"]],
        "warnings": [warnings(c) for c in cases["warnings"]],
    }
    json.dump(result, sys.stdout, default=out)


if __name__ == "__main__":
    main()
