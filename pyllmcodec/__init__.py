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

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "core",
    "CodecError",
    "FormatError",
    "ChecksumError",
    "NumericsMismatchError",
    "ModelError",
    "OutputLimitError",
]
