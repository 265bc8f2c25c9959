"""File objects and the stream engines behind them.

:class:`ArchiveFile` is the binary file object behind ``pyllmcodec.LlmzFile``,
``open``, ``stream_reader`` and ``stream_writer`` (in :mod:`pyllmcodec.codec`),
modelled on :mod:`gzip` / :mod:`lzma` and python-zstandard.  Both directions
stream: a writer's :class:`StreamEncoder` buffers at most one wave of input
(``batch_size * chunk_size`` bytes), a reader's :class:`StreamDecoder`
decodes one block (wave) at a time.

This module never imports the codec: the engines drive any object with the
small surface of :class:`WaveCoder` (a Compressor) or :class:`BlockDecoder`
(a Decompressor), so the codec sits above its file objects.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any, Protocol

from .constants import FRAME_MAGIC, TAG_FOOTER
from .container import (
    BLOCK_PREFIX_LEN,
    BLOCK_TAGS,
    FOOTER_PREFIX_LEN,
    HEADER_PREFIX_LEN,
    TRAILER_LEN,
    ArchiveReader,
    ArchiveWriter,
    Block,
    ChunkEntry,
    ChunkIndex,
    Header,
    Readable,
    block_len_from_prefix,
    footer_len_from_prefix,
    header_len_from_prefix,
    parse_block_header,
)
from .errors import ChecksumError, OutputLimitError
from .frames import FrameReader, frame_length, is_frame, open_index, open_reader
from .geometry import Geometry
from .scheduler import CmChain, Progress, plan_waves

__all__ = ["ArchiveFile", "BlockDecoder", "CompressObj", "DecompressObj", "StreamDecoder", "StreamEncoder",
           "WaveCoder", "bytes_view", "file_bytes"]


def file_bytes(fh: Any) -> Any:
    """A file object's whole content as a buffer: mapped when it has a file
    descriptor (an index touches only headers, tables and footer), else read
    (from the start when it seeks, its position kept)."""
    try:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # ValueError: an empty file
        pass
    try:
        seekable = bool(fh.seekable())
    except (AttributeError, ValueError):
        seekable = False
    if not seekable:
        return fh.read()
    where = fh.tell()
    fh.seek(0)
    try:
        return fh.read()
    finally:
        fh.seek(where)


def bytes_view(data: Any) -> memoryview:
    """A flat unsigned-byte view of a bytes-like ``data`` (TypeError otherwise)."""
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"expected a bytes-like object, not {type(data).__name__}") from None
    if not mv.c_contiguous:
        raise TypeError("expected a C-contiguous buffer; pass bytes(x), or numpy.ascontiguousarray(x) for an array")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class WaveCoder(Protocol):
    """What a :class:`StreamEncoder` needs of a compressor
    (:class:`pyllmcodec.codec.Compressor` has it)."""

    @property
    def batch_size(self) -> int:
        """Rows per wave."""

    def geometry_for(self, size: int | None) -> Geometry:
        """The archive geometry for ``size`` input bytes (None: unknown)."""

    def cut(self, data: memoryview, geometry: Geometry) -> list[memoryview]:
        """``data`` (whole cells) cut into chunks."""

    def header_meta(self, geometry: Geometry, probe_batch: int) -> dict[str, Any]:
        """The archive header's metadata."""

    def code_wave(self, chunks: Sequence[memoryview], geometry: Geometry,
                  progress: Progress | None = None, owners: Sequence[int] | None = None,
                  chain: CmChain | None = None, at: dict[int, int] | None = None) -> list[tuple[ChunkEntry, Any]]:
        """Code one wave; one (entry, payload) per chunk (``chain``, ``at``: the long mode's states)."""


class BlockDecoder(Protocol):
    """What a :class:`StreamDecoder` needs of a decompressor
    (:class:`pyllmcodec.codec.Decompressor` has it)."""

    def decode_block(self, header: Header, block: Block, payloads: Sequence[Any],
                     progress: Progress | None = None, *, chain: CmChain | None = None,
                     index: int | None = None) -> list[bytes]:
        """The chunks of one block, each checked against its entry's CRC-32
        (the long mode: ``chain``, the archive's states, and ``index``, the
        block's place in the archive)."""


