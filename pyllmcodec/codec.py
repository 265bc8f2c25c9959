"""Compressor / Decompressor, the one-shot functions and the file-object factories.

The data flows one way: bytes -> chunks (:mod:`pyllmcodec.geometry`) -> chunk
methods (:mod:`pyllmcodec.methods`) -> scheduler (model step -> match model
-> quantizer -> range coder) -> container (:mod:`pyllmcodec.container`), and
back the same road.  :class:`Compressor` and :class:`Decompressor` hold a
model and are the main API; :func:`compress` / :func:`decompress` are thin
wrappers that load the model through the registry's bounded cache
(:mod:`pyllmcodec.models`) and reuse its sessions (:mod:`pyllmcodec.session`).

Threading (the one statement; docs/API.md links here): a Compressor or
Decompressor may be shared between threads.  Every call makes its own coder
objects and model states (one per wave) and reads its object's options
only; the sessions' caches are lock-protected dicts (a race only computes a
probe digest twice).  This holds when the model's ``step`` is reentrant for
distinct states, as ONNX Runtime's and the PyTorch backend's are.  A stream
object (``stream_writer``, ``stream_reader``, ``open``) serialises its own
calls with a lock.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import mmap
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any, Literal, TypeAlias, Union, cast, overload

import numpy as np

from ._version import __version__
from .backends.base import StepModel
from .constants import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_OUTPUT_SIZE,
    DEFAULT_MODEL,
    FRAME_ID_LEN,
    FRAME_MAGIC,
    MAX_BATCH_SIZE,
    MAX_BYTE_CHUNK_SIZE,
    METHOD_DEFLATE,
    METHOD_NAMES,
    PROBE_BYTES,
    PROBE_VERSION,
)
from .container import (
    HEADER_PREFIX_LEN,
    ArchiveIndex,
    ArchiveWriter,
    Block,
    ChunkEntry,
    ChunkIndex,
    Header,
    build_meta,
    header_len_from_prefix,
    parse_header,
)
from .dictionary import Dictionary, as_dictionary
from .errors import (
    ChecksumError,
    CodecError,
    FormatError,
    MemoryLimitError,
    ModelError,
    NumericsMismatchError,
    OutputLimitError,
)
from .frames import FrameIndex, FrameParams, encode_frame, is_frame, open_index, split
from .geometry import Geometry, Plan, cut, is_int
from .io import ArchiveFile, CompressObj, DecompressObj, Readable, bytes_view, file_bytes
from .methods import METHODS, choose, model_inputs, unpack
from .models import cached_model_names, load_model, shipped_model_name
from .scheduler import CmChain, Progress, cm_bytes, plan_waves, wave_bytes
from .session import Session, bind_frame, check_codable, check_model, model_id, session_for

if TYPE_CHECKING:  # a bytes-like object: bytes, bytearray, memoryview, array, mmap, numpy arrays
    from typing_extensions import Buffer

__all__ = [
    "Compressor",
    "Decompressor",
    "LlmzFile",
    "compress",
    "compress_batch",
    "decompress",
    "decompress_batch",
    "info",
    "open",
    "stream_reader",
    "stream_writer",
]

#: Decoders refuse waves of more rows than this only when asked (the default is
#: the format's limit: what any encoder may write).  Memory is what a wave
#: really costs, and ``max_memory`` bounds it on both sides.
DEFAULT_MAX_BATCH_SIZE = MAX_BATCH_SIZE

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "onnxruntime", "torch"]
Fallback = Literal["deflate", "stored"]
Frame = Literal["full", "compact"]
ModelArg: TypeAlias = "str | StepModel"


def _info_of_file(fh: Any, chunks: bool, header_only: bool) -> dict[str, Any]:
    if header_only:  # the 14-byte prefix says how long the header is
        prefix = fh.read(HEADER_PREFIX_LEN)
        if is_frame(prefix):  # a compact frame's params take < 64 bytes
            return info(prefix + fh.read(64), header_only=True)
        return info(prefix + fh.read(header_len_from_prefix(prefix) - len(prefix)), header_only=True)
    buf = file_bytes(fh)
    try:
        return info(buf, chunks=chunks)
    finally:
        if isinstance(buf, mmap.mmap):
            with suppress(BufferError):  # an exception's traceback may still hold a view; GC unmaps it
                buf.close()


def _scaled_progress(progress: Progress, scale: float) -> Progress:
    """``progress`` told ``n * scale`` (rounded, the remainders carried)."""
    carry = [0.0]

    def report(n: int) -> None:
        carry[0] += n * scale
        whole = int(carry[0])
        carry[0] -= whole
        if whole:
            progress(whole)

    return report


def _arguments(local: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments (its ``locals()``), kept for pickling: a
    bytes-like dictionary copied to bytes, so no caller's buffer stays exported."""
    args = {k: v for k, v in local.items() if k not in ("self", "__class__")}
    if isinstance(args.get("dictionary"), (bytearray, memoryview)):
        args["dictionary"] = bytes(args["dictionary"])
    return args


def _picklable(args: dict[str, Any]) -> dict[str, Any]:
    model = args.get("model")
    if model is not None and not isinstance(model, str):
        raise TypeError("a Compressor/Decompressor pickles when its model is a registered name (it is loaded "
                        f"again there), not a {type(model).__name__} object: register it with "
                        "pyllmcodec.models.register_model in every process and pass the name")
    return args


def _rebuild(cls: Any, args: dict[str, Any]) -> Any:
    """An unpickled Compressor/Decompressor: built on first use
    (:class:`_LazyInit`), so the model loads in the child when it is used --
    and an unknown model name is that call's ModelError, not a worker that
    dies while unpickling."""
    obj = cls.__new__(cls)
    obj.__dict__["_lazy_args"] = args
    return obj


_lazy_lock = threading.RLock()


class _LazyInit:
    """Builds an object made by :func:`_rebuild` (its ``__init__`` with the
    pickled arguments) when an attribute it lacks is first asked for; until
    then it holds only the arguments.  Once per object, under a lock; a
    failed build is retried by the next use (and fails the same way)."""

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if name.startswith("__") or "_lazy_args" not in d or d.get("_lazy_owner") == threading.get_ident():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with _lazy_lock:
            if "_lazy_args" in d:
                d["_lazy_owner"] = threading.get_ident()
                try:
                    type(self).__init__(self, **d["_lazy_args"])
                    del d["_lazy_args"]
                finally:
                    d.pop("_lazy_owner", None)
        return object.__getattribute__(self, name)

    def _pickle_args(self) -> dict[str, Any]:
        pending = self.__dict__.get("_lazy_args")
        return _picklable(pending if pending is not None else self.__dict__["_args"])


class _Counting:
    """Counts the bytes read through it (copy_stream's report)."""

    def __init__(self, source: Readable | Buffer) -> None:
        self._fh: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        b: bytes = self._fh.read(size)
        self.count += len(b)
        return b


class _Closed:
    """Stands for the model of a closed Compressor: any use says so."""

    def __init__(self, owner: str) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"I/O operation on a closed {self._owner}")


def _check_limit(name: str, value: int | None) -> int | None:
    if value is not None and (not is_int(value) or value < 0):
        raise ValueError(f"{name} must be None (no limit) or an int >= 0")
    return value


def _resolve_model(model: ModelArg, device: str, backend: str, threads: int | None) -> StepModel:
    if isinstance(model, str):
        return load_model(model, device=device, backend=backend, threads=threads)
    if not isinstance(model, StepModel):
        raise TypeError(
            f"model must be a registered model name or a StepModel, not {type(model).__name__} (a model of "
            "your own needs every attribute of pyllmcodec.backends.base.StepModel: subclass StepModelBase)"
        )
    return model


