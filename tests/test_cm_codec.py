"""The context-mixing stage through the codec (docs/FORMAT.md section 4f):
round trips on every path, the header key, groups per archive, the rows a
wave drops, random access, memory, hostile headers.  The stage itself is
tested against its reference in tests/test_cm_core.py."""

from __future__ import annotations

import copy
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import TEXT, get_int_model, get_model, with_meta
from hypothesis import given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import Compressor, Decompressor, _core
from pyllmcodec.container import HEADER_FLAG_CM, cm_table_bits, parse_header
from pyllmcodec.errors import FormatError, MemoryLimitError, ModelError
from pyllmcodec.models import load_model
from pyllmcodec.scheduler import WaveRunner, cm_groups

RND = bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8))


def _comp(**kw) -> Compressor:
    kw.setdefault("chunk_size", 256)
    kw.setdefault("batch_size", 4)
    return Compressor(get_int_model(), **kw)


def _dec() -> Decompressor:
    return Decompressor(get_int_model())


def test_on_by_default_where_the_model_can_run_it_and_smaller():
    with_cm = _comp().compress(TEXT)
    without = _comp(cm=False).compress(TEXT)
    h = parse_header(with_cm)
    assert h.meta["cm"] == {"kind": "cm3", "table_bits": cm_table_bits(256 * 4)}
    assert with_cm[9] & HEADER_FLAG_CM and not without[9] & HEADER_FLAG_CM
    assert "cm" not in parse_header(without).meta
    assert len(with_cm) < 0.85 * len(without)  # the text repeats: the stage learns it
    assert _dec().decompress(with_cm) == TEXT == _dec().decompress(without)
    # a float model cannot run it: off by default, refused when asked for
    assert "cm" not in parse_header(Compressor(get_model(), chunk_size=256).compress(TEXT[:500])).meta
    with pytest.raises(ValueError, match="cannot run the context-mixing stage"):
        Compressor(get_model(), cm=True)
    with pytest.raises(ValueError, match="cm must be None, True or False"):
        _comp(cm="yes")


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=1500) | st.sampled_from([TEXT[:1200], RND[:700], TEXT[:300] + RND[:200] + TEXT[:400]]),
       chunk=st.sampled_from([16, 64, 200]), batch=st.integers(1, 5), precision=st.sampled_from([16, 30]))
def test_round_trips(data, chunk, batch, precision):
    blob = _comp(chunk_size=chunk, batch_size=batch, precision=precision).compress(data)
    assert _dec().decompress(blob) == data


def test_a_chunk_that_falls_back_is_dropped_and_the_wave_recoded(monkeypatch):
    # random chunks beside text in one wave: they keep another form, so the
    # stage must not have learned from them (the decoder never runs them)
    data = TEXT[:256] + RND[:256] + TEXT[256:512] + RND[256:512]
    comp = _comp(fallback="stored")
    calls = []
    real = WaveRunner.encode_wave

    def spy(self, batch, rows, chunks, *a, **kw):
        calls.append(sum(1 for c in chunks if len(c)))
        return real(self, batch, rows, chunks, *a, **kw)

    monkeypatch.setattr(WaveRunner, "encode_wave", spy)
    blob = comp.compress(data)
    info = pyllmcodec.info(blob, chunks=True)
    methods = [c["method"] for c in info["chunks"]]
    assert methods[1] == methods[3] == "stored" and methods[0] != "stored"
    assert calls == [4, 2]  # coded with every row, then again without the two dropped
    assert _dec().decompress(blob) == data


def test_random_access_decodes_the_wave_and_returns_the_slice():
    comp = _comp(chunk_size=128, batch_size=4)
    blob = comp.compress(TEXT[:3000])
    dec = _dec()
    for start, stop in [(0, 1), (5, 6), (3, 9), (20, 24)]:
        assert dec.decompress_chunks(blob, start, stop) == TEXT[128 * start : min(128 * stop, 3000)]


