#!/usr/bin/env bash
# The approximation term of a DARE edit on a real-size model in bounded memory, and the streamed
# path's throughput against the in-memory one on a model that fits.
#
# Usage: bench/streamed_approx.sh BUILD_DIR [--work DIR] [--layers N] [--hidden H] [--heads A]
#                                 [--kv-heads K] [--inter I] [--vocab V] [--tokens T] [--keep]
#                                 [--skip-big] [--skip-zoo]
#
#   big   a synthetic Llama pair (default the Llama-3-8B shape: 32 layers, hidden 4096, GQA 32/8,
#         intermediate 14336, vocab 128256; BF16; bench/make_llama_pair.py) and
#         `approx --streamed --op dare:p=0.9 --steps 5` on one sequence of T (64) random tokens,
#         timed with peak RSS (/usr/bin/time -v), its forward and backward walks timed from
#         --progress; `approx --dry-run` first prints the plan. Then one loss pass (`eval
#         --streamed`) and one gradient pass written tensor by tensor (`grad --streamed`, f32:
#         4 bytes per parameter under the work dir, deleted after) on the same data.
#   zoo   the shipped zoo pair (models/zoo/retrain): approx with and without --streamed on the same data,
#         tokens/s of each (the same run) and their ratio.
#
# The pair needs about 2 bytes per parameter per side under the work dir (default
# /tmp/deltaedit-stream-bench); it is deleted afterwards unless --keep. Results are printed and
# written to bench/results/streamed.json.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
BUILD=$(realpath "$1"); shift
WORK=${DELTAEDIT_BENCH_DIR:-/tmp/deltaedit-stream-bench}
LAYERS=32; HIDDEN=4096; HEADS=32; KV=8; INTER=14336; VOCAB=128256; TOKENS=64; KEEP=0; BIG=1; ZOO=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --work) WORK=$2; shift ;;
    --layers) LAYERS=$2; shift ;;
    --hidden) HIDDEN=$2; shift ;;
    --heads) HEADS=$2; shift ;;
    --kv-heads) KV=$2; shift ;;
    --inter) INTER=$2; shift ;;
    --vocab) VOCAB=$2; shift ;;
    --tokens) TOKENS=$2; shift ;;
    --keep) KEEP=1 ;;
    --skip-big) BIG=0 ;;
    --skip-zoo) ZOO=0 ;;
    *) usage ;;
  esac
  shift
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DE=$BUILD/deltaedit-torch
PY=$("$ROOT/scripts/venv.sh" --python)  # numpy
[[ -x $DE ]] || { echo "no $DE (build the deltaedit-torch target)" >&2; exit 1; }
mkdir -p "$WORK" "$HERE/results"
RESULT=$HERE/results/streamed.json
echo "{}" > "$WORK/result.json"

# peak RSS (kB) and wall seconds of a command, its stdout to $WORK/out.txt, its stderr (the
# --progress lines) to $WORK/err.txt
measure() {
  /usr/bin/time -v -o "$WORK/time.txt" "$@" > "$WORK/out.txt" 2> "$WORK/err.txt"
  RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt" |
         awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
}
put() {  # put KEY JSON
  python3 -c "import json,sys; p='$WORK/result.json'; d=json.load(open(p)); d[sys.argv[1]]=json.loads(sys.argv[2]); json.dump(d,open(p,'w'),indent=2)" "$1" "$2"
}

if [[ $BIG == 1 ]]; then
  df -h "$WORK"
  PAIR=$WORK/pair
  "$PY" "$HERE/make_llama_pair.py" --out "$PAIR" --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" \
    --kv-heads "$KV" --inter "$INTER" --vocab "$VOCAB"
  python3 -c "
