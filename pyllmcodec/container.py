"""The archive format (container v1): byte layout, writer and hostile-input parser.

The specification is ``docs/FORMAT.md``; this module is its only implementation.
An archive is written front to back without seeking, one block per wave::

    Header  magic | version u8 | flags u8 | meta_len u32 | meta (JSON) | crc32 u32
    Block*  tag 'w' | batch u16 | count u16 | body_len u32 | entries | crc32 u32 | payloads
    Footer  tag 'E' | body_len u32 | total u64 | chunks u64 | sha256[32] | nblocks u32
            | (offset u64, count u16) * nblocks | crc32 u32
    Trailer footer_offset u64 | footer_len u32 | "LZE1"

All integers are little-endian.  An entry of a compact block (tag ``'w'``,
written since 0.2) is a lead byte ``method | 0x40 if raw_len == chunk_size |
0x80 if row == previous row + 1``, then whichever of ``row``, ``raw_len``
(unsigned LEB128 varints) the flags leave out, ``coded_len`` (varint; left out
for stored chunks, where it equals ``raw_len``) and the CRC-32 of the raw
chunk (u32): 7 bytes for a typical 1 KiB model chunk.  Blocks with tag
``'W'`` (the first writers) spell out ``row, raw_len, coded_len`` and
``method``; readers accept both.

Parsing rules (NOTE): every length is checked against both a format limit and
the bytes actually present *before* it is used; every structure is covered by
a CRC-32 that is checked before its fields are trusted; any violation raises
:class:`~pyllmcodec.errors.FormatError` saying what and where.  Parsing never
allocates more than the input's size plus a format limit.
"""

from __future__ import annotations

import bisect
import json
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple, Protocol

from .constants import (
    CM_KINDS,
    CM_MAX_LONG,
    CM_MAX_LONG_TABLE_BITS,
    CM_MAX_TABLE_BITS,
    CM_MIN_TABLE_BITS,
    ENTRY_FULL_CHUNK,
    ENTRY_METHOD_MASK,
    ENTRY_NEXT_ROW,
    FORMAT_VERSION,
    FRAME_MAGIC,
    MAGIC,
    MAX_BATCH_SIZE,
    MAX_BYTE_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_DICTIONARY_SIZE,
    MAX_META_LEN,
    MAX_PRECISION,
    METHOD_NAMES,
    METHOD_STORED,
    MIN_PRECISION,
    MIXER_KINDS,
    TAG_BLOCK,
    TAG_BLOCK_COMPACT,
    TAG_FOOTER,
    TRAILER_MAGIC,
    WAVE_MIXER_KIND,
)
from .errors import FormatError
from .methods import METHODS

__all__ = [
    "BLOCK_OVERHEAD",
    "BLOCK_PREFIX_LEN",
    "FOOTER_FIXED_LEN",
    "FOOTER_PREFIX_LEN",
    "HEADER_FLAG_CM",
    "HEADER_FLAG_CONTEXT",
    "HEADER_FLAG_DEFLATE",
    "HEADER_FLAG_DICTIONARY",
    "HEADER_FLAG_MIXER",
    "HEADER_PREFIX_LEN",
    "MAX_ENTRY_LEN",
    "TRAILER_LEN",
    "ArchiveIndex",
    "ArchiveReader",
    "ArchiveWriter",
    "Block",
    "ChunkEntry",
    "ChunkIndex",
    "Footer",
    "Header",
    "build_meta",
    "cm_table_bits",
    "encode_header",
    "members",
    "parse_header",
]

_HEADER_PREFIX = struct.Struct("<8sBBI")  # magic, version, flags, meta_len
_BLOCK_PREFIX = struct.Struct("<BHHI")  # tag, batch, count, body_len
_FOOTER_PREFIX = struct.Struct("<BI")  # tag, body_len
_FOOTER_FIXED = struct.Struct("<QQ32sI")  # total, chunks, sha256, nblocks
_FOOTER_BLOCK = struct.Struct("<QH")  # block offset, chunk count
_TRAILER = struct.Struct("<QI4s")  # footer offset, footer length, magic
_U32 = struct.Struct("<I")

HEADER_PREFIX_LEN = _HEADER_PREFIX.size  # 14
#: header flag bit 0: the metadata JSON is stored raw-DEFLATE compressed
#: (writers set it when that is shorter: ~600 -> ~400 bytes)
HEADER_FLAG_DEFLATE = 0x01
#: header flag bit 1: chunks are coded through the match model (metadata key
#: ``mixer``, FORMAT.md section 4c).  Set exactly when the key is there, so a
#: reader older than 0.4 refuses such an archive at its header ("unknown header
#: flags") instead of decoding it with the wrong probabilities.
HEADER_FLAG_MIXER = 0x02
#: header flag bit 2: segments are shorter than the model's context (metadata
#: key ``context``, FORMAT.md section 4b); set exactly when the key is there,
#: so a reader older than 0.4 refuses the archive at its header.
HEADER_FLAG_CONTEXT = 0x04
#: header flag bit 3: every chunk was primed with a dictionary (metadata key
#: ``dictionary``, FORMAT.md section 4d); set exactly when the key is there,
#: so a reader older than 0.5 refuses the archive at its header.
HEADER_FLAG_DICTIONARY = 0x08
#: header flag bit 4: chunks are coded through the context-mixing stage
#: (metadata key ``cm``, FORMAT.md section 4f); set exactly when the key is
#: there, so a reader predating the stage refuses the archive at its header.
HEADER_FLAG_CM = 0x10
_KNOWN_FLAGS = (HEADER_FLAG_DEFLATE | HEADER_FLAG_MIXER | HEADER_FLAG_CONTEXT | HEADER_FLAG_DICTIONARY
                | HEADER_FLAG_CM)
#: metadata key -> (the flag set exactly when it is present, the flag's name in errors)
_KEY_FLAGS = {"mixer": (HEADER_FLAG_MIXER, "match-model"), "context": (HEADER_FLAG_CONTEXT, "context"),
              "dictionary": (HEADER_FLAG_DICTIONARY, "dictionary"), "cm": (HEADER_FLAG_CM, "context-mixing")}
