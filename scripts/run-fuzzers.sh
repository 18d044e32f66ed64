#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD_DIR (files named *_fuzz) for SECONDS each, on a
# scratch copy of its seed corpus fuzz/corpus/<name without _fuzz>/, prints the executions per
# target and fails if any target crashed (crash inputs are kept in BUILD_DIR/fuzz-artifacts/).
#
#   scripts/run-fuzzers.sh BUILD_DIR SECONDS
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
  echo "SECONDS must be a positive integer" >&2
  exit 2
fi
src_dir=$(cd "$(dirname "$0")/.." && pwd)

mapfile -t targets < <(find "$build_dir" -maxdepth 1 -type f -name '*_fuzz' -perm -u+x | sort)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "no *_fuzz binaries in $build_dir (configure with -DDELTAEDIT_FUZZ=ON and clang)" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/deltaedit-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"

failed=0
summary=()
for bin in "${targets[@]}"; do
  name=$(basename "$bin")
  corpus_name=${name%_fuzz}
  seeds="$src_dir/fuzz/corpus/$corpus_name"
  corpus="$work/$corpus_name"
  mkdir -p "$corpus"
  if [[ -d $seeds ]]; then
    cp -R "$seeds/." "$corpus/"
  else
    echo "warning: no seed corpus $seeds; starting empty" >&2
  fi
  log="$work/$name.log"
  echo "== $name: ${seconds}s on $(find "$corpus" -type f | wc -l) seeds"
  rc=0
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
    "$corpus" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  execs=${execs:-unknown}
  if [[ $rc -ne 0 ]] || grep -qE '^==[0-9]+==ERROR|^SUMMARY: (Address|UndefinedBehavior)Sanitizer|runtime error:|deadly signal' "$log"; then
    failed=1
    summary+=("$name: FAILED (exit $rc) after $execs executions")
    echo "---- $name: last lines of its log" >&2
    tail -n 60 "$log" >&2
    cp "$log" "$artifacts/$name.log"
  else
    summary+=("$name: ok, $execs executions")
  fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [[ $failed -ne 0 ]]; then
  echo "crash inputs and logs: $artifacts" >&2
  exit 1
fi