# ------------------------------------------------------------------ compressor


class Compressor(_LazyInit):
    """Compresses with one model and fixed options; reusable, and may be
    shared between threads (see the module docstring).

    ``model``: a registered model name (loaded through the registry's cache)
    or a :class:`~pyllmcodec.backends.base.StepModel`.  ``device``,
    ``backend``, ``threads``: passed to :func:`~pyllmcodec.models.load_model`.
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
    ``cm``: code through the context-mixing stage (docs/FORMAT.md section
    4f: adaptive context models of the wave's own bytes mixed with the
    model; 10-20% smaller on text, a few percent slower); ``None``
    (default) uses it where the model can run it (the exact byte-level
    models on the CPU), ``False`` never, ``True`` requires it.  With it a
    wave's chunks decode together: random access reads whole waves.
    ``long``: the stage's long mode, as zstd's ``--long`` (docs/FORMAT.md
    section 4f): a wave learns from the archive's earlier waves too (its
    state carries from wave to wave), smaller on inputs of more than one
    wave (2 MiB at the defaults); ``True`` carries it across groups of 16 waves, an
    int ``n`` (2..) across groups of ``n``; random access then decodes from the
    start of the chunk's group, and decoding keeps one state per archive.
    Its tables are sized for a period of waves: up to 704 MiB per state
    (2^24 counters per context) for inputs of 1 MiB or more, which the
    writer holds twice (the state and the wave's working copy).
    Full archives only (not ``frame="compact"``).
    ``max_memory``: the memory a wave may take (default 4 GiB, the
    decoder's default too, so that the default decoder reads what this
    writes); a ``batch_size`` whose waves could need more is refused here.
    ``level``: 1..9 (default: the model's defaults, as levels 1-6); 7-8 and 9
    give the model more context per step, slower and smaller
    (:class:`~pyllmcodec.geometry.Plan`).

    Output is never larger than ``len(data)`` plus the bound stated in
    ``docs/FORMAT.md`` (header + 16 bytes per chunk + 23 per wave + 77).
    """

    def __init__(
        self,
        model: ModelArg = DEFAULT_MODEL,
        *,
        device: Device = "auto",
        backend: Backend = "auto",
        threads: int | None = None,
        chunk_size: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: int | None = None,
        fallback: Fallback = "deflate",
        verify: bool = False,
        eol: bool = True,
        prime: int | None = None,
        mixer: bool | None = None,
        context: int | None = None,
        max_memory: int | None = DEFAULT_MAX_MEMORY,
        level: int | None = None,
        dictionary: Buffer | Dictionary | None = None,
        frame: Frame = "full",
        cm: bool | None = None,
        long: bool | int = False,
    ) -> None:
        #: the arguments, for pickling (a process pool, Ray): a registered name reloads there
        self._args = _arguments(locals())
        self.model = _resolve_model(model, device, backend, threads)
        if frame not in ("full", "compact"):
            raise ValueError("frame must be 'full' (the self-describing archive) or 'compact' (small records)")
        #: what compress() and compress_batch() write: a full archive or a compact frame
        self.frame = frame
        #: the options resolved against the model (pyllmcodec.geometry)
        self.plan = Plan.resolve(self.model, chunk_size=chunk_size, batch_size=batch_size, precision=precision,
                                 prime=prime, context=context, mixer=mixer, level=level,
                                 dictionary=as_dictionary(dictionary), cm=cm, long=long)
        if self.plan.cm_long and frame != "full":
            raise ValueError("long needs full archives (frame='full'): a compact frame is one wave's record")
        if fallback not in ("deflate", "stored"):
            raise ValueError("fallback must be 'deflate' or 'stored'")
        self.max_memory = _check_limit("max_memory", max_memory)
        longest = self.plan.chunk_size_for(1 << 62 if self.plan.auto_chunk else None)
        longest = min(longest, MAX_BYTE_CHUNK_SIZE)
        bits = self.plan.for_size(1 << 62).cm_bits if self.plan.cm else 0
        # the long mode keeps a state beside the wave's working copy
        need = (wave_bytes(self.model, self.plan.batch_size, longest, self.plan.context, bits)
                + (cm_bytes(bits, 0) if self.plan.cm_long else 0))
        if self.max_memory is not None and need > self.max_memory:
            raise ValueError(
                f"batch_size={self.plan.batch_size} makes waves of up to {need / 2**20:.0f} MiB with model "
                f"{self.model.name!r}, over max_memory={self.max_memory} ({self.max_memory / 2**20:.0f} MiB); "
                "use a smaller batch_size, or a larger max_memory= here AND when decompressing"
            )
        self.fallback = fallback
        self.verify = bool(verify)
        self.eol = bool(eol)

    def close(self) -> None:
        """Let go of the model (the registry's cache may still hold it); the
        object cannot be used afterwards."""
        self.model = _Closed(type(self).__name__)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its arguments, so it can go to another process (a
        process pool, Ray, Dask), which loads the model by its registered
        name there; a StepModel object given directly does not pickle."""
        return _rebuild, (Compressor, self._pickle_args())

    def __enter__(self) -> Compressor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # the resolved options, as attributes
    @property
    def chunk_size(self) -> int:
        """The chunk size given, or the model's default (:meth:`chunk_size_for`
        may pick a longer one for a large input)."""
        return self.plan.chunk_size

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def precision(self) -> int:
        return self.plan.precision

    @property
    def prime(self) -> int:
        """The prime of segments, for archives whose chunks exceed the context (else 0)."""
        return self.plan.prime

    @property
    def context(self) -> int:
        """The length of the segments chunks are coded in (docs/FORMAT.md section 4b)."""
        return self.plan.context

    @property
    def mixer(self) -> Any:
        """The match model (a :class:`~pyllmcodec.mixer.MixerSpec`) the chunks go through, or None."""
        return self.plan.mixer

    def chunk_size_for(self, size: int | None) -> int:
        """The chunk size for an input of ``size`` bytes (None: unknown).

        With ``chunk_size=None`` on a byte-level model, an input that fills
        ``batch_size`` rows even with chunks twice as long gets them, up to
        64 KiB: longer chunks code better (the segments start from context,
        and the match model remembers a whole chunk; docs/MODEL.md) at the
        same number of model steps, as long as the rows stay full.  Otherwise,
        and when the size is unknown (streaming), ``chunk_size``."""
        return self.plan.chunk_size_for(size)

    # ---------------------------------------------------------- the wave coder (pyllmcodec.io.WaveCoder)

    def geometry_for(self, size: int | None) -> Geometry:
        """The geometry of an archive of ``size`` input bytes (None: unknown);
        a compact frame codes through the stage's first kind, cm1 (frames do
        not record the kind: docs/FORMAT.md section 11a)."""
        g = self.plan.for_size(size)
        return replace(g, cm_kind=1) if self.frame == "compact" else g

    def session(self, geometry: Geometry) -> Session:
        """The model session at ``geometry`` (its probe digests cached while the model lives)."""
        return session_for(self.model, geometry, self.max_memory)

    @property
    def dictionary(self) -> Dictionary | None:
        """The dictionary every chunk is primed with, or None."""
        return self.plan.dictionary

    def cut(self, data: memoryview, geometry: Geometry) -> list[memoryview]:
        """``data`` cut into the chunks of ``geometry`` (pyllmcodec.geometry.cut)."""
        return cut(data, geometry.chunk_size, self.model.tokenizer, self._max_tokens)

    @property
    def _max_tokens(self) -> int:
        """The symbols a chunk may take in its segment: the context, less the dictionary's."""
        return int(self.model.max_context) - self.plan.primed

    def frame_params(self, size: int | None = None, *, probe_batch: int | None = None) -> FrameParams:
        """The parameters of this Compressor's frames for inputs of ``size``
        bytes (None: the geometry of any size, which headerless frames need:
        their chunk size cannot follow each input).  A headerless frame's
        container stores them once (:meth:`FrameParams.to_dict`) and hands
        them to :meth:`compress_batch` and :meth:`Decompressor.decompress_batch`
        (``params=``).  ``probe_batch``: the rows the probe digest is taken
        at (default: ``batch_size``).  Runs the probe once per geometry."""
        g = self.geometry_for(size)
        return self._params(g, self.batch_size if probe_batch is None else probe_batch)

    def _params(self, g: Geometry, probe_batch: int) -> FrameParams:
        d = g.dictionary
        return FrameParams(
            model_id=model_id(self.model), probe=bytes.fromhex(self.session(g).probe(probe_batch))[:FRAME_ID_LEN],
            chunk_size=g.chunk_size, batch_size=g.batch_size, precision=g.precision, probe_batch=probe_batch,
            context=g.context if g.prime else 0, prime=g.prime, mixer=g.mixer is not None,
            tokens=self.model.tokenizer is not None, dictionary=None if d is None else d.id,
            dictionary_size=0 if d is None else len(d), cm=g.cm_bits > 0)

    def header_meta(self, geometry: Geometry, probe_batch: int) -> dict[str, Any]:
        """The header metadata of an archive at ``geometry`` whose probe runs
        at batch size ``probe_batch`` (its first wave's)."""
        m = self.model
        sess = self.session(geometry)
        tk = m.tokenizer
        return build_meta(
            model_name=m.name,
            model_sha256=m.sha256,
            vocab_size=m.vocab_size,
            bos=m.bos,
            max_context=m.max_context,
            fingerprint=sess.fingerprint(),
            probe_digest=sess.probe(probe_batch),
            probe_batch=probe_batch,
            probe_version=PROBE_VERSION,
            probe_steps=min(len(PROBE_BYTES), m.max_context),
            writer=f"pyllmcodec {__version__}",
            tokenizer=None if tk is None else {"kind": "bpe", "sha256": str(tk.sha256)},
            **geometry.header_fields(int(m.max_context)),
        )

    def code_wave(self, chunks: Sequence[memoryview], geometry: Geometry,
                  progress: Progress | None = None,
                  owners: Sequence[int] | None = None, chain: CmChain | None = None,
                  at: dict[int, int] | None = None) -> list[tuple[ChunkEntry, Any]]:
        """Code one wave (chunk k at row k): the model codes what it can
        (:func:`pyllmcodec.methods.model_inputs`), then each chunk keeps its
        smallest form (:func:`pyllmcodec.methods.choose`).  Through the
        context-mixing stage or the wave match the rows of one archive (``owners[k]``, None:
        one) learn from each other, so the decoder must run exactly the rows
        that keep the model's form: a chunk that falls back to another form
        is dropped and the wave coded again without it (rare on text: a
        wave of random bytes drops every row at once).  In the long mode
        ``chain`` holds each owner's state and ``at[owner]`` is the block of
        that archive this wave writes: the wave continues copies of the
        states (a dropped row codes the wave again from the same ones) and
        the chain takes the wave's end states."""
        batch = len(chunks)
        raws = [bytes(c) for c in chunks]
        inputs = model_inputs(raws, eol_methods=self.eol, tokenizer=self.model.tokenizer,
                              max_context=self._max_tokens)
        empty = np.zeros(0, dtype=np.int64)
        runner = self.session(geometry).runner
        symbols = [empty if s is None else s for _, s in inputs]
        n_sym = sum(len(s) for s in symbols)
        if progress is not None and n_sym:  # report input bytes: symbols scaled (tokens, stripped CRs)
            progress = _scaled_progress(progress, sum(len(r) for r in raws) / n_sym)
        raw_lens = [len(r) for r in raws]
        keys = sorted(set(owners or [0]))
        if chain is not None and (at is None or not set(keys) <= set(at)):
            raise ValueError("the long mode's chain needs at[owner], each owner's block index")
        end: dict[int, Any] | None = None
        while True:
            start = None
            if chain is not None:
                assert at is not None
                start = {o: st.copy() for o in keys if (st := chain.begin(o, at[o])) is not None}
                end = {}
            coded = runner.encode_wave(batch, range(batch), symbols, progress, groups=owners, raw_lens=raw_lens,
                                       cm_start=start, cm_end=end)
            out: list[tuple[ChunkEntry, Any]] = []
            for row, (raw, (m, _), p) in enumerate(zip(chunks, inputs, coded)):
                method, best = choose(raw, m, None if not len(symbols[row]) else p, self.fallback)
                out.append((ChunkEntry(row, len(raw), len(best), method, zlib.crc32(raw)), best))
            dropped = [k for k, (e, _) in enumerate(out) if len(symbols[k]) and not METHODS[e.method].model]
            if not geometry.rows_share_state or not dropped:
                break
            for k in dropped:
                symbols[k] = empty
            progress = None  # the rows were reported once
        if self.verify:  # from the states the wave started with (the originals: the chain moves on below)
            self._verify_wave(batch, chunks, out, geometry, owners,
                              None if chain is None or at is None else
                              {o: st for o in keys if (st := chain.begin(o, at[o])) is not None})
        if chain is not None and at is not None and end is not None:
            for o, st in end.items():
                chain.end(o, at[o], st)
        return out

    def _verify_wave(self, batch: int, chunks: Sequence[memoryview], coded: list[tuple[ChunkEntry, Any]],
                     geometry: Geometry, owners: Sequence[int] | None = None,
                     cm_start: dict[int, Any] | None = None) -> None:
        model_rows = [(e, p) for e, p in coded if METHODS[e.method].model]
        if model_rows:
            got = self.session(geometry).decode_rows(batch, [e.row for e, _ in model_rows],
                                                     [e.method for e, _ in model_rows],
                                                     [e.raw_len for e, _ in model_rows], [p for _, p in model_rows],
                                                     groups=None if owners is None else
                                                     [owners[e.row] for e, _ in model_rows], cm_start=cm_start)
            for (e, _), data in zip(model_rows, got):
                if data != bytes(chunks[e.row]):
                    raise CodecError(
                        f"verify-after-compress failed: row {e.row} of a wave of {batch} does not decode to "
                        "its input; this model session is not deterministic (or not row-independent), "
                        "so its archives cannot be trusted"
                    )
        for e, p in coded:
            if e.method == METHOD_DEFLATE and unpack(e.method, p, e.raw_len, e.row) != bytes(chunks[e.row]):
                raise CodecError("verify-after-compress failed on a deflate chunk")

    # ---------------------------------------------------------- public API

    def compress(self, data: Buffer) -> bytes:
        """Compress one buffer into one archive (a batch of one)."""
        return self.compress_batch([data])[0]

    def compress_batch(self, buffers: Iterable[Buffer], *, params: FrameParams | None = None) -> list[bytes]:
        """Compress several buffers, one archive each, through ONE shared
        schedule: the buffers' chunks (cut per buffer) are concatenated and
        stepped in waves of ``batch_size``, so many small buffers fill the rows
        of one wave.  Each archive decodes alone with :meth:`Decompressor.decompress`
        (running its waves with the other buffers' rows padded);
        :meth:`Decompressor.decompress_batch` on the same list regroups them
        into the original waves.  Archives are therefore not byte-identical to
        one-by-one :meth:`compress` output, but decode to the same bytes.
        The chunk size is :meth:`chunk_size_for` the buffers' total size.

        Each output is a full archive, or a compact frame (``frame="compact"``);
        with ``params`` (from :meth:`frame_params`), a headerless frame at
        those parameters' geometry, which decodes only with the same params."""
        views = [bytes_view(b) for b in buffers]
        if params is None:
            geometry = self.geometry_for(sum(len(v) for v in views))
        else:
            geometry = self._headerless_geometry(params)
        if geometry.cm_long and (params is not None or self.frame != "full"):
            raise ValueError("long needs full archives: not headerless or compact frames")
        owned: list[tuple[int, memoryview]] = []
        for i, v in enumerate(views):
            owned.extend((i, c) for c in self.cut(v, geometry))
        waves = plan_waves(len(owned), geometry.batch_size)
        probe_batch = waves[0][1] if waves else 1
        blocks: list[list[tuple[int, list[ChunkEntry], list[Any]]]] = [[] for _ in views]
        chain = CmChain(geometry.cm_long) if geometry.cm_long else None
        for start, batch in waves:
            wave = owned[start : start + batch]
            coded = self.code_wave([c for _, c in wave], geometry, owners=[o for o, _ in wave], chain=chain,
                                   at={o: len(blocks[o]) for o, _ in wave})
            if chain is not None:  # the archives that ended in this wave (all but its last) let go of their states
                for o in {o for o, _ in wave} - {wave[-1][0]}:
                    chain.drop(o)
            k = 0
            while k < batch:  # one block per archive present in this wave
                owner = wave[k][0]
                j = k
                while j < batch and wave[j][0] == owner:
                    j += 1
                blocks[owner].append((batch, [e for e, _ in coded[k:j]], [p for _, p in coded[k:j]]))
                k = j
        if params is not None or self.frame == "compact":
            fp = params if params is not None else self._params(geometry, probe_batch)
            frames = [encode_frame(fp, bl, headerless=params is not None) for bl in blocks]
            if self.verify:
                for f in frames:
                    FrameIndex(f, params)  # the frame parses back
            return frames
        meta = self.header_meta(geometry, probe_batch)
        outs = []
        for bl, v in zip(blocks, views):
            out = bytearray()
            w = ArchiveWriter(out.extend, meta)
            for batch, entries, payloads in bl:
                w.write_block(batch, entries, payloads)
            w.finish(hashlib.sha256(v).digest())
            if self.verify:
                ArchiveIndex(out)  # the container parses back
            outs.append(bytes(out))
        return outs

    def _headerless_geometry(self, params: FrameParams) -> Geometry:
        """The geometry of headerless frames at ``params``: ValueError unless
        they are this Compressor's (:meth:`frame_params`) on this machine."""
        if not isinstance(params, FrameParams):
            raise TypeError(f"params must be FrameParams (from Compressor.frame_params()), not {type(params).__name__}")
        mine = self.frame_params(None, probe_batch=params.probe_batch)
        if mine != params:
            diff = [k for k, v in mine.to_dict().items() if params.to_dict().get(k) != v]
            diff += [k for k in params.to_dict() if k not in mine.to_dict()]
            raise ValueError(
                f"these frame params are not this Compressor's (they differ in {', '.join(diff)}): a headerless "
                "frame must be written with the model, options and numerics its params name; make them with "
                "frame_params() of a Compressor with the same options"
            )
        return replace(self.geometry_for(None), cm_kind=1)  # frames code through cm1

    def compressobj(self, size: int | None = None) -> CompressObj:
        """An incremental compressor (``compress(data) -> bytes``,
        ``flush("finish" | "block") -> bytes``), as zstd's ``compressobj``;
        ``size`` as in :meth:`stream_writer`."""
        return CompressObj(self, size)

    def copy_stream(self, ifh: Readable, ofh: IO[bytes], *, size: int | None = None,
                    read_size: int = 1 << 20, progress: Progress | None = None) -> tuple[int, int]:
        """Compress everything read from ``ifh`` into ``ofh``; returns
        ``(bytes read, bytes written)``, as zstd's ``copy_stream``; ``size``
        and ``progress`` as in :meth:`stream_writer`.  An exception aborts the
        writer: nothing more is coded."""
        w = self.stream_writer(ofh, size=size, progress=progress)
        with w:
            while block := ifh.read(read_size):
                w.write(block)
        return w.bytes_in, w.bytes_out

    def stream_writer(self, fh: IO[bytes], *, closefd: bool = False, size: int | None = None,
                      progress: Progress | None = None) -> LlmzFile:
        """A writable file object that compresses into ``fh`` as data arrives;
        ``close()`` (or leaving a ``with`` block) writes the footer.  Buffers at
        most ``batch_size`` chunks of input.  ``size``: the number of bytes
        that will be written, if known; it picks the chunk size as
        :meth:`compress` does (:meth:`chunk_size_for`), so the output is
        byte-identical to :meth:`compress` of the concatenated input when
        ``size`` is right (or the chunk size was given).  A wrong ``size``
        still gives a valid archive.  ``progress(n)``: told the input bytes
        coded as the waves are coded (model symbols: bytes, or a token-level
        model's tokens), every few steps -- what a progress bar needs."""
        return LlmzFile(fh, "wb", compressor=self, closefd=closefd, size=size, progress=progress)


