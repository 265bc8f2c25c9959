"""Mutations for archives: byte-level, and structure-aware ones that keep the
checksums valid.

A mutant whose header CRC-32 is wrong dies at the first check, so a byte-level
fuzzer alone mostly tests ``zlib.crc32``.  :func:`parse_loose` reads an archive
the way a forgiving reader would (no limit or consistency checks) into plain
Python values, and :func:`build_loose` writes such values back with every
CRC-32, length field, footer table and trailer recomputed -- whatever nonsense
the values hold.  The structural mutations edit those values (a JSON field of
the header set to a boundary value, an entry's row/lengths/method, a block's
batch, payload bits, the footer totals) so the mutant reaches the checks that
come after the checksums, and the model decoder itself.

Nothing here raises: every function returns bytes for any input.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from pyllmcodec.constants import (
    ENTRY_FULL_CHUNK,
    ENTRY_METHOD_MASK,
    ENTRY_NEXT_ROW,
    MAGIC,
    MAX_META_LEN,
    TAG_BLOCK,
    TAG_BLOCK_COMPACT,
    TAG_FOOTER,
    TRAILER_MAGIC,
)

__all__ = ["Loose", "build_loose", "fix_checksums", "mutate", "mutate_bytes", "mutate_structure", "parse_loose"]

#: values that sit on or next to a limit somewhere in the format or the coder
INTERESTING_INTS = [
    0, 1, 2, 3, 7, 8, 9, 12, 13, 15, 16, 30, 31, 32, 33, 47, 48, 63, 64, 127, 128, 255, 256, 257,
    1023, 1024, 4095, 4096, 4097, 65535, 65536, (1 << 20), (1 << 24) - 1, 1 << 24, (1 << 24) + 1,
    (1 << 28) - 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 64, -1, -2,
    -(1 << 31), 10**400,
]
INTERESTING_VALUES: list[Any] = [
    None, True, False, 0.5, 1e308, float("nan"), "", "x" * 300, "test-bigram", "default", "no-such-model",
    "0" * 64, "f" * 64, "ab", [], {}, [1, 2], {"a": 1}, "\ud800", "\u00e9",
]


@dataclass
class Loose:
    """An archive as plain values; any field may hold nonsense."""

    version: int = 1
    flags: int = 0
    meta: Any = None  # the parsed JSON, or the raw bytes if it was not JSON
    blocks: list[tuple[int, list[list[int]], list[bytes]]] = field(default_factory=list)
    # entry layout of every block: the compact one (tag 'w', current writers) or the first ('W')
    compact: bool = True
    # footer: total, chunks, sha256 (None: recompute totals from the blocks)
    total: int | None = None
    n_chunks: int | None = None
    sha256: bytes = b"\0" * 32


def _uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return value, pos


def _put_uvarint(out: bytearray, value: int) -> None:
    value = max(0, int(value)) & ((1 << 63) - 1)
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def parse_loose(data: bytes) -> Loose | None:
    """Forgiving parse; None if not even the header prefix and JSON are there."""
    try:
        if len(data) < 14 or data[:8] != MAGIC:
            return None
        version, flags, meta_len = struct.unpack_from("<BBI", data, 8)
        if 14 + meta_len + 4 > len(data):
            return None
        raw = data[14 : 14 + meta_len]
        if flags & 1:  # DEFLATE-compressed metadata, inflated no further than a reader would
            try:
                raw = zlib.decompressobj(-15).decompress(raw, MAX_META_LEN + 1)
            except zlib.error:
                pass
        try:
            meta: Any = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            meta = bytes(raw)
        lz = Loose(version, flags, meta)
        pos = 14 + meta_len + 4
        n = len(data)
        lz.compact = pos < n and data[pos] == TAG_BLOCK_COMPACT
        chunk_size = meta.get("chunk_size") if isinstance(meta, dict) else None
        while pos + 9 <= n and data[pos] in (TAG_BLOCK, TAG_BLOCK_COMPACT):
            compact = data[pos] == TAG_BLOCK_COMPACT
            _tag, batch, count, body_len = struct.unpack_from("<BHHI", data, pos)
            p, end = pos + 9, min(pos + 9 + body_len, n)
            entries: list[list[int]] = []
            row = -1
            for _ in range(count):
                if compact:
                    lead = data[p] if p < end else 0
                    p += 1
                    method = lead & ENTRY_METHOD_MASK
                    if lead & ENTRY_NEXT_ROW:
                        row += 1
                    else:
                        row, p = _uvarint(data, p, end)
                    if lead & ENTRY_FULL_CHUNK and isinstance(chunk_size, int):
                        raw_len = chunk_size
                    else:
                        raw_len, p = _uvarint(data, p, end)
                    if method == 0:
                        coded_len = raw_len
                    else:
                        coded_len, p = _uvarint(data, p, end)
                    crc = struct.unpack_from("<I", data, p)[0] if p + 4 <= end else 0
                    p += 4
                else:
                    row, p = _uvarint(data, p, end)
                    raw_len, p = _uvarint(data, p, end)
                    coded_len, p = _uvarint(data, p, end)
                    method = data[p] if p < end else 0
                    crc = struct.unpack_from("<I", data, p + 1)[0] if p + 5 <= end else 0
                    p += 5
                entries.append([row, raw_len, coded_len, method, crc])
                if p > end:
                    break
            pos = pos + 9 + body_len + 4
            payloads = []
            for e in entries:
                payloads.append(bytes(data[pos : pos + e[2]]))
                pos += e[2]
            lz.blocks.append((batch, entries, payloads))
            if len(lz.blocks) > 10000:
                break
        if pos + 57 <= n and data[pos] == TAG_FOOTER:
            total, chunks, sha, _nb = struct.unpack_from("<QQ32sI", data, pos + 5)
            lz.total, lz.n_chunks, lz.sha256 = total, chunks, bytes(sha)
        return lz
    except Exception:  # noqa: BLE001 - a fuzzing helper: never the thing that crashes
        return None


def build_loose(lz: Loose) -> bytes:
    """Serialise with every CRC-32, length, footer table and trailer consistent."""
    if isinstance(lz.meta, (bytes, bytearray)):
        blob = bytes(lz.meta)
    else:
        try:
            blob = json.dumps(lz.meta, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError, RecursionError):
            blob = b"{}"
        if lz.flags & 1:
            d = zlib.compressobj(9, zlib.DEFLATED, -15)
            blob = d.compress(blob) + d.flush()
    head = MAGIC + struct.pack("<BBI", lz.version & 0xFF, lz.flags & 0xFF, len(blob)) + blob
    out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
    table = []
    total = chunks = 0
    chunk_size = lz.meta.get("chunk_size") if isinstance(lz.meta, dict) else None
    for batch, entries, payloads in lz.blocks:
        body = bytearray()
        last_row = -1
        for row, raw_len, coded_len, method, crc in entries:
            if lz.compact:  # the writer's rules; a stored entry's coded length follows its raw length
                lead = method & ENTRY_METHOD_MASK
                lead |= (ENTRY_FULL_CHUNK if raw_len == chunk_size else 0) | (ENTRY_NEXT_ROW if row == last_row + 1 else 0)
                body.append(lead)
                if not lead & ENTRY_NEXT_ROW:
                    _put_uvarint(body, row)
                if not lead & ENTRY_FULL_CHUNK:
                    _put_uvarint(body, raw_len)
                if method & ENTRY_METHOD_MASK:
                    _put_uvarint(body, coded_len)
                last_row = row
            else:
                _put_uvarint(body, row)
                _put_uvarint(body, raw_len)
                _put_uvarint(body, coded_len)
                body.append(method & 0xFF)
            body += struct.pack("<I", crc & 0xFFFFFFFF)
            total += max(0, raw_len)
        chunks += len(entries)
        tag = TAG_BLOCK_COMPACT if lz.compact else TAG_BLOCK
        bh = struct.pack("<BHHI", tag, batch & 0xFFFF, len(entries) & 0xFFFF, len(body)) + bytes(body)
        table.append((len(out), len(entries) & 0xFFFF))
        out += bh + struct.pack("<I", zlib.crc32(bh))
        for p in payloads:
            out += p
    total = total if lz.total is None else lz.total
    chunks = chunks if lz.n_chunks is None else lz.n_chunks
    fbody = struct.pack("<QQ32sI", total & (2**64 - 1), chunks & (2**64 - 1), lz.sha256[:32].ljust(32, b"\0"),
                        len(table))
    fbody += b"".join(struct.pack("<QH", off, cnt) for off, cnt in table)
    fh = struct.pack("<BI", TAG_FOOTER, len(fbody)) + fbody
    foff = len(out)
    out += fh + struct.pack("<I", zlib.crc32(fh))
    out += struct.pack("<QI4s", foff, len(out) - foff, TRAILER_MAGIC)
    return bytes(out)


def fix_checksums(data: bytes) -> bytes:
    """Re-serialise ``data`` through the lenient parser (valid CRCs, footer and
    trailer); ``data`` unchanged if it has no parseable header."""
    lz = parse_loose(data)
    if lz is None:
        return data
    lz.total = lz.n_chunks = None
    return build_loose(lz)


# ------------------------------------------------------------------ byte level


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes] | None = None, max_size: int = 1 << 16) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(10)
        n = len(b)
        if op == 0 and n:
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n >= 4:
            v = rng.choice(INTERESTING_INTS) & 0xFFFFFFFF
            fmt = rng.choice(("<B", "<H", "<I"))
            size = struct.calcsize(fmt)
            if n >= size:
                struct.pack_into(fmt, b, rng.randrange(n - size + 1), v & ((1 << (8 * size)) - 1))
        elif op == 3:
            pos = rng.randrange(n + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 4 and n:
            i = rng.randrange(n)
            del b[i : i + rng.randrange(1, 64)]
        elif op == 5 and n:
            del b[rng.randrange(n) :]
        elif op == 6 and n:
            i = rng.randrange(n)
            j = min(n, i + rng.randrange(1, 256))
            pos = rng.randrange(n + 1)
            b[pos:pos] = b[i:j]
        elif op == 7 and others:
            o = rng.choice(others)
            if o:
                i = rng.randrange(len(o))
                j = min(len(o), i + rng.randrange(1, 512))
                pos = rng.randrange(n + 1)
                b[pos : pos + (j - i)] = o[i:j]
        elif op == 8:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
        elif op == 9 and n:
            i = rng.randrange(n)
            b[i : i + 4] = bytes([rng.choice((0, 0xFF, 0x7F, 0x80))]) * 4
    return bytes(b[:max_size])


# ------------------------------------------------------------------ structural


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            out += _leaves(v, path + (i,))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _mutate_meta(meta: Any, rng: random.Random) -> Any:
    if not isinstance(meta, (dict, list)):
        return rng.choice([{}, [], None, 0])
    paths = [p for p in _leaves(meta) if p]
    if not paths:
        return meta
    path = rng.choice(paths)
    r = rng.random()
    if r < 0.1:  # delete the key
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict):
            del parent[path[-1]]
        return meta
    if r < 0.15:  # add a key
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict):
            parent[rng.choice(["extra", "x", "model", "probe", ""])] = rng.choice(INTERESTING_VALUES + INTERESTING_INTS)
        return meta
    pool = INTERESTING_INTS if rng.random() < 0.7 else INTERESTING_VALUES
    return _set(meta, path, rng.choice(pool))


def _scaled(v: int, rng: random.Random) -> int:
    """A number near ``v`` in the ways a careless or hostile writer changes one:
    off by one, doubled or scaled up, halved, or at a field's limit."""
    return rng.choice((v + 1, v - 1, 2 * v, 16 * v, 4096 * v, v // 2, v >> 8, 0, 1, 2, 4096, 65535, 65536,
                       1 << 20, 1 << 24, 1 << 31))


