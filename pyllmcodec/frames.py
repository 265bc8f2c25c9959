"""Compact frames and headerless frames: the archive format for small records.

The specification is ``docs/FORMAT.md`` section 11a.  A full archive
(:mod:`pyllmcodec.container`) spends ~550 bytes on its JSON header, block
prefixes, footer and trailer: nothing next to a file, ten times a 50-byte
record.  A compact frame says the same in binary, once::

    magic "\\x89LZ\\x1a" | params | index | crc32 u32 | payloads

    params  flags u8 | model id [8] | probe digest [8] | chunk_size, batch_size,
            precision, probe batch (varints) | context, prime (varints, if
            segmented) | dictionary id [8], size (varint) (if primed)
    index   n_blocks (varint) | per block: batch, count (varints), then its
            entries in the compact layout of FORMAT.md section 3
    crc32   of everything before it

A one-chunk frame of a short record takes 40-45 bytes besides its payload.
The model id and probe digest are 64-bit truncations (``FRAME_ID_LEN``):
mistakes (another model, other numerics) are caught with certainty 1 - 2^-64,
and every chunk still has its CRC-32.  There is no whole-data digest: the
index's CRC-32 and the chunks' CRC-32s cover every byte.

A **headerless frame** leaves out the magic and the params: a container that
keeps its own metadata (a Zarr array, a Parquet schema) stores the
:class:`FrameParams` once (:meth:`FrameParams.to_dict`) and each record is
``index | crc32 | payloads``, its CRC-32 seeded with the params' bytes, so a
frame read with other params fails its check before any model work.

Everything here is pure format: no model is loaded.  A frame's :class:`Header`
names the model by id only; :func:`pyllmcodec.session.bind_frame` completes
it from the model that matches.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .constants import (
    FRAME_ID_LEN,
    FRAME_MAGIC,
    MAGIC,
    MAX_BATCH_SIZE,
    MAX_BYTE_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_DICTIONARY_SIZE,
    MAX_PRECISION,
    MIN_PRECISION,
    PROBE_BYTES,
    PROBE_VERSION,
)
from .container import (
    ArchiveIndex,
    ArchiveReader,
    Block,
    ChunkEntry,
    ChunkIndex,
    Footer,
    Header,
    Readable,
    _get_uvarint,
    _Pushback,
    _put_uvarint,
    cm_table_bits,
    encode_entries,
    parse_entries,
)
from .errors import FormatError

__all__ = [
    "FRAME_FLAG_CM",
    "FRAME_FLAG_DICTIONARY",
    "FRAME_FLAG_MIXER",
    "FRAME_FLAG_SEGMENTS",
    "FRAME_FLAG_TOKENS",
    "FrameIndex",
    "FrameParams",
    "encode_frame",
    "frame_length",
    "is_frame",
    "open_index",
    "open_reader",
    "split",
]

#: params flag bit 0: chunks longer than ``context`` are coded in segments;
#: ``context`` and ``prime`` follow the fixed fields
FRAME_FLAG_SEGMENTS = 0x01
#: bit 1: chunks went through the model's match model (FORMAT.md section 4c)
FRAME_FLAG_MIXER = 0x02
#: bit 2: the model is token-level (method 3 instead of 1)
FRAME_FLAG_TOKENS = 0x04
#: bit 3: every chunk was primed with a dictionary whose id follows
FRAME_FLAG_DICTIONARY = 0x08
#: bit 4: chunks went through the context-mixing stage (FORMAT.md section
#: 4f), its tables sized by :func:`pyllmcodec.geometry.cm_table_bits`
FRAME_FLAG_CM = 0x10
_KNOWN_FLAGS = FRAME_FLAG_SEGMENTS | FRAME_FLAG_MIXER | FRAME_FLAG_TOKENS | FRAME_FLAG_DICTIONARY | FRAME_FLAG_CM
_U32 = struct.Struct("<I")
_FIXED = 1 + 2 * FRAME_ID_LEN  # flags, model id, probe digest


def _is_int(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


@dataclass(frozen=True)
class FrameParams:
    """What a frame's decoder must know besides the frame: the model (by id),
    the numerics (probe digest at ``probe_batch`` rows) and the geometry.

    The params of a headerless frame live in its container's metadata
    (:meth:`to_dict` / :meth:`from_dict`, or :meth:`to_bytes`); a compact
    frame carries them.  ``Compressor.frame_params()`` makes them."""

    model_id: bytes
    probe: bytes
    chunk_size: int
    batch_size: int
    precision: int
    probe_batch: int
    #: the segments' length when chunks are longer than it (else 0)
    context: int = 0
    #: silent steps that start each segment after the first (with ``context``)
    prime: int = 0
    mixer: bool = False
    tokens: bool = False
    #: the first 8 bytes of the dictionary's SHA-256, or None
    dictionary: bytes | None = None
    #: the dictionary's length in bytes (0: none)
    dictionary_size: int = 0
    #: chunks went through the context-mixing stage
    cm: bool = False

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(f"invalid frame parameters: {problem}")

    def _problem(self) -> str | None:
        for name, v in (("model_id", self.model_id), ("probe", self.probe)):
            if not isinstance(v, bytes) or len(v) != FRAME_ID_LEN:
                return f"{name} must be {FRAME_ID_LEN} bytes"
        if self.dictionary is not None and (not isinstance(self.dictionary, bytes)
                                            or len(self.dictionary) != FRAME_ID_LEN):
            return f"dictionary must be None or {FRAME_ID_LEN} bytes"
        if (self.dictionary is None) != (self.dictionary_size == 0) or not _is_int(
                self.dictionary_size, 0, MAX_DICTIONARY_SIZE):
            return f"dictionary_size must be 1..{MAX_DICTIONARY_SIZE} with a dictionary, else 0"
        top = MAX_CHUNK_SIZE if self.tokens else MAX_BYTE_CHUNK_SIZE
        if not _is_int(self.chunk_size, 1, top):
            return f"chunk_size must be in 1..{top}"
        if not _is_int(self.batch_size, 1, MAX_BATCH_SIZE) or not _is_int(self.probe_batch, 1, MAX_BATCH_SIZE):
            return f"batch_size and probe_batch must be in 1..{MAX_BATCH_SIZE}"
        if not _is_int(self.precision, MIN_PRECISION, MAX_PRECISION):
            return f"precision must be in {MIN_PRECISION}..{MAX_PRECISION}"
        if self.context or self.prime:  # segmented (canonical: only when chunks are longer)
            if self.tokens:
                return "segments are for byte-level models only"
            if not _is_int(self.context, 2, MAX_BYTE_CHUNK_SIZE) or \
                    self.chunk_size + self.dictionary_size <= self.context:
                return "context must be in 2..chunk_size+dictionary_size-1 when set"
            if not _is_int(self.prime, 1, self.context // 2):
                return "prime must be in 1..context/2 with a context"
        if not isinstance(self.mixer, bool) or not isinstance(self.tokens, bool) or not isinstance(self.cm, bool):
            return "mixer, tokens and cm must be bools"
        if self.cm and self.tokens:
            return "the context-mixing stage is for byte-level models only"
        return None

    @property
    def flags(self) -> int:
        return ((FRAME_FLAG_SEGMENTS if self.context else 0) | (FRAME_FLAG_MIXER if self.mixer else 0)
                | (FRAME_FLAG_TOKENS if self.tokens else 0)
                | (FRAME_FLAG_DICTIONARY if self.dictionary is not None else 0) | (FRAME_FLAG_CM if self.cm else 0))

    def to_bytes(self) -> bytes:
        """The params as a compact frame writes them (and a headerless
        frame's CRC-32 is seeded with)."""
        out = bytearray([self.flags]) + self.model_id + self.probe
        for v in (self.chunk_size, self.batch_size, self.precision, self.probe_batch):
            _put_uvarint(out, v)
        if self.context:
            _put_uvarint(out, self.context)
            _put_uvarint(out, self.prime)
        if self.dictionary is not None:
            out += self.dictionary
            _put_uvarint(out, self.dictionary_size)
        return bytes(out)

    @classmethod
    def parse(cls, buf: bytes | memoryview, pos: int, end: int) -> tuple[FrameParams, int]:
        """The params at ``buf[pos:end]`` and the position after them;
        FormatError saying what is wrong."""
        if end - pos < _FIXED:
            raise FormatError("truncated frame: its parameters are cut short")
        flags = buf[pos]
        if flags & ~_KNOWN_FLAGS:
            raise FormatError(f"unknown frame flags 0x{flags:02x} (a frame from a newer writer?)")
        model_id = bytes(buf[pos + 1 : pos + 1 + FRAME_ID_LEN])
        probe = bytes(buf[pos + 1 + FRAME_ID_LEN : pos + _FIXED])
        pos += _FIXED
        vals = []
        for what in ("chunk_size", "batch_size", "precision", "probe batch"):
            v, pos = _get_uvarint(buf, pos, end, f"the frame's {what}")
            vals.append(v)
        context = prime = 0
        if flags & FRAME_FLAG_SEGMENTS:
            context, pos = _get_uvarint(buf, pos, end, "the frame's context")
            prime, pos = _get_uvarint(buf, pos, end, "the frame's prime")
        dictionary = None
        dsize = 0
        if flags & FRAME_FLAG_DICTIONARY:
            if end - pos < FRAME_ID_LEN:
                raise FormatError("truncated frame: its dictionary id is cut short")
            dictionary = bytes(buf[pos : pos + FRAME_ID_LEN])
            dsize, pos = _get_uvarint(buf, pos + FRAME_ID_LEN, end, "the frame's dictionary size")
        try:
            params = cls(model_id, probe, vals[0], vals[1], vals[2], vals[3], context, prime,
                         bool(flags & FRAME_FLAG_MIXER), bool(flags & FRAME_FLAG_TOKENS), dictionary, dsize,
                         bool(flags & FRAME_FLAG_CM))
        except ValueError as exc:
            raise FormatError(str(exc)) from None
        return params, pos

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> FrameParams:
        """The params :meth:`to_bytes` wrote (exactly those bytes)."""
        params, pos = cls.parse(data, 0, len(data))
        if pos != len(data):
            raise FormatError(f"{len(data) - pos} stray bytes after the frame parameters")
        return params

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ids in hex): what a container's metadata stores."""
        d: dict[str, Any] = {"model_id": self.model_id.hex(), "probe": self.probe.hex(),
                             "chunk_size": self.chunk_size, "batch_size": self.batch_size,
                             "precision": self.precision, "probe_batch": self.probe_batch}
        if self.context:
            d["context"], d["prime"] = self.context, self.prime
        if self.mixer:
            d["mixer"] = True
        if self.tokens:
            d["tokens"] = True
        if self.cm:
            d["cm"] = True
        if self.dictionary is not None:
            d["dictionary"], d["dictionary_size"] = self.dictionary.hex(), self.dictionary_size
        return d

    @classmethod
    def from_dict(cls, d: Any) -> FrameParams:
        """The params :meth:`to_dict` wrote; FormatError for anything else."""
        known = {"model_id", "probe", "chunk_size", "batch_size", "precision", "probe_batch", "context",
                 "prime", "mixer", "tokens", "dictionary", "dictionary_size", "cm"}
        if not isinstance(d, dict) or not set(d) <= known:
            raise FormatError(f"frame parameters must be a dict with keys among {sorted(known)}")
        try:
            dic = d.get("dictionary")
            return cls(bytes.fromhex(d["model_id"]), bytes.fromhex(d["probe"]), d["chunk_size"], d["batch_size"],
                       d["precision"], d["probe_batch"], d.get("context", 0), d.get("prime", 0),
                       d.get("mixer", False), d.get("tokens", False), None if dic is None else bytes.fromhex(dic),
                       d.get("dictionary_size", 0), d.get("cm", False))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"invalid frame parameters: {exc}") from None

    def header(self, size: int) -> Header:
        """The (unbound) :class:`Header` of a frame with these params whose
        params and magic take ``size`` bytes: the geometry keys of a full
        header; the model keys come from :func:`pyllmcodec.session.bind_frame`."""
        meta: dict[str, Any] = {
            "model": {"id": self.model_id.hex()},
            "fingerprint": {},
            "probe": {"version": PROBE_VERSION, "batch": self.probe_batch, "steps": len(PROBE_BYTES),
                      "digest": self.probe.hex()},
            "chunk_size": self.chunk_size,
            "batch_size": self.batch_size,
            "precision": self.precision,
        }
        if self.context:
            meta["context"], meta["prime"] = self.context, self.prime
        if self.tokens:
            meta["tokenizer"] = {"kind": "bpe"}
        if self.mixer:
            meta["mixer"] = {}
        if self.dictionary is not None:
            meta["dictionary"] = {"sha256": self.dictionary.hex(), "size": self.dictionary_size}
        if self.cm:
            meta["cm"] = {"kind": "cm1", "table_bits": cm_table_bits(self.chunk_size * self.batch_size)}  # frames: cm1
        return Header(version=2, meta=meta, size=size, frame=self)


