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
  cargo build --release --locked --bin sightline
  binary="$target_dir/release/sightline"
fi

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
date="$(git log -1 --format=%cD 2>/dev/null || date -R)"
printf 'sightline (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- Sightline maintainers <maintainers@sightline.example.org>  %s\n' \
  "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo 'a source tree')" "$date" \
  | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

install -d "$root/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/debian/control.in > "$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
find "$root" -type d -exec chmod 0755 {} +

mkdir -p "$out"
deb="$out/sightline_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
