#!/usr/bin/env bash
# deltaedit benchmarks, each against a baseline measured in the same run, reported as ratios.
#
# Usage: bench/run.sh BUILD_DIR [--quick] [--reps N] [--work DIR] [--keep] [--skip-lowrank-svd] [--skip-model]
#
#   stats      deltaedit stats on a synthetic BF16 pair vs `cat base/* post/* > /dev/null`
#   edit       deltaedit edit (dare, bitdelta, scale, magnitude, lowrank) vs a PyTorch eager
#              reference (bench/eager_ref.py) and vs the raw copy floor `cat base/* post/* > out`
#   lowrank    randomized vs exact SVD on a 4096×4096 matrix (BUILD_DIR/lowrank_bench)
#   model      forward+backward tokens/s: BUILD_DIR/model_bench vs bench/model_eager.py
#
# The pair (default ≥ 2 GB per side; --quick: ~150 MB per side with smaller layers) is written by
# bench/make_pair.py under the work dir (default /tmp/deltaedit-bench, or $DELTAEDIT_BENCH_DIR) and
# reused while its parameters do not change; edit outputs are deleted after each measurement, and
# the pair too unless --keep. stats and edit runs alternate with their baselines --reps times
# (default 3; --quick 1) and the report takes medians. Results: bench/results/latest.md and
# latest.json (printed at the end).
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
BUILD=$1; shift
QUICK=0; KEEP=0; DO_SVD=1; DO_MODEL=1; REPS=3
WORK=${DELTAEDIT_BENCH_DIR:-/tmp/deltaedit-bench}
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; REPS=1 ;;
    --reps) REPS=$2; shift ;;
    --keep) KEEP=1 ;;
    --work) WORK=$2; shift ;;
    --skip-lowrank-svd) DO_SVD=0 ;;
    --skip-model) DO_MODEL=0 ;;
    *) usage ;;
  esac
  shift
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
DE=$BUILD/deltaedit
PY=/usr/bin/python3
THREADS=2
[[ -x $DE ]] || { echo "run.sh: $DE not found (make build)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "run.sh: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
$PY -c 'import numpy, torch' 2>/dev/null || { echo "run.sh: $PY needs numpy and torch" >&2; exit 1; }

if [[ $QUICK == 1 ]]; then
  PAIR=$WORK/quick
  PAIR_ARGS=(--size 150MB --hidden 1024 --inter 3584 --vocab 8000 --shard-size 64MB)
  # Eager runs on the whole quick pair; lowrank edits one attention and one MLP matrix.
  EAGER_SUBSET=''
  LOWRANK_ONLY='^model\.layers\.0\.(self_attn\.q_proj|mlp\.down_proj)\.'
  SVD_N=1024
  MODEL_ITERS=2
else
  PAIR=$WORK/full
  PAIR_ARGS=(--size 2GB)
  # Eager DARE costs ~100+ ns per parameter: eager runs on layer 0's attention and down
  # projections (4 × 4096² + 4096×14336 = 125.8M parameters, both matrix shapes) and is scaled
  # per parameter to the whole pair.
  EAGER_SUBSET='^model\.layers\.0\.(self_attn\.|mlp\.down_proj\.)'
  LOWRANK_ONLY='^model\.layers\.0\.(self_attn\.q_proj|mlp\.down_proj)\.'
  SVD_N=4096
  MODEL_ITERS=5
fi
OPS=("dare:p=0.9" "bitdelta" "scale:alpha=0.5" "magnitude:p=0.9" "lowrank:ratio=0.1,method=randomized")

mkdir -p "$WORK"
LOG=$WORK/logs; rm -rf "$LOG"; mkdir -p "$LOG"
REC=$WORK/records.jsonl; : > "$REC"
OUT=$WORK/out
cleanup_out() { rm -rf "$OUT" "$OUT.floor" "$OUT.eager"; }
trap cleanup_out EXIT

note() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# record KEY JSON-OBJECT-BODY
record() { echo "{\"key\": \"$1\", $2}" >> "$REC"; }

# measure KEY CMD...: wall seconds, peak RSS, CPU times of CMD (its stdout kept in logs/KEY.out).
# The page cache is flushed of dirty pages first so one run's write-back does not land in the next.
measure() {
  local key=$1; shift
  sync
  local l0; l0=$(load1)
  /usr/bin/time -f '"wall": %e, "rss_kb": %M, "user": %U, "sys": %S' -o "$LOG/$key.time" "$@" \
    > "$LOG/$key.out" 2> "$LOG/$key.err" || { echo "run.sh: '$*' failed:" >&2; tail -5 "$LOG/$key.err" >&2; exit 1; }
  record "$key" "$(tail -1 "$LOG/$key.time"), \"load1\": $l0"
}
floor_copy() {  # the raw floor: read both sides, write them to one file, fsync it
  cat "$PAIR"/base/*.safetensors "$PAIR"/post/*.safetensors > "$OUT.floor"
  sync "$OUT.floor"
}
floor_tight() {  # read both sides, write one side (the size of an edit's output), fsync it
  cat "$PAIR"/base/*.safetensors > /dev/null
  cat "$PAIR"/post/*.safetensors > "$OUT.floor"
  sync "$OUT.floor"
}
read_both() { cat "$PAIR"/base/*.safetensors "$PAIR"/post/*.safetensors > /dev/null; }
export PAIR OUT
export -f floor_copy floor_tight read_both  # run as `bash -c NAME` under /usr/bin/time

# --- machine -----------------------------------------------------------------------------------
note "work dir $WORK, build $BUILD"
START=$(date +%s)
{
  echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
  echo ", \"host\": \"$(hostname)\""
  echo ", \"cpu\": \"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\""
  echo ", \"cores\": $(nproc)"
  echo ", \"mem_gb\": $(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
  echo ", \"kernel\": \"$(uname -r)\""
  echo ", \"commit\": \"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\""
  echo ", \"dirty\": $( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] && echo true || echo false)"
  echo ", \"uptime_start\": \"$(uptime | sed 's/^ *//')\""
  echo ", \"quick\": $( [[ $QUICK == 1 ]] && echo true || echo false)"
  echo ", \"threads\": $THREADS"
} > "$LOG/machine.body"
record machine "$(tr -d '\n' < "$LOG/machine.body")"

# --- pair --------------------------------------------------------------------------------------
need_gb=$([[ $QUICK == 1 ]] && echo 2 || echo 13)
avail_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
if (( avail_gb < need_gb )); then
  echo "run.sh: $WORK has ${avail_gb} GB free, the benchmark needs ~${need_gb} GB" >&2; exit 1
fi
note "pair: make_pair.py ${PAIR_ARGS[*]}"
$PY "$HERE/make_pair.py" --out "$PAIR" "${PAIR_ARGS[@]}" >&2
BYTES=$(cat "$PAIR"/base/*.safetensors "$PAIR"/post/*.safetensors | wc -c)
PARAMS=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['metadata']['total_size'] // 2)" \
  "$PAIR/post/model.safetensors.index.json")
record pair "\"bytes\": $BYTES, \"params\": $PARAMS, \"dir\": \"$PAIR\", \"args\": \"${PAIR_ARGS[*]}\""

# --- stats -------------------------------------------------------------------------------------
note "stats: warm-up"
read_both; read_both
$DE stats --base "$PAIR/base" --post "$PAIR/post" --threads $THREADS --json > /dev/null
for r in $(seq 1 $REPS); do
  note "stats: measure (cat, then deltaedit stats) ($r/$REPS)"
  measure "stats.cat.$r" bash -c read_both
  measure "stats.deltaedit.$r" "$DE" stats --base "$PAIR/base" --post "$PAIR/post" --threads $THREADS --json
done

# --- edit --------------------------------------------------------------------------------------
for spec in "${OPS[@]}"; do
  name=${spec%%:*}
  de_spec=$spec; eager_args=(--op "$spec")
  if [[ $name == lowrank ]]; then
    # Both sides edit the same two matrices and copy the rest of the pair.
    de_spec="$spec,include=$LOWRANK_ONLY"
    eager_args+=(--include "$LOWRANK_ONLY")
  elif [[ -n $EAGER_SUBSET ]]; then
    eager_args+=(--subset "$EAGER_SUBSET")
  fi
  cleanup_out
  # The floors (page-cache write-back and fsync of GBs) vary run to run by up to 2x here: floors
  # and deltaedit alternate REPS times and the report takes medians.
  for r in $(seq 1 $REPS); do
    note "edit $name: floor, tight floor, deltaedit ($r/$REPS)"
    measure "edit.$name.floor.$r" bash -c floor_copy; rm -f "$OUT.floor"
    measure "edit.$name.floor_tight.$r" bash -c floor_tight; rm -f "$OUT.floor"
    measure "edit.$name.deltaedit.$r" "$DE" edit --base "$PAIR/base" --post "$PAIR/post" --op "$de_spec" \
      --threads $THREADS --seed 1 --out "$OUT"
    rm -rf "$OUT"
  done
  note "edit $name: eager"
  measure "edit.$name.eager" "$PY" "$HERE/eager_ref.py" --base "$PAIR/base" --post "$PAIR/post" \
    "${eager_args[@]}" --threads $THREADS --out "$OUT.eager"
  rm -rf "$OUT.eager"
done

# --- lowrank SVD -------------------------------------------------------------------------------
if [[ $DO_SVD == 1 ]]; then
  if [[ -x $BUILD/lowrank_bench ]]; then
    note "lowrank_bench ${SVD_N}×${SVD_N}"
    measure svd "$BUILD/lowrank_bench" --rows $SVD_N --cols $SVD_N --variant power_iters=2 --variant power_iters=3,oversample=20 --json
  else
    note "lowrank_bench not built in $BUILD: skipped"
  fi
fi

# --- model -------------------------------------------------------------------------------------
if [[ $DO_MODEL == 1 ]]; then
  if [[ -x $BUILD/model_bench ]]; then
    note "model: model_bench, model_eager.py"
    margs=(--threads $THREADS --batch 4 --seq 128 --iters $MODEL_ITERS)
    for r in $(seq 1 $REPS); do  # alternating, medians in the report (2 threads on 2 shared cores vary)
      measure "model.cpp.$r" "$BUILD/model_bench" "${margs[@]}"
      measure "model.eager.$r" "$PY" "$HERE/model_eager.py" "${margs[@]}" --json
    done
  else
    note "model_bench not built in $BUILD: skipped"
  fi
fi

record end "\"uptime_end\": \"$(uptime | sed 's/^ *//')\", \"total_s\": $(( $(date +%s) - START ))"
[[ $KEEP == 1 ]] || { note "removing $PAIR (--keep keeps it)"; rm -rf "$PAIR"; }

mkdir -p "$HERE/results"
$PY "$HERE/report.py" --records "$REC" --logs "$LOG" --json "$HERE/results/latest.json" \
  --md "$HERE/results/latest.md"
cat "$HERE/results/latest.md"
