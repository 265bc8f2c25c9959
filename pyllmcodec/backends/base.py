"""The one small interface every inference backend implements.

A :class:`StepModel` is a loaded model session pinned to fixed numerics
(graph, provider, threads, optimisation level).  The scheduler drives it one
symbol at a time for a batch of ``B`` rows that all sit at the same position:

    state = model.new_state(B)
    probs = model.step(state, tokens)   # tokens: int64 [B]; probs: float32 [B, V]

Row ``b`` of ``probs`` is the distribution of the symbol that follows the
tokens fed to row ``b`` so far.  The first token of every chunk is
``model.bos``; after that the scheduler feeds the symbol just coded.  At most
``model.max_context`` steps may be taken from a fresh state.

Row independence (NOTE): for a fixed batch size ``B`` and position, row ``b``'s
output depends only on the tokens fed to row ``b`` -- never on the other rows'
contents.  The codec relies on this to pad finished rows, to skip chunks stored
raw, and to decode one chunk alone (the other rows are fed padding).  It does
NOT assume independence of ``B`` or of the row index: those are part of the
batch geometry that the archive records and the decoder reproduces.

Token-level models (optional surface): a model whose symbols are tokens has a
``tokenizer`` attribute (not None) with ``tokenize_batch(list[bytes]) ->
list[int64 array]``, ``detokenize(ids) -> bytes``, ``token_bytes(id) ->
bytes``, ``vocab_size`` and ``sha256``; see :mod:`pyllmcodec.tokenizer`.
Then ``bos`` is a vocabulary id and ``max_context`` counts tokens.  A model
whose probabilities live on an accelerator may set ``device_quantize = True``
and provide ``step_ranges``, ``step_find`` and ``step_logits`` (see
:class:`pyllmcodec.models.llama.LlamaTorchStepModel` and
:mod:`pyllmcodec.scheduler`): the two-phase step.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["BundleModel", "StepModel", "StepState"]


class StepState(Protocol):
    """Opaque per-batch state (KV cache, position).  Only the model reads it."""

    batch_size: int
    position: int


@runtime_checkable
class StepModel(Protocol):
    #: short registry name, e.g. "default"
    name: str
    #: SHA-256 (hex) identifying the weights + graph; recorded in archives
    sha256: str
    #: number of output symbols (256 for a byte-level model)
    vocab_size: int
    #: input token that starts every chunk (outside the output alphabet)
    bos: int
    #: the most steps one state can take
    max_context: int

    def new_state(self, batch_size: int) -> Any:
        """A fresh state for ``batch_size`` rows at position 0."""

    def step(self, state: Any, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (int64 ``[B]``) and return the float32
        ``[B, vocab_size]`` next-symbol probabilities (C-contiguous; rows need
        not sum to exactly 1).  Advances ``state.position`` by one."""

    def fingerprint(self) -> dict[str, str]:
        """Everything that affects the numerics: backend, provider, library
        versions, CPU instruction-set class or GPU name, graph optimisation
        level, thread settings that matter.  Recorded in archive headers and
        shown on a probe mismatch."""


class BundleModel:
    """The StepModel attributes every backend reads the same way from a bundle
    manifest; backends subclass it and add their session."""

    def __init__(self, bundle: Any):
        m = bundle.manifest
        self.bundle = bundle
        self.name = bundle.name
        self.sha256 = bundle.sha256
        self.vocab_size = int(m["vocab"]["size"])
        self.bos = int(m["vocab"]["bos"])
        self.max_context = int(m["context_length"])
        codec = m.get("codec") or {}
        #: the codec's defaults for this model (bundle manifest ``codec``), or None
        self.default_chunk_size = codec.get("chunk_size")
        self.default_prime = codec.get("prime")
        #: the segments' length the codec uses by default (<= max_context), or None
        self.default_context = codec.get("context")
        #: the match model the bundle ships (manifest ``codec.mixer``), or None
        self.default_mixer = None
        if codec.get("mixer") is not None:
            from ..errors import ModelError
            from ..mixer import MixerSpec

            try:
                self.default_mixer = MixerSpec.from_json(codec["mixer"])
            except ValueError as exc:
                raise ModelError(f"bundle {bundle.name!r}: bad codec.mixer in its manifest: {exc}") from None
