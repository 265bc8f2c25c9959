"""pyllmcodec.arrow: a string/binary column of a pyarrow Table in one model
batch, its parameters in the field metadata, through Parquet (issue 17, part)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import textwrap

import pytest
from conftest import needs_default

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import pyllmcodec  # noqa: E402
from pyllmcodec import arrow as llmz_arrow  # noqa: E402
from pyllmcodec.arrow import (  # noqa: E402
    METADATA_KEY,
    column_metadata,
    compress_column,
    compressed_columns,
    decompress_column,
    read_parquet,
    write_parquet,
)
from pyllmcodec.constants import DEFAULT_MODEL  # noqa: E402
from pyllmcodec.frames import FrameIndex, FrameParams  # noqa: E402

pytestmark = needs_default


def records(n: int, seed: int = 7) -> list[str | None]:
    """Short JSON-ish lines, with nulls and empty strings among them."""
    rng = random.Random(seed)
    names = ["ada", "bob", "cy", "dee", "eve", "fay"]
    out: list[str | None] = []
    for i in range(n):
        if i % 7 == 3:
            out.append(None)
        elif i % 11 == 5:
            out.append("")
        else:
            out.append(json.dumps({"id": i, "user": rng.choice(names), "ok": rng.random() < 0.5}))
    return out


@pytest.fixture(scope="module")
def table():
    """Two chunks (rows 0-19, 20-39): string and large_binary columns with nulls and empty cells."""
    texts = records(40)
    blobs = [None if t is None else t.encode()[::-1] for t in texts]
    schema = pa.schema([pa.field("id", pa.int64()),
                        pa.field("text", pa.string(), metadata={b"note": b"kept"}),
                        pa.field("blob", pa.large_binary())], metadata={b"owner": b"tests"})
    t = pa.table({"id": list(range(40)), "text": texts, "blob": blobs}, schema=schema)
    return pa.concat_tables([t.slice(0, 20), t.slice(20)])


@pytest.fixture(scope="module")
def packed(table):
    return compress_column(compress_column(table, "text"), "blob")


def test_round_trip_in_memory(table, packed):
    assert packed.column_names == table.column_names
    assert packed.schema.field("text").type == pa.binary()
    assert packed.schema.field("blob").type == pa.large_binary()  # 64-bit offsets stay 64-bit
    assert packed.schema.metadata == table.schema.metadata
    assert packed.column("id").equals(table.column("id"))
    assert compressed_columns(packed) == ["text", "blob"]
    for name in ("text", "blob"):  # nulls stay nulls, every other cell is a frame
        assert packed.column(name).is_null().equals(table.column(name).is_null())
        assert packed.column(name).null_count == table.column(name).null_count > 0
    meta = column_metadata(packed.schema.field("text"))
    assert meta is not None
    assert meta["codec"] == "pyllmcodec" and meta["model"] == DEFAULT_MODEL and meta["type"] == "string"
    assert meta["writer"] == f"pyllmcodec {pyllmcodec.__version__}"
    assert FrameParams.from_dict(meta["params"]) == pyllmcodec.Compressor(DEFAULT_MODEL).frame_params()
    assert packed.schema.field("text").metadata[b"note"] == b"kept"
    assert column_metadata(packed.schema.field("blob"))["type"] == "large_binary"
    back = decompress_column(decompress_column(packed, "text"), 2)
    assert back.equals(table, check_metadata=True)
    assert back.column("text").to_pylist()[5] == ""
    # the frames are small: a JSON line of ~40 bytes costs well under its length plus 20
    frames = [f for f in packed.column("text").to_pylist() if f]
    texts = [t for t in table.column("text").to_pylist() if t]
    assert sum(map(len, frames)) < sum(map(len, texts)) + 20 * len(frames)


@pytest.mark.parametrize("typ", ["string", "large_string", "binary", "string_view", "binary_view",
                                 "fixed_size_binary"])
def test_types_come_back(typ):
    cells = [b"abcd", None, b"wxyz", b"0123"]
    if typ == "fixed_size_binary":
        arr = pa.array(cells, pa.binary(4))
    else:
        arr = pa.array(cells, pa.large_binary()).cast(getattr(pa, typ)())
    t = pa.table({"c": arr})
    packed = compress_column(t, "c")
    assert packed.column("c").null_count == 1
    back = decompress_column(packed, "c")
    assert back.schema.field("c").type == arr.type
    assert back.equals(t, check_metadata=True)


def test_output_column_keeps_the_original(table, monkeypatch):
    packed = compress_column(table, "text", output_column="text_z")
    assert packed.column_names == [*table.column_names, "text_z"]
    assert packed.column("text").equals(table.column("text"))
    out = decompress_column(packed, "text_z", output_column="text2")
    assert out.column("text2").equals(table.column("text"))
    with pytest.raises(ValueError, match="already a column"):
        decompress_column(packed, "text_z", output_column="id")
    calls = []
    monkeypatch.setattr(pyllmcodec.Compressor, "compress_batch", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="already a column"):  # refused before any model work
        compress_column(table, "text", output_column="blob")
    assert calls == []


def test_one_compress_batch_and_one_decompress_batch_for_hundreds_of_cells(monkeypatch):
    calls = {"compress": [], "decompress": []}
    real_c, real_d = pyllmcodec.Compressor.compress_batch, pyllmcodec.Decompressor.decompress_batch

    def spy_c(self, buffers, **kw):
        buffers = list(buffers)
        calls["compress"].append(len(buffers))
        return real_c(self, buffers, **kw)

    def spy_d(self, blobs, **kw):
        blobs = list(blobs)
        calls["decompress"].append(len(blobs))
        return real_d(self, blobs, **kw)

    monkeypatch.setattr(pyllmcodec.Compressor, "compress_batch", spy_c)
    monkeypatch.setattr(pyllmcodec.Decompressor, "decompress_batch", spy_d)
    cells = [None if i % 10 == 0 else f"#{i}:{i * 37 % 101}" for i in range(300)]
    t = pa.table({"c": cells})
    packed = compress_column(t, "c")
    assert calls["compress"] == [270]
    assert decompress_column(packed, "c").equals(t)
    assert calls["decompress"] == [270]
    # bounded batches: max_batch_bytes splits the column, the metadata says how, decoding follows
    calls["compress"].clear()
    calls["decompress"].clear()
    packed = compress_column(t, "c", max_batch_bytes=1000)
    assert len(calls["compress"]) > 1 and sum(calls["compress"]) == 270
    assert column_metadata(packed.schema.field("c"))["max_batch_bytes"] == 1000
    assert decompress_column(packed, "c").equals(t)
    assert calls["decompress"] == calls["compress"]  # the writer's batches, so its waves


def test_parquet_round_trip_in_a_new_process(table, tmp_path):
    path = tmp_path / "t.parquet"
    tags = pa.array([["a", "b"], None] * 20, pa.list_(pa.field("element", pa.string())))
    table = table.append_column("tags", tags)  # a nested column: per-column options take its leaf path
    written = write_parquet(table, path, ["text", "blob"], parquet_options={"compression": "gzip"})
    assert compressed_columns(written) == ["text", "blob"]
    md = pq.read_metadata(path)
    chunks = {md.row_group(0).column(j).path_in_schema: md.row_group(0).column(j) for j in range(md.num_columns)}
    assert {p: c.compression for p, c in chunks.items()} == {"id": "GZIP", "text": "ZSTD", "blob": "ZSTD",
                                                            "tags.list.element": "GZIP"}
    for p, c in chunks.items():  # the frames: no dictionary encoding, no statistics; the others as usual
        packed_column = p in ("text", "blob")
        assert c.is_stats_set != packed_column
        assert any("DICTIONARY" in e for e in c.encodings) != packed_column
    assert read_parquet(path).equals(table, check_metadata=True)
    raw = read_parquet(path, decompress=False)  # the field metadata survives the file
    assert raw.equals(written, check_metadata=True)
    assert read_parquet(path, columns=["text"]).column("text").equals(table.column("text"))
    out = tmp_path / "plain.parquet"
    code = textwrap.dedent(f"""
        import pyarrow.parquet as pq
        from pyllmcodec.arrow import read_parquet
        t = read_parquet({str(path)!r})
        pq.write_table(t, {str(out)!r}, compression="none")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert pq.read_table(out).equals(table, check_metadata=True)
    write_parquet(table, path, "text", frames_compression="none")
    assert pq.read_metadata(path).row_group(0).column(1).compression == "UNCOMPRESSED"
    assert read_parquet(path).equals(table, check_metadata=True)


