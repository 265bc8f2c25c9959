#!/usr/bin/env bash
# tools/sanitize.sh -- AddressSanitizer + UndefinedBehaviorSanitizer run, and
# a leak check (docs/RELIABILITY.md, "Sanitizers").
#
#  1. Leak check of the C++ core: tools/coder_harness.cpp (round trips,
#     garbage streams, every error path) built with -fsanitize=address,undefined
#     and run with LeakSanitizer on; a copy with a planted leak must FAIL, so
#     the check is known to bite.  (Python itself leaks by design at exit, so
#     LeakSanitizer is not run over the interpreter.)
#  2. pyllmcodec._core built with the CMake option PYLLMCODEC_SANITIZE=ON into
#     build/sanitize/ (never touching the normal build), staged with the
#     package's Python files, and the native-heavy tests run against it with
#     the ASan runtime preloaded: tests/test_core_*.py, the codec round trips,
#     the match model (tests/test_mixer.py), the wave match (tests/test_wavematch.py), the context-mixing stage
#     (tests/test_cm_core.py, its long mode and cm2: tests/test_cm_long.py), the exact step (tests/test_intlm_core.py),
#     the exact Llama step (tests/test_intllama_native.py),
#     the integer quantizer (tests/test_quantize_int.py)
#     and the short fuzz runs.  UBSan is built non-recoverable: any report
#     aborts the test process.
#
# Usage: tools/sanitize.sh [extra pytest args]     (env: PYTHON, CXX, SANITIZE_DIR)
# Exit status 0 only if everything is clean.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-python3}
cxx=${CXX:-g++}
out=${SANITIZE_DIR:-$root/build/sanitize}
mkdir -p "$out"
t0=$(date +%s)

libasan=$($cxx -print-file-name=libasan.so)
libstdcxx=$($cxx -print-file-name=libstdc++.so)
[ -e "$libasan" ] || { echo "sanitize: no libasan.so for $cxx" >&2; exit 2; }

# ---------------------------------------------------------------- 1. leak check
flags=(-std=c++17 -O1 -g -Wno-psabi -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -Icsrc)
$cxx "${flags[@]}" tools/coder_harness.cpp -o "$out/coder_harness"
$cxx "${flags[@]}" -DPLANT_LEAK tools/coder_harness.cpp -o "$out/coder_harness_leaky"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ASAN_OPTIONS=detect_leaks=1 "$out/coder_harness" "${HARNESS_ITERATIONS:-300}"
if ASAN_OPTIONS=detect_leaks=1 "$out/coder_harness_leaky" 3 >"$out/leaky.log" 2>&1; then
  echo "sanitize: the planted leak was NOT detected -- the leak check is not working" >&2
  exit 1
fi
grep -q "detected memory leaks" "$out/leaky.log" || { echo "sanitize: leaky harness failed without a leak report" >&2; exit 1; }
echo "sanitize: leak check clean (and the planted leak was caught)"

# ---------------------------------------------------------------- 2. ASan/UBSan extension
if "$py" -c "import scikit_build_core, pybind11" 2>/dev/null; then iso=--no-build-isolation; else iso=; fi
rm -rf "$out/wheel" "$out/site"
"$py" -m pip wheel -q --no-deps $iso -w "$out/wheel" \
  -C build-dir="$out/cmake" -C cmake.define.PYLLMCODEC_SANITIZE=ON -C cmake.build-type=RelWithDebInfo .
"$py" -m zipfile -e "$out"/wheel/pyllmcodec-*.whl "$out/site"
# An editable install's import hook would load the normal build instead of
# the staged one: drop it (sitecustomize runs after .pth files).
cat >"$out/site/sitecustomize.py" <<'EOF'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
EOF
so=$(ls "$out"/site/pyllmcodec/_core*.so)
nm -D "$so" | grep -c __asan_init >/dev/null || { echo "sanitize: $so is not instrumented" >&2; exit 1; }

export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1:check_initialization_order=1
export PYTHONPATH="$out/site"
(cd "$out" && "$py" - "$out/site") <<'EOF'
import sys, pyllmcodec._core as c
assert c.__file__.startswith(sys.argv[1]), f"imported {c.__file__}, not the sanitizer build"
print(f"sanitize: testing {c.__file__}")
EOF
# run from the staging dir so that the source tree's pyllmcodec/ cannot shadow it
# (test_generic_kernels_give_identical_bits runs a child from the source tree,
# which has no extension: the generic kernels get a pass of their own instead)
log="$out/pytest.log"
pytest=("$py" -m pytest -q -p no:cacheprovider --benchmark-disable --rootdir "$root"
        -k "not test_generic_kernels_give_identical_bits and not test_kernel_copies_give_identical_rows")
(cd "$out" && "${pytest[@]}" "$root"/tests/test_core_*.py "$root/tests/test_codec.py" \
    "$root/tests/test_fuzz_short.py" "$root/tests/test_fuzz_regressions.py" "$root/tests/test_mixer.py" "$root/tests/test_wavematch.py" "$root/tests/test_cm_core.py" "$root/tests/test_cm_long.py" \
    "$root/tests/test_intlm_core.py" "$root/tests/test_intllama_native.py" "$root/tests/test_quantize_int.py" "$@") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "sanitize: again with the generic (non-AVX2) kernels" | tee -a "$log"
(cd "$out" && PYLLMCODEC_KERNELS=generic "${pytest[@]}" "$root"/tests/test_core_*.py "$@") 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$log"; then
  echo "sanitize: sanitizer report in $log" >&2
  status=1
fi
echo "sanitize: done in $(( $(date +%s) - t0 )) s, status $status"
exit "$status"
