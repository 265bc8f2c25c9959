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

Encoding a wave: :func:`model_inputs` prepares each chunk's symbols for the
model (or says the model cannot code it); the scheduler codes them;
:func:`choose` keeps the smallest of the model's payload and the packed
offers, so a chunk never grows.  Decoding a wave: :func:`decode_rows` tells
the scheduler how each row ends (known symbol counts, or the byte count of
its decoded symbols) and finishes each row's symbols into bytes;
:func:`unpack` handles the others.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import eol
from .backends.base import Tokenizer
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
from .container import ChunkEntry
from .errors import ChecksumError
from .scheduler import WaveRunner

__all__ = ["METHODS", "Method", "choose", "decode_rows", "model_inputs", "unpack"]


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
    #: a model method's archives: "bytes" (byte-level), "tokens" (token-level) or "any"
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


def choose(row: int, raw: memoryview, method: int, payload: bytes | None,
           fallback: str) -> tuple[ChunkEntry, bytes | memoryview]:
    """The smallest of: the model's ``payload`` (None: no offer), the packed
    offers of the non-model methods the ``fallback`` allows ("deflate": stored
    and deflate; "stored": stored), and the raw bytes (stored, on ties)."""
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
    return ChunkEntry(row, n, len(best), chosen, zlib.crc32(raw)), best


# ------------------------------------------------------------------ decoding


def unpack(e: ChunkEntry, payload: Any, index: int) -> bytes:
    """A non-model chunk's bytes; ChecksumError when its payload is invalid."""
    m = METHODS[e.method]
    if m.unpack is None:
        raise AssertionError(f"method {m.name} is not unpacked here")
    out = m.unpack(payload, e.raw_len)
    if out is None:
        raise ChecksumError(f"chunk {index}: corrupt {m.name} data (the archive is corrupt)")
    return out


def decode_rows(runner: WaveRunner, tokenizer: Tokenizer | None, batch: int, rows: Sequence[int],
                methods: Sequence[int], raw_lens: Sequence[int], payloads: Sequence[Any]) -> list[bytes]:
    """Decode the model-coded chunks at ``rows`` of one wave of ``batch`` rows
    and finish them into bytes.  A byte-level row without a line-ending
    method has a known symbol count (its ``raw_len``); every other row ends
    at the symbol that brings its byte count -- each token's length, plus the
    suffix once per LF for a line-ending method -- to ``raw_len`` (the
    encoder stepped it exactly that far).  ChecksumError when a row cannot
    end so, or its bytes are not ``raw_len`` long."""
    V = runner.vocab_size
    suffix = [len(METHODS[m].suffix) for m in methods]
    known = tokenizer is None and not any(suffix)
    weights = None if known else (np.ones(V, dtype=np.int64) if tokenizer is None else tokenizer.token_lengths)
    newlines = None
    if any(suffix):
        newlines = (np.arange(V) == 10).astype(np.int64) if tokenizer is None else tokenizer.newline_counts
    try:
        got = runner.decode_wave(batch, rows, raw_lens, payloads, weights=weights, newlines=newlines, extra=suffix)
    except ValueError as exc:
        raise ChecksumError(f"{exc}: the archive is corrupt (or was decoded with different numerics)") from None
    out: list[bytes] = []
    for sym, m, n in zip(got, methods, raw_lens):
        if tokenizer is None:
            data = sym.astype(np.uint8, copy=False).tobytes()
        else:
            try:
                data = tokenizer.detokenize(sym)
            except IndexError:
                data = b""
        if METHODS[m].suffix:
            data = eol.restore(data, m)
        if len(data) != n:
            raise ChecksumError(
                f"a {METHOD_NAMES[m]} chunk decoded to {len(data)} bytes, its entry says "
                f"{n}: the archive is corrupt (or was decoded with different numerics)"
            )
        out.append(data)
    return out
