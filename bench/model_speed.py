"""Step-loop vs teacher-forced throughput of a model bundle, and the codec on top.

    python -m bench.model_speed [--bundle DIR | --config 4x192 ...] [--threads 2] [--batch-sizes 8,16,32,64,128]

For each batch size B the bare step loop (``model.step``) is timed at
positions sampled over a whole segment (the codec's segment length, the
model's context unless its bundle says less; the KV cache contents do not
change the cost, so the state is moved to each sampled position), giving
symbols/s averaged over a segment.  The reference is the same model's
teacher-forced ONNX graph on [8, segment length] in the same process.  With ``--codec`` the public
``compress``/``decompress`` are timed too on generated text at the best B.
Medians of ``--repeats`` runs.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _bundle_for(args) -> object:
    from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs

    if args.bundle:
        return load_bundle(args.bundle)
    if args.config:
        from pyllmcodec.export.bytelm import export_bundle, random_weights

        L, d = (int(x) for x in args.config.split("x"))
        cfg = dict(n_layer=L, d_model=d, n_head=d // 64, n_kv_head=1, d_mlp=4 * d, ctx=args.ctx,
                   vocab_in=257, vocab_out=256)
        out = Path(tempfile.mkdtemp()) / "b"
        return load_bundle(export_bundle(random_weights(cfg), cfg, out, name=f"random-{args.config}"))
    import json

    for d in shipped_bundle_dirs():
        if json.loads((d / "manifest.json").read_text())["name"] == "default":
            return load_bundle(d)
    raise SystemExit("no default bundle shipped")


def step_rate(model, B: int, repeats: int, n_pos: int = 5, steps: int = 8, ctx: int | None = None) -> float:
    st = model.new_state(B)
    tok = np.full(B, model.bos, np.int64)
    ctx = ctx or model.max_context
    positions = [int(p) for p in np.linspace(0, ctx - steps, n_pos)]
    rates = []
    for _ in range(repeats):
        t_total = 0.0
        for p in positions:
            st.position = p
            model.step(st, tok)  # warm this position
            st.position = p
            t0 = time.perf_counter()
            for _ in range(steps):
                model.step(st, tok)
            t_total += time.perf_counter() - t0
        rates.append(B * steps * len(positions) / t_total)
    return statistics.median(rates)


def codec_geometry(bundle, size: int = 10 << 20) -> tuple[int, int, int]:
    """(chunk size, prime, segment length) the codec picks for this bundle and
    a ``size``-byte input at the default batch size."""
    from pyllmcodec import Compressor
    from pyllmcodec.backends import open_bundle

    comp = Compressor(open_bundle(bundle, device="cpu", backend="onnxruntime", threads=1), mixer=False)
    return comp.chunk_size_for(size), comp.prime, comp.context


def steps_per_byte(chunk: int, prime: int, ctx: int, size: int = 10 << 20) -> float:
    """Model steps per input byte for a ``size``-byte input cut into
    ``chunk``-byte chunks, coded in segments of ``ctx`` primed with ``prime``:
    each segment after the first spends ``prime`` steps (bos and the bytes
    before it) that code nothing."""
    from pyllmcodec.scheduler import segment_windows

    n_full, rest = divmod(size, chunk)
    steps = 0
    for length, count in ((chunk, n_full), (rest, 1 if rest else 0)):
        steps += count * sum(len(w) for w, _ in segment_windows(range(length), ctx, prime))
    return steps / size


def forward_rate(bundle, threads: int, repeats: int, B: int = 8, T: int | None = None) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(bundle.graph_path("forward")), so, providers=["CPUExecutionProvider"])
    T = T or int(bundle.manifest["context_length"])
    x = np.random.default_rng(0).integers(0, 256, (B, T))
    sess.run(None, {"tokens": x})
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"tokens": x})
        rates.append(B * T / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--config", help="random weights LxD, e.g. 4x192 (speed does not depend on weights)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="8,16,32,64,128")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--codec", action="store_true", help="also time compress/decompress at the best B")
    ap.add_argument("--exact", action="store_true",
                    help="also time the exact integer model (default-exact) at the same B, in the same run")
    ap.add_argument("--codec-batch", type=int, help="time the codec at this B instead (one wave of chunks)")
    a = ap.parse_args(argv)
    from pyllmcodec.backends.onnxruntime import OrtStepModel

    bundle = _bundle_for(a)
    model = OrtStepModel(bundle, threads=a.threads)
    n_params = sum(int(np.prod(t["shape"])) for t in bundle.manifest["tensors"].values())
    chunk, prime, ctx = codec_geometry(bundle)  # ctx: the positions the codec steps through
    fwd = forward_rate(bundle, a.threads, a.repeats, T=ctx)
    print(f"# {bundle.name}: {n_params / 1e6:.2f}M parameters, context {bundle.manifest['context_length']}, "
          f"segments of {ctx}, "
          f"{a.threads} threads, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"teacher-forced forward on [8, {ctx}]: {fwd / 1e3:.2f} k tokens/s\n")
    spb = steps_per_byte(chunk, prime, ctx)
    print(f"the codec's default geometry takes {spb:.4f} model steps per input byte (segments' primes)\n")
    print("| batch | step k sym/s | KB/s of input | step / forward |\n|---:|---:|---:|---:|")
    best = (0.0, 0)
    for B in (int(b) for b in a.batch_sizes.split(",")):
        r = step_rate(model, B, a.repeats, ctx=ctx)
        best = max(best, (r, B))
        print(f"| {B} | {r / 1e3:.2f} | {r / spb / 1e3:.2f} | {r / fwd:.0%} |")
    print(f"\npeak: {best[0] / 1e3:.2f} k steps/s = {best[0] / spb / 1e3:.2f} KB/s of input at batch {best[1]} "
          f"({best[0] / fwd:.0%} of teacher-forced)")
    if a.exact:
        from pyllmcodec.models import load_model

        exact = load_model("default-exact", threads=a.threads)
        kern = getattr(getattr(exact, "native", None), "kernels", "?")
        print(f"\nexact integer model (default-exact, native step, kernels {kern}), same run:\n")
        print(f"(float and exact alternate, one pass each per repeat; medians of {a.repeats} repeats and of "
              "their per-repeat ratios: a shared machine's drift hits both)\n")
        print("| batch | float k sym/s | exact k sym/s | exact / float |\n|---:|---:|---:|---:|")
        for B in (int(b) for b in a.batch_sizes.split(",")):
            rfs, rxs = [], []
            for _ in range(a.repeats):
                rfs.append(step_rate(model, B, 1, ctx=ctx))
                rxs.append(step_rate(exact, B, 1, ctx=ctx))
            ratio = statistics.median(x / f for f, x in zip(rfs, rxs))
            print(f"| {B} | {statistics.median(rfs) / 1e3:.2f} | {statistics.median(rxs) / 1e3:.2f} | {ratio:.2f}x |")
    if a.codec and bundle.name == "default":
        import pyllmcodec

        B = a.codec_batch or best[1]
        comp = pyllmcodec.Compressor("default", batch_size=B, threads=a.threads)
        # one full wave: every row busy, as in the bare loop
        n = B * comp.chunk_size
        text = (Path(__file__).resolve().parents[1] / "README.md").read_bytes()
        data = (text * (1 + n // len(text)))[:n]
        dec = pyllmcodec.Decompressor(threads=a.threads)
        blob = comp.compress(data[: comp.chunk_size])  # warm-up; probe cached
        t0 = time.perf_counter()
        blob = comp.compress(data)
        tc = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert dec.decompress(blob) == data
        td = time.perf_counter() - t0
        bare = step_rate(model, B, a.repeats, ctx=ctx) / spb  # KB/s of input at the same geometry
        print(f"codec at batch {B}: compress {len(data) / tc / 1e3:.2f} KB/s, decompress "
              f"{len(data) / td / 1e3:.2f} KB/s (match model on); bare step loop (same run) {bare / 1e3:.2f} "
              f"KB/s of input -> {len(data) / tc / bare:.0%} / {len(data) / td / bare:.0%}")


if __name__ == "__main__":
    main()
