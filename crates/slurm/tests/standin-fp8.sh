#!/bin/bash
# Stand-in for the two fp8 commands the sbatch scripts run, for tests/real_slurm.rs:
#
#   standin-fp8.sh sweep FILE --out DIR --shard i/n --jobs 1
#   standin-fp8.sh report DIR
#
# FILE lists grid points, one per line: `NAME STEPS STEP_SECONDS`. `sweep` takes the points whose
# line index is i modulo n and runs each like a resumable training run, with the claim protocol a
# sweep runner on a shared file system needs:
#
# - finished: DIR/done/NAME exists; skipped.
# - claimed: DIR/claims/NAME/G, created exclusively (bash's noclobber opens with O_EXCL), holding
#   `host pid job`. The live claim is the highest generation G. A holder that is gone (same host,
#   pid not alive) left a stale claim: the next runner takes the point over by creating G+1,
#   again exclusively, so of two runners judging G stale only one wins.
# - progress: DIR/progress/NAME holds the last finished step (written by rename, atomically); a
#   runner that takes over a point resumes from there, as `fp8 train --resume` does from its
#   checkpoint.
# - result: one line appended to DIR/results.jsonl, then DIR/done/NAME.
#
# `report` logs `job start_ns` to DIR/collect.log and writes DIR/report.txt: each finished point
# with the number of result lines it has (which must be 1).
set -euo pipefail

host=$(hostname)
me="$host $$ ${SLURM_JOB_ID:-local}"

# claim DIR NAME: succeed when this process now holds NAME.
claim() {
    local dir=$1/claims/$2 g=0 h p j
    mkdir -p "$dir"
    while :; do
        if (set -o noclobber; echo "$me" >"$dir/$g") 2>/dev/null; then
            return 0
        fi
        if ! read -r h p j <"$dir/$g" || [ -z "${p:-}" ]; then
            sleep 0.05 # created but not written yet
            continue
        fi
        if [ "$h" != "$host" ] || kill -0 "$p" 2>/dev/null; then
            return 1 # held by a live runner (or one on another host, which only it can judge)
        fi
        echo "stand-in: claim $g of $2 is stale (pid $p of job $j is gone); taking over" >&2
        g=$((g + 1))
    done
}

run_point() {
    local out=$1 name=$2 steps=$3 step_s=$4 start s
    if [ -e "$out/done/$name" ]; then
        echo "stand-in: $name already finished; skipped" >&2
        return
    fi
    if ! claim "$out" "$name"; then
        echo "stand-in: $name is being run by another runner; skipped" >&2
        return
    fi
    if [ -e "$out/done/$name" ]; then # finished between the check and the claim
        return
    fi
    start=$(cat "$out/progress/$name" 2>/dev/null || echo 0)
    for ((s = start; s < steps; s++)); do
        sleep "$step_s"
        echo $((s + 1)) >"$out/progress/$name.$$"
        mv -f "$out/progress/$name.$$" "$out/progress/$name"
    done
    printf '{"point":"%s","job":"%s","array_job":"%s","task":"%s","resumed_from":%d,"end_ns":%s}\n' \
        "$name" "${SLURM_JOB_ID:-local}" "${SLURM_ARRAY_JOB_ID:-}" "${SLURM_ARRAY_TASK_ID:-}" \
        "$start" "$(date +%s%N)" >>"$out/results.jsonl"
    (set -o noclobber; : >"$out/done/$name")
}

cmd=${1:?usage: standin-fp8.sh sweep FILE --out DIR --shard i/n --jobs 1 | report DIR}
shift
case $cmd in
sweep)
    file=$1
    shift
    out="" shard=""
    while [ $# -gt 0 ]; do
        case $1 in
        --out) out=$2 && shift 2 ;;
        --shard) shard=$2 && shift 2 ;;
        --jobs) shift 2 ;;
        *) echo "stand-in: unknown argument $1" >&2 && exit 2 ;;
        esac
    done
    i=${shard%/*} n=${shard#*/}
    mkdir -p "$out/claims" "$out/progress" "$out/done"
    k=0
    while read -r name steps step_s; do
        if [ $((k % n)) -eq "$i" ]; then
            run_point "$out" "$name" "$steps" "$step_s"
        fi
        k=$((k + 1))
    done <"$file"
    ;;
report)
    out=$1
    echo "${SLURM_JOB_ID:-local} $(date +%s%N)" >>"$out/collect.log"
    touch "$out/results.jsonl"
    sed -n 's/^{"point":"\([^"]*\)".*/\1/p' "$out/results.jsonl" | sort | uniq -c |
        awk '{print $2, $1}' >"$out/report.txt"
    ;;
*)
    echo "stand-in: unknown command $cmd" >&2
    exit 2
    ;;
esac
