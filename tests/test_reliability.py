"""Reliability guarantees (docs/RELIABILITY.md): hostile headers, decompression
bombs, clear errors for unknown versions/models/devices, the CLI under real
signals, full disks and unwritable outputs, and use from several threads.

Every test here fails if its guarantee is broken; fuzzing is in
test_fuzz_*.py, sanitizers in tools/sanitize.sh.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from contextlib import suppress

import numpy as np
import pytest
from conftest import TEXT, get_model

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for fuzz/
import pyllmcodec
from fuzz.mutate import build_loose, parse_loose
from pyllmcodec import (
    CodecError,
    Compressor,
    Decompressor,
    FormatError,
    MemoryLimitError,
    ModelError,
    OutputLimitError,
    core,
)
from pyllmcodec.cli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_USAGE,
    main,
)
from pyllmcodec.constants import DEFAULT_MAX_OUTPUT_SIZE, MAX_BYTE_CHUNK_SIZE, MAX_CHUNK_SIZE, METHOD_DEFLATE
from pyllmcodec.container import ArchiveWriter, ChunkEntry, build_meta

HERE = os.path.dirname(os.path.abspath(__file__))
M = ["--model", "test-bigram", "--chunk-size", "64", "--batch-size", "4"]


@pytest.fixture(scope="module")
def blob():
    """A small model-coded archive (4 chunks of 64 bytes, batch 2)."""
    return Compressor(get_model(), chunk_size=64, batch_size=2, fallback="stored").compress(TEXT[:256])


def entry_points(data):
    """Every decoder entry point, as (name, zero-argument call)."""
    return [
        ("decompress", lambda: pyllmcodec.decompress(data)),
        ("Decompressor.decompress", lambda: Decompressor().decompress(data)),
        ("open().read()", lambda: pyllmcodec.open(io.BytesIO(data)).read()),
        ("stream_reader", lambda: Decompressor().stream_reader(data).read()),
        ("info", lambda: pyllmcodec.info(data)),
    ]


def refused_cheaply(data, exc=CodecError, match=None, budget=8 << 20, skip=()):
    """Each entry point raises ``exc`` and allocates at most ``budget`` bytes
    (traced Python allocations, which include numpy buffers) doing so."""
    for name, call in entry_points(data):
        if name in skip:
            continue
        tracemalloc.start()
        try:
            with pytest.raises(exc, match=match):
                call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < budget, f"{name} allocated {peak} bytes before refusing"


def edited(data, **meta):
    lz = parse_loose(data)
    lz.meta.update(meta)
    return build_loose(lz)


# ====================================================================== hostile headers


def test_meta_length_beyond_the_input_is_refused_before_reading(blob):
    import struct

    head = bytearray(blob[:14])
    struct.pack_into("<I", head, 10, (1 << 20))  # at the limit, but the input has no such bytes
    refused_cheaply(bytes(head) + b"\0" * 100, FormatError, "truncated")
    struct.pack_into("<I", head, 10, 0xFFFFFFFF)
    refused_cheaply(bytes(head), FormatError, "limit")


@pytest.mark.parametrize("field,value,why", [
    ("total", 1 << 62, "disagree"),
    ("n_chunks", 1 << 40, "disagree"),
])
def test_footer_claims_that_do_not_fit_the_blocks(blob, field, value, why):
    lz = parse_loose(blob)
    setattr(lz, field, value)
    refused_cheaply(build_loose(lz), FormatError, why)


@pytest.mark.parametrize("k,value,why", [
    (1, 1 << 27, "raw length"),  # raw_len far beyond chunk_size
    (2, 1 << 27, "coded length|truncated|past"),  # payload longer than the input
    (0, 60000, "row"),  # row beyond the wave's batch
])
def test_entry_claims_that_do_not_fit(blob, k, value, why):
    lz = parse_loose(blob)
    lz.blocks[0][1][0][k] = value
    refused_cheaply(build_loose(lz), FormatError, why)


def test_chunk_count_beyond_the_entry_table(blob):
    """A block claiming 65535 entries whose table holds 4: refused when the
    table runs out, without making room for 65535 entries first."""
    import struct

    lz = parse_loose(blob)
    lz.meta["batch_size"] = 65535
    lz.blocks[0] = (65535, *lz.blocks[0][1:])
    data = bytearray(build_loose(lz))
    off = 14 + struct.unpack_from("<I", data, 10)[0] + 4  # the first block's tag
    body_len = struct.unpack_from("<I", data, off + 5)[0]
    struct.pack_into("<H", data, off + 3, 65535)
    struct.pack_into("<I", data, off + 9 + body_len, zlib.crc32(bytes(data[off : off + 9 + body_len])))
    refused_cheaply(bytes(data), FormatError, "truncated")


def _bomb(n_entries: int, raw_len: int, with_sha: bool = False) -> bytes:
    """A structurally valid archive of deflate chunks of ``raw_len`` zeros:
    ~1000:1 per chunk, so it claims far more output than its size."""
    zeros = b"\0" * raw_len
    d = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = d.compress(zeros) + d.flush()
    meta = build_meta(model_name="test-bigram", model_sha256=get_model().sha256, vocab_size=256, bos=256,
                      max_context=1 << 31, fingerprint={}, probe_digest="0" * 64, probe_batch=1, probe_version=1,
                      probe_steps=48, chunk_size=raw_len, batch_size=1, precision=30, pad_token=256, writer="bomb",
                      # byte-level chunks stop at MAX_BYTE_CHUNK_SIZE; token-level ones at MAX_CHUNK_SIZE
                      tokenizer={"kind": "bpe", "sha256": "0" * 64} if raw_len > MAX_BYTE_CHUNK_SIZE else None)
    out = bytearray()
    w = ArchiveWriter(out.extend, meta)
    entry = ChunkEntry(0, raw_len, len(payload), METHOD_DEFLATE, zlib.crc32(zeros))
    for _ in range(n_entries):
        w.write_block(1, [entry], [payload])
    w.finish(hashlib.sha256(zeros * n_entries).digest() if with_sha else b"\0" * 32)
    return bytes(out)


def test_decompression_bomb_is_refused_before_allocating():
    """4.9 GB claimed by a 5 MB archive: over the default max_output_size
    (4 GiB), refused from the footer before any output buffer exists."""
    bomb = _bomb(300, MAX_CHUNK_SIZE)
    assert pyllmcodec.info(bomb)["size"] == 300 * MAX_CHUNK_SIZE > DEFAULT_MAX_OUTPUT_SIZE
    tracemalloc.start()
    try:
        with pytest.raises(OutputLimitError, match="max_output_size"):
            pyllmcodec.decompress(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_max_output_size_option(blob):
    n = len(TEXT[:256])
    assert pyllmcodec.decompress(blob, max_output_size=n) == TEXT[:256]
    with pytest.raises(OutputLimitError):
        pyllmcodec.decompress(blob, max_output_size=n - 1)
    with pytest.raises(OutputLimitError):
        Decompressor(max_output_size=100).decompress(blob)
    small = _bomb(4, 1 << 16, with_sha=True)  # 256 KiB from a ~1 KiB archive
    with pytest.raises(OutputLimitError):
        pyllmcodec.decompress(small, max_output_size=1 << 17)
    assert pyllmcodec.decompress(small, max_output_size=None) == b"\0" * (1 << 18)


def test_huge_batch_is_refused_before_the_model_allocates_state(blob, monkeypatch):
    seen = []
    model = get_model()
    real = type(model).new_state
    monkeypatch.setattr(type(model), "new_state", lambda self, b: seen.append(b) or real(self, b))
    bad = edited(blob, batch_size=65535)
    lz = parse_loose(bad)
    lz.blocks[0] = (65535, *lz.blocks[0][1:])
    # the format allows 65535 rows (an encoder may write them); the memory of
    # the rows' model state is what refuses it, before the model allocates
    refused_cheaply(build_loose(lz), MemoryLimitError, "max_memory", skip=("info",))
    assert all(b <= 2 for b in seen), seen  # only the probe's state, at the archive's first wave


def test_unknown_format_version_says_to_upgrade(blob):
    lz = parse_loose(blob)
    lz.version = 2
    refused_cheaply(build_loose(lz), FormatError, r"version 2.*upgrade pyllmcodec")
    lz.version, lz.flags = 1, 0x81
    refused_cheaply(build_loose(lz), FormatError, "flags")


def test_unknown_model_says_what_is_needed(blob):
    bad = edited(blob, model={**parse_loose(blob).meta["model"], "name": "llama-9000"})
    for name, call in entry_points(bad)[:4]:
        with pytest.raises(ModelError, match=r"needs model 'llama-9000' \(sha256 [0-9a-f]{64}\).*register_model"):
            call()
    assert pyllmcodec.info(bad)["model"]["name"] == "llama-9000"  # info needs no model


# ====================================================================== faults: the CLI


def _child(args, cwd, delay=0.0, stdout=subprocess.PIPE, named_temp=False):
    """The CLI in a subprocess with the fake model (each step slowed by
    ``delay`` seconds), Ctrl-C/SIGTERM/SIGHUP at their default behaviour;
    ``named_temp``: without O_TMPFILE, as on other systems (a hidden
    ``.NAME.XXXXXXXX.tmp`` until the rename)."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL); signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
        f"sys.path.insert(0, {HERE!r}); import conftest\n"
        "m = conftest.get_model(); real = type(m).step\n"
        f"type(m).step = lambda self, s, t: (time.sleep({delay}), real(self, s, t))[1]\n"
        + ("import pyllmcodec.cli; pyllmcodec.cli._unnamed_file = lambda d: None\n" if named_temp else "")
        + "from pyllmcodec.cli import main; sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)


