#!/usr/bin/env bash
# Boots popek's probe guest a few ways and shows what the guest printed.
set -uo pipefail
BUILD=${1:-build}
POPEK="$BUILD/bin/popek"
PROBE="$BUILD/guest/probe.elf"

show() {
  echo
  echo "\$ $(printf '%q ' "$@")"
  "$@"
  echo "[popek exit status: $?]"
}

echo "popek demo: the probe guest boots through PVH, sets up long mode in ring 0,"
echo "then runs its workload in ring 3 and leaves through the debug-exit port."
show "$POPEK" version
show "$POPEK" run --kernel "$PROBE" --cmdline "compute 1000" --memory 256M
show "$POPEK" run --kernel "$PROBE" --cmdline "smp" --cpus 4
show "$POPEK" run --kernel "$PROBE" --cmdline "exits 100000" --cpus 2
show "$POPEK" run --kernel "$PROBE" --cmdline "fault"
echo
echo "virtio-pci devices: the probe's ring-3 drivers write a pattern to a disk image,"
echo "read it back, and pull random bytes from virtio-rng:"
DISK=$(mktemp /tmp/popek-demo-XXXXXX.img)
trap 'rm -f "$DISK"' EXIT
truncate -s 64M "$DISK"
show "$POPEK" run --kernel "$PROBE" --cmdline "blk-test" --disk "$DISK,id=demo-disk" --rng --print-devices
show "$POPEK" run --kernel "$PROBE" --cmdline "rng-test 4096" --rng
echo "The pattern is in the host file (sector 8 onwards):"
od -A d -t x1 -j 4096 -N 32 "$DISK"
echo
echo "A bad input gets one clear line and exit status 2:"
show "$POPEK" run --kernel /nonexistent/vmlinux
