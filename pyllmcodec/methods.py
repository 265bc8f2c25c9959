"""Chunk methods: how one chunk is prepared, packed, unpacked and finished.

Every index entry names its chunk's method (the ``method`` byte,
docs/FORMAT.md).  :data:`METHODS` holds one row per method, and everything
the codec does per method reads that row, so a new method is one row here
(plus its number and spec in constants.py and FORMAT.md):

* a method the model does not decode has ``pack(raw) -> payload or None``
  (the encoder's offer) and ``unpack(payload, raw_len) -> raw or None``;
* a model method says which archives it belongs to (``kind``: byte-level,
  token-level, or both) and, for the line-ending methods, the ``suffix``
  removed before every LF when coding and restored when decoding
  (:mod:`pyllmcodec.eol`).

The container validates each entry's method against this table (which
methods an archive kind may hold, which coded lengths are valid), so this
module sits below it and imports nothing of the codec.

Encoding a wave: :func:`model_inputs` prepares each chunk's symbols for the
model (or says the model cannot code it); the scheduler codes them;
:func:`choose` keeps the smallest of the model's payload and the packed
offers, so a chunk never grows.  Decoding a wave: :func:`stop_rule` says how
each row ends (known symbol counts, or the byte count of its decoded
symbols), :func:`finish` turns a row's symbols back into bytes, and
:func:`unpack` handles the methods the model does not decode.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import eol
from .constants import (
    DEFLATE_LEVEL,
    EOL_SUFFIXES,
    METHOD_DEFLATE,
    METHOD_MODEL,
    METHOD_MODEL_EOL_CR,
    METHOD_MODEL_EOL_SPACE_CR,
    METHOD_MODEL_TOKENS,
    METHOD_NAMES,
    METHOD_STORED,
)
from .errors import ChecksumError
from .tokenizer import Tokenizer

__all__ = ["METHODS", "Method", "choose", "finish", "model_inputs", "stop_rule", "unpack"]


def _deflate(raw: bytes) -> bytes:
    d = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
    return d.compress(raw) + d.flush()


def _inflate(payload: Any, raw_len: int) -> bytes | None:
    """Inflate a deflate chunk to exactly ``raw_len`` bytes, or None if the
    payload is not exactly that."""
    try:
        d = zlib.decompressobj(-15)
        out = d.decompress(bytes(payload), raw_len)
        if len(out) != raw_len or not d.eof or d.unconsumed_tail or d.unused_data:
            return None
        return out
    except zlib.error:
        return None


def _stored(payload: Any, raw_len: int) -> bytes | None:
    return bytes(payload) if len(payload) == raw_len else None


@dataclass(frozen=True)
class Method:
    """One chunk method (module docstring)."""

    id: int
    #: decoded through the model (else by ``unpack`` alone)
    model: bool
    #: the archives it may appear in: "bytes" (byte-level), "tokens" (token-level) or "any"
    kind: str = "any"
    #: line-ending methods: removed before every LF when coding, restored after
    suffix: bytes = b""
    #: the encoder's offer for a raw chunk (None: no offer), non-model methods
    pack: Callable[[bytes], bytes | None] | None = None
    #: payload -> raw bytes (None: the payload is not a valid one), non-model methods
    unpack: Callable[[Any, int], bytes | None] | None = None

    @property
    def name(self) -> str:
        return METHOD_NAMES[self.id]

    def entry_error(self, raw_len: int, coded_len: int, tokens: bool) -> str | None:
        """Why an index entry of this method with these lengths cannot be in
        an archive (token-level: ``tokens``), or None: the container's check."""
        if self.kind == "tokens" and not tokens:
            return f"method {self.name} in an archive without a tokenizer"
        if self.kind == "bytes" and tokens:
            return f"byte-level method {self.name} in a token-level archive"
        if self.id == METHOD_STORED:
            return None if coded_len == raw_len else "stored chunk with coded length != raw length"
        return None if coded_len < raw_len else f"coded length {coded_len} >= raw length {raw_len}"


METHODS: dict[int, Method] = {
    METHOD_STORED: Method(METHOD_STORED, model=False, pack=bytes, unpack=_stored),
    METHOD_MODEL: Method(METHOD_MODEL, model=True, kind="bytes"),
    METHOD_DEFLATE: Method(METHOD_DEFLATE, model=False, pack=_deflate, unpack=_inflate),
    METHOD_MODEL_TOKENS: Method(METHOD_MODEL_TOKENS, model=True, kind="tokens"),
    METHOD_MODEL_EOL_CR: Method(METHOD_MODEL_EOL_CR, model=True, suffix=EOL_SUFFIXES[METHOD_MODEL_EOL_CR]),
    METHOD_MODEL_EOL_SPACE_CR: Method(METHOD_MODEL_EOL_SPACE_CR, model=True,
                                      suffix=EOL_SUFFIXES[METHOD_MODEL_EOL_SPACE_CR]),
}


