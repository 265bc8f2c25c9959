"""The default model's architecture in PyTorch: a small byte-level causal
transformer with multi-query attention.

Used for training (``training/train.py``), for ONNX export
(``pyllmcodec.export.bytelm``) and by the PyTorch backend.  Importing this
module needs torch; nothing on the ONNX Runtime path imports it.

Shapes: input tokens are bytes 0..255 plus ``BOS = 256`` (input vocabulary
257); the output is a distribution over the 256 byte values.  Positions use a
learned absolute embedding of ``ctx`` entries, so a chunk holds at most ``ctx``
symbols (the first is predicted from BOS alone).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

BOS = 256


@dataclass(frozen=True)
class ByteLMConfig:
    n_layer: int = 4
    d_model: int = 256
    n_head: int = 4
    n_kv_head: int = 1
    d_mlp: int = 1024
    ctx: int = 1024
    vocab_in: int = 257
    vocab_out: int = 256

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    def __init__(self, c: ByteLMConfig):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.ln1 = nn.LayerNorm(c.d_model)
        self.q = nn.Linear(c.d_model, c.n_head * hd)
        self.kv = nn.Linear(c.d_model, 2 * c.n_kv_head * hd)
        self.o = nn.Linear(c.n_head * hd, c.d_model)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.fc1 = nn.Linear(c.d_model, c.d_mlp)
        self.fc2 = nn.Linear(c.d_mlp, c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.c
        B, T, _ = x.shape
        hd = c.head_dim
        h = self.ln1(x)
        q = self.q(h).view(B, T, c.n_head, hd).transpose(1, 2)
        k, v = self.kv(h).view(B, T, 2, c.n_kv_head, hd).unbind(2)
        k = k.transpose(1, 2)
        v = v.transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, c.n_head * hd))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))
        return x


class ByteLM(nn.Module):
    def __init__(self, c: ByteLMConfig):
        super().__init__()
        self.c = c
        self.tok = nn.Embedding(c.vocab_in, c.d_model)
        self.pos = nn.Embedding(c.ctx, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_out)
        self.apply(self._init)
        for b in cast("list[Block]", self.blocks):  # GPT-2 style scaled init of residual projections
            nn.init.normal_(b.o.weight, std=0.02 / math.sqrt(2 * c.n_layer))
            nn.init.normal_(b.fc2.weight, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, 256]`` for input tokens ``[B, T]``."""
        T = tokens.shape[1]
        x = self.tok(tokens) + self.pos.weight[:T]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))

    def step(self, kcache: list[torch.Tensor], vcache: list[torch.Tensor], tokens: torch.Tensor,
             t: int) -> torch.Tensor:
        """One decode step at position ``t`` for tokens ``[B]``: writes each
        layer's key/value into ``kcache[i][:, :, t]`` / ``vcache[i][:, :, t]``
        (``[B, n_kv_head, max_len, head_dim]``) and returns logits ``[B, 256]``."""
        c = self.c
        B = tokens.shape[0]
        x = self.tok(tokens) + self.pos.weight[t]
        for i, blk in enumerate(cast("list[Block]", self.blocks)):
            h = blk.ln1(x)
            q = blk.q(h).view(B, c.n_head, 1, c.head_dim)
            k, v = blk.kv(h).view(B, 2, c.n_kv_head, c.head_dim).unbind(1)
            kcache[i][:, :, t] = k
            vcache[i][:, :, t] = v
            a = F.scaled_dot_product_attention(q, kcache[i][:, :, : t + 1], vcache[i][:, :, : t + 1],
                                               enable_gqa=True)
            x = x + blk.o(a.reshape(B, c.n_head * c.head_dim))
            x = x + blk.fc2(F.gelu(blk.fc1(blk.ln2(x)), approximate="tanh"))
        return self.head(self.ln_f(x))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
