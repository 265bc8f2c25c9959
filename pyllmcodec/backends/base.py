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

Every attribute the codec reads is declared here.  Besides the five
identity fields and three methods, :class:`StepModel` has:

* the codec's defaults for this model (``default_chunk_size``,
  ``default_prime``, ``default_context``, ``default_mixer``,
  ``default_cm_priors``: None for no preference; a bundle's manifest
  ``codec`` sets them);
* ``tokenizer``: None for a byte-level model; a token-level model's
  :class:`Tokenizer` (see :mod:`pyllmcodec.tokenizer`), and then ``bos`` is a
  vocabulary id and ``max_context`` counts tokens;
* ``device_quantize``: True for a model whose probabilities live on an
  accelerator and that quantizes there: it is then a
  :class:`TwoPhaseStepModel` (see :mod:`pyllmcodec.scheduler`);
* ``integer_rows``: True for a model whose ``step`` returns uint32 weights
  (an exact model's): the codec quantizes them with the core's integer entry
  (``core.quantize_int``, ``encode_weights`` / ``decode_weights``), so no
  float touches the coded probabilities;
* ``legacy_numerics()``: the same model under numerics older archives were
  written with (an empty list for most): a decoder whose probe digest does
  not match the archive's tries these before it gives up.

:class:`StepModelBase` gives the optional ones their neutral values: subclass
it (or set them) when writing a model of your own.  Every StepModel in the
package lives in this package (``backends/``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..cmpriors import CmPriors
from ..errors import ModelError
from ..mixer import MixerSpec, WaveSpec, spec_from_json
from ..tokenizer import Tokenizer, load_bundle_tokenizer

__all__ = ["BundleModel", "StepModel", "StepModelBase", "StepState", "Tokenizer", "TwoPhaseStepModel"]


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
    #: the codec's default chunk size (bytes) for this model, or None
    default_chunk_size: int | None
    #: the codec's default prime of segments, or None
    default_prime: int | None
    #: the segments' length the codec uses by default (<= max_context), or None
    default_context: int | None
    #: the match model the model ships (docs/FORMAT.md section 4c), or None
    default_mixer: MixerSpec | WaveSpec | None
    #: the context-mixing stage's priors the model ships (docs/FORMAT.md section 4f), or None
    default_cm_priors: CmPriors | None
    #: a token-level model's tokenizer; None for a byte-level model
    tokenizer: Tokenizer | None
    #: quantize on the model's device (then it is a TwoPhaseStepModel)
    device_quantize: bool
    #: step returns uint32 weights for the core's integer quantizer
    integer_rows: bool

    def legacy_numerics(self) -> list[Any]:
        """This model under the numerics of older archives (StepModels that
        share its weights), newest first; usually empty."""

    def new_state(self, batch_size: int) -> Any:
        """A fresh state for ``batch_size`` rows at position 0."""

    def step(self, state: Any, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (int64 ``[B]``) and return the float32
        ``[B, vocab_size]`` next-symbol probabilities (C-contiguous; rows need
        not sum to exactly 1; uint32 weights where ``integer_rows``).
        Advances ``state.position`` by one."""

    def fingerprint(self) -> dict[str, str]:
        """Everything that affects the numerics: backend, provider, library
        versions, CPU instruction-set class or GPU name, graph optimisation
        level, thread settings that matter.  Recorded in archive headers and
        shown on a probe mismatch."""

    def state_bytes(self, batch_size: int) -> int:
        """The memory a state of ``batch_size`` rows takes (KV cache and
        buffers; 0: small or unknown): what the codec checks against its
        ``max_memory`` before it makes one."""


@runtime_checkable
class TwoPhaseStepModel(StepModel, Protocol):
    """A model that quantizes where its probabilities live (an accelerator)
    with the core's algorithm and hands the host O(B) numbers per step."""

    def step_ranges(self, state: Any, tokens: np.ndarray, symbols: np.ndarray,
                    precision: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoder step: ``(cum_low, freq)`` uint32 ``[B]`` of ``symbols`` in
        the quantized table of this step's distribution."""

    def step_find(self, state: Any, tokens: np.ndarray, targets: np.ndarray,
                  precision: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder step: ``(symbol, cum_low, freq)`` ``[B]`` for the core
        decoder's ``targets`` (uint32 ``[B]``)."""

    def step_tables(self, state: Any, tokens: np.ndarray, precision: int) -> np.ndarray:
        """One step's whole quantized tables (uint32 ``[B, V + 1]``, the
        core's ``quantize`` layout): what the probe digest hashes."""


class StepModelBase:
    """The optional :class:`StepModel` attributes at their neutral values
    (no codec preferences, byte-level, host quantization)."""

    default_chunk_size: int | None = None
    default_prime: int | None = None
    default_context: int | None = None
    default_mixer: MixerSpec | WaveSpec | None = None
    default_cm_priors: CmPriors | None = None
    tokenizer: Tokenizer | None = None
    device_quantize: bool = False
    integer_rows: bool = False

    def state_bytes(self, batch_size: int) -> int:
        return 0

    def legacy_numerics(self) -> list[Any]:
        return []


class BundleModel(StepModelBase):
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
        self.tokenizer = load_bundle_tokenizer(bundle)  # None for a byte-level bundle
        kv = m["graphs"].get("step", {}).get("kv_cache") or {}
        #: bytes of one row's state: float32 keys and values of every layer, and its probabilities
        self.row_state_bytes = 4 * (2 * int(kv.get("n_layer", 0)) * int(kv.get("n_kv_head", 0))
                                    * int(kv.get("max_len", 0)) * int(kv.get("head_dim", 0)) + self.vocab_size)
        codec = m.get("codec") or {}
        self.default_chunk_size = codec.get("chunk_size")
        self.default_prime = codec.get("prime")
        self.default_context = codec.get("context")
        if codec.get("mixer") is not None:
            try:
                self.default_mixer = spec_from_json(codec["mixer"])
            except ValueError as exc:
                raise ModelError(f"bundle {bundle.name!r}: bad codec.mixer in its manifest: {exc}") from None
        if codec.get("cm") is not None:
            try:
                self.default_cm_priors = CmPriors.from_json(codec["cm"])
            except ValueError as exc:
                raise ModelError(f"bundle {bundle.name!r}: bad codec.cm in its manifest: {exc}") from None

    def state_bytes(self, batch_size: int) -> int:
        return int(batch_size) * self.row_state_bytes
