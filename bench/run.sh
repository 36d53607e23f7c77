#!/usr/bin/env bash
# popek vs QEMU-KVM on the probe guest, live migration popek vs QEMU, and
# popek's emulation engine vs QEMU TCG booting Linux, in one run. Prints
# Markdown tables. Needs root for the network namespaces and TAPs (virtio-net
# row, migration, Linux guest). BENCH_PARTS picks the parts (default
# "vmm snapshot migration emuboot"); BENCH_RUNS, BENCH_SNAPSHOT_RUNS and
# BENCH_EMU_RUNS the runs per median.
set -euo pipefail
BUILD=${1:-build}
PARTS=${BENCH_PARTS:-vmm snapshot migration emuboot}
DISK=/dev/shm/popek-bench-$$.img
NS=popek-bench-$$
cleanup() {
  rm -f "$DISK"
  ip netns del "$NS" 2>/dev/null || true
  ip netns del "$NS-a" 2>/dev/null || true
  ip netns del "$NS-b" 2>/dev/null || true
}
trap cleanup EXIT

if [[ " $PARTS " == *" vmm "* ]]; then
  # virtio-blk image on tmpfs: the benchmark measures the VMMs, not a disk.
  truncate -s 256M "$DISK"
  dd if=/dev/urandom of="$DISK" bs=1M count=256 conv=notrunc status=none

  net_args=()
  if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
    ip netns add "$NS"
    ip -n "$NS" tuntap add dev btap0 mode tap
    ip -n "$NS" link set btap0 up
    net_args=(--netns "$NS" --tap btap0 --tap-echo "$BUILD/bin/popek_tap_echo" --frames "${BENCH_FRAMES:-20000}")
  else
    echo "bench: not root, skipping the virtio-net row" >&2
  fi

  "$BUILD/bin/popek_vmm_bench" --popek "$BUILD/bin/popek" --probe "$BUILD/guest/probe.elf" \
    --runs "${BENCH_RUNS:-10}" --exits "${BENCH_EXITS:-1000000}" --disk "$DISK" "${net_args[@]}"
fi

# Snapshot and restore, 128 MiB and 1 GiB guests; snapshot files on tmpfs
# for both VMMs, like the disk image above.
if [[ " $PARTS " == *" snapshot "* ]]; then
  echo
  "$BUILD/bin/popek_snapshot_bench" --popek "$BUILD/bin/popek" --probe "$BUILD/guest/probe.elf" \
    --runs "${BENCH_SNAPSHOT_RUNS:-5}" --dir /dev/shm
fi

# Live migration, popek vs QEMU, 1 GiB guests: two network namespaces (the
# hosts) joined by one veth pair; only their addresses are used.
if [[ " $PARTS " == *" migration "* ]]; then
  echo
  if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
    echo "bench: the migration part needs root and ip(8); skipped" >&2
  else
    ip netns add "$NS-a"
    ip netns add "$NS-b"
    ip link add mva netns "$NS-a" type veth peer name mvb netns "$NS-b"
    ip -n "$NS-a" addr add 10.78.0.1/24 dev mva
    ip -n "$NS-b" addr add 10.78.0.2/24 dev mvb
    for s in a b; do
      ip -n "$NS-$s" link set "mv$s" up
      ip -n "$NS-$s" link set lo up
    done
    "$BUILD/bin/popek_migration_bench" --popek "$BUILD/bin/popek" --probe "$BUILD/guest/probe.elf" \
      --ns-src "$NS-a" --ns-dst "$NS-b" --addr-src 10.78.0.1 --addr-dst 10.78.0.2 \
      --workloads "${BENCH_MIGRATION_WORKLOADS:-idle,rate,fast}" --limits "${BENCH_MIGRATION_LIMITS:-300,10}"
  fi
fi

# The stock Debian kernel to the initramfs's first line: popek --engine emu
# vs QEMU TCG (guest/linux, bench/emu_boot.sh).
if [[ " $PARTS " == *" emuboot "* ]]; then
  echo
  if [ "$(id -u)" -eq 0 ]; then
    "$(dirname "$0")/emu_boot.sh" "$BUILD"
  else
    echo "bench: not root, skipping the Linux boot table (it needs a TAP)" >&2
  fi
fi
