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

from pyllmcodec.export.bytelm import main as export_main

ROOT = Path(__file__).resolve().parents[1]


def _lineage(run: Path, data: Path | None = None) -> dict:
    """The training record of ``run``: its data manifest (from ``data``, else
    the folder its config names), hyperparameters, final step and validation
    figure, and, for a continued run, the record of the run it started from."""
    cfg = json.loads((run / "config.json").read_text())
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    starts = [r for r in log if "start_step" in r]
    log = [r for r in log if "step" in r]
    val = [r for r in log if "val_bpb" in r]
    hp = dict(cfg["train"])
    data = data or Path(hp["data"])
    for k in ("data", "out"):
        hp.pop(k, None)
    init = hp.pop("init_from", None)
    rec = {"data": json.loads((data / "manifest.json").read_text()), "hyperparameters": hp,
           "final_step": log[-1]["step"] if log else None,
           "val_bits_per_byte": val[-1]["val_bpb"] if val else None}
    if starts:  # the run was started or resumed with these data folders and schedules
        rec["starts"] = [{"step": r["start_step"], "data": Path(r["data"]).name, "steps": r["steps"],
                          "lr": r["lr"]} for r in starts]
    if init:
        rec["initialised_from"] = _lineage(Path(init).parent)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/pyllmcodec/train")
    ap.add_argument("--out", type=Path, default=ROOT / "pyllmcodec/models/default")
    ap.add_argument("--checkpoint", default="final.pt")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--chunk-size", type=int, default=8192,
                    help="the codec's default chunk size for the model (docs/MODEL.md, 'Chunk size')")
    ap.add_argument("--prime", type=int, default=64, help="the codec's default prime for longer chunks")
    ap.add_argument("--context", type=int, default=512,
                    help="the codec's default segment length (docs/MODEL.md, 'The match model')")
    ap.add_argument("--no-mixer", dest="mixer", action="store_false",
                    help="ship no match model (default: fit one on DATA/val.bin, training/fit_mixer.py)")
    a = ap.parse_args()
    training = {
        **_lineage(a.run, a.data),
        "script": "training/prepare_data.py + training/train.py + training/ship.py",
        "never_trained_on": ["linux-doc-*", "Canterbury corpus (alice29, asyoulik, lcet10, plrabn12)"],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(training, f)
    ck = a.run / a.checkpoint
    if not ck.exists():
        ck = a.run / "ckpt.pt"
    export_main([str(ck), str(a.out), "--name", "default", "--version", a.version,
                 "--training-json", f.name, "--chunk-size", str(a.chunk_size), "--prime", str(a.prime),
                 "--context", str(a.context)])
    if a.mixer:  # the match model's prior, fitted on held-out training text (never an evaluation corpus)
        from fit_mixer import fit, write

        spec = fit(a.out, (a.data / "val.bin").read_bytes())
        write(a.out, spec)
        print(f"match model {spec.digest} fitted on {a.data / 'val.bin'}")
    for g in ("step", "forward"):  # the graph files are small; weights.bin holds the tensors
        print(g, (a.out / f"{g}.onnx").stat().st_size, "bytes")
    print("weights.bin", (a.out / "weights.bin").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
