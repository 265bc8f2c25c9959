"""Build the default model's ONNX graphs directly from its weights.

The graphs are written op by op with ``onnx.helper`` rather than traced by an
exporter, so the exact op sequence -- and with it the float numerics the codec
depends on -- is fixed by this file alone and does not drift with torch or
exporter versions.  Needs the ``onnx`` package (export time only).

Two graphs share one weight layout:

* ``step``: one token per row, KV cache in place.  Inputs ``tokens`` int64 [B],
  ``pos`` int64 [B] (the position of this token; equal for all rows in the
  codec's waves), ``seqlens_k`` int32 [B] (= pos), ``total_len`` int32 [1]
  (= pos + 1), and per layer ``past_key_i`` / ``past_value_i`` float32
  [B, n_kv_head, ctx, head_dim].  Outputs ``probs`` float32 [B, 256] (softmax
  in the graph) and ``present_key_i`` / ``present_value_i``, which the backend
  binds to the same buffers as the pasts: ONNX Runtime's GroupQueryAttention
  then appends the new key/value in place (no cache copy per step).
* ``forward``: teacher-forced, tokens int64 [B, T] -> logits float32 [B, T, 256];
  used for evaluation and the throughput reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

OPSET = 21
MS_DOMAIN = "com.microsoft"


def _helpers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def build_graph(weights: Mapping[str, np.ndarray], cfg: Mapping[str, int], kind: str = "step"):
    """Return an ``onnx.ModelProto`` for ``kind`` in {"step", "forward"}.

    ``weights`` is the torch ``state_dict`` of ``ByteLM`` as float32 numpy
    arrays; ``cfg`` its config dict.
    """
    onnx, TP, h, nh = _helpers()
    L, d, H, KVH = cfg["n_layer"], cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    hd = d // H
    ctx = cfg["ctx"]
    nodes: list = []
    inits: list = []
    W = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(nh.from_array(arr, name))
        return name

    def node(op: str, ins: list[str], outs: list[str], domain: str | None = None, **attrs) -> str:
        nodes.append(h.make_node(op, ins, outs, name=outs[0] + "_" + op, domain=domain, **attrs))
        return outs[0]

    def linear(x: str, prefix: str, out: str) -> str:
        w = init(prefix + ".weight_t", W[prefix + ".weight"].T.copy())
        b = init(prefix + ".bias", W[prefix + ".bias"])
        mm = node("MatMul", [x, w], [out + "_mm"])
        return node("Add", [mm, b], [out])

    def layernorm(x: str, prefix: str, out: str) -> str:
        g = init(prefix + ".weight", W[prefix + ".weight"])
        b = init(prefix + ".bias", W[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], [out], axis=-1, epsilon=1e-5)

    inputs, outputs = [], []
    tok_emb = init("tok.weight", W["tok.weight"])
    pos_emb = init("pos.weight", W["pos.weight"])
    if kind == "step":
        inputs += [h.make_tensor_value_info("tokens", TP.INT64, ["B"]),
                   h.make_tensor_value_info("pos", TP.INT64, ["B"]),
                   h.make_tensor_value_info("seqlens_k", TP.INT32, ["B"]),
                   h.make_tensor_value_info("total_len", TP.INT32, [1])]
        # [B] -> [B, 1] so that the sequence axis exists (S = 1)
        ax = init("axis1", np.array([1], dtype=np.int64))
        tok2 = node("Unsqueeze", ["tokens", ax], ["tokens2"])
        pos2 = node("Unsqueeze", ["pos", ax], ["pos2"])
        e = node("Gather", [tok_emb, tok2], ["tok_e"], axis=0)
        p = node("Gather", [pos_emb, pos2], ["pos_e"], axis=0)
        seqlens, total = "seqlens_k", "total_len"
    elif kind == "forward":
        inputs += [h.make_tensor_value_info("tokens", TP.INT64, ["B", "T"])]
        e = node("Gather", [tok_emb, "tokens"], ["tok_e"], axis=0)
        shp = node("Shape", ["tokens"], ["tshape"])
        i1 = init("i1", np.array([1], dtype=np.int64))
        i2 = init("i2", np.array([2], dtype=np.int64))
        i0 = init("i0", np.array([0], dtype=np.int64))
        T = node("Slice", [shp, i1, i2], ["T"])
        pe = node("Slice", [pos_emb, i0, T, i0], ["pos_slice"])
        p = pe
        # GroupQueryAttention: seqlens_k = T - 1 per row, total = T
        Bdim = node("Slice", [shp, i0, i1], ["Bdim"])
        T32 = node("Cast", [T], ["T32"], to=TP.INT32)
        one32 = init("one32", np.array([1], dtype=np.int32))
        tm1 = node("Sub", [T32, one32], ["Tm1"])
        seqlens = node("Expand", [tm1, Bdim], ["seqlens_f"])
        total = T32
    else:
        raise ValueError(f"unknown graph kind {kind!r}")
    x = node("Add", [e, p], ["x0"])
    for i in range(L):
        pre = f"blocks.{i}"
        hn = layernorm(x, pre + ".ln1", f"h{i}")
        q = linear(hn, pre + ".q", f"q{i}")
        kv = linear(hn, pre + ".kv", f"kv{i}")
        split = init(f"kvsplit{i}", np.array([KVH * hd, KVH * hd], dtype=np.int64))
        k, v = f"k{i}", f"v{i}"
        node("Split", [kv, split], [k, v], axis=-1)
        gqa_in = [q, k, v]
        gqa_out = [f"attn{i}"]
        if kind == "step":
            pk, pv = f"past_key_{i}", f"past_value_{i}"
            inputs += [h.make_tensor_value_info(pk, TP.FLOAT, ["B", KVH, ctx, hd]),
                       h.make_tensor_value_info(pv, TP.FLOAT, ["B", KVH, ctx, hd])]
            gqa_in += [pk, pv, seqlens, total]
            gqa_out += [f"present_key_{i}", f"present_value_{i}"]
            outputs += [h.make_tensor_value_info(f"present_key_{i}", TP.FLOAT, ["B", KVH, ctx, hd]),
                        h.make_tensor_value_info(f"present_value_{i}", TP.FLOAT, ["B", KVH, ctx, hd])]
        else:
            gqa_in += ["", "", seqlens, total]
            gqa_out += [f"present_key_{i}", f"present_value_{i}"]
        a = node("GroupQueryAttention", gqa_in, gqa_out, domain=MS_DOMAIN,
                 num_heads=H, kv_num_heads=KVH, scale=float(1.0 / np.sqrt(hd)))
        o = linear(a, pre + ".o", f"o{i}")
        x = node("Add", [x, o], [f"x{i}a"])
        h2 = layernorm(x, pre + ".ln2", f"h2_{i}")
        f1 = linear(h2, pre + ".fc1", f"f1_{i}")
        g = node("Gelu", [f1], [f"g{i}"], approximate="tanh")
        f2 = linear(g, pre + ".fc2", f"f2_{i}")
        x = node("Add", [x, f2], [f"x{i + 1}"])
    xf = layernorm(x, "ln_f", "xf")
    logits = linear(xf, "head", "logits3")
    if kind == "step":
        sq = init("sq_axis", np.array([1], dtype=np.int64))
        lg = node("Squeeze", [logits, sq], ["logits"])
        node("Softmax", [lg], ["probs"], axis=-1)
        outputs.insert(0, h.make_tensor_value_info("probs", TP.FLOAT, ["B", cfg["vocab_out"]]))
    else:
        node("Identity", [logits], ["logits"])
        outputs.insert(0, h.make_tensor_value_info("logits", TP.FLOAT, ["B", "T", cfg["vocab_out"]]))
    graph = h.make_graph(nodes, f"bytelm_{kind}", inputs, outputs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET), h.make_opsetid(MS_DOMAIN, 1)],
                         producer_name="pyllmcodec")
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model
