"""GPU throughput of pyllmcodec against batch size, for a machine with one
NVIDIA GPU and no network.

    python -m bench.gpu_bench                       # CUDA, B = 256..8192, under 8 minutes
    python -m bench.gpu_bench --device cpu --quick  # the same logic on CPU, tiny batches (a smoke test)

For each model (the default first, then every other registered model; test
models excluded) and each backend (PyTorch always; ONNX Runtime only when its
CUDAExecutionProvider is importable), and for each batch size B, it
compresses ``waves`` full waves (B chunks each, so every row is busy),
decompresses them, checks the round trip, and prints MB/s of original data.
The first call per model/backend (CUDA init, allocator, kernel selection) is
a warm-up and not timed.

Data (no network needed): the cached linux-doc corpus if present
(``python -m bench --fetch-only`` fills the cache), else the Canterbury texts,
else this Python's own standard-library sources, joined in sorted path order
and repeated up to the needed size.

Budget: sizes go up in doubling steps; a step whose projected time (twice the
previous step's) would overrun ``--budget-s`` (default 420 s) is skipped and
listed, so the whole run stays under 8 minutes.  Results are printed as a
table and written as JSON (``--json``, default ``$OUT/gpu_bench.json`` when
``$OUT`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

DEFAULT_BATCHES = (256, 512, 1024, 2048, 4096, 8192)
QUICK_BATCHES = (2, 4, 8)


def _log(msg: str) -> None:
    print(f"[gpu_bench] {msg}", file=sys.stderr, flush=True)


def text_data(nbytes: int) -> tuple[bytes, str]:
    """``nbytes`` of English-ish text available offline, and where it came from."""
    from .corpora import cache_dir

    root = cache_dir()
    for path, what in ((root / "linux-doc" / "linux-doc-6.1-10MiB.txt", "linux-doc-6.1 (cached)"),):
        if path.is_file():
            data = path.read_bytes()
            if len(data) >= nbytes:
                return data[:nbytes], what
    canterbury = sorted((root / "canterbury").glob("*.txt"))
    pieces: list[bytes] = [p.read_bytes() for p in canterbury]
    what = "Canterbury (cached)"
    if sum(map(len, pieces)) < nbytes:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
        pieces = []
        total = 0
        for p in files:
            try:
                b = p.read_bytes()
            except OSError:
                continue
            pieces.append(b)
            total += len(b)
            if total >= nbytes:
                break
        what = f"Python {platform.python_version()} stdlib sources"
    data = b"".join(pieces)
    if not data:
        raise RuntimeError("no offline text found")
    while len(data) < nbytes:
        data += data
    return data[:nbytes], what


def _api() -> tuple[Any, Any]:
    from .llm import _api as api

    return api()


def _gpu_name(device: str) -> str:
    if not device.startswith("cuda"):
        return platform.processor() or platform.machine()
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception as e:  # informative only
        return f"? ({e})"


def _backends(device: str, only: list[str] | None) -> list[str]:
    out = ["torch"]
    if device.startswith("cuda"):
        try:
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                out.append("onnxruntime")
        except ImportError:
            pass
    else:
        out.append("onnxruntime")
    return [b for b in out if only is None or b in only]


def _models(only: list[str] | None, quick: bool) -> list[str]:
    """``only``, else the default model then every other registered one (test
    models excluded); with ``quick``, the default model alone."""
    if only:
        return only
    from pyllmcodec.models import available_models

    names = [m for m in available_models() if not m.startswith(("test-", "bench-"))]
    ordered = (["default"] if "default" in names else []) + [m for m in names if m != "default"]
    return ordered[:1] if quick else ordered


_chunk_cache: dict[tuple[str, str, str], int] = {}
_decompressors: dict[tuple[str, str, int], Any] = {}


#: the memory a wave may take here (the library's default is 4 GiB, 2048 rows
#: of the default model; a GPU machine has far more, and both ends must agree)
MAX_MEMORY = 96 << 30


def _decompressor(device: str, backend: str, batch: int) -> Any:
    """A reusable Decompressor that accepts the waves ``measure`` writes."""
    from pyllmcodec.codec import Decompressor

    key = (device, backend, MAX_MEMORY)
    if key not in _decompressors:
        _decompressors[key] = Decompressor(device=device, backend=backend, max_memory=MAX_MEMORY)
    return _decompressors[key]


def _free_gpu_memory() -> None:
    from pyllmcodec.models import clear_cache

    _decompressors.clear()
    clear_cache()  # the registry's loaded models
    try:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _default_chunk(model: str, device: str, backend: str) -> int:
    """The library's default chunk size for this model."""
    key = (model, device, backend)
    if key not in _chunk_cache:
        from pyllmcodec.codec import Compressor

        # the library's own choice: 1 KiB (capped by the context) for byte models,
        # DEFAULT_TOKEN_CHUNK_SIZE bytes for token-level ones
        _chunk_cache[key] = Compressor(model, device=device, backend=backend).chunk_size
    return _chunk_cache[key]