def mutate_numbers(lz: Loose, rng: random.Random) -> Loose:
    """Change one number behind a checksum -- a header number (chunk size,
    batch size, precision, probe batch, prime, context, ...), a block's
    batch, or an entry's row or lengths -- to a plausible neighbour
    (:func:`_scaled`); the builder then makes every checksum valid again.
    These are the resource claims a decoder must bound."""
    meta_paths = [p for p in _leaves(lz.meta) if p] if isinstance(lz.meta, dict) else []
    numeric = [p for p in meta_paths if _get(lz.meta, p) is not None and isinstance(_get(lz.meta, p), int)
               and not isinstance(_get(lz.meta, p), bool)]
    r = rng.random()
    if numeric and (r < 0.5 or not lz.blocks):
        path = rng.choice(numeric)
        _set(lz.meta, path, max(0, _scaled(_get(lz.meta, path), rng)))
    elif lz.blocks:
        bi = rng.randrange(len(lz.blocks))
        batch, entries, payloads = lz.blocks[bi]
        if r < 0.75 or not entries:
            batch = max(1, min(0xFFFF, _scaled(batch, rng)))
        else:
            k, f = rng.randrange(len(entries)), rng.choice((0, 1, 2))  # row, raw_len, coded_len
            entries[k][f] = max(0, min(0xFFFFFFFF, _scaled(entries[k][f], rng)))
        lz.blocks[bi] = (batch, entries, payloads)
    return lz


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def mutate_structure(lz: Loose, rng: random.Random) -> Loose:
    """Edit one or a few fields of a parsed archive (in place; returned)."""
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(14)
        if op >= 12:
            lz = mutate_numbers(lz, rng)
        elif op <= 2:
            lz.meta = _mutate_meta(lz.meta, rng)
        elif op == 3:
            lz.version = rng.choice((0, 2, 255, 1))
            lz.flags = rng.choice((0, 0, 1, 0x80))
            if rng.random() < 0.5:  # the other entry layout: both must parse to the same chunks
                lz.compact = not lz.compact
        elif op <= 6 and lz.blocks:
            bi = rng.randrange(len(lz.blocks))
            batch, entries, payloads = lz.blocks[bi]
            if entries:
                k = rng.randrange(len(entries))
                f = rng.randrange(5)
                entries[k][f] = rng.choice(INTERESTING_INTS + [entries[k][f] + 1, entries[k][f] - 1]) if f != 3 \
                    else rng.choice((0, 1, 2, 3, 4, 5, 6, 63, 255))
                entries[k][f] = max(0, entries[k][f]) if f != 4 else entries[k][f] & 0xFFFFFFFF
                if f == 2 and rng.random() < 0.7:  # keep the payload consistent with the new length
                    p = payloads[k]
                    n = min(entries[k][2], 1 << 16)
                    payloads[k] = (p + bytes(rng.randrange(256) for _ in range(max(0, n - len(p)))))[:n]
            lz.blocks[bi] = (batch, entries, payloads)
        elif op == 7 and lz.blocks:
            bi = rng.randrange(len(lz.blocks))
            batch, entries, payloads = lz.blocks[bi]
            lz.blocks[bi] = (rng.choice(INTERESTING_INTS[:22] + [batch + 1, batch - 1]) & 0xFFFF, entries, payloads)
        elif op == 8 and lz.blocks:  # flip bits in a payload: exercises the model decoder on garbage
            bi = rng.randrange(len(lz.blocks))
            batch, entries, payloads = lz.blocks[bi]
            if payloads:
                k = rng.randrange(len(payloads))
                p = bytearray(payloads[k])
                if p:
                    for _ in range(rng.randrange(1, 4)):
                        p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
                    if rng.random() < 0.3:
                        del p[rng.randrange(len(p)) :]
                        entries[k][2] = len(p)
                payloads[k] = bytes(p)
        elif op == 9 and lz.blocks:  # drop, duplicate or swap blocks
            i, j = rng.randrange(len(lz.blocks)), rng.randrange(len(lz.blocks))
            r = rng.randrange(3)
            if r == 0:
                del lz.blocks[i]
            elif r == 1:
                lz.blocks.insert(j, lz.blocks[i])
            else:
                lz.blocks[i], lz.blocks[j] = lz.blocks[j], lz.blocks[i]
        elif op == 10 and lz.blocks:  # drop or duplicate an entry
            bi = rng.randrange(len(lz.blocks))
            batch, entries, payloads = lz.blocks[bi]
            if entries:
                k = rng.randrange(len(entries))
                if rng.random() < 0.5:
                    del entries[k], payloads[k]
                else:
                    entries.insert(k, list(entries[k]))
                    payloads.insert(k, payloads[k])
        else:  # footer: totals, sha
            r = rng.randrange(3)
            if r == 0:
                lz.total = rng.choice(INTERESTING_INTS) & (2**64 - 1)
            elif r == 1:
                lz.n_chunks = rng.choice(INTERESTING_INTS) & (2**64 - 1)
            else:
                lz.sha256 = bytes(rng.randrange(256) for _ in range(32))
    return lz


def mutate(data: bytes, rng: random.Random, others: list[bytes] | None = None, max_size: int = 1 << 16) -> bytes:
    """One mutant of ``data``: structural (checksums kept valid) about half the
    time when ``data`` parses, else byte-level, then sometimes re-checksummed."""
    if others and rng.random() < 0.03:  # concatenated archives (decoded as gzip decodes members)
        return (data + rng.choice(others))[:max_size]
    if rng.random() < 0.5:
        lz = parse_loose(data)
        if lz is not None:
            lz.total = lz.n_chunks = None  # footer totals follow the blocks unless mutated
            return build_loose(mutate_structure(lz, rng))[:max_size]
    out = mutate_bytes(data, rng, others, max_size)
    if rng.random() < 0.4:
        out = fix_checksums(out)[:max_size]
    return out
