"""The container format: layout, golden bytes, and hostile-input parsing."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyllmcodec.constants import (
    ENTRY_FULL_CHUNK,
    ENTRY_NEXT_ROW,
    FORMAT_VERSION,
    MAGIC,
    MAX_BYTE_CHUNK_SIZE,
    MAX_PRECISION,
    METHOD_DEFLATE,
    METHOD_MODEL,
    METHOD_STORED,
    MIN_PRECISION,
    TRAILER_MAGIC,
)
from pyllmcodec.container import (
    HEADER_FLAG_DEFLATE,
    HEADER_PREFIX_LEN,
    ArchiveIndex,
    ArchiveReader,
    ArchiveWriter,
    ChunkEntry,
    _get_uvarint,
    _put_uvarint,
    build_meta,
    encode_header,
    parse_header,
)
from pyllmcodec.errors import FormatError


def make_meta(**over):
    kw = dict(
        model_name="test-bigram",
        model_sha256="ab" * 32,
        vocab_size=256,
        bos=256,
        max_context=4096,
        fingerprint={"backend": "numpy-fake"},
        probe_digest="cd" * 32,
        probe_batch=2,
        probe_version=1,
        probe_steps=48,
        chunk_size=8,
        batch_size=2,
        precision=30,
        pad_token=256,
        writer="pyllmcodec test",
    )
    kw.update(over)
    return build_meta(**kw)


def stored_archive(data: bytes, chunk: int = 8, batch: int = 2, compact: bool = True) -> bytes:
    """An archive of stored chunks in the standard schedule (no model needed)."""
    out = bytearray()
    w = ArchiveWriter(out.extend, make_meta(chunk_size=chunk, batch_size=batch), compact=compact)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for s in range(0, len(chunks), batch):
        wave = chunks[s : s + batch]
        entries = [ChunkEntry(r, len(c), len(c), METHOD_STORED, zlib.crc32(c)) for r, c in enumerate(wave)]
        w.write_block(len(wave), entries, wave)
    w.finish(hashlib.sha256(data).digest())
    return bytes(out)


DATA = b"0123456789abcdefghijklmnopqrstuvwxyz!"  # 37 bytes: 5 chunks of 8, 3 waves of 2


def test_layout_starts_with_magic_and_version():
    blob = stored_archive(DATA)
    assert blob[:8] == MAGIC
    assert blob[8] == FORMAT_VERSION
    assert blob[-4:] == TRAILER_MAGIC


def test_golden_stored_archive():
    # Pins the byte layout of container v1.  If this changes, the format changed:
    # bump FORMAT_VERSION and update docs/FORMAT.md, don't just update the hash.
    blob = stored_archive(DATA)
    assert blob[9] == HEADER_FLAG_DEFLATE  # the writer deflates the metadata
    assert len(blob) == GOLDEN_LEN
    assert hashlib.sha256(blob).hexdigest() == GOLDEN_SHA256


GOLDEN_LEN = 424  # 438 with the first entry layout, 641 with the plain-JSON header too (below)
GOLDEN_SHA256 = "6ec139a6b8fd663f5a1db63dfec538b7908ad827517fde0e10b9821d7891fb22"


def test_first_entry_layout_still_reads():
    # the first block layout (tag 'W', every entry field spelled out), pinned: it must keep decoding
    old = stored_archive(DATA, compact=False)
    assert len(old) == 438
    assert hashlib.sha256(old).hexdigest() == "00ef063e4ee7a2f5a7ca6f47456234db66b4f2a9116cce65f6468c2152225c9b"
    new = stored_archive(DATA)
    assert [b.entries for b in ArchiveIndex(old).blocks] == [b.entries for b in ArchiveIndex(new).blocks]
    assert b"".join(p for _, ps in ArchiveReader(io.BytesIO(old)).blocks() for p in ps) == DATA


def test_plain_json_header_layout_still_reads(monkeypatch):
    # the first v1 layout (flags 0: plain JSON metadata), pinned: it must keep decoding
    import functools

    from pyllmcodec import container

    monkeypatch.setattr(container, "encode_header", functools.partial(encode_header, deflate_meta=False))
    old = stored_archive(DATA, compact=False)
    monkeypatch.undo()
    assert len(old) == 641
    assert hashlib.sha256(old).hexdigest() == "37ad79d0c0f80d5d83f78107cb29d56aa732f5c12b2b2ac36b59f596c0602e57"
    assert old[9] == 0
    ix = ArchiveIndex(old)
    assert ix.header.meta == parse_header(stored_archive(DATA)).meta
    assert b"".join(p for _, ps in ArchiveReader(io.BytesIO(old)).blocks() for p in ps) == DATA


def test_deflated_header_is_smaller():
    meta = make_meta()
    plain = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    assert len(encode_header(meta)) < HEADER_PREFIX_LEN + len(plain) + 4


@pytest.mark.parametrize("packed,why", [
    (b"\xff\xff\xff", "does not inflate"),
    (zlib.compress(b'{"a":1}')[2:-4][:-1], "truncated"),  # cut short
    (zlib.compressobj(9, zlib.DEFLATED, -15).compress(b"{}") + b"", "truncated"),  # no final block
])
def test_bad_deflated_meta_is_a_format_error(packed, why):
    head = struct.pack("<8sBBI", MAGIC, FORMAT_VERSION, HEADER_FLAG_DEFLATE, len(packed)) + packed
    with pytest.raises(FormatError, match=why):
        parse_header(head + struct.pack("<I", zlib.crc32(head)))


def test_deflated_meta_bomb_is_refused_without_inflating_it_all():
    d = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = d.compress(b" " * (8 << 20)) + d.flush()  # 8 MiB of spaces in ~8 KB
    head = struct.pack("<8sBBI", MAGIC, FORMAT_VERSION, HEADER_FLAG_DEFLATE, len(bomb)) + bomb
    with pytest.raises(FormatError, match="limit"):
        parse_header(head + struct.pack("<I", zlib.crc32(head)))


def test_header_roundtrip():
    meta = make_meta()
    raw = encode_header(meta)
    h = parse_header(raw + b"trailing")
    assert h.meta == meta and h.size == len(raw)
    assert h.model_name == "test-bigram" and h.chunk_size == 8 and h.batch_size == 2
    assert h.precision == 30 and h.pad_token == 256 and h.probe_batch == 2


def test_header_is_canonical():
    assert encode_header(make_meta()) == encode_header(dict(reversed(list(make_meta().items()))))


@pytest.mark.parametrize(
    "over",
    [
        {"chunk_size": 0},
        {"chunk_size": 5000},  # > max_context
        {"batch_size": 0},
        {"precision": 33},
        {"precision": 32},
        {"precision": 1},
        {"probe_digest": "zz" * 32},
        {"model_name": ""},
    ],
)
def test_bad_meta_is_refused_on_write(over):
    with pytest.raises(ValueError):
        encode_header(make_meta(**over))


def test_precision_range_is_the_cores():
    """constants repeats the core's range so that the container needs no
    native build; the two must not drift apart."""
    core = pytest.importorskip("pyllmcodec.core")
    assert (MIN_PRECISION, MAX_PRECISION) == (core.MIN_PRECISION, core.MAX_PRECISION)


@pytest.mark.parametrize("precision", [MIN_PRECISION - 1, MAX_PRECISION + 1])
def test_header_with_a_precision_the_core_cannot_run_is_refused(precision):
    meta = make_meta()
    meta["precision"] = precision  # past encode_header's check: as a hostile writer would
    raw = _rebuild_header(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(FormatError, match="precision"):
        parse_header(raw)
    for ok in (MIN_PRECISION, MAX_PRECISION):
        assert parse_header(encode_header(make_meta(precision=ok))).precision == ok


def test_varint_roundtrip():
    for v in [0, 1, 127, 128, 300, 2**14, 2**21 - 1, 2**27]:
        b = bytearray()
        _put_uvarint(b, v)
        assert _get_uvarint(b, 0, len(b), "x") == (v, len(b))
    with pytest.raises(FormatError):
        _get_uvarint(b"\x80\x80", 0, 2, "x")  # truncated
    with pytest.raises(FormatError):
        _get_uvarint(b"\x80\x80\x80\x80\x01", 0, 5, "x")  # too long
    with pytest.raises(FormatError):
        _get_uvarint(b"\x81\x00", 0, 2, "x")  # non-canonical


def test_index_and_reader_agree():
    blob = stored_archive(DATA)
    ix = ArchiveIndex(blob)
    assert ix.n_chunks == 5 and len(ix.blocks) == 3 and ix.footer.total_len == len(DATA)
    assert [b.batch for b in ix.blocks] == [2, 2, 1]
    assert [e.row for b in ix.blocks for e in b.entries] == [0, 1, 0, 1, 0]
    assert ix.locate(3) == (1, 1) and ix.chunk_offset(3) == 24
    assert bytes(ix.payload(ix.blocks[2], 0)) == DATA[32:]
    r = ArchiveReader(io.BytesIO(blob))
    got = [(b.batch, [bytes(p) for p in ps]) for b, ps in r.blocks()]
    assert [g[0] for g in got] == [2, 2, 1]
    assert b"".join(b"".join(ps) for _, ps in got) == DATA
    assert r.footer is not None and r.footer.sha256 == hashlib.sha256(DATA).digest()


def test_index_offsets_in_a_large_wave():
    """payload and chunk_offset read per-block prefix sums: every chunk of a
    wave of 300 rows (uneven last chunk, a short last wave) lands where the
    data has it."""
    data = bytes(range(256)) * 5 + b"end"  # 1283 bytes: 320 chunks of 4 and one of 3, waves of 300 and 21
    ix = ArchiveIndex(stored_archive(data, chunk=4, batch=300))
    assert [len(b.entries) for b in ix.blocks] == [300, 21]
    for i in range(ix.n_chunks):
        bi, k = ix.locate(i)
        assert ix.chunk_offset(i) == 4 * i
        assert bytes(ix.payload(ix.blocks[bi], k)) == data[4 * i : 4 * i + 4]
    assert [b.payload_len for b in ix.blocks] == [1200, 83]


def test_empty_archive():
    blob = stored_archive(b"")
    ix = ArchiveIndex(blob)
    assert ix.n_chunks == 0 and ix.blocks == [] and ix.footer.total_len == 0
    assert list(ArchiveReader(io.BytesIO(blob)).blocks()) == []


def _parse_both(blob: bytes) -> None:
    ArchiveIndex(blob)
    r = ArchiveReader(io.BytesIO(blob))
    for _ in r.blocks():
        pass


def test_every_truncation_is_a_format_error():
    blob = stored_archive(DATA)
    for n in range(len(blob)):
        with pytest.raises(FormatError):
            ArchiveIndex(blob[:n])
        with pytest.raises(FormatError):
            _parse_both(blob[:n])


def test_every_structural_bit_flip_is_detected():
    """Flipping any bit outside the stored payloads (header, block headers,
    footer, trailer) raises FormatError from both parsers.  Payload bytes are
    protected by the per-chunk CRC-32 instead (tested in test_codec)."""
    blob = stored_archive(DATA)
    ix = ArchiveIndex(blob)
    payload = set()
    for b in ix.blocks:
        payload.update(range(b.payload_offset, b.end))
    for pos in range(len(blob)):
        if pos in payload:
            continue
        for bit in (0, 3, 7):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            with pytest.raises(FormatError):
                ArchiveIndex(bytes(bad))
            with pytest.raises(FormatError):
                _parse_both(bytes(bad))


def test_trailing_garbage_is_refused():
    blob = stored_archive(DATA)
    with pytest.raises(FormatError):
        ArchiveIndex(blob + b"\0")


def test_messages_say_what_is_wrong():
    with pytest.raises(FormatError, match="bad magic"):
        ArchiveIndex(b"PK\x03\x04" + b"\0" * 100)
    blob = bytearray(stored_archive(DATA))
    blob[8] = 9
    with pytest.raises(FormatError, match="version 9"):
        ArchiveIndex(bytes(blob))


def _rebuild_header(meta_bytes: bytes) -> bytes:
    head = struct.pack("<8sBBI", MAGIC, FORMAT_VERSION, 0, len(meta_bytes)) + meta_bytes
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.parametrize(
    "meta_bytes",
    [b"", b"[]", b"{}", b"not json", b"[" * 100000 + b"]" * 100000, b'{"model": 1}', b"\xff\xfe"],
)
def test_hostile_meta_with_valid_crc(meta_bytes):
    with pytest.raises(FormatError):
        parse_header(_rebuild_header(meta_bytes))


def test_huge_meta_length_is_refused_before_reading():
    head = struct.pack("<8sBBI", MAGIC, FORMAT_VERSION, 0, 0xFFFFFFFF)
    with pytest.raises(FormatError, match="limit"):
        ArchiveReader(io.BytesIO(head))


def _block_bytes(batch, entries_raw: bytes, count: int, tag: int = 0x57) -> bytes:
    head = struct.pack("<BHHI", tag, batch, count, len(entries_raw)) + entries_raw
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.parametrize(
    "batch,count,entries,why",
    [
        (2, 1, bytes([2, 8, 8, METHOD_STORED]) + b"\0" * 4, "row"),  # row >= batch
        (2, 2, bytes([1, 8, 8, 0]) + b"\0" * 4 + bytes([0, 8, 8, 0]) + b"\0" * 4, "order"),
        (2, 1, bytes([0, 9, 9, METHOD_STORED]) + b"\0" * 4, "raw length"),  # > chunk_size
        (2, 1, bytes([0, 8, 7, METHOD_STORED]) + b"\0" * 4, "stored"),
        (2, 1, bytes([0, 8, 8, METHOD_MODEL]) + b"\0" * 4, "coded length"),
        (2, 1, bytes([0, 8, 9, METHOD_DEFLATE]) + b"\0" * 4, "coded length"),
        (2, 1, bytes([0, 8, 8, 7]) + b"\0" * 4, "method"),
        (3, 1, bytes([0, 8, 8, METHOD_STORED]) + b"\0" * 4, "exceeds"),  # batch > archive's
        (2, 1, bytes([0, 8, 8, METHOD_STORED]) + b"\0" * 5, "stray"),
    ],
)
def test_hostile_block_entries_with_valid_crcs(batch, count, entries, why):
    hdr = encode_header(make_meta())
    blob = hdr + _block_bytes(batch, entries, count) + b"x" * 16
    with pytest.raises(FormatError, match=why):
        for _ in ArchiveReader(io.BytesIO(blob)).blocks():
            pass


NEXT, FULL = ENTRY_NEXT_ROW, ENTRY_FULL_CHUNK  # compact lead-byte flags; chunk_size is 8 here


@pytest.mark.parametrize(
    "batch,count,entries,why",
    [
        (2, 1, bytes([METHOD_STORED, 0]) + b"\0" * 4, "spelled out where the next-row"),  # row 0 explicit
        (2, 1, bytes([NEXT | METHOD_STORED, 8]) + b"\0" * 4, "spelled out where the full-chunk"),
        (2, 1, bytes([NEXT | FULL | 7]) + bytes([3]) + b"\0" * 4, "unknown method 7"),
        (2, 1, bytes([NEXT | FULL | METHOD_MODEL, 8]) + b"\0" * 4, "coded length 8 >= raw length"),
        (2, 1, bytes([NEXT | METHOD_DEFLATE, 5, 6]) + b"\0" * 4, "coded length 6 >= raw length 5"),
        (2, 1, bytes([METHOD_STORED, 2, 3]) + b"\0" * 4, "row 2 out of order"),
        (2, 2, bytes([METHOD_STORED, 1, 3]) + b"\0" * 4 + bytes([NEXT | FULL]) + b"\0" * 4, "out of order"),
        (2, 1, bytes([NEXT | FULL | METHOD_STORED]) + b"\0" * 3, "truncated"),  # short crc
        (2, 1, bytes([NEXT | METHOD_STORED, 0x80]) + b"\0" * 4, "varint"),
        (2, 1, bytes([NEXT | FULL | METHOD_STORED]) + b"\0" * 5, "stray"),
        (2, 2, bytes([NEXT | FULL | METHOD_STORED]) + b"\0" * 4, "truncated"),  # second entry missing
    ],
)
def test_hostile_compact_entries_with_valid_crcs(batch, count, entries, why):
    hdr = encode_header(make_meta())
    blob = hdr + _block_bytes(batch, entries, count, tag=0x77) + b"x" * 16
    with pytest.raises(FormatError, match=why):
        for _ in ArchiveReader(io.BytesIO(blob)).blocks():
            pass


@st.composite
def _entries(draw):
    chunk = draw(st.sampled_from([8, 127, 128, 1024, 6144, MAX_BYTE_CHUNK_SIZE]))
    batch = draw(st.integers(1, 300))
    rows = sorted(draw(st.sets(st.integers(0, batch - 1), min_size=1, max_size=min(batch, 40))))
    out = []
    for r in rows:
        raw = draw(st.one_of(st.just(chunk), st.integers(1, chunk)))
        method = draw(st.sampled_from([METHOD_STORED, METHOD_MODEL, METHOD_DEFLATE, 4, 5]))
        coded = raw if method == METHOD_STORED or raw == 1 else draw(st.integers(1, raw - 1))
        if raw == 1 and method != METHOD_STORED:
            method = METHOD_STORED
        out.append(ChunkEntry(r, raw, coded, method, draw(st.integers(0, 2**32 - 1))))
    return chunk, batch, out


@settings(max_examples=200, deadline=None)
@given(_entries())
def test_compact_entries_round_trip_and_are_never_longer(case):
    from pyllmcodec.container import encode_block_header, parse_block_header

    chunk, batch, entries = case
    header = parse_header(encode_header(make_meta(chunk_size=chunk, batch_size=300, max_context=1 << 20)))
    compact = encode_block_header(batch, entries, chunk)
    first = encode_block_header(batch, entries)
    assert compact[0] == 0x77 and first[0] == 0x57
    for raw in (compact, first):
        assert parse_block_header(raw, 0, header, 0).entries == entries
    assert len(compact) <= len(first)  # each field is left out or written as before; the lead is the method byte


def test_compact_entry_of_a_typical_model_chunk_is_seven_bytes():
    from pyllmcodec.container import encode_block_header

    e = [ChunkEntry(r, 1024, 240, METHOD_MODEL, 0xDEADBEEF) for r in range(256)]
    assert len(encode_block_header(256, e, 1024)) - 13 == 7 * 256  # lead + coded_len varint + crc
    assert len(encode_block_header(256, e)) - 13 == 128 * 10 + 128 * 11  # rows >= 128 take 2 bytes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700), st.integers(0, 640))
def test_random_splices_never_crash(junk, pos):
    """Any bytes: either a valid archive or FormatError -- never another exception."""
    blob = stored_archive(DATA)
    bad = blob[:pos] + junk + blob[pos + len(junk) :]
    for parse in (ArchiveIndex, _parse_both):
        try:
            parse(bad)
        except FormatError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_magic(junk):
    for parse in (ArchiveIndex, _parse_both):
        try:
            parse(MAGIC + junk)
        except FormatError:
            pass


def test_header_prefix_len():
    assert HEADER_PREFIX_LEN == 14
