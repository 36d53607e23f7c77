# Shared by guest/linux/run-qemu.sh, scripts/demo-linux.sh and bench/run.sh:
# the guest's network namespace, its disk, its command line, and the QEMU and
# popek command lines that give it the same devices. Source it; needs bash.

# The host end of the guest's TAP (the guest's init pings it).
LG_HOST_IP=10.0.77.1
LG_GUEST_IP=10.0.77.2
LG_TAP=lgtap0

lg_find() {  # lg_find TOOL: its path (also in the sbin directories), or fails
  PATH="$PATH:/usr/sbin:/sbin" command -v "$1" || { echo "$1 not found (see scripts/deps.sh)" >&2; return 1; }
}

# lg_netns_up NS: network namespace NS holding TAP $LG_TAP with $LG_HOST_IP/24, up.
lg_netns_up() {
  local ip
  ip=$(lg_find ip) || return 1
  "$ip" netns add "$1" &&
    "$ip" -n "$1" link set lo up &&
    "$ip" -n "$1" tuntap add dev "$LG_TAP" mode tap &&
    "$ip" -n "$1" addr add "$LG_HOST_IP/24" dev "$LG_TAP" &&
    "$ip" -n "$1" link set "$LG_TAP" up
}
lg_netns_down() { "$(lg_find ip)" netns del "$1" 2>/dev/null || true; }

# lg_make_disk IMG TOKEN: a 64 MiB ext4 image (mkfs.ext4 -d) holding host.txt.
lg_make_disk() {
  local dir
  dir=$(mktemp -d) || return 1
  echo "written by the host for token $2" > "$dir/host.txt"
  rm -f "$1" && truncate -s 64M "$1" && "$(lg_find mkfs.ext4)" -q -F -L popek -d "$dir" "$1"
  local rc=$?
  rm -rf "$dir"
  return $rc
}

# lg_cmdline MODE TOKEN: the kernel command line (see guest/linux/init).
# cryptomgr.notests skips the crypto self-tests (~15% of the boot's CPU time).
lg_cmdline() {
  echo "console=ttyS0 quiet panic=-1 cryptomgr.notests popek.mode=$1 popek.token=$2 popek.ip=$LG_GUEST_IP/24 popek.peer=$LG_HOST_IP"
}

# lg_qemu_argv GUESTDIR DISK CMDLINE HVCFILE: sets the array LG_ARGV to QEMU
# TCG on a q35 (PCIe ECAM + ACPI, like popek) with modern-only virtio-pci
# devices: blk on DISK, net on $LG_TAP (run it in the namespace), rng, and a
# virtconsole (hvc0) writing to HVCFILE. (Sharing stdio with the UART through
# a mux chardev would hand the console's input to hvc0, not to the shell.)
lg_qemu_argv() {
  LG_ARGV=(qemu-system-x86_64 -accel tcg -M q35 -m 256M -smp 1 -nodefaults -no-user-config -nographic -no-reboot
    -serial stdio
    -device virtio-serial-pci,disable-legacy=on -chardev "file,id=hvc,path=$4" -device virtconsole,chardev=hvc
    -drive "file=$2,if=none,format=raw,id=d0" -device virtio-blk-pci,drive=d0,disable-legacy=on
    -netdev "tap,id=n0,ifname=$LG_TAP,script=no,downscript=no" -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile=
    -device virtio-rng-pci,disable-legacy=on
    -kernel "$1/vmlinuz" -initrd "$1/initramfs.cpio" -append "$3")
}

# lg_popek_argv POPEK GUESTDIR DISK CMDLINE: the same guest on popek's emulation engine.
lg_popek_argv() {
  LG_ARGV=("$1" run --engine emu --memory 256M --cpus 1 --disk "$3" --net "tap=$LG_TAP" --rng --console virtio
    --kernel "$2/vmlinuz" --initrd "$2/initramfs.cpio" --cmdline "$4")
}

# lg_popek_has_emu POPEK: true once `popek run` has the --engine option.
lg_popek_has_emu() { "$1" run --help 2>/dev/null | grep -q -- '--engine'; }
