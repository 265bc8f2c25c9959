"""The exception hierarchy of pyllmcodec.

Misuse of the API (wrong types, shapes, out-of-range arguments) raises the
built-in ``TypeError`` / ``ValueError``.  Everything that is wrong with *data*
(a corrupt, truncated, foreign or mismatched archive or bitstream) raises a
subclass of :class:`CodecError`, so a caller can catch one type.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "CodecError",
    "DictionaryError",
    "FormatError",
    "MemoryLimitError",
    "ModelError",
    "NumericsMismatchError",
    "OutputLimitError",
]


class CodecError(Exception):
    """Base class for every error about compressed data or its decoding."""


class FormatError(CodecError):
    """The input is not a valid pyllmcodec archive (bad magic, truncated,
    inconsistent or hostile header fields, unsupported format version)."""


class ChecksumError(CodecError):
    """A checksum over decoded data did not match: the archive is corrupt."""


class NumericsMismatchError(CodecError):
    """The model on this machine does not reproduce the probabilities the
    archive was written with (probe digest mismatch); decoding would give
    garbage, so it is refused."""


class ModelError(CodecError):
    """The model an archive needs is unknown, missing, or does not match the
    SHA-256 recorded in the archive."""


class OutputLimitError(CodecError):
    """Decoding would produce more bytes than ``max_output_size`` allows."""


class MemoryLimitError(CodecError):
    """Coding a wave would need more memory than ``max_memory`` allows (the
    model state of its rows: docs/RELIABILITY.md section 2), or an
    allocation failed."""


class DictionaryError(CodecError):
    """The archive was primed with a dictionary that was not given, or not
    the one given (docs/FORMAT.md section 4d)."""