def _flip_payload(frame: bytes, params: FrameParams) -> bytes:
    """``frame`` with a byte in the middle of its (last) payload flipped."""
    ix = FrameIndex(frame, params)
    n = sum(e.coded_len for b in ix.blocks for e in b.entries)
    buf = bytearray(frame)
    buf[len(buf) - n // 2 - 1] ^= 0x24
    return bytes(buf)


def _with_cell(packed, name: str, row: int, frame: bytes):
    i = packed.column_names.index(name)
    cells = packed.column(i).to_pylist()
    cells[row] = frame
    col = pa.chunked_array([pa.array(cells[:20], packed.schema.field(i).type),
                            pa.array(cells[20:], packed.schema.field(i).type)])
    return packed.set_column(i, packed.schema.field(i), col)


@pytest.mark.parametrize("row", [2, 33])
def test_corrupt_cell_names_its_row(table, packed, row):
    params = FrameParams.from_dict(column_metadata(packed.schema.field("text"))["params"])
    frame = packed.column("text").to_pylist()[row]
    bad = _with_cell(packed, "text", row, _flip_payload(frame, params))
    with pytest.raises(pyllmcodec.ChecksumError, match=rf"^column 'text', row {row}: "):
        decompress_column(bad, "text")
    bad = _with_cell(packed, "text", row, frame[:-1])  # cut short: its index says so, before any model work
    with pytest.raises(pyllmcodec.FormatError, match=rf"^column 'text', row {row}: .*truncated"):
        decompress_column(bad, "text")
    assert decompress_column(bad, "blob").column("blob").equals(table.column("blob"))  # the other column is fine


def test_wrong_model_is_a_clean_codec_error(packed):
    with pytest.raises(pyllmcodec.CodecError, match="column 'text'"):
        decompress_column(packed, "text", model="test-bigram")
    meta = column_metadata(packed.schema.field("text"))
    meta["model"] = "no-such-model"
    field = packed.schema.field("text").with_metadata({METADATA_KEY: json.dumps(meta).encode()})
    renamed = packed.set_column(1, field, packed.column("text"))
    with pytest.raises(pyllmcodec.ModelError, match=r"'no-such-model'.*pass model="):
        decompress_column(renamed, "text")


def test_other_parameters_fail_the_checksums(packed):
    meta = column_metadata(packed.schema.field("text"))
    meta["params"]["precision"] -= 1  # frames read with other params fail their index CRC: never wrong bytes
    field = packed.schema.field("text").with_metadata({METADATA_KEY: json.dumps(meta).encode()})
    with pytest.raises(pyllmcodec.FormatError, match=r"^column 'text', row 0: .*checksum"):
        decompress_column(packed.set_column(1, field, packed.column("text")), "text")


def test_dictionary_travels_in_the_metadata():
    texts = [t for t in records(60, seed=3) if t]
    dic = pyllmcodec.train_dictionary([t.encode() for t in texts], size=128)
    t = pa.table({"j": texts})
    packed = compress_column(t, "j", dictionary=dic)
    meta = column_metadata(packed.schema.field("j"))
    assert base64.b64decode(meta["dictionary"]) == dic
    assert decompress_column(packed, "j").equals(t)
    plain = compress_column(t, "j")
    assert sum(map(len, packed.column("j").to_pylist())) < sum(map(len, plain.column("j").to_pylist()))
    meta["dictionary"] = base64.b64encode(dic[::-1]).decode()
    field = packed.schema.field("j").with_metadata({METADATA_KEY: json.dumps(meta).encode()})
    with pytest.raises(pyllmcodec.CodecError, match="column 'j'"):
        decompress_column(packed.set_column(0, field, packed.column("j")), "j")


def test_slices_filters_and_empty_columns_decode(table, packed):
    part = packed.slice(15, 10)
    assert decompress_column(part, "text").column("text").equals(table.slice(15, 10).column("text"))
    mask = pa.array([i % 3 == 0 for i in range(40)])
    assert decompress_column(packed.filter(mask), "blob").column("blob").equals(table.filter(mask).column("blob"))
    for t in (pa.table({"c": pa.array([], pa.string())}), pa.table({"c": pa.array([None, None], pa.string())})):
        assert decompress_column(compress_column(t, "c"), "c").equals(t, check_metadata=True)


def test_misuse_and_missing_metadata(table, packed):
    with pytest.raises(pyllmcodec.FormatError, match="no pyllmcodec metadata"):
        decompress_column(table, "text")
    with pytest.raises(TypeError, match="int64"):
        compress_column(table, "id")
    with pytest.raises(KeyError):
        compress_column(table, "nope")
    with pytest.raises(ValueError, match="already compressed"):
        compress_column(packed, "text")
    with pytest.raises(ValueError, match="max_batch_bytes"):
        compress_column(table, "text", max_batch_bytes=0)
    with pytest.raises(pyllmcodec.OutputLimitError, match=r"^column 'text', row 0: .*max_output_size=10"):
        decompress_column(packed, "text", max_output_size=10)
    for bad in (b"not json", json.dumps({"codec": "zstd", "version": 1}).encode(),
                json.dumps({**column_metadata(packed.schema.field("text")), "version": 99}).encode(),
                json.dumps({**column_metadata(packed.schema.field("text")), "type": "int64"}).encode(),
                json.dumps({**column_metadata(packed.schema.field("text")), "params": {"x": 1}}).encode()):
        field = packed.schema.field("text").with_metadata({METADATA_KEY: bad})
        with pytest.raises(pyllmcodec.FormatError, match="column 'text'"):
            decompress_column(packed.set_column(1, field, packed.column("text")), "text")
    assert llmz_arrow.compressed_columns(table.schema) == []
