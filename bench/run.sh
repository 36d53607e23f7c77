#!/usr/bin/env bash
# popek vs QEMU-KVM on the probe guest, in one run. Prints a Markdown table.
set -euo pipefail
BUILD=${1:-build}
"$BUILD/bin/popek_vmm_bench" --popek "$BUILD/bin/popek" --probe "$BUILD/guest/probe.elf" \
  --runs "${BENCH_RUNS:-10}" --exits "${BENCH_EXITS:-1000000}"
