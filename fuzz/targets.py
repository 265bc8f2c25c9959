"""The fuzz targets.  Each takes arbitrary bytes and must either return or raise
:class:`~pyllmcodec.errors.CodecError` (or a subclass); any other exception, a
crash of the process or a hang is a bug.  The targets also cross-check the
entry points against each other (differential checks), raising
:class:`Mismatch` when they disagree:

* :func:`container` -- ``ArchiveIndex`` (random access) and ``ArchiveReader``
  (streaming) must accept exactly the same archives and see the same blocks.
* :func:`archive` -- :func:`container`, then ``Decompressor.decompress``,
  ``open(...).read()`` and ``info``: if one decodes, all must, to the same
  bytes, with ``info`` reporting their size and SHA-256; then
  :func:`headerless`: the input as a headerless frame at fixed params.
  Archives, compact frames and headerless frames are all seeds.
* :func:`core_decoder` -- the native ``BatchDecoder`` on arbitrary streams with
  arbitrary (valid) distributions, all three decode paths, plus an
  encode/decode round trip of symbols taken from the input.

The model is the fast fake ``test-bigram`` of ``tests/conftest.py``
(registered by :func:`setup`), so millions of inputs are affordable; it
reports 64 KiB of state per row, so the memory budget works as with a real
model.  The decoders run with the default ``max_batch_size`` and a
``max_output_size`` of 1 MiB and a ``max_memory`` of 64 MiB: the same code as
the defaults, with budgets that keep one input's work small.

Budgets (a blown one is a finding): memory -- an allocation that fails under
the runner's address-space limit (``MemoryLimitError`` "out of memory", or
any ``MemoryError``); time -- the runner's per-input timeout, and here a
decode that takes longer than the documented bound for the archive's own
claims (``2 s + 2 us`` per model row-step of its waves and probe,
docs/RELIABILITY.md section 2).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import os
import sys
import time
from typing import Any

import numpy as np

import pyllmcodec
from pyllmcodec import CodecError, MemoryLimitError, OutputLimitError, core
from pyllmcodec.frames import FrameParams, FrameReader, open_index, open_reader, split

__all__ = ["TARGETS", "Mismatch", "archive", "container", "core_decoder", "setup"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_OUTPUT = 1 << 20
MAX_MEMORY = 64 << 20
#: seconds per model row-step the time budget allows the fake model, and the fixed allowance
ROW_STEP_S = 2e-6
BASE_S = 2.0


class Mismatch(AssertionError):
    """Two entry points disagree about the same input."""


_DEC: pyllmcodec.Decompressor | None = None
#: the dictionary the fuzz decoder holds (seeds primed with it decode)
FUZZ_DICTIONARY = b"the quick brown fox "
#: the params the fuzz target also tries every input with, as a headerless frame
_PARAMS: FrameParams | None = None


def setup() -> None:
    """Register the fake model "test-bigram" (from tests/conftest.py)."""
    global _DEC
    mod = sys.modules.get("conftest")
    if mod is None or not hasattr(mod, "BigramModel"):
        spec = importlib.util.spec_from_file_location("_pyllmcodec_test_conftest", os.path.join(REPO, "tests", "conftest.py"))
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    mod.register()
    global _PARAMS
    _DEC = pyllmcodec.Decompressor(max_output_size=MAX_OUTPUT, max_memory=MAX_MEMORY, dictionary=FUZZ_DICTIONARY)
    _PARAMS = headerless_compressor().frame_params()


def headerless_compressor() -> pyllmcodec.Compressor:
    """The Compressor of the headerless seeds (its params are :data:`_PARAMS`)."""
    return pyllmcodec.Compressor("test-bigram", chunk_size=48, batch_size=3, fallback="stored")


def params() -> FrameParams:
    if _PARAMS is None:
        setup()
    assert _PARAMS is not None
    return _PARAMS


def _dec() -> pyllmcodec.Decompressor:
    if _DEC is None:
        setup()
    assert _DEC is not None
    return _DEC


class BudgetBlown(AssertionError):
    """A decode took more memory or time than the archive's claims justify."""


def _outcome(fn: Any) -> tuple[bool, Any]:
    """(True, result) or (False, the CodecError); anything else propagates,
    and so does a failed allocation (a blown memory budget)."""
    try:
        return True, fn()
    except MemoryLimitError as exc:
        if "out of memory" in str(exc):
            raise BudgetBlown(f"memory: {exc}") from None
        return False, exc
    except CodecError as exc:
        return False, exc