class StreamEncoder:
    """Push bytes in, archive bytes come out through ``write``: the engine
    behind stream writers and the CLI.  It codes the same waves as
    ``Compressor.compress`` (consecutive runs of ``batch_size`` chunks), so
    the output is byte-identical when ``size`` is right."""

    def __init__(self, coder: WaveCoder, write: Any, size: int | None = None,
                 progress: Progress | None = None) -> None:
        self._coder = coder
        #: told the symbols coded as waves are coded (a progress bar)
        self.progress = progress
        self._write = write
        self._buf = bytearray()
        self._sha = hashlib.sha256()
        self._writer: ArchiveWriter | None = None
        #: the archive's geometry (its chunk size follows ``size`` when known)
        self.geometry = coder.geometry_for(size)
        self._wave_bytes = coder.batch_size * self.geometry.chunk_size
        #: cut chunks not yet coded (fewer than a wave, plus one cell's pieces)
        self._pending: list[memoryview] = []
        #: the long mode's states and the blocks written so far
        self._chain = CmChain(self.geometry.cm_long) if self.geometry.cm_long else None
        self._blocks = 0
        self.bytes_in = 0
        self.finished = False

    @property
    def bytes_out(self) -> int:
        return self._writer.bytes_written if self._writer else 0

    def write(self, data: Any) -> int:
        if self.finished:
            raise ValueError("write to a finished compression stream")
        mv = bytes_view(data)
        self._sha.update(mv)
        self.bytes_in += len(mv)
        self._buf += mv
        B = self._coder.batch_size
        while len(self._buf) >= self._wave_bytes:  # one wave of whole cells at a time
            cells = bytes(self._buf[: self._wave_bytes])
            del self._buf[: self._wave_bytes]
            self._pending += self._coder.cut(memoryview(cells), self.geometry)
            while len(self._pending) >= B:
                self._code(self._pending[:B])
                del self._pending[:B]
        return len(mv)

    def _code(self, chunks: list[memoryview]) -> None:
        if self._writer is None:
            self._writer = ArchiveWriter(self._write, self._coder.header_meta(self.geometry, max(len(chunks), 1)))
        if chunks:
            coded = self._coder.code_wave(chunks, self.geometry, self.progress, chain=self._chain,
                                          at={0: self._blocks})
            self._writer.write_block(len(chunks), [e for e, _ in coded], [p for _, p in coded])
            self._blocks += 1

    def flush(self) -> None:
        """Code everything written so far (the held cells, cut into chunks, in
        waves of up to ``batch_size``), so that it is in the output: a block
        boundary, as zstd's FLUSH_BLOCK.  The archive stays valid and decodes
        the same; flushing mid-stream makes waves shorter (a smaller ratio)
        and the output unlike one-shot ``compress``'s."""
        if self.finished:
            raise ValueError("flush of a finished compression stream")
        rest = bytes(self._buf)
        self._buf = bytearray()
        self._pending += self._coder.cut(memoryview(rest), self.geometry)
        for start, batch in plan_waves(len(self._pending), self._coder.batch_size):
            self._code(self._pending[start : start + batch])
        self._pending = []

    def finish(self) -> None:
        if self.finished:
            return
        self.flush()
        if self._writer is None:  # nothing was written: the header alone (probe at batch 1)
            self._code([])
        assert self._writer is not None
        self._writer.finish(self._sha.digest())
        self.finished = True


