"""Type stubs for the native module pyllmcodec._core (see pyllmcodec.core)."""

from collections.abc import Iterable
from typing import Final

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
    def push(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...
    def feed(self, symbols: _IntArray, rows: _IntArray | None = None) -> None: ...
