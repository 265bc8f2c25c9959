"""The batched step loop: ONE encode loop and ONE decode loop, mirrored.

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
model's context or the header's shorter ``context``.  Segment 0 is the row
as above for symbols ``[0, C)``.  Segment ``j >= 1`` codes symbols
``[s, s + C - K)`` with ``s = C + (j - 1)(C - K)``: it starts from a fresh
state and is fed ``bos``, then the ``K`` symbols before ``s`` (which both
sides already have), then its own symbols; its steps ``0..K-1`` code
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
returns the symbol arrays and :mod:`pyllmcodec.methods` turns them back into
bytes.

How a decoded row ends: at a known symbol count (a byte-level chunk), or at
the symbol whose byte count -- a weight per symbol, plus a per-row extra per
LF for the line-ending methods -- brings the row to its chunk's length (a
token-level or line-ending chunk, whose symbol count is not stored).  Both
rules end a row exactly where the encoder's fed-token matrix ended it, so
they are one loop with two ways to find the finishing rows.

The loops' structure (one plan, both sides): :func:`segment_plan` gives a
wave's segments; the encoder builds each segment's fed tokens up front
(:func:`fed_tokens`), the decoder fills them in as it decodes; both start
each segment from a fresh state fed ``bos`` and the prime, then step the
same rows through the same runs (:func:`segments`).

Two-phase steps: a model whose probabilities live on an accelerator
(``model.device_quantize`` true: a
:class:`~pyllmcodec.backends.base.TwoPhaseStepModel`) quantizes there with the
core's algorithm (:mod:`pyllmcodec.backends.devquant`) and returns only O(B)
numbers per step: the encoder gets each row's ``(cum_low, freq)`` for
``BatchEncoder.encode_ranges``; the decoder passes ``BatchDecoder.targets`` in
and gets ``(symbol, cum_low, freq)`` for ``BatchDecoder.advance``.  The coded
bits are the same as with the fused host path, since the tables are.  This
is a strategy of the one loop (:class:`_DeviceSteps` beside
:class:`_HostSteps`), not a loop of its own.

Integer rows: a model with ``integer_rows`` (an exact model) returns uint32
weights, which go to the core's integer quantizer (``encode_weights`` /
``decode_weights``, ``quantize_int`` for the probe) and the match model's
integer twin (``mix_int``, which hands back overrides instead of editing the
row): :class:`_IntSteps`, a third strategy of the same loop.

Per-step Python work is kept to: one ``model.step`` call, one fused
quantize-and-code call on the whole probability matrix, and (only while some
rows are idle) one fancy-index gather.  Everything else -- token matrices,
active-row sets -- is built before the loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import core
from .backends.base import StepModel, TwoPhaseStepModel
from .constants import CM_MAX_LONG_TABLE_BITS, PROBE_BYTES
from .container import cm_table_bits
from .errors import MemoryLimitError
from .geometry import Geometry, is_int
from .mixer import WaveSpec

__all__ = ["WaveRunner", "fed_tokens", "plan_waves", "segment_plan", "segment_windows", "segments", "wave_bytes"]

Runs = list[tuple[int, int, "np.ndarray | None", np.ndarray]]


def plan_waves(n_chunks: int, batch_size: int) -> list[tuple[int, int]]:
    """The standard schedule: ``(first chunk, wave batch)`` for each wave of
    ``n_chunks`` chunks at batch size ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return [(s, min(batch_size, n_chunks - s)) for s in range(0, n_chunks, batch_size)]


