"""Speed of the native exact Llama step (``pyllmcodec._core.IntLlama``,
csrc/intllama.hpp) on SmolLM2-135M: tokens/s over all rows (issue 20).

    python -m bench.studies.intllama_speed [--batch 32] [--position 850] [--threads 2] [--steps 16]

Builds the model from the installed GGUF (``pyllmcodec.models.smollm2``),
moves a fresh state to ``--position`` (the cache holds zeros there, which
costs the same as real keys and values: the kernels read every cached
position) and times ``--steps`` steps.  Set PYLLMCODEC_KERNELS=generic to
time the baseline kernels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.intllama_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--position", type=int, default=850, help="position of the first timed step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16)
    a = ap.parse_args(argv)

    from pyllmcodec import _core
    from pyllmcodec.models import smollm2
    from pyllmcodec.nets import intllama

    if not smollm2.available():
        print("the SmolLM2 GGUF is not installed")
        return 1
    t0 = time.perf_counter()
    arrays = smollm2.int_arrays(*smollm2.read_gguf_ints(smollm2.gguf_path()))
    model = _core.IntLlama(arrays, intllama.load_tables(), a.threads)
    print(f"load {time.perf_counter() - t0:.1f} s, kernels {model.kernels}, threads {a.threads}")
    state = model.new_state(a.batch)
    state.position = a.position
    out = np.empty((a.batch, model.vocab), np.uint32)
    rng = np.random.default_rng(0)
    model.step(state, rng.integers(0, model.vocab, a.batch), out)  # warm up (page faults of the buffers)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        model.step(state, rng.integers(0, model.vocab, a.batch), out)
    dt = time.perf_counter() - t0
    print(f"B={a.batch} positions {a.position + 1}..{a.position + a.steps}: {dt / a.steps * 1e3:.1f} ms/step, "
          f"{a.batch * a.steps / dt:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
