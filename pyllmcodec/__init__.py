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

__version__ = "0.2.0"

from pyllmcodec.codec import (  # noqa: E402 - after __version__, which archives record
    Compressor,
    Decompressor,
    compress,
    compress_batch,
    decompress,
    decompress_batch,
    info,
)
from pyllmcodec.io import LlmzFile, open, stream_reader, stream_writer  # noqa: E402

__all__ = [
    "__version__",
    "core",
    "CodecError",
    "FormatError",
    "ChecksumError",
    "NumericsMismatchError",
    "ModelError",
    "OutputLimitError",
    "Compressor",
    "Decompressor",
    "compress",
    "decompress",
    "compress_batch",
    "decompress_batch",
    "info",
    "open",
    "stream_reader",
    "stream_writer",
    "LlmzFile",
]
