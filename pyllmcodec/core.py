"""The native core: quantizer and batch range coder (re-exported from ``_core``).

Quantizer contract (the bits are part of the format; full text and proofs in
``csrc/quantizer.hpp``):

* ``quantize(probs, precision, out=None)`` maps float32 ``[B, V]`` to uint32
  ``[B, V+1]``: each row starts at 0, ends at exactly ``2**precision`` and gives
  every symbol a frequency >= 1.  Rows need not be normalised.
* Per row: ``S`` = the row sum in a fixed order (float32 pair sums of blocks
  of 32, accumulated in 8 float64 lanes); ``s32 = float32((2**P - V - slack)
  / S)`` with ``slack = 2**P >> 20``; ``f[i] = 1 + trunc(float32(p[i] * s32))``
  for ``i < V-1`` (IEEE, no FMA, no flush-to-zero; tiny rows are rescaled by
  an exact 2**100 first); the last symbol takes the rest,
  ``f[V-1] = 2**P - sum(f[:V-1])`` (proved >= 1).
* NaN, inf, negative values, a zero sum or a sum >= 2**100 raise
  ``ValueError`` naming the row.
* ``V`` must satisfy ``2 <= V <= min(2**(precision-1), MAX_SYMBOLS)``.

Integer quantizer (the exact models' CDF entry; ``csrc/quantizer_int.hpp``):

* ``quantize_int(weights, precision, match=None, q=None, out=None)`` maps
  uint32 weights ``[B, V]`` to the same kind of table with integer arithmetic
  only: ``S = sum(w)``, ``c = 2**P - V``, ``r = (c << (62 - P)) // S``,
  ``f[i] = 1 + (w[i] * r >> (62 - P))`` for ``i < V-1``, the rest to the last
  symbol.  ``match[k] >= 0`` gives that symbol ``q[k] / 2**16`` of ``c`` and
  spreads the remainder over the others (the match model's override).
* A zero row or an override out of range raises ``ValueError``.

Coder: ``BatchEncoder`` / ``BatchDecoder`` hold many independent streams and
code one symbol per stream per call; ``rows=`` selects the streams that code
in a step, so streams may finish at different steps.  ``encode_probs`` /
``decode_probs`` quantize and code in one pass with the very same bits as
``quantize`` + ``encode``/``decode``; ``encode_weights`` /
``decode_weights`` do the same for ``quantize_int``.  For CDFs that live on an accelerator,
``BatchDecoder.targets`` + ``BatchDecoder.advance`` and
``BatchEncoder.encode_ranges`` split a step in two.  A decoder never reads out
of bounds or hangs on bad input; it returns symbols or raises
:class:`pyllmcodec.CodecError`.

Mixer: ``MatchMixer`` is the match model of docs/FORMAT.md section 4c (a
per-row history that predicts repeats; contract in ``csrc/mixer.hpp``).  Per
step, ``mix(probs, rows)`` edits each row in place before coding and
``push(symbols, rows)`` feeds the coded symbols back; ``mix_int(weights,
rows)`` is its integer twin for an exact model's rows: it returns the
overrides ``(match, q)`` for ``encode_weights`` / ``decode_weights``.
``WaveMatch`` (FORMAT.md section 4g, ``csrc/wavematch.hpp``) is the
token-level tier's: one state shared by a wave's rows, integer rows only
(``mix_int``, ``push``, ``feed``).

Context mixing: ``ContextMixer`` is the stage of docs/FORMAT.md section 4f
(adaptive context models of a wave's own bytes mixed with the model's
prediction, bit by bit; contract in ``csrc/cm.hpp``).  Per step,
``encode(encoder, weights, symbols, rows, match, q)`` codes each row's byte on
the encoder's streams in place of ``encode_weights``, and ``decode`` mirrors
it; ``cm_trace`` runs the stage over recorded bit probabilities (tests,
studies).

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
    CmState,
    ContextMixer,
    MatchMixer,
    WaveMatch,
    cm_trace,
    kernels,
    quantize,
    quantize_int,
)

__all__ = [
    "DEFAULT_PRECISION",
    "MAX_PRECISION",
    "MAX_SYMBOLS",
    "MIN_PRECISION",
    "BatchDecoder",
    "BatchEncoder",
    "CmState",
    "ContextMixer",
    "MatchMixer",
    "WaveMatch",
    "cm_trace",
    "kernels",
    "quantize",
    "quantize_int",
]
