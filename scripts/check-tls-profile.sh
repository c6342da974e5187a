#!/usr/bin/env bash
# Scans a running appliance's HTTPS port with sslyze (PyPI) against Mozilla's
# "intermediate" TLS configuration and fails on any deviation: protocol versions, cipher
# suites, curves, certificate (lifetime, key, signature, the chain to the appliance's CA).
#
# Usage: scripts/check-tls-profile.sh path/to/sightline
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$1"

SSLYZE_VERSION=6.3.1
venv="${CARGO_TARGET_DIR:-target}/sslyze-venv"
if ! "$venv/bin/python" -m sslyze --help >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "sslyze==$SSLYZE_VERSION"
fi

work=$(mktemp -d)
appliance=""
cleanup() {
  if [ -n "$appliance" ]; then kill "$appliance" 2>/dev/null || true; wait "$appliance" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$binary" serve --data-dir "$work/data" --listen 127.0.0.1:0 --media-listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 > "$work/out" 2> "$work/err" &
appliance=$!
address=""
for _ in $(seq 1 100); do
  address=$(grep -o 'https://127.0.0.1:[0-9]*' "$work/out" | head -1 | sed 's|https://||') || true
  [ -n "$address" ] && break
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "the appliance did not start:" >&2
  cat "$work/out" "$work/err" >&2
  exit 1
fi

# The appliance's own CA is the trust anchor a browser of the company would have installed.
# (-W: sslyze warns about a root in its own bundled trust stores, not about ours.)
"$venv/bin/python" -W ignore -m sslyze --mozilla_config=intermediate \
  --certinfo_ca_file "$work/data/tls/ca.pem" "$address" > "$work/scan" || {
  cat "$work/scan"
  echo "the HTTPS port deviates from Mozilla's intermediate profile (above)" >&2
  exit 1
}
grep -A3 "COMPLIANCE AGAINST" "$work/scan" | tail -1
grep "Compliant" "$work/scan"
