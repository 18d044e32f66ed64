#!/usr/bin/env bash
# deltaedit benchmarks, each against a baseline measured in the same run, reported as ratios.
#
# Usage: bench/run.sh BUILD_DIR [--quick] [--reps N] [--work DIR] [--keep] [--skip-lowrank-svd] [--skip-model]
#                     [--skip-stats] [--skip-scaling] [--skip-cold] [--only-edit] [--only-scaling]
#
#   philox     keyed Philox words/s and Bernoulli draws/s per core (BUILD_DIR/philox_bench)
#   stats      deltaedit stats on a synthetic BF16 pair vs `cat base/* post/* > /dev/null`
#   edit       deltaedit edit, every streaming op (dare, drop, signflip, scale, bitdelta, resample,
#              biased, dare rescale=l1, magnitude) and lowrank, on the 0.47 GB pair (four
#              4096×14336 matrices) and on the ≥ 2 GB Llama-shaped pair, each against the floor
#              "read both inputs, write one output, sync" (alternating, medians) and a PyTorch
#              eager reference (bench/eager_ref.py)
#   cold       dare, scale, bitdelta, dare rescale=l1 and magnitude with the page cache dropped before
#              each run (floor too), on both pairs, where /proc/sys/vm/drop_caches is writable (root)
#   scaling    dare and magnitude on 0.5, 1, 2 and 4 GB pairs: time and peak RSS
#   lowrank    randomized vs exact SVD on a 4096×4096 matrix (BUILD_DIR/lowrank_bench)
#   model      forward+backward tokens/s: BUILD_DIR/model_bench vs bench/model_eager.py
#
# Pairs are written by bench/make_pair.py under the work dir (default /tmp/deltaedit-bench, or
# $DELTAEDIT_BENCH_DIR) and reused while their parameters do not change; edit outputs are deleted
# after each measurement, and the pairs too unless --keep. --quick: ~150 MB pairs, one run each.
# Runs alternate with their baselines --reps times (default 3) and the report takes medians.
# Results: bench/results/latest.md and latest.json (printed at the end); ops above their target
# are flagged there.
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
BUILD=$1; shift
QUICK=0; ONLY_SCALING=0; KEEP=0; DO_SVD=1; DO_MODEL=1; DO_STATS=1; DO_SCALING=1; DO_COLD=1; REPS=3
WORK=${DELTAEDIT_BENCH_DIR:-/tmp/deltaedit-bench}
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; REPS=1 ;;
    --reps) REPS=$2; shift ;;
    --keep) KEEP=1 ;;
    --work) WORK=$2; shift ;;
    --skip-lowrank-svd) DO_SVD=0 ;;
    --skip-model) DO_MODEL=0 ;;
    --skip-stats) DO_STATS=0 ;;
    --skip-scaling) DO_SCALING=0 ;;
    --skip-cold) DO_COLD=0 ;;
    --only-edit) DO_STATS=0; DO_SCALING=0; DO_SVD=0; DO_MODEL=0; DO_COLD=0 ;;
    --only-scaling) ONLY_SCALING=1; DO_STATS=0; DO_SVD=0; DO_MODEL=0; DO_COLD=0 ;;
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

# Pairs: "small" (the edit table's 0.47 GB pair), "big" (the ≥ 2 GB pair, also used by stats) and
# the scaling pairs. EAGER_SUBSET_* name the tensors eager runs on (scaled per parameter to the
# whole pair; eager costs 20–40 ns per parameter).
if [[ $QUICK == 1 ]]; then
  SMALL_ARGS=(--matrices 2 --hidden 1024 --inter 3584 --shard-size 64MB)
  BIG_ARGS=(--size 150MB --hidden 1024 --inter 3584 --vocab 8000 --shard-size 64MB)
  EAGER_SUBSET_SMALL=''
  EAGER_SUBSET_BIG=''
  LOWRANK_ONLY='^model\.layers\.0\.(self_attn\.q_proj|mlp\.down_proj)\.'
  # label|make_pair.py arguments of each scaling pair
  SCALING=("50MB|--size 50MB --hidden 1024 --inter 3584 --vocab 8000 --shard-size 64MB"
           "100MB|--size 100MB --hidden 1024 --inter 3584 --vocab 8000 --shard-size 64MB")
  SVD_N=1024
  MODEL_ITERS=2
