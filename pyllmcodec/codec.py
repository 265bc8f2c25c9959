"""Compressor / Decompressor and the one-shot functions.

The data flows one way: bytes -> chunks -> waves (:mod:`pyllmcodec.scheduler`)
-> per-chunk method choice -> container (:mod:`pyllmcodec.container`), and
back the same road.  :class:`Compressor` and :class:`Decompressor` hold a
model session and are the main API; :func:`compress` / :func:`decompress` are
thin wrappers that reuse a cached session per model name and options.

Threading: every call makes its own coder objects and model states (one per
wave), so concurrent calls on one Compressor/Decompressor -- as the one-shot
functions' shared cache allows -- are safe when the model's ``step`` is
reentrant for distinct states (ONNX Runtime's is).  The probe caches are plain
dicts; a race only computes a digest twice.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from . import eol
from .backends.base import StepModel
from .constants import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_OUTPUT_SIZE,
    DEFAULT_PRIME,
    DEFAULT_TOKEN_CHUNK_SIZE,
    DEFLATE_LEVEL,
    EOL_SUFFIXES,
    MAX_BATCH_SIZE,
    MAX_BYTE_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    METHOD_DEFLATE,
    METHOD_MODEL,
    METHOD_MODEL_TOKENS,
    METHOD_NAMES,
    METHOD_STORED,
    MODEL_METHODS,
    PROBE_BYTES,
    PROBE_VERSION,
)
from .container import (
    ArchiveIndex,
    ArchiveReader,
    ArchiveWriter,
    ChunkEntry,
    Header,
    build_meta,
)
from .errors import (
    ChecksumError,
    CodecError,
    FormatError,
    ModelError,
    NumericsMismatchError,
    OutputLimitError,
)
from .mixer import MixerSpec
from .scheduler import WaveRunner, plan_waves

__all__ = [
    "Compressor",
    "Decompressor",
    "compress",
    "compress_batch",
    "decompress",
    "decompress_batch",
    "info",
]

#: Decoders refuse archives whose waves need more rows than this (a hostile
#: header could otherwise make the model allocate state for 65535 rows).
DEFAULT_MAX_BATCH_SIZE = 4096


# ------------------------------------------------------------------ sessions

_model_cache: OrderedDict[tuple[Any, ...], StepModel] = OrderedDict()
_model_cache_lock = threading.Lock()
_MODEL_CACHE_SIZE = 2


def _load_cached(name: str, device: str, backend: str, threads: int | None) -> StepModel:
    from .models import load_model

    key = (name, device, backend, threads)
    with _model_cache_lock:
        if key in _model_cache:
            _model_cache.move_to_end(key)
            return _model_cache[key]
    model = load_model(name, device=device, backend=backend, threads=threads)
    with _model_cache_lock:
        _model_cache[key] = model
        while len(_model_cache) > _MODEL_CACHE_SIZE:
            _model_cache.popitem(last=False)
    return model


def _resolve_model(model: Any, device: str, backend: str, threads: int | None) -> StepModel:
    if isinstance(model, str):
        return _load_cached(model, device, backend, threads)
    if not isinstance(model, StepModel):
        raise TypeError(f"model must be a registered model name or a StepModel, not {type(model).__name__}")
    return model


def _default_precision() -> int:
    from . import core

    return int(core.DEFAULT_PRECISION)


def _bytes_view(data: Any) -> memoryview:
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"expected a bytes-like object, not {type(data).__name__}") from None
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class _Session:
    """A model with its runner and probe-digest cache (one per model object)."""

    def __init__(self, model: StepModel, precision: int, pad: int | None = None, prime: int = 0,
                 mixer: MixerSpec | None = None, chunk_size: int = 0, context: int | None = None) -> None:
        self.model = model
        self.runner = WaveRunner(model, precision, pad, prime, mixer, chunk_size, context)
        #: a token-level model's tokenizer (see backends/base.py), else None
        self.tokenizer = getattr(model, "tokenizer", None)
        self._probes: dict[int, str] = {}
        self._fingerprint: dict[str, str] | None = None

    def probe(self, batch: int) -> str:
        digest = self._probes.get(batch)
        if digest is None:
            digest = self._probes[batch] = self.runner.probe_digest(batch)
        return digest

    def fingerprint(self) -> dict[str, str]:
        if self._fingerprint is None:
            self._fingerprint = {str(k): str(v) for k, v in self.model.fingerprint().items()}
        return self._fingerprint


# ------------------------------------------------------------------ compressor


class Compressor:
    """Compresses with one model session and fixed options; reusable.

    ``model``: a registered model name (loaded once, cached) or a
    :class:`~pyllmcodec.backends.base.StepModel`.  ``device``, ``backend``,
    ``threads``: passed to :func:`~pyllmcodec.models.load_model`.
    ``chunk_size``: bytes per chunk (default: the model's own, from its
    bundle manifest -- 8192 for the shipped default model --, else 1024 capped
    by the model's context; for a byte-level input of known size, doubled
    while the input still fills ``batch_size`` rows, up to 64 KiB:
    :meth:`chunk_size_for`).  A byte-level chunk longer than the context is
    coded in segments, each after the first starting from ``prime`` bytes of
    context (default: the model's, else 128; at most half the context;
    docs/FORMAT.md section 4b).  ``batch_size``: rows stepped together
    (default 32).
    ``precision``: quantizer precision in bits (default: the core's, 30).
    ``fallback``: ``"deflate"`` (default) also tries raw DEFLATE per chunk;
    ``"stored"`` only falls back to storing.  ``verify``: decode every wave
    right after coding it and compare (about doubles the time).
    ``eol``: model-code a chunk whose every line ends in CR LF (or space CR LF)
    with that suffix removed before each LF, restored exactly on decoding
    (methods 4 and 5 of docs/FORMAT.md; pyllmcodec/eol.py says why); pass
    ``False`` to code such chunks as they are.
    ``context``: the length of the segments (default: the model's, from its
    bundle manifest, else its whole context): a shorter one makes each step
    cheaper (docs/MODEL.md), byte-level models only.
    ``mixer``: run the match model the model's bundle ships (docs/FORMAT.md
    section 4c: it predicts repeats within a chunk); ``None`` (default) uses
    it when there is one, ``False`` never, ``True`` requires it.

    Output is never larger than ``len(data)`` plus the bound stated in
    ``docs/FORMAT.md`` (header + 16 bytes per chunk + 23 per wave + 77).
    """

    def __init__(
        self,
        model: Any = "default",
        *,
        device: str = "auto",
        backend: str = "auto",
        threads: int | None = None,
        chunk_size: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: int | None = None,
        fallback: str = "deflate",
        verify: bool = False,
        eol: bool = True,
        prime: int | None = None,
        mixer: bool | None = None,
        context: int | None = None,
    ) -> None:
        self.model = _resolve_model(model, device, backend, threads)
        auto_chunk = chunk_size is None
        tokens = getattr(self.model, "tokenizer", None) is not None
        if context is None:  # the segments' length: the model's preference (its bundle's manifest)
            context = None if tokens else getattr(self.model, "default_context", None)
        model_ctx = int(self.model.max_context)
        if context is not None and (tokens or not isinstance(context, int) or isinstance(context, bool)
                                    or not 2 <= context <= model_ctx):
            raise ValueError(f"context must be an int in 2..{model_ctx} (the model's context), for "
                             "byte-level models only")
        #: the length of the segments chunks are coded in (docs/FORMAT.md section 4b)
        self.context = model_ctx if context is None else context
        max_ctx = self.context
        segmentable = False
        if tokens:  # chunk_size counts bytes, the context tokens (<= 1 per byte)
            max_chunk = MAX_CHUNK_SIZE
            if chunk_size is None:
                chunk_size = DEFAULT_TOKEN_CHUNK_SIZE
        else:  # longer than the context: coded in segments (scheduler.segment_plan)
            segmentable = max_ctx >= 2 and not getattr(self.model, "device_quantize", False)
            max_chunk = MAX_BYTE_CHUNK_SIZE if segmentable else min(max_ctx, MAX_BYTE_CHUNK_SIZE)
            if chunk_size is None:  # the model's own preference (its bundle's manifest), else 1 KiB
                pref = getattr(self.model, "default_chunk_size", None)
                chunk_size = int(pref) if pref and segmentable else min(DEFAULT_CHUNK_SIZE, max_ctx)
                chunk_size = min(chunk_size, max_chunk)
        if not isinstance(chunk_size, int) or not 1 <= chunk_size <= max_chunk:
            raise ValueError(f"chunk_size must be an int in 1..{max_chunk}")
        #: chunk_size=None on a byte-level model that can segment: a buffer of
        #: known size gets bigger chunks while it still fills a wave (chunk_size_for)
        self.auto_chunk = auto_chunk and segmentable
        #: the prime of segments, for archives whose chunks exceed the context (else 0)
        self.prime = 0
        if not tokens and (chunk_size > max_ctx or (self.auto_chunk and MAX_BYTE_CHUNK_SIZE > max_ctx)):
            if prime is None:
                prime = getattr(self.model, "default_prime", None) or min(DEFAULT_PRIME, max_ctx // 2)
            self.prime = prime
            if not isinstance(self.prime, int) or not 1 <= self.prime <= max_ctx // 2:
                raise ValueError(f"prime must be an int in 1..{max_ctx // 2} (half the context)")
        elif prime is not None and (not isinstance(prime, int) or prime < 0):
            raise ValueError("prime must be an int >= 0")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be an int in 1..{MAX_BATCH_SIZE}")
        if fallback not in ("deflate", "stored"):
            raise ValueError("fallback must be 'deflate' or 'stored'")
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.precision = _default_precision() if precision is None else int(precision)
        self.fallback = fallback
        self.verify = bool(verify)
        self.eol = bool(eol)
        spec = _model_mixer(self.model)
        if mixer not in (None, True, False):
            raise ValueError("mixer must be None, True or False")
        if mixer and spec is None:
            raise ValueError(f"model {self.model.name!r} ships no match model (its bundle manifest has no "
                             "codec.mixer, or it quantizes on an accelerator); pass mixer=None or False")
        #: the match model the chunks are coded through, or None
        self.mixer: MixerSpec | None = None if mixer is False else spec
        #: one session per chunk size in use (the match model's tables follow it)
        self._sessions: dict[int, _Session] = {}
        self._session = self._session_for(self.chunk_size)

    def _session_for(self, chunk: int) -> _Session:
        sess = self._sessions.get(chunk)
        if sess is None:  # the header's probe and fingerprint always come from self._session
            sess = self._sessions[chunk] = _Session(self.model, self.precision, prime=self.prime,
                                                    mixer=self.mixer, chunk_size=chunk, context=self.context)
        return sess

    def chunk_size_for(self, size: int | None) -> int:
        """The chunk size for an input of ``size`` bytes (None: unknown).

        With ``chunk_size=None`` on a byte-level model, an input that fills
        ``batch_size`` rows even with chunks twice as long gets them, up to
        64 KiB: longer chunks code better (the segments start from context,
        and the match model remembers a whole chunk; docs/MODEL.md) at the
        same number of model steps, as long as the rows stay full.  Otherwise,
        and when the size is unknown (streaming), ``chunk_size``."""
        c = self.chunk_size
        if not self.auto_chunk or size is None:
            return c
        while 2 * c <= MAX_BYTE_CHUNK_SIZE and size >= 2 * c * self.batch_size:
            c *= 2
        return c

    # ---------------------------------------------------------- internals

    def _meta(self, probe_batch: int, chunk: int) -> dict[str, Any]:
        from . import __version__

        m = self.model
        return build_meta(
            model_name=m.name,
            model_sha256=m.sha256,
            vocab_size=m.vocab_size,
            bos=m.bos,
            max_context=m.max_context,
            fingerprint=self._session.fingerprint(),
            probe_digest=self._session.probe(probe_batch),
            probe_batch=probe_batch,
            probe_version=PROBE_VERSION,
            probe_steps=min(len(PROBE_BYTES), m.max_context),
            chunk_size=chunk,
            batch_size=self.batch_size,
            precision=self.precision,
            pad_token=self._session.runner.pad,
            writer=f"pyllmcodec {__version__}",
            tokenizer=self._tokenizer_meta(),
            prime=self.prime if chunk > self.context else 0,
            context=self.context if chunk > self.context and self.context < m.max_context else 0,
            mixer=None if self.mixer is None else {"kind": self.mixer.kind, "digest": self.mixer.digest},
        )

    def _tokenizer_meta(self) -> dict[str, Any] | None:
        tk = self._session.tokenizer
        if tk is None:
            return None
        return {"kind": "bpe", "sha256": str(getattr(tk, "sha256", ""))}

    def _model_code(self, batch: int, chunks: Sequence[memoryview], chunk: int) -> list[tuple[int, bytes | None]]:
        """``(method, payload)`` per chunk from the model (payload None: the
        model cannot code it).  A token-level model codes each chunk's token
        sequence when it round-trips byte-exactly and fits the context."""
        runner = self._session_for(chunk).runner
        tk = self._session.tokenizer
        raws = [bytes(c) for c in chunks]
        picked = [eol.encoded(r) if self.eol else (0, r) for r in raws]
        eols = [m for m, _ in picked]
        texts = [t for _, t in picked]
        if tk is None:
            coded = runner.encode_wave(batch, range(batch), texts)
            return [(m or METHOD_MODEL, p) for m, p in zip(eols, coded)]
        max_ctx = int(self.model.max_context)
        tb = _token_bytes(tk)

        def usable(t: np.ndarray, text: bytes) -> bool:
            return 0 < len(t) <= max_ctx and tk.detokenize(t) == text and bool((tb[t] > 0).all())

        seqs = tk.tokenize_batch(texts)
        ok = [usable(t, x) for t, x in zip(seqs, texts)]
        for k, m in enumerate(eols):
            if m and not ok[k]:  # the stripped text does not tokenize cleanly: try the chunk as it is
                eols[k], texts[k] = 0, raws[k]
                seqs[k] = tk.tokenize(raws[k])
                ok[k] = usable(seqs[k], raws[k])
        empty = np.zeros(0, dtype=np.int64)
        coded = runner.encode_wave(batch, range(batch), [t if k else empty for t, k in zip(seqs, ok)])
        return [(m or METHOD_MODEL_TOKENS, p if k else None) for m, k, p in zip(eols, ok, coded)]

    def _code_wave(self, chunks: Sequence[memoryview], chunk: int) -> list[tuple[ChunkEntry, bytes | memoryview]]:
        """Model-code one wave (chunk k at row k; ``chunk``: the archive's
        chunk size), then pick each chunk's method."""
        batch = len(chunks)
        coded = self._model_code(batch, chunks, chunk)
        out: list[tuple[ChunkEntry, bytes | memoryview]] = []
        for row, (raw, (model_method, payload)) in enumerate(zip(chunks, coded)):
            n = len(raw)
            best: bytes | memoryview = raw
            method = METHOD_STORED
            if payload is not None and len(payload) < n:
                method, best = model_method, payload
            if self.fallback == "deflate":
                d = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
                packed = d.compress(raw) + d.flush()
                if len(packed) < len(best):
                    method, best = METHOD_DEFLATE, packed
            out.append((ChunkEntry(row, n, len(best), method, zlib.crc32(raw)), best))
        if self.verify:
            self._verify_wave(batch, chunks, out, chunk)
        return out

    def _verify_wave(
        self, batch: int, chunks: Sequence[memoryview], coded: list[tuple[ChunkEntry, bytes | memoryview]],
        chunk: int,
    ) -> None:
        model_rows = [(e, p) for e, p in coded if e.method in MODEL_METHODS]
        if model_rows:
            job = _Job((), batch)
            for e, p in model_rows:
                _add_to_job(job, e, p, e.row, (0, 0))
            got = _decode_job(self._session_for(chunk), job)
            for (e, _), data in zip(model_rows, got):
                if data != bytes(chunks[e.row]):
                    raise CodecError(
                        f"verify-after-compress failed: row {e.row} of a wave of {batch} does not decode to "
                        "its input; this model session is not deterministic (or not row-independent), "
                        "so its archives cannot be trusted"
                    )
        for e, p in coded:
            if e.method == METHOD_DEFLATE and _inflate(p, e.raw_len) != bytes(chunks[e.row]):
                raise CodecError("verify-after-compress failed on a deflate chunk")

    def _chunks(self, data: memoryview, c: int) -> list[memoryview]:
        """Cut ``data`` into chunks: cells of ``c`` bytes; for a
        token-level model, a cell with more tokens than the model's context is
        split (see :meth:`_split_cell`) instead of falling back to deflate."""
        cells = [data[i : i + c] for i in range(0, len(data), c)]
        if self._session.tokenizer is None:
            return cells
        return [piece for cell in cells for piece in self._split_cell(cell)]

    def _split_cell(self, cell: memoryview) -> list[memoryview]:
        """A token-level model's context counts tokens, the chunk size bytes:
        a cell of dense text (code, non-Latin scripts: < chunk_size / context
        bytes per token) can exceed the context.  Such a cell is cut in two,
        at the last newline (else space, else UTF-8 character start) before
        its middle, and each half again while it is too long.  The pieces are
        ordinary chunks (``raw_len <= chunk_size``), so the decoder needs
        nothing new; the cut depends on the cell's bytes alone, so streaming
        and one-shot compression cut alike."""
        max_ctx = int(self.model.max_context)
        tk = self._session.tokenizer
        out: list[memoryview] = []
        todo = [cell]
        while todo:
            piece = todo.pop()
            if len(piece) < 2 * MIN_SPLIT_PIECE or len(tk.tokenize(bytes(piece))) <= max_ctx:
                out.append(piece)
                continue
            cut = _split_point(bytes(piece))
            todo += [piece[cut:], piece[:cut]]  # a stack: the first half is handled first
        return out

    # ---------------------------------------------------------- public API

    def compress(self, data: Any) -> bytes:
        """Compress one buffer into one archive (a batch of one)."""
        return self.compress_batch([data])[0]

    def compress_batch(self, buffers: Iterable[Any]) -> list[bytes]:
        """Compress several buffers, one archive each, through ONE shared
        schedule: the buffers' chunks (cut per buffer) are concatenated and
        stepped in waves of ``batch_size``, so many small buffers fill the rows
        of one wave.  Each archive decodes alone with :meth:`Decompressor.decompress`
        (running its waves with the other buffers' rows padded);
        :meth:`Decompressor.decompress_batch` on the same list regroups them
        into the original waves.  Archives are therefore not byte-identical to
        one-by-one :meth:`compress` output, but decode to the same bytes.
        The chunk size is :meth:`chunk_size_for` the buffers' total size."""
        views = [_bytes_view(b) for b in buffers]
        chunk = self.chunk_size_for(sum(len(v) for v in views))
        owned: list[tuple[int, memoryview]] = []
        for i, v in enumerate(views):
            owned.extend((i, c) for c in self._chunks(v, chunk))
        outs = [bytearray() for _ in views]
        waves = plan_waves(len(owned), self.batch_size)
        meta = self._meta(waves[0][1] if waves else 1, chunk)
        writers = [ArchiveWriter(o.extend, meta) for o in outs]
        for start, batch in waves:
            wave = owned[start : start + batch]
            coded = self._code_wave([c for _, c in wave], chunk)
            k = 0
            while k < batch:  # one block per archive present in this wave
                owner = wave[k][0]
                j = k
                while j < batch and wave[j][0] == owner:
                    j += 1
                writers[owner].write_block(batch, [e for e, _ in coded[k:j]], [p for _, p in coded[k:j]])
                k = j
        for w, v in zip(writers, views):
            w.finish(hashlib.sha256(v).digest())
        if self.verify:
            for o in outs:
                ArchiveIndex(o)  # the container parses back
        return [bytes(o) for o in outs]

    def stream_writer(self, fh: IO[bytes], *, closefd: bool = False, size: int | None = None) -> Any:
        """A writable file object that compresses into ``fh`` as data arrives;
        ``close()`` (or leaving a ``with`` block) writes the footer.  Buffers at
        most ``batch_size`` chunks of input.  ``size``: the number of bytes
        that will be written, if known; it picks the chunk size as
        :meth:`compress` does (:meth:`chunk_size_for`), so the output is
        byte-identical to :meth:`compress` of the concatenated input when
        ``size`` is right (or the chunk size was given).  A wrong ``size``
        still gives a valid archive."""
        from .io import LlmzFile

        return LlmzFile(fh, "wb", compressor=self, closefd=closefd, size=size)

    def _stream_encoder(self, write: Any, size: int | None = None) -> _StreamEncoder:
        return _StreamEncoder(self, write, size)


