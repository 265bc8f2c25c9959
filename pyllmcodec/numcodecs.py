"""A numcodecs codec (Zarr v2 compressor, and anything else that takes numcodecs
codecs): ``pyllmcodec.numcodecs.LLMZ``, registered as ``"pyllmcodec"``
through the ``numcodecs.codecs`` entry point (``pip install
"pyllmcodec[numcodecs]"``).

Each buffer becomes one archive (the chunk's bytes in C order); decoding
checks it whole as :func:`pyllmcodec.decompress` does.  The codec's config
holds the Compressor options, so an array's metadata says how its chunks were
coded; decoding needs only the model the archives name.  Small buffers pay
the archive's header (about 550 bytes; issue 17 plans compact frames).
"""

from __future__ import annotations

from typing import Any

from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from .codec import Compressor, Decompressor

__all__ = ["LLMZ"]


class LLMZ(Codec):
    """``LLMZ(model="default", level=None, chunk_size=None, batch_size=32)``:
    pyllmcodec as a numcodecs codec (see the module docstring)."""

    codec_id = "pyllmcodec"

    def __init__(self, model: str = "default", level: int | None = None, chunk_size: int | None = None,
                 batch_size: int = 32) -> None:
        self.model, self.level, self.chunk_size, self.batch_size = model, level, chunk_size, batch_size
        self._comp: Compressor | None = None
        self._dec: Decompressor | None = None

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "model": self.model, "level": self.level, "chunk_size": self.chunk_size,
                "batch_size": self.batch_size}

    def encode(self, buf: Any) -> bytes:
        if self._comp is None:
            self._comp = Compressor(self.model, level=self.level, chunk_size=self.chunk_size,
                                    batch_size=self.batch_size)
        return self._comp.compress(ensure_contiguous_ndarray(buf))

    def decode(self, buf: Any, out: Any = None) -> Any:
        if self._dec is None:
            self._dec = Decompressor()
        data = self._dec.decompress(ensure_contiguous_ndarray(buf))
        return ndarray_copy(data, out) if out is not None else data

    def __repr__(self) -> str:
        return (f"LLMZ(model={self.model!r}, level={self.level!r}, chunk_size={self.chunk_size!r}, "
                f"batch_size={self.batch_size!r})")
