#!/usr/bin/env bash
# The dependency tree against deny.toml with cargo-deny: known vulnerabilities, unmaintained
# and unsound crates (RustSec advisories), licences, sources, duplicate versions.
#
# Offline when a snapshot of the RustSec database is at hand (SIGHTLINE_ADVISORY_DB, or
# ../shared/advisory-db next to the checkout, or /work/shared/advisory-db): cargo-deny
# reads it as its clone of the database. Without one, cargo-deny fetches the database
# itself (a connected machine); if it cannot, the check fails rather than pass unchecked.
#
# It first proves the gate can fail: a copy of the database with an advisory planted
# against a crate we use must make cargo-deny refuse the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  cargo install --locked "cargo-deny@$DENY_VERSION"
fi

# Reviewed exceptions expire: every ignore entry has a reason that says "review by
# YYYY-MM-DD", and fails once that date has passed.
python3 - <<'PY'
import datetime, re, sys, tomllib
entries = tomllib.load(open("deny.toml", "rb"))["advisories"].get("ignore", [])
today = datetime.date.today().isoformat()
for entry in entries:
    reason = entry.get("reason", "") if isinstance(entry, dict) else ""
    due = re.search(r"review by (\d{4}-\d{2}-\d{2})", reason)
    name = entry.get("id", entry) if isinstance(entry, dict) else entry
    if not due:
        sys.exit(f"deny.toml: the exception for {name} needs a reason with 'review by YYYY-MM-DD'")
    if due.group(1) < today:
        sys.exit(f"deny.toml: the exception for {name} was due for review on {due.group(1)}")
PY

# The snapshot beside the working copy, or where this machine keeps it for clones made
# elsewhere (CI's).
snapshot="${SIGHTLINE_ADVISORY_DB:-}"
for candidate in ../shared/advisory-db /work/shared/advisory-db; do
  if [ -z "$snapshot" ] && [ -d "$candidate/crates" ]; then snapshot="$candidate"; fi
done
if [ ! -d "${snapshot:-/nonexistent}/crates" ]; then
  echo "(no advisory snapshot found: cargo-deny fetches the database)"
  cargo deny --locked check
  exit 0
fi

newest=$(grep -h '^date = ' "$snapshot"/crates/*/*.md | sort | tail -1 | cut -d'"' -f2)

# Where cargo-deny $DENY_VERSION keeps its clone of https://github.com/rustsec/advisory-db
# (the suffix is a hash of the URL), as a git repository whose commit date is the
# snapshot's newest advisory.
db=target/advisory-dbs/advisory-db-3157b0e258782691
plant() {
  rm -rf "$db"
  mkdir -p "$db"
  cp -r "$snapshot"/. "$db"/
  chmod -R u+w "$db"
  if [ -n "${1:-}" ]; then
    mkdir -p "$db/crates/$1"
    cat > "$db/crates/$1/RUSTSEC-2099-0001.md" <<EOF
\`\`\`toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "$1"
date = "2099-01-01"
url = "https://example.invalid/planted"
title = "Planted by check-supply-chain.sh to prove the gate fails"
description = "Not a real advisory."

[versions]
patched = []
\`\`\`

# Planted by check-supply-chain.sh to prove the gate fails
EOF
  fi
  git -C "$db" init -q
  git -C "$db" add -A
  GIT_AUTHOR_DATE="${newest}T00:00:00Z" GIT_COMMITTER_DATE="${newest}T00:00:00Z" \
    git -C "$db" -c user.name=snapshot -c user.email=snapshot@localhost commit -q -m "RustSec snapshot"
}

# cargo-deny reads the whole lock file's metadata, other platforms' crates included.
cargo fetch --locked -q

echo "(advisory snapshot: $snapshot, newest advisory $newest)"
plant tar
if cargo deny --offline --locked check advisories >/dev/null 2>&1; then
  echo "cargo-deny accepted a tree with a planted vulnerability: the gate is not working" >&2
  exit 1
fi
plant
cargo deny --offline --locked check
# The fuzz crate (fuzz/) is not shipped, but CI builds and runs it: its tree is held to the
# same advisories and sources. Not to the licence list, which is about what the product
# obliges a company to: libFuzzer is under LLVM's NCSA licence.
cargo fetch --locked -q --manifest-path fuzz/Cargo.toml
cargo deny --manifest-path fuzz/Cargo.toml --config deny.toml --offline --locked \
  check advisories sources
