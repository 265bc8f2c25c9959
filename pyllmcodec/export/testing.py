"""Tiny random-weight bundles for tests: the real export path and the real
ONNX Runtime step graph, in a model small enough to run a test in seconds.
Needs the ``onnx`` package (a test extra)."""

from __future__ import annotations

from pathlib import Path

from .bytelm import export_bundle, random_weights

TINY_CONFIG = dict(n_layer=2, d_model=32, n_head=2, n_kv_head=1, d_mlp=64, ctx=256,
                   vocab_in=257, vocab_out=256)


def make_tiny_bundle(out_dir: str | Path, *, name: str = "tiny", seed: int = 0, **overrides: int) -> Path:
    """Export a random tiny ByteLM bundle to ``out_dir`` and return the path."""
    cfg = {**TINY_CONFIG, **overrides}
    return export_bundle(random_weights(cfg, seed=seed), cfg, out_dir, name=name, version="0.0.0",
                         description="random weights, for tests")
