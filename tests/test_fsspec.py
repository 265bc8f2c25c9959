"""pyllmcodec as an fsspec compression (issue 17, part)."""

from __future__ import annotations

import pytest
from conftest import TEXT

fsspec = pytest.importorskip("fsspec")


def test_llmz_compression_on_an_fsspec_file_system():
    import pyllmcodec
    import pyllmcodec.fsspec

    pyllmcodec.fsspec.register(model="test-bigram", chunk_size=64)
    pyllmcodec.fsspec.register(model="test-bigram", chunk_size=64)  # idempotent
    with fsspec.open("memory://d/a.txt.llmz", "wb", compression="infer") as f:
        f.write(TEXT[:500])
    raw = fsspec.open("memory://d/a.txt.llmz", "rb").open().read()
    assert pyllmcodec.info(raw)["chunk_size"] == 64 and pyllmcodec.decompress(raw) == TEXT[:500]
    with fsspec.open("memory://d/a.txt.llmz", "rb", compression="infer") as f:
        assert f.read() == TEXT[:500]
    with fsspec.open("memory://d/a.txt.llmz", "rt", compression="llmz", encoding="utf-8") as f:
        assert f.read() == TEXT[:500].decode()
