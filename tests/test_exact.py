"""The exact integer model (issue 15): archives that open on every machine.

* the native step (csrc/intlm.hpp) against the numpy reference and the
  PyTorch port, on the shipped bundle;
* its outputs do not depend on threads, batch size or row position;
* the codec round trip with it, and a committed golden archive that must
  keep decoding;
* the fingerprint names nothing about the machine;
* a damaged bundle is a ModelError naming what is wrong;
* an archive written natively decodes to identical bytes on an emulated CPU
  of another class (qemu-user; tests/test_portability.py shows the float
  model refused there).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _qemu import requires_qemu, run_python

import pyllmcodec
from pyllmcodec.errors import ModelError, NumericsMismatchError
from pyllmcodec.models import load_model
from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs
from pyllmcodec.nets import intlm

NAME = "default-exact"
GOLDEN = Path(__file__).parent / "data" / "golden-exact.llmz"
GOLDEN_TEXT = Path(__file__).parent / "data" / "golden-exact.txt"


def _bundle_dir() -> Path:
    for d in shipped_bundle_dirs():
        if json.loads((d / "manifest.json").read_text())["name"] == NAME:
            return d
    pytest.skip("the exact model is not shipped")


@pytest.fixture(scope="module")
def net() -> intlm.IntModel:
    return intlm.load(_bundle_dir() / "intlm.npz")


def _tokens(B: int, T: int, seed: int = 0) -> np.ndarray:
    text = np.frombuffer((Path(pyllmcodec.__file__).parent / "codec.py").read_bytes(), np.uint8)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(text) - T, B)
    return np.stack([text[s:s + T] for s in starts]).astype(np.int64)


def test_native_step_equals_reference_and_torch(net: intlm.IntModel) -> None:
    model = load_model(NAME, device="cpu", threads=2)
    B, T = 3, 40
    toks = _tokens(B, T)
    st, ref = model.new_state(B), intlm.RefState(net, B)
    tstate = tmodel = None
    try:
        from pyllmcodec.backends.exact_torch import TorchExactStepModel

        tmodel = TorchExactStepModel(load_bundle(_bundle_dir()), device="cpu")
        tstate = tmodel.new_state(B)
    except ImportError:
        pass
    tok = np.full(B, model.bos, np.int64)
    for t in range(T):
        got = model.step(st, tok)
        want = intlm.ref_step(net, ref, tok)
        assert np.array_equal(got, want.astype(np.float32)), f"step {t}"
        assert np.array_equal(got.astype(np.int64), want), f"step {t}: not exact integers"
        if tmodel is not None:
            assert np.array_equal(tmodel.step(tstate, tok), got), f"torch, step {t}"
        tok = toks[:, t]


def test_rows_threads_and_batch_do_not_matter() -> None:
    toks = _tokens(5, 24, seed=3)
    outs = []
    for threads, B in ((1, 5), (2, 5), (3, 9)):
        m = load_model(NAME, device="cpu", threads=threads)
        st = m.new_state(B)
        rows = []
        tok = np.full(B, m.bos, np.int64)
        for t in range(24):
            rows.append(m.step(st, tok)[:5].copy())
            tok = np.zeros(B, np.int64)
            tok[:5] = toks[:, t]
        outs.append(np.stack(rows))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    # row 4 alone, at row 0 of a batch of one, matches row 4 of the batch
    m = load_model(NAME, device="cpu", threads=1)
    st = m.new_state(1)
    tok = np.array([m.bos])
    for t in range(24):
        assert np.array_equal(m.step(st, tok)[0], outs[0][t, 4])
        tok = toks[4:5, t]


def test_fingerprint_names_no_machine() -> None:
    fp = load_model(NAME, device="cpu").fingerprint()
    assert fp["backend"] == "exact" and fp["numerics"] == intlm.NUMERICS
    assert set(fp) == {"backend", "numerics", "model", "cdf"} and fp["cdf"] == "int/1"
    # the numerics of the first exact archives (float32 rows to the float quantizer): no "cdf" key
    (old,) = load_model(NAME, device="cpu").legacy_numerics()
    assert set(old.fingerprint()) == {"backend", "numerics", "model"} and not old.integer_rows


@pytest.mark.parametrize("threads", [1, 2])
def test_round_trip(threads: int) -> None:
    data = (Path(pyllmcodec.__file__).parent / "errors.py").read_bytes()[:3000]
    arc = pyllmcodec.compress(data, model=NAME, threads=threads, batch_size=4)
    assert len(arc) < len(data) // 2
    assert pyllmcodec.decompress(arc, threads=3 - threads) == data
    assert pyllmcodec.decompress(arc, model=NAME) == data


@pytest.mark.parametrize("name", ["golden-exact.llmz", "golden-exact-compact.llmz", "golden-exact-1.6.0.llmz",
                                  "golden-exact-1.6.0-compact.llmz"])
def test_golden_archive_decodes(name: str) -> None:
    """Written once by this project on an AMD Zen 4 (a full archive and a
    compact frame); they must decode on any machine, forever.  The 1.6.0
    pair was written before the integer CDF entry (the same integers as
    float32 rows through the float quantizer): they decode through the
    model's legacy numerics."""
    _bundle_dir()
    arc = (GOLDEN.parent / name).read_bytes()
    assert pyllmcodec.decompress(arc) == GOLDEN_TEXT.read_bytes()
    assert pyllmcodec.decompress(arc, threads=1) == GOLDEN_TEXT.read_bytes()