class _StreamEncoder:
    """Push bytes in, archive bytes come out through ``write``: the engine
    behind :meth:`Compressor.stream_writer` and the CLI."""

    def __init__(self, comp: Compressor, write: Any, size: int | None = None) -> None:
        self._comp = comp
        self._write = write
        self._buf = bytearray()
        self._sha = hashlib.sha256()
        self._writer: ArchiveWriter | None = None
        #: the archive's chunk size
        self.chunk_size = comp.chunk_size_for(size)
        self._wave_bytes = comp.batch_size * self.chunk_size
        #: cut chunks not yet coded (fewer than a wave, plus one cell's pieces)
        self._pending: list[memoryview] = []
        self.bytes_in = 0
        self.finished = False

    @property
    def bytes_out(self) -> int:
        return self._writer.bytes_written if self._writer else 0

    def write(self, data: Any) -> int:
        if self.finished:
            raise ValueError("write to a finished compression stream")
        mv = _bytes_view(data)
        self._sha.update(mv)
        self.bytes_in += len(mv)
        self._buf += mv
        B = self._comp.batch_size
        while len(self._buf) >= self._wave_bytes:  # one wave of whole cells at a time
            cells = bytes(self._buf[: self._wave_bytes])
            del self._buf[: self._wave_bytes]
            self._pending += self._comp._chunks(memoryview(cells), self.chunk_size)
            while len(self._pending) >= B:
                self._code(self._pending[:B])
                del self._pending[:B]
        return len(mv)

    def _code(self, chunks: list[memoryview]) -> None:
        """Code one wave (the same waves as :meth:`Compressor.compress`:
        consecutive runs of ``batch_size`` chunks)."""
        comp = self._comp
        if self._writer is None:
            self._writer = ArchiveWriter(self._write, comp._meta(max(len(chunks), 1), self.chunk_size))
        if chunks:
            coded = comp._code_wave(chunks, self.chunk_size)
            self._writer.write_block(len(chunks), [e for e, _ in coded], [p for _, p in coded])

    def finish(self) -> None:
        if self.finished:
            return
        rest = bytes(self._buf)
        self._buf = bytearray()
        self._pending += self._comp._chunks(memoryview(rest), self.chunk_size)
        waves = plan_waves(len(self._pending), self._comp.batch_size) or [(0, 0)]
        for start, batch in waves:
            self._code(self._pending[start : start + batch])
        self._pending = []
        assert self._writer is not None
        self._writer.finish(self._sha.digest())
        self.finished = True