BLOCK_PREFIX_LEN = _BLOCK_PREFIX.size  # 9
TRAILER_LEN = _TRAILER.size  # 16
#: footer bytes that do not depend on the number of blocks (prefix, fixed body, crc)
FOOTER_FIXED_LEN = _FOOTER_PREFIX.size + _FOOTER_FIXED.size + 4  # 61
FOOTER_PREFIX_LEN = _FOOTER_PREFIX.size  # 5: tag, body length
#: the most bytes one index entry takes in either layout: 3 varints bounded by
#: the u16 row (3 bytes) and lengths < 2^28 (4 bytes each), + method + crc32
MAX_ENTRY_LEN = 3 + 4 + 4 + 1 + 4  # 16
BLOCK_TAGS = (TAG_BLOCK, TAG_BLOCK_COMPACT)
#: per-block bytes besides its entries: prefix + crc32 + the footer's (offset, count)
BLOCK_OVERHEAD = BLOCK_PREFIX_LEN + 4 + _FOOTER_BLOCK.size  # 23


class ChunkEntry(NamedTuple):
    """One chunk's index entry: where it sat in its wave, its sizes, how it
    was coded and the CRC-32 of its raw bytes."""

    row: int
    raw_len: int
    coded_len: int
    method: int
    crc: int


@dataclass(frozen=True)
class Header:
    """The parsed, validated header of an archive."""

    version: int
    meta: dict[str, Any]
    size: int  # bytes the header occupies, crc included
    #: a compact or headerless frame's parameters (:class:`pyllmcodec.frames.FrameParams`),
    #: None for a full archive; such a header's ``meta`` has no model keys until it
    #: is bound to a model (:func:`pyllmcodec.session.bind_frame`)
    frame: Any = None

    @property
    def tokens(self) -> bool:
        """The archive is token-level (its model has a tokenizer)."""
        return "tokenizer" in self.meta

    @property
    def dictionary_digest(self) -> str | None:
        """The hex SHA-256 of the dictionary the chunks were primed with (a
        frame: its first 8 bytes), or None."""
        d = self.meta.get("dictionary")
        return None if d is None else str(d["sha256"])

    @property
    def cm_kind(self) -> int:
        """The context-mixing stage's kind (FORMAT.md section 4f): 1 (cm1), 2 (cm2), 3 (cm3), 0 when none."""
        cm = self.meta.get("cm")
        return 0 if cm is None else CM_KINDS[str(cm["kind"])]

    @property
    def cm_long(self) -> int:
        """The context-mixing stage's long mode: blocks per group whose state
        carries from block to block (FORMAT.md section 4f), 0 when off."""
        cm = self.meta.get("cm")
        return 0 if cm is None else int(cm.get("long", 0))

    @property
    def rows_share_state(self) -> bool:
        """Whether a wave's model-coded chunks learn from each other (the
        context-mixing stage, the wave match: FORMAT.md sections 4f, 4g), so
        that they decode together."""
        mixer = self.meta.get("mixer")
        return "cm" in self.meta or (mixer is not None and mixer.get("kind") == WAVE_MIXER_KIND)

    # typed views of the validated metadata
    @property
    def model_name(self) -> str:
        return str(self.meta["model"]["name"])

    @property
    def model_sha256(self) -> str:
        return str(self.meta["model"]["sha256"])

    @property
    def fingerprint(self) -> dict[str, str]:
        return dict(self.meta["fingerprint"])

    @property
    def probe_digest(self) -> str:
        return str(self.meta["probe"]["digest"])

    @property
    def probe_batch(self) -> int:
        return int(self.meta["probe"]["batch"])

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @property
    def batch_size(self) -> int:
        return int(self.meta["batch_size"])

    @property
    def precision(self) -> int:
        return int(self.meta["precision"])

    @property
    def pad_token(self) -> int:
        return int(self.meta["pad_token"])

    @property
    def prime(self) -> int:
        """Silent steps per segment after the first (0: chunks fit the context)."""
        return int(self.meta.get("prime", 0))

    @property
    def context(self) -> int:
        """The segments' length: ``model.max_context`` unless the header says less."""
        # an unbound frame's header (pyllmcodec.frames) does not know its model's context yet
        return int(self.meta.get("context", self.meta["model"].get("max_context", MAX_CHUNK_SIZE)))

    @property
    def mixer_digest(self) -> str | None:
        """The digest of the match model the chunks were coded with, or None."""
        mx = self.meta.get("mixer")
        return None if mx is None else str(mx["digest"])


@dataclass
class Block:
    """One wave's share of an archive: its batch size, entries, and where
    (absolute offset in the archive) its payloads start.  ``entries`` is not
    changed after construction: the prefix sums of its lengths are taken once
    (``coded_starts[k]`` / ``raw_starts[k]``: bytes of the payloads / of the
    raw chunks before entry ``k``; the last item is the block's total)."""

    batch: int
    entries: list[ChunkEntry]
    offset: int  # offset of the block's tag byte
    payload_offset: int  # offset of the first payload byte
    first_chunk: int  # archive-wide index of entries[0]
    coded_starts: list[int] = field(init=False, repr=False, compare=False)
    raw_starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.coded_starts = list(accumulate((e.coded_len for e in self.entries), initial=0))
        self.raw_starts = list(accumulate((e.raw_len for e in self.entries), initial=0))

    @property
    def payload_len(self) -> int:
        return self.coded_starts[-1]

    @property
    def end(self) -> int:
        return self.payload_offset + self.payload_len


@dataclass
class Footer:
    total_len: int
    n_chunks: int
    sha256: bytes | None  # None: a compact frame (no whole-data digest)
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (offset, count)


# ---------------------------------------------------------------- varints


