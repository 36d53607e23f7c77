#!/usr/bin/env bash
# Runs libFuzzer targets for a bounded time each.
#   fuzz/run.sh SECONDS [TARGET...]     (default: every fuzz_* target built)
# Targets come from $FUZZ_BUILD/bin (default build-fuzz, see `make build-fuzz`).
# Seeds are read from fuzz/corpus/<target>/; new inputs go to
# $FUZZ_BUILD/fuzz-corpus/<target>/ and crashes to $FUZZ_BUILD/fuzz-artifacts/.
# Exits non-zero if any target crashed, leaked, timed out or failed to start.
set -uo pipefail

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
src=$(cd "$(dirname "$0")" && pwd)
build=${FUZZ_BUILD:-$src/../build-fuzz}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "fuzz: no build directory ${FUZZ_BUILD:-build-fuzz}; run make build-fuzz" >&2; exit 2; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for bin in "$build"/bin/fuzz_*; do
    [ -x "$bin" ] && targets+=("$(basename "$bin")")
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets in $build/bin; run make build-fuzz" >&2
  exit 2
fi

failed=()
for t in "${targets[@]}"; do
  bin=$build/bin/$t
  if [ ! -x "$bin" ]; then
    echo "fuzz: $t is not built ($bin)" >&2
    failed+=("$t")
    continue
  fi
  work=$build/fuzz-corpus/$t
  artifacts=$build/fuzz-artifacts/$t
  mkdir -p "$work" "$artifacts"
  dirs=("$work")
  [ -d "$src/corpus/$t" ] && dirs+=("$src/corpus/$t")
  # fuzz/<target>.options: extra libFuzzer flags for that target (e.g. -max_len).
  opts=()
  [ -f "$src/$t.options" ] && read -r -a opts <"$src/$t.options"
  log=$build/fuzz-artifacts/$t.log
  echo "fuzz: $t for ${seconds}s (log $log)"
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" ${opts[@]+"${opts[@]}"} "${dirs[@]}" >"$log" 2>&1
  rc=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb):' "$log" |
    sed "s/^/fuzz: $t /"
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $rc); reproduce with: $bin <artifact>; tail of the log:" >&2
    tail -n 40 "$log" >&2
    ls "$artifacts" >&2
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without a crash"
