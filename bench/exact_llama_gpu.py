"""The exact SmolLM2 tier on an NVIDIA GPU: the PyTorch CUDA port
(:mod:`pyllmcodec.backends.exact_llama_torch`) against the numpy reference
(:mod:`pyllmcodec.nets.intllama`, the specification the native CPU step is
tested against bit for bit), in one short run.

    python -m bench.exact_llama_gpu --bundle DIR [--tokens FILE.npy] [--device cuda]

1. a random exact Llama of SmolLM2's widths (9 heads, 3 KV heads, d_mlp 1536,
   vocabulary 49152; 2 layers): 4 rows x 24 steps, rows equal?
2. the bundle at ``--bundle`` (on a device without the 98 MB GGUF: the real
   SmolLM2 integers cut to their first layers by ``--make-cut``), 3 rows of
   real text tokens: rows equal at every step?
3. steps/s of the port at a few batch sizes.

``--make-cut DIR --layers N`` (run where the GGUF is) writes that cut bundle
and the token file.  JSON to ``--json`` or ``$OUT/exact_llama_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_cut(out: Path, layers: int) -> None:
    from pyllmcodec.backends.exact_llama import load_exact_llama
    from pyllmcodec.models import smollm2
    from pyllmcodec.models.bundle import load_bundle
    from pyllmcodec.tokenizer import load_bundle_tokenizer

    src = load_bundle(smollm2.convert_exact())
    arrays = dict(load_exact_llama(src))
    keep = {k: v for k, v in arrays.items() if not (k.startswith("l") and k[1].isdigit()
                                                   and int(k[1:].split(".")[0]) >= layers)}
    keep["n_layer"] = np.int64(layers)
    _write_bundle(out, keep, "smollm2-135m-exact-cut")
    tok = load_bundle_tokenizer(src)
    assert tok is not None
    text = (Path(__file__).resolve().parent.parent / "README.md").read_bytes()[:4000]
    np.save(out / "tokens.npy", np.asarray(tok.tokenize(text), np.int64))


def _write_bundle(path: Path, arrays: dict[str, np.ndarray], name: str) -> Path:
    from pyllmcodec.models import smollm2
    from pyllmcodec.models.bundle import (
        BUNDLE_FORMAT,
        BUNDLE_VERSION,
        bundle_id,
        file_sha256,
        write_arrays,
        write_manifest,
    )
    from pyllmcodec.nets import intllama as il

    path.mkdir(parents=True, exist_ok=True)
    index = write_arrays(path / smollm2.EXACT_FILE, arrays)
    files = {smollm2.EXACT_FILE: file_sha256(path / smollm2.EXACT_FILE)}
    cfg = {k: int(arrays[k]) for k in ("n_layer", "d_model", "n_head", "n_kv_head", "d_mlp", "vocab")}
    write_manifest(path, {
        "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION, "name": name, "version": "0",
        "architecture": "llama-int", "numerics": il.NUMERICS,
        "vocab": {"kind": "ids", "size": cfg["vocab"], "bos": 1},
        "context_length": int(arrays["ctx"]), "config": cfg, "graphs": {}, "arrays": index, "files": files,
        "id": bundle_id(files)})
    return path


def _compare(model: Any, arrays: dict[str, np.ndarray], tokens: np.ndarray) -> dict[str, Any]:
    from pyllmcodec.nets import intllama as il

    M = il.from_arrays(arrays)
    T, B = tokens.shape
    rs, ds = il.RefState(M, B), model.new_state(B)
    equal = True
    t0 = time.perf_counter()
    for t in range(T):
        equal &= bool(np.array_equal(model.step(ds, tokens[t]), il.ref_step(M, rs, tokens[t])))
    return {"rows": B, "steps": T, "equal": equal, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.exact_llama_gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--make-cut", type=Path)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.make_cut:
        make_cut(a.make_cut, a.layers)
        return 0
    import torch

    from pyllmcodec.backends.exact_llama_torch import TorchExactLlamaStepModel
    from pyllmcodec.models.bundle import load_bundle
    from pyllmcodec.nets import intllama as il

    doc: dict[str, Any] = {"device": a.device, "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else None,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "exact_llama_gpu_random"
    arrays = il.random_arrays(7, n_head=9, n_kv_head=3, d_mlp=1536, vocab=49152, ctx=32)
    m = TorchExactLlamaStepModel(load_bundle(_write_bundle(tmp, arrays, "random")), device=a.device)
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 49152, (24, 4))
    tok[:, 0] = np.arange(24) % 900  # the large-embedding tokens too
    doc["random"] = _compare(m, arrays, tok)
    print("random model:", doc["random"], flush=True)
    if a.bundle:
        from pyllmcodec.backends.exact_llama import load_exact_llama

        b = load_bundle(a.bundle)
        m = TorchExactLlamaStepModel(b, device=a.device)
        toks = np.load(a.bundle / "tokens.npy")
        rows = np.stack([np.concatenate([[1], toks[s : s + 15]]) for s in (0, 200, 400)], 1)
        doc["cut"] = {"layers": int(b.manifest["config"]["n_layer"]),
                      **_compare(m, dict(load_exact_llama(b)), rows)}
        print("SmolLM2 cut:", doc["cut"], flush=True)
        rates = []
        for B in (16, 64, 256):
            st = m.new_state(B)
            tk = np.ones(B, np.int64)
            m.step(st, tk)
            t0 = time.perf_counter()
            for _ in range(8):
                m.step(st, tk)
            rates.append({"batch": B, "steps_per_s": round(8 / (time.perf_counter() - t0), 1)})
        doc["rates"] = rates
        print("rates:", rates, flush=True)
    out = a.json or (Path(os.environ["OUT"]) / "exact_llama_gpu.json" if os.environ.get("OUT") else None)
    if out:
        out.write_text(json.dumps(doc, indent=1))
    return 0 if doc["random"]["equal"] and doc.get("cut", {"equal": True})["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
