"""Full-size evaluation of a token-level model (default: ``smollm2-135m``).

For every file of the chosen corpora and every chunk size, one real
``Compressor.compress`` run gives, at the same time:

* the archive size and the coded payload of the model-coded chunks;
* the model's ideal code length of exactly the symbols the coder coded: the
  core's ``BatchEncoder`` is wrapped so that each ``encode_probs`` call also
  adds ``-log2(p[sym] / sum(p))`` (float64) to its row before coding, so
  ``payload * 8 / ideal - 1`` is the coder's own overhead, measured on the same
  probabilities;
* compress throughput (and, with ``--verify``, decompress throughput and a
  byte-exact round trip).

Usage::

    python -m bench.smollm2_eval --corpora canterbury4,linux-doc-1MiB --out bench/results/smollm2-cpu.json
    python -m bench.smollm2_eval --corpora alice29,linux-doc-1MiB --limit 65536 --chunk-sizes 2048,4096,6144
    python -m bench.smollm2_eval --render results.jsonl [...]      # the Markdown table

Results are appended to ``--out`` (JSON lines) as each file finishes, so a long
run that is interrupted keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any

import numpy as np

__all__ = ["IdealCore", "evaluate_file"]


class _IdealEncoder:
    """A ``core.BatchEncoder`` that also sums each row's ideal code length."""

    def __init__(self, enc: Any, batch: int) -> None:
        self._enc = enc
        self.bits = np.zeros(batch, dtype=np.float64)

    def _add(self, p: np.ndarray, symbols: Any, rows: Any) -> None:
        s = np.asarray(symbols, dtype=np.int64)
        tot = p.sum(axis=1, dtype=np.float64)
        hit = p[np.arange(len(s)), s].astype(np.float64)
        bits = -np.log2(hit / tot)
        if rows is None:
            self.bits += bits
        else:
            np.add.at(self.bits, np.asarray(rows, dtype=np.int64), bits)

    def encode_probs(self, probs: Any, symbols: Any, rows: Any = None) -> None:
        self._add(np.asarray(probs), symbols, rows)
        self._enc.encode_probs(probs, symbols, rows=rows)

    def encode_weights(self, weights: Any, symbols: Any, rows: Any = None, **kw: Any) -> None:
        """An exact model's integer rows: the ideal length of its own weights
        (a zero weight, which the integer quantizer still codes, counts as
        the quantizer's floor of one count: see the payload column)."""
        w = np.maximum(np.asarray(weights, dtype=np.float64), 0.5)
        self._add(w, symbols, rows)
        self._enc.encode_weights(weights, symbols, rows=rows, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._enc, name)


