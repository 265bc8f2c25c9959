"""Turn a Hugging Face Llama-family causal LM into a pyllmcodec model bundle.

    pyllmcodec export HF_MODEL_OR_DIR OUT_DIR [--name NAME] [--context 2048] [--bos ID]

Needs ``transformers`` (and the weights, local or downloadable) at export
time only; the bundle it writes is the same format as the converted SmolLM2
(:mod:`pyllmcodec.export.llama_graph`): hand-built ONNX step graph, weights,
byte-level BPE tokenizer table.  Supported: ``model_type == "llama"`` without
attention/MLP biases or rope scaling, ``head_dim == hidden_size / heads``, a
fast byte-level BPE tokenizer (SmolLM, SmolLM2, TinyLlama-style GPT-2 BPE).
Load the result with :func:`load_exported`, or register it::

    from pyllmcodec.models import bundle_factory, register_model
    register_model("my-model", bundle_factory(OUT_DIR))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["export_hf", "hf_config", "hf_vocab"]


def hf_config(c: Any) -> dict[str, Any]:
    """Our Llama config dict from a ``transformers`` config (refuses what the
    graph does not implement)."""
    if getattr(c, "model_type", None) != "llama":
        raise ValueError(f"only Llama-architecture models are supported, not {getattr(c, 'model_type', None)!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(c, flag, False):
            raise ValueError(f"{flag}=True is not supported by the step graph")
    rope = getattr(c, "rope_parameters", None) or {}
    theta = getattr(c, "rope_theta", None) or rope.get("rope_theta", 10000.0)
    scaling = getattr(c, "rope_scaling", None) or ({} if rope.get("rope_type", "default") == "default" else rope)
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ValueError(f"rope scaling {scaling} is not supported")
    if getattr(c, "hidden_act", "silu") != "silu":
        raise ValueError(f"activation {c.hidden_act!r} is not supported (SwiGLU with silu only)")
    d, H = int(c.hidden_size), int(c.num_attention_heads)
    if int(getattr(c, "head_dim", None) or d // H) * H != d:
        raise ValueError("head_dim * num_attention_heads must equal hidden_size")
    return {
        "n_layer": int(c.num_hidden_layers), "d_model": d, "n_head": H,
        "n_kv_head": int(getattr(c, "num_key_value_heads", None) or H), "d_mlp": int(c.intermediate_size),
        "vocab": int(c.vocab_size), "rope_theta": float(theta), "rms_eps": float(np.float32(c.rms_norm_eps)),
        "ctx": int(c.max_position_embeddings), "tie_embeddings": bool(getattr(c, "tie_word_embeddings", False)),
    }


def hf_vocab(tokenizer_json: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """``tokens``/``merges``/``token_type``/``pre`` from a fast tokenizer's
    ``tokenizer.json`` (byte-level BPE only).  Ids the tokenizer does not use
    up to the model's ``vocab_size`` become control tokens (never produced)."""
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer model {model.get('type')!r} is not BPE")
    pre = json.dumps(tokenizer_json.get("pre_tokenizer"))
    if "ByteLevel" not in pre:
        raise ValueError("only byte-level BPE tokenizers are supported")
    tokens = [f"<|unused_{i}|>" for i in range(vocab_size)]
    types = [3] * vocab_size
    for tok, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = tok, 1
    for a in tokenizer_json.get("added_tokens", []):
        if a["id"] < vocab_size:
            tokens[a["id"]], types[a["id"]] = a["content"], 3 if a.get("special", True) else 1
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    digits = '"individual_digits": true' in pre
    return {"tokens": tokens, "merges": merges, "token_type": types, "pre": "smollm" if digits else "gpt2"}


def export_hf(source: str, out_dir: str | Path, *, name: str | None = None, context_length: int = 2048,
              bos: int | None = None) -> Path:
    """Export the Hugging Face model ``source`` (hub id or directory) to a bundle."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .llama_graph import export_llama_bundle

    model = AutoModelForCausalLM.from_pretrained(source, torch_dtype=torch.float32)
    cfg = hf_config(model.config)
    sd = model.state_dict()
    W = {k: v.detach().float().cpu().numpy() for k, v in sd.items()
         if not k.endswith("rotary_emb.inv_freq") and not (cfg["tie_embeddings"] and k == "lm_head.weight")}
    tok = AutoTokenizer.from_pretrained(source)
    vocab = hf_vocab(json.loads(tok.backend_tokenizer.to_str()), cfg["vocab"])
    if bos is None:
        bos = next((i for i in (tok.bos_token_id, tok.eos_token_id, 0) if i is not None), 0)
    name = name or Path(str(source).rstrip("/")).name.lower()
    return export_llama_bundle(
        W, cfg, vocab, Path(out_dir), name=name, version="hf", context_length=int(context_length), bos=int(bos),
        licence=str(getattr(model.config, "license", "see the source model")),
        description=f"exported from Hugging Face {source}", source={"hf": str(source)},
    )


def load_exported(path: str | Path, **kw: Any) -> Any:
    """A StepModel for an exported bundle (``device``/``backend``/``threads``)."""
    from ..backends import open_bundle
    from ..models.bundle import load_bundle

    return open_bundle(load_bundle(path), **kw)
