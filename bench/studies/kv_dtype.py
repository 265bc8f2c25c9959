"""Step-loop speed of the default model with a float16 KV cache vs float32.

    python -m bench.studies.kv_dtype [--batch 256] [--steps 1024] [--threads 1] [--repeats 3]

Builds the shipped model's step graph twice -- as shipped (float32 cache), and
with ``Cast`` nodes putting q/k/v into float16 around each
GroupQueryAttention and the past/present caches in float16 -- and times the
bare step loop (IO binding, caches updated in place, as the backend runs it),
interleaved, median of ``--repeats``.  Measured 2026-11-27 on this 2-vCPU
Zen 4 guest (1 thread, B=256, 1024 steps, the other core busy): float32
47.9 s, float16 63.8 s -> the float16 cache is 0.75x as fast: the CPU has no
float16 arithmetic, so ONNX Runtime converts, and that costs more than the
halved memory traffic saves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _graph(fp16: bool):
    from onnx import TensorProto as TP
    from onnx import helper as h

    from pyllmcodec.backends.torch import load_bytelm
    from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs
    from pyllmcodec.export.onnx_graph import build_graph

    b = load_bundle(shipped_bundle_dirs()[0])
    W = {k: v.detach().float().numpy() for k, v in load_bytelm(b).state_dict().items()}
    m = build_graph(W, b.manifest["config"], "step")
    if fp16:
        g = m.graph
        nodes = []
        for n in g.node:
            if n.op_type != "GroupQueryAttention":
                nodes.append(n)
                continue
            ins = list(n.input)
            for j in range(3):
                nodes.append(h.make_node("Cast", [ins[j]], [ins[j] + "_h"], to=TP.FLOAT16))
                ins[j] += "_h"
            out = n.output[0]
            n2 = h.make_node("GroupQueryAttention", ins, [out + "_h", *n.output[1:]], domain=n.domain)
            n2.attribute.extend(n.attribute)
            nodes += [n2, h.make_node("Cast", [out + "_h"], [out], to=TP.FLOAT)]
        del g.node[:]
        g.node.extend(nodes)
        for vi in [*g.input, *g.output]:
            if vi.name.startswith(("past_", "present_")):
                vi.type.tensor_type.elem_type = TP.FLOAT16
    return m, b.manifest["graphs"]["step"]["kv_cache"]


def _loop(sess, kv: dict, fp16: bool, B: int, steps: int) -> float:
    import onnxruntime as ort

    dt = np.float16 if fp16 else np.float32
    caches = [np.zeros((B, kv["n_kv_head"], kv["max_len"], kv["head_dim"]), dt) for _ in range(2 * kv["n_layer"])]
    io = sess.io_binding()
    for i in range(kv["n_layer"]):
        for j, kind in enumerate(("key", "value")):
            v = ort.OrtValue.ortvalue_from_numpy(caches[2 * i + j])
            io.bind_ortvalue_input(f"past_{kind}_{i}", v)
            io.bind_ortvalue_output(f"present_{kind}_{i}", v)
    probs = np.empty((B, 256), np.float32)
    io.bind_ortvalue_output("probs", ort.OrtValue.ortvalue_from_numpy(probs))
    tok = np.random.default_rng(0).integers(0, 256, B).astype(np.int64)
    t0 = time.perf_counter()
    for t in range(steps):
        io.bind_cpu_input("tokens", tok)
        io.bind_cpu_input("pos", np.full(B, t, np.int64))
        io.bind_cpu_input("seqlens_k", np.full(B, t, np.int32))
        io.bind_cpu_input("total_len", np.array([t + 1], np.int32))
        sess.run_with_iobinding(io)
        tok = probs.argmax(1).astype(np.int64)
    return time.perf_counter() - t0


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    sessions = {}
    for fp16 in (False, True):
        m, kv = _graph(fp16)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.log_severity_level = 3
        sessions[fp16] = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(a.repeats):
        for fp16 in (False, True):
            times[fp16].append(_loop(sessions[fp16], kv, fp16, a.batch, a.steps))
    f32, f16 = statistics.median(times[False]), statistics.median(times[True])
    print(f"B={a.batch} steps={a.steps} threads={a.threads}: float32 cache {f32:.1f} s, float16 cache {f16:.1f} s "
          f"-> float16 runs at {f32 / f16:.2f}x")


if __name__ == "__main__":
    main()
