#!/usr/bin/env bash
# The Debian package, end to end: built from the release binary, checked by lintian and
# by the shell linter, installed into a fresh Debian root (debootstrap), run there
# (`--version`, `check` against the installed configuration), purged, and the files left
# behind compared with the root before installation.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: installing into a Debian root needs root (chroot, mounts)"
  exit 0
fi

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target/debian"
deb="$(packaging/build-deb.sh "" "$target/debian")"
echo "built $deb ($(du -h "$deb" | cut -f1))"
# Packaging the same binary again, a second later and from other temporary files, gives
# the same bytes (the binary itself across checkouts: scripts/check-reproducible.sh).
again="$(packaging/build-deb.sh "$target/release/sightline" "$target/debian/again")"
cmp "$deb" "$again" || { echo "packaging is not reproducible"; exit 1; }
echo "packaged twice: identical ($(sha256sum "$deb" | cut -c1-16))"
# The SBOM it carries names the crates of the lock file, at their locked versions.
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/sightline/sightline.cdx.json > "$target/debian/sbom.json"
python3 - "$target/debian/sbom.json" <<'PY'
import json, sys, tomllib
bom = json.load(open(sys.argv[1]))
locked = {(p["name"], p["version"]) for p in tomllib.load(open("Cargo.lock", "rb"))["package"]}
assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.5", "not a CycloneDX 1.5 BOM"
assert bom["metadata"]["component"]["name"] == "sightline"
components = {(c["name"], c["version"]) for c in bom["components"]}
assert components <= locked, f"not in Cargo.lock: {sorted(components - locked)[:5]}"
for name in ("str0m", "redb", "rustls", "tokio", "age", "argon2"):
    assert any(n == name for n, _ in components), f"{name} missing from the SBOM"
assert all(c.get("purl", "").startswith("pkg:cargo/") for c in bom["components"]), "a component without a purl"
print(f"SBOM: {len(components)} crates, all at their locked versions")
PY
shellcheck packaging/build-deb.sh packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm
lintian --fail-on error,warning "$deb" 2>&1 | grep -v 'root privileges' || true
lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || { echo "lintian found problems"; exit 1; }

work="$(mktemp -d)"
root="$work/root"
cleanup() {
  for mount in proc dev/pts dev; do umount "$root/$mount" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A minimal Debian root, made once and kept beside the build as a tarball.
cache="$target/debian/bookworm-minbase.tar"
mkdir -p "$root"
if [ ! -f "$cache" ]; then
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$root" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
else
  tar -C "$root" -xf "$cache"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# The package's dependencies first, so that what they add is not counted as left behind.
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends adduser nftables >/dev/null
snapshot() {
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./var/cache -o -path ./var/log \
    -o -path ./var/lib/dpkg -o -path ./var/lib/apt -o -path ./tmp -o -path ./run \) -prune -o -print | sort)
}
snapshot > "$work/before"

cp "$deb" "$root/tmp/sightline.deb"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/sightline.deb >/dev/null
echo "installed: $(in_root sightline --version)"
[ -s "$root/usr/share/doc/sightline/sightline.cdx.json" ]
in_root stat -c '%a %U:%G %n' /etc/sightline /etc/sightline/sightline.toml /var/lib/sightline
[ "$(in_root stat -c '%a %U:%G' /etc/sightline/sightline.toml)" = "640 root:sightline" ]
[ "$(in_root stat -c '%a %U:%G' /var/lib/sightline)" = "700 sightline:sightline" ]
grep -qx /etc/sightline/sightline.toml "$root/var/lib/dpkg/info/sightline.conffiles"
# The self-test against the installed configuration, as the service's user would run
# it, in a network namespace of its own so that it can bind the ports it checks.
unshare --net chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  sh -c 'ip link set lo up 2>/dev/null; sightline check --config /etc/sightline/sightline.toml'

# An upgrade (the same package again) keeps a changed configuration and the data.
echo '# changed by the admin' >> "$root/etc/sightline/sightline.toml"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall -o Dpkg::Options::=--force-confold /tmp/sightline.deb >/dev/null
grep -q 'changed by the admin' "$root/etc/sightline/sightline.toml"

# Removing keeps configuration and data; purging deletes them.
in_root dpkg --remove sightline >/dev/null
[ -f "$root/etc/sightline/sightline.toml" ] && [ -d "$root/var/lib/sightline" ]
in_root dpkg --purge sightline
snapshot > "$work/after"
# The system user stays on purge (Debian policy), so the account databases differ.
left="$(diff "$work/before" "$work/after" | grep -v -E '^[0-9]|^---' \
  | grep -v -E '^[<>] \./etc/(passwd|group|shadow|gshadow)-?$' || true)"
if [ -n "$left" ]; then
  echo "left behind or missing after purge:"
  echo "$left"
  exit 1
fi
echo "purged: nothing left behind"
