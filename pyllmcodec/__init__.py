"""pyllmcodec: lossless compression with a language model and a range coder."""

from __future__ import annotations

from pyllmcodec import core
from pyllmcodec.errors import (
    ChecksumError,
    CodecError,
    FormatError,
    ModelError,
    NumericsMismatchError,
    OutputLimitError,
)

__version__ = "0.4.0"

from pyllmcodec.codec import (
    Compressor,
    Decompressor,
    compress,
    compress_batch,
    decompress,
    decompress_batch,
    info,
)
from pyllmcodec.io import LlmzFile, open, stream_reader, stream_writer

__all__ = [
    "ChecksumError",
    "CodecError",
    "Compressor",
    "Decompressor",
    "FormatError",
    "LlmzFile",
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
