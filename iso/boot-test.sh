#!/usr/bin/env bash
# Boots the ISO under QEMU with software emulation (no KVM needed) and the serial line as
# the console.
#   live: waits until the live appliance answers HTTPS and shows the setup code.
#   install: installs unattended onto a blank disk (kernel parameters, as an admin could
#     type them in GRUB), then boots that disk by BIOS and by UEFI and waits each time for
#     the setup code on the console and for HTTPS from outside the machine.
# Prints how long each step took.
# Usage: iso/boot-test.sh path/to/sightline.iso [live|install] [bios|uefi] [timeout-seconds]
set -euo pipefail

iso="$1"
mode="${2:-live}"
firmware="${3:-bios}"
limit="${4:-1200}"
work="$(mktemp -d)"
qemu=''
trap '[ -n "$qemu" ] && kill "$qemu" 2>/dev/null; rm -rf "$work"' EXIT
# The guest's HTTPS port, forwarded to the host's loopback only; the guest's address is
# QEMU's DHCP lease unless the install gave it a static one.
port=$((20000 + $$ % 20000))
guest=

# Runs QEMU until the console shows $1 (then checks HTTPS from the host) or QEMU exits
# with $1 = "exit". Remaining arguments go to QEMU.
boot() {
  local wanted="$1" step="$2" log="$work/$2.log" started
  shift 2
  local bios=()
  [ "$firmware" = uefi ] && bios=(-bios /usr/share/ovmf/OVMF.fd)
  started="$(date +%s)"
  qemu-system-x86_64 -accel tcg -m 2048 -smp 2 "${bios[@]}" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-$guest:443" -device virtio-net-pci,netdev=net0 \
    -display none -serial "file:$log" -no-reboot "$@" &
  qemu=$!
  while :; do
    if [ "$wanted" != exit ] && grep -q "$wanted" "$log" 2>/dev/null; then
      echo "$step: ready after $(( $(date +%s) - started )) s:"
      grep -E "Sightline is ready|Console: |Host name: |Setup code for|First account admin|Temporary password" "$log" | tr -d '\r' | sed 's/^/  /'
      curl --silent --fail --insecure --max-time 10 "https://127.0.0.1:$port/healthz" >/dev/null \
        || { echo "$step: HTTPS does not answer from outside the machine"; exit 1; }
      echo "  HTTPS answers from outside the machine (port $port on the host)"
      kill "$qemu"; wait "$qemu" 2>/dev/null || true; qemu=''
      return 0
    fi
    if ! kill -0 "$qemu" 2>/dev/null; then
      wait "$qemu" 2>/dev/null || true; qemu=''
      if [ "$wanted" = exit ]; then
        echo "$step: finished after $(( $(date +%s) - started )) s"
        return 0
      fi
      echo "$step: QEMU exited first; the console showed:"; tail -40 "$log" | tr -d '\r'; exit 1
    fi
    if [ $(( $(date +%s) - started )) -gt "$limit" ]; then
      echo "$step: not done within $limit s; the console showed:"; tail -40 "$log" | tr -d '\r'; exit 1
    fi
    sleep 2
  done
}

ready="Setup code for the first account admin"
case "$mode" in
  live)
    boot "$ready" "live ($firmware)" -cdrom "$iso" -boot d
    ;;
  install)
    disk="$work/disk.qcow2"
    qemu-img create -q -f qcow2 "$disk" 8G
    # The medium's own kernel, started with the parameters of an unattended install.
    xorriso -osirrox on -indev "$iso" -extract /live/vmlinuz "$work/vmlinuz" \
      -extract /live/initrd.img "$work/initrd.img" >/dev/null 2>&1
    boot exit "install" -cdrom "$iso" -drive "file=$disk,if=virtio,format=qcow2" \
      -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
      -append "boot=live components console=ttyS0,115200 sightline.install=auto sightline.disk=/dev/vda sightline.hostname=sightline-test sightline.timezone=Europe/Berlin sightline.net=10.0.2.20/24,10.0.2.2,10.0.2.3 sightline.admin_email=it@example.test sightline.admin_name=IT%20Admin sightline.organisation=Example%20Utilities"
    grep -q "Installation complete" "$work/install.log" \
      || { echo "the installer did not finish:"; tail -40 "$work/install.log" | tr -d '\r'; exit 1; }
    grep "Installation complete" "$work/install.log" | tr -d '\r' | sed 's/^/  /'
    guest=10.0.2.20
    for firmware in bios uefi; do
      # The unattended install made the first account: its admin and temporary
      # password are shown instead of a setup code.
      boot "Temporary password" "installed system ($firmware)" -drive "file=$disk,if=virtio,format=qcow2"
      grep -q "First account admin: it@example.test" "$work/installed system ($firmware).log" \
        || { echo "the first account was not created"; exit 1; }
      grep -q "https://10.0.2.20/" "$work/installed system ($firmware).log" \
        || { echo "the static address was not used"; exit 1; }
      grep -q "Host name: sightline-test" "$work/installed system ($firmware).log" \
        || { echo "the host name was not set"; exit 1; }
    done
    ;;
  *) echo "mode is live or install"; exit 2 ;;
esac
