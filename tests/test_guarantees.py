"""Promises kept under abuse (issue 19): what the encoder writes the default
decoder reads, interrupted runs stop at once, hostile waves are refused
before their memory is allocated, gzip's rules for inputs, no unreadable
output with exit 0, output limits on streams, and the loose ends.

Each test failed on pyllmcodec 0.4.0.
"""

from __future__ import annotations

import gc
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TEXT, count_steps, get_model
from test_reliability import HERE, _child, _wait_for_output, edited, refused_cheaply

import pyllmcodec
from fuzz.mutate import build_loose, parse_loose
from pyllmcodec import Compressor, Decompressor, MemoryLimitError, OutputLimitError
from pyllmcodec.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main

M = ["--model", "test-bigram", "--chunk-size", "64", "--batch-size", "4"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(TEXT[:300])
    return tmp_path


# ---------------------------------------------------------------- 1. what is written is read


def test_a_large_batch_size_writes_archives_the_default_decoder_reads():
    data = TEXT[:500]
    blob = pyllmcodec.compress(data, "test-bigram", batch_size=5000, chunk_size=64)
    assert pyllmcodec.info(blob)["batch_size"] == 5000
    assert pyllmcodec.decompress(blob) == data  # 0.4.0: "needs batch size 5000, over ... 4096"
    blobs = pyllmcodec.compress_batch([data[:100], data[100:]], "test-bigram", batch_size=5000, chunk_size=64)
    assert [pyllmcodec.decompress(b) for b in blobs] == [data[:100], data[100:]]


def test_a_batch_size_whose_waves_exceed_max_memory_is_refused_by_the_encoder(work):
    # the test model reports 64 KiB of state per row: 65535 rows are 4 GiB
    with pytest.raises(ValueError, match="max_memory"):
        Compressor(get_model(), batch_size=65535)
    Compressor(get_model(), batch_size=65535, max_memory=64 << 30)  # allowed when asked for
    assert main(["compress", *M[:4], "--batch-size", "20000", "--max-memory", "1G", "a.txt"]) == EXIT_USAGE
    assert sorted(os.listdir(work)) == ["a.txt"]  # the input is not removed


def test_the_decoder_bounds_memory_by_the_rows_a_wave_really_has():
    blob = Compressor(get_model(), chunk_size=64, batch_size=2, fallback="stored").compress(TEXT[:256])
    lz = parse_loose(edited(blob, batch_size=65535))
    lz.blocks[0] = (65535, *lz.blocks[0][1:])  # one wave claims 65535 rows for its 2 chunks
    bad = build_loose(lz)
    refused_cheaply(bad, MemoryLimitError, "max_memory", skip=("info",))
    with pytest.raises(pyllmcodec.FormatError, match="max_batch_size"):
        Decompressor(max_batch_size=64).decompress(bad)
    lz.meta["probe"] = {**lz.meta["probe"], "batch": 65535}  # the probe too
    refused_cheaply(build_loose(lz), MemoryLimitError, "max_memory", skip=("info",))


def test_a_failed_allocation_is_a_codec_error(monkeypatch):
    blob = Compressor(get_model(), chunk_size=64, batch_size=2, fallback="stored").compress(TEXT[:256])
    model = get_model()
    Decompressor().decompress(blob)  # the probe is cached: the failure comes from the waves

    def step(self, state, tokens):
        raise MemoryError("the allocation of a step's buffers failed")  # as numpy's _ArrayMemoryError is

    monkeypatch.setattr(type(model), "step", step)
    with pytest.raises(MemoryLimitError, match="out of memory"):
        Decompressor().decompress(blob)


# ---------------------------------------------------------------- 2. interrupts stop at once


def test_a_writer_left_by_an_exception_codes_nothing_more(monkeypatch):
    comp = Compressor(get_model(), chunk_size=64, batch_size=8, fallback="stored")
    comp.header_meta(comp.geometry_for(None), 8)  # the probe, cached
    n = count_steps(monkeypatch)
    out = io.BytesIO()
    with pytest.raises(KeyboardInterrupt), comp.stream_writer(out) as w:
        w.write(TEXT[:300])  # under a wave: held until close
        raise KeyboardInterrupt
    assert n["n"] == 0 and w.closed
    w2 = comp.stream_writer(io.BytesIO())
    w2.write(TEXT[:300])
    del w2  # collected unclosed: incomplete, and nothing coded
    gc.collect()
    assert n["n"] == 0


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 143)])
def test_an_interrupted_compression_stops_within_seconds(tmp_path, sig, code):
    src = tmp_path / "a.txt"
    src.write_bytes((TEXT * 4)[:40000])  # 10 chunks of 4 KiB: one wave, coded when the writer closes
    p = _child(["compress", "--model", "test-bigram", "--chunk-size", "4096", "--batch-size", "64", "a.txt"],
               tmp_path, delay=0.01)  # 4096 steps x 10 ms: 40 s of coding uninterrupted
    _wait_for_output(p, tmp_path)
    t0 = time.monotonic()
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == code, err.decode()
    assert took < 10, f"took {took:.1f} s to stop"  # 0.4.0 coded the whole wave first (40 s)
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


