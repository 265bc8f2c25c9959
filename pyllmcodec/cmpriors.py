"""The context-mixing stage's priors (docs/FORMAT.md section 4f).

A fresh cm3 state starts its three mixers from fixed weights (65536 on the
model's input, 0 elsewhere: the model alone) and learns within the first
kilobytes what to trust.  A model bundle may ship weights fitted offline on
held-out training text instead (``codec.cm`` in its manifest, fitted by
``training/fit_cm_priors.py``): a fresh state then starts where a state
that has coded text of that kind ended.  The codec records the priors'
digest in the archive header (``cm.priors``), so a decoder whose bundle
ships other weights refuses the archive before it decodes a byte.  The
layout and the bounds are csrc/cm.hpp's (``Params::priors``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from . import _core

__all__ = ["CM_PRIORS_KIND", "CmPriors"]

#: the stage kind the priors are weights of (the only one with priors)
CM_PRIORS_KIND = "cm3"
#: mixer 1's, 2's and 3's weights, each [sets][inputs] (csrc/cm.hpp kPriorWeights)
N_WEIGHTS = int(_core.CM3_PRIOR_WEIGHTS)
#: |a weight| is at most this (2^24, 256.0 in the weights' 16.16)
MAX_WEIGHT = 1 << 24


@dataclass(frozen=True)
class CmPriors:
    """cm3's initial mixer weights: ``weights``, :data:`N_WEIGHTS` ints in
    -2^24..2^24 (16.16 fixed point) in csrc/cm.hpp's layout."""

    weights: tuple[int, ...]
    kind: str = CM_PRIORS_KIND

    def __post_init__(self) -> None:
        if self.kind != CM_PRIORS_KIND:
            raise ValueError(f"cm priors of kind {str(self.kind)[:32]!r}: this pyllmcodec has priors for "
                             f"{CM_PRIORS_KIND!r} only")
        if len(self.weights) != N_WEIGHTS:
            raise ValueError(f"cm priors must be {N_WEIGHTS} weights, got {len(self.weights)}")
        for k, v in enumerate(self.weights):
            if not isinstance(v, int) or isinstance(v, bool) or not -MAX_WEIGHT <= v <= MAX_WEIGHT:
                raise ValueError(f"cm priors weight {k} must be an int in -2^24..2^24, got {v!r}")

    @classmethod
    def from_array(cls, weights: Any) -> CmPriors:
        """Priors from an integer array (e.g. ``core.cm_trace(..., weights=True)``'s)."""
        a = np.asarray(weights)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError("cm priors must be a 1-D integer array")
        return cls(weights=tuple(int(v) for v in a))

    @classmethod
    def from_json(cls, obj: Any) -> CmPriors:
        """The priors from a manifest's ``codec.cm`` object (ValueError if malformed)."""
        if not isinstance(obj, dict) or set(obj) != {"kind", "weights"}:
            raise ValueError("cm priors must be a JSON object {kind, weights}")
        if not isinstance(obj["weights"], list):
            raise ValueError("cm priors weights must be a list")
        return cls(weights=tuple(obj["weights"]), kind=obj["kind"])

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": list(self.weights)}

    @cached_property
    def digest(self) -> str:
        """What archives record: 16 hex digits of the SHA-256 of the canonical
        JSON (sorted keys, no spaces)."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @cached_property
    def array(self) -> np.ndarray:
        """The weights as int32 (read-only), for ``core.ContextMixer(..., priors=)``."""
        a = np.asarray(self.weights, dtype=np.int32)
        a.flags.writeable = False
        return a