def test_each_archive_of_a_shared_wave_decodes_alone():
    comp = _comp(chunk_size=64, batch_size=8)
    bufs = [TEXT[:100], TEXT[100:400], b"", TEXT[400:450] * 3, RND[:80]]
    blobs = comp.compress_batch(bufs)
    dec = _dec()
    assert [dec.decompress(b) for b in blobs] == bufs
    assert dec.decompress_batch(blobs) == bufs
    assert dec.decompress_batch(blobs[::-1]) == bufs[::-1]
    # compact and headerless frames: the frame flag, the same groups
    frames = _comp(chunk_size=64, batch_size=8, frame="compact").compress_batch(bufs)
    assert [dec.decompress(f) for f in frames] == bufs
    params = comp.frame_params()
    assert params.cm
    hl = comp.compress_batch(bufs, params=params)
    assert dec.decompress_batch(hl, params=params) == bufs
    assert [dec.decompress_batch([h], params=params)[0] for h in hl] == bufs


def test_groups_are_per_archive_and_sized_by_their_bytes():
    of_row, bits = cm_groups(6, [0, 1, 2, 4], [7, 7, 9, 7], [100, 100, 5000, 100], 20)
    assert list(of_row) == [0, 0, 1, 0, 0, 0] and bits == [cm_table_bits(300), cm_table_bits(5000)]
    assert cm_groups(2, [0, 1], None, [1 << 20, 1 << 20], 18)[1] == [18]  # the header's cap


def test_dictionary_streams_and_the_cli_path():
    dic = pyllmcodec.Dictionary(TEXT[:200])  # fed to the stage before every chunk (its counters only)
    blob = _comp(dictionary=dic).compress(TEXT[:2000])
    assert Decompressor(get_int_model(), dictionary=dic).decompress(blob) == TEXT[:2000]
    assert len(blob) < len(_comp(dictionary=dic, cm=False).compress(TEXT[:2000]))
    out = io.BytesIO()
    with _comp().stream_writer(out) as w:
        for i in range(0, 5000, 333):
            w.write(TEXT[i : i + 333])
    assert "cm" in parse_header(out.getvalue()).meta
    assert _dec().decompress(out.getvalue()) == TEXT[:5328]


def test_eol_chunks_code_through_the_stage():
    crlf = TEXT[:3000].replace(b"\n", b"\r\n")
    blob = _comp().compress(crlf)
    assert {"model-eol-cr"} <= set(pyllmcodec.info(blob)["methods"]) and "cm" in parse_header(blob).meta
    assert _dec().decompress(blob) == crlf


def test_memory_check_counts_the_stage():
    blob = _comp(chunk_size=4096, batch_size=2).compress(TEXT[:8000])
    assert parse_header(blob).meta["cm"]["table_bits"] == cm_table_bits(8000)
    # the stage needs 36 * 2^17 bytes + 0.3 MB here, the rest of the wave under 0.3 MB: refused for the stage
    with pytest.raises(MemoryLimitError):
        Decompressor(get_int_model(), max_memory=(1 << 17) * 40).decompress(blob)


def _rewrite(blob: bytes, change: dict, flip: int = 0) -> bytes:
    """``blob`` with its header metadata changed (None removes a key) and
    its flags XOR ``flip``, every checksum consistent."""
    return with_meta(blob, flip, **change)