# ---------------------------------------------------------------- 4. gzip's rules for inputs


def test_a_fifo_is_refused_not_read_and_removed(work):
    os.mkfifo("pipe")
    assert main(["compress", *M, "pipe"]) == EXIT_ERROR  # refused before opening: no hang
    assert sorted(os.listdir(work)) == ["a.txt", "pipe"]


def test_a_device_is_refused(work, capsys):
    assert main(["compress", *M, "-k", "/dev/null"]) == EXIT_ERROR
    assert "not a directory or a regular file" in capsys.readouterr().err
    assert os.path.exists("/dev/null") and not os.path.exists("/dev/null.llmz")


def test_a_symlink_is_refused_without_force(work):
    os.symlink("a.txt", "link.txt")
    assert main(["compress", *M, "link.txt"]) == EXIT_ERROR
    assert sorted(os.listdir(work)) == ["a.txt", "link.txt"]
    assert main(["compress", *M, "-k", "link.txt"]) == EXIT_OK  # kept: nothing is removed
    os.unlink("link.txt.llmz")
    assert main(["compress", *M, "-f", "link.txt"]) == EXIT_OK  # as gzip -f: the link goes, the target stays
    assert sorted(os.listdir(work)) == ["a.txt", "link.txt.llmz"]


def test_a_hard_linked_file_is_refused_without_force(work, capsys):
    os.link("a.txt", "b.txt")
    assert main(["compress", *M, "a.txt"]) == EXIT_ERROR
    assert "1 other link" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["a.txt", "b.txt"]
    assert main(["compress", *M, "-k", "a.txt"]) == EXIT_OK


# ---------------------------------------------------------------- 5. no unreadable output with exit 0


def test_several_files_to_stdout_decode_to_their_concatenation(work, capfdbinary):
    (work / "b.txt").write_bytes(TEXT[300:500])
    assert main(["compress", *M, "-c", "a.txt", "b.txt"]) == EXIT_OK
    both = capfdbinary.readouterr().out
    (work / "ab.llmz").write_bytes(both)
    assert pyllmcodec.decompress(both) == TEXT[:500]  # 0.4.0: exit 0, then "trailing data" on decoding
    assert main(["decompress", "-c", "ab.llmz"]) == EXIT_OK
    assert capfdbinary.readouterr().out == TEXT[:500]
    with pytest.raises(pyllmcodec.FormatError, match="trailing"):
        pyllmcodec.decompress(both + b"junk!")


# ---------------------------------------------------------------- 6. output limits on streams


def test_stream_readers_keep_max_output_size():
    data = TEXT[:1000]
    blob = pyllmcodec.compress(data, "test-bigram", chunk_size=64, batch_size=4)
    with pytest.raises(OutputLimitError):
        pyllmcodec.stream_reader(blob, max_output_size=100).read()
    with pytest.raises(OutputLimitError):
        Decompressor().stream_reader(blob, max_output_size=999).read()
    with pytest.raises(OutputLimitError):
        pyllmcodec.open(io.BytesIO(blob), "rb", max_output_size=100).read()
    assert pyllmcodec.stream_reader(blob, max_output_size=1000).read() == data


