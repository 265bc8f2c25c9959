"""Ideal code length of SmolLM2-135M on a file for several context windows.

    python -m bench.studies.smollm2_context FILE [--windows 4096,1664] [--threads 1] [--limit N]

Each window of ``W`` tokens is predicted from ``<|im_start|>`` and the window's
previous tokens (``bench.ideal.llama_ideal_bits``, a teacher-forced forward in
float64 log-softmax), so this answers "how much would a longer context give"
without the step loop.  The bundle's rotary tables stop at its
``max_context`` (2048), so they are recomputed here for 8192 positions, the
model's trained context, with the same formula (``llama.rope_tables``).
Measured 2026-11-27 on this 2-core machine: asyoulik 1.4504 bits/byte with
4096-token windows (~38 min on one niced core), against 1.4889 with the
codec's 6144-byte chunks (docs/SMOLLM2.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.smollm2_context", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--windows", default="4096,1664", help="comma-separated window lengths in tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, help="score only the first N bytes")
    a = ap.parse_args(argv)

    import torch

    from pyllmcodec.models import load_model
    from bench.ideal import llama_ideal_bits as ideal_bits
    from pyllmcodec.nets.llama import Llama, rope_tables

    torch.set_num_threads(a.threads)
    m = load_model("smollm2-135m", backend="torch")
    cfg = m.net.c
    windows = [int(w) for w in a.windows.split(",") if w.strip()]
    if not windows or min(windows) < 1 or max(windows) > cfg.ctx:
        raise SystemExit(f"windows must be in 1..{cfg.ctx} tokens")
    # a second module over the same weight tensors (no copy), not the cached model's
    net = Llama(cfg, m.net.w, rope_tables(cfg, cfg.ctx))
    with open(a.file, "rb") as fh:
        data = fh.read() if a.limit is None else fh.read(a.limit)
    toks = np.asarray(m.tokenizer.tokenize(data), dtype=np.int64)
    if m.tokenizer.detokenize(toks) != data:
        raise SystemExit("the tokenizer does not round-trip this file; score a text file")
    bos = int(m.bos)
    for w in windows:
        t0 = time.perf_counter()
        bits = ideal_bits(net, toks, bos, window=w)
        print(f"{a.file} window={w} tokens={len(toks)} bytes={len(data)} bits/byte={bits / len(data):.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