def _row_steps(data: bytes) -> int:
    """The model row-steps the archive's own claims allow: each wave's rows
    times its longest chunk (with the segments' primes), plus the probe."""
    total = 0
    for part in split_or_whole(data):
        try:
            ix = open_index(part)
        except CodecError:
            continue
        h = ix.header
        ctx, prime = h.context, h.prime
        total += h.probe_batch * 48
        for b in ix.blocks:
            longest = max((e.raw_len for e in b.entries), default=0)
            extra = 0 if longest <= ctx or ctx <= prime else (longest // (ctx - prime) + 1) * prime
            total += b.batch * (longest + extra)
    return total


# ------------------------------------------------------------------ container


def split_or_whole(data: bytes) -> list[Any]:
    """The archives and frames in ``data`` (``[data]`` when it does not split)."""
    try:
        return split(data)
    except CodecError:
        return [data]


def _stream_blocks(data: bytes) -> Any:
    r = open_reader(io.BytesIO(data))
    blocks = [(b.batch, b.entries, b.offset, b.payload_offset) for b, _ in r.blocks()]
    if isinstance(r, FrameReader):
        r.next_archive()  # one frame: FormatError for anything after it
    return blocks, r.footer


def container(data: bytes) -> None:
    """Random access (ArchiveIndex/FrameIndex) and the streaming readers
    (ArchiveReader/FrameReader) accept the same inputs and see the same blocks."""
    ok_ix, ix = _outcome(lambda: open_index(data))
    ok_rd, rd = _outcome(lambda: _stream_blocks(data))
    if ok_ix != ok_rd:
        raise Mismatch(f"ArchiveIndex {'accepts' if ok_ix else 'refuses'} but ArchiveReader "
                       f"{'accepts' if ok_rd else 'refuses'}: {ix if not ok_ix else rd}")
    if ok_ix:
        mine = [(b.batch, b.entries, b.offset, b.payload_offset) for b in ix.blocks]
        if mine != rd[0] or ix.footer != rd[1]:
            raise Mismatch("the index and the streaming reader see different blocks or footers")


# ------------------------------------------------------------------ archive


def _read_open(data: bytes) -> bytes:
    with pyllmcodec.open(io.BytesIO(data), "rb", max_memory=MAX_MEMORY, max_output_size=MAX_OUTPUT,
                         dictionary=FUZZ_DICTIONARY) as f:
        return f.read()


def _decompressobj(data: bytes, piece: int = 97) -> bytes:
    """The incremental decoder fed ``piece`` bytes at a time, archive after
    archive (``unused_data``), as a user of it would."""
    out = []
    rest = data
    while True:
        d = _dec().decompressobj(MAX_OUTPUT)
        i = 0
        while i < len(rest) and not d.eof:
            out.append(d.decompress(rest[i : i + piece]))
            i += piece
        if not d.eof:
            raise pyllmcodec.FormatError("truncated: the archive did not end")
        rest = d.unused_data + rest[i:]
        if not rest:
            return b"".join(out)


def archive(data: bytes) -> None:
    container(data)
    dec = _dec()
    budget = BASE_S + ROW_STEP_S * _row_steps(data)
    t0 = time.perf_counter()
    ok_d, out = _outcome(lambda: dec.decompress(data))
    took = time.perf_counter() - t0
    if took > budget:
        raise BudgetBlown(f"time: decompress took {took:.1f} s, the archive's claims allow {budget:.1f} s")
    ok_s, streamed = _outcome(lambda: _read_open(data))
    ok_o, pieces = _outcome(lambda: _decompressobj(data))
    if ok_o != ok_d and not isinstance(out if not ok_d else pieces, OutputLimitError):
        raise Mismatch(f"decompress {'decodes' if ok_d else 'raises ' + repr(out)} but decompressobj "
                       f"{'decodes' if ok_o else 'raises ' + repr(pieces)}")
    if ok_o and ok_d and pieces != out:
        raise Mismatch("decompressobj and decompress decode different bytes")
    parts = split_or_whole(data)  # concatenated archives decode to the concatenation; info() takes each
    infos = [_outcome(lambda p=p: pyllmcodec.info(p)) for p in parts]
    if ok_d:
        if not ok_s or streamed != out:
            raise Mismatch(f"decompress gives {len(out)} bytes but open().read() "
                           f"{'differs' if ok_s else 'raises ' + repr(streamed)}")
        if not all(ok for ok, _ in infos) or sum(m["size"] for _, m in infos) != len(out):
            raise Mismatch("info() of the archives disagrees with the decoded output")
        if len(parts) == 1 and infos[0][1]["sha256"] not in (None, hashlib.sha256(out).hexdigest()):
            raise Mismatch("info() disagrees with the decoded output's SHA-256")
    elif ok_s and not isinstance(out, OutputLimitError):
        raise Mismatch(f"open().read() decodes {len(streamed)} bytes but decompress raises {out!r}")
    headerless(data)


def headerless(data: bytes) -> None:
    """``data`` as a headerless frame at the fuzz params: it decodes or
    raises CodecError, the same by batch and by random access."""
    dec = _dec()
    ok_d, out = _outcome(lambda: dec.decompress(data, params=params()))
    ok_c, first = _outcome(lambda: dec.decompress_chunk(data, 0, params=params()))
    if ok_d and out and (not ok_c or not out.startswith(first)):
        raise Mismatch("a headerless frame decodes, but its first chunk alone does not match")


# ------------------------------------------------------------------ core

_RNG = np.random.default_rng(20240601)
_PROBS: dict[int, np.ndarray] = {}


def _probs(V: int) -> np.ndarray:
    """8 fixed peaked rows of V probabilities (some exactly zero)."""
    p = _PROBS.get(V)
    if p is None:
        p = (_RNG.random((8, V)) ** 8).astype(np.float32)
        p[:, _RNG.integers(0, V, size=max(1, V // 8))] = 0.0
        p[:, 0] += np.float32(1e-3)  # never a zero row
        _PROBS[V] = p
    return p


def core_decoder(data: bytes) -> None:
    """The native decoder on arbitrary streams; then an encode/decode round trip."""
    if len(data) < 6:
        return
    n = 1 + data[0] % 4
    precision = max(core.MIN_PRECISION, min(core.MAX_PRECISION, data[1] % 32))
    V = 2 + int.from_bytes(data[2:4], "little") % 700
    V = min(V, 1 << (precision - 1))
    if V < 2:
        precision, V = max(precision, 9), max(V, 2)
    steps = 1 + data[4] % 48
    mode = data[5]
    body = data[6:]
    cuts = sorted({len(body) * k // n for k in range(n + 1)})
    streams = [body[a:b] for a, b in itertools.pairwise(cuts)] + [b""] * (n - len(cuts) + 1)
    streams = streams[:n]
    table = _probs(V)
    dec = core.BatchDecoder(streams, precision)
    try:
        for t in range(steps):
            p = np.ascontiguousarray(table[(np.arange(n) + t) % 8])
            m = (mode >> (2 * (t % 4))) & 3
            if m == 0:
                s = dec.decode_probs(p)
            elif m == 1:
                s = dec.decode(core.quantize(p, precision))
            elif m == 2:
                cdf = core.quantize(p, precision)
                tg = dec.targets()
                s = np.array([np.searchsorted(cdf[k], tg[k], side="right") - 1 for k in range(n)])
                k = np.arange(n)
                dec.advance(s, cdf[k, s], cdf[k, s + 1] - cdf[k, s])
            else:  # a subset of the streams
                rows = np.array([r for r in range(n) if (mode >> r) & 1 or r == t % n], dtype=np.int64)
                s = dec.decode_probs(np.ascontiguousarray(p[rows]), rows=rows)
            if not ((s >= 0) & (s < V)).all():
                raise Mismatch(f"decoded symbol outside [0, {V}): {s}")
    except CodecError:
        pass
    # round trip: symbols from the input must come back exactly
    syms = np.frombuffer(body[: steps * n].ljust(steps * n, b"\0"), dtype=np.uint8).astype(np.int64).reshape(steps, n) % V
    enc = core.BatchEncoder(n, precision)
    for t in range(steps):
        p = np.ascontiguousarray(table[(np.arange(n) + t) % 8])
        enc.encode_probs(p, syms[t])
    coded = enc.finish()
    dec = core.BatchDecoder(coded, precision)
    for t in range(steps):
        p = np.ascontiguousarray(table[(np.arange(n) + t) % 8])
        got = dec.decode(core.quantize(p, precision)) if t % 2 else dec.decode_probs(p)
        if not np.array_equal(got, syms[t]):
            raise Mismatch(f"round trip failed at step {t}: {got} != {syms[t]}")


TARGETS = {"container": container, "archive": archive, "core": core_decoder}
