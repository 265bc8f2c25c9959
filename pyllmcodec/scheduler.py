"""The batched step loop shared by the encoder and the decoder.

READ ME FIRST -- the geometry, which is part of the format:

* Data is cut into chunks.  A *wave* is a set of chunks stepped together as
  the rows ``0..batch-1`` of one model state of batch size ``batch``.  The
  standard schedule (:func:`plan_waves`) puts global chunk ``i`` in wave
  ``i // B`` at row ``i % B``; a wave's batch is ``min(B, chunks left)``.
* Every row present in a wave is fed ``bos`` at step 0, then, at step
  ``t >= 1``, the byte ``t - 1`` of its chunk while ``t < len``; from step
  ``len`` on, and from step 0 for rows absent from the wave, it is fed the
  pad token.  Step ``t`` of a present row with ``t < len`` codes byte ``t``
  with the distribution the model returned at that step.  A wave takes
  ``max(len)`` steps from a fresh state.
* The encoder and the decoder build the *same* fed-token matrix, row for row,
  step for step (:func:`fed_tokens` documents it; the decoder fills it in as
  it decodes).  The only departure is deliberate: rows whose chunk is not
  model-coded (stored, deflate) or not wanted (random access) are fed the pad
  token for the whole wave by the decoder.  That is valid because of the row
  independence promised by :class:`~pyllmcodec.backends.base.StepModel`: a
  row's output never depends on the other rows' contents, only on the batch
  size and its own row index, which the decoder always reproduces.

Chunks longer than the context (byte-level models; the header's ``prime``
``K >= 1``): a row's symbols are coded in *segments* of ``C`` symbols, the
model's context or the header's shorter ``context``.  Segment 0 is the row as above for symbols ``[0, C)``.  Segment ``j >=
1`` codes symbols ``[s, s + C - K)`` with ``s = C + (j - 1)(C - K)``: it starts
from a fresh state and is fed ``bos``, then the ``K`` symbols before ``s`` (which
both sides already have), then its own symbols; its steps ``0..K-1`` code
nothing, step ``u >= K`` codes symbol ``s - K + u``.  Every row present in a
wave starts each segment at the same step, so the silent steps are the same
for all rows; a row is present in segment ``j`` while it has symbols from
``s`` on (:func:`segment_plan`).  A chunk that fits the context is coded
exactly as before, so ``K`` only matters for longer ones.

The match model (header key ``mixer``, docs/FORMAT.md section 4c): each
wave gets a fresh :class:`pyllmcodec.core.MatchMixer` with one state per row,
kept across the row's segments.  At every step that codes a symbol, the rows
that code go through ``mix`` before the quantizer and ``push`` after it, in
the same order on both sides; silent (prime) steps do neither.  A row's
history is its own chunk, so random access still decodes any chunk alone.

Token-level models (NOTE): for a model with a tokenizer the "bytes" above are
token ids: a chunk's symbol sequence is its token array (int64), fed and coded
exactly as bytes are, one token per step; :meth:`WaveRunner.decode_wave`
returns the token arrays and the codec turns them back into bytes.

Two-phase steps: a model whose probabilities live on an accelerator
(``model.device_quantize`` true, with ``step_ranges``/``step_find``) quantizes
there with the core's algorithm (:mod:`pyllmcodec.devquant`) and returns only
O(B) numbers per step: the encoder gets each row's ``(cum_low, freq)`` for
``BatchEncoder.encode_ranges``; the decoder passes ``BatchDecoder.targets`` in
and gets ``(symbol, cum_low, freq)`` for ``BatchDecoder.advance``.  The coded
bits are the same as with the fused host path, since the tables are.

Per-step Python work is kept to: one ``model.step`` call, one fused
quantize-and-code call on the whole probability matrix, and (only while some
rows are idle) one fancy-index gather.  Everything else -- token matrices,
active-row sets -- is built before the loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends.base import StepModel
from .constants import PROBE_BYTES

__all__ = ["WaveRunner", "fed_tokens", "plan_waves", "segment_plan", "segment_windows", "segments"]


def _coding_rows(p: np.ndarray, act: np.ndarray | None, mx: Any) -> np.ndarray:
    """The rows ``act`` of a step's probabilities (all rows: None), ready for
    the match model ``mx`` to edit in place: a gathered subset is a copy
    already, all rows are copied only when the model's buffer is read-only."""
    if act is not None:
        return p[act]
    return p.copy() if mx is not None and not p.flags.writeable else p


