"""The context-mixing stage's long mode (header key ``cm.long``,
docs/FORMAT.md section 4f): an archive's stage state carries from wave to
wave within groups of ``long`` waves.  Round trips through every encoder and
decoder path, random access from a group's start, archives sharing waves,
dropped rows, the state objects, hostile headers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import TEXT, get_int_model, with_meta
from hypothesis import given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import Compressor, Decompressor, core
from pyllmcodec.constants import CM_MAX_LONG_TABLE_BITS
from pyllmcodec.container import ArchiveIndex, cm_table_bits, parse_header
from pyllmcodec.errors import FormatError
from pyllmcodec.scheduler import CmChain, cm_groups

RND = bytes(np.random.default_rng(11).integers(0, 256, 2000, dtype=np.uint8))
#: several waves of 4 rows x 128 bytes, repeating across waves (what the long mode learns)
DATA = TEXT[:4000]


def _comp(**kw) -> Compressor:
    kw.setdefault("chunk_size", 128)
    kw.setdefault("batch_size", 4)
    return Compressor(get_int_model(), **kw)


def _dec() -> Decompressor:
    return Decompressor(get_int_model())


def test_the_header_records_the_period_and_later_waves_learn_from_earlier_ones():
    plain = _comp().compress(DATA)
    long2, long_all = _comp(long=2).compress(DATA), _comp(long=True).compress(DATA)
    assert parse_header(long2).meta["cm"]["long"] == 2 and parse_header(long_all).meta["cm"]["long"] == 16
    assert "long" not in parse_header(plain).meta["cm"]
    assert len(ArchiveIndex(long_all).blocks) == 8  # 31 chunks in 8 waves: 4 groups of 2, or one of 16
    # the text repeats from wave to wave: carrying the state pays, more so across longer groups
    assert len(long_all) < len(long2) < len(plain)
    assert len(long_all) < 0.9 * len(plain)
    for blob in (long2, long_all):
        assert _dec().decompress(blob) == DATA
        assert pyllmcodec.decompress(blob, model=get_int_model()) == DATA


def test_every_decoder_path_reads_it():
    blob = _comp(long=3).compress(DATA)
    dec = _dec()
    assert dec.decompress_batch([blob, blob]) == [DATA, DATA]
    d = dec.decompressobj()
    assert b"".join(d.decompress(blob[i : i + 700]) for i in range(0, len(blob), 700)) == DATA and d.eof
    assert b"".join(dec.read_to_iter(io.BytesIO(blob), read_size=333)) == DATA
    out = io.BytesIO()
    dec.copy_stream(io.BytesIO(blob), out)
    assert out.getvalue() == DATA
    with pyllmcodec.open(io.BytesIO(blob), model=get_int_model()) as f:
        assert f.read() == DATA
        for pos in (3900, 130, 1700, 0, 2600):  # seeks into every group, backwards too
            f.seek(pos)
            assert f.read(150) == DATA[pos : pos + 150]


def test_random_access_decodes_from_the_start_of_the_group():
    blob = _comp(long=2).compress(DATA)
    dec = _dec()
    n = ArchiveIndex(blob).n_chunks
    for start, stop in [(0, 1), (5, 6), (9, 10), (7, 17), (30, 31), (0, n), (4, 4)]:
        assert dec.decompress_chunks(blob, start, stop) == DATA[128 * start : min(128 * stop, len(DATA))]
    # it runs the group's earlier blocks: chunk 13 (block 3, group 1) decodes blocks 2 and 3
    seen = []
    real = Decompressor.decode_block

    def spy(self, header, block, payloads, progress=None, **kw):
        seen.append(kw["index"])
        return real(self, header, block, payloads, progress, **kw)

    Decompressor.decode_block = spy  # type: ignore[method-assign]
    try:
        assert dec.decompress_chunk(blob, 13) == DATA[13 * 128 : 14 * 128]
    finally:
        Decompressor.decode_block = real  # type: ignore[method-assign]
    assert seen == [2, 3]


def test_streaming_writers_write_the_same_archive():
    comp = _comp(long=2)
    one = comp.compress(DATA)
    obj = comp.compressobj(size=len(DATA))
    assert obj.compress(DATA[:1000]) + obj.compress(DATA[1000:]) + obj.flush() == one
    out = io.BytesIO()
    comp.copy_stream(io.BytesIO(DATA), out, size=len(DATA))
    assert out.getvalue() == one
    # flushed mid-stream: other waves, the same bytes back
    obj = comp.compressobj()
    blob = obj.compress(DATA[:700]) + obj.flush("block") + obj.compress(DATA[700:]) + obj.flush()
    assert _dec().decompress(blob) == DATA


def test_archives_sharing_waves_each_keep_their_own_chain():
    comp = _comp(chunk_size=64, batch_size=4, long=2)
    bufs = [TEXT[:700], TEXT[700:760], b"", TEXT[1000:1900], RND[:300], TEXT[:520]]
    blobs = comp.compress_batch(bufs)
    dec = _dec()
    assert [dec.decompress(b) for b in blobs] == bufs
    assert dec.decompress_batch(blobs) == bufs
    assert dec.decompress_batch(blobs[::-1]) == bufs[::-1]
    assert dec.decompress_chunks(blobs[3], 8, 14) == bufs[3][8 * 64 : 14 * 64]


def test_dropped_rows_and_verify():
    # random chunks keep another form: the wave is coded again from copies of the same states
    data = TEXT[:256] + RND[:256] + TEXT[256:768] + RND[256:384] + TEXT[768:2000]
    for fallback in ("stored", "deflate"):
        blob = _comp(long=2, fallback=fallback, verify=True).compress(data)
        methods = {c["method"] for c in pyllmcodec.info(blob, chunks=True)["chunks"]}
        assert "stored" in methods or "deflate" in methods
        assert _dec().decompress(blob) == data


@settings(max_examples=20, deadline=None)
@given(data=st.binary(max_size=1200) | st.sampled_from([TEXT[:1500], TEXT[:400] + RND[:300] + TEXT[:600]]),
       chunk=st.sampled_from([32, 100]), batch=st.integers(1, 4), period=st.integers(2, 4),
       cut=st.integers(0, 40), span=st.integers(0, 6))
def test_round_trips_and_random_access(data, chunk, batch, period, cut, span):
    blob = _comp(chunk_size=chunk, batch_size=batch, long=period).compress(data)
    dec = _dec()
    assert dec.decompress(blob) == data
    n = ArchiveIndex(blob).n_chunks
    start = min(cut, n)
    stop = min(n, start + span)
    assert dec.decompress_chunks(blob, start, stop) == data[chunk * start : chunk * stop]


def test_options_it_needs_are_checked():
    with pytest.raises(ValueError, match="long must be True, False or an int in 2"):
        _comp(long=1)
    with pytest.raises(ValueError, match="long must be"):
        _comp(long="yes")
    with pytest.raises(ValueError, match="long needs the context-mixing stage"):
        _comp(long=True, cm=False)
    with pytest.raises(ValueError, match="long needs full archives"):
        _comp(long=True, frame="compact")
    comp = _comp(long=2)
    with pytest.raises(ValueError, match="long needs full archives"):
        comp.compress_batch([TEXT[:100]], params=comp.frame_params())
    # a block of a long archive needs its chain and index
    blob = comp.compress(DATA)
    ix = ArchiveIndex(blob)
    block = ix.blocks[0]
    payloads = [ix.payload(block, k) for k in range(len(block.entries))]
    with pytest.raises(ValueError, match="long mode"):
        _dec().decode_block(ix.header, block, payloads)
    with pytest.raises(ValueError, match="long mode"):
        _dec().decode_block(ix.header, block, payloads, chain=CmChain(3), index=0)
    got = _dec().decode_block(ix.header, block, payloads, chain=CmChain(2), index=0)
    assert b"".join(got) == DATA[: 4 * 128]


def _with_cm(blob: bytes, cm: object) -> bytes:
    return with_meta(blob, cm=cm)


@pytest.mark.parametrize("long", [0, 1, -2, True, "2", 2.0, 1 << 21, None])
def test_hostile_long_values_are_refused(long):
    blob = _comp(long=2).compress(TEXT[:600])
    bad = _with_cm(blob, {"kind": "cm1", "table_bits": 12, "long": long})
    with pytest.raises(FormatError, match="cm"):
        _dec().decompress(bad)
    with pytest.raises(FormatError, match="cm"):
        pyllmcodec.info(bad)


def test_a_period_the_writer_did_not_use_fails_a_check():
    # the header says groups of 3, the archive was written in groups of 2: the
    # third wave decodes from the wrong state, which a CRC (or the stream) catches
    blob = _comp(long=2).compress(DATA)
    cm = dict(parse_header(blob).meta["cm"])
    cm["long"] = 3
    with pytest.raises(pyllmcodec.ChecksumError):
        _dec().decompress(_with_cm(blob, cm))


def test_states_copy_and_refuse_misuse():
    s = core.CmState(12)
    assert s.table_bits == 12 and s.nbytes > 36 << 12
    with pytest.raises(ValueError, match=r"table_bits must be in 10\.\.24"):
        core.CmState(25)
    with pytest.raises(ValueError, match=r"kind must be 1 \(cm1\), 2 \(cm2\) or 3 \(cm3\)"):
        core.CmState(12, kind=4)
    with pytest.raises(ValueError, match="is of kind 3, not 2"):
        core.ContextMixer(np.zeros(2, dtype=np.int64), np.array([12]), [core.CmState(12, kind=3)], kind=2)
    cm = core.ContextMixer(np.zeros(2, dtype=np.int64), np.array([12]), [s])
    assert cm.state(0) is not None
    with pytest.raises(IndexError):
        cm.state(1)
    with pytest.raises(ValueError, match="has table_bits 12, group 0 needs 13"):
        core.ContextMixer(np.zeros(2, dtype=np.int64), np.array([13]), [s])
    with pytest.raises(ValueError, match="given twice"):
        core.ContextMixer(np.array([0, 1]), np.array([12, 12]), [s, s])
    with pytest.raises(ValueError, match="2 given for 1 groups"):
        core.ContextMixer(np.zeros(2, dtype=np.int64), np.array([12]), [s, None])
    with pytest.raises(TypeError, match="CmState or None"):
        core.ContextMixer(np.zeros(2, dtype=np.int64), np.array([12]), ["x"])
    # a copy is independent: coding with the original leaves it as it was
    enc = core.BatchEncoder(2, precision=16)
    w = np.full((2, 256), 100, dtype=np.uint32)
    c = s.copy()
    cm.encode(enc, w, np.array([65, 66]))
    a = _code_with(c, w)
    b = _code_with(s.copy(), w)
    assert a != b  # s learned two bytes; its copy taken before did not
    assert a == _code_with(core.CmState(12), w)


def _code_with(state, w) -> bytes:
    enc = core.BatchEncoder(2, precision=16)
    cm = core.ContextMixer(np.zeros(2, dtype=np.int64), np.array([12]), [state])
    for _ in range(20):
        cm.encode(enc, w, np.array([65, 66]))
    return b"".join(bytes(x) for x in enc.finish())


def test_cli_long(tmp_path, monkeypatch):
    from pyllmcodec.cli import EXIT_OK, EXIT_USAGE, main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(DATA)
    m = ["--model", "test-bigram-int", "--chunk-size", "128", "--batch-size", "4"]
    assert main(["compress", *m, "-k", "--long", "2", "a.txt"]) == EXIT_OK
    assert parse_header((tmp_path / "a.txt.llmz").read_bytes()).meta["cm"]["long"] == 2
    assert main(["compress", *m, "-k", "--long", "-o", "b.llmz", "a.txt"]) == EXIT_OK
    assert parse_header((tmp_path / "b.llmz").read_bytes()).meta["cm"]["long"] == 16
    assert main(["compress", *m, "-k", "--long", "1", "-o", "c.llmz", "a.txt"]) == EXIT_USAGE
    for name in ("a.txt.llmz", "b.llmz"):
        assert main(["decompress", "-c", name]) == EXIT_OK
        assert pyllmcodec.decompress((tmp_path / name).read_bytes(), model=get_int_model()) == DATA


def test_cm3_long_tables_are_sized_by_a_period_of_waves():
    """cm3 in the long mode: a fresh state learns from up to a period of
    waves, so its tables are sized by the period's bytes (up to 2^24 slots,
    the header's cap bounding them); cm2 and the waves mode keep a wave's."""
    assert cm_table_bits(1 << 30, CM_MAX_LONG_TABLE_BITS) == 24 and cm_table_bits(1 << 30) == 22
    assert cm_groups(4, [0, 1, 2], None, [1000, 1000, 10], cap=24, reach=16, wave_size=4000)[1] == [
        cm_table_bits(2010 * 16, CM_MAX_LONG_TABLE_BITS)]
    # archives sharing a wave (compress_batch): only a group of more than half the wave is sized for
    # the period, so that B small archives do not take B large tables
    g, bits = cm_groups(4, [0, 1, 2], [7, 7, 9], [1000, 1000, 10], cap=24, reach=16, wave_size=4000)
    assert g.tolist() == [0, 0, 1, 0] and bits == [cm_table_bits(2000), cm_table_bits(10)]
    g, bits = cm_groups(4, [0, 1, 2], [7, 7, 9], [1000, 1000, 10], cap=24, reach=16, wave_size=3000)
    assert bits == [cm_table_bits(2000 * 16, CM_MAX_LONG_TABLE_BITS), cm_table_bits(10)]
    assert cm_groups(4, [0, 1], None, [1000, 1000], cap=24, wave_size=3000)[1] == [cm_table_bits(2000)]
    assert cm_groups(4, [0, 1], None, [1 << 16] * 2, cap=23, reach=16, wave_size=1 << 17)[1] == [23]
    # the writer's header: the bytes of a period of waves, at most the input's
    text = TEXT[:4000]
    long2 = parse_header(pyllmcodec.compress(text, chunk_size=48, batch_size=32, long=2)).meta["cm"]
    waves = parse_header(pyllmcodec.compress(text, chunk_size=48, batch_size=32)).meta["cm"]
    pri = {"priors": pyllmcodec.Compressor().plan.cm_priors.digest}  # the default bundle's (section 4f)
    assert long2 == {"kind": "cm3", "table_bits": cm_table_bits(2 * 48 * 32), "long": 2, **pri}
    assert waves == {"kind": "cm3", "table_bits": cm_table_bits(48 * 32), **pri}
    plan = pyllmcodec.Compressor(long=True).plan
    assert plan.for_size(10 << 20).cm_bits == 24 and plan.for_size(None).cm_bits == 24
    assert plan.for_size(5000).cm_bits == cm_table_bits(5000)
