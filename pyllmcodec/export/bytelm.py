"""Turn trained ByteLM weights into a model bundle (see :mod:`.bundle`).

    python -m pyllmcodec.export.bytelm CKPT.pt OUT_DIR [--name default --version 1.0.0]

Needs ``onnx`` (and torch to read a ``.pt`` checkpoint); the ONNX Runtime path
that loads the bundle needs neither.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..models.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, bundle_id, file_sha256, write_manifest
from .onnx_graph import build_graph

__all__ = ["export_bundle", "random_weights"]

def _graph_name(k: str, arr: np.ndarray) -> str:
    """The initializer name a state_dict entry gets in the graphs (linear
    weights are stored transposed, as ``<name>.weight_t``)."""
    if k.endswith(".weight") and arr.ndim == 2 and not k.startswith(("tok.", "pos.")):
        return k[: -len(".weight")] + ".weight_t"
    return k


def _externalize(model, weights_file: str, table: dict[str, tuple[int, int]], blob: bytearray,
                 names: set[str]) -> None:
    """Move the model's weights (initializers named in ``names``) to
    ``weights_file``; tensors already in ``table`` (same name, same bytes) reuse
    their offset so graphs share storage.  Graph constants stay inline."""
    from onnx import TensorProto

    for t in model.graph.initializer:
        raw = t.raw_data
        if t.name not in names:
            continue
        if t.name in table:
            off, n = table[t.name]
            if bytes(blob[off:off + n]) != raw:
                raise ValueError(f"tensor {t.name} differs between graphs")
        else:
            off = (len(blob) + 63) // 64 * 64  # 64-byte aligned, so loads can mmap
            blob.extend(b"\0" * (off - len(blob)))
            blob.extend(raw)
            n = len(raw)
            table[t.name] = (off, n)
        del t.external_data[:]
        for k, v in (("location", weights_file), ("offset", str(off)), ("length", str(n))):
            e = t.external_data.add()
            e.key, e.value = k, v
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")


def export_bundle(
    weights: Mapping[str, np.ndarray],
    config: Mapping[str, int],
    out_dir: str | Path,
    *,
    name: str = "default",
    version: str = "1.0.0",
    licence: str = "MIT",
    description: str = "",
    training: Mapping[str, Any] | None = None,
    codec: Mapping[str, int] | None = None,
    graphs: tuple[str, ...] = ("step", "forward"),
) -> Path:
    """Write a bundle for ByteLM ``weights`` (a state_dict as numpy) to ``out_dir``."""
    import onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    W = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    table: dict[str, tuple[int, int]] = {}
    blob = bytearray()
    graph_meta: dict[str, Any] = {}
    for kind in graphs:
        m = build_graph(W, config, kind)
        _externalize(m, "weights.bin", table, blob, {_graph_name(k, a) for k, a in W.items()})
        fname = f"{kind}.onnx"
        onnx.save_model(m, str(out / fname))
        graph_meta[kind] = {
            "file": fname,
            "inputs": [i.name for i in m.graph.input],
            "outputs": [o.name for o in m.graph.output],
        }
    (out / "weights.bin").write_bytes(bytes(blob))
    hd = config["d_model"] // config["n_head"]
    if "step" in graph_meta:
        graph_meta["step"]["kv_cache"] = {
            "layout": "BNSH", "n_layer": config["n_layer"], "n_kv_head": config["n_kv_head"],
            "head_dim": hd, "max_len": config["ctx"], "past": "past_key_{i}/past_value_{i}",
            "present": "present_key_{i}/present_value_{i}", "shared_buffer": True,
        }
    # torch-side names of the weights (the graphs store linear weights transposed)
    tensors = {}
    for k, arr in W.items():
        gname = _graph_name(k, arr)
        off, n = table[gname]
        tensors[k] = {"offset": off, "length": n, "shape": list(arr.shape), "transposed": gname != k}
    files = {f: file_sha256(out / f) for f in ["weights.bin"] + [g["file"] for g in graph_meta.values()]}
    manifest = {
        "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION,
        "name": name, "version": version, "architecture": "bytelm",
        "licence": licence, "description": description,
        "vocab": {"kind": "bytes", "size": int(config["vocab_out"]), "bos": 256, "tokenizer": None},
        "context_length": int(config["ctx"]),
        "config": dict(config),
        "graphs": graph_meta,
        "tensors": tensors,
        "files": files,
        "id": bundle_id(files),
        "training": dict(training or {}),
    }
    if codec:
        manifest["codec"] = dict(codec)
    write_manifest(out, manifest)
    return out


def random_weights(config: Mapping[str, int], seed: int = 0, scale: float = 0.02) -> dict[str, np.ndarray]:
    """Random ByteLM weights with the torch state_dict layout (for tests and
    speed measurements; needs no torch)."""
    rng = np.random.default_rng(seed)
    d, L, H, KVH, F = (config[k] for k in ("d_model", "n_layer", "n_head", "n_kv_head", "d_mlp"))
    hd = d // H
    W: dict[str, np.ndarray] = {}

    def lin(name: str, n_in: int, n_out: int) -> None:
        W[name + ".weight"] = (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
        W[name + ".bias"] = (rng.standard_normal(n_out) * scale).astype(np.float32)

    def ln(name: str) -> None:
        W[name + ".weight"] = (1 + rng.standard_normal(d) * 0.1).astype(np.float32)
        W[name + ".bias"] = (rng.standard_normal(d) * 0.1).astype(np.float32)

    W["tok.weight"] = (rng.standard_normal((config["vocab_in"], d)) * 1.0).astype(np.float32)
    W["pos.weight"] = (rng.standard_normal((config["ctx"], d)) * 0.1).astype(np.float32)
    for i in range(L):
        p = f"blocks.{i}"
        ln(p + ".ln1")
        lin(p + ".q", d, H * hd)
        lin(p + ".kv", d, 2 * KVH * hd)
        lin(p + ".o", H * hd, d)
        ln(p + ".ln2")
        lin(p + ".fc1", d, F)
        lin(p + ".fc2", F, d)
    ln("ln_f")
    lin("head", d, config["vocab_out"])
    W["head.weight"] *= 50  # peaky enough that coding actually compresses something
    return W


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description="Export a ByteLM checkpoint to a pyllmcodec bundle")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--name", default="default")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--training-json", type=Path, help="JSON merged into manifest['training']")
    ap.add_argument("--chunk-size", type=int, help="the codec's default chunk size for this model")
    ap.add_argument("--prime", type=int, help="the codec's default prime for chunks longer than the context")
    ap.add_argument("--context", type=int, help="the codec's default segment length (at most the context)")
    a = ap.parse_args(argv)
    s = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    W = {k: v.float().numpy() for k, v in s["model"].items()}
    training = json.loads(a.training_json.read_text()) if a.training_json else {}
    training.setdefault("steps", s.get("step"))
    ctx = int(s["config"]["ctx"])
    if a.context:
        a.context = min(a.context, ctx) if a.context < ctx else None  # the whole context needs no key
    if a.prime:  # a segment's prime is at most half the segment (docs/FORMAT.md section 4b)
        a.prime = max(1, min(a.prime, (a.context or ctx) // 2))
    export_bundle(W, s["config"], a.out, name=a.name, version=a.version, training=training,
                  licence="MIT (model weights); training data licences listed under training.sources",
                  description="byte-level causal transformer (multi-query attention), trained by pyllmcodec",
                  codec={k: v for k, v in (("chunk_size", a.chunk_size), ("prime", a.prime),
                                           ("context", a.context)) if v})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
