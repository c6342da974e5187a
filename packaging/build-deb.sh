#!/usr/bin/env bash
# Builds the Debian package from the release binary with dpkg-deb: no packaging tool to
# install, and the maintainer scripts in packaging/debian are plain, reviewable shell.
# Usage: packaging/build-deb.sh [path/to/sightline] [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
binary="${1:-}"
out="${2:-$target_dir/debian}"
if [ -z "$binary" ]; then
  # SIGHTLINE_REPRODUCIBLE=1 (scripts/check-reproducible.sh): no build paths in the binary,
  # so that builds from different checkouts match. Not by default: changed flags rebuild
  # every dependency.
  if [ -n "${SIGHTLINE_REPRODUCIBLE:-}" ]; then
    export RUSTFLAGS="--remap-path-prefix=$PWD=/build/sightline --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
  fi
  cargo build --release --locked --bin sightline
  binary="$target_dir/release/sightline"
fi

# Reproducible: every timestamp is the commit's (dpkg-deb clamps the archive's to it),
# the file list is sorted, and compressors write no names or times.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)-1"
arch="$(dpkg --print-architecture)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$binary" "$root/usr/bin/sightline"
strip --strip-unneeded "$root/usr/bin/sightline" 2>/dev/null || true
install -D -m 0644 systemd/sightline.service "$root/usr/lib/systemd/system/sightline.service"
install -D -m 0644 systemd/sightline-firewall.service "$root/usr/lib/systemd/system/sightline-firewall.service"
install -D -m 0644 systemd/sysusers.d/sightline.conf "$root/usr/lib/sysusers.d/sightline.conf"
install -D -m 0644 systemd/tmpfiles.d/sightline.conf "$root/usr/lib/tmpfiles.d/sightline.conf"
install -D -m 0644 packaging/sightline.toml "$root/etc/sightline/sightline.toml"
install -D -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/sightline"
doc="$root/usr/share/doc/sightline"
install -D -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
# The software bill of materials: every crate in the binary, with versions, licences and
# checksums (CycloneDX 1.5, from the lock file; its timestamp is SOURCE_DATE_EPOCH's).
CYCLONEDX_VERSION=0.5.9
if ! cargo cyclonedx --version 2>/dev/null | grep -q "$CYCLONEDX_VERSION"; then
  cargo install --locked -q "cargo-cyclonedx@$CYCLONEDX_VERSION"
fi
cargo cyclonedx --describe binaries --format json --spec-version 1.5 --no-build-deps -q
# The crate's own reference names the checkout's path; the same one the binary's remapped
# paths use, so that builds from different directories give the same file.
SRC="$PWD" perl -pe 's{\Qpath+file://$ENV{SRC}\E#}{path+file:///build/sightline#}g' \
  sightline_bin.cdx.json > "$doc/sightline.cdx.json"
rm sightline_bin.cdx.json
chmod 0644 "$doc/sightline.cdx.json"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: sightline"
  echo
  echo "Files: *"
  echo "Copyright: 2026 Sightline contributors"
  echo "License: Apache-2.0"
  echo " On Debian systems, the full text of the Apache License 2.0 is in"
  echo " /usr/share/common-licenses/Apache-2.0."
} > "$doc/copyright"
chmod 0644 "$doc/copyright"
date="$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
printf 'sightline (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- Sightline maintainers <maintainers@sightline.example.org>  %s\n' \
  "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo 'a source tree')" "$date" \
  | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

install -d "$root/DEBIAN"
# Computed as dpkg-gencontrol does (each file's size in KiB rounded up, one per directory
# or link) rather than by du, which reports the blocks a file system happened to give.
size="$(find "$root" -path "$root/DEBIAN" -prune -o \( -type f -printf '%s\n' \) \
  -o \( ! -type f -printf '1024\n' \) | awk '{ kib += int(($1 + 1023) / 1024) } END { print kib }')"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/debian/control.in > "$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb="$out/sightline_${version}_${arch}.deb"
# One compressor thread: with several cores dpkg-deb uses xz's multi-threaded encoder,
# which cuts the stream into blocks, and on one core the single-threaded one; with one
# thread every machine writes the same bytes.
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$root" "$deb" >/dev/null
echo "$deb"
