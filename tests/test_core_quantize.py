"""pyllmcodec.core.quantize: the quantizer contract (csrc/quantizer.hpp)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmcodec import _reference as ref
from pyllmcodec import core


def check_table(cdf: np.ndarray, V: int, precision: int) -> None:
    assert cdf.dtype == np.uint32
    assert cdf.shape[1] == V + 1
    assert (cdf[:, 0] == 0).all()
    assert (cdf[:, -1] == 1 << precision).all()
    assert (np.diff(cdf.astype(np.int64), axis=1) >= 1).all()


def rows(seed: int, B: int, V: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "peaked":
        p = np.exp(rng.standard_normal((B, V)) * 4)
    elif kind == "uniform":
        p = np.ones((B, V))
    elif kind == "onehot":
        p = np.zeros((B, V))
        p[np.arange(B), rng.integers(0, V, B)] = 1.0
    elif kind == "tiny":  # near-zero mass everywhere but one symbol
        p = rng.random((B, V)) * 1e-30
        p[:, rng.integers(0, V)] = 1.0
    elif kind == "subnormal":
        p = rng.integers(0, 8, (B, V)) * np.float32(1e-45)
        p[:, 0] = 1e-45
    else:  # unnormalised
        p = rng.random((B, V)) * 1e6
    return p.astype(np.float32)


KINDS = ["peaked", "uniform", "onehot", "tiny", "subnormal", "unnormalised"]


@settings(max_examples=60, deadline=None)
@given(
    V=st.integers(2, 300),
    B=st.integers(1, 4),
    precision=st.sampled_from([10, 16, 24, 30, 31]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_table_invariants_and_reference(V, B, precision, kind, seed):
    V = min(V, 1 << (precision - 1))
    p = rows(seed, B, V, kind)
    cdf = core.quantize(p, precision)
    check_table(cdf, V, precision)
    np.testing.assert_array_equal(cdf, ref.quantize(p, precision))


@pytest.mark.parametrize("V", [50257, 262144])
def test_large_vocab(V):
    p = rows(7, 2, V, "peaked")
    cdf = core.quantize(p)
    check_table(cdf, V, core.DEFAULT_PRECISION)
    # the reference agrees on one row (slow but fine at this size)
    np.testing.assert_array_equal(
        cdf[0], ref.quantize_row(p[0], core.DEFAULT_PRECISION)
    )


def test_default_precision_and_limits():
    assert core.DEFAULT_PRECISION == 30
    assert core.MIN_PRECISION == 2 and core.MAX_PRECISION == 31
    assert core.MAX_SYMBOLS == 1 << 21
    check_table(core.quantize(np.ones((1, 2), np.float32), 2), 2, 2)
    check_table(core.quantize(np.ones((1, 1 << 20), np.float32), 21), 1 << 20, 21)


def test_proportional_and_scale_free():
    p = np.array([[1, 2, 3, 4]], np.float32)
    f = np.diff(core.quantize(p).astype(np.int64))[0]
    np.testing.assert_allclose(f / f.sum(), [0.1, 0.2, 0.3, 0.4], rtol=1e-5)
    # not normalised: scaling a row by a power of two changes nothing
    np.testing.assert_array_equal(
        core.quantize(p), core.quantize(p * np.float32(2**-40))
    )


def test_zero_probability_symbols_get_mass():
    p = np.zeros((1, 5), np.float32)
    p[0, 2] = 1.0
    f = np.diff(core.quantize(p, 8).astype(np.int64))[0]
    assert (f >= 1).all() and f.sum() == 256 and f[2] == 256 - 4


@pytest.mark.parametrize(
    "value, message",
    [
        (np.nan, "NaN at index 3"),
        (np.inf, "infinity at index 3"),
        (-np.inf, "infinity at index 3"),
        (-0.5, "negative value"),
    ],
)
def test_bad_value_names_the_row(value, message):
    p = np.ones((4, 40), np.float32)
    p[2, 3] = value
    with pytest.raises(ValueError, match=f"row 2 .*{message}"):
        core.quantize(p)


def test_zero_sum_and_huge_rows():
    p = np.ones((3, 8), np.float32)
    p[1] = 0
    p[1, 4] = -0.0
    with pytest.raises(ValueError, match="row 1 sums to zero"):
        core.quantize(p)
    p = np.ones((2, 8), np.float32)
    p[1] = 3e38
    with pytest.raises(ValueError, match="row 1 has values too large"):
        core.quantize(p)


def test_negative_zero_is_zero():
    p = np.array([[1.0, -0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(core.quantize(p), core.quantize(np.abs(p)))


@pytest.mark.parametrize(
    "V, precision", [(1, 30), (0, 30), (1 << 15 + 1, 16), ((1 << 21) + 1, 31)]
)
def test_alphabet_limits(V, precision):
    with pytest.raises(ValueError, match="symbols|alphabet"):
        core.quantize(np.ones((1, V), np.float32), precision)


@pytest.mark.parametrize("precision", [1, 32, -3])
def test_precision_limits(precision):
    with pytest.raises(ValueError, match="precision"):
        core.quantize(np.ones((1, 4), np.float32), precision)


def test_input_checks():
    with pytest.raises(TypeError, match="float32"):
        core.quantize(np.ones((1, 4), np.float64))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        core.quantize([[1.0, 2.0]])
    with pytest.raises(ValueError, match="2-D"):
        core.quantize(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        core.quantize(np.ones((4, 8), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="native byte order"):
        core.quantize(np.ones((1, 4), ">f4"))
    assert core.quantize(np.ones((0, 4), np.float32)).shape == (0, 5)


def _digest() -> str:
    h = hashlib.sha256()
    for kind in KINDS:
        for V in (2, 31, 33, 256, 1000):
            h.update(core.quantize(rows(3, 3, V, kind)).tobytes())
    return h.hexdigest()


def test_generic_kernels_give_identical_bits():
    """The run-time chosen AVX2 copy and the baseline copy must agree."""
    code = (
        "from pyllmcodec import core; assert core.kernels() == 'generic';"
        "from tests.test_core_quantize import _digest; print(_digest())"
    )
    env = dict(os.environ, PYLLMCODEC_KERNELS="generic")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == _digest()


def test_flush_to_zero_mode_does_not_change_bits():
    torch = pytest.importorskip("torch")
    p = rows(5, 4, 64, "subnormal")
    want = core.quantize(p)
    torch.set_flush_denormal(True)
    try:
        got = core.quantize(p)
    finally:
        torch.set_flush_denormal(False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, ref.quantize(p))


# Pins the quantizer's bits (part of the format).
GOLDEN_QUANTIZE = {
    "small": [0, 107374081, 322122242, 644244483, 1073741824],
}


def test_golden_table():
    p = np.array([[1, 2, 3, 4]], np.float32)
    assert core.quantize(p)[0].tolist() == GOLDEN_QUANTIZE["small"]


def test_out_parameter():
    p = rows(9, 3, 40, "peaked")
    out = np.full((3, 41), 7, np.uint32)
    assert core.quantize(p, out=out) is out
    np.testing.assert_array_equal(out, core.quantize(p))
    with pytest.raises(ValueError, match="out must have shape"):
        core.quantize(p, out=np.empty((3, 40), np.uint32))
    with pytest.raises(TypeError, match="uint32"):
        core.quantize(p, out=np.empty((3, 41), np.int64))
    ro = np.empty((3, 41), np.uint32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        core.quantize(p, out=ro)
