#!/usr/bin/env bash
# The GPU checks of one lent device session, in one call (see docs/BENCHMARKS.md):
#   1. bench.exact_gpu: the exact model's CUDA path against the CPU native step
#      (equal integer rows, equal tables, archives decoding both ways);
#   2. bench.gpu_bench on the exact default (PyTorch backend) at large batches.
# Run on the device machine from the repository root, with the linux-doc corpus
# carried to build/gpu-corpus (PYLLMCODEC_CORPUS_DIR).  Results go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYLLMCODEC_CORPUS_DIR=${PYLLMCODEC_CORPUS_DIR:-$PWD/build/gpu-corpus}
{ nvidia-smi -L; python -V; python -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())'; } 2>&1 | tee "$OUT/env.txt"
t0=$SECONDS
if ! python -c 'import pyllmcodec._core' 2>/dev/null; then
  # No PyPI there: build the extension by hand, as CMakeLists.txt does, with
  # pybind11's headers carried to build/pybind11-include.
  inc=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suf=$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  g++ -O3 -ffp-contract=off -fno-fast-math -std=c++17 -shared -fPIC -DNDEBUG \
    -Ibuild/pybind11-include -I"$inc" csrc/bindings.cpp -o "pyllmcodec/_core$suf" >"$OUT/install.log" 2>&1 \
    || { tail -20 "$OUT/install.log"; exit 2; }
fi
echo "install: $((SECONDS - t0)) s"
timeout "${EXACT_S:-170}" python -m bench.exact_gpu --cpu-threads "$(nproc)" --budget-s 60 \
  --batch-sizes 64,1024,4096 --json "$OUT/exact_gpu.json" 2>&1 | tee "$OUT/exact_gpu.md"
echo "exact_gpu rc=${PIPESTATUS[0]} at $((SECONDS - t0)) s"
timeout "${BENCH_S:-270}" python -m bench.gpu_bench --models default-exact --backends torch \
  --batch-sizes 1024,4096 --budget-s 200 --json "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.md"
echo "gpu_bench rc=${PIPESTATUS[0]} at $((SECONDS - t0)) s"
