"""The native exact Llama step (csrc/intllama.hpp, bound as
pyllmcodec._core.IntLlama) against the numpy reference of
pyllmcodec/nets/intllama.py (ref_step), bit for bit.

* random small models (intllama.random_arrays) of several shapes, batch
  sizes, thread counts and positions up to ctx, with the large-embedding
  tokens, and exponents that push the rescale into its corners;
* the kernel copies (PYLLMCODEC_KERNELS=generic / avx2, a child process:
  the choice is made once per process) give the default copy's rows;
* the real SmolLM2-135M when its GGUF is installed (a few steps from BOS);
* bad arrays, tokens, outputs and a full state are ValueErrors, never a crash;
* the block quantizer's exact rounding (the row ops' binary search and the
  scalar reciprocal) against exact rationals, in every copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmcodec import _core
from pyllmcodec.nets import intllama as il

TABLES = il.load_tables()

# (seed, n_head, n_kv_head, d_mlp, vocab, ctx, scale_exp)
SHAPES = [
    (0, 1, 1, 32, 70, 24, 27),
    (1, 2, 1, 128, 300, 40, 27),
    (2, 3, 3, 96, 130, 40, 27),
    (3, 3, 1, 256, 200, 40, 27),
    (4, 2, 2, 64, 90, 24, 60),   # huge exponents: right shifts past 63
    (5, 2, 1, 64, 90, 24, -5),   # negative exponents: left shifts and the clamps
]


def _arrays(shape: tuple) -> dict[str, np.ndarray]:
    seed, H, KV, f, V, ctx, se = shape
    return il.random_arrays(seed, n_layer=2, n_head=H, n_kv_head=KV, d_mlp=f, vocab=V, ctx=ctx, scale_exp=se)


def _tokens(n: int, B: int, V: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, V, (n, B))
    tok[rng.random((n, B)) < 0.3] = rng.integers(0, max(1, V // 50))  # the large-embedding tokens
    return tok.astype(np.int64)


def _run_both(arrays: dict, B: int, threads: int, tokens: np.ndarray, jumps: dict[int, int] | None = None) -> None:
    ref = il.from_arrays(arrays, TABLES)
    nat = _core.IntLlama(arrays, TABLES, threads)
    rs, ns = il.RefState(ref, B), nat.new_state(B)
    out = np.empty((B, nat.vocab), np.uint32)
    for i, tok in enumerate(tokens):
        if jumps and i in jumps:  # both caches hold zeros at the skipped positions
            rs.position = ns.position = jumps[i]
        want = il.ref_step(ref, rs, tok)
        nat.step(ns, tok, out)
        assert ns.position == rs.position
        if not np.array_equal(out, want):
            bad = np.argwhere(out != want)[0]
            pytest.fail(f"step {i} (position {rs.position - 1}): row {bad[0]} token {bad[1]}: "
                        f"native {out[tuple(bad)]}, reference {want[tuple(bad)]}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"seed{s[0]}")
@pytest.mark.parametrize("B,threads", [(1, 1), (3, 2), (8, 3)])
def test_random_models_match_reference(shape: tuple, B: int, threads: int) -> None:
    arrays = _arrays(shape)
    ctx = shape[5]
    tokens = _tokens(10, B, shape[4], seed=shape[0] * 10 + B)
    _run_both(arrays, B, threads, tokens, jumps={4: ctx // 2, 8: ctx - 2})  # the last two fill the state


def test_head_weights_at_the_int8_ends() -> None:
    """The tied head's Q8_0 weights may be -128 (the AVX2 copy takes |q| as
    an unsigned byte and moves q's sign onto the activations) or 127."""
    arrays = _arrays(SHAPES[2])
    q = arrays["embed.q"]
    rng = np.random.default_rng(11)
    q[rng.random(q.shape) < 0.2] = -128
    q[rng.random(q.shape) < 0.1] = 127
    q[5] = -128  # a whole row at the end
    tokens = _tokens(6, 5, SHAPES[2][4], seed=11)
    _run_both(arrays, 5, 2, tokens)


def test_every_position_up_to_ctx() -> None:
    arrays = _arrays((6, 3, 1, 64, 80, 300, 27))  # past 256 positions: the value sums' int32 blocks
    tokens = _tokens(300, 2, 80, seed=6)
    _run_both(arrays, 2, 2, tokens[:24])
    _run_both(arrays, 2, 2, tokens[:8], jumps={2: 250, 5: 297})


