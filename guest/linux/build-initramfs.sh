#!/usr/bin/env bash
# Builds the guest's initramfs (newc cpio, uncompressed: under emulation the
# guest's own decompressor would cost more than the bytes) from what fetch.sh
# unpacked into OUT/root:
#   /init                   guest/linux/init
#   /bin/busybox + links    busybox-static, one symlink per applet
#   /lib/modules/*.ko       the kernel's virtio modules and their dependencies
#   /etc/modules            their load order (dependencies first)
# Output: OUT/initramfs.cpio, OUT/initramfs.modules (the list, for humans).
# Usage: guest/linux/build-initramfs.sh OUT
set -euo pipefail
OUT=$(cd "${1:?usage: build-initramfs.sh OUTDIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT="$OUT/root"
die() { echo "guest/linux/build-initramfs.sh: $*" >&2; exit 1; }
[ -f "$OUT/kernel-release" ] || die "no $OUT/kernel-release: run guest/linux/fetch.sh $OUT first"
release=$(cat "$OUT/kernel-release")
moddir="$ROOT/lib/modules/$release"
command -v depmod >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
command -v depmod >/dev/null || die "depmod not found (apt-get install kmod)"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"

# The drivers the guest's checks need. ext4 (and jbd2, mbcache, crc32c) and
# rng-core are built into the cloud kernel: see modules.builtin.
wanted=(virtio_pci virtio_blk virtio_net virtio_console virtio-rng)

# modules.dep as depmod would write it (the package ships none; -n prints it
# instead of writing into the unpacked tree, which stays as Debian made it).
declare -A deps path
while IFS= read -r line; do
  [[ $line == "# "* ]] && break          # the sections after modules.dep
  [[ $line == *:* ]] || continue
  mod=${line%%:*}
  name=$(basename "$mod" .ko)
  path[$name]=$mod
  deps[$name]=${line#*:}
done < <(depmod -n -b "$ROOT" "$release" 2>/dev/null)

order=()
declare -A seen
visit() {  # appends $1 after everything it depends on
  local name=$1 d
  [ -n "${seen[$name]:-}" ] && return
  seen[$name]=1
  for d in ${deps[$name]}; do visit "$(basename "$d" .ko)"; done
  order+=("$name")
}
for m in "${wanted[@]}"; do
  if grep -q "/$m\.ko\$" "$moddir/modules.builtin"; then continue; fi
  [ -n "${path[$m]:-}" ] || die "module $m is neither in modules.dep nor built in ($release)"
  visit "$m"
done

stage="$OUT/initramfs.d"
rm -rf "$stage"
mkdir -p "$stage"/{bin,dev,etc,lib/modules,mnt,proc,sys,tmp,root}
install -m 0755 "$HERE/init" "$stage/init"
install -m 0755 "$ROOT/bin/busybox" "$stage/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
done
: > "$stage/etc/modules"
for m in "${order[@]}"; do
  install -m 0644 "$moddir/${path[$m]}" "$stage/lib/modules/$m.ko"
  echo "$m" >> "$stage/etc/modules"
done
cp "$stage/etc/modules" "$OUT/initramfs.modules"

# Owned by root whoever builds it; sorted and dated for a reproducible archive.
(cd "$stage" && find . -mindepth 1 -exec touch -h -d @0 {} + &&
 find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$OUT/initramfs.cpio.tmp"
mv "$OUT/initramfs.cpio.tmp" "$OUT/initramfs.cpio"
