"""Fit a bundle's context-mixing priors (docs/FORMAT.md section 4f) on held-out training text.

    python training/fit_cm_priors.py BUNDLE_DIR --data ~/.cache/pyllmcodec/train2/val.bin [--write]

Runs a real ``compress`` of ``--data`` with the bundle's model and records
the model's P(bit = 1) for every bit the stage sees (what
``bench/studies/cm_stage.py`` replays), then codes those bits through one
fresh cm3 state, all chunks in one wave as the codec steps them, with
tables of 2^22 counters (the default's).  The priors are that state's
three mixers' weights at the end: where a fresh state starts from then,
instead of the model alone.  The weights depend on the model and the
text's kind, not on which bytes (ablation in docs/MODEL.md: the half, the
whole or a reversed order of val.bin give within 0.0004 bits/byte of each
other on the evaluation corpora; a second pass over the same text is
worse, the counters having seen it).  Prints the ideal bits/byte of the
data without and with the priors (in-sample); ``--write`` stores them in
the manifest's ``codec.cm``.  Never fit on the evaluation corpora.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyllmcodec import _core as core
from pyllmcodec.cmpriors import CmPriors
from pyllmcodec.models.bundle import load_bundle, write_manifest

TABLE_BITS = 22


def fit(data: bytes, model: str | None = None, *, report: bool = True) -> CmPriors:
    """The priors for the registered model ``model`` (None: the default) on ``data``."""
    from bench.studies.cm_stage import cost, record

    t0 = time.time()
    chunks = record(data, model=model)
    p = np.concatenate([c for c, _ in chunks])
    s = np.concatenate([c for _, c in chunks])
    offs = np.cumsum([0] + [len(c) for _, c in chunks])
    plain = core.cm_trace(p, s, offs, shared=True, table_bits=TABLE_BITS, kind=3)
    _, w = core.cm_trace(p, s, offs, shared=True, table_bits=TABLE_BITS, kind=3, weights=True)
    pri = CmPriors.from_array(w)
    if report:
        warm = core.cm_trace(p, s, offs, shared=True, table_bits=TABLE_BITS, kind=3, priors=pri.array)
        n = len(s)
        print(f"{n} bytes in {len(chunks)} chunks: model {cost(p, s) / n:.4f}, stage {cost(plain, s) / n:.4f}, "
              f"stage from the priors {cost(warm, s) / n:.4f} bits/byte (in-sample; {time.time() - t0:.0f} s); "
              f"priors digest {pri.digest}")
    return pri


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="held-out training text (val.bin)")
    ap.add_argument("--write", action="store_true", help="store the priors in the manifest's codec.cm")
    a = ap.parse_args(argv)
    b = load_bundle(a.bundle)
    pri = fit(a.data.read_bytes(), b.name)  # the model registered under the bundle's name
    if a.write:
        m = json.loads(json.dumps(b.manifest))
        m.setdefault("codec", {})["cm"] = pri.to_json()
        write_manifest(a.bundle, m)
        print(f"wrote codec.cm ({pri.digest}) to {a.bundle / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