@pytest.mark.parametrize("copy", ["generic", "avx2"])
def test_kernel_copies_give_identical_rows(tmp_path: Path, copy: str) -> None:
    """The baseline (and AVX2) kernel copies compute the default copy's
    integers (a child process: the choice is made once)."""
    arrays = _arrays((7, 3, 1, 160, 150, 64, 27))
    arrays["embed.q"][np.random.default_rng(7).random(arrays["embed.q"].shape) < 0.1] = -128  # the head's end
    np.savez(tmp_path / "m.npz", **arrays)
    tokens = _tokens(6, 5, 150, seed=7)
    np.save(tmp_path / "tok.npy", tokens)
    code = (
        "import sys, numpy as np; from pyllmcodec import _core; from pyllmcodec.nets import intllama as il;"
        "d = np.load(sys.argv[1]); a = {k: d[k] for k in d.files}; tok = np.load(sys.argv[2]);"
        "m = _core.IntLlama(a, il.load_tables(), 2); s = m.new_state(tok.shape[1]);"
        "o = np.empty((tok.shape[1], m.vocab), np.uint32); r = []\n"
        "for t in range(len(tok)):\n"
        "    s.position = 40 if t == 3 else s.position; m.step(s, tok[t], o); r.append(o.copy())\n"
        "np.save(sys.argv[3], np.stack(r)); print(m.kernels)"
    )
    env = dict(os.environ, PYLLMCODEC_KERNELS=copy)
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.npz"), str(tmp_path / "tok.npy"),
                          str(tmp_path / "out.npy")], env=env, capture_output=True, text=True, check=True)
    if copy == "avx2" and res.stdout.strip() != "avx2":
        pytest.skip("this CPU has no AVX2")
    assert res.stdout.strip() == copy
    nat = _core.IntLlama(arrays, TABLES, 1)
    s = nat.new_state(5)
    o = np.empty((5, nat.vocab), np.uint32)
    got = np.load(tmp_path / "out.npy")
    for t in range(len(tokens)):
        if t == 3:
            s.position = 40
        nat.step(s, tokens[t], o)
        assert np.array_equal(got[t], o), f"step {t}: {copy} differs from {nat.kernels}"


def test_smollm2_matches_reference() -> None:
    from pyllmcodec.models import smollm2
    if not smollm2.available():
        pytest.skip("the SmolLM2 GGUF is not installed")
    arrays = smollm2.int_arrays(*smollm2.read_gguf_ints(smollm2.gguf_path()))
    # BOS, then "The quick brown fox" and "def main():" -like token ids of the real vocabulary
    tokens = np.array([[1, 1], [504, 1018], [2365, 1423], [6354, 42], [28, 12023], [15658, 314]], np.int64)
    _run_both(arrays, 2, 2, tokens)


# ---- bad input: ValueError, never a crash ----

def test_bad_arrays_are_named() -> None:
    good = _arrays(SHAPES[1])
    _core.IntLlama(good, TABLES)
    cases = {
        "l1.q.q": lambda a: a["l1.q.q"].astype(np.int8),
        "l0.gate.d": lambda a: a["l0.gate.d"][:, :-1],
        "l0.down.e": lambda a: a["l0.down.e"].astype(np.int32),
        "l1.mlp_norm": lambda a: a["l1.mlp_norm"].astype(np.int64),
        "embed.q": lambda a: a["embed.q"][:-1],
        "norm": lambda a: a["norm"][:10],
        "vocab": lambda a: np.int64(1),
        "ctx": lambda a: np.int64(5000),
        "n_kv_head": lambda a: np.int64(3),
    }
    for name, bad in cases.items():
        a = dict(good)
        a[name] = bad(a)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            _core.IntLlama(a, TABLES)
    a = dict(good)
    del a["l1.up.m"]
    with pytest.raises(ValueError, match=r"l1\.up\.m"):
        _core.IntLlama(a, TABLES)
    a = dict(good)
    a["l0.k.d"] = a["l0.k.d"].copy()
    a["l0.k.d"][0, 0] = 1 << 14
    with pytest.raises(ValueError, match=r"l0\.k"):
        _core.IntLlama(a, TABLES)
    a = dict(good)
    a["l0.attn_norm"] = a["l0.attn_norm"].copy()
    a["l0.attn_norm"][3] = 1 << 20
    with pytest.raises(ValueError, match=r"l0\.attn_norm"):
        _core.IntLlama(a, TABLES)
    for tname, bad in {"expa": lambda t: t[1:], "expl": lambda t: t[:-1], "silu": lambda t: t[:-1],
                       "rope_cos": lambda t: t.astype(np.int32), "rope_sin": lambda t: t[:, :16]}.items():
        tb = dict(TABLES)
        tb[tname] = bad(tb[tname])
        with pytest.raises(ValueError, match=tname):
            _core.IntLlama(good, tb)
    with pytest.raises(ValueError, match="threads"):
        _core.IntLlama(good, TABLES, 0)


