"""A Llama-architecture causal LM in PyTorch (SmolLM2 and relatives).

Weights are a flat ``dict`` with Hugging Face ``LlamaForCausalLM`` names
(``model.embed_tokens.weight``, ``model.layers.{i}.self_attn.q_proj.weight``,
..., ``model.norm.weight``, ``lm_head.weight`` unless the embeddings are
tied), so a Hugging Face ``state_dict`` loads as is and the GGUF converter
(:mod:`.smollm2`) only renames.  Rotary embeddings use the Hugging Face
"rotate half" layout (the two halves of each head are the pairs), with the
cos/sin tables computed once by :func:`rope_tables` and stored in the bundle
so every backend uses the very same numbers.

Used for conversion checks and evaluation (:meth:`Llama.forward`, teacher
forced) and by the PyTorch backend (:class:`LlamaTorchStepModel`: one token
per row, preallocated KV cache).  Importing this module needs torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.torch import TorchStepModel

__all__ = ["Llama", "LlamaConfig", "LlamaTorchStepModel", "rope_tables"]


@dataclass(frozen=True)
class LlamaConfig:
    n_layer: int = 30
    d_model: int = 576
    n_head: int = 9
    n_kv_head: int = 3
    d_mlp: int = 1536
    vocab: int = 49152
    rope_theta: float = 100000.0
    rms_eps: float = 1e-5
    ctx: int = 8192  # positions the rotary table covers (the model's trained context)
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LlamaConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def rope_tables(cfg: LlamaConfig, n_pos: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``cos``/``sin`` ``[n_pos, head_dim // 2]``: angle ``p * theta^(-2i/hd)``
    computed in float64 and rounded once (NOTE: the tables are part of the
    bundle, so this formula only has to be stable at conversion time)."""
    n = cfg.ctx if n_pos is None else n_pos
    hd = cfg.head_dim
    inv = cfg.rope_theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, halves layout: x [..., T, hd], cos/sin [T, hd/2]."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Llama(torch.nn.Module):
    """Functional Llama over a weight dict (see the module docstring)."""

    def __init__(self, cfg: LlamaConfig, weights: Mapping[str, Any], rope: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__()
        self.c = cfg
        self.w: dict[str, torch.Tensor] = {}
        with warnings.catch_warnings():
            # the weights are read-only memory maps of weights.bin; nothing writes them,
            # so torch's "not writable" warning is noise (a copy would double the RAM)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for k, v in weights.items():
                t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                self.w[k] = t.float()
        if "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        cos, sin = rope if rope is not None else rope_tables(cfg)
        self.cos = torch.from_numpy(np.ascontiguousarray(cos))
        self.sin = torch.from_numpy(np.ascontiguousarray(sin))

    def to(self, device: Any) -> Llama:  # type: ignore[override]
        self.w = {k: v.to(device) for k, v in self.w.items()}
        self.cos, self.sin = self.cos.to(device), self.sin.to(device)
        return self

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        v = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(v + self.c.rms_eps) * self.w[name]

    def _mlp(self, x: torch.Tensor, p: str) -> torch.Tensor:
        w = self.w
        g = F.linear(x, w[p + "mlp.gate_proj.weight"])
        u = F.linear(x, w[p + "mlp.up_proj.weight"])
        return F.linear(F.silu(g) * u, w[p + "mlp.down_proj.weight"])

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, vocab]`` for ``tokens`` ``[B, T]``."""
        c, w = self.c, self.w
        B, T = tokens.shape
        hd = c.head_dim
        x = w["model.embed_tokens.weight"][tokens]
        cos, sin = self.cos[:T], self.sin[:T]
        for i in range(c.n_layer):
            p = f"model.layers.{i}."
            h = self._norm(x, p + "input_layernorm.weight")
            q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(B, T, c.n_head, hd).transpose(1, 2)
            k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(B, T, c.n_kv_head, hd).transpose(1, 2)
            v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(B, T, c.n_kv_head, hd).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, c.d_model), w[p + "self_attn.o_proj.weight"])
            x = x + self._mlp(self._norm(x, p + "post_attention_layernorm.weight"), p)
        return F.linear(self._norm(x, "model.norm.weight"), w["lm_head.weight"])

    @torch.inference_mode()
    def step(self, kcache: list[torch.Tensor], vcache: list[torch.Tensor], tokens: torch.Tensor,
             t: int) -> torch.Tensor:
        """One token per row at position ``t``; caches ``[B, n_kv, ctx, hd]``
        are written at ``t`` in place.  Returns logits ``[B, vocab]``."""
        c, w = self.c, self.w
        B = tokens.shape[0]
        hd = c.head_dim
        x = w["model.embed_tokens.weight"][tokens]
        cos, sin = self.cos[t : t + 1], self.sin[t : t + 1]
        for i in range(c.n_layer):
            p = f"model.layers.{i}."
            h = self._norm(x, p + "input_layernorm.weight")
            q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(B, c.n_head, 1, hd)
            k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(B, c.n_kv_head, 1, hd)
            v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(B, c.n_kv_head, 1, hd)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            kcache[i][:, :, t : t + 1] = k
            vcache[i][:, :, t : t + 1] = v
            a = F.scaled_dot_product_attention(q, kcache[i][:, :, : t + 1], vcache[i][:, :, : t + 1],
                                               enable_gqa=True)
            x = x + F.linear(a.reshape(B, c.d_model), w[p + "self_attn.o_proj.weight"])
            x = x + self._mlp(self._norm(x, p + "post_attention_layernorm.weight"), p)
        return F.linear(self._norm(x, "model.norm.weight"), w["lm_head.weight"])


def ideal_bits(model: Llama, tokens: np.ndarray, bos: int, window: int = 1024) -> float:
    """Ideal code length in bits of ``tokens`` coded in windows of ``window``
    tokens, each predicted from ``bos`` + the window's previous tokens (the
    codec's chunking)."""
    total = 0.0
    for s in range(0, len(tokens), window):
        seq = np.asarray(tokens[s : s + window], dtype=np.int64)
        inp = torch.from_numpy(np.concatenate([[bos], seq[:-1]]))[None]
        logp = torch.log_softmax(model(inp)[0].double(), -1)
        total -= float(logp[torch.arange(len(seq)), torch.from_numpy(seq)].sum()) / np.log(2)
    return total