def _temps(d):
    return [n for n in os.listdir(d) if n.startswith(".") and n.endswith(".tmp")]


def _unnamed(pid, d):
    """The files without a name (O_TMPFILE: '/dir/#INODE (deleted)') that ``pid`` has open in ``d``."""
    found = []
    with suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(f"{d}/#"):
                    found.append(target)
    return found


def _wait_for_output(proc, d, timeout=30.0):
    """Until the child is writing its output: a hidden temp file or an unnamed one."""
    t0 = time.monotonic()
    while not (_temps(d) or _unnamed(proc.pid, d)):
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() - t0 < timeout, "no temporary output appeared"
        time.sleep(0.01)
    time.sleep(0.3)  # well inside the run: it takes tens of seconds


@pytest.mark.parametrize("named_temp", [False, True], ids=["unnamed", "named"])
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129), (signal.SIGKILL, -9)])
def test_cli_killed_mid_compression(tmp_path, sig, code, named_temp):
    if not named_temp and not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this system")
    src = tmp_path / "a.txt"
    data = TEXT * 8  # ~140 waves of 4 x 64 bytes at >= 64 ms each
    src.write_bytes(data)
    p = _child(["compress", *M, "a.txt"], tmp_path, delay=0.001, named_temp=named_temp)
    _wait_for_output(p, tmp_path)
    # the O_TMPFILE path leaves no name in the directory while it writes
    assert bool(_temps(tmp_path)) == named_temp
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == code, err.decode()
    assert src.read_bytes() == data  # input intact
    left = sorted(os.listdir(tmp_path))
    if sig == signal.SIGKILL and named_temp:  # no chance to clean up: only the hidden temp file remains
        assert left[1:] == ["a.txt"] and left[0].startswith(".a.txt.llmz.") and left[0].endswith(".tmp")
    else:  # with O_TMPFILE not even SIGKILL leaves anything
        assert left == ["a.txt"], left
        if sig != signal.SIGKILL:
            assert b"Traceback" not in err


