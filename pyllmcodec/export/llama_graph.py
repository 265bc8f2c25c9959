"""The ONNX step graph of a Llama model, built op by op, and its bundle writer.

Like :mod:`.onnx_graph` (the default model), the graph is written with
``onnx.helper`` so its op sequence -- and the float numerics the codec relies
on -- is fixed by this file, not by an exporter version.

Step graph (one token per row, KV cache in place), same interface as the
default model's, so :class:`~pyllmcodec.backends.onnxruntime.OrtStepModel`
runs it unchanged:

* inputs ``tokens`` int64 [B], ``pos`` int64 [B] (unused: GroupQueryAttention
  takes the rotary position from ``seqlens_k``), ``seqlens_k`` int32 [B]
  (= position), ``total_len`` int32 [1] (= position + 1), and per layer
  ``past_key_i`` / ``past_value_i`` float32 [B, n_kv_head, ctx, head_dim];
* outputs ``probs`` float32 [B, vocab] (softmax in the graph) and
  ``present_key_i`` / ``present_value_i`` bound to the pasts' buffers.

Per layer: ``SimplifiedLayerNormalization`` (RMSNorm), one MatMul for the
packed Q|K|V projection, ``com.microsoft.GroupQueryAttention`` on the packed
input with ``do_rotary=1`` (halves layout, cos/sin tables from
:func:`~.llama.rope_tables` stored as initializers) and the in-place KV cache,
the output projection, RMSNorm, one MatMul for gate|up, ``x*sigmoid(x)*up``
and the down projection.  The tied output head is a ``Gemm`` with
``transB=1`` on the embedding table, so the 49152 x 576 matrix is stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..models.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, bundle_id, file_sha256, write_manifest
from .onnx_graph import MS_DOMAIN, OPSET

__all__ = ["build_llama_step", "export_llama_bundle"]


def _graph_weights(W: Mapping[str, np.ndarray], cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Hugging Face names -> the graph's initializers (fused, transposed)."""
    G: dict[str, np.ndarray] = {"embed": W["model.embed_tokens.weight"]}
    for i in range(cfg["n_layer"]):
        p = f"model.layers.{i}."
        G[f"l{i}.attn_norm"] = W[p + "input_layernorm.weight"]
        G[f"l{i}.qkv_t"] = np.concatenate(
            [W[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], axis=0).T
        G[f"l{i}.o_t"] = W[p + "self_attn.o_proj.weight"].T
        G[f"l{i}.mlp_norm"] = W[p + "post_attention_layernorm.weight"]
        G[f"l{i}.gate_up_t"] = np.concatenate([W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"]], 0).T
        G[f"l{i}.down_t"] = W[p + "mlp.down_proj.weight"].T
    G["norm"] = W["model.norm.weight"]
    if not cfg.get("tie_embeddings", True):
        G["lm_head"] = W["lm_head.weight"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in G.items()}


def build_llama_step(G: Mapping[str, np.ndarray], cfg: Mapping[str, Any], ctx: int,
                     rope: tuple[np.ndarray, np.ndarray]) -> Any:
    """The step graph (``onnx.ModelProto``) from graph weights ``G``."""
    from onnx import TensorProto as TP
    from onnx import helper as h
    from onnx import numpy_helper as nh

    L, d, H, KVH = cfg["n_layer"], cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    hd = d // H
    V = cfg["vocab"]
    eps = float(cfg["rms_eps"])
    nodes: list[Any] = []
    inits: list[Any] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(nh.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], outs: list[str], domain: str | None = None, **attrs: Any) -> str:
        nodes.append(h.make_node(op, ins, outs, name=outs[0] + "_" + op, domain=domain, **attrs))
        return outs[0]

    for k, v in G.items():
        init(k, v)
    cos, sin = rope
    init("rope_cos", cos[:ctx])
    init("rope_sin", sin[:ctx])
    inputs = [h.make_tensor_value_info("tokens", TP.INT64, ["B"]),
              h.make_tensor_value_info("pos", TP.INT64, ["B"]),
              h.make_tensor_value_info("seqlens_k", TP.INT32, ["B"]),
              h.make_tensor_value_info("total_len", TP.INT32, [1])]
    outputs: list[Any] = []
    ax = init("axis1", np.array([1], dtype=np.int64))
    tok2 = node("Unsqueeze", ["tokens", ax], ["tokens2"])
    x = node("Gather", ["embed", tok2], ["x0"], axis=0)  # [B, 1, d]

    def rms(x: str, w: str, out: str) -> str:
        return node("SimplifiedLayerNormalization", [x, w], [out], axis=-1, epsilon=eps)

    split_mlp = init("split_mlp", np.array([cfg["d_mlp"], cfg["d_mlp"]], dtype=np.int64))
    for i in range(L):
        hn = rms(x, f"l{i}.attn_norm", f"h{i}")
        qkv = node("MatMul", [hn, f"l{i}.qkv_t"], [f"qkv{i}"])
        pk, pv = f"past_key_{i}", f"past_value_{i}"
        inputs += [h.make_tensor_value_info(pk, TP.FLOAT, ["B", KVH, "ctx", hd]),
                   h.make_tensor_value_info(pv, TP.FLOAT, ["B", KVH, "ctx", hd])]
        outputs += [h.make_tensor_value_info(f"present_key_{i}", TP.FLOAT, ["B", KVH, "ctx", hd]),
                    h.make_tensor_value_info(f"present_value_{i}", TP.FLOAT, ["B", KVH, "ctx", hd])]
        a = node("GroupQueryAttention",
                 [qkv, "", "", pk, pv, "seqlens_k", "total_len", "rope_cos", "rope_sin"],
                 [f"attn{i}", f"present_key_{i}", f"present_value_{i}"], domain=MS_DOMAIN,
                 num_heads=H, kv_num_heads=KVH, scale=float(1.0 / np.sqrt(hd)), do_rotary=1,
                 rotary_interleaved=0)
        o = node("MatMul", [a, f"l{i}.o_t"], [f"o{i}"])
        x = node("Add", [x, o], [f"x{i}a"])
        h2 = rms(x, f"l{i}.mlp_norm", f"h2_{i}")
        gu = node("MatMul", [h2, f"l{i}.gate_up_t"], [f"gu{i}"])
        g, u = f"g{i}", f"u{i}"
        node("Split", [gu, split_mlp], [g, u], axis=-1)
        sg = node("Sigmoid", [g], [f"sg{i}"])
        act = node("Mul", [node("Mul", [g, sg], [f"silu{i}"]), u], [f"act{i}"])
        dn = node("MatMul", [act, f"l{i}.down_t"], [f"dn{i}"])
        x = node("Add", [x, dn], [f"x{i + 1}"])
    xf = rms(x, "norm", "xf")
    sq = init("sq_axis", np.array([1], dtype=np.int64))
    x2 = node("Squeeze", [xf, sq], ["xf2"])
    head = "lm_head" if "lm_head" in G else "embed"
    lg = node("Gemm", [x2, head], ["logits"], transB=1)
    node("Softmax", [lg], ["probs"], axis=-1)
    outputs.insert(0, h.make_tensor_value_info("probs", TP.FLOAT, ["B", V]))
    graph = h.make_graph(nodes, "llama_step", inputs, outputs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET), h.make_opsetid(MS_DOMAIN, 1)],
                         producer_name="pyllmcodec")
    model.ir_version = 10
    return model


