"""Speed of the native exact Llama step (``pyllmcodec._core.IntLlama``,
csrc/intllama.hpp) on SmolLM2-135M: tokens/s over all rows (issue 20).

    python -m bench.studies.intllama_speed [--batch 32] [--position 850] [--threads 2] [--steps 16]

Builds the model from the installed GGUF (``pyllmcodec.models.smollm2``),
brings a fresh state to ``--position`` and times the next ``--steps`` steps.
The cache must really be in memory: a state merely moved there reads the
kernel's shared zero pages, which hides the cache's memory traffic (313 MB
a step at B=32 and position 850).  So by default one step is taken at every
32nd position before it (that writes every page of the cache; the zeros
between cost the kernels the same as real keys and values); ``--full-fill``
steps through every position (slow), ``--no-fill`` only moves the state
(optimistic).  Set PYLLMCODEC_KERNELS=generic to
time the baseline kernels.

Measured at B=32, position 850, 2 threads: 44.5 ms a step (~720 tokens/s) on
a 2-vCPU Zen 4 with the AVX-512 VNNI kernels (2026-12-04); on a 2-vCPU Zen 2
(AVX2, no AVX-512) 104-109 ms (295-309 tokens/s) with the AVX2 kernels,
1,048-1,102 ms with the auto-vectorised loops they replaced (2026-12-05;
docs/SMOLLM2.md).
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
    ap.add_argument("--no-fill", action="store_true", help="move the state instead of stepping to --position")
    ap.add_argument("--full-fill", action="store_true", help="step through every position before --position")
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
    out = np.empty((a.batch, model.vocab), np.uint32)
    rng = np.random.default_rng(0)
    if a.no_fill:
        state.position = a.position
        model.step(state, rng.integers(0, model.vocab, a.batch), out)  # warm up (page faults of the buffers)
    else:
        t0 = time.perf_counter()
        n = 0
        while state.position < a.position:
            if not a.full_fill:
                state.position = min(a.position - 1, state.position + 31)
            model.step(state, rng.integers(0, model.vocab, a.batch), out)
            n += 1
        dt = time.perf_counter() - t0
        print(f"{n} steps up to position {a.position - 1}: {a.batch * n / dt:.0f} tokens/s on average")
    t0 = time.perf_counter()
    for _ in range(a.steps):
        model.step(state, rng.integers(0, model.vocab, a.batch), out)
    dt = time.perf_counter() - t0
    print(f"B={a.batch} positions {state.position - a.steps}..{state.position - 1}: {dt / a.steps * 1e3:.1f} ms/step, "
          f"{a.batch * a.steps / dt:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