@pytest.mark.parametrize("named_temp", [False, True], ids=["unnamed", "named"])
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 143)])
def test_cli_killed_mid_decompression(tmp_path, sig, code, named_temp):
    data = TEXT[:6000]
    arc = Compressor(get_model(), chunk_size=64, batch_size=4, fallback="stored").compress(data)
    (tmp_path / "a.txt.llmz").write_bytes(arc)
    p = _child(["decompress", "a.txt.llmz"], tmp_path, delay=0.002, named_temp=named_temp)
    _wait_for_output(p, tmp_path)
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == code, err.decode()
    assert sorted(os.listdir(tmp_path)) == ["a.txt.llmz"]
    assert (tmp_path / "a.txt.llmz").read_bytes() == arc


def _tmpfs(path, size="48k", ro=False):
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=False, capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "disk"
    _tmpfs(d)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False, capture_output=True)


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(TEXT)
    return tmp_path


def test_full_disk_real_tmpfs(work, small_disk, capsys):
    big = os.urandom(100_000)  # stored: the archive is bigger than the 48 KiB disk
    (work / "r.bin").write_bytes(big)
    args = ["--model", "test-bigram", "--chunk-size", "64", "--batch-size", "64"]
    assert main(["compress", *args, "-k", "-o", str(small_disk / "r.llmz"), "r.bin"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "No space left on device" in err and "r.bin is unchanged" in err
    assert os.listdir(small_disk) == []  # no partial output, no temp file
    assert (work / "r.bin").read_bytes() == big


def test_full_disk_on_stdout(work):
    with open("/dev/full", "wb") as full:
        p = _child(["compress", *M, "-c", "-f", "a.txt"], work, stdout=full)
        _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_ERROR and b"No space left on device" in err, err
    assert (work / "a.txt").read_bytes() == TEXT


def test_full_disk_simulated(work, monkeypatch, capsys, output_kind):
    """ENOSPC from write(), wherever it happens, on any platform."""
    calls = {"n": 0}
    real = os.fdopen

    class Full(io.BufferedWriter):
        def write(self, b):
            calls["n"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, mode="r", *a, **k):
        return Full(io.FileIO(fd, "wb")) if "w" in mode else real(fd, mode, *a, **k)

    monkeypatch.setattr(os, "fdopen", fdopen)
    assert main(["compress", *M, "a.txt"]) == EXIT_ERROR
    assert calls["n"] and "No space left on device" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["a.txt"]


def test_unwritable_output(work, tmp_path, capsys):
    ro = tmp_path / "ro"
    _tmpfs(ro, ro=True)  # root ignores permission bits, not a read-only mount
    try:
        assert main(["compress", *M, "-k", "-o", str(ro / "a.llmz"), "a.txt"]) == EXIT_ERROR
        assert "Read-only file system" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False, capture_output=True)
    assert main(["compress", *M, "-k", "-o", "no/such/dir/a.llmz", "a.txt"]) == EXIT_ERROR
    assert "No such file or directory" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["a.txt", "ro"]


def test_unwritable_output_simulated(work, monkeypatch, capsys, output_kind):
    from pyllmcodec import cli

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", k.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    if output_kind == "unnamed":
        monkeypatch.setattr(cli, "_unnamed_file", refuse)
    assert main(["compress", *M, "a.txt"]) == EXIT_ERROR
    assert "Permission denied" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["a.txt"]


def test_missing_model_cli_says_what_to_do(work, blob, capsys):
    (work / "x.llmz").write_bytes(edited(blob, model={**parse_loose(blob).meta["model"], "name": "gone"}))
    assert main(["decompress", "x.llmz"]) == EXIT_MISMATCH
    err = capsys.readouterr().err
    assert "needs model 'gone'" in err and "--model" in err
    assert sorted(os.listdir(work)) == ["a.txt", "x.llmz"]


def test_missing_bundle_file_says_reinstall(tmp_path):
    pytest.importorskip("onnx")
    from pyllmcodec.models.bundle import load_bundle
    from pyllmcodec.export.testing import make_tiny_bundle

    path = make_tiny_bundle(tmp_path / "tiny")
    victim = next(p for p in path.iterdir() if p.name != "manifest.json")
    victim.unlink()
    with pytest.raises(ModelError, match="missing.*reinstall"):
        load_bundle(path)


def test_wrong_device_says_use_cpu(work, capsys, monkeypatch):
    from pyllmcodec import backends
    from pyllmcodec.models import register_model

    monkeypatch.setattr(backends, "_torch_cuda", lambda: False)
    with pytest.raises(ModelError, match="--device cpu"):
        backends.resolve_device("cuda", "auto")

    def factory(device="auto", backend="auto", threads=None):  # what a bundle's factory does first
        backends.resolve_device(device, backend)
        return get_model()

    register_model("test-bigram-dev", factory, replace=True)
    assert main(["compress", "--model", "test-bigram-dev", "--device", "cuda", "a.txt"]) == EXIT_MISMATCH
    assert "--device cpu" in capsys.readouterr().err
    assert main(["compress", "--model", "test-bigram", "--device", "gpu", "a.txt"]) == EXIT_USAGE
    assert sorted(os.listdir(work)) == ["a.txt"]


def test_failed_gpu_mid_run_says_what_to_do(work, monkeypatch, capsys):
    model = get_model()
    real = type(model).step
    n = {"steps": 0}

    def step(self, state, tokens):
        n["steps"] += 1
        if n["steps"] > 300:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, state, tokens)

    monkeypatch.setattr(type(model), "step", step)
    assert main(["compress", *M, "a.txt"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "CUDA error" in err and "--device cpu" in err and "Traceback" not in err
    assert sorted(os.listdir(work)) == ["a.txt"]


# ====================================================================== concurrency


def _pieces(k):
    rng = np.random.default_rng(k)
    return [TEXT[int(rng.integers(0, 2000)) :][: int(rng.integers(1, 1500))] for _ in range(4)]


def test_shared_compressor_and_decompressor_from_threads():
    comp = Compressor(get_model(), chunk_size=128, batch_size=4)
    dec = Decompressor(get_model())
    work = [_pieces(k) for k in range(4)]
    serial = [[comp.compress(p) for p in ps] for ps in work]
    results: list = [None] * 4
    errors = []

    def run(i):
        try:
            blobs = [comp.compress(p) for p in work[i]]
            back = [dec.decompress(b) for b in blobs]
            streamed = [dec.stream_reader(b).read() for b in blobs]
            results[i] = (blobs, back, streamed)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(4):
        blobs, back, streamed = results[i]
        assert blobs == serial[i]  # same bytes as a single thread
        assert back == work[i] and streamed == work[i]


def test_one_shot_functions_from_threads():
    data = [TEXT[i * 500 : i * 500 + 1500] for i in range(6)]
    out: dict = {}

    def run(i):
        out[i] = pyllmcodec.decompress(pyllmcodec.compress(data[i], "test-bigram", chunk_size=128, batch_size=4))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(6)] == data


def test_shared_stream_writer_serialises_writes():
    """An LlmzFile may be shared: each write() is atomic (a lock), so the
    archive decodes to the pieces in some order, each intact."""
    comp = Compressor(get_model(), chunk_size=64, batch_size=2)
    sink = io.BytesIO()
    w = comp.stream_writer(sink)
    pieces = {i: bytes([65 + i]) * 300 for i in range(4)}

    def run(i):
        for _ in range(5):
            w.write(pieces[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    out = pyllmcodec.decompress(sink.getvalue())
    assert len(out) == 4 * 5 * 300
    assert all(out[k : k + 300] in pieces.values() for k in range(0, len(out), 300))


def test_core_coder_objects_refuse_concurrent_use():
    """A BatchEncoder/BatchDecoder used by two threads at once raises
    RuntimeError in one of them (try-lock) instead of corrupting its state."""
    V = 1 << 20
    p = np.random.default_rng(0).random((2, V)).astype(np.float32)
    enc = core.BatchEncoder(2)
    hits = []
    stop = time.monotonic() + 20

    def hammer():
        while not hits and time.monotonic() < stop:
            try:
                enc.encode_probs(p, [1, 2])
            except RuntimeError as e:
                hits.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hits and "another thread" in str(hits[0])


# ---------------------------------------------------------------- the CLI's output file


@pytest.fixture(params=["unnamed", "named"])
def output_kind(request, monkeypatch):
    """Both ways the CLI writes a file: unnamed until done (O_TMPFILE), or a hidden temp file."""
    from pyllmcodec import cli

    if request.param == "named":
        monkeypatch.setattr(cli, "_unnamed_file", lambda d: None)
    else:
        fd = cli._unnamed_file(tempfile.gettempdir())
        if fd is None:
            pytest.skip("no O_TMPFILE here")
        os.close(fd)
    return request.param


def test_atomic_output_publishes_only_when_done(tmp_path, output_kind):
    from pyllmcodec.cli import _atomic_output

    out = tmp_path / "x.llmz"
    with _atomic_output(str(out), force=False) as fh:
        fh.write(b"payload")
        seen = os.listdir(tmp_path)
        assert len(seen) == (1 if output_kind == "named" else 0), seen  # no name until done
        assert not out.exists()
    assert os.listdir(tmp_path) == ["x.llmz"]
    assert out.read_bytes() == b"payload"
    assert out.stat().st_mode & 0o777 == 0o600  # the CLI copies the input's mode afterwards


def test_atomic_output_failure_leaves_nothing(tmp_path, output_kind):
    from pyllmcodec.cli import _atomic_output

    with pytest.raises(RuntimeError), _atomic_output(str(tmp_path / "x"), force=True) as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError), _atomic_output(str(tmp_path / "no" / "x"), force=True):
        pass


def test_atomic_output_never_clobbers_without_force(tmp_path, output_kind):
    from pyllmcodec.cli import _Fail, _atomic_output

    out = tmp_path / "x"
    with pytest.raises(_Fail, match="already exists"), _atomic_output(str(out), force=False) as fh:
        fh.write(b"new")
        out.write_bytes(b"precious")  # created by someone else meanwhile
    assert out.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["x"]
    with _atomic_output(str(out), force=True) as fh:
        fh.write(b"new")
    assert out.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["x"]
    (tmp_path / "d").mkdir()  # a directory is never replaced, and nothing is left over
    with pytest.raises(OSError), _atomic_output(str(tmp_path / "d"), force=True) as fh:
        fh.write(b"new")
    assert sorted(os.listdir(tmp_path)) == ["d", "x"]
