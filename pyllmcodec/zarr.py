"""A Zarr v3 codec: ``pyllmcodec.zarr.LLMZCodec``, a bytes-to-bytes codec
named ``"pyllmcodec.llmz"`` (registered through the ``zarr.codecs`` entry
point and when this module is imported; ``pip install "pyllmcodec[zarr]"``).

    import zarr
    from pyllmcodec.zarr import LLMZCodec

    a = zarr.create_array("text.zarr", shape=(n,), chunks=(512,), dtype="uint8",
                          compressors=[LLMZCodec()])

**Headerless frames.**  The codec's parameters (model id, probe digest,
geometry: :class:`pyllmcodec.FrameParams`) are stored once, in the array's
``zarr.json`` (the codec's ``configuration.params``), and each stored chunk is
a headerless frame: index, CRC-32 (seeded with the params) and payloads,
about 12 bytes besides the payload.  A codec made for writing (no ``params``)
computes them when zarr fits it to the array (:meth:`evolve_from_array_spec`,
which zarr calls before it writes the metadata): that loads the model and runs
its probe once.  Reading takes the params from the metadata; a frame read with
other params (another model, other numerics or options) fails its checks with
a :class:`pyllmcodec.CodecError` subclass, never returns wrong bytes.  Writing
to an existing array needs the same model and numerics (a ValueError otherwise).

**One model batch for many chunks.**  zarr hands a codec its chunks in
batches (``codec_pipeline.batch_size``, default 1) and runs up to
``async.concurrency`` batches (default 10) at once.  This codec's batch hooks
(``encode`` / ``decode``) code their chunks in ONE
:meth:`~pyllmcodec.Compressor.compress_batch` /
:meth:`~pyllmcodec.Decompressor.decompress_batch` call, and the batches that
are in flight together are merged into one such call (whatever arrives while
one runs goes into the next), so small chunks share the rows of the model's
waves whatever the pipeline's batch size.  The calls run in a worker thread
(the event loop's default executor, as zarr's codecs use ``asyncio.to_thread``).
A chunk's frame depends on the wave it was coded in, so rewriting an array
gives other (equally valid) bytes.  Raising ``codec_pipeline.batch_size`` and
``async.concurrency`` (``zarr.config.set``) lets more chunks share a wave.

The codec implements no synchronous per-chunk path (``_encode_sync``): zarr's
opt-in ``FusedCodecPipeline`` then runs it through its async fallback, one
chunk at a time (correct, not batched).

``None`` chunks in a batch (absent chunks) stay ``None``.  A corrupt stored
chunk raises the pyllmcodec error (FormatError, ChecksumError, ...) naming
the chunk by its place in the decode batch and by its stored length and
CRC-32 (a codec is not told chunk keys).

Thread safety: one :class:`~pyllmcodec.Compressor` and one
:class:`~pyllmcodec.Decompressor` per codec instance, made on first use
under a lock (both may be shared between threads); the batch merger is
lock-protected and serves any number of event loops and threads.  The codec
pickles as its configuration.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import weakref
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

try:
    from zarr.abc.codec import BytesBytesCodec
    from zarr.core.common import parse_named_configuration
    from zarr.registry import register_codec
except ImportError as exc:  # zarr 2 has no v3 codec API
    raise ImportError(f"pyllmcodec.zarr needs zarr>=3.1 (pip install 'pyllmcodec[zarr]'; Python>=3.11): {exc}") from exc

from .codec import Compressor, Decompressor
from .constants import DEFAULT_MODEL
from .errors import ChecksumError, CodecError, FormatError
from .frames import FrameParams

if TYPE_CHECKING:
    from typing_extensions import Self
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer

__all__ = ["CODEC_NAME", "LLMZCodec", "register"]

#: the codec's name in ``zarr.json``: namespaced by the package, as the Zarr
#: extension registry asks of names it has not registered
CODEC_NAME = "pyllmcodec.llmz"

_CONFIG_KEYS = ("model", "level", "chunk_size", "batch_size", "params")
_RECORD = re.compile(r"^record (\d+): ")
#: how many event-loop turns a batch waits, at most, for concurrent batches to join it
_GATHER_TURNS = 64


def _opt_int(name: str, v: Any) -> int | None:
    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
        raise TypeError(f"{CODEC_NAME}: {name} must be an int or None, not {type(v).__name__}")
    return v


class _Merger:
    """Runs the requests that are pending together as ONE call of
    ``merged(items) -> results`` (one result per item), in a worker thread: a
    request that finds no call running starts one after letting its event
    loop turn until no more requests arrive; whatever arrives while a call
    runs goes into the next.  A lone request, or each request of a merged call
    that failed (so that each gets its own results or error), goes through
    ``alone`` instead."""

    def __init__(self, merged: Callable[[list[Any]], list[Any]], alone: Callable[[list[Any]], list[Any]]) -> None:
        self._merged, self._alone = merged, alone
        self._lock = threading.Lock()
        self._pending: list[tuple[list[Any], Future[list[Any]]]] = []
        self._busy = False

    def _after_fork(self) -> None:
        """In a forked child: the parent's requests and worker are not there."""
        self._lock = threading.Lock()
        self._pending = []
        self._busy = False

    def _count(self) -> int:
        with self._lock:
            return len(self._pending)

    async def __call__(self, items: list[Any]) -> list[Any]:
        fut: Future[list[Any]] = Future()
        with self._lock:
            self._pending.append((items, fut))
            lead = not self._busy
            self._busy = True
        if lead:
            try:
                n = 0
                for _ in range(_GATHER_TURNS):  # let the batches started with this one arrive
                    await asyncio.sleep(0)
                    m = self._count()
                    if m == n:
                        break
                    n = m
            finally:  # even if this request is cancelled: the others wait on the drain
                asyncio.get_running_loop().run_in_executor(None, self._drain)
        return await asyncio.wrap_future(fut)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._busy = False
                    return
            try:
                self._run(batch)
            except BaseException as exc:  # never leave a request waiting
                for _, f in batch:
                    if not f.done():
                        f.set_exception(exc)

    def _run(self, batch: list[tuple[list[Any], Future[list[Any]]]]) -> None:
        if len(batch) > 1:
            try:
                out = self._merged([x for items, _ in batch for x in items])
            except Exception:
                pass  # whose was it: each request alone, below
            else:
                k = 0
                for items, f in batch:
                    f.set_result(out[k : k + len(items)])
                    k += len(items)
                return
        for items, f in batch:
            try:
                f.set_result(self._alone(items))
            except Exception as exc:
                f.set_exception(exc)


