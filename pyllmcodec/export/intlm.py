"""Convert a float ByteLM bundle into the exact integer model
(:mod:`pyllmcodec.nets.intlm`): calibrate activation ranges on training
text, fold LayerNorm and the key/value scales into the linear layers,
quantize, build the tables, and write a bundle.

    python -m pyllmcodec.export.intlm FLOAT_BUNDLE CALIB.bin OUT_DIR [--name default-exact]

Needs torch (the calibration runs the float network).  The tables are
computed here once, with this machine's libm, and shipped: nobody computes
them again.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..models.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    bundle_id,
    file_sha256,
    float_tensors,
    load_bundle,
    write_manifest,
)
from ..nets import intlm as I

__all__ = ["calibrate", "convert", "export_int_bundle"]


def _float_weights(bundle: Any) -> dict[str, np.ndarray]:
    return {k: a.astype(np.float64) for k, a in float_tensors(bundle).items()}


def calibrate(bundle: Any, data: bytes, *, windows: int = 96, length: int = 512, seed: int = 0) -> dict[str, Any]:
    """Maximum absolute activations of the float network on ``windows``
    windows of ``length`` bytes of ``data`` (each from BOS): per channel for
    keys, values and queries, per layer for the MLP's input to GELU."""
    import torch

    from ..backends.torch import load_bytelm

    net = load_bytelm(bundle)
    c = net.c
    hd = c.head_dim
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - length, size=windows)
    toks = np.stack([np.frombuffer(data[s:s + length - 1], np.uint8) for s in starts]).astype(np.int64)
    toks = np.concatenate([np.full((windows, 1), 256), toks], axis=1)
    stats: dict[str, Any] = {}

    def hook(name: str):
        def f(_m: Any, _inp: Any, out: Any) -> None:
            a = out.detach().abs().reshape(-1, out.shape[-1]).max(0).values.double().numpy()
            stats[name] = np.maximum(stats.get(name, 0), a)
        return f

    hs = []
    blocks: list[Any] = list(net.blocks)
    for i, b in enumerate(blocks):
        hs.append(b.q.register_forward_hook(hook(f"{i}.q")))
        hs.append(b.kv.register_forward_hook(hook(f"{i}.kv")))
        hs.append(b.fc1.register_forward_hook(hook(f"{i}.fc1")))
    hs.append(net.head.register_forward_hook(hook("head")))
    with torch.no_grad():
        for j in range(0, windows, 16):
            net(torch.from_numpy(toks[j:j + 16]))
    for h in hs:
        h.remove()
    out: dict[str, Any] = {"layers": []}
    for i in range(c.n_layer):
        kv = stats[f"{i}.kv"]
        out["layers"].append({"q": stats[f"{i}.q"].reshape(c.n_head, hd).max(0), "k": kv[:hd], "v": kv[hd:2 * hd],
                              "fc1": float(stats[f"{i}.fc1"].max())})
    return out


def _quant_linear(w_eff: np.ndarray, bias: np.ndarray, tau: np.ndarray, lo: int, hi: int,
                  max_in: int) -> I.IntLinear:
    """Quantize a float linear layer whose input unit is already folded into
    ``w_eff`` [out, in]: int8 weights per output channel, output unit ``tau``."""
    ws = np.abs(w_eff).max(axis=1) / 127.0
    ws = np.where(ws > 0, ws, 1.0)
    wq = np.clip(np.rint(w_eff / ws[:, None]), -127, 127).astype(np.int8)
    ratio = ws / tau
    sh = int(min(I.MAX_SH, math.floor(math.log2((2**30 - 1) / ratio.max()))))
    bmax = float(np.abs(bias / tau).max())
    if bmax > 0:
        sh = min(sh, math.floor(math.log2(2.0**59 / bmax)))
    if sh < 1:
        raise ValueError("a layer's scales are out of range")
    m = np.rint(ratio * 2.0**sh).astype(np.int64)
    b = (np.rint(bias / tau * 2.0**sh) + 2 ** (sh - 1)).astype(np.int64)
    if max_in * int(np.abs(wq.astype(np.int64)).sum(axis=1).max()) >= 2**31:
        raise ValueError("a layer's accumulator could overflow int32")
    return I.IntLinear(w=wq, m=m, b=b, sh=sh, lo=lo, hi=hi)


def _tanh_gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _exp_table(one: int, step: float) -> np.ndarray:
    vals = []
    i = 0
    while True:
        v = round(one * math.exp(-i * step))
        vals.append(v)
        if v == 0:
            break
        i += 1
    return np.array(vals, dtype=np.int64)


