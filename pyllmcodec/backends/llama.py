"""The Llama tier (SmolLM2 and relatives) in PyTorch behind the StepModel
interface: :class:`LlamaTorchStepModel` runs :class:`pyllmcodec.nets.llama.Llama`
over a bundle's weights with a preallocated KV cache, carries the bundle's
tokenizer, and on CUDA quantizes where the logits live (the two-phase step of
:class:`~pyllmcodec.backends.base.TwoPhaseStepModel`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..nets.llama import Llama, LlamaConfig
from .devquant import find_symbols, quantize, symbol_ranges
from .torch import TorchStepModel

__all__ = ["LlamaTorchStepModel", "load_weights"]


def load_weights(bundle: Any) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hugging Face-named float32 weights and the rope tables back from a
    Llama bundle's ``weights.bin`` (memory-mapped)."""
    m = bundle.manifest
    cfg = m["config"]
    raw = np.memmap(bundle.path / "weights.bin", dtype=np.uint8, mode="r")

    def get(k: str) -> np.ndarray:
        t = m["tensors"][k]
        return np.frombuffer(raw, np.float32, count=t["length"] // 4, offset=t["offset"]).reshape(t["shape"])

    d, H, KVH = cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    hd = d // H
    W: dict[str, np.ndarray] = {"model.embed_tokens.weight": get("embed"), "model.norm.weight": get("norm")}
    for i in range(cfg["n_layer"]):
        p = f"model.layers.{i}."
        qkv = get(f"l{i}.qkv_t").T
        W[p + "self_attn.q_proj.weight"] = qkv[: H * hd]
        W[p + "self_attn.k_proj.weight"] = qkv[H * hd : (H + KVH) * hd]
        W[p + "self_attn.v_proj.weight"] = qkv[(H + KVH) * hd :]
        W[p + "self_attn.o_proj.weight"] = get(f"l{i}.o_t").T
        W[p + "input_layernorm.weight"] = get(f"l{i}.attn_norm")
        W[p + "post_attention_layernorm.weight"] = get(f"l{i}.mlp_norm")
        gu = get(f"l{i}.gate_up_t").T
        W[p + "mlp.gate_proj.weight"] = gu[: cfg["d_mlp"]]
        W[p + "mlp.up_proj.weight"] = gu[cfg["d_mlp"] :]
        W[p + "mlp.down_proj.weight"] = get(f"l{i}.down_t").T
    if "lm_head" in m["tensors"]:
        W["lm_head.weight"] = get("lm_head")
    W = {k: np.ascontiguousarray(v) for k, v in W.items()}
    return W, (np.array(get("rope_cos")), np.array(get("rope_sin")))


class LlamaTorchStepModel(TorchStepModel):
    """A Llama bundle in PyTorch behind the StepModel interface (see
    :mod:`pyllmcodec.backends.torch` for the numerics policy), with its
    tokenizer and the two-phase large-vocabulary steps."""

    def __init__(self, bundle: Any, *, device: str = "cpu", threads: int | None = None):
        cfg = LlamaConfig.from_dict(bundle.manifest["config"])
        weights, rope = load_weights(bundle)
        super().__init__(bundle, device=device, threads=threads, net=Llama(cfg, weights, rope))
        #: quantize on the device (two-phase steps, O(B) numbers per step to the
        #: host): on CUDA; on the CPU the core quantizer reads the probs directly
        self.device_quantize = self.device.type == "cuda"

    # two-phase large-vocabulary step: quantize where the logits live
    @torch.inference_mode()
    def step_ranges(self, state: Any, tokens: np.ndarray, symbols: np.ndarray,
                    precision: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoder step: ``(cum_low, freq)`` uint32 ``[B]`` of ``symbols`` in
        the core quantizer's table of this step's distribution."""
        probs = torch.softmax(self.step_logits(state, tokens), -1)
        s = torch.from_numpy(np.asarray(symbols, dtype=np.int64)).to(probs.device)
        c, f = symbol_ranges(probs, s, precision)
        return c.cpu().numpy().astype(np.uint32), f.cpu().numpy().astype(np.uint32)

    @torch.inference_mode()
    def step_find(self, state: Any, tokens: np.ndarray, targets: np.ndarray,
                  precision: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder step: ``(symbol, cum_low, freq)`` for the core decoder's
        ``targets`` (uint32 ``[B]``)."""
        probs = torch.softmax(self.step_logits(state, tokens), -1)
        tg = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(probs.device)
        s, c, f = find_symbols(probs, tg, precision)
        return s.cpu().numpy(), c.cpu().numpy().astype(np.uint32), f.cpu().numpy().astype(np.uint32)

    @torch.inference_mode()
    def step_tables(self, state: Any, tokens: np.ndarray, precision: int) -> np.ndarray:
        """One step's whole quantized tables, uint32 ``[B, V + 1]`` (the probe)."""
        probs = torch.softmax(self.step_logits(state, tokens), -1)
        return quantize(probs, precision).cpu().numpy().astype(np.uint32)
