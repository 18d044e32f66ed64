#!/usr/bin/env bash
# Renders a report's index.html with headless Chromium: a PNG screenshot and
# the DOM as the browser parsed it, for checking a report without a desktop.
#
#   scripts/render-report.sh REPORT_DIR/index.html [OUT_PREFIX] [WIDTHxHEIGHT]
#
# Writes OUT_PREFIX.png and OUT_PREFIX.dom.html (default prefix: the page's
# path without .html). Needs the `chromium` package.
set -euo pipefail

page=${1:?usage: $0 index.html [out-prefix] [WIDTHxHEIGHT]}
prefix=${2:-${page%.html}}
size=${3:-1200x2000}
chromium=${CHROMIUM:-/usr/bin/chromium}

if [[ ! -x $chromium ]]; then
  echo "error: $chromium not found; install the 'chromium' package (apt-get install -y chromium)" >&2
  exit 2
fi
[[ -f $page ]] || { echo "error: no such file: $page" >&2; exit 2; }
[[ $size =~ ^[0-9]+x[0-9]+$ ]] || { echo "error: size must be WIDTHxHEIGHT, got $size" >&2; exit 2; }

url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"
profile=$(mktemp -d "${TMPDIR:-/tmp}/deltaedit-chromium-XXXXXX")
trap 'rm -rf "$profile"' EXIT

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --disable-dev-shm-usage --hide-scrollbars
       "--user-data-dir=$profile")

timeout 60 "$chromium" "${flags[@]}" --dump-dom "$url" > "$prefix.dom.html" 2> "$profile/dump.log" || {
  cat "$profile/dump.log" >&2; exit 1; }
timeout 60 "$chromium" "${flags[@]}" "--screenshot=$prefix.png" "--window-size=${size/x/,}" "$url" \
  > "$profile/shot.log" 2>&1 || { cat "$profile/shot.log" >&2; exit 1; }

charts=$(grep -o '<svg[^>]*class="chart"' "$prefix.dom.html" | wc -l || true)
echo "$prefix.png ($(stat -c %s "$prefix.png") bytes), $prefix.dom.html ($charts charts)"