# ---------------------------------------------------------------- writing


def encode_frame(params: FrameParams, blocks: Sequence[tuple[int, Sequence[ChunkEntry], Sequence[Any]]], *,
                 headerless: bool = False) -> bytes:
    """A compact frame (or, ``headerless``, a headerless one) holding
    ``blocks``: ``(batch, entries, payloads)`` per wave, as
    :meth:`pyllmcodec.container.ArchiveWriter.write_block` takes them."""
    params_bytes = params.to_bytes()
    head = bytearray() if headerless else bytearray(FRAME_MAGIC + params_bytes)
    _put_uvarint(head, len(blocks))
    payloads: list[Any] = []
    for batch, entries, pays in blocks:
        if not 1 <= batch <= params.batch_size or not 1 <= len(entries) <= batch:
            raise ValueError(f"bad block geometry: batch={batch}, entries={len(entries)}")
        if len(entries) != len(pays) or any(e.coded_len != len(p) for e, p in zip(entries, pays)):
            raise ValueError("payloads do not match their entries")
        _put_uvarint(head, batch)
        _put_uvarint(head, len(entries))
        head += encode_entries(entries, params.chunk_size)
        payloads.extend(pays)
    crc = zlib.crc32(head, zlib.crc32(params_bytes) if headerless else 0)  # a headerless one: seeded
    return bytes(head) + _U32.pack(crc) + b"".join(bytes(p) for p in payloads)