def segments(batch: int, rows: Sequence[int], lengths: Sequence[int]) -> Runs:
    """Split a wave's steps into runs with a constant set of active rows.

    Returns ``(t0, t1, active, finishing)`` per run: ``active`` is the sorted
    int64 array of rows that code a symbol at every step of ``[t0, t1)``, or
    ``None`` when that is all ``batch`` rows (the fast path: no gather, no
    ``rows`` argument); ``finishing`` holds the rows whose chunk ends at ``t1``.
    """
    by_len: dict[int, list[int]] = {}
    for r, n in zip(rows, lengths):
        by_len.setdefault(int(n), []).append(int(r))
    out: Runs = []
    alive = sorted(int(r) for r in rows)
    t0 = 0
    for end in sorted(by_len):
        if end > t0:  # zero-length rows never run; nothing to emit for them
            act = np.asarray(alive, dtype=np.int64)
            out.append((t0, end, None if len(alive) == batch else act, np.asarray(by_len[end], dtype=np.int64)))
            t0 = end
        done = set(by_len[end])
        alive = [r for r in alive if r not in done]
    return out


def segment_plan(length: int, context: int, prime: int, primed: int = 0) -> list[tuple[int, int]]:
    """``(s, k)`` per segment of a row of ``length`` symbols: the segment codes
    symbols ``[s, min(length, s + context - k))`` after ``k`` silent steps
    (``k = primed`` for the first segment -- the dictionary's symbols, which
    the row's symbols then start with --, ``prime`` for the others).  A row
    that fits the context has one segment; a longer one needs ``1 <= prime <
    context``."""
    out = [(primed, primed)]
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


#: a callback told how many symbols were coded since it was last called
Progress = Callable[[int], None]
#: steps between progress reports (a report costs a Python call)
PROGRESS_STEPS = 32


def cm_groups(batch: int, rows: Sequence[int], groups: Sequence[int] | None, raw_lens: Sequence[int],
              cap: int, reach: int = 0, wave_size: int = 0) -> tuple[np.ndarray, list[int]]:
    """The context-mixing stage's groups for a wave (docs/FORMAT.md section
    4f): the chunks at ``rows`` of one archive (``groups[k]``, its owner;
    None: one archive) share one state, so that each archive decodes alone;
    a group's table_bits are :func:`pyllmcodec.container.cm_table_bits` of
    its chunks' ``raw_lens``, at most the header's ``cap``; cm3's long mode
    (``reach``: its period) counts ``reach`` times those bytes, up to
    ``CM_MAX_LONG_TABLE_BITS``, for a group of more than half the wave's
    ``wave_size`` (B x chunk_size) bytes: a fresh state learns from up to a
    period of waves (a continued one keeps its tables); archives sharing a
    wave of ``compress_batch`` keep a wave's size but for at most one, so
    that B small archives do not take B large tables, and each archive
    still decodes alone (the rule reads its own rows only).  Returns (the
    group of every row, absent rows in group 0; the groups' table_bits) --
    the encoder and the decoder derive them from the same entries."""
    owners = [0] * len(rows) if groups is None else [int(g) for g in groups]
    index: dict[int, int] = {}
    size: list[int] = []
    of_row = np.zeros(batch, dtype=np.int64)
    for r, o, n in zip(rows, owners, raw_lens):
        g = index.setdefault(o, len(index))
        if g == len(size):
            size.append(0)
        size[g] += int(n)
        of_row[int(r)] = g
    bits = [min(cap, cm_table_bits(n * reach, CM_MAX_LONG_TABLE_BITS) if reach and 2 * n > wave_size
                else cm_table_bits(n)) for n in size] or [min(cap, cm_table_bits(0))]
    return of_row, bits


