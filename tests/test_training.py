"""The training scripts end to end on a tiny model: train, resume on another
data folder with a shorter schedule, ship the bundle, and code with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--d-model", "32", "--n-head", "2", "--n-kv-head", "1", "--d-mlp", "64",
        "--ctx", "64", "--bs", "2", "--warmup", "1", "--ckpt-every", "2", "--eval-every", "2",
        "--threads", "1", "--no-bf16", "--lr", "1e-3", "--seed", "3"]


def _data(folder: Path, seed: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    words = [b"kernel", b"driver", b"the", b"of", b"memory", b"page", b"\n"]
    text = b" ".join(words[i] for i in rng.integers(0, len(words), 4000))
    (folder / "train.bin").write_bytes(text)
    (folder / "val.bin").write_bytes(text[: 64 * 4])
    (folder / "manifest.json").write_text(json.dumps({"sources": [], "source_set": folder.name}))
    return folder


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "training" / script), *args], check=False, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


def test_train_resume_on_new_data_then_ship(tmp_path):
    a, b = _data(tmp_path / "setA", 1), _data(tmp_path / "setB", 2)
    run = tmp_path / "run"
    _run("train.py", "--data", str(a), "--out", str(run), "--steps", "8", *TINY)
    # stop "early": the checkpoint at step 8 is final; resume it on another
    # data folder with a longer schedule, as a continued run does
    err = _run("train.py", "--data", str(b), "--out", str(run), "--steps", "12", *TINY)
    assert "resumed at step 8" in err
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    starts = [r for r in log if "start_step" in r]
    assert [(r["start_step"], Path(r["data"]).name, r["steps"]) for r in starts] == [
        (0, "setA", 8), (8, "setB", 12)]
    assert [r["step"] for r in log if "val_bpb" in r] == [2, 4, 6, 8, 10, 12]
    assert all(np.isfinite(r["val_bpb"]) for r in log if "val_bpb" in r)
    import torch

    # the last plateau weights are kept: --steps 8 with --decay 0.2 decays from step 6
    assert torch.load(run / "pre_decay.pt", weights_only=False)["step"] == 6

    out = tmp_path / "bundle"
    _run("ship.py", "--run", str(run), "--data", str(b), "--out", str(out), "--version", "0.0.1")
    man = json.loads((out / "manifest.json").read_text())
    tr = man["training"]
    assert tr["final_step"] == 12
    assert tr["data"]["source_set"] == "setB"
    assert [(s["step"], s["data"], s["steps"]) for s in tr["starts"]] == [(0, "setA", 8), (8, "setB", 12)]

    import pyllmcodec
    from pyllmcodec.backends import open_bundle
    from pyllmcodec.models.bundle import load_bundle

    model = open_bundle(load_bundle(out), device="cpu", backend="onnxruntime", threads=1)
    blob = b"the kernel driver of the page memory " * 40
    z = pyllmcodec.Compressor(model, chunk_size=64, batch_size=4).compress(blob)
    assert pyllmcodec.Decompressor(model).decompress(z) == blob
    # ship fitted a match model on the held-out text; the codec runs it, through ONNX Runtime
    assert man["codec"]["prime"] == 32 and man["codec"]["mixer"]["kind"] == "match1"
    assert pyllmcodec.info(z)["mixer"]["digest"] == model.default_mixer.digest


def test_pre_decay_weights_on_a_resume_into_the_decay(tmp_path):
    """Shortening a run on a resume starts its decay at once: the weights it
    resumed from are the last plateau weights, and those are kept."""
    import torch

    a, run = _data(tmp_path / "setA", 1), tmp_path / "run"
    args = [*TINY, "--ckpt-every", "4"]
    _run("train.py", "--data", str(a), "--out", str(run), "--steps", "4", "--decay", "0", *args)
    assert not (run / "pre_decay.pt").exists()  # no decay yet
    _run("train.py", "--data", str(a), "--out", str(run), "--steps", "6", "--decay", "0.5", *args)
    pre = torch.load(run / "pre_decay.pt", weights_only=False)
    assert pre["step"] == 4
    final = torch.load(run / "final.pt", weights_only=False)
    assert final["step"] == 6
    assert any(not torch.equal(pre["model"][k], final["model"][k]) for k in pre["model"])