else
  SMALL_ARGS=(--matrices 4)
  BIG_ARGS=(--size 2GB)
  EAGER_SUBSET_SMALL='^model\.layers\.0\.'
  # layer 0's attention and down projections: 4 × 4096² + 4096×14336 = 125.8M parameters
  EAGER_SUBSET_BIG='^model\.layers\.0\.(self_attn\.|mlp\.down_proj\.)'
  LOWRANK_ONLY='^model\.layers\.0\.(self_attn\.q_proj|mlp\.down_proj)\.'
  # The scaling pairs are 4, 8, 17 and 34 matrices of 4096×14336 (0.47, 0.94, 2.0 and 4.0 GB a
  # side): one tensor shape, so time and memory can only change with the size. (A Llama layout
  # cannot go below ~1 GB a side with a 32000-token vocabulary.)
  SCALING=("0.5GB|--matrices 4" "1GB|--matrices 8" "2GB|--matrices 17" "4GB|--matrices 34")
  SVD_N=4096
  MODEL_ITERS=5
fi
# label|spec for every op of the edit table (lowrank edits two matrices and copies the rest).
OPS=("dare|dare:p=0.9" "drop|drop:p=0.9" "signflip|signflip:q=0.1" "scale|scale:alpha=0.5" "bitdelta|bitdelta"
     "bitdelta_row_rms|bitdelta:granularity=row,stat=rms" "resample|resample" "biased|biased"
     "dare_l1|dare:p=0.9,rescale=l1" "magnitude|magnitude:p=0.9" "lowrank|lowrank:ratio=0.1,method=randomized")

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
floor_tight() {  # the floor: read both sides, write one side (the size of an edit's output), fsync it
  cat "$PAIR"/base/*.safetensors > /dev/null
  cat "$PAIR"/post/*.safetensors > "$OUT.floor"
  sync "$OUT.floor"
}
read_both() { cat "$PAIR"/base/*.safetensors "$PAIR"/post/*.safetensors > /dev/null; }
export OUT
export -f floor_tight read_both  # run as `bash -c NAME` under /usr/bin/time (PAIR exported per pair)

# make_pair NAME ARGS...: writes (or reuses) $WORK/NAME, records it as pair.NAME, sets PAIR.
make_pair() {
  local name=$1; shift
  PAIR=$WORK/$name; export PAIR
  note "pair $name: make_pair.py $*"
  $PY "$HERE/make_pair.py" --out "$PAIR" "$@" >&2
  local bytes params
  bytes=$(cat "$PAIR"/base/*.safetensors "$PAIR"/post/*.safetensors | wc -c)
  params=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['metadata']['total_size'] // 2)" \
    "$PAIR/post/model.safetensors.index.json")
  record "pair.$name" "\"bytes\": $bytes, \"params\": $params, \"dir\": \"$PAIR\", \"args\": \"$*\""
}
drop_pair() { [[ $KEEP == 1 ]] || { note "removing $PAIR (--keep keeps it)"; rm -rf "$PAIR"; }; }
de_edit() {  # de_edit SPEC: the deltaedit edit command line on $PAIR into $OUT
  EDIT=("$DE" edit --base "$PAIR/base" --post "$PAIR/post" --op "$1" --threads $THREADS --seed 1 --out "$OUT")
}

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

need_gb=$([[ $QUICK == 1 ]] && echo 2 || echo 20)
avail_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
if (( avail_gb < need_gb )); then
  echo "run.sh: $WORK has ${avail_gb} GB free, the benchmark needs ~${need_gb} GB" >&2; exit 1
fi

# --- philox ------------------------------------------------------------------------------------
if [[ $ONLY_SCALING == 1 ]]; then
  :
elif [[ -x $BUILD/philox_bench ]]; then
  note "philox_bench (one core)"
  measure philox "$BUILD/philox_bench" --benchmark_min_time=0.3 --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_format=json
else
  note "philox_bench not built in $BUILD (needs libbenchmark-dev): skipped"
fi

# --- edit --------------------------------------------------------------------------------------
# edit_table NAME EAGER_SUBSET: every op on $PAIR, alternating floor and deltaedit REPS times,
# then eager once.
edit_table() {
  local pname=$1 subset=$2 entry label spec de_spec eager_args
  for entry in "${OPS[@]}"; do
    label=${entry%%|*}; spec=${entry#*|}
    de_spec=$spec; eager_args=(--op "$spec")
    if [[ $label == lowrank ]]; then
      de_spec="$spec,include=$LOWRANK_ONLY"
      eager_args+=(--include "$LOWRANK_ONLY")
    elif [[ -n $subset ]]; then
      eager_args+=(--subset "$subset")
    fi
    [[ $label == lowrank && $pname == small ]] && continue  # the small pair has no attention matrices
    cleanup_out
    de_edit "$de_spec"
    "${EDIT[@]}" > /dev/null 2>&1; rm -rf "$OUT"  # warm-up (page cache, first-touch)
    for r in $(seq 1 $REPS); do
      note "edit $pname $label: floor, deltaedit ($r/$REPS)"
      measure "edit.$pname.$label.floor.$r" bash -c floor_tight; rm -f "$OUT.floor"
      measure "edit.$pname.$label.deltaedit.$r" "${EDIT[@]}"
      rm -rf "$OUT"
    done
    note "edit $pname $label: eager"
    measure "edit.$pname.$label.eager" "$PY" "$HERE/eager_ref.py" --base "$PAIR/base" --post "$PAIR/post" \
      "${eager_args[@]}" --threads $THREADS --out "$OUT.eager"
    rm -rf "$OUT.eager"
  done
}

# cold_table NAME: the cold-cache ops on $PAIR, the page cache dropped before every run, alternating
# floor and deltaedit twice.
COLD_OPS=("dare|dare:p=0.9" "scale|scale:alpha=0.5" "bitdelta|bitdelta" "dare_l1|dare:p=0.9,rescale=l1"
          "magnitude|magnitude:p=0.9")
drop_cache() { sync; echo 3 > /proc/sys/vm/drop_caches; }
cold_table() {
  local pname=$1 entry label spec
  [[ $DO_COLD == 1 ]] || return 0
  if ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    note "cold cache: /proc/sys/vm/drop_caches is not writable here (needs root): skipped"
    return 0
  fi
  for entry in "${COLD_OPS[@]}"; do
    label=${entry%%|*}; spec=${entry#*|}
    de_edit "$spec"
    for r in 1 2; do
      note "cold $pname $label: floor, deltaedit ($r/2)"
      drop_cache; measure "cold.$pname.$label.floor.$r" bash -c floor_tight; rm -f "$OUT.floor"
      drop_cache; measure "cold.$pname.$label.deltaedit.$r" "${EDIT[@]}"; rm -rf "$OUT"
    done
  done
  read_both; read_both  # hot again for what follows
}

BIG_PAIR=
if [[ $ONLY_SCALING == 0 ]]; then
make_pair small "${SMALL_ARGS[@]}"
read_both; read_both
edit_table small "$EAGER_SUBSET_SMALL"
cold_table small
drop_pair

make_pair big "${BIG_ARGS[@]}"
read_both; read_both
# --- stats (on the big pair) ---------------------------------------------------------------------
if [[ $DO_STATS == 1 ]]; then
  note "stats: warm-up"
  $DE stats --base "$PAIR/base" --post "$PAIR/post" --threads $THREADS --json > /dev/null
  for r in $(seq 1 $REPS); do
    note "stats: measure (cat, then deltaedit stats) ($r/$REPS)"
    measure "stats.cat.$r" bash -c read_both
    measure "stats.deltaedit.$r" "$DE" stats --base "$PAIR/base" --post "$PAIR/post" --threads $THREADS --json
  done
fi
edit_table big "$EAGER_SUBSET_BIG"
cold_table big
BIG_PAIR=$PAIR
fi

# --- scaling -------------------------------------------------------------------------------------
if [[ $DO_SCALING == 1 ]]; then
  for sentry in "${SCALING[@]}"; do
    size=${sentry%%|*}
    read -r -a sargs <<< "${sentry#*|}"
    make_pair "scale_$size" "${sargs[@]}"
    read_both
    for entry in "dare|dare:p=0.9" "magnitude|magnitude:p=0.9"; do
      label=${entry%%|*}; spec=${entry#*|}
      for r in $(seq 1 2); do
        note "scaling $size $label ($r/2)"
        measure "scaling.$size.floor.$label.$r" bash -c floor_tight; rm -f "$OUT.floor"
        de_edit "$spec"
        measure "scaling.$size.$label.$r" "${EDIT[@]}"; rm -rf "$OUT"
      done
    done
    drop_pair
  done
fi
PAIR=$BIG_PAIR; export PAIR

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
[[ -z $BIG_PAIR ]] || drop_pair

# --only-scaling reports into scaling.md/json and leaves latest.md (the whole run's) as it is.
RESULT=latest
[[ $ONLY_SCALING == 1 ]] && RESULT=scaling
mkdir -p "$HERE/results"
$PY "$HERE/report.py" --records "$REC" --logs "$LOG" --json "$HERE/results/$RESULT.json" \
  --md "$HERE/results/$RESULT.md"
cat "$HERE/results/$RESULT.md"
