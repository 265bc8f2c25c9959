"""File objects: stream_writer / stream_reader / open, and the memory bound."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc

import pytest
from conftest import TEXT, count_steps, get_model

import pyllmcodec
from pyllmcodec import ChecksumError, Compressor, Decompressor, FormatError, LlmzFile

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def comp():
    return Compressor(get_model(), chunk_size=128, batch_size=3)


@pytest.mark.parametrize("piece", [1, 7, 128, 383, 384, 385, 10_000])
def test_streaming_equals_one_shot(comp, piece):
    data = TEXT[:5000]
    sink = io.BytesIO()
    with comp.stream_writer(sink) as w:
        for i in range(0, len(data), piece):
            assert w.write(data[i : i + piece]) == len(data[i : i + piece])
        assert w.tell() == len(data)
    assert sink.getvalue() == comp.compress(data)
    assert not sink.closed  # closefd=False by default


def test_stream_writer_empty(comp):
    sink = io.BytesIO()
    comp.stream_writer(sink).close()
    assert sink.getvalue() == comp.compress(b"")


def test_stream_reader_read_patterns(comp):
    data = TEXT[:4000]
    blob = comp.compress(data)
    dec = Decompressor(get_model())
    assert dec.stream_reader(blob).read() == data
    r = dec.stream_reader(io.BytesIO(blob))
    parts = []
    while True:
        b = r.read(333)
        if not b:
            break
        parts.append(b)
    assert b"".join(parts) == data and r.tell() == len(data)
    r = dec.stream_reader(blob)
    assert r.read1(10) == data[:10]
    buf = bytearray(100)
    assert r.readinto(buf) == 100 and bytes(buf) == data[10:110]
    assert r.read(0) == b""
    assert r.read() == data[110:]
    assert r.read() == b""
    r = dec.stream_reader(blob)
    assert b"".join(r) == data  # line iteration via BufferedIOBase


def test_stream_reader_checks_chunk_crcs(comp):
    data = TEXT[:3000]
    blob = bytearray(comp.compress(data))
    from pyllmcodec.container import ArchiveIndex

    ix = ArchiveIndex(bytes(blob))
    blob[ix.blocks[1].payload_offset + 3] ^= 0x40
    r = Decompressor(get_model()).stream_reader(bytes(blob))
    with pytest.raises(ChecksumError, match=r"chunk \d"):
        r.read()


def test_stream_reader_truncated(comp):
    blob = comp.compress(TEXT[:3000])
    with pytest.raises(FormatError):
        Decompressor(get_model()).stream_reader(blob[:-5]).read()


def test_open_binary_and_text(tmp_path):
    p = tmp_path / "a.llmz"
    kw = dict(model=get_model(), chunk_size=256, batch_size=2)
    with pyllmcodec.open(p, "wb", **kw) as f:
        f.write(TEXT[:1000])
        f.write(TEXT[1000:3000])
    with pyllmcodec.open(p, "rb", model=get_model()) as f:
        assert f.read() == TEXT[:3000]
    with pyllmcodec.open(str(p), "rb") as f:  # model by the archive's name
        assert f.read(5) == TEXT[:5]
    with pyllmcodec.open(p, "wt", encoding="utf-8", **kw) as f:
        f.write("héllo\nwörld\n")
    with pyllmcodec.open(p, "rt", encoding="utf-8") as f:
        assert f.readlines() == ["héllo\n", "wörld\n"]
    with pytest.raises(FileExistsError):
        pyllmcodec.open(p, "xb", **kw)
    with pytest.raises(ValueError):
        pyllmcodec.open(p, "ab")
    with pytest.raises(ValueError):
        pyllmcodec.open(p, "rbt")


def test_open_on_file_objects():
    sink = io.BytesIO()
    with pyllmcodec.open(sink, "wb", model=get_model()) as f:
        f.write(b"abc" * 100)
        assert f.writable() and not f.readable() and f.seekable()  # forward only, as gzip's writer
        assert f.seek(0, io.SEEK_CUR) == 300 and f.seek(303) == 303  # the gap is written as zeros
        with pytest.raises(OSError, match="negative seek"):
            f.seek(0)
    assert not sink.closed
    f = pyllmcodec.open(io.BytesIO(sink.getvalue()))
    assert isinstance(f, LlmzFile) and f.readable() and f.read() == b"abc" * 100 + b"\0\0\0"
    assert f.seekable()  # a seekable source: through the chunk index
    f.close()
    with pytest.raises(ValueError):
        f.read()


def test_module_level_stream_functions():
    sink = io.BytesIO()
    with pyllmcodec.stream_writer(sink, get_model(), chunk_size=64, batch_size=2) as w:
        w.write(TEXT[:700])
    assert pyllmcodec.stream_reader(sink.getvalue(), get_model()).read() == TEXT[:700]


class _Null:
    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)
        return len(b)


def _stream_peak(n_bytes: int, comp: Compressor) -> int:
    piece = TEXT * 4
    tracemalloc.start()
    try:
        w = comp.stream_writer(_Null())
        done = 0
        while done < n_bytes:
            k = min(len(piece), n_bytes - done)
            w.write(piece[:k])
            done += k
        w.close()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stream_compress_memory_is_bounded_by_the_wave_not_the_input():
    """Peak Python/numpy allocation while streaming is O(batch * chunk), not
    O(input): 256 KiB and 1 MiB inputs peak alike, under 40 * B * C + 2 MiB
    plus the model state of a wave's rows (the fake's is numpy, so traced)."""
    comp = Compressor(get_model(), chunk_size=256, batch_size=32, fallback="stored")
    small = _stream_peak(1 << 18, comp)
    large = _stream_peak(1 << 20, comp)
    wave = comp.batch_size * comp.chunk_size
    assert large < 40 * wave + (2 << 20) + comp.model.state_bytes(comp.batch_size), (small, large)
    assert large < small * 1.25 + 65536, (small, large)


@pytest.mark.skipif(not os.environ.get("PYLLMCODEC_SLOW"), reason="set PYLLMCODEC_SLOW=1 (compresses 100 MB)")
def test_cli_100mb_peak_rss(tmp_path):
    """Peak RSS of the CLI compressing a 100 MB file stays under the model plus
    a bound proportional to batch x context (here < 200 MiB all told)."""
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.writelines((TEXT * 60)[: 1 << 20] for _ in range(100))
    code = (
        "import sys, resource; sys.path.insert(0, %r); import conftest; "
        "from pyllmcodec.cli import main; rc = main(['-q', '-k', '--model', 'test-bigram', %r]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)" % (HERE, str(src))
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_kib = int(out.stdout.strip().splitlines()[-1])
    assert peak_kib < 200 * 1024, peak_kib


def test_llmzfile_takes_a_path_like_lzmafile(tmp_path):
    from pyllmcodec import LlmzFile

    p = tmp_path / "a.llmz"
    with LlmzFile(p, "wb", model="test-bigram", chunk_size=64) as f:  # Compressor options pass through
        f.write(TEXT[:500])
    with LlmzFile(str(p)) as f:  # "rb", the model the archive names
        assert f.read() == TEXT[:500]
    with LlmzFile(p.read_bytes(), "r") as f:
        assert f.read(10) == TEXT[:10]
    with pytest.raises(FileExistsError):
        LlmzFile(p, "xb", model="test-bigram")
    with pytest.raises(ValueError, match="mode"):
        LlmzFile(p, "ab")


def test_compressor_and_decompressor_close_and_context_managers():
    with pyllmcodec.Compressor(get_model(), chunk_size=64) as comp:
        blob = comp.compress(TEXT[:300])
    with pytest.raises(ValueError, match="closed Compressor"):
        comp.compress(b"x")
    with pyllmcodec.Decompressor() as dec:
        assert dec.decompress(blob) == TEXT[:300]
    with pytest.raises(ValueError, match="closed Decompressor"):
        dec.decompress(blob)


def test_a_writer_flush_puts_a_block_in_the_output():
    """A log writer's flush codes what it holds (zstd's FLUSH_BLOCK): the
    output grows, a reader of the bytes so far decodes them, and the archive
    still decodes whole."""
    sink = io.BytesIO()
    comp = pyllmcodec.Compressor(get_model(), chunk_size=64, batch_size=8)
    w = comp.stream_writer(sink)
    w.write(b"line one of the log\n")
    assert w.bytes_out == 0  # under a wave: held
    w.flush()
    first = w.bytes_out
    assert first > 0 and sink.getvalue()
    w.write(b"line two\n")
    w.flush()
    assert w.bytes_out > first
    w.write(TEXT[:300])
    w.close()
    assert pyllmcodec.decompress(sink.getvalue()) == b"line one of the log\nline two\n" + TEXT[:300]


def test_compressobj_and_copy_stream_and_read_to_iter():
    comp = pyllmcodec.Compressor(get_model(), chunk_size=64, batch_size=4)
    co = comp.compressobj()
    parts = [co.compress(TEXT[i : i + 100]) for i in range(0, 700, 100)]
    parts.append(co.flush("block"))
    parts.append(co.compress(TEXT[700:800]))
    parts.append(co.flush())
    blob = b"".join(parts)
    assert pyllmcodec.decompress(blob) == TEXT[:800]
    with pytest.raises(ValueError, match="mode"):
        comp.compressobj().flush("sync")
    src, dst = io.BytesIO(TEXT[:900]), io.BytesIO()
    n_in, n_out = comp.copy_stream(src, dst)
    assert (n_in, n_out) == (900, len(dst.getvalue()))
    assert dst.getvalue() == comp.compress(TEXT[:900])  # no flush: the one-shot's bytes
    dec = pyllmcodec.Decompressor()
    out = io.BytesIO()
    assert dec.copy_stream(io.BytesIO(dst.getvalue()), out) == (len(dst.getvalue()), 900)
    assert out.getvalue() == TEXT[:900]
    pieces = list(dec.read_to_iter(dst.getvalue(), read_size=50))
    assert b"".join(pieces) == TEXT[:900] and max(map(len, pieces)) <= 50


def test_info_peeks_at_a_header_and_reads_file_objects(tmp_path):
    blob = pyllmcodec.compress(TEXT[:600], get_model(), chunk_size=64)
    full = pyllmcodec.info(blob)
    head = pyllmcodec.info(blob[:600], header_only=True)  # a prefix: the header is enough
    assert head["chunk_size"] == 64 and head["model"] == full["model"] and "size" not in head
    with pytest.raises(FormatError):
        pyllmcodec.info(blob[:600])  # the whole archive is needed for the rest
    (tmp_path / "a.llmz").write_bytes(blob)
    with open(tmp_path / "a.llmz", "rb") as fh:
        assert pyllmcodec.info(fh) == full  # mapped
    assert pyllmcodec.info(io.BytesIO(blob)) == full  # read
    assert pyllmcodec.info(io.BytesIO(blob), header_only=True) == head


def test_a_reader_seeks_through_the_chunk_index(tmp_path, monkeypatch):
    data = TEXT * 2
    blob = pyllmcodec.compress(data, get_model(), chunk_size=64, batch_size=4)
    (tmp_path / "a.llmz").write_bytes(blob)
    steps = count_steps(monkeypatch)
    for source in (blob, io.BytesIO(blob), open(tmp_path / "a.llmz", "rb")):
        with pyllmcodec.LlmzFile(source) as f:  # bytes are the archive here (open() takes them as a path)
            assert f.seekable()
            pyllmcodec.Decompressor().decompress(blob)  # the probe, cached
            steps["n"] = 0
            assert f.seek(len(data) - 100) == len(data) - 100
            assert f.read() == data[-100:]
            assert steps["n"] <= 64 + 1  # one wave of 64-byte chunks, not the whole archive
            assert f.seek(-len(data) // 2, io.SEEK_END) == len(data) - len(data) // 2
            assert f.read(50) == data[len(data) - len(data) // 2 :][:50]
            f.seek(0)
            assert f.read() == data
            f.seek(10**9)
            assert f.read() == b"" and f.tell() == 10**9
            with pytest.raises(OSError):
                f.seek(-1)
    with pyllmcodec.open(io.BytesIO(blob)) as f:
        f.seek(5, io.SEEK_CUR)
        assert f.read(5) == data[5:10]


def test_progress_follows_coded_bytes():
    comp = pyllmcodec.Compressor(get_model(), chunk_size=64, batch_size=4, fallback="stored")
    data = TEXT[:1000]
    seen: list[int] = []
    w = comp.stream_writer(io.BytesIO(), progress=seen.append)
    w.write(data)
    n_written = sum(seen)  # whole waves coded while writing
    w.close()
    assert 0 < n_written < len(data) and sum(seen) == len(data)  # every input byte, as it is coded
    assert len(seen) > 1000 // 256  # within waves, not only at their ends
    blob = comp.compress(data)
    got: list[int] = []
    assert pyllmcodec.Decompressor().stream_reader(blob, progress=got.append).read() == data
    assert sum(got) == len(data)


@pytest.mark.parametrize("piece", [1, 7, 100, 1 << 20])
def test_decompressobj_takes_any_pieces(piece):
    data = TEXT[:900]
    blob = pyllmcodec.compress(data, get_model(), chunk_size=64, batch_size=4)
    d = pyllmcodec.Decompressor().decompressobj()
    out = [d.decompress(blob[i : i + piece]) for i in range(0, len(blob), piece)]
    assert b"".join(out) == data and d.eof and d.unused_data == b""
    if piece == 100:
        assert sum(1 for o in out if o) > 1  # data comes out block by block, before the end
    with pytest.raises(EOFError):
        d.decompress(b"x")
    d2 = pyllmcodec.Decompressor().decompressobj()
    assert d2.decompress(blob + b"next") == data and d2.eof and d2.unused_data == b"next"
    bad = bytearray(blob)
    bad[-40] ^= 1  # the footer
    with pytest.raises(pyllmcodec.CodecError):
        pyllmcodec.Decompressor().decompressobj().decompress(bytes(bad))
    with pytest.raises(pyllmcodec.FormatError, match="magic"):
        pyllmcodec.Decompressor().decompressobj().decompress(b"not an archive at all")
