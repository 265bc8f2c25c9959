"""Bare step loop vs compress vs decompress of one model on this machine.

    python -m bench.codec_speed                                  # default model, 128 KiB of generated text
    python -m bench.codec_speed --sweep-chunks 512,1024,2048     # compare chunk sizes
    python -m bench.codec_speed --model NAME --batch-size 64 --chunk-size 4096 --json

Generated English-like text (:func:`bench_text`), one model session, the
same batch geometry for all three rows, one run: the bare step loop over the
chunks ``compress()`` would code (what the model alone costs), ``compress``
and ``decompress`` (round trip checked).  Prints MB/s, the codec's share of
the bare loop's speed and the ratio.  The full comparison with other
compressors and corpora is ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pyllmcodec.constants import DEFAULT_BATCH_SIZE
from pyllmcodec.errors import CodecError, ModelError, NumericsMismatchError

_DEVICES = ("auto", "cpu", "cuda")
_BACKENDS = ("auto", "onnxruntime", "torch")


def bench_text(size: int, seed: int = 7) -> bytes:
    """Deterministic English-like text for the benchmark."""
    import numpy as np

    words = (b"the of and to in is that it for as with was on be by this are from at or an not "
             b"model byte code data chunk stream batch compress language probability arithmetic "
             b"coder entropy ratio wave row context token machine number file text").split()
    rng = np.random.default_rng(seed)
    out = bytearray()
    while len(out) < size:
        n = int(rng.integers(5, 15))
        sent = b" ".join(words[int(i)] for i in rng.integers(0, len(words), n))
        out += sent[:1].upper() + sent[1:] + b". "
        if rng.random() < 0.1:
            out += b"\n"
    return bytes(out[:size])


def run_bench(model: Any, size: int, batch_size: int, chunk_size: int | None,
              device: str = "auto", backend: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Bare step loop vs compress vs decompress on generated text, same model
    session, same batch geometry, one run.  Returns MB/s, ratio and the
    codec/bare throughput fractions."""
    from pyllmcodec.codec import Compressor, Decompressor

    # fallback="stored": every chunk the model shrinks is model-coded, so the
    # timings measure the model path rather than a DEFLATE shortcut
    comp = Compressor(model, device=device, backend=backend, threads=threads,
                      chunk_size=chunk_size, batch_size=batch_size, fallback="stored")
    dec = Decompressor(comp.model)
    data = bench_text(size)
    chunk = comp.chunk_size_for(len(data))  # the geometry compress() will pick
    geometry = comp.geometry_for(len(data))
    runner = comp.session(geometry).runner
    chunks = comp.cut(memoryview(data), geometry)
    dec.decompress(comp.compress(data[: comp.chunk_size]))  # warm-up; probes cached
    t0 = time.perf_counter()
    for s in range(0, len(chunks), comp.batch_size):
        runner.bare_wave(len(chunks[s : s + comp.batch_size]), chunks[s : s + comp.batch_size])
    t_bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = comp.compress(data)
    t_comp = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = dec.decompress(blob)
    t_dec = time.perf_counter() - t0
    if back != data:
        raise CodecError("bench: round trip failed")
    from pyllmcodec.codec import info

    methods = info(blob)["methods"]
    mb = len(data) / 1e6
    return {
        "model": comp.model.name, "fingerprint": comp.model.fingerprint(), "bytes": len(data),
        "batch_size": comp.batch_size, "chunk_size": chunk,
        "bare_mb_s": mb / t_bare, "compress_mb_s": mb / t_comp, "decompress_mb_s": mb / t_dec,
        "compress_vs_bare": t_bare / t_comp, "decompress_vs_bare": t_bare / t_dec,
        "ratio": len(blob) / len(data), "bits_per_byte": 8 * len(blob) / len(data),
        "methods": methods,
    }


def _parser() -> argparse.ArgumentParser:
    pb = argparse.ArgumentParser(prog="python -m bench.codec_speed", description=__doc__.split("\n\n")[0],
                                 epilog="full comparison with other compressors and corpora: python -m bench")
    pb.add_argument("--model", default="default")
    pb.add_argument("--device", default="auto", choices=_DEVICES)
    pb.add_argument("--backend", default="auto", choices=_BACKENDS)
    pb.add_argument("--threads", type=int)
    pb.add_argument("--size", type=int, default=1 << 17, help="bytes of generated text (default %(default)s)")
    pb.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    pb.add_argument("--chunk-size", type=int)
    pb.add_argument("--sweep-chunks", metavar="LIST", help="comma-separated chunk sizes to compare, e.g. 512,1024,2048")
    pb.add_argument("--json", action="store_true", help="print JSON")
    return pb


def _report(args: Any) -> int:
    if args.sweep_chunks:
        sizes = [int(x) for x in args.sweep_chunks.split(",") if x.strip()]
        rows = [run_bench(args.model, args.size, args.batch_size, c, args.device, args.backend, args.threads)
                for c in sizes]
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        print(f"model {rows[0]['model']}  batch {args.batch_size}  {rows[0]['bytes']} bytes of generated text")
        print("  chunk   bits/byte   bare MB/s  compress MB/s  decompress MB/s")
        for r in rows:
            print(f"  {r['chunk_size']:5d}   {r['bits_per_byte']:9.4f}   {r['bare_mb_s']:9.4f}  "
                  f"{r['compress_mb_s']:13.4f}  {r['decompress_mb_s']:15.4f}")
        return 0
    r = run_bench(args.model, args.size, args.batch_size, args.chunk_size,
                  args.device, args.backend, args.threads)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
        return 0
    print(f"model {r['model']}  batch {r['batch_size']} x chunk {r['chunk_size']}  "
          f"{r['bytes']} bytes of generated text")
    print(f"  bare step loop  {r['bare_mb_s']:9.4f} MB/s")
    print(f"  compress        {r['compress_mb_s']:9.4f} MB/s  ({r['compress_vs_bare']:.0%} of bare)")
    print(f"  decompress      {r['decompress_mb_s']:9.4f} MB/s  ({r['decompress_vs_bare']:.0%} of bare)")
    print(f"  ratio           {r['ratio']:.4f}  ({r['bits_per_byte']:.3f} bits/byte; chunks {r['methods']})")
    print("full comparison with other compressors and corpora: python -m bench")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit status is the CLI's: 2 bad arguments, 3 a
    failed round trip, 4 a missing model or numerics mismatch."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors exit 2, --help 0
        return int(exc.code or 0)
    try:
        return _report(args)
    except ValueError as exc:
        print(f"codec_speed: {exc}", file=sys.stderr)
        return 2
    except (ModelError, NumericsMismatchError) as exc:
        print(f"codec_speed: {exc}", file=sys.stderr)
        return 4
    except CodecError as exc:
        print(f"codec_speed: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
