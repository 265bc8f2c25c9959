"""Bits/byte of a model on files, chunked exactly as the codec chunks.

    python training/evaluate.py FILE [FILE ...] [--bundle DIR | --model default] [--chunk-size N] [--prime K]
        [--no-mixer]

Each file is cut into chunks of ``--chunk-size`` bytes (the last one shorter;
default: what ``compress()`` picks for the file's size at the default batch
size, ``Compressor.chunk_size_for``); each chunk is scored from BOS on,
as the codec codes it: a chunk longer than the context in segments, each after
``--prime`` bytes of context; a chunk whose every line ends in CR LF without
the CR, as the encoder does (``--no-eol`` scores it as it is).  The ideal code
length is the sum of -log2 p(byte) from the model's float probabilities; the
probabilities go through the bundle's match model where it ships one, as the
codec codes them (``--no-mixer``: the model alone).  The
teacher-forced ONNX graph is used for speed (it agrees with the step graph the
codec runs to ~1e-6 in probability, far below what changes a printed digit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.ideal, this checkout's pyllmcodec


def bits_per_byte(data: bytes, bundle, chunk_size: int, threads: int | None = None, eol: bool = True,
                  prime: int = 0, mixer=None, context: int | None = None) -> float:
    from bench.ideal import ideal_bits

    return ideal_bits(bundle, data, chunk_size, threads=threads, eol=eol, prime=prime,
                      mixer=mixer, context=context) / max(1, len(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--chunk-size", type=int, help="default: the codec's default for the model")
    ap.add_argument("--prime", type=int, help="default: the codec's, for chunks longer than the context")
    ap.add_argument("--context", type=int, help="the segments' length (default: the codec's for the model)")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N bytes of each file")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--no-eol", dest="eol", action="store_false",
                    help="score CR LF chunks as they are (default: as the codec codes them, CR removed)")
    ap.add_argument("--no-mixer", dest="mixer", action="store_false",
                    help="score the model alone (default: through the bundle's match model, as the codec codes)")
    a = ap.parse_args()
    from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs

    if a.bundle:
        b = load_bundle(a.bundle)
    else:
        import json

        dirs = [d for d in shipped_bundle_dirs()
                if json.loads((d / "manifest.json").read_text())["name"] == a.model]
        if not dirs:
            sys.exit(f"no shipped bundle named {a.model!r}")
        b = load_bundle(dirs[0])
    # the geometry the codec itself picks for this model and these options
    from pyllmcodec import Compressor
    from pyllmcodec.backends import open_bundle

    comp = Compressor(open_bundle(b, device="cpu", backend="onnxruntime", threads=1),
                      chunk_size=a.chunk_size, prime=a.prime, mixer=None if a.mixer else False, context=a.context)
    prime, mixer = comp.prime, comp.mixer
    print(("chunks as compress() picks them per file (batch 32)" if comp.plan.auto_chunk else f"chunks of {comp.chunk_size} bytes")
          + (f", segments of {comp.context} primed with {prime}" if prime else "")
          + (f", match model {mixer.digest}" if mixer else ", no match model"))
    tot_bits = tot_bytes = 0.0
    for f in a.files:
        data = f.read_bytes()
        if a.limit:
            data = data[: a.limit]
        t0 = time.time()
        chunk = comp.chunk_size_for(len(data))
        bpb = bits_per_byte(data, b, chunk, threads=a.threads, eol=a.eol, prime=prime, mixer=mixer,
                            context=comp.context)
        tot_bits += bpb * len(data)
        tot_bytes += len(data)
        print(f"{f.name:30s} {len(data):10d} B  {bpb:.4f} bits/byte  chunks of {chunk}  ({time.time() - t0:.1f} s)")
    if len(a.files) > 1:
        print(f"{'total':30s} {int(tot_bytes):10d} B  {tot_bits / tot_bytes:.4f} bits/byte")


if __name__ == "__main__":
    main()
