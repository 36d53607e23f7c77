#!/usr/bin/env bash
# popek's emulation engine vs QEMU TCG booting the same guest (guest/linux:
# the stock Debian cloud kernel, the project's initramfs, 1 vCPU, 256 MiB,
# virtio-blk on an ext4 image, virtio-net on a TAP, virtio-rng and a virtio
# console): wall time from spawning the VMM to the initramfs's first marker
# line (POPEK-LINUX-INIT), median of BENCH_EMU_RUNS runs (default 5), runs of
# the two VMMs interleaved. Prints a Markdown table. Needs root (TAP).
# Usage: bench/emu_boot.sh [BUILD]; part `emuboot` of bench/run.sh.
set -uo pipefail
BUILD=${1:-build}
DIR=$BUILD/guest/linux
POPEK=$BUILD/bin/popek
RUNS=${BENCH_EMU_RUNS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../guest/linux/lib.sh"

die() { echo "emu_boot: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespace and TAP for the virtio-net device)"
[ -f "$DIR/initramfs.cpio" ] && [ -e "$DIR/vmlinuz" ] || die "no guest in $DIR: build the linux_guest target"

NS=popek-emuboot-$$
WORK=$(mktemp -d /tmp/popek-emuboot-XXXXXX)
cleanup() { lg_netns_down "$NS"; rm -rf "$WORK"; }
trap cleanup EXIT
lg_netns_up "$NS" || die "could not set up network namespace $NS"
lg_make_disk "$WORK/disk.img" bench || die "mkfs.ext4 failed"
# popek.mode=bench: the guest powers off right after the marker.
cmdline=$(lg_cmdline bench bench)

# run_once ARGV...: prints the seconds from spawn to the marker line and the
# VMM's CPU time (user + sys, all threads) by then, or nothing if the marker
# never came (within 300 s). CPU time says what the wall time would be on
# an idle host, where the engine is not waiting for a core.
run_once() {
  local t0 first="" line ticks=0
  t0=$(date +%s%N)
  coproc VM { exec ip netns exec "$NS" "$@" </dev/null 2>"$WORK/stderr"; }
  local vm_pid=$VM_PID
  while IFS= read -r -t 300 line <&"${VM[0]}"; do
    if [[ $line == *POPEK-LINUX-INIT* ]]; then
      first=$(date +%s%N)
      ticks=$(awk '{ print $14 + $15 }' "/proc/$vm_pid/stat" 2>/dev/null)
      break
    fi
  done
  # popek.mode=bench powers off after the marker: let the VMM end (its output
  # closes), so the next run finds the disk image unlocked; kill it if it hangs.
  if [ -n "$first" ]; then while IFS= read -r -t 30 line <&"${VM[0]}"; do :; done; fi
  kill -9 "$vm_pid" 2>/dev/null
  wait "$vm_pid" 2>/dev/null
  if [ -n "$first" ]; then
    awk -v a="$t0" -v b="$first" -v t="${ticks:-0}" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%.3f %.3f\n", (b - a) / 1e9, t / hz }'
  else
    echo "emu_boot: no marker from $1: $(tail -n 2 "$WORK/stderr" | tr '\n' ' ')" >&2
  fi
}

median() {  # median COLUMN < FILE
  awk -v c="$1" '{ print $c }' | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", v[int(NR / 2) + 1] }'
}

have_emu=0
lg_popek_has_emu "$POPEK" && have_emu=1
lg_qemu_argv "$DIR" "$WORK/disk.img" "$cmdline" /dev/null
qemu_argv=("${LG_ARGV[@]}")
lg_popek_argv "$POPEK" "$DIR" "$WORK/disk.img" "$cmdline"
popek_argv=("${LG_ARGV[@]}")

: > "$WORK/qemu" && : > "$WORK/popek"
qemu_failed=0 popek_failed=0
for ((i = 0; i < RUNS; i++)); do
  t=$(run_once "${qemu_argv[@]}")
  if [ -n "$t" ]; then echo "$t" >> "$WORK/qemu"; else qemu_failed=$((qemu_failed + 1)); fi
  if [ "$have_emu" -eq 1 ]; then
    t=$(run_once "${popek_argv[@]}")
    if [ -n "$t" ]; then echo "$t" >> "$WORK/popek"; else popek_failed=$((popek_failed + 1)); fi
  fi
done

release=$(cat "$DIR/kernel-release" 2>/dev/null)
echo "Linux boot on an emulated CPU: $release + initramfs, 1 vCPU, 256 MiB, virtio-blk/net/rng/console;"
echo "from spawning the VMM to the initramfs's first marker line, median of $RUNS runs."
echo
echo "| start -> first marker | popek --engine emu | QEMU TCG (q35) | popek / QEMU |"
echo "|---|---|---|---|"
for col in 1 2; do
  label="wall time"
  [ "$col" -eq 2 ] && label="VMM CPU time (user+sys)"
  q=$(median "$col" < "$WORK/qemu")
  p=$(median "$col" < "$WORK/popek")
  ratio="-"
  if [ "$have_emu" -eq 0 ]; then
    popek_cell="not measured: $POPEK has no --engine option yet"
  elif [ -z "$p" ]; then
    popek_cell="no marker in $popek_failed of $RUNS runs ($(tail -n 1 "$WORK/stderr" 2>/dev/null | tr '|' '/'))"
  else
    popek_cell="$p s"
    [ "$popek_failed" -eq 0 ] || popek_cell="$popek_cell ($popek_failed of $RUNS runs failed)"
    [ -n "$q" ] && ratio=$(awk -v a="$p" -v b="$q" 'BEGIN { printf "%.2fx", a / b }')
  fi
  if [ -n "$q" ]; then qemu_cell="$q s"; else qemu_cell="no marker in any run"; fi
  [ "$qemu_failed" -eq 0 ] || qemu_cell="$qemu_cell ($qemu_failed of $RUNS runs failed)"
  echo "| $label | $popek_cell | $qemu_cell | $ratio |"
done
echo
echo "Runs (wall s): QEMU TCG $(awk '{ print $1 }' "$WORK/qemu" | sort -n | tr '\n' ' ')$([ "$have_emu" -eq 1 ] && echo "; popek $(awk '{ print $1 }' "$WORK/popek" | sort -n | tr '\n' ' ')")"