#: no piece of a split cell is shorter than this (a shorter piece that is still
#: over the context is left to the fallback codec)
MIN_SPLIT_PIECE = 16


def _split_point(data: bytes) -> int:
    """Where :meth:`Compressor._split_cell` cuts ``data`` (``len >= 2 *
    MIN_SPLIT_PIECE``): after the last newline, else space, in the middle half
    of the data, else at the UTF-8 character start nearest below the middle."""
    n = len(data)
    lo, mid = max(n // 4, MIN_SPLIT_PIECE), n // 2
    for sep in (b"\n", b" "):
        k = data.rfind(sep, lo, mid + 1)
        if k >= 0:
            return k + 1
    k = mid
    while k > lo and (data[k] & 0xC0) == 0x80:  # do not cut inside a UTF-8 sequence
        k -= 1
    return k


def _inflate(payload: Any, raw_len: int) -> bytes | None:
    """Inflate a deflate chunk to exactly ``raw_len`` bytes, or None if the
    payload is not exactly that."""
    try:
        d = zlib.decompressobj(-15)
        out = d.decompress(bytes(payload), raw_len)
        if len(out) != raw_len or not d.eof or d.unconsumed_tail or d.unused_data:
            return None
        return out
    except zlib.error:
        return None


# ------------------------------------------------------------------ decompressor


@dataclass
class _Job:
    """One decode wave: chunks that share a batch size and sit at distinct rows."""

    key: tuple[Any, ...]
    batch: int
    rows: list[int] = field(default_factory=list)
    payloads: list[Any] = field(default_factory=list)
    raw_lens: list[int] = field(default_factory=list)
    methods: list[int] = field(default_factory=list)
    targets: list[tuple[int, int]] = field(default_factory=list)  # (archive, chunk)


class Decompressor:
    """Decompresses archives; holds model sessions (loaded on first need, by
    the name in each archive's header, unless ``model`` is given) and the
    probe digests already checked.  Reusable.

    ``model``: None (load what the archive names), a name, or a StepModel;
    ``max_output_size``: :meth:`decompress` refuses larger outputs
    (:class:`OutputLimitError`); ``None`` means no limit.
    ``max_batch_size``: refuse archives needing larger batches.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        device: str = "auto",
        backend: str = "auto",
        threads: int | None = None,
        max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        self._model_arg = model
        self._device, self._backend, self._threads = device, backend, threads
        self.max_output_size = max_output_size
        self.max_batch_size = max_batch_size
        self._sessions: dict[tuple[Any, ...], _Session] = {}
        self._checked: set[tuple[Any, ...]] = set()

    # ---------------------------------------------------------- sessions

    def _session(self, header: Header) -> tuple[tuple[Any, ...], _Session]:
        """The session for ``header``: the right model, the probe checked."""
        if header.batch_size > self.max_batch_size or header.probe_batch > self.max_batch_size:
            raise FormatError(
                f"archive needs batch size {header.batch_size}, over this decoder's limit "
                f"{self.max_batch_size} (pass max_batch_size= to allow it)"
            )
        _check_codable(header)
        arg = self._model_arg
        if arg is None:
            arg = header.model_name
        try:
            model = _resolve_model(arg, self._device, self._backend, self._threads)
        except ModelError as exc:
            if self._model_arg is not None:
                raise
            raise ModelError(
                f"this archive needs model {header.model_name!r} (sha256 {header.model_sha256}), which "
                f"cannot be loaded here: {exc}.  Install what provides that model (and register it with "
                "pyllmcodec.models.register_model if it is not a shipped bundle), or pass model= (CLI: --model)"
            ) from None
        meta_model = header.meta["model"]
        if model.name != header.model_name or model.sha256 != header.model_sha256:
            raise ModelError(
                f"archive was written with model {header.model_name!r} (sha256 {header.model_sha256}); "
                f"the model given is {model.name!r} (sha256 {model.sha256}); load the archive's model"
            )
        for k in ("vocab_size", "bos", "max_context"):
            if int(getattr(model, k)) != int(meta_model[k]):
                raise ModelError(f"model {k} is {getattr(model, k)}, the archive says {meta_model[k]}")
        mixer = _header_mixer(header, model)
        key = _session_key(model, header)
        sess = self._sessions.get(key)
        if sess is None:
            sess = self._sessions[key] = _Session(model, header.precision, header.pad_token, header.prime,
                                                  mixer, header.chunk_size, header.context)
        probe_key = key + (header.probe_batch, header.probe_digest)
        if probe_key not in self._checked:
            mine = sess.probe(header.probe_batch)
            if mine != header.probe_digest:
                raise NumericsMismatchError(_mismatch_message(header, sess.fingerprint(), mine))
            self._checked.add(probe_key)
        return key, sess

    # ---------------------------------------------------------- in memory

    def decompress(self, data: Any, *, max_output_size: int | None = -1) -> bytes:
        """Decompress one in-memory archive.  The whole structure is parsed
        and checked before any model work; every chunk's CRC-32 and the
        whole-data SHA-256 are verified."""
        return self.decompress_batch([data], max_output_size=max_output_size)[0]

    def decompress_batch(self, blobs: Iterable[Any], *, max_output_size: int | None = -1) -> list[bytes]:
        """Decompress several archives, packing their model-coded chunks into
        shared waves where their geometry allows (same batch size, distinct
        rows) -- which recreates the waves of :meth:`Compressor.compress_batch`."""
        limit = self.max_output_size if max_output_size == -1 else max_output_size
        indexes = [ArchiveIndex(b) for b in blobs]
        for i, ix in enumerate(indexes):
            if limit is not None and ix.footer.total_len > limit:
                raise OutputLimitError(
                    f"archive {i} decodes to {ix.footer.total_len} bytes, over max_output_size={limit}"
                )
        outs = [bytearray(ix.footer.total_len) for ix in indexes]
        chunk_starts = [_chunk_starts(ix) for ix in indexes]
        jobs: list[_Job] = []
        open_jobs: dict[tuple[Any, ...], list[_Job]] = {}
        sessions: dict[tuple[Any, ...], _Session] = {}

        def run(job: _Job) -> None:
            got = _decode_job(sessions[job.key], job)
            for (a, c), chunk in zip(job.targets, got):
                _place(outs[a], indexes[a], chunk_starts[a], c, chunk)

        for a, ix in enumerate(indexes):
            key: tuple[Any, ...] | None = None
            for block in ix.blocks:
                model_k = [k for k, e in enumerate(block.entries) if e.method in MODEL_METHODS]
                for k, e in enumerate(block.entries):
                    if e.method not in MODEL_METHODS:
                        _place(outs[a], ix, chunk_starts[a], block.first_chunk + k, _unpack(ix, block, k))
                if not model_k:
                    continue
                if key is None:
                    key, sess = self._session(ix.header)
                    sessions[key] = sess
                rows = {block.entries[k].row for k in model_k}
                jkey = key + (block.batch,)
                job = next((j for j in open_jobs.get(jkey, []) if rows.isdisjoint(j.rows)), None)
                if job is None:
                    job = _Job(key, block.batch)
                    open_jobs.setdefault(jkey, []).append(job)
                    jobs.append(job)
                for k in model_k:
                    _add_to_job(job, block.entries[k], ix.payload(block, k), block.first_chunk + k,
                                (a, block.first_chunk + k))
                if len(job.rows) == job.batch:  # full: run it now, free its payload refs
                    open_jobs[jkey].remove(job)
                    run(job)
                    jobs.remove(job)
        for job in jobs:
            run(job)
        for a, (ix, out) in enumerate(zip(indexes, outs)):
            if hashlib.sha256(out).digest() != ix.footer.sha256:
                raise ChecksumError(
                    f"archive {a}: the SHA-256 of the decoded data does not match the footer "
                    "although every chunk passed its CRC-32: the archive is corrupt"
                )
        return [bytes(o) for o in outs]

    def decompress_chunks(self, data: Any, start: int, stop: int | None = None) -> bytes:
        """Decode chunks ``start .. stop-1`` alone (random access): only the
        waves holding them are run, with every other row padded.  Each chunk's
        CRC-32 is verified (the whole-data SHA-256 cannot be)."""
        ix = ArchiveIndex(data)
        if stop is None:
            stop = start + 1
        if not 0 <= start <= stop <= ix.n_chunks:
            raise IndexError(f"chunk range {start}..{stop} outside 0..{ix.n_chunks}")
        pieces: dict[int, bytes] = {}
        i = start
        while i < stop:
            bi, k0 = ix.locate(i)
            block = ix.blocks[bi]
            ks = list(range(k0, min(len(block.entries), k0 + stop - i)))
            model_k = [k for k in ks if block.entries[k].method in MODEL_METHODS]
            for k in ks:
                if block.entries[k].method not in MODEL_METHODS:
                    chunk = _unpack(ix, block, k)
                    _check_chunk(ix, block.first_chunk + k, chunk)
                    pieces[block.first_chunk + k] = chunk
            if model_k:
                key, sess = self._session(ix.header)
                job = _Job(key, block.batch)
                for k in model_k:
                    _add_to_job(job, block.entries[k], ix.payload(block, k), block.first_chunk + k,
                                (0, block.first_chunk + k))
                for (_, c), chunk in zip(job.targets, _decode_job(sess, job)):
                    _check_chunk(ix, c, chunk)
                    pieces[c] = chunk
            i += len(ks)
        return b"".join(pieces[c] for c in range(start, stop))

    def decompress_chunk(self, data: Any, index: int) -> bytes:
        """Decode chunk ``index`` alone (see :meth:`decompress_chunks`)."""
        return self.decompress_chunks(data, index, index + 1)

    def stream_reader(self, source: Any, *, closefd: bool = False) -> Any:
        """A readable file object decompressing ``source`` (a binary file
        object or a bytes-like) wave by wave.  Each chunk's CRC-32 is checked
        before its bytes are returned; the whole-data SHA-256 is checked at the
        end (a mismatch raises from the final ``read``)."""
        from .io import LlmzFile

        return LlmzFile(source, "rb", decompressor=self, closefd=closefd)

    def _stream_decoder(self, fh: IO[bytes]) -> Iterator[bytes]:
        """Yield the decoded chunks of the archive read from ``fh``."""
        reader = ArchiveReader(fh)
        header = reader.header
        sha = hashlib.sha256()
        session: _Session | None = None
        for block, payloads in reader.blocks():
            model_k = [k for k, e in enumerate(block.entries) if e.method in MODEL_METHODS]
            decoded: dict[int, bytes] = {}
            if model_k:
                if session is None:
                    key, session = self._session(header)
                else:
                    key = _session_key(session.model, header)
                job = _Job(key, block.batch)
                for k in model_k:
                    _add_to_job(job, block.entries[k], payloads[k], block.first_chunk + k, (0, 0))
                decoded = dict(zip(model_k, _decode_job(session, job)))
            for k, e in enumerate(block.entries):
                chunk = decoded[k] if k in decoded else _unpack_payload(e, payloads[k], block.first_chunk + k)
                if zlib.crc32(chunk) != e.crc:
                    raise ChecksumError(_crc_message(block.first_chunk + k, None))
                sha.update(chunk)
                yield chunk
        assert reader.footer is not None
        if sha.digest() != reader.footer.sha256:
            raise ChecksumError("the SHA-256 of the decoded data does not match the archive footer")


def _session_key(model: Any, header: Header) -> tuple[Any, ...]:
    """What a decoding session depends on besides the probe."""
    return (id(model), header.precision, header.pad_token, header.prime, header.mixer_digest,
            header.chunk_size if header.mixer_digest else 0, header.context)


def _model_mixer(model: Any) -> MixerSpec | None:
    """The match model ``model`` ships and can run: none on the two-phase
    (accelerator) path, which quantizes on the device."""
    return None if getattr(model, "device_quantize", False) else getattr(model, "default_mixer", None)


def _header_mixer(header: Header, model: Any) -> MixerSpec | None:
    """The match model ``header`` asks for, from ``model``'s bundle; FormatError
    for a kind this version does not run, ModelError when the model's table
    is not the one the archive was coded with."""
    want = header.meta.get("mixer")
    if want is None:
        return None
    mine = _model_mixer(model)
    if mine is None and getattr(model, "device_quantize", False):
        raise ModelError("archive was coded through the match model, which runs with host quantization only; "
                         "decode with device='cpu' (CLI: --device cpu)")
    if mine is None or mine.digest != want["digest"]:
        have = "none" if mine is None else f"digest {mine.digest}"
        raise ModelError(
            f"archive was coded with the match model {want['digest']} of model {header.model_name!r}; the model "
            f"here ships {have} (another release of the bundle with the same weights?): install the "
            "pyllmcodec release that wrote the archive, or load its bundle with model="
        )
    return mine


def _check_codable(header: Header) -> None:
    """FormatError unless the header's precision, vocabulary and pad token are
    ones this build's coder and a model could run: checked before any model
    is loaded, so a hostile header never reaches the core as a ValueError or
    feeds the model an out-of-range token."""
    from . import core

    p, m = header.precision, header.meta["model"]
    v, bos = int(m["vocab_size"]), int(m["bos"])
    if not core.MIN_PRECISION <= p <= core.MAX_PRECISION or v > min(1 << (p - 1), core.MAX_SYMBOLS) or v < 2:
        raise FormatError(
            f"archive asks for precision {p} with {v} symbols; this pyllmcodec's coder supports precision "
            f"{core.MIN_PRECISION}..{core.MAX_PRECISION} and 2..min(2^(precision-1), {core.MAX_SYMBOLS}) symbols "
            "(corrupt archive, or one from a newer pyllmcodec)"
        )
    if not (0 <= header.pad_token < v or header.pad_token == bos):
        raise FormatError(f"archive pad token {header.pad_token} is neither a symbol (< {v}) nor bos ({bos})")


def _token_bytes(tk: Any) -> Any:
    """int64 ``[V]``: the byte length of each token (cached on the tokenizer)."""
    tb = getattr(tk, "_pyllmcodec_token_bytes", None)
    if tb is None:
        tb = np.array([len(tk.token_bytes(i)) for i in range(tk.vocab_size)], dtype=np.int64)
        tk._pyllmcodec_token_bytes = tb
    return tb


def _add_to_job(job: _Job, e: ChunkEntry, payload: Any, index: int, target: tuple[int, int]) -> None:
    """Queue a model-coded chunk: its row, length, method and coder stream."""
    job.rows.append(e.row)
    job.payloads.append(payload)
    job.raw_lens.append(e.raw_len)
    job.methods.append(e.method)
    job.targets.append(target)


def _newline_table(tk: Any, vocab_size: int) -> Any:
    """int64 ``[V]``: LFs per symbol (per token's bytes; for a byte model, 1 at
    byte 10), cached on the tokenizer."""
    if tk is None:
        return (np.arange(vocab_size) == 10).astype(np.int64)
    nl = getattr(tk, "_pyllmcodec_newlines", None)
    if nl is None:
        nl = np.array([tk.token_bytes(i).count(b"\n") for i in range(tk.vocab_size)], dtype=np.int64)
        tk._pyllmcodec_newlines = nl
    return nl


def _decode_job(sess: _Session, job: _Job) -> list[bytes]:
    order = sorted(range(len(job.rows)), key=lambda i: job.rows[i])
    rows = [job.rows[i] for i in order]
    methods = [job.methods[i] for i in order]
    tk = sess.tokenizer
    if tk is None and not any(m in EOL_SUFFIXES for m in methods):
        # byte rows with known lengths: the plain loop (the common case)
        got = sess.runner.decode_wave(
            job.batch, rows, [job.raw_lens[i] for i in order], [job.payloads[i] for i in order]
        )
        res: list[bytes] = [b""] * len(order)
        for pos, i in enumerate(order):
            res[i] = got[pos]
        return res
    # rows end when their (restored) byte count reaches raw_len
    V = int(sess.model.vocab_size)
    sym_bytes = np.ones(V, dtype=np.int64) if tk is None else _token_bytes(tk)
    extra = [len(EOL_SUFFIXES.get(m, b"")) for m in methods]
    try:
        got = sess.runner.decode_wave_tokens(
            job.batch, rows, [job.raw_lens[i] for i in order], [job.payloads[i] for i in order],
            sym_bytes, newlines=_newline_table(tk, V) if any(extra) else None, extra=extra,
        )
    except ValueError as exc:
        raise ChecksumError(f"{exc}: the archive is corrupt (or was decoded with different numerics)") from None
    res = [b""] * len(order)
    for pos, i in enumerate(order):
        if tk is None:
            data = got[pos].astype(np.uint8).tobytes()
        else:
            try:
                data = tk.detokenize(got[pos])
            except IndexError:
                data = b""
        if methods[pos] in EOL_SUFFIXES:
            data = eol.restore(data, methods[pos])
        if len(data) != job.raw_lens[i]:
            raise ChecksumError(
                f"a {METHOD_NAMES[methods[pos]]} chunk decoded to {len(data)} bytes, its entry says "
                f"{job.raw_lens[i]}: the archive is corrupt (or was decoded with different numerics)"
            )
        res[i] = data
    return res


def _chunk_starts(ix: ArchiveIndex) -> list[int]:
    starts = []
    pos = 0
    for b in ix.blocks:
        for e in b.entries:
            starts.append(pos)
            pos += e.raw_len
    return starts


def _crc_message(index: int, start: int | None) -> str:
    where = f" (bytes {start}.. of the original)" if start is not None else ""
    return (
        f"chunk {index}{where} failed its CRC-32 check: the archive is corrupt "
        "(or was decoded with different numerics)"
    )


def _check_chunk(ix: ArchiveIndex, index: int, chunk: bytes) -> None:
    bi, k = ix.locate(index)
    if zlib.crc32(chunk) != ix.blocks[bi].entries[k].crc:
        raise ChecksumError(_crc_message(index, ix.chunk_offset(index)))


def _place(out: bytearray, ix: ArchiveIndex, starts: list[int], index: int, chunk: bytes) -> None:
    bi, k = ix.locate(index)
    e = ix.blocks[bi].entries[k]
    if zlib.crc32(chunk) != e.crc:
        raise ChecksumError(_crc_message(index, starts[index]))
    out[starts[index] : starts[index] + e.raw_len] = chunk


def _unpack_payload(e: ChunkEntry, payload: Any, index: int) -> bytes:
    if e.method == METHOD_STORED:
        return bytes(payload)
    if e.method == METHOD_DEFLATE:
        out = _inflate(payload, e.raw_len)
        if out is None:
            raise ChecksumError(f"chunk {index}: corrupt deflate data (the archive is corrupt)")
        return out
    raise AssertionError(f"method {METHOD_NAMES.get(e.method)} is not unpacked here")


def _unpack(ix: ArchiveIndex, block: Any, k: int) -> bytes:
    return _unpack_payload(block.entries[k], ix.payload(block, k), block.first_chunk + k)


def _mismatch_message(header: Header, mine_fp: dict[str, str], mine_digest: str) -> str:
    theirs = header.fingerprint
    keys = sorted(set(theirs) | set(mine_fp))
    diff = [f"    {k}: archive={theirs.get(k, '-')!s} here={mine_fp.get(k, '-')!s}" for k in keys if theirs.get(k) != mine_fp.get(k)]
    return (
        "numerics mismatch: the model on this machine does not reproduce the probabilities "
        f"this archive was written with (probe digest {mine_digest[:16]}... here vs "
        f"{header.probe_digest[:16]}... in the archive), so decoding would produce garbage.\n"
        f"  archive fingerprint: {theirs}\n"
        f"  this machine:        {mine_fp}\n"
        + ("  differences:\n" + "\n".join(diff) + "\n" if diff else "  (the fingerprints agree; the numerics still differ)\n")
        + "Decode on a machine whose fingerprint matches (same backend, device, library versions), "
        "e.g. pass device=/backend= (CLI: --device/--backend) to match the archive."
    )


# ------------------------------------------------------------------ one-shot

_compressors: OrderedDict[tuple[Any, ...], Compressor] = OrderedDict()
_decompressors: dict[tuple[Any, ...], Decompressor] = {}
_oneshot_lock = threading.Lock()


def _compressor(model: Any, **kw: Any) -> Compressor:
    if not isinstance(model, str):
        return Compressor(model, **kw)
    key = (model,) + tuple(sorted(kw.items()))
    with _oneshot_lock:
        comp = _compressors.get(key)
    if comp is None:
        comp = Compressor(model, **kw)
        with _oneshot_lock:
            _compressors[key] = comp
            while len(_compressors) > 4:
                _compressors.popitem(last=False)
    return comp


def compress(
    data: Any,
    model: Any = "default",
    *,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
    chunk_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: int | None = None,
    fallback: str = "deflate",
    verify: bool = False,
    eol: bool = True,
    prime: int | None = None,
    mixer: bool | None = None,
) -> bytes:
    """Compress ``data`` into a ``.llmz`` archive.

    A thin wrapper over :meth:`Compressor.compress`: it reuses a cached
    Compressor (and model session) per model name and options, so repeated
    calls do not reload the model.  Keep a :class:`Compressor` yourself to
    control the session's lifetime.
    """
    return _compressor(
        model, device=device, backend=backend, threads=threads, chunk_size=chunk_size,
        batch_size=batch_size, precision=precision, fallback=fallback, verify=verify, eol=eol, prime=prime,
        mixer=mixer,
    ).compress(data)


def compress_batch(buffers: Iterable[Any], model: Any = "default", **kwargs: Any) -> list[bytes]:
    """Compress many buffers through one shared schedule (see
    :meth:`Compressor.compress_batch`); a thin wrapper like :func:`compress`."""
    return _compressor(model, **kwargs).compress_batch(buffers)


def _decompressor(model: Any, device: str, backend: str, threads: int | None) -> Decompressor:
    if model is not None and not isinstance(model, str):
        return Decompressor(model, device=device, backend=backend, threads=threads)
    key = (model, device, backend, threads)
    with _oneshot_lock:
        d = _decompressors.get(key)
        if d is None:
            d = _decompressors[key] = Decompressor(model, device=device, backend=backend, threads=threads)
    return d


def decompress(
    data: Any,
    *,
    model: Any = None,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
    max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
) -> bytes:
    """Decompress an archive made by :func:`compress`.

    A thin wrapper over :meth:`Decompressor.decompress` that reuses a cached
    Decompressor (its model sessions and checked probes).  The model is the one
    the archive names unless ``model`` is given.  Raises
    :class:`~pyllmcodec.errors.CodecError` subclasses for bad data, a
    mismatched model (:class:`ModelError`) or numerics
    (:class:`NumericsMismatchError`); never returns wrong bytes silently.
    """
    return _decompressor(model, device, backend, threads).decompress(data, max_output_size=max_output_size)


def decompress_batch(
    blobs: Iterable[Any],
    *,
    model: Any = None,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
    max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
) -> list[bytes]:
    """Decompress many archives, sharing waves where possible (see
    :meth:`Decompressor.decompress_batch`); a thin wrapper like :func:`decompress`."""
    return _decompressor(model, device, backend, threads).decompress_batch(blobs, max_output_size=max_output_size)


def info(data: Any, *, chunks: bool = False) -> dict[str, Any]:
    """The archive's header and footer as a dict (no model is loaded).

    Keys: ``format_version``, ``model`` (name, sha256, vocab_size, bos,
    max_context), ``fingerprint``, ``probe``, ``chunk_size``, ``batch_size``,
    ``precision``, ``pad_token``, ``writer``, ``size`` (original bytes),
    ``compressed_size``, ``ratio``, ``sha256`` (hex, of the original),
    ``n_chunks``, ``n_blocks``, ``methods`` (chunk counts per method),
    ``layout`` (where the compressed bytes go: ``header``, ``index`` -- the
    blocks' entry tables with their prefixes and CRCs --, ``payloads`` and
    ``footer`` with the trailer; they add up to ``compressed_size``) and, with
    ``chunks=True``, ``chunks``: one dict per chunk (offset, raw_len,
    coded_len, method, crc32, batch, row).
    """
    ix = ArchiveIndex(data)
    h = ix.header
    d: dict[str, Any] = {k: v for k, v in h.meta.items()}
    d["format_version"] = h.version
    d["size"] = ix.footer.total_len
    d["compressed_size"] = len(ix.buf)
    d["ratio"] = (len(ix.buf) / ix.footer.total_len) if ix.footer.total_len else None
    d["sha256"] = ix.footer.sha256.hex()
    d["n_chunks"] = ix.n_chunks
    d["n_blocks"] = len(ix.blocks)
    d["methods"] = ix.method_counts()
    d["layout"] = {
        "header": h.size,
        "index": sum(b.payload_offset - b.offset for b in ix.blocks),
        "payloads": sum(b.payload_len for b in ix.blocks),
        "footer": len(ix.buf) - ix.footer_offset,
    }
    if chunks:
        rows = []
        pos = 0
        for b in ix.blocks:
            for e in b.entries:
                rows.append(
                    {
                        "offset": pos,
                        "raw_len": e.raw_len,
                        "coded_len": e.coded_len,
                        "method": METHOD_NAMES[e.method],
                        "crc32": e.crc,
                        "batch": b.batch,
                        "row": e.row,
                    }
                )
                pos += e.raw_len
        d["chunks"] = rows
    return d
