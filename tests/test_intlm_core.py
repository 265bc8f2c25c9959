"""The native exact step (csrc/exact_step.hpp, bound as pyllmcodec._core.IntLM)
against the numpy reference of pyllmcodec/nets/intlm.py, bit for bit.

* random small models (built here, within every bound ``from_arrays``
  checks) and, when it is shipped, the default exact bundle;
* the thread count, the other rows of the batch and the kernel copy
  (PYLLMCODEC_KERNELS=generic / avx2) change nothing;
* bad arrays and bad step arguments are ValueErrors, never a crash;
* a hypothesis property over random models and token sequences.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyllmcodec import _core
from pyllmcodec.nets import intlm

SHIPPED = Path(intlm.__file__).resolve().parent.parent / "models" / "default-exact" / "intlm.npz"


def _linear(rng: np.random.Generator, n_out: int, n_in: int, max_in: int, target: int, extreme: bool) -> dict:
    """A random layer within the bounds: int8 weights in [-127, 127] with
    max_in * max row |W| sum < 2**31, 0 <= M < 2**31, |B| < 2**61, and a
    shift that maps a typical accumulator to about ``target``."""
    w = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    w[rng.random(w.shape) < 0.2] = 0
    rows = np.abs(w.astype(np.int64)).sum(axis=1)
    while max_in * int(rows.max()) >= 1 << 31:  # only for wide layers: halve the largest rows
        w[rows == rows.max()] //= 2
        rows = np.abs(w.astype(np.int64)).sum(axis=1)
    m = rng.integers(1 << 10, 1 << 20, n_out).astype(np.int64)
    acc = max(1, max_in * int(np.sqrt(n_in)) * 40)  # a typical |accumulator|
    sh = int(np.clip(np.round(np.log2(acc * float(m.mean()) / target)), 1, intlm.MAX_SH))
    b = rng.integers(-(1 << sh), 1 << sh, n_out).astype(np.int64)
    if extreme:  # the int64 corners of the rescale: M near 2**31, |B| near 2**61
        ch = rng.choice(n_out, size=min(3, n_out), replace=False)  # other channels in every layer
        m[ch[0]] = (1 << 31) - 1
        b[ch[: 2]] = [(1 << 61) - 1, -((1 << 61) - 1)][: len(ch[: 2])]
        m[ch[-1]] = 0
    return {"w": w, "m": m, "b": b, "sh": np.int64(sh)}


def random_arrays(seed: int, *, d_head: tuple[int, int] = (2, 16), n_layer: int = 2, d_mlp: int = 64,
                  ctx: int = 64, vocab: int = 256, n_tok: int = 257, extreme: bool = False) -> dict[str, np.ndarray]:
    """A random but valid exact model in ``to_arrays`` form."""
    rng = np.random.default_rng(seed)
    H, hd = d_head
    d = H * hd
    ln_k = int(np.clip(round(2**11 * np.sqrt(d)), 1, 1 << 15))
    elen = int(rng.integers(2, 700))
    expa = np.round(intlm.EXPA_ONE * np.exp(-np.arange(elen) / 64.0)).astype(np.int64)
    expa[-1] = 0
    llen = int(rng.integers(2, 1500))
    expl = np.round(intlm.EXPL_ONE * np.exp(-np.arange(llen) / 64.0)).astype(np.int64)
    expl[-1] = 0
    expl = np.minimum.accumulate(expl)
    out: dict[str, np.ndarray] = {
        "d_model": np.int64(d), "n_head": np.int64(H), "head_dim": np.int64(hd), "ctx": np.int64(ctx),
        "n_layer": np.int64(n_layer), "ln_eps": np.int64(int(rng.integers(1, 5000))), "ln_k": np.int64(ln_k),
        "tok": rng.integers(-(1 << 16), 1 << 16, (n_tok, d)).astype(np.int32),
        "pos": rng.integers(-(1 << 14), 1 << 14, (ctx, d)).astype(np.int32),
        "expa": expa.astype(np.int32), "expl": expl.astype(np.int32),
    }
    if extreme:  # embeddings at the residual clamp
        out["tok"][0, :] = intlm.RES_CLAMP
        out["tok"][1, :] = -intlm.RES_CLAMP
    gelu_x = np.arange(-intlm.GELU_CLAMP, intlm.GELU_CLAMP + 1) / 2048.0
    gelu = 0.5 * gelu_x * (1 + np.tanh(np.sqrt(2 / np.pi) * (gelu_x + 0.044715 * gelu_x**3)))
    gelu = np.clip(np.round(gelu * 2048), -intlm.GELU_CLAMP, intlm.GELU_CLAMP).astype(np.int16)
    targets = {"q": 8000, "kv": 600, "o": 1 << 13, "fc1": 4000, "fc2": 1 << 13, "head": 300}

    def lin(prefix: str, kind: str, n_out: int, n_in: int) -> None:
        # (not the head: a saturated logit would make every other probability 0)
        for k, v in _linear(rng, n_out, n_in, intlm.LINEAR_INPUTS[kind], targets[kind],
                            extreme and kind != "head").items():
            out[f"{prefix}.{k}"] = v

    for i in range(n_layer):
        p = f"layer{i}"
        lin(f"{p}.q", "q", d, d)
        lin(f"{p}.kv", "kv", 2 * hd, d)
        lin(f"{p}.o", "o", d, d)
        lin(f"{p}.fc1", "fc1", d_mlp, d)
        lin(f"{p}.fc2", "fc2", d, d_mlp)
        out[f"{p}.att_shift"] = np.int64(int(rng.integers(0, 16)))
        out[f"{p}.gelu"] = gelu
    lin("head", "head", vocab, d)
    intlm.from_arrays(out)  # valid by construction
    return out


def run_native(arrays: dict, tokens: np.ndarray, threads: int = 1) -> np.ndarray:
    """Teacher-forced EXPL values [T, B, V] of the native step."""
    m = _core.IntLM(arrays, threads=threads)
    T, B = tokens.shape
    s = m.new_state(B)
    res = np.empty((T, B, m.vocab_size), np.float32)
    for t in range(T):
        m.step(s, tokens[t], res[t])
        assert s.position == t + 1
    return res


def run_ref(model: intlm.IntModel, tokens: np.ndarray) -> np.ndarray:
    T, B = tokens.shape
    st_ = intlm.RefState(model, B)
    return np.stack([intlm.ref_step(model, st_, tokens[t]) for t in range(T)])


def assert_exact(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32
    assert np.array_equal(got.astype(np.int64), want), np.argwhere(got.astype(np.int64) != want)[:5]
    assert np.array_equal(got, want.astype(np.float32))


def _tokens(T: int, B: int, n_tok: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, n_tok, (T, B))
    tok[0] = n_tok - 1  # a BOS-like first step
    return tok.astype(np.int64)


@pytest.fixture(scope="module")
def small() -> dict[str, np.ndarray]:
    return random_arrays(1)


# ---- bit-exact against the reference ----

@pytest.mark.parametrize("B", [1, 3, 8])
def test_random_model_matches_reference(small: dict, B: int) -> None:
    model = intlm.from_arrays(small)
    tokens = _tokens(40, B, 257, seed=B)
    assert_exact(run_native(small, tokens), run_ref(model, tokens))


def test_extreme_model_matches_reference() -> None:
    """Embeddings at the residual clamp, M = 2**31 - 1, |B| = 2**61 - 1, M = 0."""
    arrays = random_arrays(7, extreme=True)
    tokens = _tokens(30, 8, 257, seed=7)
    tokens[:, 0] = 0  # row 0 at +2**24, row 1 at -2**24
    tokens[:, 1] = 1
    got = run_native(arrays, tokens, threads=2)
    assert_exact(got, run_ref(intlm.from_arrays(arrays), tokens))
    assert np.mean([len(np.unique(r)) for r in got.reshape(-1, got.shape[-1])]) > 20  # not saturated


def test_odd_shapes_match_reference() -> None:
    """One head of odd size, a narrow MLP, a short context filled to the end."""
    arrays = random_arrays(11, d_head=(1, 7), n_layer=1, d_mlp=5, ctx=9, vocab=3, n_tok=4)
    tokens = _tokens(9, 5, 4, seed=11)
    assert_exact(run_native(arrays, tokens, threads=3), run_ref(intlm.from_arrays(arrays), tokens))


@pytest.mark.skipif(not SHIPPED.exists(), reason="the exact bundle is not shipped")
@pytest.mark.parametrize("B", [1, 3, 8])
def test_shipped_model_matches_reference(B: int) -> None:
    model = intlm.load(SHIPPED)
    arrays = intlm.to_arrays(model)
    text = np.frombuffer(Path(intlm.__file__).read_bytes(), np.uint8)
    starts = np.random.default_rng(B).integers(0, len(text) - 40, B)
    tokens = np.stack([text[s:s + 36] for s in starts], axis=1).astype(np.int64)
    tokens = np.concatenate([np.full((1, B), 256, np.int64), tokens])  # BOS, then text
    assert_exact(run_native(arrays, tokens, threads=2), run_ref(model, tokens))


# ---- threads, rows, kernel copies ----

def test_thread_counts_give_identical_output(small: dict) -> None:
    # 13 rows: 2 or 3 parts of uneven sizes (a thread gets at least 4 rows)
    tokens = _tokens(20, 13, 257, seed=2)
    want = run_native(small, tokens, threads=1)
    for threads in (2, 3, 8):
        assert np.array_equal(run_native(small, tokens, threads=threads), want), threads


def test_rows_are_independent(small: dict) -> None:
    tokens = _tokens(16, 4, 257, seed=3)
    other = _tokens(16, 4, 257, seed=4)
    other[:, 2] = tokens[:, 2]
    a = run_native(small, tokens, threads=2)
    b = run_native(small, other, threads=2)
    assert np.array_equal(a[:, 2], b[:, 2])
    alone = run_native(small, tokens[:, 2:3])
    assert np.array_equal(a[:, 2], alone[:, 0])


def test_two_states_interleaved(small: dict) -> None:
    """Two states of one model stepped alternately keep their own caches."""
    m = _core.IntLM(small, threads=2)
    tokens = _tokens(10, 3, 257, seed=5)
    s1, s2 = m.new_state(3), m.new_state(3)
    o1, o2 = np.empty((3, m.vocab_size), np.float32), np.empty((3, m.vocab_size), np.float32)
    want = run_native(small, tokens)
    for t in range(10):
        m.step(s1, tokens[t], o1)
        m.step(s2, tokens[t], o2)
        assert np.array_equal(o1, want[t]) and np.array_equal(o2, want[t])


def test_concurrent_steps_from_python_threads(small: dict) -> None:
    """The GIL is released; steps of different states on one model may overlap."""
    import threading

    m = _core.IntLM(small, threads=2)
    tokens = _tokens(24, 9, 257, seed=6)
    want = run_native(small, tokens)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            s = m.new_state(9)
            o = np.empty((9, m.vocab_size), np.float32)
            for t in range(24):
                m.step(s, tokens[t], o)
                assert np.array_equal(o, want[t])
        except BaseException as e:
            errors.append(e)

    ths = [threading.Thread(target=work) for _ in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors, errors


def _step_in_child(arrays: dict, tokens: np.ndarray, want: np.ndarray, m: object, q: object) -> None:
    try:
        assert np.array_equal(run_native(arrays, tokens, threads=3), want)  # a new model's pool
        s = m.new_state(tokens.shape[1])  # type: ignore[attr-defined]
        o = np.empty((tokens.shape[1], 256), np.float32)
        for t in range(len(tokens)):
            m.step(s, tokens[t], o)  # type: ignore[attr-defined]  # the parent's model: its pool has no threads here
            assert np.array_equal(o, want[t])
        q.put("ok")  # type: ignore[attr-defined]
    except BaseException as e:
        q.put(repr(e))  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_forked_child_can_step(small: dict) -> None:
    """A model whose thread pool is running, inherited by a forked child,
    still steps there (the child makes its own pool instead of waiting for
    threads it does not have)."""
    import multiprocessing

    tokens = _tokens(6, 12, 257, seed=9)
    want = run_native(small, tokens)
    m = _core.IntLM(small, threads=3)
    s = m.new_state(12)
    m.step(s, tokens[0], np.empty((12, 256), np.float32))  # the pool is started
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_step_in_child, args=(small, tokens, want, m, q))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        pytest.fail("the forked child hung in IntLM.step")
    assert q.get(timeout=5) == "ok"
    # a child that only drops the inherited model (its pool's threads are not
    # there to join) exits normally
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            del m, s
            import gc

            gc.collect()
            code = 0
        finally:
            os._exit(code)
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        import time

        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the forked child hung dropping the model")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


@pytest.mark.parametrize("copy", ["generic", "avx2"])
@pytest.mark.parametrize("shape", ["small", "wide"])
def test_kernel_copies_give_identical_output(small: dict, tmp_path: Path, copy: str, shape: str) -> None:
    """The baseline (and AVX2) kernel copies compute the same integers as the
    copy this CPU picks (a child process: the choice is made once).  "wide":
    3 heads of 64, 8 rows (a tile of 6 and one of 2), 75 positions (two blocks
    of the value sums, softmax rows that are not a multiple of 8)."""
    arrays = small if shape == "small" else random_arrays(21, d_head=(3, 64), d_mlp=96, ctx=80)
    np.savez(tmp_path / "m.npz", **arrays)
    tokens = _tokens(12, 3, 257, seed=8) if shape == "small" else _tokens(75, 8, 257, seed=21)
    np.save(tmp_path / "tok.npy", tokens)
    code = (
        "import sys, numpy as np; from pyllmcodec import _core;"
        "d = np.load(sys.argv[1]); a = {k: d[k] for k in d.files}; tok = np.load(sys.argv[2]);"
        "m = _core.IntLM(a); s = m.new_state(tok.shape[1]); o = np.empty((tok.shape[1], m.vocab_size), np.float32);"
        "r = []\nfor t in range(len(tok)):\n    m.step(s, tok[t], o); r.append(o.copy())\n"
        "np.save(sys.argv[3], np.stack(r)); print(m.kernels)"
    )
    env = dict(os.environ, PYLLMCODEC_KERNELS=copy)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.npz"), str(tmp_path / "tok.npy"),
                          str(tmp_path / "out.npy")], env=env, capture_output=True, text=True, check=True)
    used = out.stdout.strip()
    if copy == "avx2" and used != "avx2":
        pytest.skip("this CPU has no AVX2")
    assert used == copy
    assert np.array_equal(np.load(tmp_path / "out.npy"), run_native(arrays, tokens))


# ---- bad input: ValueError, never a crash ----

def test_properties_and_state(small: dict) -> None:
    m = _core.IntLM(small, threads=3)
    assert (m.vocab_size, m.ctx, m.n_layer, m.threads) == (256, 64, 2, 3)
    assert m.kernels in ("generic", "avx2", "avx512-vnni")
    s = m.new_state(5)
    assert (s.position, s.batch_size) == (0, 5)
    # K and V, int16, [layers][B][ctx rounded up to 16][head_dim padded to 64]
    assert s.nbytes == 2 * 2 * 2 * 5 * 64 * 64


def test_every_array_is_checked(small: dict) -> None:
    for name in small:
        broken = dict(small)
        del broken[name]
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            _core.IntLM(broken)
        broken[name] = np.asarray(small[name]).astype(np.float32)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            _core.IntLM(broken)
        broken[name] = np.asarray(small[name])[None]
        with pytest.raises(ValueError):
            _core.IntLM(broken)
        broken[name] = "not an array"
        with pytest.raises(ValueError):
            _core.IntLM(broken)


def _bad(small: dict, **edits: object) -> dict:
    a = {k: np.array(v, copy=True) for k, v in small.items()}
    for k, f in edits.items():
        a[k.replace("__", ".")] = f(a[k.replace("__", ".")]) if callable(f) else f
    return a


def _set(idx: object, value: int):
    def f(x: np.ndarray) -> np.ndarray:
        x[idx] = value
        return x
    return f


BAD_MODELS = {
    "weight -128": dict(layer0__q__w=_set((0, 0), -128)),
    "M >= 2**31": dict(layer1__fc2__m=_set(3, 1 << 31)),
    "M < 0": dict(head__m=_set(0, -1)),
    "|B| >= 2**61": dict(layer0__kv__b=_set(1, -(1 << 61))),
    "sh = 0": dict(layer0__o__sh=np.int64(0)),
    "sh = 63": dict(layer0__o__sh=np.int64(63)),
    "d_model 0": dict(d_model=np.int64(0)),
    "H * hd != d": dict(n_head=np.int64(4)),
    "head_dim 65": dict(head_dim=np.int64(65)),
    "ctx 1025": dict(ctx=np.int64(1025)),
    "ln_eps 0": dict(ln_eps=np.int64(0)),
    "ln_k 2**15 + 1": dict(ln_k=np.int64((1 << 15) + 1)),
    "att_shift 41": dict(layer1__att_shift=np.int64(41)),
    "expa rising": dict(expa=_set(3, intlm.EXPA_ONE)),
    "expa not ending in 0": dict(expa=_set(-1, 1)),
    "expa above 2**14": dict(expa=_set(0, intlm.EXPA_ONE + 1)),
    "expa just [0]": dict(expa=np.zeros(1, np.int32)),
    "expl not from 2**24": dict(expl=_set(0, intlm.EXPL_ONE - 1)),
    "expl negative": dict(expl=_set(1, -1)),
    "gelu beyond 16383": dict(layer0__gelu=_set(5, intlm.GELU_CLAMP + 1)),
    "gelu short": dict(layer0__gelu=lambda g: g[:-1]),
    "tok beyond 2**24": dict(tok=_set((3, 3), intlm.RES_CLAMP + 1)),
    "pos beyond 2**24": dict(pos=_set((0, 0), -intlm.RES_CLAMP - 1)),
    "one token row": dict(tok=lambda t: t[:1]),
    "tok 1-D": dict(tok=lambda t: t[0]),
    "pos rows != ctx": dict(pos=lambda p: p[:-1]),
    "kv rows": dict(layer0__kv__w=lambda w: w[:-1]),
    "m length": dict(layer0__q__m=lambda m: m[:-1]),
    "fc2 input != fc1 output": dict(layer1__fc2__w=lambda w: w[:, :-1]),
    "head 1 row": dict(head__w=lambda w: w[:1], head__m=lambda m: m[:1], head__b=lambda b: b[:1]),
    "scalar as 1-D": dict(n_layer=np.array([2], np.int64)),
    "scalar int32": dict(n_layer=np.int32(2)),
    "byte-swapped": dict(layer0__q__b=lambda b: b.astype(">i8")),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_models_are_refused(small: dict, case: str) -> None:
    with pytest.raises(ValueError):
        _core.IntLM(_bad(small, **BAD_MODELS[case]))


def test_expa_starting_at_zero_is_refused(small: dict) -> None:
    """EXPA = [0, ...] would make the softmax divide by Z = 0: both the
    loader and the native step refuse it."""
    a = _bad(small, expa=np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="expa"):
        intlm.from_arrays(a)
    with pytest.raises(ValueError, match="expa"):
        _core.IntLM(a)


def test_accumulator_bound_is_checked() -> None:
    """A wide fc2 whose rows of 127s could overflow int32 is refused."""
    a = random_arrays(3, n_layer=1, d_mlp=1100)
    a["layer0.fc2.w"][:] = 127
    with pytest.raises(ValueError, match="fc2"):
        intlm.from_arrays(a)
    with pytest.raises(ValueError, match="fc2"):
        _core.IntLM(a)


def test_bad_constructor_arguments(small: dict) -> None:
    for threads in (0, -1, 1025):
        with pytest.raises(ValueError):
            _core.IntLM(small, threads=threads)
    with pytest.raises(TypeError):
        _core.IntLM(list(small.items()))  # type: ignore[arg-type]
    m = _core.IntLM(small)
    with pytest.raises(ValueError):
        m.new_state(0)


def test_bad_step_arguments(small: dict) -> None:
    m = _core.IntLM(small, threads=2)
    s = m.new_state(3)
    ok_tok = np.array([1, 2, 3], np.int64)
    out = np.empty((3, 256), np.float32)
    bad_tokens = [np.array([1.0, 2.0, 3.0]), np.array([1, 2], np.int64), np.array([[1, 2, 3]], np.int64),
                  np.array([1, 2, 257], np.int64), np.array([-1, 2, 3], np.int64),
                  np.array([1, 2, 2**64 - 1], np.uint64), np.array([True, False, True]), "abc", None]
    for tok in bad_tokens:  # a wrong type is a TypeError (the core's convention), a wrong value a ValueError
        with pytest.raises((TypeError, ValueError)):
            m.step(s, tok, out)
    bad_outs = [np.empty((3, 256), np.float64), np.empty((3, 255), np.float32), np.empty((2, 256), np.float32),
                np.empty((3 * 256,), np.float32), np.empty((256, 3), np.float32).T, [[0.0] * 256] * 3, None]
    ro = np.empty((3, 256), np.float32)
    ro.flags.writeable = False
    bad_outs.append(ro)
    for o in bad_outs:
        with pytest.raises((TypeError, ValueError)):
            m.step(s, ok_tok, o)
    assert s.position == 0  # nothing was stepped
    # a state of another model (other sizes) is refused, not read out of bounds
    other = _core.IntLM(random_arrays(2, d_head=(2, 8), ctx=64))
    with pytest.raises(ValueError, match="another model"):
        m.step(other.new_state(3), ok_tok, out)
    # lists of ints and other integer dtypes are fine
    m.step(s, [1, 2, 3], out)
    m.step(s, np.array([1, 2, 3], np.uint8), out)
    assert s.position == 2
    with pytest.raises(TypeError):
        m.step("not a state", ok_tok, out)  # type: ignore[arg-type]


def test_full_state_is_refused() -> None:
    arrays = random_arrays(5, ctx=4)
    m = _core.IntLM(arrays)
    s = m.new_state(2)
    out = np.empty((2, m.vocab_size), np.float32)
    for _ in range(4):
        m.step(s, [0, 1], out)
    with pytest.raises(ValueError, match="full"):
        m.step(s, [0, 1], out)
    assert s.position == 4
    with pytest.raises(ValueError):
        s.position = 5
    s.position = 3  # moving back within the cache is allowed (benchmarks)
    m.step(s, [0, 1], out)


# ---- property test ----

@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), H=st.integers(1, 3), hd=st.integers(1, 12), n_layer=st.integers(1, 2),
       d_mlp=st.integers(1, 24), ctx=st.integers(1, 12), vocab=st.integers(2, 40), n_tok=st.integers(2, 300),
       B=st.integers(1, 12), threads=st.integers(1, 3), extreme=st.booleans())
def test_property_matches_reference(seed: int, H: int, hd: int, n_layer: int, d_mlp: int, ctx: int, vocab: int,
                                    n_tok: int, B: int, threads: int, extreme: bool) -> None:
    arrays = random_arrays(seed, d_head=(H, hd), n_layer=n_layer, d_mlp=d_mlp, ctx=ctx, vocab=vocab,
                           n_tok=n_tok, extreme=extreme)
    rng = np.random.default_rng(seed)
    # random att_shift / eps extremes too
    for i in range(n_layer):
        arrays[f"layer{i}.att_shift"] = np.int64(int(rng.choice([0, 1, 5, 12, 40])))
    arrays["ln_eps"] = np.int64(int(rng.choice([1, 1000, 1 << 40])))
    tokens = rng.integers(0, n_tok, (ctx, B)).astype(np.int64)
    assert_exact(run_native(arrays, tokens, threads=threads), run_ref(intlm.from_arrays(arrays), tokens))


def test_state_bytes_is_the_native_cache() -> None:
    """What the codec checks against max_memory is what the native state takes."""
    from pyllmcodec.models import load_model

    m = load_model("default-exact", device="cpu")
    assert m.state_bytes(3) == m.native.new_state(3).nbytes + 3 * 4 * m.vocab_size


@settings(max_examples=300, deadline=None)
@given(a=st.lists(st.integers(-(2**61) + 1, 2**61 - 1), min_size=1, max_size=30),
       b=st.one_of(st.integers(1, 1 << 20), st.integers(1, 2**61 - 1)), near=st.integers(-3, 3))
def test_rounding_division_is_exact(a: list[int], b: int, near: int) -> None:
    """The step's rdiv (layer norm, attention output) goes through a
    reciprocal: it is floor((2a + b) / 2b) exactly, at the rounding
    boundaries (a = k b + b/2) and the ends too."""
    edges = [k * b // 2 + near for k in (-5, -3, -1, 1, 3, 5)] + [2**61 - 1, -(2**61) + 1, 0]
    xs = [x for x in a + edges if -(2**61) < x < 2**61]
    got = _core.IntLM._rdiv(np.array(xs, np.int64), b)
    assert [int(g) for g in got] == [(2 * x + b) // (2 * b) for x in xs]


def test_rounding_division_refuses_its_domain() -> None:
    with pytest.raises(ValueError, match="b must be"):
        _core.IntLM._rdiv(np.zeros(2, np.int64), 0)
    with pytest.raises(ValueError, match="a must be"):
        _core.IntLM._rdiv(np.array([2**61], np.int64), 3)
