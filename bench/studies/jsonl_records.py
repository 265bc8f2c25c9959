"""Small JSONL records compressed one by one (issue 17): bits/byte of
pyllmcodec's full archives, compact frames and headerless frames, each
without and with a trained dictionary, against gzip -9, zstd -19 and zstd -19
with a trained dictionary, on the same test records.

    python -m bench.studies.jsonl_records [--n 256] [--train 4000] [--synthetic 256] [--long-context 1024]

Data (nothing downloaded; none of it is in the evaluation corpora or the
default model's training text, which are documentation and prose): Debian's
package database on this machine -- ``/var/lib/dpkg/status`` and the apt
``*_Packages`` lists (plain or .lz4/.gz/.xz, read through apt-helper) --, one
JSON object per package (Package, Version, Architecture, Maintainer,
Installed-Size, Depends, Section, Priority, Homepage, the Description's first
line, in that order, missing fields left out), deduplicated on (Package,
Version, Architecture) and split by a seeded shuffle into a training set (the
dictionaries: zstd's and ours) and a disjoint test set.  A second,
**synthetic**, set: JSON log lines from a seeded RNG.

Every record is compressed on its own (one archive/frame per record); the
pyllmcodec ones through ``Compressor.compress_batch`` (one shared model
schedule, the pipeline path) and checked with ``Decompressor.decompress_batch``;
zstd's and gzip's are checked too.  Bits/byte are total compressed bits over
total raw bytes; headerless frames count their params (``FrameParams.to_bytes``)
once for the whole set.  "ideal" is the model's code length of the records
(teacher-forced graph, through the match model, after the dictionary), i.e.
the payload without the range coder's flush.  With ``--long-context 1024``
(default) headerless frames are also measured with segments of the model's
whole context (``Compressor(context=1024)``), which leaves room for a 512-byte
dictionary; zstd is also run with our dictionaries as raw-content
dictionaries (the same bytes as ours).

Measured (2026-12-04, AMD EPYC, 2 vCPUs; bench/results/jsonl_records.md):
one 100-byte record costs 556 bytes of fixed overhead as a full archive, 43
as a compact frame (53 with a dictionary), 14 as a headerless frame (+ 25
bytes of params once).  256 Debian records (mean 458 B): headerless frames
2.847 bits/byte, 2.479 with a 256-byte dictionary, 2.234 with context=1024
and a 512-byte one; gzip -9 5.244, zstd -19 5.206, zstd -19 with a 4 KiB
trained dictionary 2.399 (with our 256 bytes as its dictionary: 3.581).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIELDS = ("Package", "Version", "Architecture", "Maintainer", "Installed-Size", "Depends", "Section",
          "Priority", "Homepage", "Description")
DPKG_STATUS = "/var/lib/dpkg/status"
APT_LISTS = "/var/lib/apt/lists/*_Packages*"
RESULTS = Path(__file__).resolve().parents[1] / "results" / "jsonl_records.md"


# ------------------------------------------------------------------ data


#: the trainer's segment length the results file was made with (train_dictionary's
#: default then; it is 64 since, after this study's segment sweep)
SEGMENT = 32

def _read_list(path: str) -> str:
    """A package list's text, decompressed by apt's own helper when it is
    compressed (lz4, gz, xz: whatever apt stored)."""
    if not path.endswith((".lz4", ".gz", ".xz", ".zst", ".bz2", ".lzma")):
        return Path(path).read_text("utf-8", "replace")
    helper = "/usr/lib/apt/apt-helper"
    if os.path.exists(helper):
        return subprocess.run([helper, "cat-file", path], check=True, capture_output=True).stdout.decode(
            "utf-8", "replace")
    if path.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes()).decode("utf-8", "replace")
    raise RuntimeError(f"cannot read {path}: no apt-helper")


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 stanzas: field -> value (continuation lines kept, joined by newlines)."""
    cur: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                yield cur
            cur, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                cur[last] += "\n" + line
        elif ":" in line:
            k, v = line.split(":", 1)
            cur[k], last = v.strip(), k
    if cur:
        yield cur


