"""pyllmcodec: lossless compression with a language model and a range coder.

The public API only; the layout of the package is in the README ("Layout").
The codec (numpy, ONNX Runtime, the native core) is imported on first use of
a name that needs it, so that ``import pyllmcodec`` and the command line's
start-up are light (and Ctrl-C during a slow import is the CLI's to handle).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pyllmcodec._version import __version__
from pyllmcodec.errors import (
    ChecksumError,
    CodecError,
    DictionaryError,
    FormatError,
    MemoryLimitError,
    ModelError,
    NumericsMismatchError,
    OutputLimitError,
)

if TYPE_CHECKING:
    from pyllmcodec import core
    from pyllmcodec.codec import (
        Compressor,
        Decompressor,
        LlmzFile,
        compress,
        compress_batch,
        decompress,
        decompress_batch,
        info,
        open,
        stream_reader,
        stream_writer,
    )
    from pyllmcodec.dictionary import Dictionary, train_dictionary
    from pyllmcodec.frames import FrameParams

__all__ = [
    "ChecksumError",
    "CodecError",
    "Compressor",
    "Decompressor",
    "Dictionary",
    "DictionaryError",
    "FormatError",
    "FrameParams",
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
    "train_dictionary",
]

#: where each lazily imported public name lives
_HOMES = {
    "core": "pyllmcodec.core",
    "Dictionary": "pyllmcodec.dictionary",
    "train_dictionary": "pyllmcodec.dictionary",
    "FrameParams": "pyllmcodec.frames",
    **{name: "pyllmcodec.codec" for name in ("Compressor", "Decompressor", "LlmzFile", "compress", "compress_batch",
                                             "decompress", "decompress_batch", "info", "open",
                                             "stream_reader", "stream_writer")},
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pyllmcodec' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if name == "core" else getattr(module, name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
