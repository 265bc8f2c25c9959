"""Export a training run's checkpoint as the shipped default bundle.

    python training/ship.py --run ~/.cache/pyllmcodec/run2 [--out pyllmcodec/models/default]

Merges the training data manifest (sources, licences, package hashes) and the
run's config and final validation figure into the bundle manifest.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pyllmcodec.models.export import main as export_main

ROOT = Path(__file__).resolve().parents[1]


def _lineage(run: Path) -> dict:
    """The training record of ``run`` (the run a continued run started from)."""
    cfg = json.loads((run / "config.json").read_text())
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    val = [r for r in log if "val_bpb" in r]
    hp = dict(cfg["train"])
    data = Path(hp.pop("data"))
    hp.pop("out", None)
    rec = {"data": json.loads((data / "manifest.json").read_text()), "hyperparameters": hp,
           "final_step": log[-1]["step"] if log else None,
           "val_bits_per_byte": val[-1]["val_bpb"] if val else None}
    if hp.get("init_from"):
        rec["initialised_from"] = _lineage(Path(hp.pop("init_from")).parent)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/pyllmcodec/train")
    ap.add_argument("--out", type=Path, default=ROOT / "pyllmcodec/models/default")
    ap.add_argument("--checkpoint", default="final.pt")
    ap.add_argument("--version", default="1.0.0")
    a = ap.parse_args()
    cfg = json.loads((a.run / "config.json").read_text())
    log = [json.loads(ln) for ln in (a.run / "log.jsonl").read_text().splitlines() if ln.strip()]
    val = [r for r in log if "val_bpb" in r]
    training = {
        "data": json.loads((a.data / "manifest.json").read_text()),
        "hyperparameters": cfg["train"],
        "final_step": log[-1]["step"] if log else None,
        "val_bits_per_byte": val[-1]["val_bpb"] if val else None,
        "script": "training/prepare_data.py + training/train.py + training/ship.py",
        "never_trained_on": ["linux-doc-*", "Canterbury corpus (alice29, asyoulik, lcet10, plrabn12)"],
    }
    for k in ("data", "out"):
        training["hyperparameters"].pop(k, None)
    init = cfg["train"].get("init_from")
    if init:  # a continued run: record the run it started from, recursively
        training["hyperparameters"].pop("init_from", None)
        training["initialised_from"] = _lineage(Path(init).parent)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(training, f)
    ck = a.run / a.checkpoint
    if not ck.exists():
        ck = a.run / "ckpt.pt"
    export_main([str(ck), str(a.out), "--name", "default", "--version", a.version,
                 "--training-json", f.name])
    for g in ("step", "forward"):  # the graph files are small; weights.bin holds the tensors
        print(g, (a.out / f"{g}.onnx").stat().st_size, "bytes")
    print("weights.bin", (a.out / "weights.bin").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
