"""Byte-exact tokenizer for byte-level BPE models (SmolLM2 / GPT-2 style).

Two directions with different guarantees:

* :meth:`BPETokenizer.detokenize` (the decoder's side) is a table lookup:
  every token id maps to a fixed byte string (the GPT-2 byte-to-unicode map
  undone), and a token sequence decodes to the concatenation.  It needs only
  the vocabulary, never the ``tokenizers`` package, and is exact by
  construction.
* :meth:`BPETokenizer.tokenize` (the encoder's side) runs the Hugging Face
  ``tokenizers`` BPE built from the GGUF's vocabulary and merges, with the
  SmolLM2 pre-tokenizer (single digits, then the GPT-2 byte-level regex).
  ``tokenizers`` works on text, so the input is cut into maximal valid UTF-8
  runs; each run is tokenized, and each byte of an invalid sequence (a chunk
  boundary inside a character, binary data) becomes its single-byte token.
  Its result only affects the ratio: the codec checks
  ``detokenize(tokenize(x)) == x`` for every chunk and codes a chunk that
  fails with its byte fallback methods.

Special tokens (``<|endoftext|>``, ...) are never produced from text: the
string ``<|endoftext|>`` in the input is tokenized as ordinary text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["BPETokenizer", "Tokenizer", "bytes_to_unicode", "load_bundle_tokenizer"]

TOKENIZER_FILE = "tokenizer.json"


class Tokenizer(Protocol):
    """What the codec uses of a token-level model's tokenizer
    (:class:`BPETokenizer` implements it)."""

    #: SHA-256 (hex) of the vocabulary; recorded in archive headers
    sha256: str
    vocab_size: int

    def tokenize(self, data: bytes) -> np.ndarray:
        """int64 token ids of ``data`` (need not round-trip; the codec checks)."""

    def tokenize_batch(self, items: Sequence[bytes]) -> list[np.ndarray]:
        """:meth:`tokenize` of each item."""

    def detokenize(self, ids: Any) -> bytes:
        """The bytes of a token sequence: the concatenation of each token's."""

    @property
    def token_lengths(self) -> np.ndarray:
        """int64 ``[vocab_size]``: the byte length of each token."""

    @property
    def newline_counts(self) -> np.ndarray:
        """int64 ``[vocab_size]``: the LF bytes in each token."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class BPETokenizer:
    """A byte-level BPE tokenizer over a fixed vocabulary (see module docstring).

    ``tokens``: the vocabulary (byte-level unicode strings, id = index);
    ``merges``: ``"a b"`` strings in rank order; ``token_type``: GGUF token
    types (3 = control: decoded as its UTF-8 text, never produced).
    """

    def __init__(self, tokens: Sequence[str], merges: Sequence[str], token_type: Sequence[int] | None = None,
                 pre: str = "smollm") -> None:
        self.tokens = list(tokens)
        self.merges = list(merges)
        self.token_type = list(token_type) if token_type is not None else [1] * len(self.tokens)
        self.pre = pre
        self.vocab_size = len(self.tokens)
        dec = {c: b for b, c in bytes_to_unicode().items()}
        table: list[bytes] = []
        for tok, typ in zip(self.tokens, self.token_type):
            if typ == 3 or any(ch not in dec for ch in tok):
                table.append(tok.encode("utf-8"))
            else:
                table.append(bytes(dec[ch] for ch in tok))
        self._bytes = table
        ids = {t: i for i, t in enumerate(self.tokens)}
        b2u = bytes_to_unicode()
        #: the single-byte token of each byte value, -1 where the vocabulary
        #: has none (SmolLM2 lacks 0xC0, 0xC1, 0xF5-0xFF and some C0 controls:
        #: a chunk holding one cannot round-trip and is coded as bytes)
        self.byte_ids = np.array([ids.get(b2u[b], -1) for b in range(256)], dtype=np.int64)
        self.missing_bytes = bytes(b for b in range(256) if self.byte_ids[b] < 0)
        self._tk: Any = None
        self.sha256 = hashlib.sha256(
            json.dumps([self.tokens, self.merges, self.token_type, self.pre], ensure_ascii=False).encode()
        ).hexdigest()

    # -------------------------------------------------------------- decode

    def token_bytes(self, i: int) -> bytes:
        return self._bytes[i]

    @cached_property
    def token_lengths(self) -> np.ndarray:
        """int64 ``[vocab_size]``: each token's byte length (the decoder ends a
        row when these add up to the chunk's length)."""
        return np.array([len(b) for b in self._bytes], dtype=np.int64)

    @cached_property
    def newline_counts(self) -> np.ndarray:
        """int64 ``[vocab_size]``: the LF bytes in each token (the line-ending
        methods count a suffix per LF)."""
        return np.array([b.count(b"\n") for b in self._bytes], dtype=np.int64)

    def detokenize(self, ids: Any) -> bytes:
        """The bytes of a token sequence (exact; raises IndexError on an id
        outside the vocabulary)."""
        t = self._bytes
        return b"".join([t[i] for i in np.asarray(ids, dtype=np.int64).tolist()])

    # -------------------------------------------------------------- encode

    def _hf(self) -> Any:
        if self._tk is None:
            from tokenizers import Tokenizer, models, pre_tokenizers

            vocab = {t: i for i, t in enumerate(self.tokens)}
            merges = [(a, b) for a, b in (m.split(" ", 1) for m in self.merges)]
            tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
            pres: list[Any] = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
            if self.pre in ("smollm", "starcoder", "refact"):
                pres.insert(0, pre_tokenizers.Digits(individual_digits=True))
            tk.pre_tokenizer = pre_tokenizers.Sequence(pres)
            self._tk = tk
        return self._tk

    def _runs(self, data: bytes) -> list[tuple[bool, bytes]]:
        """``(is_text, piece)``: maximal valid UTF-8 runs and invalid bytes."""
        out: list[tuple[bool, bytes]] = []
        pos, n = 0, len(data)
        while pos < n:
            try:
                data[pos:].decode("utf-8")
                out.append((True, data[pos:]))
                break
            except UnicodeDecodeError as e:
                if e.start:
                    out.append((True, data[pos : pos + e.start]))
                out.append((False, data[pos + e.start : pos + e.end]))
                pos += e.end
        return out

    def tokenize(self, data: bytes) -> np.ndarray:
        """Token ids (int64) of ``data``; see the module docstring."""
        return self.tokenize_batch([data])[0]

    def tokenize_batch(self, items: Sequence[bytes]) -> list[np.ndarray]:
        tk = self._hf()
        texts: list[str] = []
        plans: list[list[tuple[bool, Any]]] = []
        for data in items:
            plan: list[tuple[bool, Any]] = []
            for is_text, piece in self._runs(bytes(data)):
                if is_text:
                    plan.append((True, len(texts)))
                    texts.append(piece.decode("utf-8"))
                else:
                    ids = self.byte_ids[np.frombuffer(piece, dtype=np.uint8)]
                    plan.append((False, ids[ids >= 0]))  # a dropped byte fails the round trip
            plans.append(plan)
        encs = tk.encode_batch(texts, add_special_tokens=False) if texts else []
        out = []
        for plan in plans:
            parts = [np.asarray(encs[x].ids, dtype=np.int64) if is_text else x for is_text, x in plan]
            out.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
        return out

    # -------------------------------------------------------------- storage

    def to_json(self) -> dict[str, Any]:
        return {"kind": "bpe-bytelevel", "pre": self.pre, "tokens": self.tokens, "merges": self.merges,
                "token_type": self.token_type}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if d.get("kind") != "bpe-bytelevel":
            raise ValueError(f"{path}: not a byte-level BPE tokenizer file")
        return cls(d["tokens"], d["merges"], d.get("token_type"), d.get("pre", "smollm"))


def load_bundle_tokenizer(bundle: Any) -> BPETokenizer | None:
    """The tokenizer a bundle declares (``manifest.vocab.tokenizer``), or None
    for a byte-level bundle."""
    name = bundle.manifest["vocab"].get("tokenizer")
    if not name:
        return None
    return BPETokenizer.load(bundle.path / name)
