"""Type stubs for the native module pyllmcodec._core (see pyllmcodec.core)."""

from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

DEFAULT_PRECISION: Final[int]
MIN_PRECISION: Final[int]
MAX_PRECISION: Final[int]
MAX_SYMBOLS: Final[int]

_IntArray = npt.ArrayLike

def kernels() -> str: ...
def quantize(
    probs: npt.NDArray[np.float32],
    precision: int = ...,
    out: npt.NDArray[np.uint32] | None = None,
) -> npt.NDArray[np.uint32]: ...

def quantize_int(
    weights: npt.NDArray[np.uint32],
    precision: int = ...,
    match: _IntArray | None = None,
    q: npt.NDArray[np.uint32] | None = None,
    out: npt.NDArray[np.uint32] | None = None,
) -> npt.NDArray[np.uint32]: ...

class BatchEncoder:
    def __init__(self, n_streams: int, precision: int = ...) -> None: ...
    @property
    def n_streams(self) -> int: ...
    @property
    def precision(self) -> int: ...
    def encode(
        self,
        cdf: npt.NDArray[np.uint32],
        symbols: _IntArray,
        rows: _IntArray | None = None,
    ) -> None: ...
    def encode_probs(
        self,
        probs: npt.NDArray[np.float32],
        symbols: _IntArray,
        rows: _IntArray | None = None,
    ) -> None: ...
    def encode_weights(
        self,
        weights: npt.NDArray[np.uint32],
        symbols: _IntArray,
        rows: _IntArray | None = None,
        match: _IntArray | None = None,
        q: npt.NDArray[np.uint32] | None = None,
    ) -> None: ...
    def encode_ranges(
        self,
        cum_low: npt.NDArray[np.uint32],
        freq: npt.NDArray[np.uint32],
        rows: _IntArray | None = None,
    ) -> None: ...
    def finish(self) -> list[bytes]: ...

class BatchDecoder:
    def __init__(
        self, streams: Iterable[bytes | bytearray | memoryview], precision: int = ...
    ) -> None: ...
    @property
    def n_streams(self) -> int: ...
    @property
    def precision(self) -> int: ...
    def positions(self) -> npt.NDArray[np.int64]: ...
    def decode(
        self, cdf: npt.NDArray[np.uint32], rows: _IntArray | None = None
    ) -> npt.NDArray[np.int64]: ...
    def decode_probs(
        self, probs: npt.NDArray[np.float32], rows: _IntArray | None = None
    ) -> npt.NDArray[np.int64]: ...
    def decode_weights(
        self,
        weights: npt.NDArray[np.uint32],
        rows: _IntArray | None = None,
        match: _IntArray | None = None,
        q: npt.NDArray[np.uint32] | None = None,
    ) -> npt.NDArray[np.int64]: ...
    def targets(self, rows: _IntArray | None = None) -> npt.NDArray[np.uint32]: ...
    def advance(
        self,
        symbols: _IntArray,
        cum_low: npt.NDArray[np.uint32],
        freq: npt.NDArray[np.uint32],
        rows: _IntArray | None = None,
    ) -> None: ...

