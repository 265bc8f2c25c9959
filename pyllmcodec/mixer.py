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

from .constants import MIXER_KIND, WAVE_MIXER_KIND

__all__ = ["MIXER_KIND", "WAVE_MIXER_KIND", "MixerSpec", "WaveSpec", "fit_prior", "hash_bits_for", "spec_from_json"]

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


@dataclass(frozen=True)
class WaveSpec:
    """The wave match (kind ``wave1``, csrc/wavematch.hpp, FORMAT.md section
    4g): token-level matches over all the rows of a wave (one found by the
    last ``long_len`` tokens, guessing first, one by the last ``min_len``),
    the guess's share learned by an adaptive map over the model's
    probability of the guess, at the rate 2^-``rate``.  Nothing in it is
    fitted per bundle: the kind fixes every parameter (a change is a new
    kind), and the tables' size follows the geometry.  The parameters were
    chosen on recorded tokens (``python -m bench.studies.smollm2_mix
    --sweep``, docs/SMOLLM2.md)."""

    long_len: int = 4
    min_len: int = 2
    rate: int = 5
    kind: str = WAVE_MIXER_KIND

    def __post_init__(self) -> None:
        if self.kind != WAVE_MIXER_KIND or (self.long_len, self.min_len, self.rate) != (4, 2, 5):
            raise ValueError(f"the wave match {WAVE_MIXER_KIND!r} has long_len 4, min_len 2 and rate 5, "
                             f"got {self.to_json()}")

    @classmethod
    def from_json(cls, obj: Any) -> WaveSpec:
        if not isinstance(obj, dict) or set(obj) - {"kind", "long_len", "min_len", "rate"}:
            raise ValueError("wave match spec must be a JSON object with keys kind, long_len, min_len, rate")
        return cls(long_len=obj.get("long_len", 4), min_len=obj.get("min_len", 2), rate=obj.get("rate", 5),
                   kind=obj.get("kind", WAVE_MIXER_KIND))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "long_len": self.long_len, "min_len": self.min_len, "rate": self.rate}

    @property
    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the canonical JSON, as :attr:`MixerSpec.digest`."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @staticmethod
    def hash_bits(chunk_size: int) -> int:
        """The wave's position table: ``bit_length(chunk_size) + 5`` bits
        (32 rows' worth of positions) clamped to 12..22 (16 KiB-16 MiB)."""
        return min(22, max(12, int(chunk_size).bit_length() + 5))

    def nbytes(self, n_rows: int, max_len: int, chunk_size: int) -> int:
        """A wave's state at most (one group): the rows' symbols and the two tables."""
        return 4 * (int(n_rows) * (int(max_len) + 1) + 2 * (1 << self.hash_bits(chunk_size))) + 2048

    def new(self, n_rows: int, max_len: int, chunk_size: int, groups: np.ndarray | None = None) -> Any:
        """A fresh :class:`pyllmcodec.core.WaveMatch` for one wave; with
        ``groups`` (each row's archive, where a wave holds several: the rows
        of one archive share a state, so that each archive decodes alone) a
        :class:`GroupedWave` of one state per group."""
        from . import core

        def one() -> Any:
            return core.WaveMatch(n_rows, max(1, max_len), long_len=self.long_len, min_len=self.min_len,
                                  hash_bits=self.hash_bits(chunk_size), rate=self.rate)

        if groups is None or len(set(np.asarray(groups).tolist())) <= 1:
            return one()
        return GroupedWave(np.asarray(groups, dtype=np.int64), one)


class GroupedWave:
    """Wave matches for the groups of a wave's rows (``of_row[r]``: row r's
    group), with :class:`pyllmcodec.core.WaveMatch`'s calls: each call's rows
    go to their group's state in the order given."""

    def __init__(self, of_row: np.ndarray, make: Any) -> None:
        self.of_row = of_row
        self.states = {int(g): make() for g in np.unique(of_row)}

    def _split(self, n: int, rows: Any) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        r = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(r) and (r.min() < 0 or r.max() >= len(self.of_row)):
            raise ValueError(f"rows must be mixer rows in [0, {len(self.of_row)})")
        g = self.of_row[r]
        return [(st, k, r[k]) for gi, st in self.states.items() if len(k := np.flatnonzero(g == gi))]

    def mix_int(self, weights: np.ndarray, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(weights)
        match = np.full(n, -1, dtype=np.int64)
        q = np.zeros(n, dtype=np.uint32)
        for st, k, r in self._split(n, rows):
            match[k], q[k] = st.mix_int(weights[k], rows=r)
        return match, q

    def push(self, symbols: Any, rows: Any = None) -> None:
        s = np.asarray(symbols, dtype=np.int64)
        for st, k, r in self._split(len(s), rows):
            st.push(s[k], rows=r)

    def feed(self, symbols: Any, rows: Any = None) -> None:
        s = np.asarray(symbols, dtype=np.int64)
        for st, k, r in self._split(len(s), rows):
            st.feed(s[k], rows=r)


def spec_from_json(obj: Any) -> MixerSpec | WaveSpec:
    """A manifest's ``codec.mixer`` by its kind (ValueError if malformed)."""
    if isinstance(obj, dict) and obj.get("kind") == WAVE_MIXER_KIND:
        return WaveSpec.from_json(obj)
    return MixerSpec.from_json(obj)


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
