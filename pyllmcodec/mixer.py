"""The match model's parameters (docs/FORMAT.md section 4c).

A model bundle may ship a fitted match model in its manifest
(``codec.mixer``); the codec then runs :class:`pyllmcodec.core.MatchMixer`
on every model-coded byte-level chunk and records the spec's digest in the
archive header, so a decoder with another table refuses the archive before
it decodes a byte.  The algorithm is in ``csrc/mixer.hpp``; this module holds
the spec, its canonical form and the fitting of a prior from observations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import MIXER_KIND

__all__ = ["MIXER_KIND", "MixerSpec", "fit_prior", "hash_bits_for"]

CELLS = 256
#: the probability of a hit a prior cell gets when nothing was observed (q16)
_UNSEEN = 32768


def hash_bits_for(chunk_size: int) -> int:
    """Bits of a row's position table for an archive's ``chunk_size`` (in
    bytes, which bounds a row's symbols): ``bit_length(chunk_size)`` clamped
    to 10..16, so the table has at least as many entries as a row has
    positions up to 32 KiB, and costs 4-256 KiB per row."""
    return min(16, max(10, int(chunk_size).bit_length()))


@dataclass(frozen=True)
class MixerSpec:
    """The fitted parameters of the match model: ``min_len`` symbols hashed to
    find a match, the prior confidence ``init_count`` and adaptation cap
    ``limit``, and ``prior``, 256 hit probabilities in units of 2^-16 indexed
    by ``16 * length bucket + probability bucket`` (csrc/mixer.hpp)."""

    prior: tuple[int, ...]
    min_len: int = 4
    init_count: int = 30
    limit: int = 127
    kind: str = MIXER_KIND

    def __post_init__(self) -> None:
        if self.kind != MIXER_KIND:
            raise ValueError(f"unknown mixer kind {self.kind!r} (this pyllmcodec runs {MIXER_KIND!r})")
        for name, v, lo, hi in (("min_len", self.min_len, 1, 32), ("limit", self.limit, 1, 65535),
                                ("init_count", self.init_count, 0, self.limit)):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"mixer {name} must be an int in {lo}..{hi}, got {v!r}")
        if len(self.prior) != CELLS or not all(
                isinstance(q, int) and not isinstance(q, bool) and 1 <= q <= 65535 for q in self.prior):
            raise ValueError(f"mixer prior must be {CELLS} ints in 1..65535")

    @classmethod
    def from_json(cls, obj: Any) -> MixerSpec:
        """The spec from a manifest's ``codec.mixer`` object (ValueError if malformed)."""
        if not isinstance(obj, dict):
            raise ValueError("mixer spec must be a JSON object")
        extra = set(obj) - {"kind", "min_len", "init_count", "limit", "prior"}
        if extra:
            raise ValueError(f"mixer spec has unknown keys {sorted(extra)}")
        prior = obj.get("prior")
        if not isinstance(prior, list):
            raise ValueError("mixer prior must be a list")
        return cls(prior=tuple(prior), min_len=obj.get("min_len", 4), init_count=obj.get("init_count", 30),
                   limit=obj.get("limit", 127), kind=obj.get("kind", MIXER_KIND))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "min_len": self.min_len, "init_count": self.init_count,
                "limit": self.limit, "prior": list(self.prior)}

    @property
    def digest(self) -> str:
        """What archives record: 16 hex digits of the SHA-256 of the canonical
        JSON (sorted keys, no spaces)."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def new(self, n_rows: int, max_len: int, chunk_size: int) -> Any:
        """A fresh :class:`pyllmcodec.core.MatchMixer` for one wave."""
        from . import core

        return core.MatchMixer(n_rows, max(1, max_len), np.asarray(self.prior, dtype=np.int64),
                               min_len=self.min_len, hash_bits=hash_bits_for(chunk_size),
                               init_count=self.init_count, limit=self.limit)


def fit_prior(cells: np.ndarray, hits: np.ndarray, *, pseudo: float = 4.0) -> tuple[int, ...]:
    """A prior from observations: ``cells`` (the cell each mix chose, -1 for
    none) and ``hits`` (whether the predicted symbol came).  Each cell's hit
    rate, shrunk towards its probability bucket's pooled rate with ``pseudo``
    observations (cells seldom seen borrow from their neighbours)."""
    cells = np.asarray(cells, dtype=np.int64)
    hits = np.asarray(hits, dtype=bool)
    keep = cells >= 0
    n = np.bincount(cells[keep], minlength=CELLS).astype(np.float64)
    h = np.bincount(cells[keep], weights=hits[keep].astype(np.float64), minlength=CELLS)
    nb = n.reshape(16, 16).sum(0)
    hb = h.reshape(16, 16).sum(0)
    pooled = np.where(nb > 0, (hb + 0.5) / (nb + 1.0), _UNSEEN / 65536.0)  # per probability bucket
    base = np.tile(pooled, 16)
    q = (h + pseudo * base) / (n + pseudo)
    return tuple(int(v) for v in np.clip(np.rint(q * 65536.0), 1, 65535))
