"""Model bundles, the ONNX step graph and the backends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyllmcodec import ModelError
from pyllmcodec.backends import open_bundle, resolve_device
from pyllmcodec.models import available_models, load_model, register_model
from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs

onnx = pytest.importorskip("onnx")
from pyllmcodec.export.testing import make_tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "b"))


def _run(model, seqs: np.ndarray, rows_fill_seed: int | None = None, B: int | None = None, row: int = 0):
    """Step ``seqs[0]`` in ``row`` of a batch of ``B``; other rows random."""
    T = seqs.shape[1]
    B = B or len(seqs)
    rng = np.random.default_rng(rows_fill_seed)
    st = model.new_state(B)
    out = []
    for t in range(T):
        tok = rng.integers(0, 256, B)
        tok[row] = seqs[0, t]
        out.append(model.step(st, tok)[row].copy())
    return np.stack(out)


def test_bundle_files_match_manifest(tiny):
    tiny.verify()
    assert len(tiny.sha256) == 64
    assert set(tiny.manifest["files"]) == {"weights.bin", "step.onnx", "forward.onnx"}


def test_damaged_bundle_is_refused(tiny, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(tiny.path, d)
    raw = bytearray((d / "weights.bin").read_bytes())
    raw[100] ^= 1
    (d / "weights.bin").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="SHA-256"):
        load_bundle(d)


def test_future_bundle_version_is_refused(tiny, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(tiny.path, d)
    m = json.loads((d / "manifest.json").read_text())
    m["bundle_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="bundle_version 99"):
        load_bundle(d)


def test_missing_bundle(tmp_path):
    with pytest.raises(ModelError, match="no model bundle"):
        load_bundle(tmp_path)


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")


def test_step_matches_forward_graph(tiny):
    """The step graph computes the same function as the teacher-forced graph
    (close in float, not bitwise: that is why the codec only ever uses the step graph)."""
    import onnxruntime as ort

    model = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 40))
    x[:, 0] = model.bos
    sess = ort.InferenceSession(str(tiny.graph_path("forward")), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"tokens": x})[0]
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    st = model.new_state(3)
    for t in range(40):
        p = model.step(st, x[:, t])
        np.testing.assert_allclose(p, ref[:, t], atol=2e-6)
    assert st.position == 40


@pytest.mark.parametrize("threads", [1, 2])
def test_step_bits_independent_of_batch_geometry(tiny, threads):
    """Row b's probabilities are bit-identical whatever the other rows hold,
    the batch size, or the row index: the codec's random access and padding
    rely on the first; the second and third are a measured bonus (the archive
    still records the geometry)."""
    model = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=threads)
    seq = np.random.default_rng(1).integers(0, 256, (1, 48))
    seq[0, 0] = model.bos
    base = _run(model, seq, rows_fill_seed=1, B=16, row=3)
    assert np.array_equal(base, _run(model, seq, rows_fill_seed=2, B=16, row=3))
    for B, row in ((1, 0), (5, 4), (33, 20)):
        assert np.array_equal(base, _run(model, seq, rows_fill_seed=3, B=B, row=row))


def test_state_full_raises(tiny):
    model = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=1)
    st = model.new_state(1)
    tok = np.array([model.bos])
    for _ in range(model.max_context):
        model.step(st, tok)
    with pytest.raises(ValueError, match="full"):
        model.step(st, tok)


def test_fingerprint_names_numerics(tiny):
    fp = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=1).fingerprint()
    for key in ("backend", "backend_version", "provider", "device", "graph_optimization_level"):
        assert fp[key]


def test_resolve_device():
    assert resolve_device("cpu", "auto") == ("cpu", "onnxruntime")
    with pytest.raises(ValueError):
        resolve_device("tpu", "auto")
    with pytest.raises(ModelError, match="backend='torch'"):
        resolve_device("cuda", "onnxruntime")


def test_register_model(tiny):
    register_model("tiny-registered", lambda **kw: open_bundle(tiny, **kw), replace=True)
    assert "tiny-registered" in available_models()
    m = load_model("tiny-registered", device="cpu")
    assert m.vocab_size == 256


def test_torch_backend_close_to_onnxruntime(tiny):
    pytest.importorskip("torch")
    a = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=1)
    b = open_bundle(tiny, backend="torch", device="cpu")
    seq = np.random.default_rng(2).integers(0, 256, (4, 30))
    seq[:, 0] = a.bos
    sa, sb = a.new_state(4), b.new_state(4)
    for t in range(30):
        pa = a.step(sa, seq[:, t]).copy()
        pb = b.step(sb, seq[:, t])
        np.testing.assert_allclose(pa, pb, atol=1e-5)
    assert a.fingerprint()["backend"] != b.fingerprint()["backend"]


def test_torch_export_path_matches(tmp_path):
    """A ByteLM built in PyTorch, exported through the real export path, runs in
    ONNX Runtime with the same probabilities as the PyTorch forward."""
    torch = pytest.importorskip("torch")
    from pyllmcodec.export.bytelm import export_bundle
    from pyllmcodec.nets.bytelm import ByteLM, ByteLMConfig

    torch.manual_seed(0)
    cfg = ByteLMConfig(n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_mlp=64, ctx=32)
    net = ByteLM(cfg).eval()
    b = load_bundle(export_bundle({k: v.numpy() for k, v in net.state_dict().items()}, cfg.to_dict(),
                                  tmp_path / "b", name="t"))
    m = open_bundle(b, backend="onnxruntime", device="cpu", threads=1)
    x = torch.randint(0, 256, (2, 32))
    x[:, 0] = m.bos
    with torch.no_grad():
        ref = torch.softmax(net(x), -1).numpy()
    st = m.new_state(2)
    for t in range(32):
        np.testing.assert_allclose(m.step(st, x[:, t].numpy()), ref[:, t], atol=2e-6)


@pytest.mark.skipif(not shipped_bundle_dirs(), reason="no bundle shipped in this checkout")
def test_shipped_default_bundle():
    d = [p for p in shipped_bundle_dirs() if json.loads((p / "manifest.json").read_text())["name"] == "default"]
    assert d, "the default bundle is not shipped"
    b = load_bundle(d[0])  # verifies every SHA-256
    assert b.manifest["vocab"] == {"kind": "bytes", "size": 256, "bos": 256, "tokenizer": None}
    total = sum((d[0] / f).stat().st_size for f in b.manifest["files"])
    assert total <= 16 * 1024 * 1024
    m = load_model("default", device="cpu", backend="onnxruntime")
    st = m.new_state(2)
    p = m.step(st, np.array([m.bos, m.bos]))
    assert p.shape == (2, 256) and np.array_equal(p[0], p[1])


def test_forward_ideal_bits_match_the_step_graph(tiny):
    """The fast evaluator (teacher-forced graph) gives the code length the
    step graph implies, on the codec's chunking with a short tail chunk."""
    from bench.ideal import ideal_bits

    model = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=1)
    data = bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8))
    chunk = 128

    def stepped_bits(chunks):  # the reference: each chunk stepped from BOS, -log2 p summed
        bits = 0.0
        for c in chunks:
            st = model.new_state(1)
            tok = np.array([model.bos])
            for b in c:
                p = model.step(st, tok)[0].astype(np.float64)
                bits -= np.log2(p[b] / p.sum())
                tok = np.array([b])
        return bits

    want = stepped_bits(data[s:s + chunk] for s in range(0, len(data), chunk))
    assert ideal_bits(tiny, data, chunk, threads=1) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="context"):
        ideal_bits(tiny, data, 10_000)
    # eol=True scores chunks as the encoder codes them: CR LF chunks without the CR
    from pyllmcodec import eol

    text = b"one line\r\ntwo lines\r\n" * 9 + b"bare\n" + b"x\r\n" * 30
    want = stepped_bits(eol.encoded(text[s:s + chunk])[1] for s in range(0, len(text), chunk))
    assert ideal_bits(tiny, text, chunk, threads=1, eol=True) == pytest.approx(want, rel=1e-6)
    assert ideal_bits(tiny, text, chunk, threads=1, eol=True) != pytest.approx(ideal_bits(tiny, text, chunk, threads=1))


