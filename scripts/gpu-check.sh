#!/usr/bin/env bash
# GPU check: build with CUDA, check the device quantization path on the GPU against the host
# kernels, and measure training throughput and MFU of gpt2-124m under five recipes.
#
# Usage: scripts/gpu-check.sh            (on a machine with an NVIDIA GPU and its driver)
# Env:   GPU=0                 which CUDA device (cuda:$GPU)
#        BATCH=16 SEQ=1024     micro-batch (sequences) and sequence length
#        STEPS=4 WARMUP=2      measured / unmeasured optimizer steps per recipe
#        PEAK_TFLOPS=989       peak used for MFU (H200 dense BF16); TF32 (494) is printed too
#        BUDGET_S=470          wall-clock budget; stages that would not fit are skipped
#
# Designed to finish in under 8 minutes on an H200: every stage runs under `timeout`, and the
# throughput stages are skipped (with a message) once the budget is spent.
#
# MFU = tokens/s × FLOPs per token / peak FLOP/s, with FLOPs per token from
# `fp8 model info --json` (training, fwd+bwd: 6·N_gemm + 12·n_layer·context·d_attn). It is
# reported against the dense BF16 peak (PEAK_TFLOPS, default 989 TFLOP/s for H200), the usual
# convention, and against the TF32 peak (494 TFLOP/s) since f32 runs use at most TF32 tensor
# cores. Simulated recipes compute in f32 and add quantization work, so their MFU is expected to
# be well below a native-precision run's.
set -uo pipefail

cd "$(dirname "$0")/.."

GPU=${GPU:-0}
DEVICE="cuda:$GPU"
BATCH=${BATCH:-16}
SEQ=${SEQ:-1024}
STEPS=${STEPS:-4}
WARMUP=${WARMUP:-2}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
TF32_TFLOPS=${TF32_TFLOPS:-494}
BUDGET_S=${BUDGET_S:-470}
MODEL=gpt2-124m
RECIPES=(recipes/fp32.ron recipes/bf16.ron recipes/bit_reduction_e8m3.ron recipes/delayed_scaling.ron recipes/mxfp8.ron)
FP8=target/release/fp8
START=$(date +%s)
FAILED=0

