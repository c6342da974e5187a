#!/usr/bin/env bash
# Runs the browser suite on Debian's Firefox ESR. Firefox pairs no host candidate of its
# own with a relay on 127.0.0.1 (its loopback pref did not help here), so the appliance
# and the browser run in a network namespace of their own with a veth pair on addresses
# from 198.18.0.0/15 and no default route: nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")"
ns="sl-ff-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
if ! ip netns add "$ns" 2>/dev/null; then
  echo "skipped: the Firefox run needs a network namespace (root and ip netns)"
  exit 0
fi
ip -n "$ns" link set lo up
ip -n "$ns" link add slffa type veth peer name slffb
ip -n "$ns" addr add 198.18.9.1/24 dev slffa
ip -n "$ns" addr add 198.18.9.2/24 dev slffb
ip -n "$ns" addr add 198.18.9.3/24 dev slffb
ip -n "$ns" link set slffa up
ip -n "$ns" link set slffb up
ip netns exec "$ns" env E2E_BROWSER=firefox E2E_HOST=198.18.9.1 npm test "$@"