@pytest.mark.parametrize("context", [None, 128])
def test_segments_follow_the_spec(tiny, context):
    """Chunks longer than the context (docs/FORMAT.md, segments): the fast
    evaluator and the codec both agree with the rule stepped literally -- a
    fresh state per segment, fed bos and the `prime` bytes before it, nothing
    scored for those."""
    import pyllmcodec
    from bench.ideal import ideal_bits

    model = open_bundle(tiny, backend="onnxruntime", device="cpu", threads=1)
    # context None: segments [0,256) [256,472) [472,688) [688,700); 128: a shorter segment length
    C, prime, chunk = context or model.max_context, 40, 700
    data = (b"the segment starts from the prime; " * 40)[:1000] + bytes(range(256)) * 2

    from pyllmcodec import core

    P = 30

    def stepped_bits(c):  # (float ideal, ideal under the quantized tables) of one chunk
        bits = qbits = 0.0
        s, first = 0, True
        while s < len(c):
            k = 0 if first else prime
            st = model.new_state(1)
            window = c[s - k : s - k + C]
            tok = np.array([model.bos])
            for u, b in enumerate(window):
                p32 = model.step(st, tok)
                if u >= k:
                    p = p32[0].astype(np.float64)
                    bits -= np.log2(p[b] / p.sum())
                    cdf = core.quantize(p32, precision=P)[0]
                    qbits -= np.log2((int(cdf[b + 1]) - int(cdf[b])) / 2**P)
                tok = np.array([b])
            s, first = s - k + len(window), False
        return bits, qbits

    ref = [stepped_bits(data[i:i + chunk]) for i in range(0, len(data), chunk)]
    want = sum(b for b, _ in ref)
    got = ideal_bits(tiny, data, chunk, threads=1, prime=prime, context=context)
    assert got == pytest.approx(want, rel=1e-6)
    if context is None:  # the prime pays on this repetitive text (random weights: at the full context)
        assert got < ideal_bits(tiny, data, C, threads=1)
    comp = pyllmcodec.Compressor(model, chunk_size=chunk, prime=prime, batch_size=3, fallback="stored",
                                 precision=P, context=context, mixer=False)
    blob = comp.compress(data)
    assert pyllmcodec.Decompressor(model).decompress(blob) == data
    # random weights expand text, so the archive stores it; the wave coder
    # itself spends the bits of the quantized tables of exactly those steps
    # (plus a few bytes of flush per row)
    runner = comp.session(comp.geometry_for(None)).runner
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    coded = runner.encode_wave(4, [0, 2, 3], chunks)
    for c, (_, q) in zip(coded, ref):
        assert q - 8 <= len(c) * 8 <= q + 80
    assert [a.tobytes() for a in runner.decode_wave(4, [0, 2, 3], [len(c) for c in chunks], coded)] == chunks