def _put_uvarint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_uvarint(buf: bytes | memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read an unsigned LEB128 of at most 4 bytes (values < 2**28) from
    ``buf[pos:end]``; FormatError if it runs past ``end`` or is longer."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= end:
            raise FormatError(f"truncated varint in {what}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise FormatError(f"non-canonical varint in {what}")
            return value, pos
        shift += 7
    raise FormatError(f"varint too long in {what}")


# ---------------------------------------------------------------- header


def cm_table_bits(wave_bytes: int, most: int = CM_MAX_TABLE_BITS) -> int:
    """The context-mixing stage's table_bits a writer picks for waves of at
    most ``wave_bytes`` bytes: ``bit_length(wave_bytes) + 4``, clamped to
    12..``most`` (at least one bucket of 16 counters per coded byte, and 176
    MiB at 22; bench/studies/cm_stage.py: alice29 1.899 at 20, 1.877 at 22).
    The header records this for the archive's largest wave; each archive's
    rows in a wave get :func:`cm_table_bits` of their own bytes, at most that.
    cm3's long mode counts the bytes of a period of waves, up to
    ``CM_MAX_LONG_TABLE_BITS`` (linux-doc 10 MiB: 1.4096 at 22, 1.3949 at 24)."""
    return max(12, min(most, int(wave_bytes).bit_length() + 4))


def build_meta(
    *,
    model_name: str,
    model_sha256: str,
    vocab_size: int,
    bos: int,
    max_context: int,
    fingerprint: dict[str, str],
    probe_digest: str,
    probe_batch: int,
    probe_version: int,
    probe_steps: int,
    chunk_size: int,
    batch_size: int,
    precision: int,
    pad_token: int,
    writer: str,
    tokenizer: dict[str, Any] | None = None,
    prime: int = 0,
    mixer: dict[str, str] | None = None,
    context: int = 0,
    dictionary: dict[str, Any] | None = None,
    cm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The header metadata as the writer records it (see FORMAT.md).
    ``tokenizer`` (token-level models only) is recorded as is; ``prime`` (the
    silent steps of each segment after the first) only for byte-level chunks
    longer than the context, where it is required; ``mixer`` (``{"kind",
    "digest"}``) when the chunks go through the match model; ``context`` (the
    segments' length) when it is shorter than the model's context and chunks
    are longer than it; ``cm`` (``{"kind", "table_bits"[, "long"]}``) when the chunks
    go through the context-mixing stage."""
    meta = {
        "model": {
            "name": str(model_name),
            "sha256": str(model_sha256),
            "vocab_size": int(vocab_size),
            "bos": int(bos),
            "max_context": int(max_context),
        },
        "fingerprint": {str(k): str(v) for k, v in fingerprint.items()},
        "probe": {
            "version": int(probe_version),
            "batch": int(probe_batch),
            "steps": int(probe_steps),
            "digest": str(probe_digest),
        },
        "chunk_size": int(chunk_size),
        "batch_size": int(batch_size),
        "precision": int(precision),
        "pad_token": int(pad_token),
        "writer": str(writer),
    }
    if tokenizer is not None:
        meta["tokenizer"] = dict(tokenizer)
    if prime:
        meta["prime"] = int(prime)
    if mixer is not None:
        meta["mixer"] = {"kind": str(mixer["kind"]), "digest": str(mixer["digest"])}
    if context:
        meta["context"] = int(context)
    if dictionary is not None:
        meta["dictionary"] = {"sha256": str(dictionary["sha256"]), "size": int(dictionary["size"])}
    if cm is not None:
        meta["cm"] = {"kind": str(cm["kind"]), "table_bits": int(cm["table_bits"]),
                      **({"long": int(cm["long"])} if cm.get("long") else {}),
                      **({"priors": str(cm["priors"])} if cm.get("priors") else {})}
    return meta


def encode_header(meta: dict[str, Any], *, deflate_meta: bool = True) -> bytes:
    """Serialise a header.  The JSON is canonical (sorted keys, no spaces) so
    equal metadata gives equal bytes."""
    _validate_meta(meta)
    blob = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    if len(blob) > MAX_META_LEN:
        raise ValueError(f"header metadata is {len(blob)} bytes, over the {MAX_META_LEN} limit")
    flags = sum(flag for key, (flag, _) in _KEY_FLAGS.items() if key in meta)
    if deflate_meta:
        d = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        packed = d.compress(blob) + d.flush()
        if len(packed) < len(blob):
            flags, blob = flags | HEADER_FLAG_DEFLATE, packed
    head = _HEADER_PREFIX.pack(MAGIC, FORMAT_VERSION, flags, len(blob)) + blob
    return head + _U32.pack(zlib.crc32(head))


def header_len_from_prefix(prefix: bytes | memoryview) -> int:
    """Validate the fixed 14-byte header prefix; return the header's full length."""
    if len(prefix) < HEADER_PREFIX_LEN:
        if bytes(prefix[: len(MAGIC)]) != MAGIC[: len(prefix)]:
            raise FormatError("not a pyllmcodec archive (bad magic)")
        raise FormatError(f"truncated archive: {len(prefix)} bytes, less than a header")
    magic, version, flags, meta_len = _HEADER_PREFIX.unpack_from(prefix)
    if magic != MAGIC:
        raise FormatError("not a pyllmcodec archive (bad magic)")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"unsupported archive format version {version}; this pyllmcodec reads "
            f"version {FORMAT_VERSION} (upgrade pyllmcodec to read newer archives)"
        )
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"unknown header flags 0x{flags:02x} (archive from a newer writer?)")
    if meta_len > MAX_META_LEN:
        raise FormatError(f"header metadata length {meta_len} exceeds the {MAX_META_LEN} limit")
    return HEADER_PREFIX_LEN + meta_len + 4


def _inflate_meta(packed: bytes) -> bytes:
    """Inflate DEFLATE-flagged metadata, never past ``MAX_META_LEN`` bytes."""
    try:
        d = zlib.decompressobj(-15)
        raw = d.decompress(packed, MAX_META_LEN + 1)
    except zlib.error as exc:
        raise FormatError(f"header metadata does not inflate: {exc}") from None
    if len(raw) > MAX_META_LEN:
        raise FormatError(f"header metadata inflates past the {MAX_META_LEN}-byte limit")
    if not d.eof or d.unused_data or d.unconsumed_tail:
        raise FormatError("header metadata: the DEFLATE stream is truncated or has trailing bytes")
    return raw


def parse_header(buf: bytes | memoryview) -> Header:
    """Parse and validate the header at the start of ``buf`` (extra bytes after
    it are ignored)."""
    buf = memoryview(buf)
    size = header_len_from_prefix(buf[:HEADER_PREFIX_LEN])
    if len(buf) < size:
        raise FormatError(f"truncated header: need {size} bytes, have {len(buf)}")
    (crc,) = _U32.unpack_from(buf, size - 4)
    if zlib.crc32(buf[: size - 4]) != crc:
        raise FormatError("header checksum mismatch: the archive header is corrupt")
    raw = bytes(buf[HEADER_PREFIX_LEN : size - 4])
    if buf[9] & HEADER_FLAG_DEFLATE:
        raw = _inflate_meta(raw)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"header metadata is not valid JSON: {exc}") from None
    _validate_meta(meta, error=FormatError)
    for key, (flag, name) in _KEY_FLAGS.items():
        if bool(buf[9] & flag) != (key in meta):
            raise FormatError(f"invalid header: the {name} flag and the metadata key {key!r} disagree")
    return Header(version=FORMAT_VERSION, meta=meta, size=size)


def _validate_meta(meta: Any, error: type[Exception] = ValueError) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise error(f"invalid header metadata: {what}")

    def is_int(x: Any, lo: int, hi: int) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi

    def is_hex(x: Any, n: int) -> bool:
        return isinstance(x, str) and len(x) == n and all(c in "0123456789abcdef" for c in x)

    need(isinstance(meta, dict), "not an object")
    model = meta.get("model")
    need(isinstance(model, dict), "model")
    need(isinstance(model.get("name"), str) and 0 < len(model["name"]) <= 256, "model.name")
    need(isinstance(model.get("sha256"), str) and len(model["sha256"]) <= 128, "model.sha256")
    need(is_int(model.get("vocab_size"), 1, 1 << 24), "model.vocab_size")
    need(is_int(model.get("bos"), 0, 1 << 24), "model.bos")
    need(is_int(model.get("max_context"), 1, 1 << 31), "model.max_context")
    fp = meta.get("fingerprint")
    need(
        isinstance(fp, dict) and all(isinstance(v, str) for v in fp.values()),
        "fingerprint (must map names to strings)",
    )
    probe = meta.get("probe")
    need(isinstance(probe, dict), "probe")
    need(is_int(probe.get("version"), 0, 1 << 16), "probe.version")
    need(is_int(probe.get("batch"), 1, MAX_BATCH_SIZE), "probe.batch")
    need(is_int(probe.get("steps"), 0, 1 << 16), "probe.steps")
    need(is_hex(probe.get("digest"), 64), "probe.digest")
    need(is_int(meta.get("chunk_size"), 1, MAX_CHUNK_SIZE), "chunk_size")
    tok = meta.get("tokenizer")
    context = model["max_context"]  # the segments' length
    if tok is None:
        need(meta["chunk_size"] <= MAX_BYTE_CHUNK_SIZE, f"chunk_size > {MAX_BYTE_CHUNK_SIZE} for a byte-level model")
        if "context" in meta:  # shorter segments than the model's context (canonical: only when it matters)
            need(is_int(meta["context"], 2, model["max_context"] - 1) and meta["chunk_size"] > meta["context"],
                 "context (2 <= context < model.max_context, and chunk_size > context)")
            context = meta["context"]
        dic = meta.get("dictionary")  # primed symbols share the segment (FORMAT.md section 4d)
        primed = dic["size"] if isinstance(dic, dict) and is_int(dic.get("size"), 1, MAX_DICTIONARY_SIZE) else 0
        segmented = meta["chunk_size"] + primed > context
    else:  # token-level: chunk_size is in bytes, max_context in tokens
        need(isinstance(tok, dict) and isinstance(tok.get("sha256"), str), "tokenizer.sha256")
        need("context" not in meta, "context (byte-level archives only)")
        segmented = False
    if segmented:  # coded in segments that start from `prime` symbols of context (scheduler.segment_plan)
        need(is_int(meta.get("prime"), 1, context // 2),
             "prime (chunk_size > context needs 1 <= prime <= context / 2)")
    else:  # one segment per chunk: no prime, in canonical form
        need("prime" not in meta, "prime (only for byte-level chunks longer than the context)")
    mixer = meta.get("mixer")
    if mixer is not None:  # the match model (FORMAT.md section 4c)
        need(isinstance(mixer, dict) and set(mixer) == {"kind", "digest"}, "mixer (must be {kind, digest})")
        need(isinstance(mixer["kind"], str) and mixer["kind"] in MIXER_KINDS,
             f"mixer.kind {str(mixer['kind'])[:32]!r} is not one of {list(MIXER_KINDS)}, the match models this "
             "pyllmcodec runs (upgrade pyllmcodec)")
        need(mixer["kind"] != WAVE_MIXER_KIND or isinstance(tok, dict),
             f"mixer.kind {WAVE_MIXER_KIND!r} (token-level archives only)")
        need(is_hex(mixer["digest"], 16), "mixer.digest (16 hex digits)")
    cm = meta.get("cm")
    if cm is not None:  # the context-mixing stage (FORMAT.md section 4f)
        need(isinstance(cm, dict) and {"kind", "table_bits"} <= set(cm) <= {"kind", "table_bits", "long", "priors"},
             "cm (must be {kind, table_bits[, long][, priors]})")
        need(isinstance(cm["kind"], str) and cm["kind"] in CM_KINDS,
             f"cm.kind {str(cm['kind'])[:32]!r} is not one of {sorted(CM_KINDS)}, the context-mixing stages this "
             "pyllmcodec runs (upgrade pyllmcodec)")
        most = CM_MAX_LONG_TABLE_BITS if cm["kind"] == "cm3" and "long" in cm else CM_MAX_TABLE_BITS
        need(is_int(cm["table_bits"], CM_MIN_TABLE_BITS, most),
             f"cm.table_bits ({CM_MIN_TABLE_BITS}..{CM_MAX_TABLE_BITS}; cm3 in the long mode "
             f"..{CM_MAX_LONG_TABLE_BITS})")
        need("long" not in cm or is_int(cm["long"], 2, CM_MAX_LONG), f"cm.long (2..{CM_MAX_LONG})")
        need("priors" not in cm or (cm["kind"] == "cm3" and is_hex(cm["priors"], 16)),
             "cm.priors (16 hex digits, cm3 only)")
        need(meta.get("tokenizer") is None, "cm (byte-level archives only)")
    dic = meta.get("dictionary")
    if dic is not None:  # every chunk primed with these bytes (FORMAT.md section 4d)
        need(isinstance(dic, dict) and set(dic) == {"sha256", "size"}, "dictionary (must be {sha256, size})")
        need(is_hex(dic["sha256"], 64), "dictionary.sha256 (64 hex digits)")
        need(is_int(dic["size"], 1, MAX_DICTIONARY_SIZE), f"dictionary.size (1..{MAX_DICTIONARY_SIZE} bytes)")
    need(is_int(meta.get("batch_size"), 1, MAX_BATCH_SIZE), "batch_size")
    need(is_int(meta.get("precision"), MIN_PRECISION, MAX_PRECISION), "precision")
    need(is_int(meta.get("pad_token"), 0, 1 << 24), "pad_token")


# ---------------------------------------------------------------- blocks


def encode_entries(entries: Sequence[ChunkEntry], chunk_size: int | None) -> bytes:
    """The entry table of a block: the compact layout when ``chunk_size`` (the
    archive's) is given, else the first layout.  Compact frames
    (:mod:`pyllmcodec.frames`) use the compact one too."""
    body = bytearray()
    last_row = -1
    for e in entries:
        if chunk_size is None:
            _put_uvarint(body, e.row)
            _put_uvarint(body, e.raw_len)
            _put_uvarint(body, e.coded_len)
            body.append(e.method)
        else:
            if not 0 <= e.method <= ENTRY_METHOD_MASK:
                raise ValueError(f"method {e.method} does not fit a compact entry")
            lead = e.method | (ENTRY_FULL_CHUNK if e.raw_len == chunk_size else 0)
            lead |= ENTRY_NEXT_ROW if e.row == last_row + 1 else 0
            body.append(lead)
            if e.row != last_row + 1:
                _put_uvarint(body, e.row)
            if e.raw_len != chunk_size:
                _put_uvarint(body, e.raw_len)
            if e.method != METHOD_STORED:
                _put_uvarint(body, e.coded_len)
            elif e.coded_len != e.raw_len:
                raise ValueError("stored chunk with coded length != raw length")
            last_row = e.row
        body += _U32.pack(e.crc)
    return bytes(body)


def encode_block_header(batch: int, entries: Sequence[ChunkEntry], chunk_size: int | None = None) -> bytes:
    """The bytes of a block up to (not including) its payloads: the compact
    entry layout (tag ``'w'``) when the archive's ``chunk_size`` is given,
    else the first layout (tag ``'W'``)."""
    if not 1 <= batch <= MAX_BATCH_SIZE or not 1 <= len(entries) <= batch:
        raise ValueError(f"bad block geometry: batch={batch}, entries={len(entries)}")
    body = encode_entries(entries, chunk_size)
    tag = TAG_BLOCK if chunk_size is None else TAG_BLOCK_COMPACT
    head = _BLOCK_PREFIX.pack(tag, batch, len(entries), len(body)) + body
    return head + _U32.pack(zlib.crc32(head))


def block_len_from_prefix(prefix: bytes | memoryview, where: int) -> int:
    """Validate a block prefix (after its tag was seen); return the length of
    the block header (prefix + entries + crc)."""
    _tag, batch, count, body_len = _BLOCK_PREFIX.unpack_from(prefix)
    if not 1 <= batch <= MAX_BATCH_SIZE or not 1 <= count <= batch:
        raise FormatError(f"block at offset {where}: bad geometry batch={batch} count={count}")
    if body_len > count * MAX_ENTRY_LEN:
        raise FormatError(f"block at offset {where}: entry table length {body_len} too large")
    return BLOCK_PREFIX_LEN + body_len + 4


def parse_block_header(
    buf: bytes | memoryview, where: int, header: Header, first_chunk: int
) -> Block:
    """Parse a block header (``buf`` holds exactly the block header bytes;
    ``where`` is its offset in the archive, for messages and bookkeeping)."""
    buf = memoryview(buf)
    size = len(buf)
    (crc,) = _U32.unpack_from(buf, size - 4)
    if zlib.crc32(buf[: size - 4]) != crc:
        raise FormatError(f"block at offset {where}: index checksum mismatch (corrupt archive)")
    _tag, batch, count, _body_len = _BLOCK_PREFIX.unpack_from(buf)
    if batch > header.batch_size:
        raise FormatError(
            f"block at offset {where}: wave batch {batch} exceeds the archive's {header.batch_size}"
        )
    end = size - 4
    entries, pos = parse_entries(buf, BLOCK_PREFIX_LEN, end, count, batch, header,
                                 buf[0] == TAG_BLOCK_COMPACT, f"block at offset {where}")
    if pos != end:
        raise FormatError(f"block at offset {where}: {end - pos} stray bytes in its entry table")
    return Block(batch, entries, where, where + size, first_chunk)


def parse_entries(buf: bytes | memoryview, pos: int, end: int, count: int, batch: int, header: Header,
                  compact: bool, where: str) -> tuple[list[ChunkEntry], int]:
    """``count`` entries of a block of ``batch`` rows from ``buf[pos:end]``,
    each checked against the format's rules and ``header``; returns them and
    the position after the last.  ``where`` names the block in errors."""
    entries = []
    last_row = -1
    chunk_size = header.chunk_size
    tokens = header.tokens
    for k in range(count):
        what = f"entry {k} of {where}"
        if compact:  # lead byte, then only what the flags do not imply
            if pos >= end:
                raise FormatError(f"truncated {what}")
            lead = buf[pos]
            pos += 1
            method = lead & ENTRY_METHOD_MASK
            if lead & ENTRY_NEXT_ROW:
                row = last_row + 1
            else:
                row, pos = _get_uvarint(buf, pos, end, what)
                if row == last_row + 1:
                    raise FormatError(f"{what}: row {row} spelled out where the next-row flag says it")
            if lead & ENTRY_FULL_CHUNK:
                raw_len = chunk_size
            else:
                raw_len, pos = _get_uvarint(buf, pos, end, what)
                if raw_len == chunk_size:
                    raise FormatError(f"{what}: raw length {raw_len} spelled out where the full-chunk flag says it")
            if method == METHOD_STORED:
                coded_len = raw_len
            else:
                coded_len, pos = _get_uvarint(buf, pos, end, what)
        else:
            row, pos = _get_uvarint(buf, pos, end, what)
            raw_len, pos = _get_uvarint(buf, pos, end, what)
            coded_len, pos = _get_uvarint(buf, pos, end, what)
            if pos >= end:
                raise FormatError(f"truncated {what}")
            method = buf[pos]
            pos += 1
        if pos + 4 > end:  # both layouts end an entry with the chunk's CRC-32
            raise FormatError(f"truncated {what}")
        (ccrc,) = _U32.unpack_from(buf, pos)
        pos += 4
        if not last_row < row < batch:
            raise FormatError(f"{what}: row {row} out of order or >= batch {batch}")
        last_row = row
        if not 1 <= raw_len <= chunk_size:
            raise FormatError(f"{what}: raw length {raw_len} outside 1..{chunk_size}")
        spec = METHODS.get(method)
        if spec is None:
            raise FormatError(f"{what}: unknown method {method}")
        problem = spec.entry_error(raw_len, coded_len, tokens)
        if problem is not None:
            raise FormatError(f"{what}: {problem}")
        entries.append(ChunkEntry(row, raw_len, coded_len, method, ccrc))
    return entries, pos


# ---------------------------------------------------------------- footer


def encode_footer(total_len: int, n_chunks: int, sha256: bytes, blocks: Sequence[tuple[int, int]]) -> bytes:
    body = _FOOTER_FIXED.pack(total_len, n_chunks, sha256, len(blocks))
    body += b"".join(_FOOTER_BLOCK.pack(off, cnt) for off, cnt in blocks)
    head = _FOOTER_PREFIX.pack(TAG_FOOTER, len(body)) + body
    return head + _U32.pack(zlib.crc32(head))


def footer_len_from_prefix(prefix: bytes | memoryview, where: int, limit: int) -> int:
    _tag, body_len = _FOOTER_PREFIX.unpack_from(prefix)
    if body_len < _FOOTER_FIXED.size or (body_len - _FOOTER_FIXED.size) % _FOOTER_BLOCK.size:
        raise FormatError(f"footer at offset {where}: bad length {body_len}")
    size = _FOOTER_PREFIX.size + body_len + 4
    if size > limit:
        raise FormatError(f"footer at offset {where}: length {size} runs past the archive")
    return size


def parse_footer(buf: bytes | memoryview, where: int) -> Footer:
    buf = memoryview(buf)
    size = len(buf)
    (crc,) = _U32.unpack_from(buf, size - 4)
    if zlib.crc32(buf[: size - 4]) != crc:
        raise FormatError(f"footer at offset {where}: checksum mismatch (corrupt archive)")
    total, n_chunks, digest, nblocks = _FOOTER_FIXED.unpack_from(buf, _FOOTER_PREFIX.size)
    pos = _FOOTER_PREFIX.size + _FOOTER_FIXED.size
    if pos + nblocks * _FOOTER_BLOCK.size != size - 4:
        raise FormatError(f"footer at offset {where}: block count {nblocks} disagrees with its length")
    blocks = [_FOOTER_BLOCK.unpack_from(buf, pos + i * _FOOTER_BLOCK.size) for i in range(nblocks)]
    return Footer(total, n_chunks, bytes(digest), blocks)


def encode_trailer(footer_offset: int, footer_len: int) -> bytes:
    return _TRAILER.pack(footer_offset, footer_len, TRAILER_MAGIC)


# ---------------------------------------------------------------- writer


class ArchiveWriter:
    """Writes an archive front to back through ``write`` (a callable taking
    bytes), one block at a time; keeps only the footer's block table."""

    def __init__(self, write: Callable[[bytes], Any], meta: dict[str, Any], *, compact: bool = True) -> None:
        """``compact=False`` writes the first entry layout (tag ``'W'``), which
        readers before 0.2 need; the compact one saves ~3.5 bytes per chunk."""
        self._write = write
        self._chunk_size: int | None = int(meta["chunk_size"]) if compact else None
        self._pos = 0
        self._blocks: list[tuple[int, int]] = []
        self._n_chunks = 0
        self._total = 0
        self._closed = False
        self._emit(encode_header(meta))

    def _emit(self, data: Any) -> None:
        self._write(data)
        self._pos += len(data)

    @property
    def bytes_written(self) -> int:
        return self._pos

    def write_block(
        self, batch: int, entries: Sequence[ChunkEntry], payloads: Sequence[bytes | memoryview]
    ) -> None:
        if self._closed:
            raise ValueError("archive already finished")
        if len(entries) != len(payloads) or any(
            e.coded_len != len(p) for e, p in zip(entries, payloads)
        ):
            raise ValueError("payloads do not match their entries")
        self._blocks.append((self._pos, len(entries)))
        self._emit(encode_block_header(batch, entries, self._chunk_size))
        for p in payloads:
            self._emit(p)
        self._n_chunks += len(entries)
        self._total += sum(e.raw_len for e in entries)

    def finish(self, sha256: bytes) -> None:
        """Write the footer (totals, whole-data SHA-256, block table) and trailer."""
        if self._closed:
            raise ValueError("archive already finished")
        self._closed = True
        footer = encode_footer(self._total, self._n_chunks, sha256, self._blocks)
        offset = self._pos
        self._emit(footer)
        self._emit(encode_trailer(offset, len(footer)))


# ---------------------------------------------------------------- readers


class Readable(Protocol):
    """A binary file object to read an archive from (anything with ``read``)."""

    def read(self, size: int = -1, /) -> bytes: ...


class ArchiveReader:
    """Reads an archive front to back from a binary file object (no seeking).

    ``header`` is parsed on construction; :meth:`blocks` yields each block with
    its payloads; after the last block :attr:`footer` is set and checked
    against what was read (counts, lengths, offsets, trailer).
    """

    def __init__(self, fh: Readable, *, concatenated: bool = False) -> None:
        self._fh = fh if isinstance(fh, _Pushback) else _Pushback(fh)
        self._pos = 0
        #: accept further archives after this one's trailer (as gzip reads members); see :meth:`next_archive`
        self.concatenated = concatenated
        self._more = False
        prefix = self._read(HEADER_PREFIX_LEN, "header", allow_short=True)
        size = header_len_from_prefix(prefix)
        rest = self._read(size - HEADER_PREFIX_LEN, "header")
        self.header = parse_header(prefix + rest)
        self.footer: Footer | None = None

    def _read(self, n: int, what: str, allow_short: bool = False) -> bytes:
        chunks = []
        got = 0
        while got < n:
            b = self._fh.read(min(n - got, 1 << 20))  # no huge preallocation
            if not b:
                break
            chunks.append(b)
            got += len(b)
        data = b"".join(chunks)
        self._pos += len(data)
        if len(data) < n and not allow_short:
            raise FormatError(f"truncated archive: unexpected end of data in the {what}")
        return data

    @property
    def position(self) -> int:
        return self._pos

    def blocks(self) -> Iterator[tuple[Block, list[bytes]]]:
        header = self.header
        seen: list[tuple[int, int]] = []
        n_chunks = 0
        total = 0
        while True:
            where = self._pos
            tag = self._read(1, "block table")
            if tag[0] == TAG_FOOTER:
                prefix = tag + self._read(_FOOTER_PREFIX.size - 1, "footer")
                expect = FOOTER_FIXED_LEN + len(seen) * _FOOTER_BLOCK.size
                size = footer_len_from_prefix(prefix, where, expect)
                if size != expect:
                    raise FormatError(f"footer at offset {where}: length {size}, expected {expect}")
                footer = parse_footer(prefix + self._read(size - len(prefix), "footer"), where)
                trailer = self._read(TRAILER_LEN, "trailer")
                _check_trailer(trailer, where, size)
                _check_footer(footer, seen, n_chunks, total)
                nxt = self._fh.read(len(MAGIC))
                follows = nxt == MAGIC[: len(nxt)] or nxt[: len(FRAME_MAGIC)] == FRAME_MAGIC
                if nxt and (not self.concatenated or not follows):
                    raise FormatError(
                        f"trailing data after the archive's trailer (offset {self._pos})"
                        + ("" if self.concatenated else ": one archive per file here; a stream reader or "
                           "decompress() decodes concatenated archives")
                    )
                if nxt:
                    self._fh.unread(nxt)
                    self._more = True
                self.footer = footer
                return
            if tag[0] not in BLOCK_TAGS:
                raise FormatError(f"offset {where}: expected a block or the footer, found byte 0x{tag[0]:02x}")
            prefix = tag + self._read(BLOCK_PREFIX_LEN - 1, "block header")
            size = block_len_from_prefix(prefix, where)
            raw = prefix + self._read(size - BLOCK_PREFIX_LEN, "block header")
            block = parse_block_header(raw, where, header, n_chunks)
            payloads = [self._read(e.coded_len, f"payload of chunk {n_chunks + i}")
                        for i, e in enumerate(block.entries)]
            seen.append((where, len(block.entries)))
            n_chunks += len(block.entries)
            total += sum(e.raw_len for e in block.entries)
            yield block, payloads


    def next_archive(self, opener: Callable[..., Any] | None = None) -> Any:
        """After :meth:`blocks` ran out: a reader of the archive that follows
        in the same stream (``concatenated``), or None at the end;
        ``opener(fh, concatenated=True)`` makes it (default: an
        ArchiveReader; :func:`pyllmcodec.frames.open_reader` reads compact
        frames too)."""
        if self.footer is None:
            raise ValueError("read the blocks first")
        if not self._more:
            return None
        return (opener or ArchiveReader)(self._fh, concatenated=True)


class _Pushback:
    """A file object's ``read`` with bytes put back in front (the reader's look-ahead)."""

    def __init__(self, fh: Readable) -> None:
        self._fh, self._back = fh, b""

    def unread(self, data: bytes) -> None:
        self._back = data + self._back

    def read(self, size: int = -1, /) -> bytes:
        if not self._back:
            return self._fh.read(size)
        if size < 0:
            out, self._back = self._back + self._fh.read(), b""
            return out
        out, self._back = self._back[:size], self._back[size:]
        return out


def members(buf: bytes | bytearray | memoryview | Any) -> list[memoryview]:
    """The archives concatenated in ``buf`` (one for a plain archive), found
    from the end: each trailer gives its archive's length.  Every piece is
    still checked whole by :class:`ArchiveIndex`."""
    mv = memoryview(buf).cast("B")
    out: list[memoryview] = []
    end = len(mv)
    while end >= HEADER_PREFIX_LEN + FOOTER_FIXED_LEN + TRAILER_LEN:
        off, flen, magic = _TRAILER.unpack_from(mv, end - TRAILER_LEN)
        start = end - (off + flen + TRAILER_LEN)
        if magic != TRAILER_MAGIC or start < 0 or bytes(mv[start : start + len(MAGIC)]) != MAGIC:
            break  # not a split point
        out.insert(0, mv[start:end])
        end = start
    if end or not out:  # the rest is one piece: ArchiveIndex says what is wrong with it
        out.insert(0, mv[:end])
    return out


def _check_trailer(trailer: bytes, footer_offset: int, footer_len: int) -> None:
    off, flen, magic = _TRAILER.unpack(trailer)
    if magic != TRAILER_MAGIC or off != footer_offset or flen != footer_len:
        raise FormatError("bad archive trailer (corrupt or truncated archive)")


def _check_footer(footer: Footer, blocks: list[tuple[int, int]], n_chunks: int, total: int) -> None:
    if footer.blocks != blocks or footer.n_chunks != n_chunks or footer.total_len != total:
        raise FormatError(
            "footer disagrees with the blocks read "
            f"(footer: {footer.n_chunks} chunks, {footer.total_len} bytes, {len(footer.blocks)} blocks; "
            f"read: {n_chunks} chunks, {total} bytes, {len(blocks)} blocks)"
        )


class ChunkIndex:
    """Where every chunk of an archive held in memory is: the blocks with
    their entries, the totals (``footer``), and lookups by chunk number or
    by offset in the original data.  :class:`ArchiveIndex` reads a full
    archive, :class:`pyllmcodec.frames.FrameIndex` a compact frame."""

    buf: memoryview
    header: Header
    footer: Footer
    blocks: list[Block]

    def _set_starts(self) -> None:
        self._starts: list[int] = []  # raw offset of each block's first chunk
        pos = 0
        for b in self.blocks:
            self._starts.append(pos)
            pos += b.raw_starts[-1]

    @property
    def n_chunks(self) -> int:
        return self.footer.n_chunks

    def locate(self, index: int) -> tuple[int, int]:
        """The number of the block holding chunk ``index`` and the chunk's
        position in that block."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk index {index} out of range (archive has {self.n_chunks} chunks)")
        lo, hi = 0, len(self.blocks) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.blocks[mid].first_chunk <= index:
                lo = mid
            else:
                hi = mid - 1
        return lo, index - self.blocks[lo].first_chunk

    def payload(self, block: Block, k: int) -> memoryview:
        """The coded bytes of entry ``k`` of ``block`` (O(1))."""
        start = block.payload_offset + block.coded_starts[k]
        return self.buf[start : start + block.entries[k].coded_len]

    def chunk_at(self, offset: int) -> int:
        """The chunk that holds byte ``offset`` of the original data."""
        if not 0 <= offset < self.footer.total_len:
            raise IndexError(f"offset {offset} outside the archive's {self.footer.total_len} bytes")
        bi = bisect.bisect_right(self._starts, offset) - 1
        block = self.blocks[bi]
        k = bisect.bisect_right(block.raw_starts, offset - self._starts[bi]) - 1
        return block.first_chunk + k

    def chunk_offset(self, index: int) -> int:
        """Offset of chunk ``index`` in the original data."""
        bi, k = self.locate(index)
        return self._starts[bi] + self.blocks[bi].raw_starts[k]

    def method_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in METHOD_NAMES.values()}
        for b in self.blocks:
            for e in b.entries:
                counts[METHOD_NAMES[e.method]] += 1
        return counts


class ArchiveIndex(ChunkIndex):
    """Random access to an archive held in memory (bytes, bytearray, mmap):
    the header, the footer via the trailer, and every block's entries, found
    through the footer's block table without reading any payload."""

    def __init__(self, buf: bytes | bytearray | memoryview | Any) -> None:
        mv = memoryview(buf).cast("B")
        self.buf = mv
        self.header = parse_header(mv)
        n = len(mv)
        if n < self.header.size + FOOTER_FIXED_LEN + TRAILER_LEN:
            raise FormatError("truncated archive: no room for a footer and trailer")
        off, flen, magic = _TRAILER.unpack_from(mv, n - TRAILER_LEN)
        if magic != TRAILER_MAGIC:
            raise FormatError("truncated archive or trailing garbage: no trailer at the end")
        if off < self.header.size or off + flen != n - TRAILER_LEN or flen < FOOTER_FIXED_LEN:
            parts = members(mv)
            if len(parts) > 1 and all(bytes(p[: len(MAGIC)]) == MAGIC for p in parts):
                raise FormatError(
                    f"this holds {len(parts)} concatenated archives: decompress() and the stream readers "
                    "decode them all; info() and random access take one (split: pyllmcodec.container.members)"
                )
            raise FormatError("bad archive trailer: footer offset/length out of range")
        if mv[off] != TAG_FOOTER:
            raise FormatError(f"no footer at offset {off} named by the trailer")
        footer_len_from_prefix(mv[off : off + _FOOTER_PREFIX.size], off, flen)
        if _FOOTER_PREFIX.unpack_from(mv, off)[1] + _FOOTER_PREFIX.size + 4 != flen:
            raise FormatError("footer length disagrees with the trailer")
        self.footer = parse_footer(mv[off : off + flen], off)
        self.footer_offset = off
        self.blocks: list[Block] = []
        expect = self.header.size
        first = 0
        total = 0
        for i, (boff, count) in enumerate(self.footer.blocks):
            if boff != expect:
                raise FormatError(f"block {i}: footer says offset {boff}, expected {expect}")
            if boff + BLOCK_PREFIX_LEN > off or mv[boff] not in BLOCK_TAGS:
                raise FormatError(f"block {i}: no block at offset {boff}")
            size = block_len_from_prefix(mv[boff : boff + BLOCK_PREFIX_LEN], boff)
            if boff + size > off:
                raise FormatError(f"block {i}: header runs past the footer")
            block = parse_block_header(mv[boff : boff + size], boff, self.header, first)
            if len(block.entries) != count:
                raise FormatError(f"block {i}: footer says {count} chunks, block has {len(block.entries)}")
            if block.end > off:
                raise FormatError(f"block {i}: payloads run past the footer (truncated archive?)")
            self.blocks.append(block)
            first += count
            total += block.raw_starts[-1]
            expect = block.end
        if expect != off:
            raise FormatError(f"{off - expect} unaccounted bytes before the footer")
        if first != self.footer.n_chunks or total != self.footer.total_len:
            raise FormatError("footer totals disagree with the blocks")
        self._set_starts()