# ---------------------------------------------------------------- reading


def is_frame(prefix: bytes | memoryview) -> bool:
    """``prefix`` starts a compact frame (judged by its first 4 bytes)."""
    return bytes(prefix[: len(FRAME_MAGIC)]) == FRAME_MAGIC


def _parse_index(buf: memoryview, pos: int, header: Header, seed: int) -> tuple[list[Block], int]:
    """The index at ``buf[pos:]`` (checked with the CRC-32 after it, over
    everything before it and seeded with ``seed``) and the frame's end
    (after the payloads, which need not be in ``buf``)."""
    end = len(buf)
    n_blocks, pos = _get_uvarint(buf, pos, end, "the frame's block count")
    raw: list[tuple[int, list[ChunkEntry]]] = []
    for i in range(n_blocks):
        where = f"block {i} of the frame"
        batch, pos = _get_uvarint(buf, pos, end, where)
        count, pos = _get_uvarint(buf, pos, end, where)
        if not 1 <= batch <= header.batch_size or not 1 <= count <= batch:
            raise FormatError(f"{where}: bad geometry batch={batch} count={count} "
                              f"(the frame's batch size is {header.batch_size})")
        entries, pos = parse_entries(buf, pos, end, count, batch, header, True, where)
        raw.append((batch, entries))
    if end - pos < 4:
        raise FormatError("truncated frame: its index checksum is cut short")
    (crc,) = _U32.unpack_from(buf, pos)
    if zlib.crc32(buf[:pos], seed) != crc:
        raise FormatError("frame index checksum mismatch: the frame is corrupt"
                          + (" (or was read with other parameters)" if seed else ""))
    pos += 4
    blocks: list[Block] = []
    first = 0
    for batch, entries in raw:
        b = Block(batch, entries, pos, pos, first)
        blocks.append(b)
        first += len(entries)
        pos = b.end
    return blocks, pos


