#!/bin/sh
# Boots the Debian kernel with a busybox-static initramfs on a bare emulation
# engine (popek_emu_boot) and checks that user space ran: busybox applets and
# a static glibc program doing long-double (x87) math, whose output must equal
# the host's. There is no platform yet (no timer or serial interrupts), so user
# space writes to /dev/kmsg, which the kernel prints through its polled console.
#
#   tools/emu_boot_initramfs.sh [ROOT]   ROOT: the unpacked kernel and busybox
#                                        (default /work/cache/linux/root)
set -eu
ROOT=${1:-/work/cache/linux/root}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BOOT=$HERE/build/bin/popek_emu_boot
KERNEL=$(ls "$ROOT"/boot/vmlinuz-* | head -n 1)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/root/bin" "$WORK/root/proc" "$WORK/root/sys" "$WORK/root/dev"
cp "$ROOT/bin/busybox" "$WORK/root/bin/busybox"
gcc -O2 -static -o "$WORK/root/bin/x87check" "$HERE/tools/emu_x87check.c" -lm
"$WORK/root/bin/x87check" > "$WORK/host.txt"
mknod "$WORK/root/dev/kmsg" c 1 11
mknod "$WORK/root/dev/console" c 5 1
mknod "$WORK/root/dev/null" c 1 3
cat > "$WORK/root/init" <<'INIT'
#!/bin/busybox sh
exec >/dev/kmsg 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
echo EMU-USERSPACE-OK
seq 1 5 | sha256sum
echo 'scale=20; 4*a(1)' | bc -l
head -c 100000 /dev/zero | gzip | gunzip | wc -c
x87check
echo EMU-DONE
exec sleep 1000000  # init must not exit; sleeping idles the CPU, which ends the run
INIT
chmod +x "$WORK/root/init"
(cd "$WORK/root" && find . | cpio -o -H newc 2>/dev/null | gzip) > "$WORK/initrd.gz"

"$BOOT" "$KERNEL" --initrd "$WORK/initrd.gz" --max-insns 4000000000 \
    --cmdline "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr lpj=4000000 tsc=reliable printk.devkmsg=on" \
    > "$WORK/console.txt" 2> "$WORK/report.txt" || true
cat "$WORK/report.txt"
sed -n 's/^\[ *[0-9.]*\] //p' "$WORK/console.txt" | tr -d '\r' > "$WORK/lines.txt"
grep -qx EMU-USERSPACE-OK "$WORK/lines.txt" || { echo "FAIL: user space did not start"; exit 1; }
grep -qx EMU-DONE "$WORK/lines.txt" || { echo "FAIL: user space did not finish"; exit 1; }
sed -n '/^sum /,/^double /p' "$WORK/lines.txt" > "$WORK/guest.txt"
if ! diff -u "$WORK/host.txt" "$WORK/guest.txt"; then
    echo "FAIL: x87check differs between the host and the engine"
    exit 1
fi
echo "OK: busybox user space ran and x87check matches the host"