class MatchMixer:
    def __init__(
        self,
        n_rows: int,
        max_len: int,
        prior: _IntArray,
        min_len: int = 4,
        hash_bits: int = 16,
        init_count: int = 30,
        limit: int = 127,
    ) -> None: ...
    @property
    def n_rows(self) -> int: ...
    def length(self, row: int) -> int: ...
    def last_cells(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
    def mix(self, probs: npt.NDArray[np.float32], rows: _IntArray | None = None) -> None: ...
    def mix_int(
        self, weights: npt.NDArray[np.uint32], rows: _IntArray | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]: ...
    def push(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...
    def feed(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...

class WaveMatch:
    def __init__(
        self,
        n_rows: int,
        max_len: int,
        long_len: int = 4,
        min_len: int = 2,
        hash_bits: int = 18,
        rate: int = 5,
    ) -> None: ...
    @property
    def n_rows(self) -> int: ...
    def length(self, row: int) -> int: ...
    def last_cells(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
    def mix_int(
        self, weights: npt.NDArray[np.uint32], rows: _IntArray | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]: ...
    def push(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...
    def feed(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...

class CmState:
    def __init__(self, table_bits: int, kind: int = 1) -> None: ...
    @property
    def table_bits(self) -> int: ...
    @property
    def kind(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def copy(self) -> CmState: ...

class ContextMixer:
    def __init__(self, groups: _IntArray, table_bits: _IntArray,
                 states: Sequence[CmState | None] | None = None, kind: int = 1, max_len: int = 0,
                 priors: _IntArray | None = None) -> None: ...
    def state(self, g: int) -> CmState: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def table_bits(self) -> list[int]: ...
    @property
    def nbytes(self) -> int: ...
    def encode(
        self,
        encoder: BatchEncoder,
        weights: npt.NDArray[np.uint32],
        symbols: _IntArray,
        rows: _IntArray | None = None,
        match: _IntArray | None = None,
        q: npt.NDArray[np.uint32] | None = None,
    ) -> None: ...
    def decode(
        self,
        decoder: BatchDecoder,
        weights: npt.NDArray[np.uint32],
        rows: _IntArray | None = None,
        match: _IntArray | None = None,
        q: npt.NDArray[np.uint32] | None = None,
    ) -> npt.NDArray[np.int64]: ...
    def feed(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...

CM3_PRIOR_WEIGHTS: int

@overload
def cm_trace(
    p_lm: npt.NDArray[np.uint16],
    symbols: _IntArray,
    offsets: _IntArray | None = None,
    shared: bool = False,
    table_bits: int = 16,
    limit: int = 255,
    lr: int = 8,
    wave: int = 0,
    keep: bool = False,
    kind: int = 1,
    priors: _IntArray | None = None,
    weights: Literal[False] = False,
) -> npt.NDArray[np.uint16]: ...
@overload
def cm_trace(
    p_lm: npt.NDArray[np.uint16],
    symbols: _IntArray,
    offsets: _IntArray | None = None,
    shared: bool = False,
    table_bits: int = 16,
    limit: int = 255,
    lr: int = 8,
    wave: int = 0,
    keep: bool = False,
    kind: int = 1,
    priors: _IntArray | None = None,
    *,
    weights: Literal[True],
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.int32]]: ...

class IntLMState:
    position: int
    @property
    def batch_size(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class IntLM:
    def __init__(self, arrays: dict[str, Any], threads: int = ...) -> None: ...
    @property
    def threads(self) -> int: ...
    @property
    def ctx(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def kernels(self) -> str: ...
    @staticmethod
    def _rdiv(a: npt.ArrayLike, b: int) -> npt.NDArray[np.int64]: ...
    def new_state(self, batch_size: int) -> IntLMState: ...
    def step(
        self,
        state: IntLMState,
        tokens: npt.ArrayLike,
        out: npt.NDArray[np.uint32] | npt.NDArray[np.float32],
    ) -> None: ...

class IntLlamaState:
    position: int
    @property
    def batch_size(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class IntLlama:
    def __init__(self, arrays: dict[str, Any], tables: dict[str, Any], threads: int = ...) -> None: ...
    @property
    def threads(self) -> int: ...
    @property
    def ctx(self) -> int: ...
    @property
    def vocab(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def kernels(self) -> str: ...
    @staticmethod
    def _div127(y: npt.ArrayLike, Y: int) -> tuple[npt.NDArray[np.int8], int]: ...
    def new_state(self, batch_size: int) -> IntLlamaState: ...
    def step(self, state: IntLlamaState, tokens: npt.ArrayLike, out: npt.NDArray[np.uint32]) -> None: ...
