"""pyllmcodec.ray: a column of a Ray Data Dataset compressed and decompressed
through map_batches actors, on a local Ray instance (2 CPUs).

Ray's workers are separate processes: the test models that conftest.py
registers exist only in this one, so these tests use the shipped "default"
model (loaded by name in every actor) on ~25 KB of synthetic JSON lines.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import needs_default

import pyllmcodec
from pyllmcodec import ChecksumError, CodecError, Compressor, Decompressor, FormatError
from pyllmcodec.constants import DEFAULT_MODEL

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
llmz_ray = pytest.importorskip("pyllmcodec.ray")

pytestmark = [needs_default, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")]

N = 300


def records(n: int = N, seed: int = 17) -> list[str]:
    """``n`` JSON lines of ~80 bytes (some non-ASCII), from a seeded generator."""
    rng = random.Random(seed)
    words = ("request served from cache user logged in timeout retry disk full job queued "
             "Zürich naïve café ok failed").split()
    return [
        json.dumps({"id": i, "level": rng.choice(["INFO", "WARN", "ERROR"]),
                    "msg": " ".join(rng.choice(words) for _ in range(rng.randint(2, 8))),
                    "ms": rng.randint(1, 5000)}, ensure_ascii=False)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def rows() -> list[str]:
    return records()


@pytest.fixture(scope="module")
def blobs_col(rows) -> list[bytes | None]:
    """A binary column: short byte strings (not UTF-8), every 25th one null."""
    return [None if i % 25 == 7 else b"\xff\x00" + r[-24:].encode() for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def compressed(ray_local, rows, blobs_col):
    """Both columns compressed with ONE batch each (batch_size = the whole column)."""
    table = pa.table({"id": list(range(N)), "line": pa.array(rows, pa.string()),
                      "blob": pa.array(blobs_col, pa.binary())})
    ds = ray.data.from_arrow(table)
    ds = llmz_ray.compress_column(ds, "line", output_column="line_z", batch_size=N)
    ds = llmz_ray.compress_column(ds, "blob", batch_size=N)  # replaces the column
    return ds.materialize()


def test_import_pyllmcodec_does_not_import_ray():
    code = ("import sys, pyllmcodec; pyllmcodec.Compressor; pyllmcodec.decompress; "
            "assert 'ray' not in sys.modules and 'pyllmcodec.ray' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_module_imports_the_real_ray():
    assert llmz_ray.ray.__name__ == "ray" and hasattr(llmz_ray.ray, "data")


def test_compress_column_schema_and_identity(compressed, rows, blobs_col):
    schema = compressed.schema().base_schema
    assert schema.field("line").type == pa.string()
    assert schema.field("line_z").type == pa.binary()
    assert schema.field("line_z").metadata == {llmz_ray.TYPE_KEY: b"string"}
    assert schema.field("blob").type == pa.binary()
    assert schema.field("blob").metadata == {llmz_ray.TYPE_KEY: b"binary"}
    got = sorted(compressed.take_all(), key=lambda r: r["id"])
    line_z = [r["line_z"] for r in got]
    # one map_batches batch = one compress_batch call: the same bytes as in one process
    assert line_z == Compressor(DEFAULT_MODEL).compress_batch([r.encode() for r in rows])
    present = [b for b in blobs_col if b is not None]
    blob_z = [r["blob"] for r in got]
    assert [b is None for b in blob_z] == [b is None for b in blobs_col]
    assert [b for b in blob_z if b is not None] == Compressor(DEFAULT_MODEL).compress_batch(present)
    # each cell is a complete archive that plain pyllmcodec.decompress reads
    for i in (0, 1, 150, N - 1):
        assert pyllmcodec.decompress(line_z[i]) == rows[i].encode()


def test_round_trip_keeps_the_column_types(compressed, rows, blobs_col):
    ds = llmz_ray.decompress_column(compressed, "line_z", output_column="line_back", batch_size=128)
    ds = llmz_ray.decompress_column(ds, "blob", batch_size=128)
    schema = ds.schema().base_schema
    assert schema.field("line_back").type == pa.string()  # the metadata said str
    assert schema.field("blob").type == pa.binary()
    got = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["line_back"] for r in got] == rows
    assert [r["blob"] for r in got] == blobs_col


def test_many_blocks_small_batches_and_as_str(ray_local, rows):
    """Several blocks and batches; as_str=False returns the UTF-8 bytes;
    a column that lost its metadata comes back as bytes unless as_str=True."""
    part = rows[:60]
    ds = ray.data.from_items([{"id": i, "line": r} for i, r in enumerate(part)], override_num_blocks=3)
    z = llmz_ray.compress_column(ds, "line", output_column="z", batch_size=16).materialize()
    raw = llmz_ray.decompress_column(z, "z", output_column="b", as_str=False).select_columns(["id", "z", "b"])
    got = sorted(raw.take_all(), key=lambda r: r["id"])
    assert [r["b"] for r in got] == [r.encode() for r in part]
    bare = ray.data.from_arrow(pa.table({"id": [r["id"] for r in got],
                                         "z": pa.array([r["z"] for r in got], pa.binary())}))
    assert sorted(llmz_ray.decompress_column(bare, "z").take_all(), key=lambda r: r["id"])[5]["z"] == part[5].encode()
    back = sorted(llmz_ray.decompress_column(bare, "z", as_str=True).take_all(), key=lambda r: r["id"])
    assert [r["z"] for r in back] == part


def corrupt_archives(n: int = 40, bad_row: int = 23) -> tuple[list[bytes], bytes, type[CodecError]]:
    """``n`` archives from one batch, and archive ``bad_row`` with one payload
    byte flipped (the first flip, from the end of the header on, that the
    single-process Decompressor rejects with a ChecksumError)."""
    data = [r.encode() for r in records(n, seed=5)]
    blobs = Compressor(DEFAULT_MODEL).compress_batch(data)
    blob = blobs[bad_row]
    start = pyllmcodec.info(blob)["layout"]["header"]
    for pos in range(start, len(blob)):
        b = bytearray(blob)
        b[pos] ^= 0x10
        try:
            Decompressor().decompress(bytes(b))
        except ChecksumError:
            return blobs, bytes(b), ChecksumError
        except CodecError:
            continue
    raise AssertionError("no single-byte flip gave a ChecksumError")


def test_corrupt_cell_raises_the_codec_error_naming_the_row(ray_local):
    blobs, bad, cls = corrupt_archives()
    cells = list(blobs)
    cells[23] = bad
    ds = ray.data.from_arrow(pa.table({"key": [f"k{i}" for i in range(40)], "z": pa.array(cells, pa.binary())}))
    # Ray Data's default: a UserCodeException carrying the codec's error as text; codec_error rebuilds it
    with pytest.raises(Exception) as info:
        llmz_ray.decompress_column(ds, "z", key_column="key").take_all()
    err = llmz_ray.codec_error(info.value)
    assert isinstance(err, cls), info.value
    assert "row 23 of a batch of 40 (key='k23')" in str(err)
    # with raise_original_map_exception, Ray raises an instance of the codec's class itself
    # (a Dataset copies the DataContext when it is made: set the flag first)
    cells[23] = b"LLMZ? not an archive"
    ctx = ray.data.DataContext.get_current()
    ctx.raise_original_map_exception = True
    try:
        ds = ray.data.from_arrow(pa.table({"key": [f"k{i}" for i in range(40)], "z": pa.array(cells, pa.binary())}))
        with pytest.raises(FormatError, match=r"column 'z', row 23 of a batch of 40"):
            llmz_ray.decompress_column(ds, "z").take_all()
    finally:
        ctx.raise_original_map_exception = False


def test_arguments_are_checked_before_any_work(ray_local):
    ds = ray.data.from_items([{"a": "x"}])
    with pytest.raises(TypeError, match="registered model name"):
        llmz_ray.compress_column(ds, "a", model=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model="):
        llmz_ray.compress_column(ds, "a", compressor_options={"model": "default"})


def test_codec_error_finds_nothing_in_other_errors():
    assert llmz_ray.codec_error(ValueError("x")) is None
    err = ChecksumError("chunk 0")
    assert llmz_ray.codec_error(RuntimeError("wrapped")) is None
    try:
        raise RuntimeError("outer") from err
    except RuntimeError as exc:
        assert llmz_ray.codec_error(exc) is err
