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
forced) and by the PyTorch backend
(:class:`pyllmcodec.backends.llama.LlamaTorchStepModel`: one token per row,
preallocated KV cache).  Importing this module needs torch; it imports
nothing else of pyllmcodec.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Llama", "LlamaConfig", "rope_tables"]


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
