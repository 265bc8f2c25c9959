"""What Ray Data costs on top of the single-process API (issue 17):
the same rows compressed and decompressed by ``Compressor.compress_batch`` /
``Decompressor.decompress_batch`` in this process, and by
``pyllmcodec.ray.compress_column`` / ``decompress_column`` on a local Ray
instance, in the same batches of rows.

    python -m bench.studies.ray_overhead [--n 400] [--batch-size 100] [--repeats 3]

Rows: ``--n`` synthetic JSON log lines (a seeded RNG, ~130 bytes each; nothing
downloaded).  The dataset is made and materialised before the clock starts,
in blocks of ``--batch-size`` rows, so Ray's batches are the in-process
batches and the Ray archives are checked byte-identical to them (one actor
with ``num_cpus=2`` runs 2 threads, as the in-process default on 2 cores).
Each timed Ray run is one ``map_batches`` job to ``.materialize()``: it
starts its actors (a process each, importing pyllmcodec and loading the
model), which is part of what a job pays; ``ray.init`` is timed once,
apart.  Median of ``--repeats`` runs of each, in the same process.

Measured (2026-12-04) on an AMD EPYC, 2 vCPUs, Ray 2.60.0, onnxruntime 1.32.0,
n=400 (51 KB), batch 100, while other jobs shared the 2 cores (load 2-7; each
number moved by up to 2x between runs, hence the interleaving): a Ray job
has a fixed cost of about 1.5-2.2 s (actor process, imports, model load;
the 4-row rows); the 51 KB jobs, that included, took 0.65-1.40x the
single-process time compressing and 0.66-0.83x decompressing over four runs
-- parity within the noise on one machine; 2 actors x 1 thread were never
slower than 1 actor x 2 threads.
Ray's archives were byte-identical to the single-process ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any


def rows(n: int, seed: int = 17) -> list[str]:
    """``n`` JSON log lines of about 130 bytes (SYNTHETIC: a seeded RNG)."""
    rng = random.Random(seed)
    services = ["api", "auth", "billing", "search", "ingest"]
    msgs = ["request completed", "user logged in", "cache miss", "slow query", "upstream timeout",
            "order created", "payment declined"]
    out = []
    for i in range(n):
        out.append(json.dumps({
            "seq": i, "level": rng.choice(["INFO"] * 6 + ["WARN", "ERROR"]), "service": rng.choice(services),
            "path": f"/v1/{rng.choice(['users', 'orders', 'items'])}/{rng.randrange(1, 10**5)}",
            "status": rng.choice([200] * 8 + [404, 500]), "ms": round(rng.lognormvariate(3, 1), 1),
            "msg": rng.choice(msgs)}))
    return out


def machine_line() -> str:
    import onnxruntime
    import ray

    import pyllmcodec

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} vCPUs, Python {platform.python_version()}, Ray {ray.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, pyllmcodec {pyllmcodec.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="rows (default 400, ~50 KB)")
    ap.add_argument("--batch-size", type=int, default=100, help="rows per batch, both ways (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each, the median is shown (default 3)")
    a = ap.parse_args()

    import pyarrow as pa
    import ray

    import pyllmcodec.ray as llmz_ray
    from pyllmcodec import Compressor, Decompressor

    lines = rows(a.n)
    data = [s.encode() for s in lines]
    size = sum(map(len, data))
    bs = a.batch_size
    batches = [data[i : i + bs] for i in range(0, len(data), bs)]
    print(f"machine: {machine_line()}")
    print(f"{a.n} rows, {size} bytes, batches of {bs} rows, median of {a.repeats}, "
          f"load average before: {os.getloadavg()[0]:.2f}")

    comp, dec = Compressor("default"), Decompressor()
    ref = [z for b in batches for z in comp.compress_batch(b)]  # loads the model: warm, as an actor once started
    ref_batches = [ref[i : i + bs] for i in range(0, len(ref), bs)]

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t_init = time.perf_counter() - t
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    blocks = [pa.table({"seq": list(range(i, i + len(b))), "line": pa.array(lines[i : i + bs], pa.string())})
              for i, b in zip(range(0, a.n, bs), batches)]
    ds = ray.data.from_arrow(blocks).materialize()

    def single_c() -> Any:
        return [z for b in batches for z in comp.compress_batch(b)]

    def single_d() -> Any:
        return [x for b in ref_batches for x in dec.decompress_batch(b)]

    paths: list[tuple[str, Callable[[], Any], Callable[[], Any], str]] = [
        ("single process (compress_batch / decompress_batch)", single_c, single_d, "")]
    for concurrency, num_cpus in ((1, 2), (2, 1)):
        kw: dict[str, Any] = {"batch_size": bs, "concurrency": concurrency, "num_cpus": num_cpus}
        z = llmz_ray.compress_column(ds, "line", output_column="z", **kw).materialize()  # untimed: the check
        got = sorted(z.take_all(), key=lambda r: r["seq"])
        note = ""
        if num_cpus == 2:  # 2 threads, as the in-process default on 2 cores: the same bytes
            note = "archives identical" if [r["z"] for r in got] == ref else "archives DIFFER"
        paths.append((f"Ray: {concurrency} actor(s) x {num_cpus} CPU",
                      lambda kw=kw: llmz_ray.compress_column(ds, "line", output_column="z", **kw).materialize(),
                      lambda z=z, kw=kw: llmz_ray.decompress_column(z, "z", output_column="back", **kw).materialize(),
                      note))

    # the fixed cost of a job: 4 rows, where the model's work is a few hundredths of a second
    tiny = ray.data.from_arrow(pa.table({"seq": [0, 1, 2, 3], "line": pa.array(lines[:4], pa.string())}))
    tiny = tiny.materialize()
    tiny_z = llmz_ray.compress_column(tiny, "line", output_column="z", num_cpus=2).materialize()
    paths.append(("single process, 4 rows", lambda: comp.compress_batch(data[:4]),
                  lambda: dec.decompress_batch(ref[:4]), ""))
    paths.append(("Ray: 1 actor x 2 CPU, 4 rows (fixed cost of a job)",
                  lambda: llmz_ray.compress_column(tiny, "line", output_column="z", num_cpus=2).materialize(),
                  lambda: llmz_ray.decompress_column(tiny_z, "z", output_column="back", num_cpus=2).materialize(),
                  ""))

    # interleaved (each repeat runs every path once), so that a change of load hits all of them alike
    times: dict[tuple[int, int], list[float]] = {}
    outs: dict[tuple[int, int], Any] = {}
    for _ in range(a.repeats):
        for way in (1, 2):
            for k, path in enumerate(paths):
                t = time.perf_counter()
                outs[k, way] = path[way]()
                times.setdefault((k, way), []).append(time.perf_counter() - t)
    assert outs[0, 2] == data and outs[len(paths) - 2, 2] == data[:4]
    for k in range(1, len(paths) - 2):
        got = sorted(outs[k, 2].take_all(), key=lambda r: r["seq"])
        assert [r["back"] for r in got] == lines
    ray.shutdown()

    med = {key: statistics.median(v) for key, v in times.items()}
    print(f"ray.init: {t_init:.1f} s (once, not in the table); load average after: {os.getloadavg()[0]:.2f}\n")
    print("| path | compress s | ratio | decompress s | ratio | note |")
    print("|---|---|---|---|---|---|")
    for k, (name, _, _, note) in enumerate(paths):
        c, d = med[k, 1], med[k, 2]
        base = 0 if k < len(paths) - 2 else len(paths) - 2  # the 4-row jobs against the 4-row calls
        print(f"| {name} | {c:.2f} | {c / med[base, 1]:.2f}x | {d:.2f} | {d / med[base, 2]:.2f}x | {note} |")


if __name__ == "__main__":
    main()