# ------------------------------------------------------------------ decompressor


@dataclass
class _Job:
    """One decode wave: model-coded chunks that share a session and a batch
    size and sit at distinct rows."""

    session: Session
    batch: int
    rows: list[int] = field(default_factory=list)
    methods: list[int] = field(default_factory=list)
    raw_lens: list[int] = field(default_factory=list)
    payloads: list[Any] = field(default_factory=list)
    targets: list[tuple[int, int]] = field(default_factory=list)  # (archive, chunk)
    #: the long mode: the states the archives' blocks continue, and where their end states go
    cm_start: dict[int, Any] = field(default_factory=dict)
    cm_end: dict[int, Any] = field(default_factory=dict)
    cm_at: dict[int, int] = field(default_factory=dict)  # archive -> its block in this job

    def add(self, e: ChunkEntry, payload: Any, target: tuple[int, int]) -> None:
        self.rows.append(e.row)
        self.methods.append(e.method)
        self.raw_lens.append(e.raw_len)
        self.payloads.append(payload)
        self.targets.append(target)

    def run(self, progress: Progress | None = None) -> list[bytes]:
        return self.session.decode_rows(self.batch, self.rows, self.methods, self.raw_lens, self.payloads, progress,
                                        groups=[a for a, _ in self.targets], cm_start=self.cm_start,
                                        cm_end=self.cm_end)


