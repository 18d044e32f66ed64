#!/usr/bin/env bash
# deltaedit merge benchmark: task_arithmetic, ties, dare_ties and della on a synthetic BF16 base and three
# fine-tunes (bench/make_merge.py), each against the floor "read the N + 1 inputs, write one
# output, sync" measured in the same run, alternating floor and merge --reps times (medians).
#
# Usage: bench/merge_bench.sh BUILD_DIR [--size 2GB] [--hidden 4096] [--inter 14336] [--vocab 32000]
#                             [--reps 3] [--threads 2] [--work DIR] [--keep]
#                             [--methods "task_arithmetic ties dare_ties della"]
#
# Reports wall seconds, CPU seconds (user + sys) and peak RSS per run, the ratios wall/floor and
# CPU/floor CPU, into bench/results/merge-latest.md and merge-latest.json. On a shared machine
# the CPU ratio is the steadier figure (wall includes waiting for the cores).
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
BUILD=$(cd "$1" && pwd); shift
SIZE=2GB; HIDDEN=4096; INTER=14336; VOCAB=32000; REPS=3; THREADS=2; KEEP=0
METHODS="task_arithmetic ties dare_ties della"
WORK=${DELTAEDIT_BENCH_DIR:-/tmp/deltaedit-bench}/merge
while [[ $# -gt 0 ]]; do
  case $1 in
    --size) SIZE=$2; shift ;;
    --hidden) HIDDEN=$2; shift ;;
    --inter) INTER=$2; shift ;;
    --vocab) VOCAB=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --work) WORK=$2; shift ;;
    --keep) KEEP=1 ;;
    --methods) METHODS=$2; shift ;;
    *) usage ;;
  esac
  shift
done
HERE=$(cd "$(dirname "$0")" && pwd)
DE=$BUILD/deltaedit
PY=/usr/bin/python3
[[ -x $DE ]] || { echo "merge_bench.sh: $DE not found (make build)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "merge_bench.sh: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
$PY -c 'import numpy' 2>/dev/null || PY=$("$HERE/../scripts/venv.sh" --python)

mkdir -p "$WORK"
$PY "$HERE/make_merge.py" --out "$WORK/models" --models 3 --size "$SIZE" --hidden "$HIDDEN" --inter "$INTER" \
  --vocab "$VOCAB" --shard-size 1GB >&2
M=$WORK/models
OUT=$WORK/out
LOG=$WORK/logs
rm -rf "$LOG"; mkdir -p "$LOG"
rm -rf "$OUT" "$OUT.floor"

for method in $METHODS; do
  case $method in
    task_arithmetic) density="" ;;
    ties|dare_ties) density=", density: 0.5" ;;
    della) density=", density: 0.5, epsilon: 0.1" ;;
    *) echo "merge_bench.sh: no benchmark config for method '$method'" >&2; exit 2 ;;
  esac
  cat > "$WORK/$method.yaml" <<YAML
merge_method: $method
base_model: $M/base
models:
  - model: $M/ft1
    parameters: {weight: 0.5$density}
  - model: $M/ft2
    parameters: {weight: 0.3$density}
  - model: $M/ft3
    parameters: {weight: 0.2$density}
YAML
done

floor() {  # read every input, write one model-sized output, fsync it
  cat "$M"/base/*.safetensors "$M"/ft1/*.safetensors "$M"/ft2/*.safetensors > /dev/null
  cat "$M"/ft3/*.safetensors > "$OUT.floor"
  sync "$OUT.floor"
}
export -f floor
export M OUT

# measure KEY CMD...: one JSON line {"key", wall, rss_kb, user, sys}.
measure() {
  local key=$1; shift
  /usr/bin/time -f '{"wall": %e, "rss_kb": %M, "user": %U, "sys": %S}' -o "$LOG/$key.time" "$@" > "$LOG/$key.out" 2>&1
  echo "{\"key\": \"$key\", \"m\": $(tail -1 "$LOG/$key.time")}" >> "$LOG/all.jsonl"
}

cat "$M"/*/*.safetensors > /dev/null  # warm the page cache once
for r in $(seq 1 "$REPS"); do
  for method in $METHODS; do
    echo "merge_bench: $method, floor ($r/$REPS)" >&2
    measure "floor.$method.$r" bash -c floor; rm -f "$OUT.floor"
    measure "$method.$r" "$DE" merge "$WORK/$method.yaml" --out "$OUT" --threads "$THREADS" --seed 1
    rm -rf "$OUT"
  done
done

BYTES=$(cat "$M"/base/*.safetensors | wc -c)
mkdir -p "$HERE/results"
$PY - "$LOG/all.jsonl" "$HERE/results" "$BYTES" "$SIZE" "$HIDDEN" "$INTER" "$VOCAB" "$THREADS" "$REPS" "$METHODS" <<'PYEOF'
import json, statistics, sys, os, subprocess
log, outdir, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
size, hidden, inter, vocab, threads, reps, methods = sys.argv[4:11]
runs = [json.loads(l) for l in open(log)]
def med(keys, f):
    return statistics.median(f(r["m"]) for r in runs if r["key"].rsplit(".", 1)[0] in keys)
rows = []
for method in methods.split():
    fw = med({"floor." + method}, lambda m: m["wall"])
    fc = med({"floor." + method}, lambda m: m["user"] + m["sys"])
    w = med({method}, lambda m: m["wall"])
    c = med({method}, lambda m: m["user"] + m["sys"])
    rss = max(r["m"]["rss_kb"] for r in runs if r["key"].rsplit(".", 1)[0] == method) / 1024
    target = 1.3 if method in ("task_arithmetic",) else 2.0
    rows.append({"method": method, "floor_wall_s": fw, "floor_cpu_s": fc, "wall_s": w, "cpu_s": c,
                 "wall_ratio": w / fw if fw else None, "cpu_ratio": c / fc if fc else None,
                 "peak_rss_mb": rss, "target_ratio": target})
load = open("/proc/loadavg").read().split()[:3]
meta = {"model_bytes": nbytes, "models": "base + 3 fine-tunes", "size_arg": size, "hidden": int(hidden),
        "inter": int(inter), "vocab": int(vocab), "threads": int(threads), "reps": int(reps),
        "nproc": os.cpu_count(), "loadavg_end": load}
json.dump({"meta": meta, "rows": rows}, open(os.path.join(outdir, "merge-latest.json"), "w"), indent=2)
lines = [f"# merge benchmark: base + 3 fine-tunes of {nbytes / 1e9:.2f} GB BF16 each "
         f"(hidden {hidden}, inter {inter}, vocab {vocab}), --threads {threads}, medians of {reps}",
         "", f"{os.cpu_count()} cores, load average at the end {' '.join(load)}", "",
         "| method | floor wall s | merge wall s | wall ratio | floor CPU s | merge CPU s | CPU ratio | peak RSS MB |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['method']} | {r['floor_wall_s']:.2f} | {r['wall_s']:.2f} | {r['wall_ratio']:.2f}× | "
                 f"{r['floor_cpu_s']:.2f} | {r['cpu_s']:.2f} | {r['cpu_ratio']:.2f}× | {r['peak_rss_mb']:.0f} |")
open(os.path.join(outdir, "merge-latest.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
[[ $KEEP == 1 ]] || rm -rf "$M"
