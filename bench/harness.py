"""Run the comparison: every corpus x every baseline, plus the pyllmcodec rows.

Conventions (NOTE):

* bits/byte = 8 * total compressed bytes / total original bytes over a
  corpus's files, each file compressed on its own.
* MB/s = original bytes / 1e6 / seconds, one thread, summed over the files
  of a corpus.  The headline figure uses CPU seconds (user + system, this
  process and its waited-for children): on a shared machine it
  is far steadier than wall clock, which is kept as ``*_wall_MBps``.  A file
  whose compression takes under ``min_time`` seconds is run again (at most
  ``max_repeats`` times) and the median taken, so small inputs are not timer
  noise.  Speeds are indicative, sizes are exact.
* Every row is round-trip verified; a mismatch raises, it is never reported.
* Baselines run in this process (one at a time); each pyllmcodec row runs in a
  subprocess, whose peak RSS is reported.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .baselines import Baseline
from .corpora import Corpus
from .llm import LLMConfig, run_llm_row

__all__ = ["RoundTripError", "machine_info", "measure_baseline", "run_benchmark"]


class RoundTripError(AssertionError):
    """A codec did not give back the original bytes."""


def _cpu_now() -> float:
    """CPU seconds (user + system) of this process and its waited-for children.

    ``time.process_time`` (CLOCK_PROCESS_CPUTIME_ID) and ``getrusage`` are
    precise to the microsecond; ``os.times`` counts 10 ms ticks, too coarse
    for a 4 ms gzip decompression."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _timed(fn: Callable[[], Any], min_time: float, max_repeats: int) -> tuple[Any, float, float]:
    """(result, median wall seconds, median CPU seconds) of calling ``fn``
    once, or up to ``max_repeats`` times while the wall total stays under
    ``min_time``."""
    wall: list[float] = []
    cpu: list[float] = []
    result = None
    while True:
        c0 = _cpu_now()
        t0 = time.perf_counter()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(_cpu_now() - c0)
        if len(wall) >= max_repeats or sum(wall) + wall[-1] > min_time:
            break
    return result, statistics.median(wall), statistics.median(cpu)


def _mbps(size: int, seconds: float) -> float:
    return size / 1e6 / seconds if seconds > 0 else float("inf")


def measure_baseline(b: Baseline, corpus: Corpus, *, min_time: float = 0.5,
                     max_repeats: int = 5) -> dict[str, Any]:
    """One result row for baseline ``b`` on ``corpus`` (raises RoundTripError)."""
    comp_bytes = 0
    cw = cc = dw = dc = 0.0
    for fname, data in corpus.files:
        size = len(data)
        blob, w, c = _timed(lambda d=data: b.compress(d), min_time, max_repeats)
        cw, cc = cw + w, cc + c
        back, w, c = _timed(lambda z=blob, n=size: b.decompress(z, n), min_time, max_repeats)
        dw, dc = dw + w, dc + c
        if back != data:
            raise RoundTripError(f"{b.name} did not round-trip {corpus.name}/{fname}")
        comp_bytes += len(blob)
    size = corpus.size
    return {
        "codec": b.name,
        "key": b.key,
        "kind": "baseline",
        "implementation": b.implementation,
        "notes": list(b.notes),
        "original_bytes": size,
        "compressed_bytes": comp_bytes,
        "bits_per_byte": 8 * comp_bytes / size if size else 0.0,
        "compress_MBps": _mbps(size, cc),
        "decompress_MBps": _mbps(size, dc),
        "compress_wall_MBps": _mbps(size, cw),
        "decompress_wall_MBps": _mbps(size, dw),
        "verified": True,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                           capture_output=True, text=True, timeout=10, check=False)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """Where and when: written into every results file."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_GiB": _mem_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_benchmark(
    corpora: list[Corpus],
    baselines: list[Baseline],
    llm: list[LLMConfig],
    *,
    llm_max_bytes: int,
    llm_other_max_bytes: int | None = None,
    llm_ideal: bool = True,
    llm_timeout: float | None = None,
    llm_skip_reason: str | None = None,
    min_time: float = 0.5,
    max_repeats: int = 5,
    mode: str = "custom",
) -> dict[str, Any]:
    """Measure everything; returns the results document that
    :mod:`bench.report` renders (and that is saved as JSON)."""
    t_start = time.perf_counter()
    doc: dict[str, Any] = {
        "mode": mode,
        "machine": machine_info(),
        "corpora": [],
        "skipped": [],
        "settings": {"min_time": min_time, "max_repeats": max_repeats, "llm_max_bytes": llm_max_bytes,
                     "llm_other_max_bytes": llm_other_max_bytes},
    }
    for b in baselines:
        if b.unavailable:
            doc["skipped"].append(f"{b.name}: {b.unavailable}")
    if llm_skip_reason:
        doc["skipped"].append(f"pyllmcodec rows: {llm_skip_reason}")
    for corpus in corpora:
        entry: dict[str, Any] = {
            "name": corpus.name,
            "description": corpus.description,
            "bytes": corpus.size,
            "files": [name for name, _ in corpus.files],
            "provenance": corpus.provenance,
            "rows": [],
        }
        doc["corpora"].append(entry)
        for b in baselines:
            if b.unavailable:
                continue
            _log(f"{corpus.name}: {b.name}")
            entry["rows"].append(measure_baseline(b, corpus, min_time=min_time, max_repeats=max_repeats))
        if llm and not llm_skip_reason:
            notes = []
            seen: set[tuple[str, str]] = set()
            for i, cfg in enumerate(llm):
                limit = llm_max_bytes if i == 0 or llm_other_max_bytes is None else llm_other_max_bytes
                if corpus.size > limit:
                    notes.append(f"{cfg.label}: not run on this corpus ({corpus.size} bytes > {limit})")
                    continue
                if (cfg.model, cfg.backend) in seen:
                    continue  # the automatic backend already measured this pair
                _log(f"{corpus.name}: {cfg.label}")
                row = run_llm_row(cfg, list(corpus.files), ideal=llm_ideal, timeout=llm_timeout)
                entry["rows"].append(row)
                if "error" in row:
                    _log(f"  failed: {row['error']}")
                resolved = _resolved_backend(row)
                if resolved:
                    seen.add((cfg.model, resolved))
            if notes:
                entry["llm_note"] = "; ".join(notes)
    doc["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return doc


def _resolved_backend(row: dict[str, Any]) -> str | None:
    """The backend an ``auto`` row ended up on, from the model fingerprint."""
    import json

    try:
        fp = json.loads(row.get("implementation", "{}"))
    except ValueError:
        return None
    b = str(fp.get("backend", "")).lower()
    if "onnx" in b:
        return "onnxruntime"
    if "torch" in b:
        return "torch"
    return None
