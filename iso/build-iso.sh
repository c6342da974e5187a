#!/usr/bin/env bash
# Builds a hybrid BIOS+UEFI ISO from Debian packages: a live Debian system with the
# Sightline package inside, which boots into a running appliance (live mode, for
# evaluation). Needs root (debootstrap, chroot) and grub-pc-bin, grub-efi-amd64-bin,
# xorriso, mtools and squashfs-tools.
# Usage: iso/build-iso.sh [output.iso]
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
out="${1:-$target/iso/sightline.iso}"
mkdir -p "$(dirname "$out")"
deb="$(packaging/build-deb.sh "" "$target/debian")"

work="$(mktemp -d)"
root="$work/root"
cleanup() {
  for mount in proc sys dev/pts dev; do umount "$root/$mount" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> Debian base system"
debootstrap --variant=minbase \
  --include=linux-image-amd64,live-boot,systemd-sysv,adduser,nftables,curl,ca-certificates,iproute2,ifupdown,isc-dhcp-client \
  bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log"; exit 1; }
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

echo "==> Sightline"
cp "$deb" "$root/tmp/sightline.deb"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/sightline.deb >/dev/null
rm "$root/tmp/sightline.deb"
cp -r iso/rootfs/. "$root/"
in_root systemctl enable sightline-console.service >/dev/null 2>&1
echo sightline > "$root/etc/hostname"
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet dhcp\n' > "$root/etc/network/interfaces"
in_root update-initramfs -u >/dev/null
in_root apt-get clean
for mount in proc sys dev/pts dev; do umount "$root/$mount"; done

echo "==> Image"
iso="$work/iso"
mkdir -p "$iso/live" "$iso/boot/grub"
cp "$root"/boot/vmlinuz-* "$iso/live/vmlinuz"
cp "$root"/boot/initrd.img-* "$iso/live/initrd.img"
mksquashfs "$root" "$iso/live/filesystem.squashfs" -comp xz -e boot -noappend -quiet
cp iso/grub.cfg "$iso/boot/grub/grub.cfg"
grub-mkrescue -o "$out" "$iso" -- -volid SIGHTLINE >/dev/null 2>&1
echo "$out ($(du -h "$out" | cut -f1))"