def test_the_model_cache_bound_is_real():
    """load_model keeps cache_size() models; an evicted one is freed once the
    caller drops it, even after the codec used it (sessions are weak)."""
    import gc
    import weakref

    from conftest import BigramModel

    import pyllmcodec
    from pyllmcodec.models import cache_size, clear_cache, set_cache_size

    made: list[weakref.ref] = []

    def factory(**_):
        m = BigramModel(name="test-cache")
        made.append(weakref.ref(m))
        return m

    old = cache_size()
    register_model("test-cache", factory, replace=True)
    try:
        set_cache_size(1)
        a = load_model("test-cache", device="cpu")
        assert load_model("test-cache", device="cpu") is a  # cached
        data = b"cached models are freed when evicted. " * 8
        blob = pyllmcodec.compress(data, "test-cache", device="cpu")
        assert pyllmcodec.decompress(blob, device="cpu") == data
        load_model("test-cache", device="cpu", threads=1)  # another key evicts the first
        del a
        gc.collect()
        assert made[0]() is None, "an evicted model is still held by a pyllmcodec cache"
        assert made[1]() is not None  # the cached one lives
        set_cache_size(0)
        gc.collect()
        assert made[1]() is None
        with pytest.raises(ValueError):
            set_cache_size(-1)
    finally:
        set_cache_size(old)
        clear_cache()


def test_a_bundle_with_bad_cm_priors_is_refused(tmp_path):
    """A manifest's codec.cm (the context-mixing priors, docs/FORMAT.md
    section 4f) that is not {kind: "cm3", weights: [8448 ints]} makes
    loading the bundle fail with a ModelError that names it."""
    import pyllmcodec.models
    from pyllmcodec.models.bundle import write_manifest

    src = Path(pyllmcodec.models.__file__).parent / "default-exact"
    dst = tmp_path / "default-exact"
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    assert open_bundle(load_bundle(dst), device="cpu").default_cm_priors is not None
    m["codec"]["cm"]["weights"] = m["codec"]["cm"]["weights"][:-1]
    write_manifest(dst, m)
    with pytest.raises(ModelError, match=r"bad codec.cm in its manifest: cm priors must be 8448 weights"):
        open_bundle(load_bundle(dst), device="cpu")