class CompressObj:
    """Incremental compression into bytes, as :class:`lzma.LZMACompressor` and
    zstd's ``compressobj``: :meth:`compress` returns what is ready (whole
    waves), :meth:`flush` the rest (``"finish"``: the archive's end; after it
    the object is done) or a block boundary (``"block"``: everything so far,
    the stream goes on)."""

    def __init__(self, coder: WaveCoder, size: int | None = None) -> None:
        self._out = bytearray()
        self._enc = StreamEncoder(coder, self._out.extend, size)

    def _take(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def compress(self, data: Any) -> bytes:
        self._enc.write(data)
        return self._take()

    def flush(self, mode: str = "finish") -> bytes:
        if mode == "block":
            self._enc.flush()
        elif mode == "finish":
            self._enc.finish()
        else:
            raise ValueError("mode must be 'finish' or 'block'")
        return self._take()


class DecompressObj:
    """Incremental decompression of one archive, as :class:`lzma.LZMADecompressor`
    and zstd's ``decompressobj``: :meth:`decompress` takes any piece of the
    archive and returns the data of every block completed so far (each
    chunk's CRC-32 checked; the whole-data SHA-256 when the trailer arrives).
    After the trailer ``eof`` is true and ``unused_data`` holds what followed
    (another archive, for instance).  It feeds the one streaming parser
    (:class:`~pyllmcodec.container.ArchiveReader`) a record at a time, a
    record being the header, a block with its payloads, or the footer with
    the trailer, whose lengths their prefixes give."""

    def __init__(self, decoder: BlockDecoder, max_output_size: int | None = None) -> None:
        self._decoder = decoder
        self._limit = max_output_size
        self._buf = bytearray()
        self._released = 0  # bytes handed to the parser: whole records only
        self._taken = 0  # of those, the bytes the parser has read
        self._reader: ArchiveReader | None = None
        self._blocks: Iterator[tuple[Block, list[bytes]]] | None = None
        self._n_chunks = 0
        self._n_blocks = 0
        self._chain: CmChain | None = None  # the long mode's state
        self._produced = 0
        self._sha = hashlib.sha256()
        self.eof = False
        self.unused_data = b""

    def read(self, size: int = -1, /) -> bytes:  # the parser's file: released bytes only
        end = self._released if size < 0 else min(self._released, self._taken + size)
        out = bytes(self._buf[self._taken : end])
        self._taken = end
        return out

    def _record(self) -> tuple[int, int] | None:
        """``(length, chunks)`` of the record that starts at the released
        end, or None until its prefixes have arrived."""
        p, buf = self._released, self._buf
        have = len(buf) - p
        if self._reader is None:
            if have < HEADER_PREFIX_LEN:
                return None
            return header_len_from_prefix(bytes(buf[p : p + HEADER_PREFIX_LEN])), 0
        if have < 1:
            return None
        tag = buf[p]
        if tag == TAG_FOOTER:
            if have < FOOTER_PREFIX_LEN:
                return None
            return footer_len_from_prefix(bytes(buf[p : p + FOOTER_PREFIX_LEN]), p, 1 << 62) + TRAILER_LEN, 0
        if tag not in BLOCK_TAGS:
            return 1, 0  # the parser names the stray byte
        if have < BLOCK_PREFIX_LEN:
            return None
        size = block_len_from_prefix(bytes(buf[p : p + BLOCK_PREFIX_LEN]), p)
        if have < size:
            return None
        block = parse_block_header(bytes(buf[p : p + size]), p, self._reader.header, self._n_chunks)
        return size + sum(e.coded_len for e in block.entries), len(block.entries)

    def _frame(self, out: list[bytes]) -> bool:
        """A compact frame is one record: decode it whole once it is all
        here.  True when the input so far is (the start of) a frame."""
        p = self._released
        head = bytes(self._buf[p : p + len(FRAME_MAGIC)])
        if len(head) < len(FRAME_MAGIC):
            return len(head) == 0 or FRAME_MAGIC.startswith(head)
        if not is_frame(head):
            return False
        n = frame_length(bytes(self._buf[p:]))
        if n is None or len(self._buf) < p + n:
            return True
        self._released += n
        reader = FrameReader(self)
        for block, payloads in reader.blocks():
            self._produced += sum(e.raw_len for e in block.entries)
            if self._limit is not None and self._produced > self._limit:
                raise OutputLimitError(f"the archive decodes to more than max_output_size={self._limit} bytes")
            out.extend(self._decoder.decode_block(reader.header, block, payloads))
        self.eof = True
        self.unused_data = bytes(self._buf[self._released :])
        return True

    def decompress(self, data: Any) -> bytes:
        if self.eof:
            raise EOFError("the archive has ended (its trailer was read); see unused_data")
        self._buf += bytes_view(data)
        out: list[bytes] = []
        while not self.eof:
            if self._reader is None and self._frame(out):
                break
            rec = self._record()
            if rec is None or len(self._buf) < self._released + rec[0]:
                break
            self._released += rec[0]
            if self._reader is None:
                self._reader = ArchiveReader(self)
                self._blocks = self._reader.blocks()
                period = self._reader.header.cm_long
                self._chain = CmChain(period) if period else None
                continue
            assert self._blocks is not None
            try:
                block, payloads = next(self._blocks)
            except StopIteration:  # the footer and trailer, checked
                assert self._reader.footer is not None
                if self._sha.digest() != self._reader.footer.sha256:
                    raise ChecksumError("the SHA-256 of the decoded data does not match the archive footer") from None
                self.eof = True
                self.unused_data = bytes(self._buf[self._released :])
                break
            self._n_chunks += rec[1]
            self._produced += sum(e.raw_len for e in block.entries)
            if self._limit is not None and self._produced > self._limit:
                raise OutputLimitError(f"the archive decodes to more than max_output_size={self._limit} bytes")
            for chunk in self._decoder.decode_block(self._reader.header, block, payloads, chain=self._chain,
                                                    index=self._n_blocks):
                self._sha.update(chunk)
                out.append(chunk)
            self._n_blocks += 1
        del self._buf[: self._taken]  # what the parser has read is done with
        self._released -= self._taken
        self._taken = 0
        return b"".join(out)


class StreamDecoder:
    """The decoded chunks of the archive read from ``fh``, block by block:
    each chunk's CRC-32 is checked (by the BlockDecoder) before it is
    yielded, the whole-data SHA-256 after the last.  ``max_output_size``:
    OutputLimitError before decoding a block that would take the output past
    it (None: no limit; a stream holds one wave at a time)."""

    def __init__(self, decoder: BlockDecoder, fh: Readable, max_output_size: int | None = None,
                 progress: Progress | None = None) -> None:
        self._decoder = decoder
        self._fh = fh
        self._limit = max_output_size
        self._progress = progress

    def __iter__(self) -> Iterator[bytes]:
        reader: ArchiveReader | FrameReader | None = open_reader(self._fh, concatenated=True)
        produced = 0
        while reader is not None:  # concatenated archives decode one after the other, as gzip members
            sha = hashlib.sha256()
            period = reader.header.cm_long
            chain = CmChain(period) if period else None  # the long mode's state
            for bi, (block, payloads) in enumerate(reader.blocks()):
                produced += sum(e.raw_len for e in block.entries)
                if self._limit is not None and produced > self._limit:
                    raise OutputLimitError(f"the archive decodes to more than max_output_size={self._limit} bytes")
                for chunk in self._decoder.decode_block(reader.header, block, payloads, self._progress, chain=chain,
                                                        index=bi):
                    sha.update(chunk)
                    yield chunk
            assert reader.footer is not None
            if reader.footer.sha256 is not None and sha.digest() != reader.footer.sha256:
                raise ChecksumError("the SHA-256 of the decoded data does not match the archive footer")
            reader = reader.next_archive(open_reader)


class ArchiveFile(io.BufferedIOBase):
    """A ``.llmz`` archive as a binary file object over its engines (the
    public class with paths and defaults is :class:`pyllmcodec.LlmzFile`).

    ``mode`` "rb" decompresses from ``fileobj`` (a binary file object or a
    bytes-like) with ``decompressor``; "wb" compresses into ``fileobj`` with
    ``compressor``.  ``size`` (writing): the number of bytes that will be
    written, if known; it picks the chunk size as ``Compressor.compress``
    does.  Closing a writer writes the archive's footer; an archive
    whose writer was not closed is incomplete (it has no footer) and will not
    decode.  May be shared between threads: like :class:`io.BufferedWriter`,
    each ``read``/``write``/``close`` call holds a lock, so calls do not
    interleave (their order is the threads' business).
    """

    def __init__(
        self,
        fileobj: Any,
        mode: str = "rb",
        *,
        compressor: WaveCoder | None = None,
        decompressor: BlockDecoder | None = None,
        closefd: bool = False,
        size: int | None = None,
        max_output_size: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__()
        self._lock = threading.RLock()
        if mode not in ("rb", "wb"):
            raise ValueError(f"mode must be 'rb' or 'wb', not {mode!r}")
        self._mode = mode
        if isinstance(fileobj, (bytes, bytearray, memoryview)):
            if mode != "rb":
                raise TypeError("can only read from a bytes-like object")
            fileobj = io.BytesIO(fileobj)
        self._fh: IO[bytes] = fileobj
        self._closefd = closefd
        self._aborted = False
        self._pos = 0
        if mode == "rb":
            if decompressor is None:
                raise TypeError("reading needs a decompressor= (pyllmcodec.Decompressor())")
            self._decompressor = decompressor
            self._max_output_size = max_output_size
            self._progress = progress
            self._chunks: Iterator[bytes] | None = None
            self._cur = memoryview(b"")
            self._eof = False
            self._ix: ChunkIndex | None = None
        else:
            if compressor is None:
                raise TypeError("writing needs a compressor= (pyllmcodec.Compressor())")
            # size: the bytes that will be written, if known (picks the chunk size)
            self._encoder = StreamEncoder(compressor, self._fh.write, size, progress)

    # ---------------------------------------------------------- common

    @property
    def mode(self) -> str:
        return self._mode

    def readable(self) -> bool:
        self._check_open()
        return self._mode == "rb"

    def writable(self) -> bool:
        self._check_open()
        return self._mode == "wb"

    def seekable(self) -> bool:
        """A writer can seek forward (the gap is written as zero bytes), as
        :class:`gzip.GzipFile` can; that also makes ``TextIOWrapper`` write a
        byte-order mark at the start, as with ``gzip.open``.  A reader seeks
        anywhere when its source is seekable (bytes, a file): through the
        archive's chunk index it decodes only from the wave that holds the
        target on (each chunk's CRC-32 checked; the whole-data SHA-256 only
        by a read from the start)."""
        if self._mode == "wb":
            return True
        try:
            return bool(self._fh.seekable())
        except (AttributeError, ValueError):
            return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._lock:
            self._check_open()
            if self._mode != "wb":
                return self._seek_read(offset, whence)
            if whence == io.SEEK_CUR:
                offset += self._pos
            elif whence != io.SEEK_SET:
                raise ValueError("a writer seeks with SEEK_SET or SEEK_CUR only")
            if offset < self._pos:
                raise OSError("negative seek in write mode")
            gap = offset - self._pos
            while gap:
                n = min(gap, 1 << 20)
                self._pos += self._encoder.write(bytes(n))
                gap -= n
            return self._pos

    def _index(self) -> ChunkIndex:
        """The archive's index over its bytes: mapped from a file with a
        descriptor, else read (once)."""
        if self._ix is None:
            if not self.seekable():
                raise io.UnsupportedOperation("this reader's source does not seek")
            self._ix = open_index(file_bytes(self._fh))
        return self._ix

    def _seek_read(self, offset: int, whence: int) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += self._index().footer.total_len
        elif whence != io.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        if offset < 0:
            raise OSError(f"negative seek position {offset}")
        if offset == self._pos:
            return offset
        ix = self._index()
        if offset >= ix.footer.total_len:
            self._chunks, self._cur, self._eof = iter(()), memoryview(b""), True
            self._pos = offset
            return offset
        chunk = ix.chunk_at(offset)
        self._chunks = self._indexed_chunks(ix, chunk)
        self._eof = False
        self._cur = memoryview(b"")
        self._next_chunk()
        self._cur = self._cur[offset - ix.chunk_offset(chunk) :]
        self._pos = offset
        return offset

    def _indexed_chunks(self, ix: ChunkIndex, first: int) -> Iterator[bytes]:
        """The chunks from ``first`` on, a block at a time, through the index."""
        bi, k0 = ix.locate(first)
        period = ix.header.cm_long
        chain = CmChain(period) if period else None  # the long mode: from the first block of the group on
        b0 = bi - bi % period if period else bi
        for b in range(b0, len(ix.blocks)):
            block = ix.blocks[b]
            payloads = [ix.payload(block, k) for k in range(len(block.entries))]
            chunks = self._decompressor.decode_block(ix.header, block, payloads, chain=chain, index=b)
            if b >= bi:
                yield from chunks[k0:]
                k0 = 0

    def tell(self) -> int:
        """Position in the uncompressed data."""
        self._check_open()
        return self._pos

    def fileno(self) -> int:
        raise io.UnsupportedOperation("an LlmzFile has no file descriptor")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def close(self) -> None:
        with self._lock:
            self._close()

    def abort(self) -> None:
        """Close without finishing: a writer's archive stays incomplete (no
        footer; it will not decode) and nothing more is coded.  What a
        writer's ``with`` block does when it exits by an exception, and what
        collecting an unclosed writer does: an interrupted or failed run
        stops at once instead of coding the wave it holds."""
        if self.closed:
            return
        self._aborted = True  # close() flushes: not this one
        try:
            io.BufferedIOBase.close(self)
        finally:
            if self._closefd:
                self._fh.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self._mode == "wb":
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # never finish (code a wave) at collection time: an unclosed writer is incomplete
        try:
            self.abort()
        except Exception:
            pass

    def _close(self) -> None:
        if self.closed:
            return
        try:
            if self._mode == "wb":
                self._encoder.finish()
            super().close()  # flushes the underlying file
        finally:
            if self._closefd:
                self._fh.close()

    @property
    def bytes_in(self) -> int:
        """Uncompressed bytes written so far (writers)."""
        return self._encoder.bytes_in if self._mode == "wb" else self._pos

    @property
    def bytes_out(self) -> int:
        """Archive bytes emitted so far (writers; the header appears with the
        first wave)."""
        return self._encoder.bytes_out if self._mode == "wb" else 0

    # ---------------------------------------------------------- writing

    def write(self, data: Any) -> int:
        with self._lock:
            self._check_open()
            if self._mode != "wb":
                raise io.UnsupportedOperation("not open for writing")
            n = self._encoder.write(data)
            self._pos += n
            return n

    def flush(self) -> None:
        """A writer codes everything written so far and flushes the
        underlying file, so a reader of the file gets all of it (a block
        boundary: :meth:`StreamEncoder.flush`; a log writer's ``flush``).
        Flushing often costs ratio: each flush ends the waves held."""
        with self._lock:
            self._check_open()
            if self._mode == "wb" and not self._encoder.finished and not self._aborted:
                self._encoder.flush()
                flush = getattr(self._fh, "flush", None)
                if flush is not None:
                    flush()

    # ---------------------------------------------------------- reading

    def _next_chunk(self) -> bool:
        if self._eof:
            return False
        if self._chunks is None:
            self._chunks = iter(StreamDecoder(self._decompressor, self._fh, self._max_output_size, self._progress))
        for chunk in self._chunks:
            if chunk:
                self._cur = memoryview(chunk)
                return True
        self._eof = True
        return False

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:
            return self._read(size)

    def _read(self, size: int | None) -> bytes:
        self._check_open()
        if self._mode != "rb":
            raise io.UnsupportedOperation("not open for reading")
        if size is None or size < 0:
            parts = [bytes(self._cur)]
            self._cur = memoryview(b"")
            while self._next_chunk():
                parts.append(bytes(self._cur))
                self._cur = memoryview(b"")
            out = b"".join(parts)
            self._pos += len(out)
            return out
        parts = []
        want = size
        while want > 0:
            if not self._cur and not self._next_chunk():
                break
            take = self._cur[:want]
            parts.append(bytes(take))
            self._cur = self._cur[len(take) :]
            want -= len(take)
        out = b"".join(parts)
        self._pos += len(out)
        return out

    def read1(self, size: int = -1) -> bytes:
        with self._lock:
            return self._read1(size)

    def _read1(self, size: int) -> bytes:
        self._check_open()
        if self._mode != "rb":
            raise io.UnsupportedOperation("not open for reading")
        if not self._cur and not self._next_chunk():
            return b""
        n = len(self._cur) if size is None or size < 0 else min(size, len(self._cur))
        out = bytes(self._cur[:n])
        self._cur = self._cur[n:]
        self._pos += n
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(memoryview(b).cast("B")))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def readinto1(self, b: Any) -> int:
        data = self.read1(len(memoryview(b).cast("B")))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)