@pytest.mark.parametrize("change,flip,msg", [
    ({"cm": {"kind": "cm4", "table_bits": 16}}, 0, "cm.kind 'cm4'.*upgrade"),
    ({"cm": {"kind": ["cm2"], "table_bits": 16}}, 0, r"cm.kind .*cm2.* is not one of"),
    ({"cm": {"kind": "cm1", "table_bits": 9}}, 0, r"cm.table_bits \(10..22"),
    ({"cm": {"kind": "cm1", "table_bits": 23}}, 0, r"cm.table_bits \(10..22"),
    ({"cm": {"kind": "cm3", "table_bits": 23}}, 0, r"cm.table_bits \(10..22; cm3 in the long mode ..24\)"),
    ({"cm": {"kind": "cm2", "table_bits": 23, "long": 2}}, 0, r"cm.table_bits \(10..22"),
    ({"cm": {"kind": "cm3", "table_bits": 25, "long": 2}}, 0, r"cm.table_bits \(10..22; cm3 in the long mode ..24\)"),
    ({"cm": {"kind": "cm1", "table_bits": "16"}}, 0, r"cm.table_bits"),
    ({"cm": {"kind": "cm1", "table_bits": True}}, 0, r"cm.table_bits"),
    ({"cm": {"kind": "cm1"}}, 0, r"cm \(must be"),
    ({"cm": {"kind": "cm1", "table_bits": 16, "x": 1}}, 0, r"cm \(must be"),
    ({"cm": [1]}, 0, r"cm \(must be"),
    ({"cm": {"kind": "cm3", "table_bits": 16, "priors": "0123"}}, 0, r"cm.priors \(16 hex digits, cm3 only\)"),
    ({"cm": {"kind": "cm3", "table_bits": 16, "priors": 12}}, 0, r"cm.priors \(16 hex digits"),
    ({"cm": {"kind": "cm3", "table_bits": 16, "priors": "0123456789abcdeG"}}, 0, r"cm.priors \(16 hex"),
    ({"cm": {"kind": "cm2", "table_bits": 16, "priors": "0123456789abcdef"}}, 0, r"cm.priors \(16 hex digits, cm3"),
    ({"cm": {"kind": "cm1", "table_bits": 16, "priors": "0123456789abcdef"}}, 0, r"cm.priors \(16 hex digits, cm3"),
    ({"cm": None}, 0, "flag and the metadata key 'cm' disagree"),
    ({}, HEADER_FLAG_CM, "flag and the metadata key 'cm' disagree"),
])
def test_hostile_headers_are_refused(change, flip, msg):
    blob = _comp().compress(TEXT[:1000])
    with pytest.raises(FormatError, match=msg):
        _dec().decompress(_rewrite(blob, change, flip))


def test_priors_are_the_models_and_the_archive_names_them():
    """A model that ships cm3 priors (a bundle's codec.cm) codes with them and
    the header records their digest (cm.priors); a decoder whose model ships
    none or others refuses the archive before decoding (ModelError), and one
    with the same decodes it.  Frames (cm1) and cm=False carry none."""
    from pyllmcodec.cmpriors import CmPriors

    rng = np.random.default_rng(5)
    w = np.zeros(_core.CM3_PRIOR_WEIGHTS, dtype=np.int64)
    w[::22] = 65536
    mine, other = copy.copy(get_int_model()), copy.copy(get_int_model())
    mine.default_cm_priors = CmPriors.from_array(w + rng.integers(-3000, 3000, len(w)))
    other.default_cm_priors = CmPriors.from_array(w + rng.integers(-3000, 3000, len(w)))
    assert mine.default_cm_priors.digest != other.default_cm_priors.digest
    text = TEXT[:1500]
    blob = Compressor(mine, chunk_size=256, batch_size=4).compress(text)
    plain = _comp().compress(text)
    assert parse_header(blob).meta["cm"] == {"kind": "cm3", "table_bits": cm_table_bits(1024),
                                             "priors": mine.default_cm_priors.digest}
    assert "priors" not in parse_header(plain).meta["cm"]
    assert blob[parse_header(blob).size:] != plain[parse_header(plain).size:]  # the priors code
    assert Decompressor(mine).decompress(blob) == text
    for model, have in ((get_int_model(), "ships none"), (other, f"ships digest {other.default_cm_priors.digest}")):
        with pytest.raises(ModelError, match=f"context-mixing priors {mine.default_cm_priors.digest} .*{have}"):
            Decompressor(model).decompress(blob)
    # an archive without priors decodes with a model that has them (fresh mixers, as written)
    assert Decompressor(mine).decompress(plain) == text
    # no stage, no priors; a compact frame codes through cm1, which has none
    assert "cm" not in parse_header(Compressor(mine, chunk_size=256, cm=False).compress(text)).meta
    frame = Compressor(mine, chunk_size=256, batch_size=4, frame="compact").compress(text)
    assert Decompressor(mine).decompress(frame) == text


