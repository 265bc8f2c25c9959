"""bench.codec_speed: bare step loop vs compress vs decompress (was ``pyllmcodec bench``)."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.codec_speed import bench_text, main, run_bench
from bench.conftest import ROOT, TOY_NAME

SMALL = ["--model", TOY_NAME, "--size", "20000", "--batch-size", "4", "--chunk-size", "512"]


def test_bench_text_is_deterministic():
    assert bench_text(5000) == bench_text(5000) and len(bench_text(5000)) == 5000
    assert bench_text(5000, seed=8) != bench_text(5000)


def test_report(capsys):
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "bare step loop" in out and "MB/s" in out and "python -m bench" in out
    r = run_bench(TOY_NAME, 8000, 4, 512)
    assert r["ratio"] < 1 and r["compress_mb_s"] > 0 and r["chunk_size"] == 512


def test_sweep_chunks_json(capsys):
    assert main(["--model", TOY_NAME, "--size", "8000", "--batch-size", "4", "--sweep-chunks", "256,512",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["chunk_size"] for r in rows] == [256, 512]


def test_bad_sweep_list_is_a_usage_error(capsys):
    assert main(["--model", TOY_NAME, "--sweep-chunks", "512,x"]) == 2
    assert "codec_speed:" in capsys.readouterr().err


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "bench.codec_speed", "--help"], cwd=ROOT, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0
    for flag in ("--model", "--size", "--batch-size", "--chunk-size", "--sweep-chunks", "--json", "--device",
                 "--backend", "--threads"):
        assert flag in r.stdout