def _crc_message(index: int, start: int | None) -> str:
    where = f" (bytes {start}.. of the original)" if start is not None else ""
    return (
        f"chunk {index}{where} failed its CRC-32 check: the archive is corrupt "
        "(or was decoded with different numerics)"
    )


def _checked(chunk: bytes, e: ChunkEntry, index: int, start: int | None) -> bytes:
    if zlib.crc32(chunk) != e.crc:
        raise ChecksumError(_crc_message(index, start))
    return chunk


class Decompressor(_LazyInit):
    """Decompresses archives; loads the model each archive's header names
    (through the registry's cache) unless ``model`` is given.  Reusable, and
    may be shared between threads (see the module docstring).

    ``model``: None (load what the archive names), a name, or a StepModel;
    ``max_output_size``: :meth:`decompress` refuses larger outputs
    (:class:`OutputLimitError`); ``None`` means no limit.
    ``max_memory``: the memory a wave may take (default 4 GiB, as the
    Compressor's): a wave, or the probe, that would need more is refused
    before anything is allocated (:class:`MemoryLimitError`).
    ``max_batch_size``: refuse archives whose waves (or probe) have more rows
    (default: the format's 65535; memory is the real bound).
    """

    def __init__(
        self,
        model: ModelArg | None = None,
        *,
        device: Device = "auto",
        backend: Backend = "auto",
        threads: int | None = None,
        max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
        max_memory: int | None = DEFAULT_MAX_MEMORY,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        dictionary: Buffer | Dictionary | None = None,
    ) -> None:
        self._args = _arguments(locals())
        #: the dictionary archives primed with one need (DictionaryError for another), or None
        self.dictionary = as_dictionary(dictionary)
        self._model_arg = model
        self._device, self._backend, self._threads = device, backend, threads
        self.max_output_size = _check_limit("max_output_size", max_output_size)
        self.max_memory = _check_limit("max_memory", max_memory)
        if not is_int(max_batch_size) or max_batch_size < 1:
            raise ValueError("max_batch_size must be an int >= 1")
        self.max_batch_size = max_batch_size
        self._closed = False

    def close(self) -> None:
        """Mark this object closed: later calls raise ValueError (models are
        the registry's: :func:`pyllmcodec.models.clear_cache` frees them)."""
        self._closed = True

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its arguments (see :meth:`Compressor.__reduce__`)."""
        return _rebuild, (Decompressor, self._pickle_args())

    def __enter__(self) -> Decompressor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------- sessions

    def session(self, header: Header) -> Session:
        """The session for ``header``: the right model at the archive's
        geometry, its probe checked (NumericsMismatchError otherwise)."""
        if self._closed:
            raise ValueError("I/O operation on a closed Decompressor")
        self._check_rows(header.probe_batch, "its probe")
        if header.frame is not None:  # a frame names its model by id: find it, fill in the header
            model = self._frame_model(header.frame)
            header = bind_frame(header, model)
            check_codable(header)
        else:
            check_codable(header)  # before a model is loaded for it
            model = self._archive_model(header)
        check_model(header, model)
        geometry = Geometry.from_header(header, model, self.dictionary)
        sess = session_for(model, geometry, self.max_memory)
        try:
            try:
                sess.check_probe(header)
            except NumericsMismatchError:
                # an older archive of this model: its numerics, if the model still has them
                for old in model.legacy_numerics():
                    alt = session_for(old, geometry, self.max_memory)
                    try:
                        alt.check_probe(header)
                    except NumericsMismatchError:
                        continue
                    return alt
                raise
        except MemoryError:
            raise MemoryLimitError(f"out of memory running the probe at {header.probe_batch} rows") from None
        return sess

    def _archive_model(self, header: Header) -> StepModel:
        """The model a full archive's header names (or ``model=``)."""
        arg = header.model_name if self._model_arg is None else self._model_arg
        try:
            return _resolve_model(arg, self._device, self._backend, self._threads)
        except ModelError as exc:
            if self._model_arg is not None:
                raise
            raise ModelError(
                f"this archive needs model {header.model_name!r} (sha256 {header.model_sha256}), which "
                f"cannot be loaded here: {exc}.  Install what provides that model (and register it with "
                "pyllmcodec.models.register_model if it is not a shipped bundle), or pass model= (CLI: --model)"
            ) from None

    def _frame_model(self, params: FrameParams) -> StepModel:
        """The model a frame's id names: ``model=`` when given (bind_frame
        checks it), else the default model or one in the registry's cache."""
        if self._model_arg is not None:
            return _resolve_model(self._model_arg, self._device, self._backend, self._threads)
        shipped = shipped_model_name(params.model_id)  # known from the manifests: loads only a match
        for name in ([shipped] if shipped else []) + cached_model_names():
            try:
                m = load_model(name, device=self._device, backend=self._backend, threads=self._threads)
            except ModelError:
                continue
            if model_id(m) == params.model_id:
                return m
        raise ModelError(
            f"this frame names its model by id only ({params.model_id.hex()}), and it is not the default model "
            "nor a loaded one: pass model= (the name it was written with) to decode it"
        )

    def _check_rows(self, rows: int, what: str) -> None:
        """FormatError for a wave (or probe) of more rows than ``max_batch_size``."""
        if rows > self.max_batch_size:
            raise FormatError(f"archive needs {rows} rows for {what}, over this decoder's max_batch_size="
                              f"{self.max_batch_size} (pass a larger max_batch_size= to allow it)")

    def _job(self, header: Header, block: Block) -> _Job:
        """A decode job for a block's model-coded chunks (its rows checked)."""
        self._check_rows(block.batch, f"a wave of chunk {block.first_chunk}")
        return _Job(self.session(header), block.batch)

    # ---------------------------------------------------------- the block decoder (pyllmcodec.io.BlockDecoder)

    def decode_block(self, header: Header, block: Block, payloads: Sequence[Any],
                     progress: Progress | None = None, *, chain: CmChain | None = None,
                     index: int | None = None) -> list[bytes]:
        """The chunks of one block of an archive with ``header`` (its payloads
        given), each checked against its CRC-32: the streaming reader's step.
        An archive in the context-mixing stage's long mode (header key
        ``cm.long``) decodes its blocks in order: ``chain`` (a
        :class:`~pyllmcodec.scheduler.CmChain` of the header's period, one
        per archive) carries the state and ``index`` is the block's place in
        the archive; start at a group's first block (a multiple of the period)."""
        model_k = [k for k, e in enumerate(block.entries) if METHODS[e.method].model]
        decoded: dict[int, bytes] = {}
        period = header.cm_long
        if period and (chain is None or index is None or chain.period != period):
            raise ValueError(f"this archive is in the long mode (cm.long = {period}): its blocks decode in order, "
                             f"with chain=CmChain({period}) and each block's index=")
        if model_k:
            job = self._job(header, block)
            if chain is not None and index is not None and period:
                st = chain.begin(0, index)
                if st is not None:
                    job.cm_start[0] = st
            for k in model_k:
                job.add(block.entries[k], payloads[k], (0, k))
            decoded = dict(zip(model_k, job.run(progress)))
            if chain is not None and index is not None and period:
                chain.end(0, index, job.cm_end[0])
        out = []
        for k, e in enumerate(block.entries):
            index = block.first_chunk + k
            if k in decoded:
                chunk = decoded[k]
            else:
                chunk = unpack(e.method, payloads[k], e.raw_len, index)
                if progress is not None:  # the model's rows report themselves as they decode
                    progress(len(chunk))
            out.append(_checked(chunk, e, index, None))
        return out

    # ---------------------------------------------------------- in memory

    def decompress(self, data: Buffer, *, max_output_size: int | Literal["default"] | None = "default",
                   params: FrameParams | None = None) -> bytes:
        """Decompress one in-memory archive or frame.  The whole structure is
        parsed and checked before any model work; every chunk's CRC-32 and
        (a full archive's) whole-data SHA-256 are verified.
        ``max_output_size``: this call's limit (``"default"``: the
        Decompressor's).  ``params``: a headerless frame's parameters."""
        return self.decompress_batch([data], max_output_size=max_output_size, params=params)[0]

    def decompress_batch(self, blobs: Iterable[Buffer], *,
                         max_output_size: int | Literal["default"] | None = "default",
                         params: FrameParams | None = None) -> list[bytes]:
        """Decompress several archives (or compact frames; with ``params``,
        headerless frames, one per buffer), packing their model-coded chunks
        into shared waves where their geometry allows (same model and
        geometry, same batch size, distinct rows) -- which recreates the
        waves of :meth:`Compressor.compress_batch`.  A buffer holding
        concatenated archives decodes to the concatenation of theirs, as gzip
        decodes concatenated members."""
        limit = self.max_output_size if max_output_size == "default" else max_output_size
        owners: list[int] = []  # the blob each archive came from
        indexes: list[ChunkIndex] = []
        for i, b in enumerate(blobs):
            try:
                parts = [open_index(b, params)] if params is not None else [open_index(m) for m in split(b)]
            except FormatError as exc:
                raise type(exc)(f"record {i}: {exc}") if params is not None else exc from None
            total = sum(ix.footer.total_len for ix in parts)
            if limit is not None and total > limit:
                raise OutputLimitError(f"archive {i} decodes to {total} bytes, over max_output_size={limit}")
            indexes += parts
            owners += [i] * len(parts)
        outs = [bytearray(ix.footer.total_len) for ix in indexes]
        jobs: list[_Job] = []
        open_jobs: dict[tuple[int, int], list[_Job]] = {}
        sessions: dict[tuple[Any, ...], Session] = {}
        by_params: dict[FrameParams, Session] = {}

        def place(a: int, index: int, chunk: bytes) -> None:
            ix = indexes[a]
            bi, k = ix.locate(index)
            start = ix.chunk_offset(index)
            e = ix.blocks[bi].entries[k]
            try:
                outs[a][start : start + e.raw_len] = _checked(chunk, e, index, start)
            except ChecksumError as exc:  # which record, when there are several
                if len(owners) > 1 or params is not None:
                    raise ChecksumError(f"record {owners[a]}: {exc}") from None
                raise

        chains: dict[int, CmChain] = {}  # the long mode's states, per archive

        def run(job: _Job) -> None:
            for (a, c), chunk in zip(job.targets, job.run()):
                place(a, c, chunk)
            for a, bi in job.cm_at.items():
                if a in job.cm_end:
                    chains[a].end(a, bi, job.cm_end[a])

        def flush(a: int) -> None:
            """Run the open jobs holding archive ``a``'s blocks (the long mode: its next block continues them)."""
            for lst in open_jobs.values():
                for j in [j for j in lst if a in j.cm_at]:
                    lst.remove(j)
                    run(j)
                    jobs.remove(j)

        for a, ix in enumerate(indexes):
            sess: Session | None = None
            period = ix.header.cm_long
            if period:
                chains[a] = CmChain(period)
            for bi, block in enumerate(ix.blocks):
                model_k = [k for k, e in enumerate(block.entries) if METHODS[e.method].model]
                for k, e in enumerate(block.entries):
                    if not METHODS[e.method].model:
                        index = block.first_chunk + k
                        place(a, index, unpack(e.method, ix.payload(block, k), e.raw_len, index))
                if not model_k:
                    continue
                self._check_rows(block.batch, f"a wave of chunk {block.first_chunk}")
                if sess is None:
                    fp = ix.header.frame  # frames with equal params: one model lookup and probe check
                    sess = by_params.get(fp) if fp is not None else None
                    if sess is None:
                        sess = self.session(ix.header)
                        skey = (id(sess.model), sess.geometry.session_key)
                        sess = sessions.setdefault(skey, sess)  # archives of one geometry share waves
                        if fp is not None:
                            by_params[fp] = sess
                rows = {block.entries[k].row for k in model_k}
                if period:
                    flush(a)
                jkey = (id(sess), block.batch)
                # through the context-mixing stage or the wave match an archive's rows learn from each
                # other: two of its waves never share a job (other archives' waves may: each archive is
                # its own group)
                cm = sess.geometry.rows_share_state
                job = next((j for j in open_jobs.get(jkey, []) if rows.isdisjoint(j.rows)
                            and not (cm and any(t[0] == a for t in j.targets))), None)
                if job is None:
                    job = _Job(sess, block.batch)
                    open_jobs.setdefault(jkey, []).append(job)
                    jobs.append(job)
                for k in model_k:
                    job.add(block.entries[k], ix.payload(block, k), (a, block.first_chunk + k))
                if period:
                    job.cm_at[a] = bi
                    st = chains[a].begin(a, bi)
                    if st is not None:
                        job.cm_start[a] = st
                if len(job.rows) == job.batch:  # full: run it now, free its payload refs
                    open_jobs[jkey].remove(job)
                    run(job)
                    jobs.remove(job)
            if period:  # its last block decoded, the archive lets go of its state
                flush(a)
                del chains[a]
        for job in jobs:
            run(job)
        for a, (ix, out) in enumerate(zip(indexes, outs)):
            if ix.footer.sha256 is not None and hashlib.sha256(out).digest() != ix.footer.sha256:
                raise ChecksumError(
                    f"archive {owners[a]}: the SHA-256 of the decoded data does not match the footer "
                    "although every chunk passed its CRC-32: the archive is corrupt"
                )
        joined: list[bytearray] = [bytearray() for _ in range(owners[-1] + 1 if owners else 0)]
        for a, out in zip(owners, outs):
            joined[a] += out
        return [bytes(o) for o in joined]

    def decompress_chunks(self, data: Buffer, start: int, stop: int | None = None, *,
                          params: FrameParams | None = None) -> bytes:
        """Decode chunks ``start .. stop-1`` alone (random access): only the
        waves holding them are run, with every other row padded.  Each chunk's
        CRC-32 is verified (the whole-data SHA-256 cannot be).  ``params``:
        a headerless frame's parameters."""
        ix = open_index(data, params)
        if stop is None:
            stop = start + 1
        if not 0 <= start <= stop <= ix.n_chunks:
            raise IndexError(f"chunk range {start}..{stop} outside 0..{ix.n_chunks}")
        pieces: dict[int, bytes] = {}
        period = ix.header.cm_long
        if period and start < stop:  # the long mode: decode from the first block of the chunks' group on
            chain = CmChain(period)
            b0, b1 = ix.locate(start)[0], ix.locate(stop - 1)[0]
            for b in range(b0 - b0 % period, b1 + 1):
                block = ix.blocks[b]
                chunks = self.decode_block(ix.header, block, [ix.payload(block, k) for k in range(len(block.entries))],
                                           chain=chain, index=b)
                for k, chunk in enumerate(chunks):
                    if start <= block.first_chunk + k < stop:
                        pieces[block.first_chunk + k] = chunk
            return b"".join(pieces[c] for c in range(start, stop))
        i = start
        while i < stop:
            bi, k0 = ix.locate(i)
            block = ix.blocks[bi]
            ks = list(range(k0, min(len(block.entries), k0 + stop - i)))
            # through the context-mixing stage or the wave match a wave's model-coded chunks decode together
            run_k = range(len(block.entries)) if ix.header.rows_share_state else ks
            model_k = [k for k in run_k if METHODS[block.entries[k].method].model]
            for k in ks:
                e, index = block.entries[k], block.first_chunk + k
                if not METHODS[e.method].model:
                    chunk = unpack(e.method, ix.payload(block, k), e.raw_len, index)
                    pieces[index] = _checked(chunk, e, index, ix.chunk_offset(index))
            if model_k:
                job = self._job(ix.header, block)
                for k in model_k:
                    job.add(block.entries[k], ix.payload(block, k), (0, block.first_chunk + k))
                for (_, c), chunk in zip(job.targets, job.run()):
                    if start <= c < stop:
                        pieces[c] = _checked(chunk, block.entries[c - block.first_chunk], c, ix.chunk_offset(c))
            i += len(ks)
        return b"".join(pieces[c] for c in range(start, stop))

    def decompress_chunk(self, data: Buffer, index: int, *, params: FrameParams | None = None) -> bytes:
        """Decode chunk ``index`` alone (see :meth:`decompress_chunks`)."""
        return self.decompress_chunks(data, index, index + 1, params=params)

    def copy_stream(self, ifh: Readable | Buffer, ofh: IO[bytes], *, read_size: int = 1 << 20,
                    progress: Progress | None = None) -> tuple[int, int]:
        """Decompress everything read from ``ifh`` into ``ofh``; returns
        ``(archive bytes read, bytes written)``, as zstd's ``copy_stream``;
        ``progress`` as in :meth:`stream_reader`."""
        counter = _Counting(ifh)
        n = 0
        for block in self.read_to_iter(counter, read_size=read_size, progress=progress):
            ofh.write(block)
            n += len(block)
        return counter.count, n

    def decompressobj(self, max_output_size: int | None = None) -> DecompressObj:
        """An incremental decompressor of one archive (``decompress(piece) ->
        bytes``, ``eof``, ``unused_data``), as :class:`lzma.LZMADecompressor`."""
        return DecompressObj(self, _check_limit("max_output_size", max_output_size))

    def read_to_iter(self, source: Readable | Buffer, *, read_size: int = 1 << 20,
                     progress: Progress | None = None) -> Iterator[bytes]:
        """The decompressed data of ``source`` as an iterator of byte
        strings (one wave's worth at most each), as zstd's ``read_to_iter``."""
        with self.stream_reader(source, progress=progress) as r:
            while block := r.read1(read_size):
                yield block

    def stream_reader(self, source: Readable | Buffer, *, closefd: bool = False,
                      max_output_size: int | None = None, progress: Progress | None = None) -> LlmzFile:
        """A readable file object decompressing ``source`` (a binary file
        object or a bytes-like) wave by wave.  Each chunk's CRC-32 is checked
        before its bytes are returned; the whole-data SHA-256 is checked at the
        end (a mismatch raises from the final ``read``).  ``max_output_size``:
        OutputLimitError before a wave that would take the output past it
        (default None: a stream holds one wave at a time, however long).
        ``progress(n)``: told the symbols decoded, every few steps."""
        return LlmzFile(source, "rb", decompressor=self, closefd=closefd,
                        max_output_size=_check_limit("max_output_size", max_output_size), progress=progress)


