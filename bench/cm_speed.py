"""The codec with and without the context-mixing stage, in one run.

    python -m bench.cm_speed                       # alice29 and 256 KiB of linux-doc, 3 repeats
    python -m bench.cm_speed --corpora alice29 --repeats 5 --json OUT.json

One model session; each repeat compresses and decompresses the same bytes
with ``cm=False`` and ``cm=True`` (the order alternating between repeats,
since these machines are shared and noisy), checks both round trips, and
reports the median of the per-repeat speed ratios (with the stage / without)
and both archives' bits per byte.  Issue 16 asks for a ratio of at least 0.90
each way.  ``python -m bench`` compares whole archives with other compressors.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from pyllmcodec.constants import DEFAULT_MODEL
from pyllmcodec.errors import CodecError


def _data(name: str, limit: int) -> bytes:
    from bench.corpora import load_corpus

    data = b"".join(d for _, d in load_corpus(name).files)
    return data[:limit] if limit else data


def run(model: str, data: bytes, repeats: int, threads: int | None = None) -> dict[str, Any]:
    """Median speed ratios (cm / no cm) of compress and decompress over ``repeats``."""
    from pyllmcodec.codec import Compressor, Decompressor

    comps = {cm: Compressor(model, cm=cm, threads=threads) for cm in (False, True)}
    dec = Decompressor(comps[True].model)
    sizes: dict[bool, int] = {}
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for cm in (False, True):  # warm-up: sessions and probes
        dec.decompress(comps[cm].compress(data[:4096]))
    for r in range(repeats):
        for cm in ((False, True) if r % 2 == 0 else (True, False)):
            t0 = time.perf_counter()
            blob = comps[cm].compress(data)
            t1 = time.perf_counter()
            back = dec.decompress(blob)
            t2 = time.perf_counter()
            if back != data:
                raise CodecError(f"round trip failed (cm={cm})")
            sizes[cm] = len(blob)
            times[cm].append((t1 - t0, t2 - t1))
    comp_ratio = statistics.median(a[0] / b[0] for a, b in zip(times[False], times[True]))
    dec_ratio = statistics.median(a[1] / b[1] for a, b in zip(times[False], times[True]))
    n = len(data)
    return {
        "model": comps[True].model.name, "bytes": n, "repeats": repeats,
        "bits_per_byte": {"without": 8 * sizes[False] / n, "with": 8 * sizes[True] / n},
        "compress_kb_s": {k: n / 1e3 / statistics.median(t[0] for t in times[cm])
                          for k, cm in (("without", False), ("with", True))},
        "decompress_kb_s": {k: n / 1e3 / statistics.median(t[1] for t in times[cm])
                            for k, cm in (("without", False), ("with", True))},
        "compress_ratio": comp_ratio, "decompress_ratio": dec_ratio,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cm_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--corpora", default="alice29,linux-doc-1MiB")
    ap.add_argument("--limit", type=int, default=262144, help="the first N bytes of each corpus (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", metavar="OUT", help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    rows = []
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}")
    print("| corpus | bytes | bits/byte without / with | compress KB/s without / with | decompress KB/s "
          "without / with | speed ratio compress / decompress (median) |\n|---|---:|---|---|---|---|")
    for name in a.corpora.split(","):
        r = run(a.model, _data(name, a.limit), a.repeats, a.threads)
        r["corpus"] = name
        rows.append(r)
        b, c, d = r["bits_per_byte"], r["compress_kb_s"], r["decompress_kb_s"]
        print(f"| {name} | {r['bytes']} | {b['without']:.4f} / {b['with']:.4f} | {c['without']:.1f} / "
              f"{c['with']:.1f} | {d['without']:.1f} / {d['with']:.1f} | {r['compress_ratio']:.3f} / "
              f"{r['decompress_ratio']:.3f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
