"""File objects: :func:`open`, :func:`stream_reader`, :func:`stream_writer`.

Modelled on :mod:`gzip` / :mod:`lzma` (``open`` with binary and text modes)
and python-zstandard (``stream_reader`` / ``stream_writer`` on a compressor).
Both directions stream: a writer buffers at most one wave of input
(``batch_size * chunk_size`` bytes), a reader decodes one wave at a time.
"""

from __future__ import annotations

import builtins
import io
import os
import threading
from collections.abc import Iterator
from typing import IO, Any

from .codec import Compressor, Decompressor

__all__ = ["LlmzFile", "open", "stream_reader", "stream_writer"]


class LlmzFile(io.BufferedIOBase):
    """A ``.llmz`` archive as a binary file object.

    ``mode`` "rb" decompresses from ``fileobj`` (a binary file object or a
    bytes-like); "wb" compresses into ``fileobj``.  Use :func:`open` for paths.
    Not seekable.  ``size`` (writing): the number of bytes that will be
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
        compressor: Compressor | None = None,
        decompressor: Decompressor | None = None,
        closefd: bool = False,
        size: int | None = None,
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
        self._pos = 0
        if mode == "rb":
            self._decompressor = decompressor or Decompressor()
            self._chunks: Iterator[bytes] | None = None
            self._cur = memoryview(b"")
            self._eof = False
        else:
            # size: the bytes that will be written, if known (picks the chunk size)
            self._encoder = (compressor or Compressor())._stream_encoder(self._fh.write, size)

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
        return False

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

    def write(self, data: Any) -> int:  # type: ignore[override]
        with self._lock:
            self._check_open()
            if self._mode != "wb":
                raise io.UnsupportedOperation("not open for writing")
            n = self._encoder.write(data)
            self._pos += n
            return n

    def flush(self) -> None:
        """Flush what the underlying file holds.  Data not yet filling a wave
        stays buffered: a wave's geometry depends on it (see FORMAT.md)."""
        self._check_open()
        if self._mode == "wb":
            flush = getattr(self._fh, "flush", None)
            if flush is not None:
                flush()

    # ---------------------------------------------------------- reading

    def _next_chunk(self) -> bool:
        if self._eof:
            return False
        if self._chunks is None:
            self._chunks = self._decompressor._stream_decoder(self._fh)
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


def stream_writer(fileobj: IO[bytes], model: Any = "default", *, closefd: bool = False, **kwargs: Any) -> LlmzFile:
    """A writable file object compressing into ``fileobj``; ``kwargs`` are
    :class:`~pyllmcodec.codec.Compressor` options."""
    return LlmzFile(fileobj, "wb", compressor=Compressor(model, **kwargs), closefd=closefd)


def stream_reader(source: Any, model: Any = None, *, closefd: bool = False, **kwargs: Any) -> LlmzFile:
    """A readable file object decompressing ``source`` (file object or
    bytes-like); ``kwargs`` are :class:`~pyllmcodec.codec.Decompressor` options."""
    return LlmzFile(source, "rb", decompressor=Decompressor(model, **kwargs), closefd=closefd)


def open(
    filename: Any,
    mode: str = "rb",
    *,
    model: Any = None,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    **kwargs: Any,
) -> Any:
    """Open a ``.llmz`` file in binary ("rb", "wb", "xb", "ab" not supported)
    or text ("rt", "wt", "xt") mode, like :func:`gzip.open`.

    ``filename``: a path or an existing binary file object.  ``model``: for
    writing, the model name or StepModel (default "default"); for reading,
    None loads what the archive names.  Other keyword arguments go to
    :class:`~pyllmcodec.codec.Compressor` or :class:`~pyllmcodec.codec.Decompressor`.
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
    if isinstance(filename, (str, bytes, os.PathLike)):
        fh = builtins.open(filename, base + "b")
        closefd = True
    elif hasattr(filename, "read") or hasattr(filename, "write"):
        fh = filename
        closefd = False
    else:
        raise TypeError("filename must be a path or a binary file object")
    try:
        if base == "r":
            f = LlmzFile(fh, "rb", decompressor=Decompressor(model, **kwargs), closefd=closefd)
        else:
            comp = Compressor("default" if model is None else model, **kwargs)
            f = LlmzFile(fh, "wb", compressor=comp, closefd=closefd)
    except BaseException:
        if closefd:
            fh.close()
        raise
    if text:
        return io.TextIOWrapper(f, encoding=encoding, errors=errors, newline=newline)
    return f
