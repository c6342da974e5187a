#!/usr/bin/env bash
# Part of the release procedure (too slow for every CI run: two clean release builds):
# builds the Debian package twice from one commit, in two fresh checkouts at different
# paths with a target directory each, and requires the two packages to be identical.
# Usage: scripts/check-reproducible.sh [commit]
set -euo pipefail
cd "$(dirname "$0")/.."
# Resolved once: both checkouts must build the same commit, whatever happens meanwhile.
commit="$(git rev-parse --verify "${1:-HEAD}^{commit}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for n in 1 2; do
  git clone -q . "$work/checkout-$n"
  git -C "$work/checkout-$n" checkout -q "$commit"
  started=$(date +%s)
  (cd "$work/checkout-$n" \
    && CARGO_TARGET_DIR="$work/target-$n" SIGHTLINE_REPRODUCIBLE=1 \
      packaging/build-deb.sh "" "$work/out-$n" > "$work/deb-$n")
  echo "build $n: $(( $(date +%s) - started )) s, $(sha256sum "$(cat "$work/deb-$n")" | cut -c1-16)"
done
first="$(cat "$work/deb-1")"
second="$(cat "$work/deb-2")"
if cmp -s "$first" "$second"; then
  echo "reproducible: both builds of $(git rev-parse --short "$commit") are $(sha256sum "$first" | cut -d' ' -f1)"
  exit 0
fi
echo "the two packages differ:" >&2
for n in 1 2; do
  mkdir -p "$work/x-$n"
  dpkg-deb -x "$(cat "$work/deb-$n")" "$work/x-$n"
done
diff -r "$work/x-1" "$work/x-2" >&2 || true
exit 1
