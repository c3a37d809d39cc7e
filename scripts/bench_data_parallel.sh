#!/usr/bin/env bash
# Scaling efficiency of data-parallel training on gpt2-mini: `fp8 train --nproc 2` (one thread
# per rank) against one one-thread process doing the same work per step (--grad-accum 2, so both
# runs compute the same global batches). Efficiency = tokens/s of the two ranks / (2 × tokens/s
# of the one process); 1.0 is perfect scaling.
#
#   scripts/bench_data_parallel.sh            # FP8=target/release/fp8 STEPS=60 BATCH=16 SEQ=128
#
# Both runs include process start-up and one final evaluation and checkpoint; on a machine
# shared with other work the figure moves with the load.
set -euo pipefail
FP8=${FP8:-target/release/fp8}
STEPS=${STEPS:-60}
BATCH=${BATCH:-16}
SEQ=${SEQ:-128}
RECIPE=${RECIPE:-recipes/fp32.ron}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(train --model gpt2-mini --recipe "$RECIPE" --steps "$STEPS" --batch "$BATCH" --seq "$SEQ"
        --eval-every 0 --eval-batches 1 --checkpoint-every 0 --histogram-every 0)
tokens_per_s() { sed -n 's/.*"tokens_per_s": *\([0-9.eE+-]*\).*/\1/p' "$1"; }

RAYON_NUM_THREADS=1 "$FP8" "${common[@]}" --grad-accum 2 --run-dir "$out/one" > "$out/one.json"
RAYON_NUM_THREADS=1 "$FP8" "${common[@]}" --nproc 2 --run-dir "$out/two" > "$out/two.json"
one=$(tokens_per_s "$out/one.json")
two=$(tokens_per_s "$out/two.json")
awk -v one="$one" -v two="$two" 'BEGIN {
  printf "one process, 1 thread:     %10.0f tokens/s\n", one
  printf "--nproc 2, 1 thread each:  %10.0f tokens/s\n", two
  printf "scaling efficiency:        %10.3f\n", two / (2 * one)
}'