class FrameIndex(ChunkIndex):
    """Random access to a compact frame (or, with ``params``, a headerless
    one) held in memory; the same interface as
    :class:`~pyllmcodec.container.ArchiveIndex`.  ``exact``: the frame must
    end where ``buf`` does; else :attr:`length` says where it ends, and
    ``buf`` may stop after the index (``payloads=False``)."""

    def __init__(self, buf: bytes | bytearray | memoryview | Any, params: FrameParams | None = None, *,
                 exact: bool = True, payloads: bool = True) -> None:
        mv = memoryview(buf).cast("B")
        if params is None:
            if not is_frame(mv):
                raise FormatError("not a pyllmcodec compact frame (bad magic)")
            params, pos = FrameParams.parse(mv, len(FRAME_MAGIC), len(mv))
            seed = 0
        else:
            if is_frame(mv) or bytes(mv[: len(MAGIC)]) == MAGIC:
                raise FormatError("this is a self-describing archive, not a headerless frame: decode it "
                                  "without params=")
            pos, seed = 0, zlib.crc32(params.to_bytes())
        self.params = params
        self.header = params.header(pos)
        self.blocks, self.length = _parse_index(mv, pos, self.header, seed)
        if payloads and self.length > len(mv):
            raise FormatError(f"truncated frame: its payloads need {self.length} bytes, {len(mv)} are there")
        if exact and self.length != len(mv):
            raise FormatError(f"{len(mv) - self.length} bytes of trailing data after the frame")
        self.buf = mv[: self.length]
        total = sum(b.raw_starts[-1] for b in self.blocks)
        self.footer = Footer(total, sum(len(b.entries) for b in self.blocks), None, [])
        self._set_starts()