# ------------------------------------------------------------------ one-shot


def compress(
    data: Buffer,
    model: ModelArg = DEFAULT_MODEL,
    *,
    device: Device = "auto",
    backend: Backend = "auto",
    threads: int | None = None,
    chunk_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: int | None = None,
    fallback: Fallback = "deflate",
    verify: bool = False,
    eol: bool = True,
    prime: int | None = None,
    mixer: bool | None = None,
    cm: bool | None = None,
    long: bool | int = False,
    context: int | None = None,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    level: int | None = None,
    dictionary: Buffer | Dictionary | None = None,
    frame: Frame = "full",
) -> bytes:
    """Compress ``data`` into a ``.llmz`` archive.

    A thin wrapper over :meth:`Compressor.compress` with the same options:
    the model comes from the registry's cache and its sessions (probe
    digests) are reused, so repeated calls do not reload the model.  Keep a
    :class:`Compressor` yourself to hold the model for longer.
    """
    return Compressor(
        model, device=device, backend=backend, threads=threads, chunk_size=chunk_size,
        batch_size=batch_size, precision=precision, fallback=fallback, verify=verify, eol=eol, prime=prime,
        mixer=mixer, cm=cm, long=long, context=context, max_memory=max_memory, level=level, dictionary=dictionary,
        frame=frame,
    ).compress(data)