def test_bundle_priors_are_validated():
    """A bundle manifest's codec.cm must be {kind: "cm3", weights: [8448 ints in -2^24..2^24]}."""
    from pyllmcodec.cmpriors import CmPriors

    good = {"kind": "cm3", "weights": [0] * _core.CM3_PRIOR_WEIGHTS}
    assert CmPriors.from_json(good).to_json() == good
    assert CmPriors.from_json(good).digest == CmPriors.from_json(dict(good)).digest
    assert CmPriors.from_array(np.array(good["weights"])).array.dtype == np.int32
    for bad, msg in (({"kind": "cm2", "weights": good["weights"]}, "priors for 'cm3' only"),
                     ({"weights": good["weights"]}, r"\{kind, weights\}"),
                     ({**good, "x": 1}, r"\{kind, weights\}"),
                     ({"kind": "cm3", "weights": "abc"}, "must be a list"),
                     ({"kind": "cm3", "weights": [0] * 10}, "must be 8448 weights, got 10"),
                     ({"kind": "cm3", "weights": [0] * 8447 + [1 << 24 | 1]}, "weight 8447 must be an int"),
                     ({"kind": "cm3", "weights": [0] * 8447 + [True]}, "weight 8447 must be an int"),
                     ({"kind": "cm3", "weights": [0] * 8447 + [1.0]}, "weight 8447 must be an int"),
                     ([1], r"\{kind, weights\}")):
        with pytest.raises(ValueError, match=msg):
            CmPriors.from_json(bad)
    with pytest.raises(ValueError, match="1-D integer array"):
        CmPriors.from_array(np.zeros(4))


def test_a_smaller_table_in_the_header_decodes_to_an_error_not_to_other_bytes():
    blob = _comp().compress(TEXT[:1000])
    bits = parse_header(blob).meta["cm"]["table_bits"]
    other = _rewrite(blob, {"cm": {"kind": "cm1", "table_bits": bits - 1}})
    with pytest.raises(pyllmcodec.CodecError):
        _dec().decompress(other)


def test_an_archive_with_the_stage_needs_a_model_that_runs_it():
    blob = _comp().compress(TEXT[:1000])
    floaty = copy.copy(get_int_model())  # the same model, but float rows: it cannot run the stage
    floaty.integer_rows = False
    with pytest.raises(ModelError, match="context-mixing stage"):
        Decompressor(floaty).decompress(blob)


GOLDEN = Path(__file__).parent / "data" / "golden-cm.llmz"
GOLDEN_TEXT = Path(__file__).parent / "data" / "golden-cm.txt"
#: the same text through cm2 in the long mode (3 waves of up to 32 x 48 bytes, groups of 2)
GOLDEN2 = Path(__file__).parent / "data" / "golden-cm2-long.llmz"
#: ... and through cm3, what full archives write since 0.5
GOLDEN3 = Path(__file__).parent / "data" / "golden-cm3-long.llmz"
#: ... and through cm3 from the default bundle's priors (header cm.priors), what full archives write now
GOLDEN3P = Path(__file__).parent / "data" / "golden-cm3-long-priors.llmz"
GOLDEN2_OPTS = {"chunk_size": 48, "batch_size": 32, "long": 2}


def test_golden_archive_pins_the_stage(monkeypatch):
    """tests/data/golden-cm.llmz: 4,000 bytes of FORMAT.md through the default
    model and the stage's first kind, cm1 (what full archives wrote before
    cm2).  This writer, made to write cm1, reproduces its blocks and footer
    byte for byte, and its header but for the writer's version (any change to
    csrc/cm.hpp's numbers changes the format, so it must fail here); it
    decodes here, and tools/aarch64_check.sh decodes it on an emulated ARM."""
    arc, text = GOLDEN.read_bytes(), GOLDEN_TEXT.read_bytes()
    assert parse_header(arc).meta["cm"]["kind"] == "cm1"
    assert pyllmcodec.decompress(arc) == text
    real = Compressor.geometry_for
    monkeypatch.setattr(Compressor, "geometry_for", lambda self, size: dataclasses.replace(real(self, size), cm_kind=1))
    new = pyllmcodec.compress(text)
    h, hn = parse_header(arc), parse_header(new)
    assert new[hn.size:] == arc[h.size:]
    assert {**hn.meta, "writer": ""} == {**h.meta, "writer": ""}


