#!/usr/bin/env bash
# Boots the ISO under QEMU with software emulation (no KVM needed) and the serial line as
# the console, and waits until the live appliance says it answers HTTPS and shows the
# setup code. Prints the boot-to-ready time.
# Usage: iso/boot-test.sh path/to/sightline.iso [bios|uefi] [timeout-seconds]
set -euo pipefail

iso="$1"
firmware=()
if [ "${2:-bios}" = "uefi" ]; then
  firmware=(-bios /usr/share/ovmf/OVMF.fd)
fi
limit="${3:-900}"
log="$(mktemp)"
started="$(date +%s)"
qemu-system-x86_64 -accel tcg -m 2048 -smp 2 "${firmware[@]}" -cdrom "$iso" -boot d \
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
  -display none -serial "file:$log" -no-reboot &
qemu=$!
trap 'kill "$qemu" 2>/dev/null || true; rm -f "$log"' EXIT

while :; do
  if grep -q "Setup code for the first account admin" "$log"; then
    echo "live mode ready after $(( $(date +%s) - started )) s:"
    grep -E "Sightline is ready|Console: |Setup code for" "$log" | tr -d '\r'
    exit 0
  fi
  if ! kill -0 "$qemu" 2>/dev/null; then
    echo "QEMU exited before the appliance was ready"; tail -40 "$log"; exit 1
  fi
  if [ $(( $(date +%s) - started )) -gt "$limit" ]; then
    echo "not ready within $limit s; the console showed:"; tail -40 "$log" | tr -d '\r'; exit 1
  fi
  sleep 2
done