#: the most index bytes a stream reader reads before it gives up on a frame
#: whose index does not parse (a frame index is ~10 bytes per block)
MAX_FRAME_INDEX = 1 << 24


def frame_length(prefix: bytes | memoryview) -> int | None:
    """The length of the compact frame that ``prefix`` starts, or None while
    its index has not all arrived; FormatError for a corrupt one (after
    ``MAX_FRAME_INDEX`` bytes, an index that still does not parse)."""
    try:
        return FrameIndex(prefix, exact=False, payloads=False).length
    except FormatError:
        if len(prefix) > MAX_FRAME_INDEX:
            raise
        return None


class _ViewReader:
    """``read`` over a memoryview, without copying the whole of it (as
    ``io.BytesIO`` would); each read copies what it returns."""

    def __init__(self, mv: memoryview) -> None:
        self._mv, self._pos = mv, 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._mv) if size < 0 else min(len(self._mv), self._pos + size)
        out = bytes(self._mv[self._pos : end])
        self._pos = end
        return out


def _archive_end(mv: memoryview, start: int) -> int:
    """Where the full archive at ``mv[start:]`` ends, as the streaming reader
    finds it (header, blocks, footer, trailer); the end of ``mv`` if it does
    not parse (then :class:`~pyllmcodec.container.ArchiveIndex` says why)."""
    try:
        reader = ArchiveReader(_ViewReader(mv[start:]), concatenated=True)
        for _ in reader.blocks():
            pass
    except FormatError:
        return len(mv)
    return start + reader.position


