#!/usr/bin/env bash
# Render reports/summary.html in headless Chromium and save a PNG, to check how it looks.
# Needs Debian's chromium (apt-get install chromium). Usage: scripts/screenshot_report.sh [HTML] [PNG]
set -euo pipefail
html=$(realpath "${1:-reports/summary.html}")
png=${2:-reports/summary.png}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# the networking flags keep Chromium from phoning home on an offline machine
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1400,900 \
  --screenshot="$(realpath -m "$png")" "file://$html" 2>/dev/null
echo "wrote $png"