class _State:
    """A codec instance's runtime state: its Compressor and Decompressor
    (made on first use, under ``lock``) and its batch mergers."""

    def __init__(self, codec: LLMZCodec) -> None:
        self.lock = threading.Lock()
        self.comp: Compressor | None = None
        self.dec: Decompressor | None = None
        self.encode = _Merger(codec._encode_now, codec._encode_now)
        self.decode = _Merger(codec._decode_raw, codec._decode_now)
        _STATES.add(self)

    def after_fork(self) -> None:
        """In a forked child: no other thread holds a lock or runs a batch there."""
        self.lock = threading.Lock()
        self.encode._after_fork()
        self.decode._after_fork()


_STATES: weakref.WeakSet[_State] = weakref.WeakSet()


def _after_fork() -> None:
    for st in list(_STATES):
        st.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@dataclass(frozen=True)
class LLMZCodec(BytesBytesCodec):
    """``LLMZCodec(model="default", level=None, chunk_size=None, batch_size=32, params=None)``:
    pyllmcodec as a Zarr v3 bytes-to-bytes codec (see the module docstring).

    ``model``: a registered model name (what ``zarr.json`` names; every
    reader needs it).  ``level``, ``chunk_size``, ``batch_size``: as for
    :class:`~pyllmcodec.Compressor`; they make the ``params`` of a new array
    and are kept in its metadata for the record (the params then rule: a
    writer to an existing array codes at the params' geometry).  ``params``:
    a :class:`~pyllmcodec.FrameParams` (or its ``to_dict()``); None until the
    codec is fitted to an array."""

    is_fixed_size = False

    model: str = DEFAULT_MODEL
    level: int | None = None
    chunk_size: int | None = None
    batch_size: int = 32
    params: FrameParams | None = None
    #: the coders and the batch mergers of this instance (not configuration)
    _state: _State = field(init=False, repr=False, compare=False)

    def __init__(self, model: str = DEFAULT_MODEL, *, level: int | None = None, chunk_size: int | None = None,
                 batch_size: int = 32, params: FrameParams | dict[str, Any] | None = None) -> None:
        if not isinstance(model, str):
            raise TypeError(f"{CODEC_NAME}: model must be a registered model name (it goes into the array's "
                            f"metadata), not {type(model).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise TypeError(f"{CODEC_NAME}: batch_size must be an int")
        if params is not None and not isinstance(params, FrameParams):
            params = FrameParams.from_dict(params)  # FormatError for a bad one
        if params is not None and params.dictionary is not None:
            raise ValueError(f"{CODEC_NAME}: params with a dictionary are not supported by the zarr codec")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "level", _opt_int("level", level))
        object.__setattr__(self, "chunk_size", _opt_int("chunk_size", chunk_size))
        object.__setattr__(self, "batch_size", batch_size)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "_state", _State(self))

    # ------------------------------------------------------------ metadata

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _, config = parse_named_configuration(data, CODEC_NAME)
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"{CODEC_NAME}: unknown configuration keys {sorted(unknown)} (written by a newer "
                             "pyllmcodec?)")
        return cls(**cast("dict[str, Any]", config))

    def to_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {"model": self.model}
        if self.level is not None:
            config["level"] = self.level
        if self.chunk_size is not None:
            config["chunk_size"] = self.chunk_size
        config["batch_size"] = self.batch_size
        if self.params is not None:
            config["params"] = self.params.to_dict()
        return {"name": CODEC_NAME, "configuration": config}

    def __reduce__(self) -> tuple[Any, ...]:
        return _from_dict, (self.to_dict(),)

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        """The codec with its ``params`` (computed here when it has none:
        loads the model and runs its probe), which zarr writes into the
        array's metadata."""
        if self.params is not None:
            return self
        comp = Compressor(self.model, level=self.level, chunk_size=self.chunk_size, batch_size=self.batch_size)
        new = type(self)(self.model, level=self.level, chunk_size=self.chunk_size, batch_size=self.batch_size,
                         params=comp.frame_params())
        new._state.comp = comp
        return new

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # a compressor: the size depends on the data

    # ------------------------------------------------------------ the coders

    def _need_params(self) -> FrameParams:
        if self.params is None:
            raise ValueError(f"{CODEC_NAME}: this codec has no params yet; zarr fits it to an array "
                             "(evolve_from_array_spec) before coding")
        return self.params

    def compressor(self) -> Compressor:
        """This codec's Compressor (made once), at the geometry of its params."""
        p = self._need_params()
        st = self._state
        with st.lock:
            comp = st.comp
            if comp is None:
                comp = Compressor(self.model, chunk_size=p.chunk_size, batch_size=p.batch_size, precision=p.precision,
                                  context=p.context or None, prime=p.prime or None, mixer=p.mixer)
                st.comp = comp
            return comp

    def decompressor(self) -> Decompressor:
        """This codec's Decompressor (made once)."""
        st = self._state
        with st.lock:
            dec = st.dec
            if dec is None:
                dec = Decompressor(self.model)
                st.dec = dec
            return dec

    def _encode_now(self, chunks: list[Any]) -> list[bytes]:
        return self.compressor().compress_batch(chunks, params=self._need_params())

    def _decode_raw(self, frames: list[Any]) -> list[bytes]:
        return self.decompressor().decompress_batch(frames, params=self._need_params())

    def _decode_now(self, frames: list[Any]) -> list[bytes]:
        """As :meth:`_decode_raw`, its errors naming the chunk they are about."""
        dec = self.decompressor()
        params = self._need_params()
        try:
            return dec.decompress_batch(frames, params=params)
        except (FormatError, ChecksumError) as exc:  # about one frame: which
            raise _named(exc, frames, self._find_bad(dec, params, frames, exc)) from exc
        except CodecError as exc:  # the model, numerics, limits: about them all
            raise type(exc)(f"{CODEC_NAME}: the array's chunks cannot be decoded here: {exc}") from exc

    @staticmethod
    def _find_bad(dec: Decompressor, params: FrameParams, frames: Sequence[Any], exc: CodecError) -> int:
        """The index of the frame that ``exc`` is about: from its ``record
        {i}:`` prefix, else (a chunk's checksum) by halving the batch."""
        m = _RECORD.match(str(exc))
        if m:
            return int(m.group(1))
        if len(frames) == 1:
            return 0
        lo, hi = 0, len(frames)
        while hi - lo > 1:  # a bad frame is in [lo, hi): try the first half
            mid = (lo + hi) // 2
            try:
                dec.decompress_batch(frames[lo:mid], params=params)
            except CodecError:
                hi = mid
            else:
                lo = mid
        return lo

    # ------------------------------------------------------------ zarr's hooks

    async def encode(self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[Buffer | None]:
        """Encode a batch of chunks in one model batch (merged with the
        batches in flight with it); ``None`` chunks stay ``None``."""
        batch = list(chunks_and_specs)
        live = [k for k, (c, _) in enumerate(batch) if c is not None]
        out: list[Buffer | None] = [None] * len(batch)
        if live:
            frames = await self._state.encode([batch[k][0].as_numpy_array() for k in live])  # type: ignore[union-attr]
            for k, f in zip(live, frames):
                out[k] = batch[k][1].prototype.buffer.from_bytes(f)
        return out

    async def decode(self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[Buffer | None]:
        """Decode a batch of chunks in one model batch (merged with the
        batches in flight with it); ``None`` chunks stay ``None``."""
        batch = list(chunks_and_specs)
        live = [k for k, (c, _) in enumerate(batch) if c is not None]
        out: list[Buffer | None] = [None] * len(batch)
        if live:
            data = await self._state.decode([batch[k][0].as_numpy_array() for k in live])  # type: ignore[union-attr]
            for k, d in zip(live, data):
                out[k] = batch[k][1].prototype.buffer.from_bytes(d)
        return out

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        return next(iter(await self.encode([(chunk_bytes, chunk_spec)])))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        out = next(iter(await self.decode([(chunk_bytes, chunk_spec)])))
        assert out is not None
        return out


def _named(exc: CodecError, frames: Sequence[Any], i: int) -> CodecError:
    """``exc`` (same class) naming the stored chunk it is about: by its place
    in the batch and its stored length and CRC-32 (zarr does not tell a codec
    chunk keys)."""
    msg = _RECORD.sub("", str(exc), count=1)
    raw = memoryview(frames[i]).cast("B")
    where = f"stored chunk {i} of the {len(frames)} in this decode batch" if len(frames) > 1 else "a stored chunk"
    return type(exc)(f"{CODEC_NAME}: {where} ({raw.nbytes} bytes, CRC-32 {zlib.crc32(raw):08x}) is corrupt or "
                     f"was written with other parameters: {msg}")


def _from_dict(data: dict[str, Any]) -> LLMZCodec:
    return LLMZCodec.from_dict(data)


def register() -> None:
    """Register :class:`LLMZCodec` with zarr as ``"pyllmcodec.llmz"`` (done
    when this module is imported; the ``zarr.codecs`` entry point makes zarr
    import it when an array names the codec)."""
    register_codec(CODEC_NAME, LLMZCodec)


register()
