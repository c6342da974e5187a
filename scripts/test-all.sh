#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine with only the Rust toolchain,
# then runs every test: unit and in-process integration tests (cargo test) and the
# browser end-to-end tests (Debian's Chromium with a fake camera, driven by playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
# libFuzzer (the fuzz targets) is C++, built by libfuzzer-sys.
command -v c++ >/dev/null || missing+=(g++)
command -v chromium >/dev/null || missing+=(chromium)
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v lintian >/dev/null || missing+=(lintian)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nix-instantiate >/dev/null || missing+=(nix-bin)
command -v openssl >/dev/null || missing+=(openssl)
# The README's API script is run as it stands.
command -v curl >/dev/null || missing+=(curl)
command -v certutil >/dev/null || missing+=(libnss3-tools)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The gates: formatting, lints and the module graph (no module imports one that imports it
# back). rustup's default profile has rustfmt and clippy; a minimal one gets them here.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
echo "==> cargo fmt --check"
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
echo "==> module imports"
python3 scripts/check-module-cycles.py src
echo "==> supply chain (cargo deny: advisories, licences, sources, duplicates)"
./scripts/check-supply-chain.sh
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo build"
cargo build --locked --bins
# A real SMTP server for the invitation tests (aiosmtpd, from PyPI, in a venv of its own).
smtp_venv="${CARGO_TARGET_DIR:-target}/aiosmtpd-venv"
if ! "$smtp_venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m venv "$smtp_venv"
  "$smtp_venv/bin/pip" install -q "aiosmtpd==1.4.6"
fi
SIGHTLINE_TEST_SMTP_PYTHON="$(cd "$smtp_venv" && pwd)/bin/python"
export SIGHTLINE_TEST_SMTP_PYTHON

echo "==> cargo test"
# The tests that need network namespaces are marked ignored, so that where they cannot
# run the summary line counts them as such instead of passing them silently; here they
# run when a namespace can be made.
probe="sightline-probe-$$"
if $sudo ip netns add "$probe" 2>/dev/null; then
  $sudo ip netns delete "$probe"
  cargo test --locked -- --include-ignored
else
  echo "(network namespaces cannot be made here: their tests are reported as ignored)"
  cargo test --locked
fi

echo "==> fuzzing (libFuzzer, ${FUZZ_SECONDS:-30} s per target)"
./scripts/fuzz.sh

echo "==> systemd units"
./scripts/check-units.sh "${CARGO_TARGET_DIR:-target}/debug/sightline"

echo "==> TLS profile (sslyze against Mozilla's intermediate configuration)"
./scripts/check-tls-profile.sh "${CARGO_TARGET_DIR:-target}/debug/sightline"

echo "==> Debian package"
./scripts/check-deb.sh

echo "==> installer ISO scripts (the ISO itself: iso/build-iso.sh, see README)"
shellcheck iso/*.sh iso/rootfs/usr/sbin/sightline-install iso/rootfs/usr/lib/sightline/show-console

echo "==> NixOS module"
./scripts/check-nix.sh

echo "==> browser end-to-end tests (Chromium)"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)

echo "==> browser end-to-end tests (Firefox ESR)"
shellcheck tests/e2e/firefox.sh
tests/e2e/firefox.sh