def export_llama_bundle(
    W: Mapping[str, np.ndarray], cfg: Mapping[str, Any], vocab: Mapping[str, Any], out_dir: Path, *,
    name: str, version: str, context_length: int, bos: int, licence: str, description: str,
    source: Mapping[str, Any] | None = None, progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a Llama bundle: ``step.onnx`` + ``weights.bin`` (external data)
    + ``tokenizer.json`` + ``manifest.json``."""
    import onnx

    from ..nets.llama import LlamaConfig, rope_tables
    from ..tokenizer import TOKENIZER_FILE, BPETokenizer
    from .bytelm import _externalize

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda n: None)
    c = LlamaConfig.from_dict(cfg)
    rope = rope_tables(c, context_length)
    G = _graph_weights(W, cfg)
    G["rope_cos"], G["rope_sin"] = rope
    model = build_llama_step({k: v for k, v in G.items() if not k.startswith("rope_")}, cfg, context_length, rope)
    tick(1)
    table: dict[str, tuple[int, int]] = {}
    blob = bytearray()
    _externalize(model, "weights.bin", table, blob, set(G))
    onnx.save_model(model, str(out / "step.onnx"))
    (out / "weights.bin").write_bytes(bytes(blob))
    del blob
    tick(1)
    tok = BPETokenizer(vocab["tokens"], vocab["merges"], vocab.get("token_type"), vocab.get("pre", "smollm"))
    tok.save(out / TOKENIZER_FILE)
    hd = c.head_dim
    graphs = {"step": {
        "file": "step.onnx",
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "kv_cache": {"layout": "BNSH", "n_layer": c.n_layer, "n_kv_head": c.n_kv_head, "head_dim": hd,
                     "max_len": context_length, "past": "past_key_{i}/past_value_{i}",
                     "present": "present_key_{i}/present_value_{i}", "shared_buffer": True},
    }}
    tensors = {k: {"offset": table[k][0], "length": table[k][1], "shape": list(G[k].shape)} for k in G}
    files = {f: file_sha256(out / f) for f in ("weights.bin", "step.onnx", TOKENIZER_FILE)}
    manifest = {
        "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION,
        "name": name, "version": version, "architecture": "llama",
        "licence": licence, "description": description,
        "vocab": {"kind": "bpe", "size": int(cfg["vocab"]), "bos": int(bos), "tokenizer": TOKENIZER_FILE,
                  "tokenizer_sha256": tok.sha256},
        "context_length": int(context_length),
        "config": dict(cfg),
        "graphs": graphs,
        "tensors": tensors,
        "files": files,
        "id": bundle_id(files),
        "source": dict(source or {}),
    }
    write_manifest(out, manifest)
    tick(1)
    return out
