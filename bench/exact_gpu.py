"""The exact model on an NVIDIA GPU: the PyTorch CUDA path against the CPU's
native step (issue 15's GPU check), in one short run.

    python -m bench.exact_gpu [--device cuda] [--json OUT.json]

1. Tables: for B in (1, 7, 64), 48 steps of random tokens (row 0: text) on
   both paths; the integer probabilities and the core quantizer's tables at
   the codec's precision must be identical.
2. Archives: 16 KiB of text (--archive-kib) compressed on the GPU decodes on the CPU, and the
   reverse (batch 8, the codec's defaults otherwise).
3. Throughput of the exact step on the device against batch size (steps of
   B rows at positions spread over a 512-symbol segment), beside the CPU's
   native step at B = 64 in the same run.

``--device cpu`` runs the same logic with PyTorch on the CPU (a smoke test).
Writes JSON (``--json``, default ``$OUT/exact_gpu.json`` when ``$OUT`` is set)
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "default-exact"


def _rate(model: Any, B: int, steps: int = 16, positions: tuple[int, ...] = (0, 128, 256, 384, 480)) -> float:
    tok = np.full(B, model.bos, np.int64)
    total = 0.0
    for p in positions:
        st = model.new_state(B)
        for _ in range(p):  # the cost depends on the position: get there first (untimed)
            model.step(st, tok)
        model.step(st, tok)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.step(st, tok)
        total += time.perf_counter() - t0
    return B * steps * len(positions) / total


def run(a: argparse.Namespace) -> dict[str, Any]:
    import pyllmcodec
    from pyllmcodec import core
    from pyllmcodec.models import load_model

    dev = load_model(MODEL, device=a.device, backend="torch")
    cpu = load_model(MODEL, device="cpu", threads=a.cpu_threads)
    doc: dict[str, Any] = {"device": a.device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "python": platform.python_version(), "cpu_threads": a.cpu_threads}
    try:
        import torch

        doc["torch"] = torch.__version__
        doc["gpu"] = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
    except Exception as e:  # noqa: BLE001 - informational only
        doc["gpu"] = f"unknown ({e})"
    text = (Path(pyllmcodec.__file__).resolve().parent.parent / "README.md").read_bytes()
    rng = np.random.default_rng(0)
    tables = []
    for B in (1, 7, 64):
        sd, sc = dev.new_state(B), cpu.new_state(B)
        tok = np.full(B, dev.bos, np.int64)
        same_probs = same_tables = True
        for t in range(48):
            pd, pc = dev.step(sd, tok), cpu.step(sc, tok)
            same_probs &= bool(np.array_equal(pd, pc))
            q = core.quantize_int if pd.dtype == np.uint32 else core.quantize  # integer rows: the core's integer entry
            same_tables &= bool(np.array_equal(q(pd, 16), q(pc, 16)))
            tok = rng.integers(0, 256, B).astype(np.int64)
            tok[0] = text[t]
        tables.append({"batch": B, "probs_equal": same_probs, "tables_equal": same_tables})
    doc["tables"] = tables
    data = (text * 100)[: a.archive_kib << 10]
    t0 = time.perf_counter()
    blob_dev = pyllmcodec.Compressor(dev, batch_size=8).compress(data)
    t_dev = time.perf_counter() - t0
    blob_cpu = pyllmcodec.Compressor(cpu, batch_size=8).compress(data)
    doc["archives"] = {
        "bytes": len(data), "archive_bytes": len(blob_dev), "identical_archives": blob_dev == blob_cpu,
        "gpu_to_cpu": pyllmcodec.Decompressor(cpu).decompress(blob_dev) == data,
        "cpu_to_gpu": pyllmcodec.Decompressor(dev).decompress(blob_cpu) == data,
        "compress_on_device_s": round(t_dev, 2),
    }
    rows = []
    for B in a.batch_sizes:
        r = _rate(dev, B)
        rows.append({"batch": B, "steps_per_s": r / B, "symbols_per_s": r})
        if time.perf_counter() - t0 > a.budget_s:
            break
    doc["throughput"] = rows
    doc["cpu_native_b64_symbols_per_s"] = _rate(cpu, 64)
    return doc


def table(doc: dict[str, Any]) -> str:
    out = [f"exact model on {doc['gpu']} (torch {doc.get('torch')}, Python {doc['python']}), {doc['date']}", "",
           "| batch | probabilities equal | tables equal |", "|---:|---|---|"]
    out += [f"| {t['batch']} | {t['probs_equal']} | {t['tables_equal']} |" for t in doc["tables"]]
    ar = doc["archives"]
    out += ["", f"archives ({ar['bytes']} bytes -> {ar['archive_bytes']}): identical {ar['identical_archives']}, "
                f"GPU -> CPU {ar['gpu_to_cpu']}, CPU -> GPU {ar['cpu_to_gpu']}", "",
            "| batch | steps/s | symbols/s |", "|---:|---:|---:|"]
    out += [f"| {r['batch']} | {r['steps_per_s']:.0f} | {r['symbols_per_s']:.0f} |" for r in doc["throughput"]]
    out += ["", f"CPU native step, B = 64, {doc['cpu_threads']} threads: "
                f"{doc['cpu_native_b64_symbols_per_s']:.0f} symbols/s"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.exact_gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256, 1024, 4096])
    ap.add_argument("--budget-s", type=float, default=150.0)
    ap.add_argument("--archive-kib", type=int, default=16)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    doc = run(a)
    print(table(doc))
    target = a.json or (Path(os.environ["OUT"]) / "exact_gpu.json" if os.environ.get("OUT") else None)
    if target:
        target.write_text(json.dumps(doc, indent=1) + "\n")
    ok = all(t["probs_equal"] and t["tables_equal"] for t in doc["tables"]) and \
        doc["archives"]["gpu_to_cpu"] and doc["archives"]["cpu_to_gpu"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
