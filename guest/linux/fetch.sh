#!/usr/bin/env bash
# Fetches the guest's parts from Debian, never modified: the kernel package
# that linux-image-cloud-amd64 depends on today, and busybox-static.
# `apt-get download` (no install) + `dpkg-deb -x` into OUT:
#   OUT/debs/*.deb      downloaded once; a present .deb is not fetched again
#   OUT/root/           both packages unpacked
#   OUT/vmlinuz         symlink to the kernel in OUT/root/boot
#   OUT/kernel-release  e.g. 6.1.0-56-cloud-amd64
# Usage: guest/linux/fetch.sh OUT
set -euo pipefail
OUT=${1:?usage: fetch.sh OUTDIR}
mkdir -p "$OUT/debs" "$OUT/root"
OUT=$(cd "$OUT" && pwd)

die() { echo "guest/linux/fetch.sh: $*" >&2; exit 1; }

# The metapackage's one versioned dependency, e.g. linux-image-6.1.0-56-cloud-amd64.
resolve() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
kernel_pkg=$(resolve) || true
if [ -z "$kernel_pkg" ] && [ "$(id -u)" -eq 0 ]; then
  # A machine whose package lists were never fetched (or were cleaned).
  apt-get update -qq >&2 || true
  kernel_pkg=$(resolve) || true
fi
if [ -z "$kernel_pkg" ]; then
  # Offline with an already fetched kernel: keep using it.
  cached=$(ls "$OUT"/debs/linux-image-[0-9]*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -n 1) || true
  [ -n "$cached" ] || die "apt-cache does not know linux-image-cloud-amd64 (run apt-get update)"
  kernel_pkg=$(basename "$cached" | cut -d_ -f1)
fi

apt_opts=()
# apt's download sandbox user cannot write into root's build directories.
if [ "$(id -u)" -eq 0 ]; then apt_opts=(-o APT::Sandbox::User=root); fi

fetch() {  # prints the path of PACKAGE's .deb in OUT/debs, downloading it if absent
  local pkg=$1 deb
  deb=$(ls "$OUT/debs/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n 1) || true
  if [ -z "$deb" ]; then
    (cd "$OUT/debs" && apt-get download -qq "${apt_opts[@]}" "$pkg" >&2) ||
      die "apt-get download $pkg failed"
    deb=$(ls "$OUT/debs/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n 1) || true
    [ -n "$deb" ] || die "apt-get download $pkg left no .deb in $OUT/debs"
  fi
  echo "$deb"
}

for pkg in "$kernel_pkg" busybox-static; do
  deb=$(fetch "$pkg")
  stamp="$OUT/root/.unpacked-$(basename "$deb")"
  if [ ! -e "$stamp" ]; then
    dpkg-deb -x "$deb" "$OUT/root"
    touch "$stamp"
  fi
done

release=${kernel_pkg#linux-image-}
kernel="$OUT/root/boot/vmlinuz-$release"
[ -f "$kernel" ] || die "$kernel_pkg has no /boot/vmlinuz-$release"
[ -x "$OUT/root/bin/busybox" ] || die "busybox-static has no /bin/busybox"
ln -sfn "root/boot/vmlinuz-$release" "$OUT/vmlinuz"
# Rewritten only when it changes, so builds depending on it stay up to date.
if [ "$(cat "$OUT/kernel-release" 2>/dev/null)" != "$release" ]; then echo "$release" > "$OUT/kernel-release"; fi
