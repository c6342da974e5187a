#!/usr/bin/env bash
# Checks the shipped systemd units: `systemd-analyze verify` must print nothing, and the
# server unit's `systemd-analyze security --offline=true` exposure must be at most 2.0.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:?usage: check-units.sh PATH_TO_SIGHTLINE_BINARY}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# verify needs the ExecStart binaries to exist: point the copies at the built one.
for unit in systemd/*.service; do
  sed "s|/usr/bin/sightline|$(realpath "$binary")|" "$unit" > "$work/$(basename "$unit")"
done
output="$(cd "$work" && systemd-analyze verify --man=no ./*.service 2>&1 || true)"
if [ -n "$output" ]; then
  echo "systemd-analyze verify complained:"
  echo "$output"
  exit 1
fi
echo "systemd-analyze verify: no findings"

status=0
for unit in systemd/*.service; do
  exposure="$(systemd-analyze security --offline=true "$unit" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  echo "exposure of $(basename "$unit"): $exposure"
  if [ "$(basename "$unit")" = "sightline.service" ] \
     && awk -v e="$exposure" 'BEGIN { exit !(e == "" || e > 2.0) }'; then
    echo "sightline.service exposure $exposure is above 2.0"
    status=1
  fi
done
exit "$status"
