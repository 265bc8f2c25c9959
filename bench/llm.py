"""The pyllmcodec rows: measured in a subprocess each, so peak RSS is clean.

The parent (:func:`run_llm_row`) writes the corpus files to a temporary
directory and starts ``python -m bench.llm`` twice:

* ``codec``: ``pyllmcodec.compress`` then ``pyllmcodec.decompress`` on every
  file, round trip checked, each timed (the first call on a tiny input warms
  the model session and is not timed).  Its peak RSS is read by the parent
  with ``os.wait4`` (``ru_maxrss`` of that child alone).
* ``ideal``: the model's ideal code length, :func:`ideal_bits`, on the same
  files: -log2 p(byte) summed over the chunks the codec would code, with no
  quantizer, coder or container.  ``bits/byte - ideal`` is the coding overhead.

Both print one JSON object on stdout.  ``PYLLMCODEC_BENCH_PLUGIN`` names a
module the worker imports first (tests use it to register a toy model).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["LLMConfig", "ideal_bits", "llm_configs", "pyllmcodec_status", "run_llm_row"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LLMConfig:
    """One pyllmcodec row: which model, where, with which geometry."""

    model: str = "default"
    backend: str = "auto"
    device: str = "cpu"
    threads: int | None = 1
    batch_size: int | None = None  # None: the library default
    chunk_size: int | None = None  # None: the library default

    @property
    def label(self) -> str:
        parts = [self.backend, self.device]
        if self.threads:
            parts.append(f"{self.threads} thread" + ("s" if self.threads > 1 else ""))
        if self.batch_size:
            parts.append(f"B={self.batch_size}")
        if self.chunk_size:
            parts.append(f"chunk={self.chunk_size}")
        return f"pyllmcodec {self.model} ({', '.join(parts)})"

    def codec_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"device": self.device, "backend": self.backend, "threads": self.threads}
        if self.batch_size:
            kw["batch_size"] = self.batch_size
        if self.chunk_size:
            kw["chunk_size"] = self.chunk_size
        return kw


# ----------------------------------------------------------------- library access
# Everything that touches pyllmcodec's API is in the next three functions, so
# an API change is fixed here and nowhere else.


def _api() -> tuple[Any, Any]:
    """``(compress, decompress)`` from the public API."""
    import pyllmcodec

    comp = getattr(pyllmcodec, "compress", None)
    decomp = getattr(pyllmcodec, "decompress", None)
    if comp is None or decomp is None:  # not re-exported yet
        from pyllmcodec import codec

        comp, decomp = codec.compress, codec.decompress
    return comp, decomp


def pyllmcodec_status() -> tuple[bool, str]:
    """Whether the pyllmcodec rows can run here, and if not, why (checked in a
    subprocess so a broken native build cannot take the harness down)."""
    code = (
        "import bench.llm as m; m._load_plugin(); c, d = m._api(); "
        "from pyllmcodec.models import available_models as a; print(','.join(a()))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"pyllmcodec not usable here: {tail}"
    models = r.stdout.strip()
    if not models:
        return False, "pyllmcodec imports but has no models registered"
    return True, models


def ideal_bits(model: Any, data: bytes, chunk_size: int, batch_size: int, prime: int = 0,
               mixer: Any = None, context: int | None = None) -> float:
    """The model's ideal code length of ``data`` in bits.

    ``data`` is cut into chunks of ``chunk_size`` bytes (the codec's chunking,
    with its default line-ending transform, pyllmcodec/eol.py); a token-level model (one with a ``tokenizer``) sees each chunk as its
    tokens.  ``batch_size`` chunks are stepped together, each starts from
    ``model.bos``, and -log2 of the (row-normalised) probability of every
    actual symbol is summed in float64.  ``mixer``: the probabilities go
    through the match model first, as the codec codes them.
    """
    import numpy as np

    tokenizer = getattr(model, "tokenizer", None)
    bundle = getattr(model, "bundle", None)
    if tokenizer is None and bundle is not None and "forward" in bundle.manifest.get("graphs", {}):
        # the teacher-forced graph: same probabilities to ~1e-8, several times faster
        from bench.ideal import ideal_bits as forward_ideal_bits

        return forward_ideal_bits(bundle, data, chunk_size, threads=getattr(model, "threads", None), eol=True,
                                  prime=prime, mixer=mixer, context=context)
    if tokenizer is None and chunk_size > int(context or getattr(model, "max_context", chunk_size)):
        raise ValueError("scoring chunks longer than the context needs a bundle with a forward graph")
    from pyllmcodec import eol

    # the chunks as the encoder codes them (line-ending transform, eol=True)
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    chunks = [eol.encoded(c)[1] for c in chunks]
    if tokenizer is not None:
        seqs = [np.asarray(t, dtype=np.int64) for t in tokenizer.tokenize_batch(chunks)]
    else:
        seqs = [np.frombuffer(c, dtype=np.uint8).astype(np.int64) for c in chunks]
    total = 0.0
    for w in range(0, len(seqs), batch_size):
        wave = seqs[w : w + batch_size]
        rows = len(wave)
        length = max(len(q) for q in wave)
        sym = np.zeros((rows, length), dtype=np.int64)
        live = np.zeros((rows, length), dtype=bool)
        for r, q in enumerate(wave):
            sym[r, : len(q)] = q
            live[r, : len(q)] = True
        state = model.new_state(rows)
        tokens = np.full(rows, model.bos, dtype=np.int64)
        mx = None if mixer is None else mixer.new(rows, length, chunk_size)
        for t in range(length):
            probs = np.array(model.step(state, tokens), dtype=np.float32)
            if mx is not None:
                act = np.nonzero(live[:, t])[0]
                sub = np.ascontiguousarray(probs[act])
                mx.mix(sub, rows=act)
                probs[act] = sub
                mx.push(sym[act, t], rows=act)
            probs = probs.astype(np.float64)
            p = probs[np.arange(rows), sym[:, t]] / probs.sum(axis=1)
            total -= float(np.log2(np.maximum(p[live[:, t]], 1e-300)).sum())
            tokens = sym[:, t]  # finished rows are fed padding (symbol 0)
    return total


def _ideal_geometry(model: Any, cfg: LLMConfig) -> Any:
    """The Compressor whose geometry (chunk size per input size, batch size,
    prime, match model) the codec would use for ``cfg``."""
    from pyllmcodec import Compressor, constants

    batch = cfg.batch_size or constants.DEFAULT_BATCH_SIZE
    return Compressor(model, chunk_size=cfg.chunk_size, batch_size=batch)


# ----------------------------------------------------------------- worker


def _load_plugin() -> None:
    mod = os.environ.get("PYLLMCODEC_BENCH_PLUGIN")
    if mod:
        importlib.import_module(mod)


def _worker(mode: str, cfg: LLMConfig, paths: list[str]) -> dict[str, Any]:
    _load_plugin()
    files = [Path(p).read_bytes() for p in paths]
    if mode == "codec":
        compress, decompress = _api()
        kw = cfg.codec_kwargs()
        t0 = time.perf_counter()
        warm = compress(b"warm up the model session", cfg.model, **kw)
        decompress(warm, device=cfg.device, backend=cfg.backend, threads=cfg.threads)
        load_s = time.perf_counter() - t0
        out: dict[str, Any] = {"compressed": 0, "compress_s": 0.0, "decompress_s": 0.0,
                               "compress_cpu_s": 0.0, "decompress_cpu_s": 0.0, "load_s": load_s}
        for data in files:
            c0, t0 = time.process_time(), time.perf_counter()
            blob = compress(data, cfg.model, **kw)
            c1, t1 = time.process_time(), time.perf_counter()
            back = decompress(blob, device=cfg.device, backend=cfg.backend, threads=cfg.threads)
            c2, t2 = time.process_time(), time.perf_counter()
            if bytes(back) != data:
                raise SystemExit("round trip FAILED")
            out["compressed"] += len(blob)
            out["compress_s"] += t1 - t0
            out["decompress_s"] += t2 - t1
            out["compress_cpu_s"] += c1 - c0
            out["decompress_cpu_s"] += c2 - c1
        try:
            from pyllmcodec.models import load_model

            out["fingerprint"] = dict(load_model(cfg.model, device=cfg.device, backend=cfg.backend,
                                                 threads=cfg.threads).fingerprint())
        except Exception as e:  # informative only
            out["fingerprint"] = {"error": str(e)}
        return out
    if mode == "ideal":
        from pyllmcodec.models import load_model

        model = load_model(cfg.model, device=cfg.device, backend=cfg.backend, threads=cfg.threads)
        comp = _ideal_geometry(model, cfg)
        chunks = [comp.chunk_size_for(len(d)) for d in files]  # what compress() picks per file
        t0 = time.perf_counter()
        bits = sum(ideal_bits(model, d, c, comp.batch_size, prime=comp.prime, mixer=comp.mixer,
                              context=comp.context) for d, c in zip(files, chunks))
        return {"ideal_bits": bits, "ideal_s": time.perf_counter() - t0,
                "chunk_size": chunks[0] if len(set(chunks)) == 1 else chunks, "batch_size": comp.batch_size,
                "prime": comp.prime, "context": comp.context, "mixer": comp.mixer.digest if comp.mixer else None}
    raise SystemExit(f"unknown mode {mode!r}")


def _run_worker(mode: str, cfg: LLMConfig, paths: list[str], timeout: float | None) -> tuple[dict, int]:
    """Run one worker; returns (its JSON, its peak RSS in KiB)."""
    cmd = [sys.executable, "-m", "bench.llm", mode, json.dumps(asdict(cfg)), *paths]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                p.returncode = -9
                raise TimeoutError(f"{mode} worker ran past {timeout:.0f} s")
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{mode} worker failed (exit {p.returncode}): {' | '.join(tail)}")
        return json.loads(out.read().decode()), int(ru.ru_maxrss)  # KiB on Linux


def run_llm_row(cfg: LLMConfig, files: list[tuple[str, bytes]], *, ideal: bool = True,
                timeout: float | None = None) -> dict[str, Any]:
    """Measure one config on one corpus; returns a result row (see
    :mod:`bench.harness` for the fields)."""
    size = sum(len(d) for _, d in files)
    row: dict[str, Any] = {"codec": cfg.label, "kind": "pyllmcodec", "config": asdict(cfg),
                           "original_bytes": size}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (_, data) in enumerate(files):
            p = Path(tmp, f"{i:03d}.bin")
            p.write_bytes(data)
            paths.append(str(p))
        try:
            res, rss_kib = _run_worker("codec", cfg, paths, timeout)
        except (RuntimeError, TimeoutError) as e:
            row["error"] = str(e)
            return row
        row.update(
            compressed_bytes=res["compressed"],
            bits_per_byte=8 * res["compressed"] / size,
            # CPU seconds of the whole worker process (all its threads), like
            # the baselines' figure; wall clock kept beside it
            compress_MBps=size / 1e6 / max(res["compress_cpu_s"], 1e-9),
            decompress_MBps=size / 1e6 / max(res["decompress_cpu_s"], 1e-9),
            compress_wall_MBps=size / 1e6 / res["compress_s"],
            decompress_wall_MBps=size / 1e6 / res["decompress_s"],
            peak_rss_MiB=rss_kib / 1024,
            load_s=res["load_s"],
            verified=True,
            implementation=json.dumps(res.get("fingerprint", {}), sort_keys=True),
        )
        if ideal:
            try:
                ires, _ = _run_worker("ideal", cfg, paths, timeout)
                row["ideal_bits_per_byte"] = ires["ideal_bits"] / size
                row["overhead_bits_per_byte"] = row["bits_per_byte"] - row["ideal_bits_per_byte"]
                row["ideal_step_MBps"] = size / 1e6 / ires["ideal_s"] if ires["ideal_s"] else math.inf
                row["chunk_size"], row["prime"] = ires["chunk_size"], ires.get("prime", 0)  # the geometry scored
                row["mixer"] = ires.get("mixer")
            except (RuntimeError, TimeoutError) as e:
                row["ideal_error"] = str(e)
    return row


def llm_configs(models: list[str], *, first: str = "default", all_models: bool, threads: int | None = 1,
                batch_size: int | None = None) -> list[LLMConfig]:
    """The rows to measure: model ``first`` on CPU with the automatic backend;
    with ``all_models``, every registered model on every importable backend as
    well (the harness drops the pair the automatic row already measured)."""
    rows = [LLMConfig(first, "auto", "cpu", threads, batch_size)]
    if all_models:
        backends = [b for b, mod in (("onnxruntime", "onnxruntime"), ("torch", "torch"))
                    if importlib.util.find_spec(mod) is not None]
        for m in [first] + [m for m in models if m != first]:
            for b in backends:
                rows.append(LLMConfig(m, b, "cpu", threads, batch_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.llm", description="pyllmcodec row worker")
    ap.add_argument("mode", choices=["codec", "ideal"])
    ap.add_argument("config", help="LLMConfig as JSON")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    cfg = LLMConfig(**json.loads(a.config))
    print(json.dumps(_worker(a.mode, cfg, a.files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