def _record(st: dict[str, str]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for k in FIELDS:
        if k not in st:
            continue
        v: Any = st[k]
        if k == "Description":
            v = v.split("\n", 1)[0]
        elif k == "Installed-Size" and v.isdigit():
            v = int(v)
        rec[k] = v
    return rec


def debian_records() -> tuple[list[bytes], list[str]]:
    """One JSON line (no newline) per distinct package, sorted, and the files read."""
    sources = [p for p in [DPKG_STATUS, *sorted(glob.glob(APT_LISTS))] if os.path.isfile(p)]
    seen: dict[tuple[str, str, str], bytes] = {}
    for path in sources:
        for st in _stanzas(_read_list(path)):
            if "Package" not in st or "Version" not in st:
                continue
            if path == DPKG_STATUS and "installed" not in st.get("Status", "installed"):
                continue  # removed packages leave config-files stanzas behind
            key = (st["Package"], st["Version"], st.get("Architecture", ""))
            seen.setdefault(key, json.dumps(_record(st), sort_keys=False, ensure_ascii=False).encode())
    return [seen[k] for k in sorted(seen)], sources


def synthetic_logs(n: int, seed: int) -> list[bytes]:
    """``n`` JSON log lines of a made-up web service (SYNTHETIC: a seeded RNG)."""
    rng = random.Random(seed)
    services = ["api", "auth", "billing", "search", "ingest", "frontend"]
    levels = ["DEBUG"] * 2 + ["INFO"] * 10 + ["WARN"] * 3 + ["ERROR"]
    paths = ["/v1/users", "/v1/users/{id}", "/v1/orders", "/v1/orders/{id}/items", "/v2/search", "/health",
             "/v1/login", "/v1/invoices/{id}", "/static/app.js"]
    methods = ["GET"] * 6 + ["POST"] * 2 + ["PUT", "DELETE"]
    msgs = {"DEBUG": ["cache lookup", "query plan chosen", "retrying upstream call"],
            "INFO": ["request completed", "user logged in", "order created", "search served from cache"],
            "WARN": ["slow query", "upstream latency above threshold", "deprecated parameter used"],
            "ERROR": ["upstream timeout", "database connection reset", "payment declined by provider"]}
    t = 1_790_000_000.0
    out = []
    for _ in range(n):
        t += rng.expovariate(5.0)
        lvl = rng.choice(levels)
        path = rng.choice(paths).replace("{id}", str(rng.randrange(1, 10 ** rng.randrange(2, 7))))
        status = 200 if lvl in ("DEBUG", "INFO") else rng.choice([404, 429, 500, 502, 503])
        rec = {
            "ts": datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": lvl, "service": rng.choice(services), "host": f"node-{rng.randrange(1, 24):02d}",
            "trace_id": f"{rng.getrandbits(64):016x}", "method": rng.choice(methods), "path": path,
            "status": status, "duration_ms": round(rng.lognormvariate(3.0, 1.0), 1),
            "user_id": rng.randrange(1, 50_000) if rng.random() < 0.7 else None, "msg": rng.choice(msgs[lvl]),
        }
        out.append(json.dumps(rec, sort_keys=False).encode())
    return out


def split(records: Sequence[bytes], seed: int, n_train: int, n_test: int) -> tuple[list[bytes], list[bytes]]:
    """A seeded shuffle cut into disjoint training and test sets."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_train = min(n_train, len(order) - min(n_test, len(order) // 2))
    train = [records[i] for i in order[:n_train]]  # the same whatever n_test is
    test = [records[i] for i in order[n_train : n_train + n_test]]  # a prefix of a larger test set
    return train, test


# ------------------------------------------------------------------ measuring


@dataclass
class Row:
    name: str
    sizes: list[int]
    raw: int
    once: int = 0  # bytes counted once for the set (headerless frames' params)
    overhead: list[int] = field(default_factory=list)  # per record: header + index + footer
    payload: int | None = None  # total payload bytes
    enc_s: float = 0.0
    dec_s: float = 0.0
    note: str = ""
    bits: float | None = None  # a code length instead of sizes (the model's ideal)

    @property
    def total(self) -> float:
        return self.bits / 8 if self.bits is not None else sum(self.sizes) + self.once

    def bpb(self) -> float:
        return 8 * self.total / self.raw


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def baselines(test: list[bytes], train: list[bytes], zstd_dicts: Sequence[int],
              ours: Sequence[bytes] = ()) -> list[Row]:
    """gzip -9, zstd -19, zstd -19 with dictionaries of ``zstd_dicts`` bytes
    trained by zstd on ``train``, and zstd -19 with ``ours`` (pyllmcodec's
    dictionaries) as raw-content dictionaries."""
    import zstandard as zstd

    raw = sum(map(len, test))
    rows = []
    blobs, t = _timed(lambda: [gzip.compress(r, 9, mtime=0) for r in test])
    back, td = _timed(lambda: [gzip.decompress(b) for b in blobs])
    assert back == test, "gzip round trip"
    rows.append(Row("gzip -9", [len(b) for b in blobs], raw, overhead=[18] * len(test), enc_s=t, dec_s=td,
                    note="10-byte header + 8-byte trailer"))
    dicts: list[tuple[str, Any, str]] = [("zstd -19", None, "")]
    for size in zstd_dicts:
        d = zstd.train_dictionary(size, list(train), level=19)
        dicts.append((f"zstd -19, dict {size} B", d, f"zstd's trainer on the training set ({len(d.as_bytes())} B, "
                                                     "entropy tables included)"))
    for raw_dict in ours:
        d = zstd.ZstdCompressionDict(raw_dict, dict_type=zstd.DICT_TYPE_RAWCONTENT)
        dicts.append((f"zstd -19, our dict {len(raw_dict)} B", d, "pyllmcodec's dictionary as raw content"))
    for name, d, note in dicts:
        cz = zstd.ZstdCompressor(level=19, dict_data=d)
        dz = zstd.ZstdDecompressor(dict_data=d)
        blobs, t = _timed(lambda c: [c.compress(r) for r in test], cz)
        back, td = _timed(lambda c, bs: [c.decompress(b) for b in bs], dz, blobs)
        assert back == test, "zstd round trip"
        # fixed: the frame header and one 3-byte block header
        ov = [zstd.frame_header_size(b) + 3 for b in blobs]
        rows.append(Row(name, [len(b) for b in blobs], raw, overhead=ov, enc_s=t, dec_s=td, note=note))
    return rows


def _frame_layout(blob: bytes, params: Any = None) -> tuple[int, int]:
    """(fixed overhead, payload bytes) of an archive, compact frame or headerless frame."""
    if params is None:
        import pyllmcodec

        lay = pyllmcodec.info(blob)["layout"]
        return lay["header"] + lay["index"] + lay["footer"], lay["payloads"]
    from pyllmcodec.frames import FrameIndex

    payload = sum(b.payload_len for b in FrameIndex(blob, params).blocks)
    return len(blob) - payload, payload


def llm_rows(test: list[bytes], dictionary: bytes | None, batch_size: int, label: str, *,
             frames: Sequence[str] = ("full", "compact", "headerless"), context: int | None = None) -> list[Row]:
    """Full archives, compact frames and headerless frames of ``test`` through
    compress_batch; ``context``: the Compressor's segment length (default: the model's)."""
    import pyllmcodec

    raw = sum(map(len, test))
    dec = pyllmcodec.Decompressor(dictionary=dictionary)
    rows = []
    for frame in frames:
        comp = pyllmcodec.Compressor(frame="full" if frame == "full" else "compact",
                                     dictionary=dictionary, batch_size=batch_size, context=context)
        params = comp.frame_params() if frame == "headerless" else None
        blobs, t = _timed(comp.compress_batch, test, params=params)
        back, td = _timed(dec.decompress_batch, blobs, params=params)
        assert back == test, f"pyllmcodec {frame} {label}: round trip"
        lay = [_frame_layout(b, params) for b in blobs]
        once = len(params.to_bytes()) if params is not None else 0
        name = {"full": "full archive", "compact": "compact frame", "headerless": "headerless frame"}[frame]
        note = f"+ params once ({once} B binary, {len(json.dumps(params.to_dict()))} B as JSON)" if params else ""
        rows.append(Row(f"pyllmcodec {name}, {label}", [len(b) for b in blobs], raw, once=once,
                        overhead=[o for o, _ in lay], payload=sum(p for _, p in lay), enc_s=t, dec_s=td,
                        note=note))
        print(f"  {rows[-1].name}: {rows[-1].bpb():.3f} bits/byte (enc {t:.1f} s, dec {td:.1f} s)", flush=True)
    return rows


def ideal_bits(test: list[bytes], dictionary: bytes | None, batch: int = 16, context: int | None = None) -> float:
    """The model's code length of ``test`` in bits, each record coded as the
    codec codes a chunk: after the dictionary (uncoded), in the codec's
    segments, through the match model (which reads the dictionary first)."""
    import onnxruntime as ort

    import pyllmcodec
    from bench.ideal import _forward
    from pyllmcodec.scheduler import segment_plan

    comp = pyllmcodec.Compressor(dictionary=dictionary, context=context)
    g = comp.geometry_for(None)
    bos = int(comp.model.bos)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    bundle = comp.model.bundle  # type: ignore[attr-defined]  # the ONNX backend's model bundle
    sess = ort.InferenceSession(str(bundle.graph_path("forward")), so,
                                providers=["CPUExecutionProvider"])
    d = dictionary or b""
    D = len(d)
    total = 0.0
    for g0 in range(0, len(test), 32):
        rows = [d + r for r in test[g0 : g0 + 32]]
        probs = [np.zeros((len(r), 256), np.float64) for r in rows]
        wins = [(i, s, k, r[s - k : s - k + g.context]) for i, r in enumerate(rows)
                for s, k in segment_plan(len(r), g.context, g.prime, D)]
        for w0 in range(0, len(wins), batch):
            group = wins[w0 : w0 + batch]
            lg, _ = _forward(sess, bos, [w for *_, w in group])
            lg = lg.astype(np.float64)
            p = np.exp(lg - lg.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            for j, (i, s, k, w) in enumerate(group):
                probs[i][s : s - k + len(w)] = p[j, k : len(w)]
        lens = np.array([len(r) for r in rows])
        syms = np.zeros((len(rows), lens.max()), np.int64)
        for i, r in enumerate(rows):
            syms[i, : len(r)] = np.frombuffer(r, np.uint8)
        mx = None if g.mixer is None else g.mixer.new(len(rows), int(lens.max()), g.chunk_size)
        if mx is not None:
            every = np.arange(len(rows))
            for b in d:
                mx.feed(np.full(len(rows), b, dtype=np.int64), rows=every)
        for t in range(D, int(lens.max())):
            act = np.nonzero(lens > t)[0]
            p = np.stack([probs[i][t] for i in act]).astype(np.float32)
            if mx is not None:
                mx.mix(p, rows=act)
            y = syms[act, t]
            total -= float(np.log2(p[np.arange(len(act)), y].astype(np.float64) / p.sum(-1, dtype=np.float64)).sum())
            if mx is not None:
                mx.push(y, rows=act)
    return total


def one_chunk_overhead(record: bytes, dictionary: bytes | None) -> list[tuple[str, dict[str, int]]]:
    """The layout of one record as a full archive, a compact frame and a headerless frame."""
    import pyllmcodec

    out = []
    for frame in ("full", "compact", "headerless"):
        comp = pyllmcodec.Compressor(frame="full" if frame == "full" else "compact", dictionary=dictionary)
        params = comp.frame_params() if frame == "headerless" else None
        blob = comp.compress_batch([record], params=params)[0]
        back = pyllmcodec.Decompressor(dictionary=dictionary).decompress_batch([blob], params=params)[0]
        assert back == record
        if params is None:
            lay = dict(pyllmcodec.info(blob)["layout"])
        else:
            ov, pay = _frame_layout(blob, params)
            lay = {"header": 0, "index": ov, "payloads": pay, "footer": 0}
        lay["total"] = len(blob)
        lay["fixed"] = len(blob) - lay["payloads"]
        lay["params"] = 0 if params is None else len(params.to_bytes())
        out.append((frame, lay))
    return out


def exact_record(records: Sequence[bytes], n: int = 100) -> bytes:
    """A real record cut down to exactly ``n`` bytes of valid JSON (Package,
    Version, Description trimmed to fit)."""
    for r in records:
        o = json.loads(r)
        small = {k: o[k] for k in ("Package", "Version", "Description") if k in o}
        if "Description" not in small:
            continue
        desc = small["Description"]
        for cut in range(len(desc), 0, -1):
            small["Description"] = desc[:cut]
            b = json.dumps(small, ensure_ascii=False).encode()
            if len(b) == n and cut >= min(len(desc), 20):  # a real description, not one letter
                return b
            if len(b) < n:
                break
    raise RuntimeError(f"no record trims to {n} bytes")


# ------------------------------------------------------------------ report


def table(rows: Sequence[Row], n: int) -> str:
    lines = ["| method | mean B/record | bits/byte | fixed B/record | payload bits/byte | enc s | dec s | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        fixed = f"{sum(r.overhead) / n + r.once / n:.1f}" if r.overhead else "—"
        pay = f"{8 * r.payload / r.raw:.3f}" if r.payload is not None else "—"
        enc = f"{r.enc_s:.2f}" if r.enc_s else "—"
        dec = f"{r.dec_s:.2f}" if r.dec_s else "—"
        lines.append(f"| {r.name} | {r.total / n:.1f} | {r.bpb():.3f} | {fixed} | {pay} | {enc} | {dec} | {r.note} |")
    return "\n".join(lines)


def machine_line() -> str:
    import numpy
    import onnxruntime

    import pyllmcodec

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} vCPUs, Python {platform.python_version()}, onnxruntime "
            f"{onnxruntime.__version__}, numpy {numpy.__version__}, zstandard "
            f"{__import__('zstandard').__version__}, pyllmcodec {pyllmcodec.__version__}, "
            f"{datetime.date.today().isoformat()}")


def study(name: str, records: list[bytes], args: argparse.Namespace, n: int, md: list[str],
          source: str) -> None:
    import pyllmcodec

    train, test = split(records, args.seed, args.train, n)
    lens = np.array([len(r) for r in test])
    print(f"{name}: {len(records)} records, {len(train)} train / {len(test)} test; test mean {lens.mean():.1f} B",
          flush=True)
    md.append(f"## {name}\n")
    md.append(f"{source}  {len(records)} distinct records; seeded shuffle (seed {args.seed}) into "
              f"{len(train)} training records (the dictionaries) and a disjoint test set of **{len(test)} "
              f"records**, mean **{lens.mean():.1f} B** (median {int(np.median(lens))}, min {lens.min()}, "
              f"max {lens.max()}; {int(lens.sum())} B in all).  The training records average "
              f"{np.mean([len(r) for r in train]):.1f} B.  The default model codes a chunk in 512-byte "
              f"segments; a dictionary of D bytes takes D of the first, so a record longer than 512 - D "
              f"continues in a second segment that starts from only 64 bytes of context: "
              + ", ".join(f"{100 * np.mean(lens > 512 - D):.0f}% of the test records for D = {D}"
                          for D in (0, *args.dicts)) + ".\n")
    ours: dict[str, bytes | None] = {"no dictionary": None}
    for size in args.dicts:
        d, t = _timed(pyllmcodec.train_dictionary, train, size=size, segment=SEGMENT)
        ours[f"dict {size} B"] = d
        print(f"  our dictionary {size} B: {len(d)} B in {t:.1f} s", flush=True)
    long_dicts: dict[int, bytes | None] = {0: None}
    for size in args.long_dicts if args.long_context else ():
        if size:
            long_dicts[size] = (ours.get(f"dict {size} B")
                                or pyllmcodec.train_dictionary(train, size=size, segment=SEGMENT))
    our_dicts = [d for d in ours.values() if d is not None]
    our_dicts += [d for d in long_dicts.values() if d is not None and d not in our_dicts]
    rows = baselines(test, train, args.zstd_dicts, our_dicts)
    for r in rows:
        print(f"  {r.name}: {r.bpb():.3f} bits/byte", flush=True)
    ideal: list[Row] = []
    for label, d in ours.items():
        rows += llm_rows(test, d, args.batch_size, label)
        bits, t = _timed(ideal_bits, test, d)
        ideal.append(Row(f"model ideal, {label}", [], int(lens.sum()), bits=bits,
                         note=f"payload bound ({t:.0f} s to score)"))
    if args.long_context:  # segments of the model's whole context: room for a longer dictionary
        C = args.long_context
        for size in args.long_dicts:
            d = long_dicts[size]
            label = f"context {C}, " + (f"dict {size} B" if size else "no dictionary")
            rows += llm_rows(test, d, args.batch_size, label, frames=("headerless",), context=C)
            bits, t = _timed(ideal_bits, test, d, context=C)
            ideal.append(Row(f"model ideal, {label}", [], int(lens.sum()), bits=bits,
                             note=f"payload bound ({t:.0f} s to score)"))
    md.append(table(rows + ideal, len(test)))
    md.append("")
    ref = next((r for r in rows if r.name == f"zstd -19, dict {max(args.zstd_dicts)} B"), None)
    if ref is not None:
        wins = [f"{r.name.removeprefix('pyllmcodec ')} {sum(a < b for a, b in zip(r.sizes, ref.sizes))}"
                for r in rows if r.name.startswith("pyllmcodec headerless")]
        md.append(f"Records (of {len(test)}) whose headerless frame (params not counted) is smaller than their "
                  f"{ref.name} frame: {', '.join(wins)}.\n")
    if args.n_baseline > len(test):  # is the subsample representative? the baselines on more records
        _, big = split(records, args.seed, args.train, args.n_baseline)
        more = baselines(big, train, args.zstd_dicts, our_dicts)
        md.append(f"The same baselines on the first {len(big)} test records (a superset of the ones above, mean "
                  f"{np.mean([len(r) for r in big]):.1f} B): "
                  + ", ".join(f"{r.name} {r.bpb():.3f}" for r in more) + " bits/byte.\n")
    if args.segment_sweep and args.dicts:  # train_dictionary's segment length, for the model (ideal only)
        size = max(args.dicts)
        base = next(r for r in ideal if r.name == f"model ideal, dict {size} B")
        sweep = [f"{base.bpb():.3f} with the default segment=32"]
        for seg in args.segment_sweep:
            bits = ideal_bits(test, pyllmcodec.train_dictionary(train, size=size, segment=seg))
            sweep.append(f"{bits / int(lens.sum()):.3f} with segment={seg}")
        md.append(f"`train_dictionary(size={size}, segment=S)`: the model's ideal payload bits/byte (default context) "
                  + ", ".join(sweep) + ".\n")
    if args.long_context:
        C = args.long_context
        md.append(f"\"context {C}\": `Compressor(context={C})`, segments of the model's whole context instead of "
                  f"the bundle's 512 (a dictionary may then take up to {C // 2} bytes); records longer than "
                  f"{C} - D bytes: " + ", ".join(f"{100 * np.mean(lens > C - D):.0f}% for D = {D}"
                                                 for D in args.long_dicts) + ".\n")
    shown = {**ours, **{f"dict {k} B": v for k, v in long_dicts.items()}}
    for label, d in shown.items():
        if d is not None:
            md.append(f"Our {label} ({len(d)} bytes, from the training set): `{d.decode('utf-8', 'replace')!r}`\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="test records of the Debian set (default 256)")
    ap.add_argument("--train", type=int, default=4000, help="training records for the dictionaries")
    ap.add_argument("--n-baseline", type=int, default=5000,
                    help="also run gzip/zstd on this many test records (a superset), to check the subsample")
    ap.add_argument("--synthetic", type=int, default=256, help="test records of the synthetic set (0: skip it)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--batch-size", type=int, default=32, help="pyllmcodec rows per wave (default 32)")
    ap.add_argument("--dicts", default="128,256", help="our dictionary sizes (at most 256 for the default model)")
    ap.add_argument("--zstd-dicts", default="256,1024,4096", help="zstd dictionary sizes")
    ap.add_argument("--long-context", type=int, default=1024,
                    help="also headerless frames with segments this long (the model's whole context; 0: skip)")
    ap.add_argument("--long-dicts", default="0,256,512", help="dictionary sizes with --long-context (0: none)")
    ap.add_argument("--segment-sweep", default="16,64,128",
                    help="also score (ideal only) our largest dictionary trained with these segment lengths")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    a.dicts = [int(x) for x in a.dicts.split(",") if x]
    a.zstd_dicts = [int(x) for x in a.zstd_dicts.split(",") if x]
    a.long_dicts = [int(x) for x in a.long_dicts.split(",") if x]
    a.segment_sweep = [int(x) for x in a.segment_sweep.split(",") if x]
    t_start = time.time()
    import pyllmcodec

    # a dictionary longer than half the segments is refused
    try:
        pyllmcodec.Compressor(dictionary=b"x" * 257)
        refused = "accepted (!)"
    except ValueError as exc:
        refused = f"refused: {exc}"

    cmd = "python -m bench.studies.jsonl_records" + "".join(f" {x}" for x in sys.argv[1:])
    md = ["# Small JSONL records, one archive per record (issue 17)\n",
          f"Machine: {machine_line()}; 1-minute load average {os.getloadavg()[0]:.1f} at the start (the "
          "machine is shared: the times are contended and only roughly comparable).\n",
          f"Command: `{cmd}`\n",
          "Every record compressed on its own; bits/byte = total compressed bits / total raw bytes of the "
          "test set.  \"fixed B/record\": gzip's header+trailer, zstd's frame header + one block header, "
          "pyllmcodec's header + index + footer (a headerless frame's index + CRC, plus its params / N).  "
          "pyllmcodec goes through `compress_batch` (one model schedule for the set, one archive or frame per "
          "record) and every result is checked with `decompress_batch`; zstd's and gzip's are checked too.  "
          "\"model ideal\": the default model's code length of the same records (teacher-forced graph, the "
          "match model, after the dictionary), i.e. the smallest payload the model allows; its bytes are "
          "shown as the mean per record.\n",
          f"A 257-byte dictionary with the default model (512-byte segments): {refused}\n"]

    records, sources = debian_records()
    study("Debian package records (real)", records, a, a.n, md,
          f"From this machine's package database ({', '.join(sources)}): one JSON object per package "
          f"({', '.join(FIELDS)} -- Description's first line --, in that order, absent fields left out).")

    # one record of 100 bytes: the fixed cost of a one-chunk archive
    train, test = split(records, a.seed, a.train, max(a.n, 1000))
    rec = exact_record(test)  # the first test record that trims to 100 bytes
    d256 = pyllmcodec.train_dictionary(train, size=256, segment=SEGMENT)
    md.append("## Fixed overhead of a one-chunk archive (one 100-byte record)\n")
    md.append(f"Record: `{rec.decode()}`\n")
    md.append("| frame | dictionary | header | index | footer | fixed | payload | total | params kept once |")
    md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, d in (("none", None), ("256 B", d256)):
        for frame, lay in one_chunk_overhead(rec, d):
            md.append(f"| {frame} | {label} | {lay['header']} | {lay['index']} | {lay['footer']} | "
                      f"**{lay['fixed']}** | {lay['payloads']} | {lay['total']} | {lay['params'] or '—'} |")
    import zstandard as zstd

    md.append(f"\nFor scale: gzip -9 makes {len(gzip.compress(rec, 9, mtime=0))} bytes of it, zstd -19 "
              f"{len(zstd.ZstdCompressor(level=19).compress(rec))}.\n")

    if a.synthetic:
        logs = synthetic_logs(a.train + max(a.synthetic, a.n_baseline), a.seed)
        study("JSON log lines (SYNTHETIC)", logs, a, a.synthetic, md,
              "**Synthetic**: log lines of a made-up web service from `random.Random(seed)` "
              "(`synthetic_logs`), not real data.")

    md.append(f"Total run time {time.time() - t_start:.0f} s; 1-minute load average {os.getloadavg()[0]:.1f} "
              "at the end.\n")
    text = "\n".join(md)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