def measure(model: str, backend: str, device: str, batch: int, chunk: int | None, waves: int,
            data_for: Any) -> dict[str, Any]:
    """One (model, backend, B) cell: compress + decompress ``waves`` full waves."""
    compress, _ = _api()
    chunk_size = chunk or _default_chunk(model, device, backend)
    data, _ = data_for(batch * chunk_size * waves)
    t0 = time.perf_counter()
    blob = compress(data, model, device=device, backend=backend, batch_size=batch, chunk_size=chunk_size,
                    max_memory=MAX_MEMORY)
    t1 = time.perf_counter()
    back = _decompressor(device, backend, batch).decompress(blob)
    t2 = time.perf_counter()
    ok = bytes(back) == data
    return {"model": model, "backend": backend, "device": device, "batch_size": batch,
            "chunk_size": chunk_size, "bytes": len(data), "bits_per_byte": 8 * len(blob) / len(data),
            "compress_MBps": len(data) / 1e6 / (t1 - t0), "decompress_MBps": len(data) / 1e6 / (t2 - t1),
            "compress_s": t1 - t0, "decompress_s": t2 - t1, "verified": ok}


def devquant_check(device: str, batch: int = 256, vocab: int = 49152, repeats: int = 5) -> dict[str, Any]:
    """The large-vocabulary step's device quantizer on ``device``: whether its
    in-order scan passed the self-check, whether its tables equal
    ``core.quantize`` on softmax rows of SmolLM2's shape, and the median time
    of one encoder-side ``symbol_ranges`` call (scan path and the plain block
    loop) at ``batch`` rows."""
    import numpy as np
    import torch

    from pyllmcodec import core
    from pyllmcodec.backends import devquant

    P = core.DEFAULT_PRECISION
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(batch, vocab, generator=g) * 6
    probs = torch.softmax(logits, -1).to(device)
    probs[1] *= 1e-25  # a tiny row (pre = 2^100)
    out: dict[str, Any] = {"batch": batch, "vocab": vocab,
                           "scan_in_order": devquant.scan_is_sequential(device, vocab // 32)}
    rows = min(batch, 32)
    want = core.quantize(probs[:rows].cpu().numpy(), precision=P).astype(np.int64)
    out["tables_equal_core"] = bool(np.array_equal(devquant.quantize(probs[:rows], P).cpu().numpy(), want))
    sym = torch.randint(0, vocab, (batch,), generator=g).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn: Any) -> float:
        ts = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[len(ts) // 2]

    out["symbol_ranges_ms"] = round(1e3 * timed(lambda: devquant.symbol_ranges(probs, sym, P)), 3)
    saved = devquant._scan_lanes
    try:  # the fallback a device gets when its scan fails the self-check
        devquant._scan_lanes = devquant._loop_lanes
        out["symbol_ranges_loop_ms"] = round(1e3 * timed(lambda: devquant.symbol_ranges(probs, sym, P)), 3)
    finally:
        devquant._scan_lanes = saved
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.plugin:
        import importlib

        importlib.import_module(a.plugin)
    t_start = time.perf_counter()
    batches = a.batch_sizes or (QUICK_BATCHES if a.quick else DEFAULT_BATCHES)
    chunk = a.chunk_size or (256 if a.quick else None)
    doc: dict[str, Any] = {"device": a.device, "gpu": _gpu_name(a.device), "python": platform.python_version(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": [],
                           "skipped": []}
    cache: dict[int, tuple[bytes, str]] = {}

    def data_for(n: int) -> tuple[bytes, str]:
        if n not in cache:
            cache[n] = text_data(n)
            doc["data"] = cache[n][1]
        return cache[n]

    try:
        import torch

        doc["torch"] = torch.__version__
        if a.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("CUDA is not available to torch; use --device cpu for a smoke test")
    except ImportError:
        doc["torch"] = None
    if doc["torch"] is not None and not a.no_devquant:
        try:
            _log("device quantizer check")
            doc["devquant"] = devquant_check(a.device, batch=8 if a.quick else 256, repeats=2 if a.quick else 5)
            _log(f"device quantizer: {doc['devquant']}")
        except Exception as e:  # informative; the round trips below still decide
            doc["skipped"].append(f"device quantizer check: {type(e).__name__}: {str(e)[:300]}")
    models = _models(a.models, a.quick)
    if not models:
        doc["skipped"].append("no model registered (is the default model bundle built and shipped?)")
    for model in models:
        for backend in _backends(a.device, a.backends):
            label = f"{model}/{backend}"
            if time.perf_counter() - t_start > a.budget_s:
                doc["skipped"].append(f"{label}: not started, the {a.budget_s:.0f} s budget is spent")
                continue
            try:
                _log(f"{label}: warm-up")
                w0 = time.perf_counter()
                measure(model, backend, a.device, batches[0], chunk, 1, data_for)
                doc.setdefault("warmup_s", {})[label] = round(time.perf_counter() - w0, 2)
            except Exception as e:  # backend or model not usable here: record, go on
                doc["skipped"].append(f"{label}: {type(e).__name__}: {str(e)[:300]}")
                _log(f"{label}: unavailable ({e})")
                _free_gpu_memory()
                continue
            last = None
            for b in batches:
                elapsed = time.perf_counter() - t_start
                projected = 2 * last if last is not None else 0.0
                if elapsed + projected > a.budget_s:
                    doc["skipped"].append(f"{label} B={b}: projected {projected:.0f} s would pass the "
                                          f"{a.budget_s:.0f} s budget")
                    continue
                _log(f"{label}: B={b}")
                try:
                    row = measure(model, backend, a.device, b, chunk, a.waves, data_for)
                except Exception as e:  # e.g. CUDA out of memory at a large B: record, go on
                    doc["skipped"].append(f"{label} B={b}: {type(e).__name__}: {str(e)[:300]}")
                    last = None if last is None else last * 2
                    _free_gpu_memory()
                    continue
                last = row["compress_s"] + row["decompress_s"]
                doc["rows"].append(row)
                if not row["verified"]:
                    _log(f"{label} B={b}: ROUND TRIP FAILED")
            _free_gpu_memory()  # the next model/backend starts with an empty cache
    doc["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return doc


def format_table(doc: dict[str, Any]) -> str:
    lines = [f"pyllmcodec GPU benchmark: {doc['gpu']} ({doc['device']}), torch {doc.get('torch')}, "
             f"Python {doc['python']}, {doc['date']}; data: {doc.get('data', '?')}; {doc['elapsed_s']} s",
             "",
             "| model | backend | batch | chunk | KiB | bits/byte | compress MB/s | decompress MB/s | round trip |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['backend']} | {r['batch_size']} | {r['chunk_size']} | "
                     f"{r['bytes'] / 1024:.0f} | {r['bits_per_byte']:.3f} | {r['compress_MBps']:.3g} | "
                     f"{r['decompress_MBps']:.3g} | {'ok' if r['verified'] else 'FAILED'} |")
    dq = doc.get("devquant")
    if dq:
        lines += ["", f"device quantizer (B={dq['batch']}, V={dq['vocab']}): in-order scan "
                      f"{'ok' if dq['scan_in_order'] else 'FAILED (loop used)'}, tables == core.quantize: "
                      f"{'yes' if dq['tables_equal_core'] else 'NO'}, symbol_ranges {dq['symbol_ranges_ms']} ms "
                      f"(block loop {dq['symbol_ranges_loop_ms']} ms)"]
    if doc.get("warmup_s"):
        lines += ["", "warm-up (not timed above): " + ", ".join(f"{k} {v} s" for k, v in doc["warmup_s"].items())]
    if doc["skipped"]:
        lines += ["", "skipped:"] + [f"- {s}" for s in doc["skipped"]]
    return "\n".join(lines)


def _csv_int(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true",
                    help=f"batch sizes {QUICK_BATCHES}, 256-byte chunks, the default model only")
    ap.add_argument("--batch-sizes", type=_csv_int, help=f"comma-separated (default {DEFAULT_BATCHES})")
    ap.add_argument("--chunk-size", type=int, help="bytes per chunk (default: the library's)")
    ap.add_argument("--waves", type=int, default=1, help="full waves per measurement (default 1)")
    ap.add_argument("--models", type=_csv, help="default: 'default' then every other registered model")
    ap.add_argument("--backends", type=_csv, help="subset of torch,onnxruntime")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new cells after this")
    ap.add_argument("--json", type=Path, help="write the results here (default $OUT/gpu_bench.json if $OUT)")
    ap.add_argument("--no-devquant", action="store_true", help="skip the device quantizer check")
    ap.add_argument("--plugin", help="module to import first (registers extra models; for tests)")
    a = ap.parse_args(argv)
    doc = run(a)
    print(format_table(doc))
    target = a.json or (Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT") else None)
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc, indent=1) + "\n")
        _log(f"wrote {target}")
    failed = [r for r in doc["rows"] if not r["verified"]]
    dq_bad = bool(doc.get("devquant")) and not doc["devquant"]["tables_equal_core"]
    return 1 if failed or dq_bad or not doc["rows"] else 0


if __name__ == "__main__":
    sys.exit(main())
