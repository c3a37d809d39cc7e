#!/usr/bin/env bash
# fp32 gpt2-mini training throughput: fp8 against PyTorch eager on the same machine.
#
#   scripts/bench_vs_torch.sh [--runs N] [--steps S] [--threads "2 1"] [--fp8 PATH] [--venv DIR]
#
# For each thread count, alternates `fp8 bench train --recipe recipes/fp32.ron --baseline-recipe
# none` with `scripts/torch_baseline.py --attention manual` (the same model, step and batch,
# attention as explicit matmuls as fp8's model writes it) N times, and prints each pair, the
# ratio fp8 ÷ PyTorch and fp8's CPU utilisation (process CPU time ÷ wall time over the timed
# steps, as `fp8 bench train` reports it), then the medians. Each run also shows the share of
# the machine's CPU time the hypervisor took away during it ("steal", from /proc/stat; 0 on bare
# metal): on a shared VM that, not the program, can move a run's figure most.
#
# PyTorch is installed from PyPI into a scratch venv on first use (default /tmp/fp8-torch-venv;
# the default wheel may pull CUDA packages: large, but only a download). fp8 is built with
# `cargo build --release -p fp8-cli` unless --fp8 names a binary.
#
# Absolute tokens/s vary a lot between machines (vector ISA, cache sizes, clock, other load);
# the ratio, measured alternately in one run on a quiet machine, is the figure to compare.
set -euo pipefail

runs=3
steps=16
warmup=2
threads="$(nproc) 1"
fp8=""
venv="${TORCH_VENV:-/tmp/fp8-torch-venv}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --fp8) fp8="$2"; shift 2 ;;
        --venv) venv="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "bench_vs_torch.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$runs" "$steps"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "bench_vs_torch.sh: --runs and --steps take a positive integer, got '$v'" >&2; exit 2; }
done
for t in $threads; do
    [[ "$t" =~ ^[1-9][0-9]*$ ]] || { echo "bench_vs_torch.sh: --threads takes positive integers, got '$t'" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
if [[ -z "$fp8" ]]; then
    cargo build --release -p fp8-cli >&2
    fp8=target/release/fp8
fi
[[ -x "$fp8" ]] || { echo "bench_vs_torch.sh: no fp8 binary at $fp8" >&2; exit 2; }

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "installing PyTorch into $venv ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch numpy >&2
fi
py="$venv/bin/python"

echo "# fp8 vs PyTorch, gpt2-mini fp32, batch 16, seq 128, $steps steps after $warmup warm-up, $runs alternating runs"
echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(lscpu | grep -o 'avx512f' | head -1 || true)"
echo "# torch: $("$py" -c 'import torch; print(torch.__version__)'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# absolute figures vary by machine; compare the ratio"

# "steal total" ticks of all CPUs so far (/proc/stat; steal is absent on old kernels: 0).
cpu_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print ($9 == "" ? 0 : $9), t}' /proc/stat; }
steal_pct() { # steal share between two cpu_ticks readings
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); d = y[2] - x[2];
        printf "%.1f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0)}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

for t in $threads; do
    ratios=(); fp8s=(); torchs=(); utils=()
    for ((i = 1; i <= runs; i++)); do
        t0=$(cpu_ticks)
        out=$(RAYON_NUM_THREADS=$t "$fp8" bench train --model gpt2-mini --recipe recipes/fp32.ron \
            --baseline-recipe none --steps "$steps" --warmup-steps "$warmup" --threads "$t")
        f=$(echo "$out" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
        u=$(echo "$out" | "$py" -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["cpu_utilisation"])')
        t1=$(cpu_ticks)
        out=$(OMP_NUM_THREADS=$t "$py" scripts/torch_baseline.py --threads "$t" --steps "$steps" \
            --warmup "$warmup" --attention manual)
        p=$(echo "$out" | "$py" -c 'import json,sys; print(json.loads(sys.stdin.readline())["tokens_per_s"])')
        t2=$(cpu_ticks)
        r=$("$py" -c "print(f'{$f / $p:.2f}')")
        printf "threads %s run %d: fp8 %8.0f tokens/s (CPU utilisation %s, steal %s%%)  PyTorch %8.0f tokens/s (steal %s%%)  ratio %s\n" \
            "$t" "$i" "$f" "$u" "$(steal_pct "$t0" "$t1")" "$p" "$(steal_pct "$t1" "$t2")" "$r"
        ratios+=("$r"); fp8s+=("$f"); torchs+=("$p"); utils+=("$u")
    done
    printf "threads %s median: fp8 %.0f  PyTorch %.0f  ratio %s  fp8 CPU utilisation %s\n" "$t" \
        "$(printf '%s\n' "${fp8s[@]}" | median)" "$(printf '%s\n' "${torchs[@]}" | median)" \
        "$(printf '%s\n' "${ratios[@]}" | median)" "$(printf '%s\n' "${utils[@]}" | median)"
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
