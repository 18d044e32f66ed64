#!/usr/bin/env bash
# The main job on the embedded default: the bundled Llama fixture pair.
set -euo pipefail
BIN=${1:-build/deltaedit}
DATA=tests/data/hf-reference/llama
OUT=${DEMO_OUT:-out/demo}
rm -rf "$OUT" && mkdir -p "$OUT"
echo "== inspect post (BF16, 4 shards)"
"$BIN" inspect "$DATA/post_bf16_sharded"
echo "== delta statistics: F32 base vs BF16 sharded post"
"$BIN" stats --base "$DATA/base" --post "$DATA/post_bf16_sharded"
echo "== BitDelta as a 1-bit delta pack, rebuilt with apply"
"$BIN" edit --base "$DATA/base" --post "$DATA/post_bf16_sharded" --op bitdelta --pack --out "$OUT/bitdelta.pack"
"$BIN" inspect "$OUT/bitdelta.pack"
"$BIN" apply --base "$DATA/base" --pack "$OUT/bitdelta.pack" --out "$OUT/bitdelta"
"$BIN" verify "$OUT/bitdelta"