class IdealCore:
    """Stands in for ``pyllmcodec.core`` in a ``WaveRunner``: everything is the
    real core, except that each ``BatchEncoder`` (one per wave) records its
    rows' ideal bits in ``waves``."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self.waves: list[np.ndarray] = []

    def BatchEncoder(self, batch: int, **kw: Any) -> _IdealEncoder:  # mirrors the core's name
        enc = _IdealEncoder(self._core.BatchEncoder(batch, **kw), batch)
        self.waves.append(enc.bits)
        return enc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


def evaluate_file(comp: Any, name: str, data: bytes, *, verify: bool) -> dict[str, Any]:
    """Compress ``data`` with ``comp`` (a ``pyllmcodec.Compressor``), return a row."""
    import pyllmcodec
    from pyllmcodec.constants import METHOD_NAMES, MODEL_METHODS
    from pyllmcodec.container import ArchiveIndex

    geometry = comp.geometry_for(len(data))
    chunks = comp.cut(memoryview(data), geometry)  # the chunks compress will code (split cells included)
    from pyllmcodec import scheduler

    session = comp.session(geometry)
    session.probe(max(1, min(len(chunks), comp.batch_size)))  # the first wave's batch: outside the timing
    # every WaveRunner made during compress (sessions are cheap and made per call) takes the wrapped core
    real_core = scheduler.core
    probe = IdealCore(real_core)
    scheduler.core = probe  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        blob = comp.compress(data)
        t_comp = time.perf_counter() - t0
    finally:
        scheduler.core = real_core
    ix = ArchiveIndex(blob)
    if len(ix.blocks) != len(probe.waves):
        raise RuntimeError(f"{len(ix.blocks)} blocks but {len(probe.waves)} coded waves")
    ideal = 0.0
    payload = 0
    model_raw = 0
    methods: dict[str, int] = {}
    for block, bits in zip(ix.blocks, probe.waves):
        for e in block.entries:
            methods[METHOD_NAMES[e.method]] = methods.get(METHOD_NAMES[e.method], 0) + 1
            if e.method in MODEL_METHODS:
                ideal += float(bits[e.row])
                payload += e.coded_len
                model_raw += e.raw_len
    from pyllmcodec import eol

    coded = [bytes(c) for c in chunks]  # as the encoder codes them (line-ending transform)
    if comp.eol:
        coded = [eol.encoded(c)[1] for c in coded]
    tokens = sum(len(t) for t in comp.model.tokenizer.tokenize_batch(coded))
    row: dict[str, Any] = {
        "file": name,
        "bytes": len(data),
        "chunk_size": comp.chunk_size,
        "batch_size": comp.batch_size,
        "tokens": tokens,
        "bytes_per_token": len(data) / tokens if tokens else math.nan,
        "chunks": methods,
        "archive_bytes": len(blob),
        "archive_bits_per_byte": 8 * len(blob) / len(data),
        "model_raw_bytes": model_raw,
        "payload_bytes": payload,
        "payload_bits_per_byte": 8 * payload / model_raw if model_raw else math.nan,
        "ideal_bits_per_byte": ideal / model_raw if model_raw else math.nan,
        "coder_overhead_pct": 100 * (8 * payload / ideal - 1) if ideal else math.nan,
        "compress_s": t_comp,
        "compress_Bps": len(data) / t_comp,
        "compress_tok_s": tokens / t_comp,
    }
    if verify:
        t0 = time.perf_counter()
        out = pyllmcodec.decompress(blob, model=comp.model)
        row["decompress_s"] = time.perf_counter() - t0
        row["decompress_Bps"] = len(data) / row["decompress_s"]
        if out != data:
            raise RuntimeError(f"{name}: round trip FAILED")
        row["round_trip"] = "ok"
    return row


def render(paths: list[str]) -> str:
    """A Markdown table of the rows in JSON-lines files, with a total per corpus."""
    rows = []
    for p in paths:
        with open(p) as fh:
            rows += [json.loads(ln) for ln in fh if ln.strip()]
    out = [("| corpus | file | chunk | bytes | bytes/token | chunks (methods) | ideal bits/byte | payload bits/byte "
            "| coder overhead | archive bits/byte | compress B/s | decompress B/s |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by_corpus: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        by_corpus.setdefault((r["corpus"], r["chunk_size"]), []).append(r)
        methods = ", ".join(f"{v} {k}" for k, v in r["chunks"].items() if v)
        dec = f"{r['decompress_Bps']:.0f}" if "decompress_Bps" in r else "-"
        out.append(f"| {r['corpus']} | {r['file']} | {r['chunk_size']} | {r['bytes']} | {r['bytes_per_token']:.2f} "
                   f"| {methods} | {r['ideal_bits_per_byte']:.4f} | {r['payload_bits_per_byte']:.4f} "
                   f"| {r['coder_overhead_pct']:+.3f}% | {r['archive_bits_per_byte']:.4f} "
                   f"| {r['compress_Bps']:.0f} | {dec} |")
    for (corpus, cs), rs in by_corpus.items():
        if len(rs) < 2:
            continue
        n = sum(r["bytes"] for r in rs)
        m = sum(r["model_raw_bytes"] for r in rs)
        ideal = sum(r["ideal_bits_per_byte"] * r["model_raw_bytes"] for r in rs)
        pay = sum(r["payload_bytes"] for r in rs) * 8
        arc = sum(r["archive_bytes"] for r in rs) * 8
        t = sum(r["compress_s"] for r in rs)
        out.append(f"| **{corpus}** | all {len(rs)} | {cs} | {n} | | | **{ideal / m:.4f}** | **{pay / m:.4f}** "
                   f"| {100 * (pay / ideal - 1):+.3f}% | **{arc / n:.4f}** | {n / t:.0f} | |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from bench.corpora import load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="comma-separated: measured in turn in one run")
    ap.add_argument("--corpora", default="canterbury4,linux-doc-1MiB")
    ap.add_argument("--chunk-sizes", default="4096", help="comma-separated, bytes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N bytes of each file")
    ap.add_argument("--only", default="", help="comma-separated file names: measure only these")
    ap.add_argument("--verify", action="store_true", help="also decompress and compare (doubles the time)")
    ap.add_argument("--out", default="", help="append one JSON line per file here")
    ap.add_argument("--render", nargs="+", metavar="JSONL", help="print the Markdown table of earlier runs and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(render(args.render))
        return 0

    import onnxruntime

    import pyllmcodec
    from pyllmcodec.models import load_model

    for name in args.model.split(","):  # several models: measured one after the other in this run
        model = load_model(name, threads=args.threads)
        machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                   "onnxruntime": onnxruntime.__version__, "backend": type(model).__name__,
                   "threads": args.threads, "date": time.strftime("%Y-%m-%d")}
        print(json.dumps({"model": name, **machine}), flush=True)
        hdr = (f"{'file':22} {'chunk':>5} {'bytes':>8} {'B/tok':>5} {'ideal':>7} {'payload':>7} {'archive':>7} "
               f"{'coder%':>7} {'comp B/s':>8} {'dec B/s':>8}")
        print(hdr, flush=True)
        for cs in [int(x) for x in args.chunk_sizes.split(",")]:
            comp = pyllmcodec.Compressor(model, chunk_size=cs, batch_size=args.batch_size)
            for cname in args.corpora.split(","):
                for fname, data in load_corpus(cname).files:
                    if args.only and fname not in args.only.split(","):
                        continue
                    if args.limit:
                        data = data[: args.limit]
                    row = evaluate_file(comp, fname, data, verify=args.verify)
                    row.update(corpus=cname, model=name, limit=args.limit, **machine)
                    print(f"{fname:22} {cs:5d} {len(data):8d} {row['bytes_per_token']:5.2f} "
                          f"{row['ideal_bits_per_byte']:7.4f} {row['payload_bits_per_byte']:7.4f} "
                          f"{row['archive_bits_per_byte']:7.4f} {row['coder_overhead_pct']:7.4f} "
                          f"{row['compress_Bps']:8.0f} {row.get('decompress_Bps', math.nan):8.0f}", flush=True)
                    if args.out:
                        with open(args.out, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
        del model, comp
    return 0


if __name__ == "__main__":
    sys.exit(main())