def compress_batch(
    buffers: Iterable[Buffer],
    model: ModelArg = DEFAULT_MODEL,
    *,
    device: Device = "auto",
    backend: Backend = "auto",
    threads: int | None = None,
    chunk_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: int | None = None,
    fallback: Fallback = "deflate",
    verify: bool = False,
    eol: bool = True,
    prime: int | None = None,
    mixer: bool | None = None,
    cm: bool | None = None,
    long: bool | int = False,
    context: int | None = None,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    level: int | None = None,
    dictionary: Buffer | Dictionary | None = None,
    frame: Frame = "full",
) -> list[bytes]:
    """Compress many buffers through one shared schedule (see
    :meth:`Compressor.compress_batch`); a thin wrapper like :func:`compress`."""
    return Compressor(
        model, device=device, backend=backend, threads=threads, chunk_size=chunk_size,
        batch_size=batch_size, precision=precision, fallback=fallback, verify=verify, eol=eol, prime=prime,
        mixer=mixer, cm=cm, long=long, context=context, max_memory=max_memory, level=level, dictionary=dictionary,
        frame=frame,
    ).compress_batch(buffers)


def decompress(
    data: Buffer,
    *,
    model: ModelArg | None = None,
    device: Device = "auto",
    backend: Backend = "auto",
    threads: int | None = None,
    max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dictionary: Buffer | Dictionary | None = None,
) -> bytes:
    """Decompress an archive made by :func:`compress`.

    A thin wrapper over :meth:`Decompressor.decompress` (models and sessions
    come from the shared caches).  The model is the one the archive names
    unless ``model`` is given.  Raises
    :class:`~pyllmcodec.errors.CodecError` subclasses for bad data, a
    mismatched model (:class:`ModelError`) or numerics
    (:class:`NumericsMismatchError`); never returns wrong bytes silently.
    """
    return Decompressor(model, device=device, backend=backend, threads=threads, max_output_size=max_output_size,
                        max_memory=max_memory, max_batch_size=max_batch_size, dictionary=dictionary).decompress(data)