def test_golden_cm2_long_archive_pins_the_stage(monkeypatch):
    """tests/data/golden-cm2-long.llmz: the same text through cm2 (its match
    model over the group's ring) in the long mode, written by
    ``pyllmcodec.compress(text, **GOLDEN2_OPTS)`` before cm3: reproduced byte
    for byte (but for the writer's version) by this writer made to write cm2
    at cm2's table size, and decoded here."""
    arc, text = GOLDEN2.read_bytes(), GOLDEN_TEXT.read_bytes()
    assert parse_header(arc).meta["cm"] == {"kind": "cm2", "table_bits": 15, "long": 2}
    assert pyllmcodec.info(arc)["n_blocks"] == 3
    assert pyllmcodec.decompress(arc) == text
    real = Compressor.geometry_for
    monkeypatch.setattr(Compressor, "geometry_for",
                        lambda self, size: dataclasses.replace(real(self, size), cm_kind=2, cm_bits=15))
    new = pyllmcodec.compress(text, **GOLDEN2_OPTS)
    h, hn = parse_header(arc), parse_header(new)
    assert new[hn.size:] == arc[h.size:]
    assert {**hn.meta, "writer": ""} == {**h.meta, "writer": ""}
    # cm2 pays on this text beside cm1 (the text repeats little: the match model finds what does)
    assert len(arc) < len(pyllmcodec.compress(text, chunk_size=48, batch_size=32, cm=False))


def test_golden_cm3_long_archive_pins_the_stage(monkeypatch):
    """tests/data/golden-cm3-long.llmz: the same text through cm3 (checked
    buckets, counter maps, mixer 3) in the long mode, whose fresh states take
    the table size of a period of waves, written by
    ``pyllmcodec.compress(text, **GOLDEN2_OPTS)`` before the bundle shipped
    priors: reproduced byte for byte (but for the writer's version) by this
    writer made to write no priors, and decoded here."""
    arc, text = GOLDEN3.read_bytes(), GOLDEN_TEXT.read_bytes()
    assert parse_header(arc).meta["cm"] == {"kind": "cm3", "table_bits": 16, "long": 2}
    assert pyllmcodec.info(arc)["n_blocks"] == 3
    assert pyllmcodec.decompress(arc) == text
    real = Compressor.geometry_for
    monkeypatch.setattr(Compressor, "geometry_for",
                        lambda self, size: dataclasses.replace(real(self, size), cm_priors=None))
    new = pyllmcodec.compress(text, **GOLDEN2_OPTS)
    h, hn = parse_header(arc), parse_header(new)
    assert new[hn.size:] == arc[h.size:]
    assert {**hn.meta, "writer": ""} == {**h.meta, "writer": ""}
    assert len(arc) < len(GOLDEN2.read_bytes())


def test_golden_cm3_priors_archive_pins_the_stage():
    """tests/data/golden-cm3-long-priors.llmz: the same text through cm3 in
    the long mode, its fresh states' mixers starting from the default
    bundle's priors (docs/FORMAT.md section 4f, header cm.priors), written
    by ``pyllmcodec.compress(text, **GOLDEN2_OPTS)``: reproduced byte for
    byte but for the writer's version, decoded here and on an emulated ARM
    (tools/aarch64_check.sh)."""
    arc, text = GOLDEN3P.read_bytes(), GOLDEN_TEXT.read_bytes()
    pri = load_model("default-exact").default_cm_priors
    assert pri is not None
    assert parse_header(arc).meta["cm"] == {"kind": "cm3", "table_bits": 16, "long": 2, "priors": pri.digest}
    assert pyllmcodec.info(arc)["n_blocks"] == 3
    assert pyllmcodec.decompress(arc) == text
    new = pyllmcodec.compress(text, **GOLDEN2_OPTS)
    h, hn = parse_header(arc), parse_header(new)
    assert new[hn.size:] == arc[h.size:]
    assert {**hn.meta, "writer": ""} == {**h.meta, "writer": ""}
    # the priors pay on this text (4,000 bytes: without them the mixers are still learning what to trust)
    assert len(arc) < len(GOLDEN3.read_bytes())
