"""Line-ending transform applied to a chunk before the model codes it.

Text from Windows, e-mail and old archives (three of the four large
Canterbury texts) ends every line with CR LF, often with a trailing space
before it.  Language models are trained on LF text: measured with the default
byte model on alice29 (1 KiB chunks), the ideal code length is 3.238
bits/byte as is and 2.609 with CR removed; with smollm2-135m (6 KiB chunks)
on the first 36 KiB of plrabn12, 1.638 as is, 1.591 without CR and 1.579
without " CR" (bench/studies/eol_eval.py).

The transform is exact and needs no side information beyond the chunk's
method: a chunk qualifies for suffix ``S`` when it has at least one LF and
*every* LF is preceded by ``S``; the model then codes the chunk with ``S``
removed before each LF, and the decoder puts ``S`` back before every LF.  The
decoder knows a row is complete when its restored length reaches the entry's
``raw_len`` (each restored symbol adds at least one byte, so this happens
exactly at the last one).  See docs/FORMAT.md, methods 4 and 5.
"""

from __future__ import annotations

from .constants import EOL_SUFFIXES

__all__ = ["choose", "encoded", "restore", "strip"]

# longest suffix first: " \r" qualifies only where "\r" does, and strips more
_ORDER = sorted(EOL_SUFFIXES.items(), key=lambda kv: -len(kv[1]))


def choose(chunk: bytes) -> int:
    """The method (a key of EOL_SUFFIXES) whose suffix precedes every LF of
    ``chunk``, the longest such; 0 when none does or the chunk has no LF."""
    n = chunk.count(b"\n")
    if n == 0:
        return 0
    for method, suffix in _ORDER:
        if chunk.count(suffix + b"\n") == n:
            return method
    return 0


def strip(chunk: bytes, method: int) -> bytes:
    """``chunk`` with the method's suffix removed before every LF (the chunk
    must qualify: see :func:`choose`)."""
    s = EOL_SUFFIXES[method]
    return chunk.replace(s + b"\n", b"\n")


def restore(data: bytes, method: int) -> bytes:
    """Inverse of :func:`strip`: the method's suffix put back before every LF."""
    return data.replace(b"\n", EOL_SUFFIXES[method] + b"\n")


def encoded(chunk: bytes) -> tuple[int, bytes]:
    """``(method, text)``: what the encoder model-codes for ``chunk`` -- the
    chosen method (0: none) and the chunk with its suffix stripped."""
    m = choose(chunk)
    return m, (strip(chunk, m) if m else chunk)