import json, random
random.seed(0)
print(json.dumps({'input_ids': [random.randrange($VOCAB) for _ in range($TOKENS)]}))" > "$WORK/data.jsonl"
  ARGS=(approx --base "$PAIR/base" --post "$PAIR/post" --op dare:p=0.9 --steps 5 --data "$WORK/data.jsonl" --threads "$(nproc)")
  "$DE" "${ARGS[@]}" --dry-run
  PLAN=$("$DE" "${ARGS[@]}" --dry-run --json)
  measure "$DE" "${ARGS[@]}" --streamed --json --progress
  cat "$WORK/out.txt" | python3 -c "import json,sys; r=json.load(sys.stdin); print('term', r['approximation_term'], 'true dL', r['true_delta_loss'])"
  # Seconds of the forward walk (all path points) and of the backward walk, from --progress.
  PHASES=$(python3 - "$WORK/err.txt" <<'PYEOF'
import json, re, sys
fwd = bwd = 0.0
for line in open(sys.argv[1]):
    m = re.match(r"approx: (forward|backward) unit (\d+)/(\d+) done, ([\d.]+) s", line)
    if m and m.group(1) == "forward": fwd = float(m.group(4))
    if m and m.group(1) == "backward": bwd = float(m.group(4))
print(json.dumps({"forward_walk_s": fwd, "backward_walk_s": bwd - fwd if bwd else None}))
PYEOF
)
  cp "$WORK/err.txt" "$WORK/approx-progress.txt"
  A_RSS=$RSS_KB; A_WALL=$WALL; A_OUT=$(cat "$WORK/out.txt")
  # One loss pass (eval --streamed) and one gradient pass written tensor by tensor (grad --streamed).
  DARGS=(--data "$WORK/data.jsonl" --threads "$(nproc)")
  measure "$DE" eval --model "$PAIR/post" "${DARGS[@]}" --streamed --json
  E_RSS=$RSS_KB; E_WALL=$WALL; E_OUT=$(cat "$WORK/out.txt")
  measure "$DE" grad --model "$PAIR/post" "${DARGS[@]}" --streamed --out "$WORK/grad.safetensors"
  G_RSS=$RSS_KB; G_WALL=$WALL; G_BYTES=$(stat -c %s "$WORK/grad.safetensors")
  rm -f "$WORK/grad.safetensors"
  RSS_KB=$A_RSS; WALL=$A_WALL
  put big_passes "{\"eval_streamed\": {\"wall_s\": $E_WALL, \"peak_rss_gb\": $(python3 -c "print($E_RSS/1e6)"), \"result\": $E_OUT},
                   \"grad_streamed\": {\"wall_s\": $G_WALL, \"peak_rss_gb\": $(python3 -c "print($G_RSS/1e6)"), \"bytes_written\": $G_BYTES},
                   \"approx_phases\": $PHASES}"
  echo "big: eval --streamed $E_WALL s, $(python3 -c "print(f'{$E_RSS/1e6:.2f}')") GB; grad --streamed $G_WALL s, $(python3 -c "print(f'{$G_RSS/1e6:.2f}')") GB"
  put big "{\"layers\": $LAYERS, \"hidden\": $HIDDEN, \"heads\": $HEADS, \"kv_heads\": $KV, \"intermediate\": $INTER,
            \"vocab\": $VOCAB, \"tokens\": $TOKENS, \"steps\": 5, \"op\": \"dare:p=0.9\",
            \"parameters\": $(python3 -c "import json; print(json.load(open('$PAIR/pair.json'))['parameters'])"),
            \"peak_rss_gb\": $(python3 -c "print($RSS_KB/1e6)"), \"wall_s\": $WALL, \"plan\": $PLAN,
            \"result\": $A_OUT}"
  echo "big: peak RSS $(python3 -c "print(f'{$RSS_KB/1e6:.2f}')") GB, $WALL s"
  [[ $KEEP == 1 ]] || rm -rf "$PAIR"
fi

if [[ $ZOO == 1 ]]; then
  Z=$ROOT/models/zoo/retrain
  ARGS=(approx --base "$Z/base" --post "$Z/post" --op dare:p=0.9 --steps 5 --data "$Z/data/eval.jsonl" --limit 64
        --batch-size 8 --threads "$(nproc)" --json)
  declare -A T R
  for rep in 1 2; do
    for mode in memory streamed; do
      extra=(); [[ $mode == streamed ]] && extra=(--streamed)
      measure "$DE" "${ARGS[@]}" "${extra[@]}"
      T[$mode]=$WALL; R[$mode]=$RSS_KB
      cp "$WORK/out.txt" "$WORK/zoo-$mode.json"
    done
  done
  # Tokens processed: every position of every batch, once per path point walked (7 for C = 5).
  POS=$(python3 -c "
import json
r = json.load(open('$WORK/zoo-memory.json'))
print(len(r['nodes']['t']))")
  put zoo "{\"records\": 64, \"memory_s\": ${T[memory]}, \"streamed_s\": ${T[streamed]},
            \"memory_rss_mb\": $(python3 -c "print(${R[memory]}/1e3)"), \"streamed_rss_mb\": $(python3 -c "print(${R[streamed]}/1e3)"),
            \"throughput_ratio\": $(python3 -c "print(${T[memory]}/${T[streamed]})"), \"nodes\": $POS,
            \"term_memory\": $(python3 -c "import json; print(json.load(open('$WORK/zoo-memory.json'))['approximation_term'])"),
            \"term_streamed\": $(python3 -c "import json; print(json.load(open('$WORK/zoo-streamed.json'))['approximation_term'])")}"
  echo "zoo: in memory ${T[memory]} s, streamed ${T[streamed]} s (streamed/in-memory tokens/s = $(python3 -c "print(f'{${T[memory]}/${T[streamed]}:.2f}')"))"
fi
cp "$WORK/result.json" "$RESULT"
cat "$RESULT"
