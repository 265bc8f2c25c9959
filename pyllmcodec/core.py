"""The native core: quantizer and batch range coder (re-exported from ``_core``).

Quantizer contract (the bits are part of the format; full text and proofs in
``csrc/quantizer.hpp``):

* ``quantize(probs, precision)`` maps float32 ``[B, V]`` to uint32
  ``[B, V+1]``: each row starts at 0, ends at exactly ``2**precision`` and gives
  every symbol a frequency >= 1.  Rows need not be normalised.
* Per row: ``S`` = float64 sum of the row in a fixed 16-lane order;
  ``scale = (2**precision - V) / S``; ``f[i] = 1 + floor(p[i] * scale)`` (IEEE
  float64, no FMA) for ``i < V-1``; the last symbol takes the rest,
  ``f[V-1] = 2**precision - sum(f[:V-1])`` (proved >= 1).
* NaN, inf, negative values or a zero sum raise ``ValueError`` naming the row.
* ``V`` must satisfy ``2 <= V <= min(2**(precision-1), MAX_SYMBOLS)``.

Coder: ``BatchEncoder`` / ``BatchDecoder`` hold many independent streams and
code one symbol per stream per call; ``rows=`` selects the streams that code
in a step, so streams may finish at different steps.  ``encode_probs`` /
``decode_probs`` quantize and code in one pass with the very same bits as
``quantize`` + ``encode``/``decode``.  For CDFs that live on an accelerator,
``BatchDecoder.targets`` + ``BatchDecoder.advance`` and
``BatchEncoder.encode_ranges`` split a step in two.  A decoder never reads out
of bounds or hangs on bad input; it returns symbols or raises
:class:`pyllmcodec.CodecError`.

Threading: the GIL is released around every native loop; one coder object must
not be used by two threads at once (that raises ``RuntimeError``).
"""

from __future__ import annotations

from pyllmcodec._core import (
    DEFAULT_PRECISION,
    MAX_PRECISION,
    MAX_SYMBOLS,
    MIN_PRECISION,
    BatchDecoder,
    BatchEncoder,
    kernels,
    quantize,
)

__all__ = [
    "DEFAULT_PRECISION",
    "MIN_PRECISION",
    "MAX_PRECISION",
    "MAX_SYMBOLS",
    "quantize",
    "BatchEncoder",
    "BatchDecoder",
    "kernels",
]
