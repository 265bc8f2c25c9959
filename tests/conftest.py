"""Shared fixtures: a tiny deterministic pure-numpy StepModel ("test-bigram").

The fake model is a byte bigram table (learned from a fixed English paragraph,
smoothed, with seeded noise) so it genuinely compresses text.  On purpose its
outputs also depend on the batch size, the row index and the position (a
small multiplicative perturbation chosen by a hash of the three), exactly the
freedom the StepModel contract leaves a real backend -- so any encoder/decoder
disagreement about geometry shows up as a decode failure in the tests.  Rows
are independent of each other's contents, as the contract requires.

``register()`` registers it under "test-bigram"; the CLI subprocess tests
import this file to do the same in the child process.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from pyllmcodec.backends.base import StepModelBase

CORPUS = (
    b"The quick brown fox jumps over the lazy dog. A language model assigns a probability to "
    b"every next byte, and an arithmetic coder turns those probabilities into a short code: "
    b"the better the model predicts, the fewer bits each byte costs. This paragraph is the "
    b"only thing the test model has ever read, so it knows English letters, spaces, commas and "
    b"full stops, and little else. Compression is prediction; prediction is compression. "
    b"When the text is ordinary prose the coded size drops to well under half of the input, "
    b"while random bytes come out a little larger and are therefore stored as they are. "
    b"def main():\n    return 0\n\nif __name__ == '__main__':\n    main()\n"
)


@dataclass
class FakeState:
    batch_size: int
    position: int = 0
    kv: Any = None


class BigramModel(StepModelBase):
    """A deterministic numpy StepModel (V=256, bos=256)."""

    vocab_size = 256
    bos = 256

    def __init__(self, *, name: str = "test-bigram", variant: int = 0, max_context: int = 4096,
                 work: int = 0, seed: int = 1234) -> None:
        self.name = name
        self.max_context = max_context
        self.variant = variant
        self.work = work
        counts = np.full((257, 256), 0.02, dtype=np.float64)
        data = np.frombuffer(CORPUS, dtype=np.uint8)
        np.add.at(counts, (data[:-1], data[1:]), 1.0)
        counts[256] += np.bincount(data, minlength=256)  # after bos: unigram
        rng = np.random.default_rng(seed)
        counts *= rng.uniform(0.9, 1.1, size=counts.shape)
        self.table = (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)
        # geometry-dependent perturbation: factor vectors picked by (B, row, pos)
        self.mod = rng.uniform(0.97, 1.03, size=(64, 256)).astype(np.float32)
        if variant:  # "another machine": same weights, slightly different numerics
            self.mod = (self.mod * np.float32(1.0 + 1e-3 * variant)).astype(np.float32)
            self.mod[:, ::2] *= np.float32(1.001)
        self.sha256 = hashlib.sha256(self.table.tobytes()).hexdigest()
        self._w = rng.standard_normal((work, work)).astype(np.float32) if work else None
        self.steps = 0

    def new_state(self, batch_size: int) -> FakeState:
        st = FakeState(int(batch_size))
        st.kv = np.zeros(self.state_bytes(batch_size), dtype=np.uint8)  # reserved, never touched
        return st

    def state_bytes(self, batch_size: int) -> int:
        """Each row holds a 64 KiB state (a real model's KV cache is 2 MiB), so
        that the codec's memory budget -- and a decoder that ignored it --
        behave as with a real model."""
        return int(batch_size) << 16

    def step(self, state: FakeState, tokens: np.ndarray) -> np.ndarray:
        b = state.batch_size
        if tokens.shape != (b,) or tokens.dtype != np.int64:
            raise ValueError(f"tokens must be int64 [{b}], got {tokens.dtype} {tokens.shape}")
        if state.position >= self.max_context:
            raise RuntimeError("stepped past max_context")
        idx = (b * 31 + np.arange(b) * 7 + state.position * 3) % 64
        state.position += 1
        self.steps += 1
        if self._w is not None:  # simulate a heavier network (row-independent)
            x = self.table[tokens, : self.work]
            for _ in range(4):
                x = np.tanh(x @ self._w)
        return self.table[tokens] * self.mod[idx]

    def fingerprint(self) -> dict[str, str]:
        return {"backend": "numpy-fake", "numpy": np.__version__, "variant": str(self.variant)}


_MODELS: dict[tuple[int, int], BigramModel] = {}


def get_model(variant: int = 0, max_context: int = 4096) -> BigramModel:
    key = (variant, max_context)
    if key not in _MODELS:
        _MODELS[key] = BigramModel(variant=variant, max_context=max_context)
    return _MODELS[key]


# ------------------------------------------------------------------ a token-level fake model

PROSE = (b"The quick brown fox jumps over the lazy dog; then the dog sleeps in the sun.\n"
         b"In the beginning there was a cat, and the cat sat in the hat.\n") * 8
DENSE = bytes(range(32, 127)) * 6  # one token per byte: far over a 40-token context


def _tiny_tokenizer() -> Any:
    """All 256 byte tokens, a control token and a few merges (needs ``tokenizers``
    only to tokenize)."""
    from pyllmcodec.tokenizer import BPETokenizer, bytes_to_unicode

    b2u = bytes_to_unicode()
    toks = ["<|endoftext|>"] + [b2u[b] for b in range(256)]
    merges = ["t h", "th e", "Ġ the", "i n", "Ġ in", "Ġ a", "e r"]
    toks += ["th", "the", "Ġthe", "in", "Ġin", "Ġa", "er"]
    return BPETokenizer(toks, merges, [3] + [1] * (len(toks) - 1), pre="smollm")


class TokenModel(StepModelBase):
    """A deterministic, row-independent numpy token-level StepModel: a token
    bigram fitted to PROSE and DENSE, over a tiny BPE, with a small context
    (so that dense cells must be split).  Registered as "test-tokens"."""

    bos = 0

    def __init__(self, max_context: int = 40) -> None:
        self.tokenizer = _tiny_tokenizer()
        self.vocab_size = self.tokenizer.vocab_size
        self.max_context = max_context
        self.name = "test-tokens" if max_context == 40 else f"test-tokens-{max_context}"
        t = np.full((self.vocab_size, self.vocab_size), 0.01)
        for text in (PROSE, DENSE):
            ids = np.concatenate([[self.bos], self.tokenizer.tokenize(text)])
            np.add.at(t, (ids[:-1], ids[1:]), 1.0)
        self.table = (t / t.sum(axis=1, keepdims=True)).astype(np.float32)
        self.sha256 = hashlib.sha256(self.table.tobytes()).hexdigest()

    def new_state(self, batch_size: int) -> FakeState:
        return FakeState(int(batch_size))

    def step(self, state: FakeState, tokens: np.ndarray) -> np.ndarray:
        if state.position >= self.max_context:
            raise RuntimeError("stepped past max_context")
        state.position += 1
        return self.table[tokens]

    def fingerprint(self) -> dict[str, str]:
        return {"backend": "numpy-fake-tokens", "numpy": np.__version__}


_TOKEN_MODELS: dict[int, TokenModel] = {}


def get_token_model(max_context: int = 40) -> TokenModel:
    if max_context not in _TOKEN_MODELS:
        _TOKEN_MODELS[max_context] = TokenModel(max_context)
    return _TOKEN_MODELS[max_context]


class IntTokenModel(TokenModel):
    """The token model with integer rows (uint32 weights, like the exact
    SmolLM2 tier's), running the wave match (docs/FORMAT.md section 4g);
    registered as "test-tokens-wave"."""

    integer_rows = True

    def __init__(self) -> None:
        from pyllmcodec.mixer import WaveSpec

        super().__init__(40)
        self.name = "test-tokens-wave"
        self.weights = np.floor(self.table.astype(np.float64) * 2**24).astype(np.uint32) + 1
        self.sha256 = hashlib.sha256(self.weights.tobytes()).hexdigest()
        self.default_mixer = WaveSpec()

    def step(self, state: FakeState, tokens: np.ndarray) -> np.ndarray:
        super().step(state, tokens)
        return self.weights[tokens]


_INT_TOKENS: list[IntTokenModel] = []


def get_int_token_model() -> IntTokenModel:
    if not _INT_TOKENS:
        _INT_TOKENS.append(IntTokenModel())
    return _INT_TOKENS[0]


_SHORT: list[BigramModel] = []


def get_short_model() -> BigramModel:
    """The bigram model with a 32-symbol context, registered as
    "test-bigram-ctx32": chunks longer than that are coded in segments."""
    if not _SHORT:
        _SHORT.append(BigramModel(name="test-bigram-ctx32", max_context=32))
    return _SHORT[0]


_MIXER: list[BigramModel] = []


def get_mixer_model() -> BigramModel:
    """The bigram model shipping a match model (a fixed, made-up prior),
    registered as "test-bigram-mixer" (docs/FORMAT.md section 4c)."""
    if not _MIXER:
        from pyllmcodec.mixer import MixerSpec

        m = BigramModel(name="test-bigram-mixer")
        m.default_mixer = MixerSpec(prior=tuple(int(v) for v in np.linspace(20000, 64000, 256)))
        _MIXER.append(m)
    return _MIXER[0]


class IntBigramModel(BigramModel):
    """The bigram model with integer rows (uint32 weights, like the exact
    models'), so that it codes through the integer quantizer and the
    context-mixing stage; registered as "test-bigram-int"."""

    integer_rows = True

    def __init__(self) -> None:
        super().__init__(name="test-bigram-int")
        self.weights = np.floor(self.table.astype(np.float64) * 2**24).astype(np.uint32) + 1
        self.sha256 = hashlib.sha256(self.weights.tobytes()).hexdigest()

    def step(self, state: FakeState, tokens: np.ndarray) -> np.ndarray:
        super().step(state, tokens)  # the checks and the position
        return self.weights[tokens]


_INT: list[IntBigramModel] = []


def get_int_model() -> IntBigramModel:
    if not _INT:
        _INT.append(IntBigramModel())
    return _INT[0]


_INT_PRIORS: list[IntBigramModel] = []


def get_int_priors_model() -> IntBigramModel:
    """The integer bigram model shipping cm3 priors (a bundle's codec.cm,
    docs/FORMAT.md section 4f): its archives record cm.priors; registered as
    "test-bigram-int-priors"."""
    if not _INT_PRIORS:
        from pyllmcodec import _core
        from pyllmcodec.cmpriors import CmPriors

        m = IntBigramModel()
        m.name = "test-bigram-int-priors"
        w = np.random.default_rng(11).integers(-4000, 4000, int(_core.CM3_PRIOR_WEIGHTS))
        w[::22] += 65536  # near the model alone, leaning on the counters a little
        m.default_cm_priors = CmPriors.from_array(w)
        _INT_PRIORS.append(m)
    return _INT_PRIORS[0]


def register() -> None:
    from pyllmcodec.models import register_model

    register_model("test-bigram", lambda **_: get_model(), replace=True)
    register_model("test-bigram-ctx32", lambda **_: get_short_model(), replace=True)
    register_model("test-bigram-mixer", lambda **_: get_mixer_model(), replace=True)
    register_model("test-bigram-int", lambda **_: get_int_model(), replace=True)
    register_model("test-bigram-int-priors", lambda **_: get_int_priors_model(), replace=True)
    register_model("test-tokens", lambda **_: get_token_model(), replace=True)  # built on first use
    register_model("test-tokens-wave", lambda **_: get_int_token_model(), replace=True)


register()


def default_model_available() -> bool:
    try:
        from pyllmcodec.models import available_models

        return "default" in available_models()
    except Exception:
        return False


needs_default = pytest.mark.skipif(not default_model_available(), reason="default model not shipped yet")

TEXT = (CORPUS * 40)[:9000] + b"\n".join(b"line %d: the fox and the dog" % i for i in range(300))


@pytest.fixture
def model() -> BigramModel:
    return get_model()


@pytest.fixture
def comp(model):
    """A small-geometry Compressor: 256-byte chunks, batch 4."""
    from pyllmcodec import Compressor

    return Compressor(model, chunk_size=256, batch_size=4)


@pytest.fixture
def decomp(model):
    from pyllmcodec import Decompressor

    return Decompressor(model)


@pytest.fixture
def text() -> bytes:
    return TEXT


def fuzz_enabled() -> bool:
    return bool(os.environ.get("PYLLMCODEC_FUZZ"))


def with_meta(blob: bytes, flags_xor: int = 0, **changes: Any) -> bytes:
    """``blob`` with its header metadata changed (a value of None removes the
    key) and its header flags XORed with ``flags_xor``, rebuilt with every
    CRC, offset and footer consistent (``fuzz.mutate``'s lenient builder):
    a well-formed archive with a hostile header."""
    import sys

    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for fuzz/
    from fuzz.mutate import build_loose, parse_loose

    lz = parse_loose(blob)
    assert lz is not None
    for k, v in changes.items():
        if v is None:
            lz.meta.pop(k, None)
        else:
            lz.meta[k] = v
    lz.flags ^= flags_xor
    return build_loose(lz)


def count_steps(monkeypatch: Any) -> dict[str, int]:
    """Count the fake model's steps from now on: ``counter["n"]``."""
    model = get_model()
    real = type(model).step
    counter = {"n": 0}

    def step(self: Any, state: Any, tokens: np.ndarray) -> np.ndarray:
        counter["n"] += 1
        return real(self, state, tokens)

    monkeypatch.setattr(type(model), "step", step)
    return counter
