#!/usr/bin/env bash
# Boots the Linux guest on QEMU TCG with all its devices (virtio-blk on an
# ext4 image, virtio-net on a TAP in a network namespace of its own,
# virtio-rng, virtconsole), checks every marker the guest prints and, from
# the host, the files it wrote; reports the time from QEMU's start to the
# first marker. The reference the emulation engine is held to.
# Usage: guest/linux/run-qemu.sh [BUILD]   (root: network namespace and TAP)
set -uo pipefail
BUILD=${1:-build}
DIR=$BUILD/guest/linux
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

die() { echo "run-qemu.sh: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespace and TAP)"
[ -f "$DIR/initramfs.cpio" ] && [ -e "$DIR/vmlinuz" ] || die "no guest in $DIR: build the linux_guest target"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (scripts/deps.sh)"
DEBUGFS=$(lg_find debugfs) || exit 2

NS=popek-lg-$$
WORK=$(mktemp -d /tmp/popek-linux-XXXXXX)
cleanup() { lg_netns_down "$NS"; rm -rf "$WORK"; }
trap cleanup EXIT
lg_netns_up "$NS" || die "could not set up network namespace $NS"
token=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
lg_make_disk "$WORK/disk.img" "$token" || die "mkfs.ext4 failed"
lg_qemu_argv "$DIR" "$WORK/disk.img" "$(lg_cmdline test "$token")" "$WORK/hvc0"
echo "\$ ip netns exec $NS $(printf '%q ' "${LG_ARGV[@]}")"

t0=$(date +%s%N)
first=""
while IFS= read -r line; do
  line=${line%$'\r'}
  printf '%s\n' "$line"
  printf '%s\n' "$line" >> "$WORK/out"
  if [ -z "$first" ] && [[ $line == *POPEK-LINUX-INIT* ]]; then first=$(date +%s%N); fi
done < <(ip netns exec "$NS" timeout 300 "${LG_ARGV[@]}" </dev/null 2>&1; echo "[qemu exit status $?]")
end=$(date +%s%N)

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
out=$(cat "$WORK/out")
[ -n "$first" ] || fail "no POPEK-LINUX-INIT line"
for check in modules devices disk-mount disk-read disk-write net rng hvc0; do
  grep -q "^POPEK-CHECK $check ok" <<<"$out" || fail "check $check: $(grep "POPEK-CHECK $check " <<<"$out" || echo 'no result line')"
done
grep -q "^POPEK-LINUX-DONE passed=8 failed=0$" <<<"$out" || fail "no 'POPEK-LINUX-DONE passed=8 failed=0'"
echo "hvc0 (virtconsole) wrote: $(cat "$WORK/hvc0")"
grep -q "^POPEK-HVC0 hello from .* token=$token" "$WORK/hvc0" || fail "no POPEK-HVC0 line from hvc0"
grep -q "disk-read ok host.txt=written by the host for token $token" <<<"$out" || fail "the guest did not read host.txt"
grep -q "^\[qemu exit status 0\]" <<<"$out" || fail "QEMU did not exit 0 (guest power-off)"
# The files the guest wrote, read from the image (no mount needed).
got_token=$("$DEBUGFS" -R "cat /token.txt" "$WORK/disk.img" 2>/dev/null)
[ "$got_token" = "$token" ] || fail "token.txt on the image is '$got_token', not '$token'"
"$DEBUGFS" -R "dump /random.bin $WORK/random.bin" "$WORK/disk.img" >/dev/null 2>&1
want_md5=$(sed -n 's/^POPEK-CHECK disk-write ok .*md5=\([0-9a-f]*\).*/\1/p' <<<"$out")
got_md5=$(md5sum < "$WORK/random.bin" 2>/dev/null | cut -d' ' -f1)
[ -n "$want_md5" ] && [ "$got_md5" = "$want_md5" ] || fail "random.bin on the image has md5 '$got_md5', the guest wrote '$want_md5'"
[ "$(stat -c %s "$WORK/random.bin" 2>/dev/null)" = 262144 ] || fail "random.bin on the image is not 256 KiB"

echo
if [ -n "$first" ]; then
  awk -v a="$t0" -v b="$first" -v c="$end" \
    'BEGIN { printf "qemu-tcg: first marker after %.2f s; guest done and QEMU exited after %.2f s\n", (b - a) / 1e9, (c - a) / 1e9 }'
fi
if [ "$failures" -eq 0 ]; then
  echo "qemu-tcg: all checks passed (8 guest checks, hvc0 output, token.txt and random.bin verified with debugfs)"
else
  echo "qemu-tcg: $failures check(s) failed"
  exit 1
fi
