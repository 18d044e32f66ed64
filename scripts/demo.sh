#!/usr/bin/env bash
# The main job on the embedded default: the paper's experiments on the shipped in-house family
# (models/zoo: the light-SFT regime, the retrain pair, EXPO with the DPO loss, merges of the two
# experts), then a quick tour of the checkpoint tools on the bundled Llama fixture pair.
set -euo pipefail
BIN=${1:-build/deltaedit}
OUT=${DEMO_OUT:-out/demo}
start=$(date +%s)
echo "== deltaedit demo: F1, T1, F3, F4, F5, F6 in two regimes, EXPO with DPO, M1 merges (models/zoo) -> $OUT"
"$BIN" demo --out "$OUT"
DATA=tests/data/hf-reference/llama
TOUR="$OUT/tour"
rm -rf "$TOUR" && mkdir -p "$TOUR"
echo "== BitDelta as a 1-bit delta pack of the BF16 sharded fixture, rebuilt bit for bit with apply"
"$BIN" edit --base "$DATA/base" --post "$DATA/post_bf16_sharded" --op bitdelta --pack --out "$TOUR/bitdelta.pack"
"$BIN" apply --base "$DATA/base" --pack "$TOUR/bitdelta.pack" --out "$TOUR/bitdelta"
"$BIN" verify "$TOUR/bitdelta"
echo "== done in $(( $(date +%s) - start )) s; open $OUT/report/index.html"