def plan_waves(n_chunks: int, batch_size: int) -> list[tuple[int, int]]:
    """The standard schedule: ``(first chunk, wave batch)`` for each wave of
    ``n_chunks`` chunks at batch size ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return [(s, min(batch_size, n_chunks - s)) for s in range(0, n_chunks, batch_size)]


def segments(
    batch: int, rows: Sequence[int], lengths: Sequence[int]
) -> list[tuple[int, int, np.ndarray | None, np.ndarray]]:
    """Split a wave's steps into runs with a constant set of active rows.

    Returns ``(t0, t1, active, finishing)`` per run: ``active`` is the sorted
    int64 array of rows that code a symbol at every step of ``[t0, t1)``, or
    ``None`` when that is all ``batch`` rows (the fast path: no gather, no
    ``rows`` argument); ``finishing`` holds the rows whose chunk ends at ``t1``.
    """
    by_len: dict[int, list[int]] = {}
    for r, n in zip(rows, lengths):
        by_len.setdefault(int(n), []).append(int(r))
    out = []
    alive = sorted(int(r) for r in rows)
    t0 = 0
    for end in sorted(by_len):
        if end > t0:
            act = np.asarray(alive, dtype=np.int64)
            out.append((t0, end, None if len(alive) == batch else act, np.asarray(by_len[end], dtype=np.int64)))
            t0 = end
        else:  # zero-length rows never run; nothing to emit
            pass
        done = set(by_len[end])
        alive = [r for r in alive if r not in done]
    return out


def segment_plan(length: int, context: int, prime: int) -> list[tuple[int, int]]:
    """``(s, k)`` per segment of a row of ``length`` symbols: the segment codes
    symbols ``[s, min(length, s + context - k))`` after ``k`` silent steps
    (``k = 0`` for the first segment, ``prime`` for the others).  A row that
    fits the context has one segment; a longer one needs ``1 <= prime <
    context``."""
    out = [(0, 0)]
    if length <= context:
        return out
    if not 1 <= prime < context:
        raise ValueError(f"chunk of {length} symbols is longer than the model's context ({context}) "
                         "and the archive has no valid prime length for its segments")
    s = context
    while s < length:
        out.append((s, prime))
        s += context - prime
    return out


def segment_windows(seq: Any, context: int, prime: int) -> list[tuple[Any, int]]:
    """``(window, k)`` per segment of ``seq``: the symbols a fresh state is fed
    after ``bos``, of which the first ``k`` are context and the rest coded."""
    return [(seq[s - k : s - k + context], k) for s, k in segment_plan(len(seq), context, prime)]


def fed_tokens(
    batch: int, rows: Sequence[int], chunks: Sequence[bytes | memoryview | np.ndarray], bos: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fed-token matrix ``tok[t, r]`` (int64 ``[L, batch]``) of a wave and
    the symbol matrix ``sym[t, r]`` (int64, byte ``t`` of row ``r``'s chunk,
    0 where there is none), ``L`` the longest chunk.  See the module docstring.
    A chunk given as an integer array is a token sequence."""
    length = max((len(c) for c in chunks), default=0)
    tok = np.full((length, batch), pad, dtype=np.int64)
    sym = np.zeros((length, batch), dtype=np.int64)
    for r, c in zip(rows, chunks):
        n = len(c)
        if n == 0:
            continue
        data = c if isinstance(c, np.ndarray) else np.frombuffer(c, dtype=np.uint8)
        tok[0, r] = bos
        tok[1:n, r] = data[:-1]
        sym[:n, r] = data
    return tok, sym


