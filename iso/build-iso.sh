#!/usr/bin/env bash
# Builds a hybrid BIOS+UEFI ISO from Debian packages: a live Debian system with the
# Sightline package inside, which boots into a running appliance (live mode, for
# evaluation) or installs itself to a disk (sightline-install). Needs root (debootstrap, chroot) and grub-pc-bin, grub-efi-amd64-bin,
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
mount_all() {
  mount -t proc proc "$root/proc"
  mount -t sysfs sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
}
umount_all() {
  for mount in proc sys dev/pts dev; do umount "$root/$mount" 2>/dev/null || true; done
}
cleanup() {
  umount_all
  rm -rf "$work"
}
trap cleanup EXIT
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# Live system, appliance dependencies, and what the disk installer needs (partitioning,
# file systems, GRUB for BIOS and UEFI, time zones).
packages=linux-image-amd64,live-boot,systemd-sysv,udev,adduser,nftables,curl,ca-certificates,iproute2,fdisk,dosfstools,e2fsprogs,grub-pc,grub-efi-amd64-bin,tzdata
# The downloaded base is kept (keyed by its package list): rebuilding the image after a
# change to Sightline then takes minutes, not a fresh download.
base="$(dirname "$out")/base-$(printf '%s' "$packages" | sha256sum | cut -c1-12).tar"
mkdir -p "$root"
if [ -f "$base" ]; then
  echo "==> Debian base system (cached in $base)"
  tar --numeric-owner -xpf "$base" -C "$root"
else
  echo "==> Debian base system"
  DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --include="$packages" \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" "$root/debootstrap/debootstrap.log"; exit 1; }
  # systemd-resolved (DNS for DHCP networks) replaces resolv.conf, which debootstrap's
  # own configuration step does not survive; it goes in afterwards.
  mount_all
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-resolved >/dev/null
  in_root apt-get clean
  umount_all
  tar --numeric-owner -cpf "$base.partial" -C "$root" . && mv "$base.partial" "$base"
fi
mount_all

echo "==> Sightline"
cp "$deb" "$root/tmp/sightline.deb"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/sightline.deb >/dev/null
rm "$root/tmp/sightline.deb"
cp -r iso/rootfs/. "$root/"
in_root systemctl enable sightline-console.service sightline-installer.service \
  systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
echo sightline > "$root/etc/hostname"
# GRUB of the installed system: on the serial line as well, for headless servers.
cat >>"$root/etc/default/grub" <<'EOF'
GRUB_TIMEOUT=3
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
# Every booted copy makes its own identity (DHCP client ids derive from it).
: > "$root/etc/machine-id"
in_root update-initramfs -u >/dev/null
in_root apt-get clean
umount_all

echo "==> Image"
iso="$work/iso"
mkdir -p "$iso/live" "$iso/boot/grub"
cp "$root"/boot/vmlinuz-* "$iso/live/vmlinuz"
cp "$root"/boot/initrd.img-* "$iso/live/initrd.img"
# The kernel stays in the system for the installer; the live initramfs does not.
mksquashfs "$root" "$iso/live/filesystem.squashfs" -comp xz -noappend -quiet \
  -wildcards -e 'boot/initrd.img*'
cp iso/grub.cfg "$iso/boot/grub/grub.cfg"
grub-mkrescue -o "$out" "$iso" -- -volid SIGHTLINE >/dev/null 2>&1
echo "$out ($(du -h "$out" | cut -f1))"
