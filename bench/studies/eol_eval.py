"""What the line-ending transform (chunk methods 4/5, pyllmcodec/eol.py) is
worth: the ideal code length of files chunked as the codec chunks them, each
chunk scored as it is and as the encoder would code it (CR or space CR removed
before every LF where every line has it).

    python -m bench.studies.eol_eval FILE [FILE ...]                        # default byte model, 1 KiB chunks
    python -m bench.studies.eol_eval --model smollm2-135m --limit 36864 FILE  # token model (PyTorch forward), 6 KiB chunks

The byte model is scored with its teacher-forced ONNX graph
(bench.ideal), a token model with its PyTorch forward
(bench.ideal.llama_ideal_bits); both agree with the step graph the codec
runs far below a printed digit.  The codec's real numbers come from
``python -m bench`` and ``python -m bench.smollm2_eval``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path


def _byte_scorer(threads: int) -> tuple[Callable[[bytes], float], int]:
    from pyllmcodec.constants import DEFAULT_CHUNK_SIZE
    from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs
    from bench.ideal import ideal_bits

    bundle = load_bundle(shipped_bundle_dirs()[0])
    return (lambda chunk: ideal_bits(bundle, chunk, len(chunk) or 1, threads=threads)), DEFAULT_CHUNK_SIZE


def _token_scorer(name: str, threads: int) -> tuple[Callable[[bytes], float], int]:
    import torch

    from pyllmcodec.constants import DEFAULT_TOKEN_CHUNK_SIZE
    from pyllmcodec.models import load_model
    from bench.ideal import llama_ideal_bits as ideal_bits
    from pyllmcodec.nets.llama import Llama, LlamaConfig
    from pyllmcodec.backends.llama import load_weights

    torch.set_num_threads(threads)
    m = load_model(name, backend="torch", device="cpu", threads=threads)
    bundle = m.bundle
    cfg = LlamaConfig.from_dict(bundle.manifest["config"])
    weights, rope = load_weights(bundle)
    net = Llama(cfg, weights, rope)
    bos = int(bundle.manifest["vocab"]["bos"])

    def score(chunk: bytes) -> float:
        ids = m.tokenizer.tokenize(chunk)
        return ideal_bits(net, ids, bos, window=max(1, len(ids)))

    return score, DEFAULT_TOKEN_CHUNK_SIZE


def main() -> None:
    from pyllmcodec import eol

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--chunk-size", type=int, default=0, help="default: the codec's for the model")
    ap.add_argument("--limit", type=int, default=0, help="only the first N bytes of each file")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    score, chunk = _byte_scorer(a.threads) if a.model == "default" else _token_scorer(a.model, a.threads)
    chunk = a.chunk_size or chunk
    print(f"model {a.model}, chunks of {chunk} bytes: ideal bits/byte as is / with the eol transform")
    for f in a.files:
        data = f.read_bytes()
        if a.limit:
            data = data[: a.limit]
        t0 = time.time()
        plain = coded = 0.0
        n_eol = 0
        for s in range(0, len(data), chunk):
            c = data[s : s + chunk]
            bits = score(c)
            plain += bits
            m = eol.choose(c)
            n_eol += bool(m)
            coded += score(eol.strip(c, m)) if m else bits
        n = max(1, len(data))
        print(f"{f.name:20s} {len(data):9d} B  {plain / n:.4f} -> {coded / n:.4f} bits/byte "
              f"({n_eol} of {-(-len(data) // chunk)} chunks transformed, {time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
