#!/usr/bin/env bash
# Boots popek's probe guest a few ways and shows what the guest printed.
set -uo pipefail
BUILD=${1:-build}
POPEK="$BUILD/bin/popek"
PROBE="$BUILD/guest/probe.elf"

show() {
  echo
  echo "\$ $*"
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
echo "A bad input gets one clear line and exit status 2:"
show "$POPEK" run --kernel /nonexistent/vmlinux
