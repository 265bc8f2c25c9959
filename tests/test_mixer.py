"""The match model (docs/FORMAT.md section 4c): the native mixer against the
pure-Python reference, its misuse errors, its spec, and the codec's round
trips and refusals with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import (
    CORPUS,
    get_mixer_model,
    get_model,
    get_short_model,
    get_token_model,
    with_meta,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import Compressor, Decompressor, core
from pyllmcodec._reference import MatchMixerRow
from pyllmcodec.container import HEADER_FLAG_MIXER, parse_header
from pyllmcodec.errors import FormatError, ModelError
from pyllmcodec.mixer import MixerSpec, fit_prior, hash_bits_for

SPEC = get_mixer_model().default_mixer  # a made-up prior (tests/conftest.py)
PRIOR = SPEC.prior
REPETITIVE = (CORPUS * 40)[:12000]


def _with_mixer(model, spec=SPEC):
    """A fresh copy-like handle of a test model that ships ``spec``."""
    class Shipped(type(model)):
        pass

    m = Shipped.__new__(Shipped)
    m.__dict__.update(model.__dict__)
    m.default_mixer = spec
    return m


# ------------------------------------------------------------ native vs reference


@st.composite
def mixer_case(draw):
    V = draw(st.sampled_from([3, 7, 256, 300]))
    alpha = draw(st.integers(2, min(V, 6)))  # a small alphabet: plenty of repeats
    n_rows = draw(st.integers(1, 4))
    T = draw(st.integers(1, 120))
    seqs = [draw(st.lists(st.integers(0, alpha - 1), min_size=T, max_size=T)) for _ in range(n_rows)]
    spec = dict(min_len=draw(st.integers(1, 6)), hash_bits=draw(st.integers(8, 12)),
                limit=draw(st.integers(1, 300)))
    spec["init_count"] = draw(st.integers(0, spec["limit"]))
    prior = draw(st.lists(st.integers(1, 65535), min_size=256, max_size=256))
    return V, seqs, spec, prior, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixer_case())
def test_native_mixer_matches_reference(case):
    V, seqs, spec, prior, seed = case
    rng = np.random.default_rng(seed)
    n, T = len(seqs), len(seqs[0])
    primed = [int(x) for x in rng.integers(0, 3, size=int(rng.integers(0, 12)))]  # a dictionary, fed uncoded
    mx = core.MatchMixer(n, T + len(primed), np.array(prior), **spec)
    refs = [MatchMixerRow(prior, **spec) for _ in range(n)]
    for s in primed:
        mx.feed(np.full(n, s), rows=None)
        for ref in refs:
            ref.feed(s)
    for t in range(T):
        # a random subset of rows steps (rows=), or all of them
        rows = None if rng.random() < 0.5 else np.sort(rng.choice(n, rng.integers(1, n + 1), replace=False))
        act = np.arange(n) if rows is None else rows
        p = rng.random((len(act), V)).astype(np.float32)
        p[rng.random(p.shape) < 0.1] = 0  # zeros, and now and then a tiny or a dominant entry
        p[:, 0] += np.float32(1e-30)
        if rng.random() < 0.2:
            p[:, rng.integers(V)] = np.float32(1e6)
        want = [refs[r].mix(p[k]) for k, r in enumerate(act)]
        got = p.copy()
        mx.mix(got, rows=rows)
        assert np.array_equal(got.view(np.uint32), np.stack(want).view(np.uint32))
        cells, preds = mx.last_cells()
        assert [int(cells[r]) for r in act] == [refs[r].cell for r in act]
        syms = np.array([seqs[r][t] for r in act])
        mx.push(syms, rows=rows)
        for r, s in zip(act, syms):
            refs[r].push(int(s))
    for r in range(n):
        assert mx.length(r) == len(refs[r].hist)


def test_mixer_predicts_a_repeat():
    mx = core.MatchMixer(1, 100, np.full(256, 60000), min_len=3)
    seq = b"abcdeXabcdeY"
    probs = []
    for s in seq:
        p = np.full((1, 256), 1 / 256, np.float32)
        mx.mix(p)
        probs.append(float(p[0, s] / p[0].sum()))
        mx.push([s])
    # after "abc" repeats, "d" and "e" are predicted at ~60000/65536; "Y" is a miss
    assert probs[9] > 0.9 and probs[10] > 0.9
    assert probs[11] < 1 / 256
    assert max(probs[:9]) == pytest.approx(1 / 256)


def test_bad_rows_are_left_for_the_quantizer():
    mx = core.MatchMixer(1, 100, np.full(256, 60000), min_len=1)
    for s in (1, 1):
        p = np.full((1, 256), 1 / 256, np.float32)
        mx.mix(p)
        mx.push([s])
    for bad in (np.nan, np.inf, -1.0):
        p = np.full((1, 256), 1 / 256, np.float32)
        p[0, 7] = bad
        before = p.copy()
        mx.mix(p)  # a match is active (predicts 1), but the row is not touched
        assert np.array_equal(p, before, equal_nan=True)
        assert mx.last_cells()[0][0] == -1
        with pytest.raises(ValueError):
            core.quantize(p)
        mx.push([1])


def test_feed_between_mix_and_push_is_refused():
    mx = core.MatchMixer(1, 8, np.array(PRIOR))
    mx.mix(np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="between a mix and its push"):
        mx.feed(np.array([1]))
    mx.push(np.array([1]))
    mx.feed(np.array([2]))
    assert mx.length(0) == 2


def test_mixer_misuse_is_a_clear_error():
    prior = np.full(256, 30000)
    mx = core.MatchMixer(2, 3, prior)
    p = np.full((2, 256), 1 / 256, np.float32)
    with pytest.raises(ValueError, match="without a mix"):
        mx.push([1, 2])
    mx.mix(p)
    with pytest.raises(ValueError, match="mixed twice"):
        mx.mix(p)
    with pytest.raises(ValueError, match="appears twice"):
        mx.push([1, 2], rows=[0, 0])
    with pytest.raises(ValueError, match="not a mixer row"):
        mx.push([1], rows=[5])
    with pytest.raises(ValueError, match="symbol out of range"):
        mx.push([-1, 2])
    mx.push([1, 2])
    for _ in range(2):
        mx.mix(p)
        mx.push([1, 2])
    mx.mix(p)
    with pytest.raises(ValueError, match="is full"):
        mx.push([1, 2])
    ro = np.full((2, 256), 1 / 256, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        core.MatchMixer(2, 3, prior).mix(ro)
    with pytest.raises(TypeError, match="float32"):
        core.MatchMixer(2, 3, prior).mix(np.ones((2, 256)))
    with pytest.raises(ValueError, match="2 rows for 3 mixer rows"):
        core.MatchMixer(3, 3, prior).mix(np.ones((2, 256), np.float32))
    with pytest.raises(ValueError, match="256 entries"):
        core.MatchMixer(1, 3, np.full(255, 1000))
    with pytest.raises(ValueError, match=r"prior\[3\]"):
        core.MatchMixer(1, 3, np.r_[np.full(3, 1000), 0, np.full(252, 1000)])
    for kw, what in (({"min_len": 0}, "min_len"), ({"hash_bits": 30}, "hash_bits"), ({"limit": 0}, "limit"),
                     ({"init_count": 200}, "init_count")):
        with pytest.raises(ValueError, match=what):
            core.MatchMixer(1, 3, prior, **kw)


# ------------------------------------------------------------ the spec


def test_spec_json_round_trip_and_digest():
    obj = SPEC.to_json()
    assert MixerSpec.from_json(json.loads(json.dumps(obj))) == SPEC
    # the digest pins the canonical form: a change here changes archives
    assert SPEC.digest == "f69f9b6193e1b678"
    assert MixerSpec(prior=PRIOR, init_count=31).digest != SPEC.digest
    for bad, what in (({**obj, "prior": obj["prior"][:-1]}, "prior"), ({**obj, "prior": [0] * 256}, "prior"),
                      ({**obj, "kind": "match9"}, "kind"), ({**obj, "min_len": 0}, "min_len"),
                      ({**obj, "init_count": 500}, "init_count"), ({**obj, "extra": 1}, "unknown keys"),
                      ([], "object"), ({**obj, "limit": True}, "limit")):
        with pytest.raises(ValueError, match=what):
            MixerSpec.from_json(bad)


def test_hash_bits_follow_the_chunk_size():
    assert [hash_bits_for(n) for n in (1, 1000, 1024, 8192, 32768, 65536)] == [10, 10, 11, 14, 16, 16]


def test_fit_prior():
    rng = np.random.default_rng(0)
    cells = np.r_[np.full(1000, 16 * 4 + 15), np.full(1000, 16 * 6 + 2), np.full(500, -1)]
    hits = np.r_[rng.random(1000) < 0.95, rng.random(1000) < 0.3, np.ones(500, bool)]
    prior = fit_prior(cells, hits)
    assert len(prior) == 256 and all(1 <= q <= 65535 for q in prior)
    assert prior[16 * 4 + 15] / 65536 == pytest.approx(0.95, abs=0.02)
    assert prior[16 * 6 + 2] / 65536 == pytest.approx(0.3, abs=0.04)
    # an unseen cell borrows its probability bucket's rate, another bucket's default
    assert prior[16 * 9 + 15] == pytest.approx(prior[16 * 4 + 15], abs=700)
    assert prior[16 * 9 + 7] == 32768


# ------------------------------------------------------------ the codec


def test_mixer_pays_and_round_trips():
    plain = get_model()
    shipped = _with_mixer(plain)
    off = Compressor(shipped, chunk_size=2048, batch_size=4, mixer=False).compress(REPETITIVE)
    on = Compressor(shipped, chunk_size=2048, batch_size=4).compress(REPETITIVE)
    assert len(on) < 0.8 * len(off)
    assert parse_header(on).mixer_digest == SPEC.digest
    assert parse_header(off).mixer_digest is None
    assert on[9] & HEADER_FLAG_MIXER and not off[9] & HEADER_FLAG_MIXER
    assert pyllmcodec.info(on)["mixer"] == {"kind": "match1", "digest": SPEC.digest}
    assert Decompressor(shipped).decompress(on) == REPETITIVE
    assert Decompressor(shipped).decompress(off) == REPETITIVE
    # random access rebuilds the row's history from its chunk alone
    d = Decompressor(shipped)
    assert d.decompress_chunk(on, 3) == REPETITIVE[3 * 2048 : 4 * 2048]
    assert d.decompress_chunks(on, 1, 3) == REPETITIVE[2048 : 3 * 2048]
    with pytest.raises(ValueError, match="ships no match model"):
        Compressor(plain, mixer=True)
    with pytest.raises(ValueError, match="mixer must be"):
        Compressor(shipped, mixer="yes")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mixer_round_trips(data):
    short = data.draw(st.booleans())
    model = _with_mixer(get_short_model() if short else get_model())
    piece = data.draw(st.integers(0, 6000))
    text = (REPETITIVE[piece:] + REPETITIVE[:piece])[: data.draw(st.integers(0, 9000))]
    if data.draw(st.booleans()):
        text = text.replace(b"\n", b"\r\n")  # the line-ending methods
    if data.draw(st.booleans()):
        text += bytes(data.draw(st.lists(st.integers(0, 255), max_size=300)))
    chunk = data.draw(st.integers(1, 3000 if short else 2048))
    kw = dict(chunk_size=chunk, batch_size=data.draw(st.integers(1, 5)))
    if short and chunk > model.max_context:
        kw["prime"] = data.draw(st.integers(1, model.max_context // 2))
    comp = Compressor(model, **kw)
    blob = comp.compress(text)
    d = Decompressor(model)
    assert d.decompress(blob) == text
    # streaming and the shared-wave batch code the same way
    with pyllmcodec.open(__import__("io").BytesIO(blob), "rb", model=model) as f:
        assert f.read() == text
    assert [d.decompress(b) for b in comp.compress_batch([text, text[:100]])] == [text, text[:100]]


def test_token_model_with_a_mixer_round_trips():
    model = _with_mixer(get_token_model())
    text = (b"hello world, the tokens repeat. " * 40)[:900]
    blob = Compressor(model, chunk_size=300, batch_size=2).compress(text)
    assert parse_header(blob).mixer_digest == SPEC.digest
    assert Decompressor(model).decompress(blob) == text


def test_decoder_refuses_another_table():
    shipped = _with_mixer(get_model())
    blob = Compressor(shipped, chunk_size=1024, batch_size=2).compress(REPETITIVE[:5000])
    with pytest.raises(ModelError, match="ships none"):
        Decompressor(get_model()).decompress(blob)
    other = _with_mixer(get_model(), MixerSpec(prior=PRIOR[::-1]))
    with pytest.raises(ModelError, match="match model"):
        Decompressor(other).decompress(blob)


def test_hostile_mixer_headers():
    shipped = _with_mixer(get_model())
    blob = Compressor(shipped, chunk_size=1024, batch_size=2).compress(REPETITIVE[:3000])
    assert parse_header(with_meta(blob)).mixer_digest == SPEC.digest
    mx = parse_header(blob).meta["mixer"]
    cases = [
        ({"mixer": {**mx, "kind": "match2"}}, 0, "kind 'match2'.*upgrade"),
        ({"mixer": {**mx, "digest": "XYZ"}}, 0, "mixer.digest"),
        ({"mixer": {**mx, "extra": 1}}, 0, r"mixer \(must be"),
        ({"mixer": None}, 0, "flag and the metadata key 'mixer' disagree"),
        ({}, HEADER_FLAG_MIXER, "flag and the metadata key 'mixer' disagree"),
        ({}, 0x40, "unknown header flags"),
    ]
    for change, flip, msg in cases:
        with pytest.raises(FormatError, match=msg):
            Decompressor(shipped).decompress(with_meta(blob, flags_xor=flip, **change))


def test_golden_mixer_archive():
    # Pins model-coded bytes through the match model (mixer + quantizer +
    # coder + scheduler + container) for the test model.  A change here means
    # archives changed: justify it.
    import hashlib

    from pyllmcodec.container import ArchiveIndex

    comp = Compressor(_with_mixer(get_model()), chunk_size=700, batch_size=3, fallback="stored")
    blob = comp.compress(REPETITIVE[:2000])
    ix = ArchiveIndex(blob)
    entries = [tuple(e) for b in ix.blocks for e in b.entries]
    payload = b"".join(bytes(ix.buf[b.payload_offset : b.end]) for b in ix.blocks)
    assert (entries, hashlib.sha256(payload).hexdigest()) == GOLDEN_MIXER


GOLDEN_MIXER = (
    [(0, 700, 265, 1, 3989173753), (1, 700, 265, 1, 2690788070), (2, 600, 236, 1, 4140845283)],
    "8c6e498f93a815a4cf1cf715adbbd2833ebaf2f2b33d4b909a5a8c9f1327fe61",
)


# ------------------------------------------------------------ chunk size from the input size


def test_chunk_size_follows_a_known_input_size():
    model = get_model()  # no bundle default: 1 KiB chunks
    comp = Compressor(model, batch_size=4)
    assert comp.plan.auto_chunk and comp.chunk_size == 1024
    assert [comp.chunk_size_for(n) for n in (None, 0, 8191, 8192, 16384, 10**9)] == [1024, 1024, 1024, 2048,
                                                                                      4096, 65536]
    fixed = Compressor(model, batch_size=4, chunk_size=1024)
    assert not fixed.plan.auto_chunk and fixed.chunk_size_for(10**9) == 1024
    assert not Compressor(get_token_model(), batch_size=4).plan.auto_chunk
    data = REPETITIVE  # 12000 bytes: 4 rows of 2 KiB fill a wave, 4 of 4 KiB would not
    blob = comp.compress(data)
    assert parse_header(blob).chunk_size == 2048
    assert Decompressor(model).decompress(blob) == data
    # a stream told its size writes the very same archive; one that is not
    # told uses the base size, and a wrong size still gives a valid archive
    import io

    for size, want in ((len(data), blob), (None, None), (5, None), (10**7, None)):
        out = io.BytesIO()
        with comp.stream_writer(out, size=size) as w:
            for i in range(0, len(data), 3000):
                w.write(data[i : i + 3000])
        if want is not None:
            assert out.getvalue() == want
        else:
            assert parse_header(out.getvalue()).chunk_size == comp.chunk_size_for(size)
        assert Decompressor(model).decompress(out.getvalue()) == data


def test_cli_picks_the_chunk_size_from_the_file(tmp_path, monkeypatch, capsys):
    from pyllmcodec.cli import EXIT_OK, main

    monkeypatch.chdir(tmp_path)
    data = (REPETITIVE * 2)[:20000]
    (tmp_path / "a.txt").write_bytes(data)
    assert main(["compress", "--model", "test-bigram", "--batch-size", "4", "-k", "a.txt"]) == EXIT_OK
    assert (tmp_path / "a.txt.llmz").read_bytes() == Compressor(get_model(), batch_size=4).compress(data)
    mm = ["compress", "--model", "test-bigram-mixer", "--batch-size", "4", "-k"]
    assert main([*mm, "-o", "on.llmz", "a.txt"]) == EXIT_OK
    assert main([*mm, "--no-mixer", "-o", "off.llmz", "a.txt"]) == EXIT_OK
    on, off = (tmp_path / "on.llmz").read_bytes(), (tmp_path / "off.llmz").read_bytes()
    assert pyllmcodec.info(on)["mixer"]["digest"] == get_mixer_model().default_mixer.digest == SPEC.digest
    assert "mixer" not in pyllmcodec.info(off)
    assert len(on) < len(off)
    capsys.readouterr()
    assert main(["info", "on.llmz"]) == EXIT_OK
    assert f"match model     match1 digest={SPEC.digest}" in capsys.readouterr().out
    for n in ("on", "off"):
        assert main(["decompress", "-k", "-o", f"{n}.out", f"{n}.llmz"]) == EXIT_OK
        assert (tmp_path / f"{n}.out").read_bytes() == data


def test_accelerator_models_neither_write_nor_read_the_match_model():
    """The two-phase (device quantizer) path has no match model: such a model
    codes without it, and refuses a match-model archive with a clear error."""
    shipped = _with_mixer(get_model())
    blob = Compressor(shipped, chunk_size=1024, batch_size=2).compress(REPETITIVE[:3000])
    device = _with_mixer(get_model())
    device.device_quantize = True
    with pytest.raises(ModelError, match="device='cpu'"):
        Decompressor(device).decompress(blob)
    assert Compressor(device, chunk_size=512).mixer is None
    with pytest.raises(ValueError, match="ships no match model"):
        Compressor(device, chunk_size=512, mixer=True)
