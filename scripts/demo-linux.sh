#!/usr/bin/env bash
# Boots the stock Debian cloud kernel (guest/linux) on popek's emulation
# engine: no KVM, no QEMU. The initramfs runs its virtio checks, then gives a
# shell on the serial console when stdin is a terminal (type `exit` or
# `poweroff -f` to leave), or powers off when it is not.
# Usage: scripts/demo-linux.sh [BUILD] [--qemu]
#   --qemu  the same guest and devices on QEMU TCG instead (the reference)
set -uo pipefail
BUILD=build
ENGINE=popek
for arg in "$@"; do
  case $arg in
    --qemu) ENGINE=qemu ;;
    -*) echo "usage: scripts/demo-linux.sh [BUILD] [--qemu]" >&2; exit 2 ;;
    *) BUILD=$arg ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../guest/linux/lib.sh"
DIR=$BUILD/guest/linux
POPEK=$BUILD/bin/popek

die() { echo "demo-linux: $*" >&2; exit 2; }
[ -f "$DIR/initramfs.cpio" ] && [ -e "$DIR/vmlinuz" ] || die "no guest in $DIR: build the linux_guest target"
if [ "$ENGINE" = popek ] && ! lg_popek_has_emu "$POPEK"; then
  die "$POPEK has no --engine option yet (the emulation engine is not an hv backend); try --qemu"
fi

WORK=$(mktemp -d /tmp/popek-demo-linux-XXXXXX)
NS=""
cleanup() { [ -n "$NS" ] && lg_netns_down "$NS"; rm -rf "$WORK"; }
trap cleanup EXIT
lg_make_disk "$WORK/disk.img" demo || die "mkfs.ext4 failed"
mode=test
[ -t 0 ] && mode=shell
cmdline=$(lg_cmdline "$mode" demo)
if [ "$ENGINE" = qemu ]; then lg_qemu_argv "$DIR" "$WORK/disk.img" "$cmdline" /dev/null
else lg_popek_argv "$POPEK" "$DIR" "$WORK/disk.img" "$cmdline"; fi

prefix=()
if [ "$(id -u)" -eq 0 ]; then
  NS=popek-demo-$$
  lg_netns_up "$NS" || die "could not set up network namespace $NS"
  prefix=(ip netns exec "$NS")
  echo "demo-linux: the guest's eth0 ($LG_GUEST_IP) reaches the host end $LG_HOST_IP of a TAP in network namespace $NS"
else
  echo "demo-linux: not root, so no TAP: the guest has no network device (its net check fails)"
  argv=()
  skip=0
  for a in "${LG_ARGV[@]}"; do  # drop the net device from the command line
    if [ $skip -gt 0 ]; then skip=$((skip - 1)); continue; fi
    case $a in
      --net) skip=1; continue ;;
      -netdev) skip=1; continue ;;
      virtio-net-pci*) unset 'argv[${#argv[@]}-1]'; continue ;;
    esac
    argv+=("$a")
  done
  LG_ARGV=("${argv[@]}")
fi
echo "demo-linux: guest ($(cat "$DIR/kernel-release"), initramfs $(($(stat -c %s "$DIR/initramfs.cpio") / 1024)) KiB) in mode $mode"
echo "\$ $(printf '%q ' "${LG_ARGV[@]}")"
"${prefix[@]}" "${LG_ARGV[@]}"
echo "[exit status: $?]"
