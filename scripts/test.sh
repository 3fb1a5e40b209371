#!/usr/bin/env bash
# Builds Meridian and runs every test: the criterion unit tests, then the
# black-box tests that start the real binary against real backends.
#   scripts/test.sh              normal build in build/
#   scripts/test.sh --sanitize   ASan + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${1:-}" = "--sanitize" ]; then
  build=build-asan
  flags=(-DCMAKE_BUILD_TYPE=Debug -DMERIDIAN_SANITIZE=ON)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
cmake -S . -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"

echo "== unit tests ($build)"
"./$build/unit_tests" --jobs 2

echo "== black-box tests ($build): proxy, WAN emulator, replication, consistency history"
export MERIDIAN_BIN="$PWD/$build/meridian"
# Debian's pytest, whatever python3 comes first on PATH.
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/blackbox tests/wan tests/replication \
  tests/consistency