def test_bad_step_arguments() -> None:
    m = _core.IntLlama(_arrays(SHAPES[1]), TABLES, threads=2)
    V = m.vocab
    s = m.new_state(3)
    ok_tok = np.array([1, 2, 3], np.int64)
    out = np.empty((3, V), np.uint32)
    bad_tokens = [np.array([1.0, 2.0, 3.0]), np.array([1, 2], np.int64), np.array([[1, 2, 3]], np.int64),
                  np.array([1, 2, V], np.int64), np.array([-1, 2, 3], np.int64),
                  np.array([1, 2, 2**64 - 1], np.uint64), "abc", None]
    for tok in bad_tokens:  # a wrong type is a TypeError (the core's convention), a wrong value a ValueError
        with pytest.raises((TypeError, ValueError)):
            m.step(s, tok, out)
    with pytest.raises(ValueError, match="not in"):
        m.step(s, np.array([1, 2, V], np.int64), out)
    bad_outs = [np.empty((3, V), np.int32), np.empty((3, V - 1), np.uint32), np.empty((2, V), np.uint32),
                np.empty((3 * V,), np.uint32), np.empty((V, 3), np.uint32).T, None]
    ro = np.empty((3, V), np.uint32)
    ro.flags.writeable = False
    bad_outs.append(ro)
    for o in bad_outs:
        with pytest.raises((TypeError, ValueError)):
            m.step(s, ok_tok, o)
    with pytest.raises(ValueError, match="shape"):
        m.step(s, ok_tok, np.empty((3, V - 1), np.uint32))
    assert s.position == 0  # nothing was stepped
    other = _core.IntLlama(_arrays(SHAPES[0]), TABLES)
    with pytest.raises(ValueError, match="another model"):
        m.step(other.new_state(3), [0, 1, 2], out)
    m.step(s, [1, 2, 3], out)
    assert s.position == 1 and s.batch_size == 3 and s.nbytes > 0
    with pytest.raises(ValueError):
        m.new_state(0)


def test_full_state_is_refused() -> None:
    m = _core.IntLlama(il.random_arrays(8, ctx=4), TABLES)
    s = m.new_state(2)
    out = np.empty((2, m.vocab), np.uint32)
    for _ in range(4):
        m.step(s, [0, 1], out)
    with pytest.raises(ValueError, match="full"):
        m.step(s, [0, 1], out)
    assert s.position == 4 and m.ctx == 4
    with pytest.raises(ValueError):
        s.position = 5
    s.position = 3  # moving back within the cache is allowed (benchmarks)
    m.step(s, [0, 1], out)


# ---- the block quantizer's exact rounding, in each row-ops copy ----

def _div127_want(y: list[int], Y: int) -> tuple[list[int], int]:
    q = [(254 * v + Y) // (2 * Y) for v in y]  # round half up of 127 y / Y, exact rationals
    return q, sum(q)


def _div127_cases() -> list[tuple[list[int], int]]:
    cases = []
    for Y in (1, 2, 127, 128, 255, 1000003, 2**31 - 1, 2**44, 2**54 + 12345, 2**55 - 1):
        edge = [-Y, Y, 0, 1 % (Y + 1), -(1 % (Y + 1)), Y // 2, -(Y // 2), Y - 1, -(Y - 1)]
        # the values next to every rounding boundary 127 y / Y = k + 1/2
        for k in (-127, -64, -1, 0, 63, 126):
            b = ((2 * k + 1) * Y) // 254
            edge += [v for v in (b - 1, b, b + 1) if -Y <= v <= Y]
        edge += [0] * (-len(edge) % 8)
        cases.append((edge, Y))
    return cases


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**55 - 1).flatmap(
    lambda Y: st.tuples(st.lists(st.integers(-Y, Y), min_size=1, max_size=40).map(lambda v: v + [0] * (-len(v) % 8)),
                        st.just(Y))))
def test_div127_is_exact(case: tuple[list[int], int]) -> None:
    y, Y = case
    q, T = _core.IntLlama._div127(np.array(y, np.int64), Y)
    want, wT = _div127_want(y, Y)
    assert q.tolist() == want and T == wT


def test_div127_edges_in_every_copy() -> None:
    """The vector copy's binary search and the scalar reciprocal agree with
    exact rationals at the rounding boundaries, the ends, and Y near 2**55."""
    code = ("import sys, json, numpy as np; from pyllmcodec import _core\n"
            "out = []\n"
            "for y, Y in json.loads(sys.stdin.read()):\n"
            "    q, T = _core.IntLlama._div127(np.array(y, np.int64), Y); out.append([q.tolist(), T])\n"
            "print(json.dumps(out))")
    cases = _div127_cases()
    for copy in ("generic", "avx2", None):
        env = dict(os.environ)
        if copy:
            env["PYLLMCODEC_KERNELS"] = copy
        res = subprocess.run([sys.executable, "-c", code], input=json.dumps(cases), env=env, capture_output=True,
                             text=True, check=True)
        for (y, Y), (q, T) in zip(cases, json.loads(res.stdout)):
            want, wT = _div127_want(y, Y)
            assert q == want and T == wT, f"{copy or 'default'} copy, Y = {Y}"


def test_div127_bad_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        _core.IntLlama._div127(np.zeros(7, np.int64), 5)
    with pytest.raises(ValueError, match="2\\*\\*55"):
        _core.IntLlama._div127(np.zeros(8, np.int64), 2**55)
    with pytest.raises(ValueError, match="exceed"):
        _core.IntLlama._div127(np.array([6] + [0] * 7, np.int64), 5)