def convert(bundle: Any, calib: dict[str, Any]) -> I.IntModel:
    """The exact integer model of a float ByteLM bundle (see the module docstring of
    :mod:`pyllmcodec.nets.intlm` for every unit)."""
    sd = _float_weights(bundle)
    cfg = bundle.manifest["config"]
    d, H, L = int(cfg["d_model"]), int(cfg["n_head"]), int(cfg["n_layer"])
    hd = d // H
    if int(cfg.get("n_kv_head", 1)) != 1:
        raise ValueError("the exact model supports one key/value head")
    ln_unit = 2.0**-I.LN_SHIFT
    res_unit = 2.0**-I.RES_SHIFT

    def folded(prefix: str, ln: str) -> tuple[np.ndarray, np.ndarray]:
        w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
        g, beta = sd[f"{ln}.weight"], sd[f"{ln}.bias"]
        return w * g[None, :] * ln_unit, b + w @ beta

    layers = []
    for i in range(L):
        p = f"blocks.{i}"
        cs = calib["layers"][i]
        s_k = np.maximum(cs["k"], 1e-6) / I.KV_CLAMP
        s_v = np.maximum(cs["v"], 1e-6) / I.KV_CLAMP
        u = (cs["q"] * s_k).max()
        tq = math.floor(math.log2(I.ACT16 / u))
        if tq < 3:
            raise ValueError(f"layer {i}: queries too large for the attention shift")
        wq, bq = folded(f"{p}.q", f"{p}.ln1")
        tau_q = np.tile(2.0**-tq / s_k, H)
        q = _quant_linear(wq, bq, tau_q, -I.ACT16, I.ACT16, I.ACT16)
        wkv, bkv = folded(f"{p}.kv", f"{p}.ln1")
        kv = _quant_linear(wkv, bkv, np.concatenate([s_k, s_v]), -I.KV_CLAMP, I.KV_CLAMP, I.ACT16)
        w_o = sd[f"{p}.o.weight"] * np.tile(s_v / 2.0**I.ATT_OUT_SHIFT, H)[None, :]
        o = _quant_linear(w_o, sd[f"{p}.o.bias"], np.full(d, res_unit), -I.RES_CLAMP, I.RES_CLAMP,
                          I.KV_CLAMP << I.ATT_OUT_SHIFT)
        tg = math.floor(math.log2(I.GELU_CLAMP / cs["fc1"]))
        w1, b1 = folded(f"{p}.fc1", f"{p}.ln2")
        fc1 = _quant_linear(w1, b1, np.full(w1.shape[0], 2.0**-tg), -I.GELU_CLAMP, I.GELU_CLAMP, I.ACT16)
        fc2 = _quant_linear(sd[f"{p}.fc2.weight"] * 2.0**-tg, sd[f"{p}.fc2.bias"], np.full(d, res_unit),
                            -I.RES_CLAMP, I.RES_CLAMP, I.GELU_CLAMP)
        xs = np.arange(-I.GELU_CLAMP, I.GELU_CLAMP + 1) * 2.0**-tg
        gelu = np.clip(np.rint(_tanh_gelu(xs) * 2.0**tg), -I.GELU_CLAMP, I.GELU_CLAMP).astype(np.int16)
        layers.append(I.IntLayer(q=q, kv=kv, o=o, fc1=fc1, fc2=fc2, att_shift=tq - 3, gelu=gelu))
    wh, bh = folded("head", "ln_f")
    head = _quant_linear(wh, bh, np.full(wh.shape[0], 1 / 64), -I.LOGIT_CLAMP, I.LOGIT_CLAMP, I.ACT16)
    return I.IntModel(
        d_model=d, n_head=H, head_dim=hd, ctx=int(cfg["ctx"]),
        tok=np.rint(sd["tok.weight"] / res_unit).astype(np.int32),
        pos=np.rint(sd["pos.weight"] / res_unit).astype(np.int32),
        ln_eps=round(d * 1e-5 * 2.0 ** (2 * I.RES_SHIFT)), ln_k=round(math.sqrt(d) * 2.0**I.LN_SHIFT),
        layers=layers, head=head,
        expa=_exp_table(I.EXPA_ONE, 1 / 64), expl=_exp_table(I.EXPL_ONE, 1 / 64),
    )


def export_int_bundle(model: I.IntModel, float_bundle: Any, out: Path, *, name: str, version: str,
                      calibration: dict[str, Any]) -> Path:
    """Write ``model`` as a bundle (``intlm.npz`` + manifest) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = I.to_arrays(model)
    np.savez(out / "intlm.npz", **arrays)
    fm = float_bundle.manifest
    files = {"intlm.npz": file_sha256(out / "intlm.npz")}
    manifest = {
        "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION,
        "name": name, "version": version, "architecture": "bytelm-int", "numerics": I.NUMERICS,
        "description": "the default byte-level model in exact integer arithmetic (pyllmcodec.nets.intlm)",
        "config": fm["config"], "context_length": fm["context_length"], "vocab": fm["vocab"],
        "graphs": {}, "files": files, "id": bundle_id(files),
        "codec": fm.get("codec", {}), "licence": fm.get("licence"),
        "converted_from": {"name": fm["name"], "version": fm.get("version"), "id": fm.get("id")},
        "calibration": calibration,
        "never_trained_on": fm.get("training", {}).get("never_trained_on"),
    }
    write_manifest(out, manifest)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pyllmcodec.export.intlm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("calib", type=Path, help="calibration text (training data, never evaluation data)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--name", default="default-exact")
    ap.add_argument("--version", default="1.5.0+exact.1")
    ap.add_argument("--windows", type=int, default=96)
    a = ap.parse_args(argv)
    fb = load_bundle(a.bundle)
    data = a.calib.read_bytes()
    calib = calibrate(fb, data, windows=a.windows)
    model = convert(fb, calib)
    info = {"source": a.calib.name, "bytes": len(data), "windows": a.windows, "length": 512, "seed": 0}
    export_int_bundle(model, fb, a.out, name=a.name, version=a.version, calibration=info)
    print(json.dumps({"out": str(a.out), "calibration": info}))


if __name__ == "__main__":
    main()
