"""Regression tests for what the fuzzers found (docs/RELIABILITY.md, "Findings").

Each test rebuilds the finding's input with valid checksums (through
fuzz.mutate's lenient archive builder) and checks that every decoder entry
point raises CodecError -- or, for a differential finding, that the entry
points agree.  Inputs saved under fuzz/regressions/ are replayed through every
target as well.
"""

from __future__ import annotations

import io
import os
import sys

import pytest
from conftest import with_meta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # for fuzz/

import pyllmcodec
from fuzz import targets
from fuzz.mutate import build_loose, parse_loose
from pyllmcodec import CodecError, Compressor, FormatError
from pyllmcodec.container import ArchiveIndex, ArchiveReader

REGRESSIONS = os.path.join(os.path.dirname(HERE), "fuzz", "regressions")
TEXT = b"The quick brown fox jumps over the lazy dog. " * 4


@pytest.fixture(scope="module")
def model_archive():
    targets.setup()
    return Compressor("test-bigram", chunk_size=64, batch_size=2, fallback="stored").compress(TEXT)


def every_entry_point_refuses(blob: bytes, match: str | None = None) -> None:
    dec = pyllmcodec.Decompressor()
    calls = [
        lambda: pyllmcodec.decompress(blob),
        lambda: dec.decompress(blob),
        lambda: pyllmcodec.open(io.BytesIO(blob)).read(),
        lambda: b"".join(dec.stream_reader(blob)),
    ]
    for call in calls:
        with pytest.raises(CodecError, match=match):
            call()


def test_trailing_data_is_refused_by_the_streaming_reader_too(model_archive):
    """Found by the container differential: ArchiveIndex refused trailing bytes
    but ArchiveReader (open(), stream_reader, the CLI) ignored them, so
    `cat a.llmz b.llmz | pyllmcodec -d` silently dropped b.  Since then
    concatenated archives decode to the concatenation (as gzip members do) and
    single-archive readers refuse them by name; other trailing bytes are
    refused everywhere."""
    bad = model_archive + b"\0"
    with pytest.raises(FormatError, match="trail"):
        ArchiveIndex(bad)
    with pytest.raises(FormatError, match="trailing data"):
        for _ in ArchiveReader(io.BytesIO(bad)).blocks():
            pass
    every_entry_point_refuses(bad, match="trail")
    both = model_archive + model_archive
    with pytest.raises(FormatError, match="2 concatenated archives"):
        ArchiveIndex(both)
    with pytest.raises(FormatError, match="trailing data"):
        for _ in ArchiveReader(io.BytesIO(both)).blocks():  # a single-archive reader
            pass
    assert pyllmcodec.decompress(both) == TEXT + TEXT
    assert pyllmcodec.open(io.BytesIO(both)).read() == TEXT + TEXT
    targets.container(model_archive + b"junk")  # the differential agrees
    targets.archive(both)


@pytest.mark.parametrize("precision", [1, 0, 8, 32])
def test_precision_the_coder_cannot_run_is_a_format_error(model_archive, precision):
    """Found by the archive target: a header with a valid CRC and precision 1
    (or 8 with 256 symbols) reached the core, which raised ValueError."""
    bad = with_meta(model_archive, precision=precision)
    every_entry_point_refuses(bad, match="precision")


def test_vocabulary_too_large_for_precision(model_archive):
    lz = parse_loose(model_archive)
    lz.meta["precision"] = 9  # 2^(9-1) = 256 symbols: still fine
    assert pyllmcodec.info(build_loose(lz))["precision"] == 9
    lz.meta["precision"] = 8  # 128 < 256 symbols
    every_entry_point_refuses(build_loose(lz), match="symbols")


@pytest.mark.parametrize("pad", [257, 4096, 1 << 24])
def test_pad_token_outside_the_model_is_a_format_error(model_archive, pad):
    """A pad token the model has no embedding for was fed to it (IndexError in
    the fake model; an ONNX Runtime error in a real one)."""
    every_entry_point_refuses(with_meta(model_archive, pad_token=pad), match="pad token")


def test_saved_regression_inputs_replay_cleanly():
    targets.setup()
    if not os.path.isdir(REGRESSIONS):
        pytest.skip("no saved regression inputs")
    names = sorted(os.listdir(REGRESSIONS))
    for name in names:
        with open(os.path.join(REGRESSIONS, name), "rb") as fh:
            data = fh.read()
        target = name.split("-", 1)[0]
        for t in ([targets.core_decoder] if target == "core" else [targets.container, targets.archive]):
            t(data)  # returns or raises CodecError; Mismatch or anything else fails