def decompress_batch(
    blobs: Iterable[Buffer],
    *,
    model: ModelArg | None = None,
    device: Device = "auto",
    backend: Backend = "auto",
    threads: int | None = None,
    max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dictionary: Buffer | Dictionary | None = None,
) -> list[bytes]:
    """Decompress many archives, sharing waves where possible (see
    :meth:`Decompressor.decompress_batch`); a thin wrapper like :func:`decompress`."""
    return Decompressor(model, device=device, backend=backend, threads=threads, max_output_size=max_output_size,
                        max_memory=max_memory, max_batch_size=max_batch_size,
                        dictionary=dictionary).decompress_batch(blobs)


def info(data: Buffer | Readable, *, chunks: bool = False, header_only: bool = False) -> dict[str, Any]:
    """The archive's header and footer as a dict (no model is loaded).

    ``data``: the archive's bytes, or a binary file object (mapped when it
    has a file descriptor, else read).  ``header_only``: the header's keys
    and ``format_version`` alone, from as many bytes as the header takes:
    a peek that needs neither the rest of the archive nor the whole file.

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
    if not isinstance(data, (bytes, bytearray, memoryview)) and hasattr(data, "read"):
        return _info_of_file(data, chunks, header_only)
    view = bytes_view(data)
    if header_only:
        if is_frame(view):
            p, _ = FrameParams.parse(view, len(FRAME_MAGIC), len(view))
            return {**p.to_dict(), "format_version": 2, "frame": "compact"}
        h = parse_header(view)
        return {**h.meta, "format_version": h.version}
    ix = open_index(view)
    h = ix.header
    d: dict[str, Any] = {k: v for k, v in h.meta.items()}
    d["format_version"] = h.version
    d["size"] = ix.footer.total_len
    d["compressed_size"] = len(ix.buf)
    d["ratio"] = (len(ix.buf) / ix.footer.total_len) if ix.footer.total_len else None
    d["sha256"] = None if ix.footer.sha256 is None else ix.footer.sha256.hex()
    d["n_chunks"] = ix.n_chunks
    d["n_blocks"] = len(ix.blocks)
    d["methods"] = ix.method_counts()
    payloads = sum(b.payload_len for b in ix.blocks)
    if isinstance(ix, FrameIndex):  # params and index share one structure (and its CRC-32)
        d["frame"] = "compact"
        d["frame_params"] = ix.params.to_dict()
        d["layout"] = {"header": h.size, "index": len(ix.buf) - payloads - h.size, "payloads": payloads,
                       "footer": 0}
    else:
        d["frame"] = "full"
        d["layout"] = {
            "header": h.size,
            "index": sum(b.payload_offset - b.offset for b in ix.blocks),
            "payloads": payloads,
            "footer": len(ix.buf) - cast(ArchiveIndex, ix).footer_offset,
        }
    if chunks:
        rows = []
        pos = 0
        for b in ix.blocks:
            for e in b.entries:
                rows.append({"offset": pos, "raw_len": e.raw_len, "coded_len": e.coded_len,
                             "method": METHOD_NAMES[e.method], "crc32": e.crc, "batch": b.batch, "row": e.row})
                pos += e.raw_len
        d["chunks"] = rows
    return d


# ------------------------------------------------------------------ file objects


def stream_writer(fileobj: IO[bytes], model: ModelArg = DEFAULT_MODEL, *, closefd: bool = False,
                  size: int | None = None, **kwargs: Any) -> LlmzFile:
    """A writable file object compressing into ``fileobj``; ``kwargs`` are
    :class:`Compressor` options (see :meth:`Compressor.stream_writer`)."""
    return Compressor(model, **kwargs).stream_writer(fileobj, closefd=closefd, size=size)


def stream_reader(source: Readable | Buffer, model: ModelArg | None = None, *, closefd: bool = False,
                  max_output_size: int | None = None, **kwargs: Any) -> LlmzFile:
    """A readable file object decompressing ``source`` (file object or
    bytes-like); ``max_output_size`` as in :meth:`Decompressor.stream_reader`;
    ``kwargs`` are :class:`Decompressor` options."""
    return Decompressor(model, **kwargs).stream_reader(source, closefd=closefd, max_output_size=max_output_size)


FileArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", IO[bytes], Readable]


@overload
def open(filename: FileArg, mode: Literal["rb", "r", "wb", "w", "xb", "x"] = "rb", *,
         model: ModelArg | None = None, encoding: None = None, errors: None = None, newline: None = None,
         **kwargs: Any) -> LlmzFile: ...


@overload
def open(filename: FileArg, mode: Literal["rt", "wt", "xt"], *, model: ModelArg | None = None,
         encoding: str | None = None, errors: str | None = None, newline: str | None = None,
         **kwargs: Any) -> io.TextIOWrapper: ...


def open(
    filename: FileArg,
    mode: str = "rb",
    *,
    model: ModelArg | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    **kwargs: Any,
) -> LlmzFile | io.TextIOWrapper:
    """Open a ``.llmz`` file in binary ("rb", "wb", "xb"; "ab" not supported)
    or text ("rt", "wt", "xt") mode, like :func:`gzip.open`.

    ``filename``: a path or an existing binary file object.  ``model``: for
    writing, the model name or StepModel (default "default"); for reading,
    None loads what the archive names.  Other keyword arguments go to
    :class:`Compressor` or :class:`Decompressor`.
    """
    if "a" in mode:
        raise ValueError("append mode is not supported (an archive ends with a footer)")
    text = "t" in mode
    if text and "b" in mode:
        raise ValueError(f"invalid mode {mode!r}")
    if not text and (encoding is not None or errors is not None or newline is not None):
        raise ValueError("encoding/errors/newline are for text mode only")
    base = mode.replace("t", "").replace("b", "")
    if base not in ("r", "w", "x"):
        raise ValueError(f"invalid mode {mode!r}")
    if not isinstance(filename, (str, bytes, os.PathLike)) and not (hasattr(filename, "read")
                                                                   or hasattr(filename, "write")):
        raise TypeError("filename must be a path or a binary file object")
    if "compresslevel" in kwargs:  # gzip.open's spelling
        kwargs["level"] = kwargs.pop("compresslevel")
    if isinstance(filename, bytes):  # a path, as gzip.open takes it
        filename = os.fsdecode(filename)
    f = LlmzFile(filename, base, model=model, **kwargs)
    if text:
        # typeshed's TextIOWrapper wants a `name`, which an archive stream need not have
        return io.TextIOWrapper(cast(Any, f), encoding=encoding, errors=errors, newline=newline)
    return f


class LlmzFile(ArchiveFile):
    """A ``.llmz`` archive as a binary file object, like :class:`lzma.LZMAFile`.

    ``filename``: a path (``str`` or path-like: opened here, closed with the
    file) or a binary file object; for reading, also the archive's bytes (a
    bytes-like); ``mode``: "rb"/"r" decompresses,
    "wb"/"w" and "xb"/"x" compress.  ``compressor`` / ``decompressor``: the
    objects to use; by default a ``Compressor(model or "default", **options)``
    or a ``Decompressor(model, **options)``.  ``size`` (writing): the bytes
    that will be written, if known (it picks the chunk size as
    :meth:`Compressor.compress` does); ``max_output_size`` (reading): see
    :meth:`Decompressor.stream_reader`; ``closefd``: close a given file object
    with this one (a path's file is always closed).

    Closing a writer writes the archive's footer; a writer left by an
    exception, or collected unclosed, is aborted (incomplete, nothing more
    coded).  Each ``read``/``write``/``close`` holds a lock, so one object may
    be shared between threads.
    """

    def __init__(self, filename: FileArg | Buffer, mode: str = "rb", *, model: ModelArg | None = None,
                 compressor: Compressor | None = None, decompressor: Decompressor | None = None,
                 closefd: bool = False, size: int | None = None, max_output_size: int | None = None,
                 progress: Progress | None = None, **options: Any) -> None:
        base = mode.replace("b", "")
        if base not in ("r", "w", "x"):
            raise ValueError(f"mode must be 'rb', 'wb' or 'xb' (or without the b), not {mode!r}")
        own = isinstance(filename, (str, os.PathLike))  # bytes are an archive's bytes, not a path
        fh: Any = builtins.open(filename, base + "b") if own else filename  # type: ignore[arg-type]
        try:
            if base == "r":
                limit = _check_limit("max_output_size", max_output_size)
                super().__init__(fh, "rb", decompressor=decompressor or Decompressor(model, **options),
                                 closefd=own or closefd, max_output_size=limit, progress=progress)
            else:
                if not (own or hasattr(fh, "write")):
                    raise TypeError("filename must be a path or a binary file object to write to")
                comp = compressor or Compressor(DEFAULT_MODEL if model is None else model, **options)
                super().__init__(fh, "wb", compressor=comp, closefd=own or closefd, size=size, progress=progress)
        except BaseException:
            if own:
                fh.close()
            raise
