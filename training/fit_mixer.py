"""Fit a bundle's match model (docs/FORMAT.md section 4c) on held-out training text.

    python training/fit_mixer.py BUNDLE_DIR --data ~/.cache/pyllmcodec/train2/val.bin [--write]

Runs the bundle's model over ``--data`` in the codec's geometry (its default
chunk size and prime), passes every chunk through the match model and
records, for each prediction, the cell it used and whether it came true
(neither depends on the prior).  The prior is each cell's hit rate, shrunk
towards its probability bucket's rate (:func:`pyllmcodec.mixer.fit_prior`).
Prints the ideal bits/byte without the match model, with a flat prior and
with the fitted one; ``--write`` stores the spec in the manifest's
``codec.mixer``.  Never fit on the evaluation corpora.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyllmcodec.mixer import MixerSpec, fit_prior  # noqa: E402
from pyllmcodec.models.bundle import load_bundle, write_manifest  # noqa: E402
from bench.ideal import ideal_bits  # noqa: E402

FLAT = MixerSpec(prior=(32768,) * 256)


def fit(bundle_dir: Path, data: bytes, *, threads: int | None = None,
        report: bool = True) -> MixerSpec:
    """The fitted spec for the bundle at ``bundle_dir`` on ``data``."""
    from pyllmcodec import Compressor
    from pyllmcodec.backends import open_bundle

    b = load_bundle(bundle_dir)
    # the geometry the codec picks for this bundle (its manifest's chunk size and prime)
    comp = Compressor(open_bundle(b, device="cpu", backend="onnxruntime", threads=1), mixer=False)
    chunk, prime = comp.chunk_size, comp.prime
    kw = dict(threads=threads, eol=True, prime=prime, context=comp.context)
    obs: list = []
    t0 = time.time()
    flat = ideal_bits(b, data, chunk, mixer=FLAT, observe=obs, **kw) / len(data)
    import numpy as np

    cells = np.concatenate([c for c, _ in obs])
    hits = np.concatenate([h for _, h in obs])
    spec = MixerSpec(prior=fit_prior(cells, hits), min_len=FLAT.min_len, init_count=FLAT.init_count,
                     limit=FLAT.limit)
    if report:
        base = ideal_bits(b, data, chunk, **kw) / len(data)
        fitted = ideal_bits(b, data, chunk, mixer=spec, **kw) / len(data)
        used = cells >= 0
        print(f"{len(data)} bytes, chunks of {chunk}, segments of {comp.context}, prime {prime}: {used.mean():.3f} of the bytes predicted, "
              f"{hits[used].mean():.3f} of those right")
        print(f"bits/byte: no match model {base:.4f}, flat prior {flat:.4f}, fitted {fitted:.4f} "
              f"(in-sample; {time.time() - t0:.0f} s)")
    return spec


def write(bundle_dir: Path, spec: MixerSpec) -> None:
    """Store ``spec`` as ``codec.mixer`` in the bundle's manifest (atomically)."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest.setdefault("codec", {})["mixer"] = spec.to_json()
    write_manifest(bundle_dir, manifest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="held-out training text (never an evaluation corpus)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N bytes")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--write", action="store_true", help="store the fitted spec in the bundle's manifest")
    a = ap.parse_args()
    data = a.data.read_bytes()
    if a.limit:
        data = data[: a.limit]
    spec = fit(a.bundle, data, threads=a.threads)
    print(f"digest {spec.digest}")
    if a.write:
        write(a.bundle, spec)
        print(f"written to {a.bundle / 'manifest.json'}")


if __name__ == "__main__":
    main()