def split(buf: bytes | bytearray | memoryview | Any) -> list[memoryview]:
    """The archives and compact frames concatenated in ``buf``, in order
    (each still checked whole by :func:`open_index`), found from the front
    as the streaming readers find them: a frame's index gives its length, a
    full archive ends at its trailer."""
    mv = memoryview(buf).cast("B")
    out: list[memoryview] = []
    pos = 0
    while pos < len(mv):
        rest = mv[pos:]
        if is_frame(rest):
            n = FrameIndex(rest, exact=False).length
        elif bytes(rest[: len(MAGIC)]) == MAGIC:
            n = _archive_end(mv, pos) - pos
        elif pos:
            raise FormatError(f"{len(rest)} bytes of trailing data after the archive (offset {pos}): "
                              "neither an archive nor a frame")
        else:
            n = len(rest)  # not a known start: open_index says what is wrong
        out.append(rest[:n])
        pos += n
    return out or [mv]


def open_index(buf: bytes | bytearray | memoryview | Any, params: FrameParams | None = None) -> ChunkIndex:
    """The index of one archive or frame in ``buf``: a full archive, a
    compact frame, or (``params`` given) a headerless frame."""
    if params is not None or is_frame(memoryview(buf).cast("B")[: len(FRAME_MAGIC)]):
        return FrameIndex(buf, params)
    return ArchiveIndex(buf)


class FrameReader:
    """Reads a compact frame front to back from a file object, as
    :class:`~pyllmcodec.container.ArchiveReader` reads an archive (same
    interface).  A frame is a small record: it is read whole."""

    def __init__(self, fh: Readable, *, concatenated: bool = False) -> None:
        self._fh = fh if isinstance(fh, _Pushback) else _Pushback(fh)
        self.concatenated = concatenated
        buf = bytearray()
        step = 256
        while True:  # grow until the index parses (or the stream ends)
            got = self._read(step)
            buf += got
            try:
                ix = FrameIndex(buf, exact=False, payloads=False)
                break
            except FormatError:
                if len(got) < step or len(buf) > MAX_FRAME_INDEX:
                    raise
                step = len(buf)
        n = ix.length
        del ix  # it holds a view of buf
        data = bytes(buf[:n])
        if len(buf) < n:
            data += self._read(n - len(buf))
        elif len(buf) > n:  # what was read past the frame goes back
            self._fh.unread(bytes(buf[n:]))
        self._ix = FrameIndex(data)  # checks the payloads are all there
        self.header = self._ix.header
        self.footer: Footer | None = None

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            b = self._fh.read(n - len(out))
            if not b:
                break
            out += b
        return bytes(out)

    def blocks(self) -> Iterator[tuple[Block, list[bytes]]]:
        ix = self._ix
        for b in ix.blocks:
            yield b, [bytes(ix.payload(b, k)) for k in range(len(b.entries))]
        self.footer = ix.footer

    def next_archive(self, opener: Any = None) -> ArchiveReader | FrameReader | None:
        """The reader of what follows in the same stream, or None at its end."""
        if self.footer is None:
            raise ValueError("read the blocks first")
        nxt = self._fh.read(len(FRAME_MAGIC))
        if not nxt:
            return None
        if not self.concatenated:
            raise FormatError("trailing data after the frame")
        self._fh.unread(nxt)
        return open_reader(self._fh, concatenated=True)


def open_reader(fh: Readable, *, concatenated: bool = False) -> ArchiveReader | FrameReader:
    """A streaming reader of the archive or compact frame that ``fh`` holds:
    :class:`~pyllmcodec.container.ArchiveReader` or :class:`FrameReader`."""
    pb = fh if isinstance(fh, _Pushback) else _Pushback(fh)
    head = pb.read(len(FRAME_MAGIC))
    pb.unread(head)
    if is_frame(head):
        return FrameReader(pb, concatenated=concatenated)
    return ArchiveReader(pb, concatenated=concatenated)