# ------------------------------------------------------------------ encoding


def model_inputs(raws: Sequence[bytes], *, eol_methods: bool, tokenizer: Tokenizer | None,
                 max_context: int) -> list[tuple[int, Any]]:
    """``(method, symbols)`` per chunk: what the model codes -- the bytes, or
    a token-level model's token array --, with a line-ending method where
    every LF has the suffix (``eol_methods``); symbols None where the model
    cannot code the chunk (a token sequence that does not round-trip
    byte-exactly, has a zero-length token, or exceeds the context)."""
    picked = [eol.encoded(r) if eol_methods else (0, r) for r in raws]
    if tokenizer is None:
        return [(m or METHOD_MODEL, text) for m, text in picked]
    tk = tokenizer
    lengths = tk.token_lengths

    def usable(t: np.ndarray, text: bytes) -> bool:
        return 0 < len(t) <= max_context and tk.detokenize(t) == text and bool((lengths[t] > 0).all())

    seqs = tk.tokenize_batch([text for _, text in picked])
    out: list[tuple[int, Any]] = []
    for (m, text), raw, t in zip(picked, raws, seqs):
        if m and not usable(t, text):  # the stripped text does not tokenize cleanly: try the chunk as it is
            m, text, t = 0, raw, tk.tokenize(raw)
        out.append((m or METHOD_MODEL_TOKENS, t if usable(t, text) else None))
    return out


def choose(raw: memoryview, method: int, payload: bytes | None, fallback: str) -> tuple[int, bytes | memoryview]:
    """``(method, payload)``: the smallest of the model's ``payload`` (None:
    no offer), the packed offers of the non-model methods the ``fallback``
    allows ("deflate": stored and deflate; "stored": stored), and the raw
    bytes (stored, on ties)."""
    n = len(raw)
    best: bytes | memoryview = raw
    chosen = METHOD_STORED
    if payload is not None and len(payload) < n:
        chosen, best = method, payload
    if fallback == "deflate":
        pack = METHODS[METHOD_DEFLATE].pack
        assert pack is not None
        packed = pack(bytes(raw))
        if packed is not None and len(packed) < len(best):
            chosen, best = METHOD_DEFLATE, packed
    return chosen, best


# ------------------------------------------------------------------ decoding


def unpack(method: int, payload: Any, raw_len: int, index: int) -> bytes:
    """A non-model chunk's bytes (chunk ``index``); ChecksumError when its
    payload is invalid."""
    m = METHODS[method]
    if m.unpack is None:
        raise AssertionError(f"method {m.name} is not unpacked here")
    out = m.unpack(payload, raw_len)
    if out is None:
        raise ChecksumError(f"chunk {index}: corrupt {m.name} data (the archive is corrupt)")
    return out


def stop_rule(methods: Sequence[int], tokenizer: Tokenizer | None,
              vocab_size: int) -> tuple[np.ndarray | None, np.ndarray | None, list[int]]:
    """How the decoded rows of these ``methods`` end (the scheduler's
    ``decode_wave`` arguments): ``(weights, newlines, extra)``.  A byte-level
    row without a line-ending method has a known symbol count, its
    ``raw_len`` (weights None, when every row is so); every other row ends at
    the symbol that brings its byte count -- each token's length, plus the
    suffix once per LF for a line-ending method -- to ``raw_len``: the encoder
    stepped it exactly that far."""
    extra = [len(METHODS[m].suffix) for m in methods]
    if tokenizer is None and not any(extra):
        return None, None, extra
    weights = np.ones(vocab_size, dtype=np.int64) if tokenizer is None else tokenizer.token_lengths
    newlines = None
    if any(extra):
        newlines = (np.arange(vocab_size) == 10).astype(np.int64) if tokenizer is None else tokenizer.newline_counts
    return weights, newlines, extra


def finish(symbols: np.ndarray, method: int, raw_len: int, tokenizer: Tokenizer | None) -> bytes:
    """A decoded row's bytes: its symbols (detokenized for a token-level
    model), the line-ending suffix restored; ChecksumError when they are not
    ``raw_len`` long."""
    if tokenizer is None:
        data = symbols.astype(np.uint8, copy=False).tobytes()
    else:
        try:
            data = tokenizer.detokenize(symbols)
        except IndexError:
            data = b""
    if METHODS[method].suffix:
        data = eol.restore(data, method)
    if len(data) != raw_len:
        raise ChecksumError(
            f"a {METHOD_NAMES[method]} chunk decoded to {len(data)} bytes, its entry says "
            f"{raw_len}: the archive is corrupt (or was decoded with different numerics)"
        )
    return data
