"""pyllmcodec as an fsspec compression: ``compression="llmz"``, and
``compression="infer"`` for names ending in ``.llmz``, on any fsspec file
system (local, memory, s3, ...).

fsspec has no entry point for compressions, so registering is one call::

    import pyllmcodec.fsspec
    pyllmcodec.fsspec.register()                 # idempotent
    with fsspec.open("memory://a.txt.llmz", "wb", compression="infer") as f:
        f.write(data)

Reading needs only the model the archive names; writing uses the default
model and options (``register(model=..., **options)`` changes them).
"""

from __future__ import annotations

from typing import Any

from .codec import LlmzFile

__all__ = ["register"]


def register(model: str | None = None, **options: Any) -> None:
    """Register (again) the ``"llmz"`` compression with fsspec; ``model`` and
    ``options`` are the Compressor's for files opened for writing."""
    from fsspec.compression import register_compression

    def open_llmz(f: Any, mode: str = "rb", **kw: Any) -> LlmzFile:
        if "r" in mode:
            return LlmzFile(f, "rb", **kw)
        return LlmzFile(f, "wb", model=model, **{**options, **kw})

    register_compression("llmz", open_llmz, "llmz", force=True)
