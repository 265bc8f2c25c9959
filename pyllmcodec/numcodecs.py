"""A numcodecs codec (Zarr v2 compressor, and anything else that takes numcodecs
codecs): ``pyllmcodec.numcodecs.LLMZ``, registered as ``"pyllmcodec"``
through the ``numcodecs.codecs`` entry point (``pip install
"pyllmcodec[numcodecs]"``).

Each buffer becomes one compact frame (docs/FORMAT.md section 11a: about 43
bytes besides the payload for a small chunk; ``frame="full"`` writes full
archives, ~550) of the chunk's bytes in C order; decoding checks it whole as
:func:`pyllmcodec.decompress` does, with the model the config names.  The
codec's config holds the Compressor options (and a dictionary, hex), so an
array's metadata says how its chunks were coded.  Zarr v3 batches chunks
into one model batch with headerless frames: :mod:`pyllmcodec.zarr`.
"""

from __future__ import annotations

from typing import Any, Literal

from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from .codec import Compressor, Decompressor
from .constants import DEFAULT_MODEL

__all__ = ["LLMZ"]


class LLMZ(Codec):
    """``LLMZ(model="default", level=None, chunk_size=None, batch_size=32)``:
    pyllmcodec as a numcodecs codec (see the module docstring)."""

    codec_id = "pyllmcodec"

    def __init__(self, model: str = DEFAULT_MODEL, level: int | None = None, chunk_size: int | None = None,
                 batch_size: int = 32, frame: Literal["compact", "full"] = "compact",
                 dictionary: str | None = None) -> None:
        self.model, self.level, self.chunk_size, self.batch_size = model, level, chunk_size, batch_size
        self.frame = frame
        #: the dictionary, hex (JSON-able config)
        self.dictionary = dictionary
        self._dict = None if dictionary is None else bytes.fromhex(dictionary)
        self._comp: Compressor | None = None
        self._dec: Decompressor | None = None

    def get_config(self) -> dict[str, Any]:
        cfg = {"id": self.codec_id, "model": self.model, "level": self.level, "chunk_size": self.chunk_size,
               "batch_size": self.batch_size, "frame": self.frame}
        if self.dictionary is not None:
            cfg["dictionary"] = self.dictionary
        return cfg

    def encode(self, buf: Any) -> bytes:
        if self._comp is None:
            self._comp = Compressor(self.model, level=self.level, chunk_size=self.chunk_size,
                                    batch_size=self.batch_size, frame=self.frame, dictionary=self._dict)
        return self._comp.compress(ensure_contiguous_ndarray(buf))

    def decode(self, buf: Any, out: Any = None) -> Any:
        if self._dec is None:
            self._dec = Decompressor(self.model, dictionary=self._dict)
        data = self._dec.decompress(ensure_contiguous_ndarray(buf))
        return ndarray_copy(data, out) if out is not None else data

    def __repr__(self) -> str:
        return (f"LLMZ(model={self.model!r}, level={self.level!r}, chunk_size={self.chunk_size!r}, "
                f"batch_size={self.batch_size!r}, frame={self.frame!r})")
