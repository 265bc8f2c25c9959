"""Dictionaries: bytes the model reads before every chunk.

A chunk is coded from a fresh model state, so a small record starts cold: the
model has not seen its field names, its vocabulary or its layout.  A
dictionary is a few hundred bytes of typical content fed to the model (and to
the match model) before every chunk, without being coded; the chunk's first
byte is then predicted as if it followed the dictionary (docs/FORMAT.md
section 4d).  zstd does the same with its dictionaries; here the "window" is
the model's context, so a dictionary is at most half the segments' length.

An archive records the dictionary by SHA-256 (a frame: its first 8 bytes)
and its size; the decoder must be given the same bytes
(``Decompressor(dictionary=...)``): a missing or different one is a
:class:`~pyllmcodec.errors.DictionaryError`, never wrong bytes.

:func:`train_dictionary` builds one from sample records, the way zstd's
COVER trainer does: it picks the segments whose short substrings occur in
the most samples, most valuable last (nearest to the chunk the model codes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constants import FRAME_ID_LEN, MAX_DICTIONARY_SIZE
from .errors import DictionaryError
from .tokenizer import Tokenizer

__all__ = ["Dictionary", "as_dictionary", "train_dictionary"]


@dataclass(frozen=True)
class Dictionary:
    """A dictionary's bytes and identity.  ``Compressor(dictionary=)`` takes
    one of these or plain bytes."""

    data: bytes
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not 1 <= len(self.data) <= MAX_DICTIONARY_SIZE:
            raise ValueError(f"a dictionary must be 1..{MAX_DICTIONARY_SIZE} bytes")
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def id(self) -> bytes:
        """The 8 bytes a compact frame names it by."""
        return bytes.fromhex(self.sha256)[:FRAME_ID_LEN]

    def __len__(self) -> int:
        return len(self.data)

    def symbols(self, tokenizer: Tokenizer | None) -> np.ndarray:
        """What the model is fed: the bytes (int64), or a token-level model's
        tokens, which must detokenize to exactly these bytes."""
        if tokenizer is None:
            return np.frombuffer(self.data, dtype=np.uint8).astype(np.int64)
        toks = np.asarray(tokenizer.tokenize(self.data), dtype=np.int64)
        if tokenizer.detokenize(toks) != self.data:
            raise ValueError("the dictionary does not tokenize back to its bytes with this model's tokenizer")
        return toks

    def __repr__(self) -> str:
        return f"Dictionary({len(self.data)} bytes, sha256 {self.sha256[:16]}...)"


def as_dictionary(value: Any) -> Dictionary | None:
    """None, a :class:`Dictionary`, or bytes-like (made into one)."""
    if value is None or isinstance(value, Dictionary):
        return value
    try:
        data = bytes(memoryview(value))
    except TypeError:
        raise TypeError(f"dictionary must be bytes-like or a Dictionary, not {type(value).__name__}") from None
    return Dictionary(data)


def check_dictionary(want: str | None, have: Dictionary | None) -> None:
    """DictionaryError unless ``have`` is the dictionary an archive recorded
    as ``want`` (hex SHA-256, or a frame's 16-hex-digit prefix of it)."""
    if want is None:
        return
    if have is None:
        raise DictionaryError(f"this archive was primed with a dictionary (sha256 {want[:16]}...); pass the same "
                              "bytes as dictionary= (CLI: -D FILE) to decompress it")
    if not have.sha256.startswith(want):
        raise DictionaryError(f"wrong dictionary: the archive was primed with sha256 {want[:16]}..., the one given "
                              f"is {have.sha256[:16]}...")


def _dmer_ids(buf: np.ndarray, d: int) -> np.ndarray:
    """A 64-bit hash of each ``d``-byte substring of ``buf`` (uint64 wraps)."""
    h = np.zeros(len(buf) - d + 1, dtype=np.uint64)
    for j in range(d):
        h = h * np.uint64(0x100000001B3) + buf[j : len(buf) - d + 1 + j].astype(np.uint64)
    return h


def train_dictionary(samples: Iterable[bytes], size: int = 256, *, segment: int = 64, dmer: int = 6) -> bytes:
    """A dictionary of at most ``size`` bytes for records like ``samples``.

    COVER's idea (Liu et al., "Effective construction of relative
    Lempel-Ziv dictionaries", 2016; zstd's ``--train``): every ``dmer``-byte
    substring is worth the number of samples it occurs in; segments of
    ``segment`` bytes are picked greedily by the worth of the substrings
    they cover that no earlier pick covered; the picks are laid out best
    last, nearest to the chunk.  Give a few hundred samples or more; the
    result is deterministic.  ``segment`` 64 (not zstd's shorter ones):
    the model reads the dictionary as text, and longer runs read better
    (model ideal on 256 Debian package records with 256 B: 2.130 bits/byte
    at 64 against 2.186 at 32; bench/studies/jsonl_records.py).  ``size``
    should stay within half the model's
    segments (256 bytes at the default model's 512; the Compressor refuses
    a longer one)."""
    if not isinstance(size, int) or not 1 <= size <= MAX_DICTIONARY_SIZE:
        raise ValueError(f"size must be an int in 1..{MAX_DICTIONARY_SIZE}")
    if not 1 <= dmer <= segment:
        raise ValueError("need 1 <= dmer <= segment")
    recs = [bytes(memoryview(s)) for s in samples]
    recs = [r for r in recs if len(r) >= dmer]
    if not recs:
        raise ValueError("train_dictionary needs samples of at least dmer bytes")
    # one buffer with a separator-free layout; substrings never cross samples
    ids_per: list[np.ndarray] = [_dmer_ids(np.frombuffer(r, dtype=np.uint8), dmer) for r in recs]
    doc_ids = np.concatenate([np.unique(x) for x in ids_per])
    uniq, docs = np.unique(doc_ids, return_counts=True)
    worth = docs.astype(np.int64)
    worth[docs < 2] = 0  # seen in one sample only: no help to the others
    picks: list[bytes] = []
    total = 0
    covered = np.zeros(len(uniq), dtype=bool)
    while total < size:
        best = (0, -1, -1)
        for i, ids in enumerate(ids_per):
            idx = np.searchsorted(uniq, ids)
            w = np.where(covered[idx], 0, worth[idx])
            span = min(segment, len(recs[i])) - dmer + 1
            if span < 1 or len(w) < span:
                continue
            c = np.concatenate(([0], np.cumsum(w)))
            win = c[span:] - c[:-span]
            j = int(np.argmax(win))
            if int(win[j]) > best[0]:
                best = (int(win[j]), i, j)
        score, i, j = best
        if score <= 0:
            break
        seg = recs[i][j : j + min(segment, len(recs[i]))]
        seg = seg[: size - total]
        picks.append(seg)
        total += len(seg)
        idx = np.searchsorted(uniq, ids_per[i][j : j + len(seg) - dmer + 1])
        covered[idx] = True
    if not picks:  # nothing repeats across samples: the most common sample start
        return max(recs, key=len)[:size]
    return b"".join(reversed(picks))
