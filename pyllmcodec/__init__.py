"""pyllmcodec: lossless compression with a language model and a range coder.

The public API only; the layout of the package is in the README ("Layout").
"""

from __future__ import annotations

from pyllmcodec import core
from pyllmcodec._version import __version__
from pyllmcodec.codec import (
    Compressor,
    Decompressor,
    compress,
    compress_batch,
    decompress,
    decompress_batch,
    info,
    open,
    stream_reader,
    stream_writer,
)
from pyllmcodec.errors import (
    ChecksumError,
    CodecError,
    FormatError,
    MemoryLimitError,
    ModelError,
    NumericsMismatchError,
    OutputLimitError,
)
from pyllmcodec.io import LlmzFile

__all__ = [
    "ChecksumError",
    "CodecError",
    "Compressor",
    "Decompressor",
    "FormatError",
    "LlmzFile",
    "MemoryLimitError",
    "ModelError",
    "NumericsMismatchError",
    "OutputLimitError",
    "__version__",
    "compress",
    "compress_batch",
    "core",
    "decompress",
    "decompress_batch",
    "info",
    "open",
    "stream_reader",
    "stream_writer",
]
