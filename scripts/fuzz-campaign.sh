#!/usr/bin/env bash
# A long libFuzzer campaign: runs every *_fuzz target of BUILD_DIR for SECONDS each (one after
# the other, one core each), growing a working corpus seeded from fuzz/corpus/<name>/, then
# minimises what it found into fuzz/corpus/<name>/ (libFuzzer -merge=1: only inputs that add
# coverage are kept) and appends one line per target to fuzz/campaigns.md with its execution
# count, the corpus sizes before and after, and the crash count (crash inputs are kept in
# BUILD_DIR/fuzz-artifacts/; any crash makes the script exit 1).
#
#   scripts/fuzz-campaign.sh BUILD_DIR SECONDS [TARGET ...]
#
# `make fuzz` builds BUILD_DIR (build-fuzz: clang, ASan + UBSan, -fsanitize=fuzzer). CI runs the
# short bounded run of scripts/run-fuzzers.sh; this script is for campaigns worth stating.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET ...]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
shift 2
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
  echo "SECONDS must be a positive integer" >&2
  exit 2
fi
src_dir=$(cd "$(dirname "$0")/.." && pwd)
if [[ $# -gt 0 ]]; then
  targets=()
  for t in "$@"; do targets+=("$build_dir/${t%_fuzz}_fuzz"); done
else
  mapfile -t targets < <(find "$build_dir" -maxdepth 1 -type f -name '*_fuzz' -perm -u+x | sort)
fi
[[ ${#targets[@]} -gt 0 ]] || { echo "no *_fuzz binaries in $build_dir (make fuzz)" >&2; exit 2; }

work=${FUZZ_WORK:-$build_dir/fuzz-campaign}
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$work" "$artifacts"
log_md="$src_dir/fuzz/campaigns.md"
[[ -f $log_md ]] || printf '%s\n\n%s\n%s\n' "# libFuzzer campaigns (scripts/fuzz-campaign.sh; ASan + UBSan)" \
  "| date (UTC) | target | seconds | executions | exec/s | corpus before | corpus after (minimised) | crashes |" \
  "|---|---|---:|---:|---:|---:|---:|---:|" > "$log_md"

failed=0
total=0
for bin in "${targets[@]}"; do
  [[ -x $bin ]] || { echo "$bin: not built" >&2; exit 2; }
  name=$(basename "$bin")
  cname=${name%_fuzz}
  seeds="$src_dir/fuzz/corpus/$cname"
  grown="$work/$cname"
  mkdir -p "$grown" "$seeds"
  before=$(find "$seeds" -type f | wc -l)
  log="$work/$name.log"
  echo "== $name: ${seconds}s, $before committed inputs"
  rc=0
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$name-" "$grown" "$seeds" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  execs=${execs:-0}
  crashes=0
  if [[ $rc -ne 0 ]] || grep -qE '^==[0-9]+==ERROR|^SUMMARY: (Address|UndefinedBehavior)Sanitizer|runtime error:|deadly signal' "$log"; then
    crashes=1
    failed=1
    cp "$log" "$artifacts/$name.log"
    echo "---- $name crashed; last lines of its log:" >&2
    tail -n 40 "$log" >&2
  fi
  # Minimise: the committed corpus becomes the coverage-preserving subset of seeds + grown inputs.
  merged="$work/$cname.merged"
  rm -rf "$merged"
  mkdir -p "$merged"
  "$bin" -merge=1 -timeout=10 -rss_limit_mb=2048 "$merged" "$seeds" "$grown" >"$work/$name.merge.log" 2>&1
  # libFuzzer names inputs by their SHA-1, so a file kept from the seeds keeps its name.
  rm -f "$seeds"/*
  cp "$merged"/* "$seeds"/ 2>/dev/null || true
  after=$(find "$seeds" -type f | wc -l)
  total=$((total + execs))
  rate=$((execs / seconds))
  echo "   $execs executions ($rate/s), corpus $before -> $after, crashes $crashes"
  echo "| $(date -u +%Y-%m-%dT%H:%MZ) | $cname | $seconds | $execs | $rate | $before | $after | $crashes |" >> "$log_md"
done
echo "== total executions: $total"
[[ $failed -eq 0 ]] || { echo "crash inputs and logs: $artifacts" >&2; exit 1; }