class WaveRunner:
    """Runs waves of one model session: encode, decode, probe, bare loop.

    Holds no per-archive state; one runner can serve many archives as long as
    they agree on ``precision``, ``pad`` and ``prime``.
    """

    def __init__(self, model: StepModel, precision: int, pad: int | None = None, prime: int = 0,
                 mixer: Any = None, chunk_size: int = 0, context: int | None = None) -> None:
        # the native coder; imported late so container work needs no build
        from . import core

        self.core = core
        self.model = model
        self.precision = int(precision)
        #: silent steps that start each segment after the first (module docstring)
        self.prime = int(prime)
        #: the segments' length C (module docstring): the model's context, or
        #: less (header key ``context``: a shorter context steps faster)
        self.context = int(model.max_context if context is None else context)
        if not 2 <= self.context <= int(model.max_context):
            raise ValueError(f"context must be in 2..{model.max_context}")
        self.bos = int(model.bos)
        self.pad = self.bos if pad is None else int(pad)
        self.vocab_size = int(model.vocab_size)
        #: quantize on the model's device (two-phase steps), see the module docstring
        self.two_phase = bool(getattr(model, "device_quantize", False))
        #: the match model (a :class:`~pyllmcodec.mixer.MixerSpec`) or None, and
        #: the archive's chunk size, which sizes its tables (FORMAT.md section 4c)
        self.mixer = mixer
        self.chunk_size = int(chunk_size)
        if mixer is not None and self.two_phase:
            raise ValueError("the match model needs a model that quantizes on the host")

    def _new_mixer(self, batch: int, max_len: int) -> Any:
        """A fresh match model for one wave (None without one)."""
        return None if self.mixer is None else self.mixer.new(batch, max_len, self.chunk_size)

    # -------------------------------------------------------------- encode

    def encode_wave(self, batch: int, rows: Sequence[int],
                    chunks: Sequence[bytes | memoryview | np.ndarray]) -> list[bytes]:
        """Model-code ``chunks`` (chunk ``k`` at row ``rows[k]``; bytes, or
        token arrays for a token-level model) as one wave of batch size
        ``batch``; returns one coded payload per chunk."""
        lengths = [len(c) for c in chunks]
        if max(lengths, default=0) > self.context:
            return self._encode_segmented(batch, rows, chunks)
        tok, sym = fed_tokens(batch, rows, chunks, self.bos, self.pad)
        state = self.model.new_state(batch)
        enc = self.core.BatchEncoder(batch, precision=self.precision)
        if self.two_phase:
            ranges = self.model.step_ranges  # type: ignore[attr-defined]
            P = self.precision
            for t0, t1, act, _fin in segments(batch, rows, lengths):
                for t in range(t0, t1):
                    c, f = ranges(state, tok[t], sym[t], P)
                    if act is None:
                        enc.encode_ranges(c, f)
                    else:
                        enc.encode_ranges(c[act], f[act], rows=act)
            streams = enc.finish()
            return [bytes(streams[r]) for r in rows]
        mx = self._new_mixer(batch, max(lengths, default=0))
        self._encode_runs(state, enc, tok, sym, segments(batch, rows, lengths), mx=mx)
        streams = enc.finish()
        return [bytes(streams[r]) for r in rows]

    def _encode_runs(self, state: Any, enc: Any, tok: np.ndarray, sym: np.ndarray,
                     runs: list[tuple[int, int, np.ndarray | None, np.ndarray]], first: int = 0,
                     mx: Any = None) -> None:
        """Step ``state`` through ``runs`` (from :func:`segments`) and code each
        step's symbols from step ``first`` on (the host path), through the
        match model ``mx`` when there is one."""
        step, encode = self.model.step, enc.encode_probs
        for t0, t1, act, _fin in runs:
            t0 = max(t0, first)
            sub = sym[t0:t1] if act is None else np.ascontiguousarray(sym[t0:t1][:, act])
            for t in range(t0, t1):
                p = _coding_rows(step(state, tok[t]), act, mx)
                if mx is not None:
                    mx.mix(p, rows=act)
                encode(p, sub[t - t0], rows=act)
                if mx is not None:
                    mx.push(sub[t - t0], rows=act)

    def _encode_segmented(self, batch: int, rows: Sequence[int],
                          chunks: Sequence[bytes | memoryview | np.ndarray]) -> list[bytes]:
        """:meth:`encode_wave` for a wave with chunks longer than the context."""
        if self.two_phase:
            raise ValueError("chunks longer than the context need a model that quantizes on the host")
        C = self.context
        plan = segment_plan(max(len(c) for c in chunks), C, self.prime)
        enc = self.core.BatchEncoder(batch, precision=self.precision)
        mx = self._new_mixer(batch, max(len(c) for c in chunks))  # one per row for all its segments
        for s, k in plan:
            present = [(int(r), c[s - k : s - k + C]) for r, c in zip(rows, chunks) if len(c) > s]
            prow = [r for r, _ in present]
            seqs = [q for _, q in present]
            tok, sym = fed_tokens(batch, prow, seqs, self.bos, self.pad)
            state = self.model.new_state(batch)
            for t in range(k):  # bos and the prime: nothing coded
                self.model.step(state, tok[t])
            # every present row has a symbol at step k, so the runs start by then
            self._encode_runs(state, enc, tok, sym, segments(batch, prow, [len(q) for q in seqs]), first=k, mx=mx)
        streams = enc.finish()
        return [bytes(streams[r]) for r in rows]

    # -------------------------------------------------------------- decode

    def decode_wave(
        self,
        batch: int,
        rows: Sequence[int],
        lengths: Sequence[int],
        payloads: Sequence[bytes | memoryview],
        tokens: bool = False,
    ) -> list[Any]:
        """Decode the chunks at ``rows`` (lengths and payloads alike) of one
        wave of batch size ``batch``; all other rows are fed the pad token.
        Returns bytes, or int64 token arrays when ``tokens`` is true."""
        streams: list[bytes] = [b""] * batch
        for r, p in zip(rows, payloads):
            streams[r] = bytes(p)
        length = max(lengths, default=0)
        if length > self.context:
            return self._decode_segmented(batch, rows, lengths, streams, tokens)
        dec = self.core.BatchDecoder(streams, precision=self.precision)
        state = self.model.new_state(batch)
        tok = np.full(batch, self.pad, dtype=np.int64)
        tok[np.asarray(rows, dtype=np.int64)] = self.bos
        out = np.zeros((length, batch), dtype=np.int64 if tokens else np.uint8)
        if self.two_phase:
            find = self.model.step_find  # type: ignore[attr-defined]
            P = self.precision
            targets = np.zeros(batch, dtype=np.uint32)
            for t0, t1, act, fin in segments(batch, rows, lengths):
                for t in range(t0, t1):
                    if act is None:
                        s, c, f = find(state, tok, dec.targets(), P)
                        dec.advance(s, c, f)
                        out[t] = s
                        tok[:] = s
                    else:
                        targets[act] = dec.targets(rows=act)
                        s, c, f = find(state, tok, targets, P)
                        dec.advance(s[act], c[act], f[act], rows=act)
                        out[t, act] = s[act]
                        tok[act] = s[act]
                tok[fin] = self.pad
            return [out[:n, r].copy() if tokens else out[:n, r].tobytes() for r, n in zip(rows, lengths)]
        mx = self._new_mixer(batch, length)
        self._decode_runs(state, dec, tok, out, segments(batch, rows, lengths), mx=mx)
        return [out[:n, r].copy() if tokens else out[:n, r].tobytes() for r, n in zip(rows, lengths)]

    def _decode_runs(self, state: Any, dec: Any, tok: np.ndarray, out: np.ndarray,
                     runs: list[tuple[int, int, np.ndarray | None, np.ndarray]], first: int = 0,
                     base: int = 0, mx: Any = None) -> None:
        """Step ``state`` through ``runs`` from step ``first`` on (the host
        path), decoding step ``t``'s symbols into ``out[base + t]`` and feeding
        them back through ``tok``; a row's token becomes the pad where it ends.
        With a match model ``mx``, each step's rows go through it first."""
        decode, step = dec.decode_probs, self.model.step
        for t0, t1, act, fin in runs:
            for t in range(max(t0, first), t1):
                p = _coding_rows(step(state, tok), act, mx)
                if mx is not None:
                    mx.mix(p, rows=act)
                s = decode(p, rows=act)
                if mx is not None:
                    mx.push(s, rows=act)
                if act is None:
                    out[base + t] = s
                    tok[:] = s
                else:
                    out[base + t, act] = s
                    tok[act] = s
            tok[fin] = self.pad

    def _decode_segmented(self, batch: int, rows: Sequence[int], lengths: Sequence[int],
                          streams: list[bytes], tokens: bool) -> list[Any]:
        """:meth:`decode_wave` for a wave with chunks longer than the context."""
        if self.two_phase:
            raise ValueError("chunks longer than the context need a model that quantizes on the host")
        C = self.context
        plan = segment_plan(max(lengths), C, self.prime)
        dec = self.core.BatchDecoder(streams, precision=self.precision)
        out = np.zeros((max(lengths), batch), dtype=np.int64 if tokens else np.uint8)
        mx = self._new_mixer(batch, max(lengths))
        for s, k in plan:
            present = [(int(r), int(n)) for r, n in zip(rows, lengths) if n > s]
            prow = np.asarray([r for r, _ in present], dtype=np.int64)
            seg_lens = [min(n, s - k + C) - (s - k) for _, n in present]
            state = self.model.new_state(batch)
            tok = np.full(batch, self.pad, dtype=np.int64)
            tok[prow] = self.bos
            for t in range(k):  # bos and the prime, from symbols decoded before
                self.model.step(state, tok)
                tok[prow] = out[s - k + t, prow]
            self._decode_runs(state, dec, tok, out, segments(batch, prow.tolist(), seg_lens), first=k, base=s - k,
                              mx=mx)
        return [out[:n, r].copy() if tokens else out[:n, r].tobytes() for r, n in zip(rows, lengths)]

    def decode_wave_tokens(
        self,
        batch: int,
        rows: Sequence[int],
        raw_lens: Sequence[int],
        payloads: Sequence[bytes | memoryview],
        token_bytes: np.ndarray,
        newlines: np.ndarray | None = None,
        extra: Sequence[int] | None = None,
    ) -> list[np.ndarray]:
        """Decode token-level chunks whose token counts are not stored: row
        ``r`` stops after the token that brings its decoded byte count
        (``token_bytes[id]`` per token, all >= 1) to ``raw_lens``.  The encoder
        stepped each row for exactly its token count, and a chunk's tokens
        reach its byte length first at its last token, so the fed-token matrix
        is the same.  Raises ValueError when a row overshoots its length or
        runs past the model's context (corrupt data).

        With ``newlines`` (LFs per symbol) and ``extra`` (per row, aligned with
        ``rows``), a symbol counts ``token_bytes + newlines * extra`` bytes:
        the line-ending methods, whose rows end when their restored length
        (the suffix put back before each LF) reaches ``raw_lens``.  Byte-level
        rows use this loop too (``token_bytes`` all ones): every symbol still
        counts >= 1, so the rule ends each row at its last symbol."""
        streams: list[bytes] = [b""] * batch
        for r, p in zip(rows, payloads):
            streams[r] = bytes(p)
        dec = self.core.BatchDecoder(streams, precision=self.precision)
        state = self.model.new_state(batch)
        pad, max_ctx = self.pad, self.context
        tok = np.full(batch, pad, dtype=np.int64)
        alive = np.asarray(sorted(int(r) for r in rows), dtype=np.int64)
        tok[alive] = self.bos
        need = np.zeros(batch, dtype=np.int64)
        need[np.asarray(rows, dtype=np.int64)] = np.asarray(raw_lens, dtype=np.int64)
        got = np.zeros(batch, dtype=np.int64)
        per_nl = np.zeros(batch, dtype=np.int64)
        if newlines is not None and extra is not None:
            per_nl[np.asarray(rows, dtype=np.int64)] = np.asarray(extra, dtype=np.int64)
        else:
            newlines = None
        steps = np.zeros(batch, dtype=np.int64)
        longest = int(max(raw_lens, default=0))  # every symbol counts >= 1 byte
        out = np.zeros((longest if self.prime else min(max_ctx, longest), batch), dtype=np.int64)
        P = self.precision
        targets = np.zeros(batch, dtype=np.uint32)
        mx = self._new_mixer(batch, out.shape[0])
        t = 0
        seg_t = 0  # steps taken in the current segment (module docstring)
        while alive.size:
            if t >= out.shape[0]:
                raise ValueError("a token-level chunk does not end within the model's context")
            if seg_t == max_ctx:  # the context is full: the next segment, from bos and the prime
                if self.two_phase:
                    raise ValueError("chunks longer than the context need a model that quantizes on the host")
                state = self.model.new_state(batch)
                tok[alive] = self.bos
                for u in range(self.prime):
                    self.model.step(state, tok)
                    tok[alive] = out[t - self.prime + u, alive]
                seg_t = self.prime
            seg_t += 1
            full = alive.size == batch
            if self.two_phase:
                targets[alive] = dec.targets() if full else dec.targets(rows=alive)
                s_all, c, f = self.model.step_find(state, tok, targets, P)  # type: ignore[attr-defined]
                s = s_all[alive]
                if full:
                    dec.advance(s, c, f)
                else:
                    dec.advance(s, c[alive], f[alive], rows=alive)
            else:
                act = None if full else alive
                probs = _coding_rows(self.model.step(state, tok), act, mx)
                if mx is not None:
                    mx.mix(probs, rows=act)
                s = dec.decode_probs(probs, rows=act)
                if mx is not None:
                    mx.push(s, rows=act)
            out[t, alive] = s
            tok[alive] = s
            got[alive] += token_bytes[s] if newlines is None else token_bytes[s] + newlines[s] * per_nl[alive]
            t += 1
            done = got[alive] >= need[alive]
            if done.any():
                fin = alive[done]
                if (got[fin] != need[fin]).any():
                    raise ValueError("a token-level chunk decodes past its byte length")
                steps[fin] = t
                tok[fin] = pad
                alive = alive[~done]
        return [out[: steps[r], r].copy() for r in rows]

    # -------------------------------------------------------------- probe

    def probe_digest(self, batch: int) -> str:
        """SHA-256 (hex) of the quantized tables the model yields for the probe
        at batch size ``batch``: row ``r`` is fed ``bos`` then PROBE_BYTES
        rotated left by ``r``; the tables of every step and row are hashed
        (uint32 little-endian, step-major, row-major).  Any change in the
        numerics that would change a coded symbol's interval is likely to
        change this digest."""
        n = len(PROBE_BYTES)
        probe = np.frombuffer(PROBE_BYTES, dtype=np.uint8).astype(np.int64)
        steps = min(n, self.model.max_context)
        tok = np.empty((steps, batch), dtype=np.int64)
        tok[0] = self.bos
        for r in range(batch):
            rolled = np.roll(probe, -(r % n))
            tok[1:steps, r] = rolled[: steps - 1]
        h = hashlib.sha256()
        h.update(f"pyllmcodec-probe/{batch}/{self.precision}/{self.vocab_size}/".encode())
        state = self.model.new_state(batch)
        if self.two_phase:  # the device quantizer's full tables (48 steps only)
            import torch

            from .devquant import quantize as dev_quantize

            logits = self.model.step_logits  # type: ignore[attr-defined]
            for t in range(steps):
                probs = torch.softmax(logits(state, tok[t]), -1)
                cdf = dev_quantize(probs, self.precision).cpu().numpy().astype(np.uint32)
                h.update(np.ascontiguousarray(cdf, dtype="<u4").tobytes())
            return h.hexdigest()
        for t in range(steps):
            cdf = self.core.quantize(self.model.step(state, tok[t]), precision=self.precision)
            h.update(np.ascontiguousarray(cdf, dtype="<u4").tobytes())
        return h.hexdigest()

    # -------------------------------------------------------------- bare loop

    def bare_wave(self, batch: int, chunks: Sequence[bytes | memoryview]) -> Any:
        """The model steps alone (same fed tokens as :meth:`encode_wave`, no
        coding): the baseline the codec's throughput is measured against."""
        rows = range(len(chunks))
        tok, _ = fed_tokens(batch, rows, chunks, self.bos, self.pad)
        step = self.model.step
        state = self.model.new_state(batch)
        probs = None
        for t in range(tok.shape[0]):
            probs = step(state, tok[t])
        return probs