class LlamaTorchStepModel(TorchStepModel):
    """A Llama bundle in PyTorch behind the StepModel interface (see
    :mod:`pyllmcodec.backends.torch` for the numerics policy), with its
    tokenizer and the two-phase large-vocabulary steps."""

    def __init__(self, bundle: Any, *, device: str = "cpu", threads: int | None = None):
        from ..tokenizer import load_bundle_tokenizer
        from .llama_graph import load_weights

        cfg = LlamaConfig.from_dict(bundle.manifest["config"])
        weights, rope = load_weights(bundle)
        super().__init__(bundle, device=device, threads=threads, net=Llama(cfg, weights, rope))
        #: quantize on the device (two-phase steps, O(B) numbers per step to the
        #: host): on CUDA; on the CPU the core quantizer reads the probs directly
        self.device_quantize = self.device.type == "cuda"
        self.tokenizer = load_bundle_tokenizer(bundle)

    # tokenizer surface (see backends/base.py)
    def tokenize(self, data: bytes) -> np.ndarray:
        return self.tokenizer.tokenize(data)

    def detokenize(self, ids: Any) -> bytes:
        return self.tokenizer.detokenize(ids)

    # two-phase large-vocabulary step: quantize where the logits live
    @torch.inference_mode()
    def step_ranges(self, state: Any, tokens: np.ndarray, symbols: np.ndarray,
                    precision: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoder step: ``(cum_low, freq)`` uint32 ``[B]`` of ``symbols`` in
        the core quantizer's table of this step's distribution."""
        from ..devquant import symbol_ranges

        probs = torch.softmax(self.step_logits(state, tokens), -1)
        s = torch.from_numpy(np.asarray(symbols, dtype=np.int64)).to(probs.device)
        c, f = symbol_ranges(probs, s, precision)
        return c.cpu().numpy().astype(np.uint32), f.cpu().numpy().astype(np.uint32)

    @torch.inference_mode()
    def step_find(self, state: Any, tokens: np.ndarray, targets: np.ndarray,
                  precision: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder step: ``(symbol, cum_low, freq)`` for the core decoder's
        ``targets`` (uint32 ``[B]``)."""
        from ..devquant import find_symbols

        probs = torch.softmax(self.step_logits(state, tokens), -1)
        tg = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(probs.device)
        s, c, f = find_symbols(probs, tg, precision)
        return s.cpu().numpy(), c.cpu().numpy().astype(np.uint32), f.cpu().numpy().astype(np.uint32)