def test_integer_cdf_costs_nothing_and_old_archives_need_the_legacy_numerics(monkeypatch) -> None:
    from pyllmcodec.backends.exact import ExactStepModel

    model = load_model(NAME, device="cpu")
    (old,) = model.legacy_numerics()
    data = (Path(pyllmcodec.__file__).parent / "scheduler.py").read_bytes()[:6000]
    # the CDF entry alone (the legacy numerics cannot run the context-mixing stage)
    new_arc = pyllmcodec.compress(data, model=model, batch_size=2, chunk_size=3000, cm=False)
    old_arc = pyllmcodec.compress(data, model=old, batch_size=2, chunk_size=3000)
    assert new_arc != old_arc and abs(len(new_arc) - len(old_arc)) <= 8  # the same model, other tables
    assert pyllmcodec.decompress(new_arc) == data and pyllmcodec.decompress(old_arc) == data
    # without the legacy numerics an old archive is refused, never decoded to other bytes
    monkeypatch.setattr(ExactStepModel, "legacy_numerics", lambda self: [])
    with pytest.raises(NumericsMismatchError):
        pyllmcodec.decompress(old_arc, model=model)
    assert pyllmcodec.decompress(new_arc, model=model) == data


def test_backend_choices_are_explicit() -> None:
    with pytest.raises(ModelError, match="exact integer model"):
        load_model(NAME, backend="onnxruntime")


def _damaged(tmp_path: Path, mutate) -> Path:
    src = _bundle_dir()
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    with np.load(dst / "intlm.npz", allow_pickle=False) as z:
        arrs = {k: z[k] for k in z.files}
    mutate(arrs)
    np.savez(dst / "intlm.npz", **arrs)
    return dst


@pytest.mark.parametrize("mutate, match", [
    (lambda a: a.pop("layer1.gelu"), "layer1.gelu"),
    (lambda a: a.__setitem__("layer0.q.w", a["layer0.q.w"].astype(np.int16)), "layer0.q.w"),
    (lambda a: a.__setitem__("expl", a["expl"][::-1].copy()), "expl"),
    (lambda a: a.__setitem__("layer2.fc1.m", a["layer2.fc1.m"] + (1 << 40)), "layer2.fc1.m"),
    (lambda a: a.__setitem__("head.w", np.full_like(a["head.w"], -128)), "head.w"),
    (lambda a: a.__setitem__("ctx", np.int64(1 << 20)), "ctx"),
])
def test_damaged_bundle_is_a_model_error(tmp_path: Path, mutate, match: str) -> None:
    from pyllmcodec.backends.exact import ExactStepModel

    d = _damaged(tmp_path, mutate)
    with pytest.raises(ModelError, match=match):
        ExactStepModel(load_bundle(d, verify=False))


def test_unreadable_bundle_file_is_a_model_error(tmp_path: Path) -> None:
    from pyllmcodec.backends.exact import ExactStepModel

    dst = tmp_path / "b"
    shutil.copytree(_bundle_dir(), dst)
    (dst / "intlm.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match=r"intlm\.npz"):
        ExactStepModel(load_bundle(dst, verify=False))


@requires_qemu
def test_exact_archive_decodes_on_emulated_cpu(tmp_path: Path) -> None:
    _bundle_dir()
    data = b"Integer arithmetic gives the same bits on every CPU: this archive opens on a Haswell too.\n" * 2
    arc = pyllmcodec.compress(data, model=NAME, batch_size=2)
    path = tmp_path / "exact.llmz"
    path.write_bytes(arc)
    code = ("import pathlib, pyllmcodec; "
            f"out = pyllmcodec.decompress(pathlib.Path({str(path)!r}).read_bytes()); "
            f"print('DECODED', out == {data!r})")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "DECODED True", proc.stdout


def test_converter_on_a_tiny_bundle(tmp_path: Path) -> None:
    """export.intlm on a random tiny float bundle: a valid exact model whose
    probabilities follow the float network's (random weights: a loose check)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from pyllmcodec.backends.torch import load_bytelm
    from pyllmcodec.export import intlm as X
    from pyllmcodec.export.testing import make_tiny_bundle

    fb = load_bundle(make_tiny_bundle(tmp_path / "f"))
    text = (Path(pyllmcodec.__file__).parent / "codec.py").read_bytes()
    calib = X.calibrate(fb, text, windows=8, length=64)
    net = X.convert(fb, calib)
    out = X.export_int_bundle(net, fb, tmp_path / "x", name="tiny-exact", version="0.0.0",
                              calibration={"windows": 8})
    back = intlm.load(out / "intlm.npz")  # validated
    toks = _tokens(4, 48, seed=5)
    inp = np.concatenate([np.full((4, 1), 256), toks[:, :-1]], axis=1)
    p = intlm.ref_forward(back, inp).astype(np.float64)
    p /= p.sum(-1, keepdims=True)
    with torch.no_grad():
        q = torch.softmax(load_bytelm(fb)(torch.from_numpy(inp)).double(), -1).numpy()
    # random weights give peaky rows: compare whole rows (total variation distance)
    tv = 0.5 * np.abs(p - q).sum(-1)
    assert tv.mean() < 0.01 and tv.max() < 0.05, (tv.mean(), tv.max())
    from pyllmcodec.backends.exact import ExactStepModel

    model = ExactStepModel(load_bundle(out))
    data = text[:600]
    assert pyllmcodec.decompress(pyllmcodec.compress(data, model=model), model=model) == data