say() { printf '\n== %s\n' "$*"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
die() {
    echo "gpu-check: $*" >&2
    exit 1
}

# ---- 0. a GPU? -------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 ||
    die "nvidia-smi not found: this script needs an NVIDIA GPU with its driver installed (nothing was built)"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader ||
    die "nvidia-smi failed: is the NVIDIA driver loaded?"
command -v cargo >/dev/null 2>&1 || die "cargo not found"

# ---- 1. build --------------------------------------------------------------------------------
say "build: cargo build --release --features cuda -p fp8-cli (timeout 300 s)"
timeout 300 cargo build --release --features cuda -p fp8-cli ||
    die "release build with --features cuda failed or timed out"

# ---- 2. device quantization on the GPU vs the host kernels -----------------------------------
say "test: device_quantize on $DEVICE (FP8_TEST_DEVICE) and on the CPU backends (timeout 150 s)"
if ! FP8_TEST_DEVICE=$DEVICE timeout 150 cargo test --release --features cuda -p fp8-core \
    --test device_quantize -- --nocapture --test-threads 2; then
    echo "gpu-check: FAILED: the device quantization path differs from the host kernels (or timed out)" >&2
    FAILED=1
fi

# ---- 3. throughput and MFU -------------------------------------------------------------------
FLOPS_PER_TOKEN=$("$FP8" model info --model "$MODEL" --json |
    sed -n 's/^ *"flops_per_token": *\([0-9][0-9]*\).*/\1/p')
[ -n "$FLOPS_PER_TOKEN" ] || die "could not read flops_per_token from \`fp8 model info --json\`"
echo "model $MODEL: $FLOPS_PER_TOKEN FLOPs per token (training); batch $BATCH x seq $SEQ"

# tokens/s from a JSON output (bench: "tokens_per_s"; train summary: "tokens_per_s").
tokens_per_s() { sed -n 's/^ *"tokens_per_s": *\([0-9.eE+-]*\).*/\1/p' "$1" | head -n 1; }

RESULTS=()
run_one() { # label, timeout, command...
    local label=$1 limit=$2
    shift 2
    local out
    out=$(mktemp)
    if [ "$(left)" -lt "$limit" ]; then
        echo "skipped $label: ${limit}s stage does not fit the remaining $(left)s of the budget"
        RESULTS+=("$(printf '%-34s %12s' "$label" skipped)")
        return
    fi
    echo "+ $*"
    if timeout "$limit" "$@" >"$out" 2>"$out.err"; then
        local tps
        tps=$(tokens_per_s "$out")
        local mfu mfu32
        mfu=$(awk -v t="$tps" -v f="$FLOPS_PER_TOKEN" -v p="$PEAK_TFLOPS" 'BEGIN { printf "%.2f", 100 * t * f / (p * 1e12) }')
        mfu32=$(awk -v t="$tps" -v f="$FLOPS_PER_TOKEN" -v p="$TF32_TFLOPS" 'BEGIN { printf "%.2f", 100 * t * f / (p * 1e12) }')
        RESULTS+=("$(printf '%-34s %12.0f %10s%% %10s%%' "$label" "$tps" "$mfu" "$mfu32")")
        echo "$label: $tps tokens/s, MFU $mfu% of $PEAK_TFLOPS TFLOP/s (BF16), $mfu32% of $TF32_TFLOPS (TF32)"
    else
        echo "gpu-check: $label failed or timed out; last lines:" >&2
        tail -n 15 "$out.err" >&2
        RESULTS+=("$(printf '%-34s %12s' "$label" failed)")
        FAILED=1
    fi
    rm -f "$out" "$out.err"
}

# `fp8 bench train` times steps after warm-up (no logging, evaluation or checkpoints). A build
# whose bench command does not take CUDA devices yet falls back to `fp8 train`, whose
# tokens_per_s includes the first steps (kernel compilation and autotuning): a lower bound.
if "$FP8" bench train --help 2>/dev/null | grep -q -- --device &&
    ! timeout 60 "$FP8" bench train --device "$DEVICE" --model tiny --recipe recipes/fp32.ron \
        --baseline-recipe none --steps 1 --warmup-steps 0 --batch 1 --seq 8 2>&1 |
    grep -q "does not run on CUDA\|unknown --device"; then
    MODE=bench
else
    MODE=train
fi
say "throughput ($MODE mode) on $DEVICE"

RUNS=$(mktemp -d)
for r in "${RECIPES[@]}"; do
    name=$(basename "$r" .ron)
    if [ "$MODE" = bench ]; then
        run_one "$name" 75 "$FP8" bench train --device "$DEVICE" --model "$MODEL" --recipe "$r" \
            --baseline-recipe none --batch "$BATCH" --seq "$SEQ" \
            --steps "$STEPS" --warmup-steps "$WARMUP"
    else
        run_one "$name" 75 "$FP8" train --device "$DEVICE" --model "$MODEL" --recipe "$r" \
            --data synthetic --batch "$BATCH" --seq "$SEQ" --steps $((STEPS + WARMUP)) \
            --eval-every 1000000 --checkpoint-every 1000000 --run-dir "$RUNS/$name"
    fi
done
# Real bf16 compute (burn's bf16 on CUDA), next to the simulated bf16 recipe above.
run_one "fp32 recipe, --compute-dtype bf16" 75 "$FP8" train --device "$DEVICE" --compute-dtype bf16 \
    --model "$MODEL" --recipe recipes/fp32.ron --data synthetic --batch "$BATCH" --seq "$SEQ" \
    --steps $((STEPS + WARMUP)) --eval-every 1000000 --checkpoint-every 1000000 \
    --run-dir "$RUNS/compute-bf16"
rm -rf "$RUNS"

say "summary: $MODEL, batch $BATCH x seq $SEQ, $DEVICE ($MODE mode), $(($(date +%s) - START)) s"
printf '%-34s %12s %11s %11s\n' recipe tokens/s "MFU(bf16)" "MFU(tf32)"
for line in "${RESULTS[@]}"; do echo "$line"; done
echo "MFU = tokens/s x $FLOPS_PER_TOKEN FLOPs/token / peak; BF16 peak $PEAK_TFLOPS TFLOP/s, TF32 peak $TF32_TFLOPS TFLOP/s"
exit $FAILED