# ---------------------------------------------------------------- loose ends


@pytest.mark.parametrize("threads", ["0", "-5", "two"])
def test_bad_thread_counts_are_usage_errors(work, threads):
    assert main(["compress", *M, "--threads", threads, "a.txt"]) == EXIT_USAGE
    assert sorted(os.listdir(work)) == ["a.txt"]


@pytest.mark.parametrize("threads", [0, -5, 1.5, True])
def test_bad_thread_counts_are_value_errors(threads):
    with pytest.raises(ValueError, match="threads"):
        pyllmcodec.compress(b"x", "test-bigram", threads=threads)


@pytest.mark.parametrize("opt", [{"chunk_size": True}, {"batch_size": True}, {"prime": True}, {"precision": 40},
                                 {"max_memory": -1}])
def test_bad_option_values_are_value_errors(opt):
    with pytest.raises(ValueError):
        Compressor(get_model(), **opt)


def test_a_non_contiguous_buffer_says_what_to_pass():
    a = np.frombuffer(TEXT[:200], dtype=np.uint8)[::2]
    with pytest.raises(TypeError, match="contiguous"):
        pyllmcodec.compress(a, "test-bigram")
    assert pyllmcodec.decompress(pyllmcodec.compress(np.ascontiguousarray(a), "test-bigram")) == a.tobytes()


def test_a_closed_pipe_ends_quietly(tmp_path):
    arc = Compressor(get_model(), chunk_size=64, batch_size=4).compress(TEXT * 3)
    (tmp_path / "a.llmz").write_bytes(arc)
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import conftest\n"
            "from pyllmcodec.cli import main; sys.exit(main(sys.argv[1:]))\n")
    p = subprocess.Popen([sys.executable, "-c", code, "-d", "-c", "a.llmz"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.read(10)
    p.stdout.close()  # as `| head -c 10` does
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGPIPE and err == b"", (p.returncode, err)


def test_text_mode_writes_the_byte_order_mark_as_gzip_does(tmp_path):
    import gzip

    with pyllmcodec.open(tmp_path / "t.llmz", "wt", encoding="utf-16", model="test-bigram") as f:
        f.write("héllo\n")
    with gzip.open(tmp_path / "t.gz", "wt", encoding="utf-16") as g:
        g.write("héllo\n")
    raw = pyllmcodec.decompress((tmp_path / "t.llmz").read_bytes())
    assert raw == gzip.decompress((tmp_path / "t.gz").read_bytes())
    with pyllmcodec.open(tmp_path / "t.llmz", "rt", encoding="utf-16") as f:
        assert f.read() == "héllo\n"


def test_an_edited_header_is_corruption_not_a_numerics_mismatch(tmp_path):
    blob = Compressor(get_model(), chunk_size=64, batch_size=2, fallback="stored").compress(TEXT[:256])
    for change in ({"precision": 24}, {"probe": {**parse_loose(blob).meta["probe"], "batch": 3}}):
        bad = edited(blob, **change)  # a valid header CRC
        with pytest.raises(pyllmcodec.FormatError, match="corrupt"):
            pyllmcodec.decompress(bad)
        (tmp_path / "a.llmz").write_bytes(bad)
        assert main(["decompress", "-c", str(tmp_path / "a.llmz")]) == 3  # corrupt, not 4 (mismatch)


def test_the_command_line_starts_without_the_codec():
    """Importing the CLI loads no numpy, ONNX Runtime or native core: they load
    inside main(), where Ctrl-C is handled."""
    code = ("import sys, pyllmcodec.cli\n"
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'pyllmcodec.codec', 'pyllmcodec._core') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ctrl_c_while_the_codec_loads_is_an_interrupt_not_a_traceback(work):
    code = (
        "import sys\n"
        f"sys.path.insert(0, {HERE!r}); import conftest\n"
        "class Slow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pyllmcodec.codec': raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Slow())\n"
        "from pyllmcodec.cli import main; sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, "compress", *M, "a.txt"], capture_output=True, text=True,
                       cwd=work)
    assert r.returncode == EXIT_INTERRUPTED and "interrupted" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(os.listdir(work)) == ["a.txt"]
