#!/usr/bin/env bash
# Installs what popek needs to build, test, demo and benchmark on Debian 12.
# Only asks apt when something is missing, so repeated runs are instant.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config ccache
  libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  liburing-dev libboost1.81-dev libzydis-dev libxxhash-dev libzstd-dev liblz4-dev
  acpica-tools qemu-system-x86 qemu-utils
  iproute2 procps
  cpio kmod e2fsprogs  # the Linux guest: initramfs, modules.dep, ext4 image (busybox-static is downloaded, not installed)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