class CmChain:
    """The long mode's states (header key ``cm.long``, docs/FORMAT.md section
    4f): each archive's context-mixing state carried from one of its blocks
    to the next, within groups of ``period`` blocks (block ``j`` of an
    archive continues the state its last model-coded block before ``j`` in
    group ``j // period`` left, or starts fresh).  Keys are the owners the
    waves' ``groups`` name (an archive of a batch; 0 alone).  The encoder,
    the decoders and random access (which starts at a group's first block)
    hold one each."""

    def __init__(self, period: int) -> None:
        if not is_int(period) or period < 1:
            raise ValueError("the long mode's period must be an int >= 1")
        self.period = int(period)
        self._states: dict[int, tuple[int, Any]] = {}

    def begin(self, owner: int, block: int) -> Any:
        """The state ``owner``'s block ``block`` continues (a ``core.CmState``), or None: fresh."""
        got = self._states.get(owner)
        return got[1] if got is not None and got[0] == block // self.period else None

    def end(self, owner: int, block: int, state: Any) -> None:
        """Record the state ``owner``'s block ``block`` left."""
        self._states[owner] = (block // self.period, state)

    def drop(self, owner: int) -> None:
        """Forget ``owner``'s state (its archive has ended)."""
        self._states.pop(owner, None)


def cm_bytes(table_bits: int, batch: int) -> int:
    """The memory of a context-mixing stage (csrc/cm.hpp): 9 tables of
    2^table_bits uint32 counters, the match model (a ring of 4 * 2^table_bits
    bytes and 2^table_bits uint32 places), the mixers, maps and APMs (0.4 MB),
    and per row a history and a 257-entry table."""
    return 44 * (1 << table_bits) + 400_000 + 1300 * batch if table_bits else 0


def wave_bytes(model: StepModel, batch: int, longest: int, context: int, cm_bits: int = 0) -> int:
    """The memory one wave of ``batch`` rows and ``longest`` symbols takes:
    the model's state (``StepModel.state_bytes``), the fed-token and symbol
    matrices of a segment (int64, at most ``context`` steps), the decoder's
    symbol matrix (int64 at most), a gathered copy of the probabilities and
    the context-mixing stage (:func:`cm_bytes`)."""
    steps = min(longest, context)
    symbol = 1 if int(model.vocab_size) <= 256 else 8
    return (int(model.state_bytes(batch)) + batch * (16 * steps + symbol * longest)
            + 4 * batch * int(model.vocab_size) + cm_bytes(cm_bits, batch))


def _coding_rows(p: np.ndarray, act: np.ndarray | None, mx: Any) -> np.ndarray:
    """The rows ``act`` of a step's probabilities (all rows: None), ready for
    the match model ``mx`` to edit in place: a gathered subset is a copy
    already, all rows are copied only when the model's buffer is read-only."""
    if act is not None:
        return p[act]
    return p.copy() if mx is not None and not p.flags.writeable else p


class _HostSteps:
    """One coding step where the core quantizes on the host: the model's
    probabilities, through the match model ``mx`` when there is one."""

    def __init__(self, model: StepModel, mx: Any) -> None:
        self.step, self.mx = model.step, mx

    def feed(self, primed: np.ndarray, rows: np.ndarray) -> None:
        """The match model reads the dictionary ``primed`` for ``rows``, uncoded."""
        if self.mx is not None:
            for s in primed:
                self.mx.feed(np.full(len(rows), s, dtype=np.int64), rows=rows)

    def encode(self, state: Any, enc: Any, tok: np.ndarray, sym: np.ndarray, sub: np.ndarray,
               act: np.ndarray | None) -> None:
        mx = self.mx
        p = _coding_rows(self.step(state, tok), act, mx)
        if mx is not None:
            mx.mix(p, rows=act)
        enc.encode_probs(p, sub, rows=act)
        if mx is not None:
            mx.push(sub, rows=act)

    def decode(self, state: Any, dec: Any, tok: np.ndarray, act: np.ndarray | None) -> np.ndarray:
        mx = self.mx
        p = _coding_rows(self.step(state, tok), act, mx)
        if mx is not None:
            mx.mix(p, rows=act)
        s: np.ndarray = dec.decode_probs(p, rows=act)
        if mx is not None:
            mx.push(s, rows=act)
        return s


class _IntSteps(_HostSteps):
    """One coding step of a model with integer rows (``integer_rows``): its
    uint32 weights through the core's integer quantizer, the match model's
    integer twin giving the overrides; the rows are never edited."""

    def encode(self, state: Any, enc: Any, tok: np.ndarray, sym: np.ndarray, sub: np.ndarray,
               act: np.ndarray | None) -> None:
        mx = self.mx
        w = self.step(state, tok)
        if act is not None:
            w = w[act]
        if mx is None:
            self._put(enc, w, sub, act)
        else:
            m, q = mx.mix_int(w, rows=act)
            self._put(enc, w, sub, act, m, q)
            mx.push(sub, rows=act)

    def decode(self, state: Any, dec: Any, tok: np.ndarray, act: np.ndarray | None) -> np.ndarray:
        mx = self.mx
        w = self.step(state, tok)
        if act is not None:
            w = w[act]
        if mx is None:
            return self._get(dec, w, act)
        m, q = mx.mix_int(w, rows=act)
        s = self._get(dec, w, act, m, q)
        mx.push(s, rows=act)
        return s

    def _put(self, enc: Any, w: np.ndarray, sub: np.ndarray, act: np.ndarray | None, m: Any = None,
             q: Any = None) -> None:
        """Code the rows' symbols from their weights (and overrides)."""
        enc.encode_weights(w, sub, rows=act, match=m, q=q)

    def _get(self, dec: Any, w: np.ndarray, act: np.ndarray | None, m: Any = None, q: Any = None) -> np.ndarray:
        """Decode the rows' symbols from their weights (and overrides)."""
        s: np.ndarray = dec.decode_weights(w, rows=act, match=m, q=q)
        return s


class _CmSteps(_IntSteps):
    """One coding step through the context-mixing stage (header key ``cm``,
    docs/FORMAT.md section 4f): the integer rows (with the match model's
    overrides) go to ``cm``, one state shared by the wave's rows, which codes
    each row's byte bit by bit on its stream, the rows in the order given --
    the decoder gives the same order (the segment runs' ``act``)."""

    def __init__(self, model: StepModel, mx: Any, cm: Any) -> None:
        super().__init__(model, mx)
        self.cm = cm

    def feed(self, primed: np.ndarray, rows: np.ndarray) -> None:
        super().feed(primed, rows)
        for s in primed:
            self.cm.feed(np.full(len(rows), s, dtype=np.int64), rows=rows)

    def _put(self, enc: Any, w: np.ndarray, sub: np.ndarray, act: np.ndarray | None, m: Any = None,
             q: Any = None) -> None:
        self.cm.encode(enc, w, sub, rows=act, match=m, q=q)

    def _get(self, dec: Any, w: np.ndarray, act: np.ndarray | None, m: Any = None, q: Any = None) -> np.ndarray:
        s: np.ndarray = self.cm.decode(dec, w, rows=act, match=m, q=q)
        return s


class _DeviceSteps:
    """One coding step of a two-phase model: it quantizes on its device and
    hands over each row's interval (module docstring)."""

    def __init__(self, model: TwoPhaseStepModel, precision: int, batch: int) -> None:
        self.model, self.precision = model, precision
        self.targets = np.zeros(batch, dtype=np.uint32)

    def feed(self, primed: np.ndarray, rows: np.ndarray) -> None:
        """No match model on this path: nothing to prime."""

    def encode(self, state: Any, enc: Any, tok: np.ndarray, sym: np.ndarray, sub: np.ndarray,
               act: np.ndarray | None) -> None:
        c, f = self.model.step_ranges(state, tok, sym, self.precision)
        if act is None:
            enc.encode_ranges(c, f)
        else:
            enc.encode_ranges(c[act], f[act], rows=act)

    def decode(self, state: Any, dec: Any, tok: np.ndarray, act: np.ndarray | None) -> np.ndarray:
        if act is None:
            s, c, f = self.model.step_find(state, tok, dec.targets(), self.precision)
            dec.advance(s, c, f)
            return s
        self.targets[act] = dec.targets(rows=act)
        s, c, f = self.model.step_find(state, tok, self.targets, self.precision)
        dec.advance(s[act], c[act], f[act], rows=act)
        return s[act]


class WaveRunner:
    """Runs waves of one model session at one :class:`~pyllmcodec.geometry.Geometry`:
    encode, decode, probe, bare loop.  Holds no per-archive state."""

    def __init__(self, model: StepModel, geometry: Geometry, max_memory: int | None = None) -> None:
        #: the native coder (an attribute, so that a study can wrap it: bench/smollm2_eval.py)
        self.core: Any = core
        self.model = model
        self.geometry = geometry
        self.precision = int(geometry.precision)
        #: silent steps that start each segment after the first (module docstring)
        self.prime = int(geometry.prime)
        #: the segments' length C (module docstring): the model's context, or
        #: less (header key ``context``: a shorter context steps faster)
        self.context = int(geometry.context)
        if not 2 <= self.context <= int(model.max_context):
            raise ValueError(f"context must be in 2..{model.max_context}")
        self.bos = int(model.bos)
        self.pad = int(geometry.pad)
        self.vocab_size = int(model.vocab_size)
        #: quantize on the model's device (two-phase steps), see the module docstring
        self.two_phase = bool(model.device_quantize)
        self._device_model: TwoPhaseStepModel | None = None
        if self.two_phase:
            if not isinstance(model, TwoPhaseStepModel):
                raise TypeError(f"model {model.name!r} sets device_quantize but lacks the two-phase steps "
                                "(step_ranges, step_find, step_tables)")
            self._device_model = model
        #: the memory a wave may take (None: no limit), checked before it starts
        self.max_memory = max_memory
        #: the match model (a :class:`~pyllmcodec.mixer.MixerSpec`) or None
        self.mixer = geometry.mixer
        if self.mixer is not None and self.two_phase:
            raise ValueError("the match model needs a model that quantizes on the host")
        #: the context-mixing stage's table_bits (0: none), docs/FORMAT.md section 4f
        self.cm_bits = int(geometry.cm_bits)
        if self.cm_bits and (self.two_phase or not model.integer_rows or self.vocab_size != 256):
            raise ValueError("the context-mixing stage needs integer rows over bytes, quantized on the host")
        #: the dictionary's symbols, fed before every chunk (docs/FORMAT.md section 4d)
        d = geometry.dictionary
        self.primed: np.ndarray = (np.zeros(0, dtype=np.int64) if d is None
                                   else d.symbols(model.tokenizer))
        if len(self.primed) > self.context // 2:
            raise ValueError("the dictionary takes more than half the segments' length")

    def _check_memory(self, batch: int, longest: int) -> None:
        """MemoryLimitError, before anything is allocated, for a wave over ``max_memory``."""
        if self.max_memory is None:
            return
        need = wave_bytes(self.model, batch, longest, self.context, self.cm_bits)
        if isinstance(self.mixer, WaveSpec):
            need += self.mixer.nbytes(batch, longest, self.geometry.chunk_size)
        if need > self.max_memory:
            raise MemoryLimitError(
                f"a wave of {batch} rows x {longest} symbols needs about {need / 2**20:.0f} MiB "
                f"(model state {self.model.state_bytes(batch) / 2**20:.0f} MiB), over max_memory="
                f"{self.max_memory} ({self.max_memory / 2**20:.0f} MiB); pass a larger max_memory= (CLI: "
                "--max-memory) if this archive is trusted and the memory is there"
            )

    def _steps(self, batch: int, max_len: int, rows: Sequence[int] = (), groups: Sequence[int] | None = None,
               raw_lens: Sequence[int] = (), cm_start: Mapping[int, Any] | None = None,
               cm_end: dict[int, Any] | None = None) -> _HostSteps | _IntSteps | _DeviceSteps:
        """The coding step of one wave: a fresh match model (one state per
        row, kept across the row's segments) on the host path, and a
        context-mixing stage when the header asks (:func:`cm_groups`), each
        group's state fresh or, in the long mode, ``cm_start[owner]``
        continued (it learns in place); ``cm_end`` gets every owner's state."""
        if self._device_model is not None:
            return _DeviceSteps(self._device_model, self.precision, batch)
        if isinstance(self.mixer, WaveSpec):  # one state per archive of the wave (as the stage's groups)
            of_row = np.zeros(batch, dtype=np.int64)
            if groups is not None:
                owner: dict[int, int] = {}
                for r, o in zip(rows, groups):
                    of_row[int(r)] = owner.setdefault(int(o), len(owner))
            mx: Any = self.mixer.new(batch, max_len, self.geometry.chunk_size, groups=of_row)
        else:
            mx = None if self.mixer is None else self.mixer.new(batch, max_len, self.geometry.chunk_size)
        if self.cm_bits:
            reach = self.geometry.cm_long if self.geometry.cm_kind >= 3 else 0
            g, bits = cm_groups(batch, rows, groups, raw_lens, self.cm_bits, reach,
                                self.geometry.batch_size * self.geometry.chunk_size)
            owners = list(dict.fromkeys([0] * len(rows) if groups is None else [int(o) for o in groups]))
            states = [None if cm_start is None else cm_start.get(o) for o in owners]
            for i, st in enumerate(states):
                if st is not None:  # a continued state keeps its tables
                    if st.table_bits > self.cm_bits:
                        raise ValueError(f"a continued context-mixing state has table_bits {st.table_bits}, "
                                         f"over the header's {self.cm_bits}")
                    bits[i] = st.table_bits
            for st in states:
                if st is not None and st.kind != self.geometry.cm_kind:
                    raise ValueError(f"a continued context-mixing state is of kind cm{st.kind}, the header's "
                                     f"cm{self.geometry.cm_kind}")
            # cm2's ring gives each row chunk_size + D places (what encoder and decoder both know)
            pri = self.geometry.cm_priors_in_use
            cm = core.ContextMixer(g, bits, states if any(st is not None for st in states) else None,
                                   kind=self.geometry.cm_kind, max_len=self.geometry.chunk_size + len(self.primed),
                                   priors=None if pri is None else pri.array)
            if cm_end is not None:
                cm_end.update((o, cm.state(i)) for i, o in enumerate(owners))
            return _CmSteps(self.model, mx, cm)
        return (_IntSteps if self.model.integer_rows else _HostSteps)(self.model, mx)

    def _plan(self, length: int) -> list[tuple[int, int]]:
        """The segments of a row of ``length`` symbols, the dictionary's included."""
        plan = segment_plan(length, self.context, self.prime, len(self.primed))
        if len(plan) > 1 and self.two_phase:
            raise ValueError("chunks longer than the context need a model that quantizes on the host")
        return plan

    # -------------------------------------------------------------- encode

    def encode_wave(self, batch: int, rows: Sequence[int], chunks: Sequence[bytes | memoryview | np.ndarray],
                    progress: Progress | None = None, *, groups: Sequence[int] | None = None,
                    raw_lens: Sequence[int] | None = None, cm_start: Mapping[int, Any] | None = None,
                    cm_end: dict[int, Any] | None = None) -> list[bytes]:
        """Model-code ``chunks`` (chunk ``k`` at row ``rows[k]``; bytes, or
        token arrays for a token-level model) as one wave of batch size
        ``batch``; returns one coded payload per chunk.  ``progress(n)`` is
        told the symbols coded, every :data:`PROGRESS_STEPS` steps.
        Through the context-mixing stage: ``groups`` (each chunk's archive,
        None: one) and ``raw_lens`` (each chunk's bytes; default: its
        symbols) give the stage's groups (:func:`cm_groups`); chunks with no
        symbols take no part; ``cm_start`` / ``cm_end``: the long mode's
        states (:meth:`_steps`)."""
        lens = [len(c) for c in chunks] if raw_lens is None else list(raw_lens)
        coded_k = [k for k, c in enumerate(chunks) if len(c)]
        D = len(self.primed)
        if D:  # a row's symbols: the dictionary, then its chunk (coded from symbol D on)
            chunks = [self._primed_row(c) for c in chunks]
        longest = max((len(c) for c in chunks), default=0)
        self._check_memory(batch, longest)
        C = self.context
        enc = self.core.BatchEncoder(batch, precision=self.precision)
        coder = self._steps(batch, longest, [rows[k] for k in coded_k],
                            None if groups is None else [groups[k] for k in coded_k], [lens[k] for k in coded_k],
                            cm_start, cm_end)
        step = self.model.step
        for s, k in self._plan(longest):
            present = [(int(r), c[s - k : s - k + C]) for r, c in zip(rows, chunks) if len(c) > s]
            prow = [r for r, _ in present]
            seqs = [q for _, q in present]
            tok, sym = fed_tokens(batch, prow, seqs, self.bos, self.pad)
            state = self.model.new_state(batch)
            for t in range(k):  # bos and the prime (or dictionary): nothing coded
                step(state, tok[t])
            if D and s == D:  # the first segment: the match model reads the dictionary too
                coder.feed(self.primed, np.asarray(prow, dtype=np.int64))
            # every present row has a symbol at step k, so the runs start by then
            for t0, t1, act, _fin in segments(batch, prow, [len(q) for q in seqs]):
                t0 = max(t0, k)
                sub = sym[t0:t1] if act is None else np.ascontiguousarray(sym[t0:t1][:, act])
                n = batch if act is None else len(act)
                for t in range(t0, t1):
                    coder.encode(state, enc, tok[t], sym[t], sub[t - t0], act)
                    if progress is not None and (t - t0) % PROGRESS_STEPS == PROGRESS_STEPS - 1:
                        progress(PROGRESS_STEPS * n)
                if progress is not None and t1 > t0:
                    progress((t1 - t0) % PROGRESS_STEPS * n)
        streams = enc.finish()
        return [bytes(streams[r]) for r in rows]

    def _primed_row(self, chunk: bytes | memoryview | np.ndarray) -> bytes | np.ndarray:
        """The dictionary's symbols followed by ``chunk``'s, in the chunk's kind."""
        if isinstance(chunk, np.ndarray):
            return np.concatenate([self.primed, chunk.astype(np.int64, copy=False)])
        return self.primed.astype(np.uint8).tobytes() + bytes(chunk)

    # -------------------------------------------------------------- decode

    def decode_wave(
        self,
        batch: int,
        rows: Sequence[int],
        lengths: Sequence[int],
        payloads: Sequence[bytes | memoryview],
        *,
        weights: np.ndarray | None = None,
        newlines: np.ndarray | None = None,
        extra: Sequence[int] | None = None,
        progress: Progress | None = None,
        groups: Sequence[int] | None = None,
        cm_start: Mapping[int, Any] | None = None,
        cm_end: dict[int, Any] | None = None,
    ) -> list[np.ndarray]:
        """Decode the chunks at ``rows`` (payloads aligned) of one wave of
        batch size ``batch``; all other rows are fed the pad token.  Returns
        each row's symbols (uint8 for a byte-level vocabulary, else int64).

        How a row ends (module docstring): ``weights`` None: after exactly
        ``lengths[k]`` symbols.  Else symbol ``s`` counts ``weights[s]`` bytes
        (all >= 1), plus ``newlines[s] * extra[k]`` with ``newlines`` given,
        and the row ends at the symbol that brings it to ``lengths[k]``;
        ValueError when a row overshoots that or runs past what it can code
        (corrupt data).  ``progress(n)``: as in :meth:`encode_wave`.
        ``groups``: each chunk's archive, for the context-mixing stage
        (:func:`cm_groups`, with ``lengths`` as the chunks' bytes);
        ``cm_start`` / ``cm_end``: the long mode's states (:meth:`_steps`)."""
        D = len(self.primed)  # rows start with the dictionary's symbols: symbol D is a chunk's first
        self._check_memory(batch, int(max(lengths, default=0)) + D)
        streams: list[bytes] = [b""] * batch
        for r, p in zip(rows, payloads):
            streams[r] = bytes(p)
        rows_i = np.asarray(rows, dtype=np.int64)
        need = np.zeros(batch, dtype=np.int64)
        need[rows_i] = np.asarray(lengths, dtype=np.int64)
        longest = int(max(lengths, default=0)) + D  # every symbol counts >= 1 byte
        # known ends: the finishing rows of each step, from the lengths alone
        finish_at: dict[int, np.ndarray] | None = None
        per_nl = np.zeros(batch, dtype=np.int64)
        got = np.zeros(batch, dtype=np.int64)
        if weights is None:
            finish_at = {t1: fin for _t0, t1, _a, fin in segments(batch, rows, [int(n) + D for n in lengths])}
        else:
            if newlines is not None and extra is not None:
                per_nl[rows_i] = np.asarray(extra, dtype=np.int64)
            else:
                newlines = None
            if not self.prime:  # one segment per chunk: no row codes past the context
                longest = min(longest, self.context)
        dec = self.core.BatchDecoder(streams, precision=self.precision)
        out = np.zeros((longest, batch), dtype=np.uint8 if self.vocab_size <= 256 else np.int64)
        out[:D] = self.primed[:, None]
        coder = self._steps(batch, longest, rows, groups, lengths, cm_start, cm_end)  # lengths: raw_len
        step = self.model.step
        steps = np.zeros(batch, dtype=np.int64)
        tok = np.full(batch, self.pad, dtype=np.int64)
        alive = np.asarray(sorted(int(r) for r in rows if need[r] > 0), dtype=np.int64)
        # the encoder's segment plan: `longest` bounds every row's symbol count
        starts = dict(self._plan(longest))
        t = D  # the symbol decoded next
        counted = 0  # symbols decoded since the last progress report
        while alive.size:
            if finish_at is None and t >= longest:
                raise ValueError("a chunk does not end within what its rows can code (the model's context)")
            k = starts.get(t)
            if k is not None:  # a segment starts here: a fresh state fed bos, then the prime
                state = self.model.new_state(batch)
                tok[alive] = self.bos
                for u in range(k):  # the prime (or dictionary): symbols decoded before
                    step(state, tok)
                    tok[alive] = out[t - k + u, alive]
                if D and t == D:  # the first segment: the match model reads the dictionary too
                    coder.feed(self.primed, alive)
            if alive.size == batch:
                s = coder.decode(state, dec, tok, None)
                out[t] = s
                tok[:] = s
            else:
                s = coder.decode(state, dec, tok, alive)
                out[t, alive] = s
                tok[alive] = s
            t += 1
            if progress is not None:
                counted += alive.size
                if t % PROGRESS_STEPS == 0:
                    progress(counted)
                    counted = 0
            if finish_at is not None:
                fin = finish_at.get(t)
                if fin is None:
                    continue
            else:
                assert weights is not None
                got[alive] += weights[s] if newlines is None else weights[s] + newlines[s] * per_nl[alive]
                done = got[alive] >= need[alive]
                if not done.any():
                    continue
                fin = alive[done]
                if (got[fin] != need[fin]).any():
                    raise ValueError("a chunk decodes past its byte length")
            steps[fin] = t
            tok[fin] = self.pad
            alive = alive[~np.isin(alive, fin)]
        if progress is not None and counted:
            progress(counted)
        return [out[D : steps[r], r].copy() for r in rows]

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
        self._check_memory(batch, steps)
        tok = np.empty((steps, batch), dtype=np.int64)
        tok[0] = self.bos
        for r in range(batch):
            rolled = np.roll(probe, -(r % n))
            tok[1:steps, r] = rolled[: steps - 1]
        h = hashlib.sha256()
        h.update(f"pyllmcodec-probe/{batch}/{self.precision}/{self.vocab_size}/".encode())
        state = self.model.new_state(batch)
        dm = self._device_model
        for t in range(steps):
            if dm is not None:  # the device quantizer's full tables
                cdf = dm.step_tables(state, tok[t], self.precision)
            elif self.model.integer_rows:
                cdf = self.core.quantize_int(self.model.step(state, tok[t]), precision=self.precision)
            else:
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
