"""pyllmcodec as a Zarr v3 codec (issue 17, part): real arrays on disk,
headerless frames whose params live in zarr.json, one model batch per batch
of chunks, reading in a new process, corrupt chunks and wrong params."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import zlib
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, TEXT, get_model, needs_default

zarr = pytest.importorskip("zarr", minversion="3.1")

import pyllmcodec  # noqa: E402
from pyllmcodec.constants import DEFAULT_MODEL  # noqa: E402
from pyllmcodec.zarr import CODEC_NAME, LLMZCodec  # noqa: E402

pytestmark = needs_default

#: a few KB of text: the default model codes ~12 KB/s on a small machine
TEXT_1D = np.frombuffer(TEXT[:2400], dtype=np.uint8)


def small_ints() -> np.ndarray:
    """A 2-D array of small ints with structure (a slow ramp plus a pattern)."""
    r, c = np.mgrid[0:24, 0:40]
    return ((r // 3 + c // 8 + (r * c) % 3) % 10).astype(np.int16)


@pytest.fixture
def spy(monkeypatch):
    """Records the number of buffers of every compress_batch / decompress_batch call."""
    calls: dict[str, list[int]] = {"enc": [], "dec": []}
    enc, dec = pyllmcodec.Compressor.compress_batch, pyllmcodec.Decompressor.decompress_batch

    def compress_batch(self, buffers, **kw):
        buffers = list(buffers)
        calls["enc"].append(len(buffers))
        return enc(self, buffers, **kw)

    def decompress_batch(self, blobs, **kw):
        blobs = list(blobs)
        calls["dec"].append(len(blobs))
        return dec(self, blobs, **kw)

    monkeypatch.setattr(pyllmcodec.Compressor, "compress_batch", compress_batch)
    monkeypatch.setattr(pyllmcodec.Decompressor, "decompress_batch", decompress_batch)
    return calls


def make(path: Path, data: np.ndarray, chunks: tuple[int, ...], codec: LLMZCodec | None = None):
    a = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
                          compressors=[codec or LLMZCodec()], fill_value=0)
    a[...] = data
    return a


def chunk_files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "c").rglob("*") if p.is_file())


def codec_meta(path: Path) -> dict:
    (codec,) = [c for c in json.loads((path / "zarr.json").read_text())["codecs"] if c["name"] == CODEC_NAME]
    return codec


# ---------------------------------------------------------------- round trips


def test_text_array_round_trip_params_in_metadata_one_batch(tmp_path, spy):
    path = tmp_path / "text.zarr"
    with zarr.config.set({"codec_pipeline.batch_size": 16}):  # zarr hands the codec all 6 chunks at once
        make(path, TEXT_1D, (400,))
    assert spy["enc"] == [6]  # the 6 chunks are ONE model batch
    files = chunk_files(path)
    assert len(files) == 6
    assert sum(f.stat().st_size for f in files) < TEXT_1D.nbytes / 2  # it compresses (headerless frames)

    meta = codec_meta(path)
    want = pyllmcodec.Compressor(DEFAULT_MODEL).frame_params().to_dict()
    assert meta["configuration"]["params"] == want  # the params are in zarr.json, once
    assert meta["configuration"]["model"] == DEFAULT_MODEL
    assert pyllmcodec.FrameParams.from_dict(meta["configuration"]["params"]).model_id.hex() == want["model_id"]

    with zarr.config.set({"codec_pipeline.batch_size": 16}):
        back = zarr.open_array(str(path))[:]
    assert spy["dec"] == [6]
    assert back.tobytes() == TEXT_1D.tobytes()
    a = zarr.open_array(str(path))
    assert a[555:1234].tobytes() == TEXT_1D[555:1234].tobytes()  # a selection over chunk edges


def test_default_pipeline_batches_are_merged(tmp_path, spy):
    """With zarr's defaults (one chunk per codec call, 10 calls in flight),
    the calls in flight together still make one model batch."""
    path = tmp_path / "merged.zarr"
    data = small_ints()
    make(path, data, (8, 20))  # 6 chunks of 320 bytes
    assert sum(spy["enc"]) == 6 and max(spy["enc"]) > 1, spy["enc"]
    back = zarr.open_array(str(path))[...]
    assert sum(spy["dec"]) == 6 and max(spy["dec"]) > 1, spy["dec"]
    assert back.dtype == np.int16 and (back == data).all()
    a = zarr.open_array(str(path))  # one codec instance, read from several threads at once
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda r: a[r : r + 6], range(0, 24, 6)))
    assert (np.concatenate(parts) == data).all()


def test_reopen_read_and_write_in_a_new_process(tmp_path):
    """Read in a fresh interpreter (the codec found through the entry point
    when installed, else by importing pyllmcodec.zarr), rewrite one chunk
    there (a Compressor made from the stored params), read it back here."""
    text, ints = tmp_path / "text.zarr", tmp_path / "ints.zarr"
    make(text, TEXT_1D, (300,))
    make(ints, small_ints(), (12, 20))
    np.save(tmp_path / "text.npy", TEXT_1D)
    np.save(tmp_path / "ints.npy", small_ints())
    script = textwrap.dedent(f"""
        import sys
        from importlib.metadata import entry_points
        import numpy as np
        import zarr
        if not entry_points(group="zarr.codecs", name={CODEC_NAME!r}):
            import pyllmcodec.zarr  # not installed with its entry point: register by importing
        root = sys.argv[1]
        for name in ("text", "ints"):
            a = zarr.open_array(f"{{root}}/{{name}}.zarr", mode="r+")
            want = np.load(f"{{root}}/{{name}}.npy")
            got = a[...]
            assert got.dtype == want.dtype and (got == want).all(), name
        a = zarr.open_array(f"{{root}}/text.zarr", mode="r+")
        a[300:600] = np.frombuffer(b"written in the child process. " * 10, dtype=np.uint8)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "ok"
    back = zarr.open_array(str(text))[:]
    want = TEXT_1D.copy()
    want[300:600] = np.frombuffer(b"written in the child process. " * 10, dtype=np.uint8)
    assert back.tobytes() == want.tobytes()


def test_absent_and_empty_chunks(tmp_path):
    """Absent chunks (None in zarr's batches) read as the fill value; an
    all-fill chunk is not stored; the codec sees None entries in both ways."""
    path = tmp_path / "sparse.zarr"
    a = zarr.create_array(str(path), shape=(1500,), chunks=(300,), dtype="uint8", fill_value=0,
                          compressors=[LLMZCodec()])
    data = np.zeros(1500, dtype=np.uint8)
    data[0:300] = TEXT_1D[:300]
    data[900:1200] = TEXT_1D[300:600]
    with zarr.config.set({"codec_pipeline.batch_size": 8}):
        a[:] = data  # chunks 1, 2 and 4 are all fill: not stored
        assert len(chunk_files(path)) == 2
        assert zarr.open_array(str(path))[:].tobytes() == data.tobytes()
    codec = zarr.open_array(str(path)).metadata.codecs[-1]
    assert isinstance(codec, LLMZCodec)
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    buf = default_buffer_prototype().buffer.from_bytes(b"hello zarr")
    spec = _chunk_spec(zarr.open_array(str(path)))
    enc = list(asyncio.run(codec.encode([(None, spec), (buf, spec), (None, spec)])))
    assert enc[0] is None and enc[2] is None and enc[1] is not None
    dec = list(asyncio.run(codec.decode([(None, spec), (enc[1], spec)])))
    assert dec[0] is None and dec[1].to_bytes() == b"hello zarr"
    assert list(asyncio.run(codec.decode([(None, spec)]))) == [None]


def _chunk_spec(a):
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype

    md = a.metadata
    return ArraySpec(shape=md.chunk_grid.chunk_shape, dtype=md.data_type, fill_value=md.fill_value,
                     config=ArrayConfig.from_dict({}), prototype=default_buffer_prototype())


# ---------------------------------------------------------------- the codec object


def test_registration_config_and_pickle():
    from zarr.registry import get_codec_class, register_codec

    register_codec(CODEC_NAME, LLMZCodec)  # what importing pyllmcodec.zarr did: idempotent
    assert get_codec_class(CODEC_NAME) is LLMZCodec
    params = pyllmcodec.Compressor(DEFAULT_MODEL, batch_size=8).frame_params()
    c = LLMZCodec(batch_size=8, params=params)
    d = c.to_dict()
    assert d == {"name": CODEC_NAME, "configuration": {"model": DEFAULT_MODEL, "batch_size": 8,
                                                       "params": params.to_dict()}}
    json.dumps(d)
    again = get_codec_class(CODEC_NAME).from_dict(d)
    assert again == c and hash(again) == hash(c) and again.params == params
    assert pickle.loads(pickle.dumps(c)) == c
    assert LLMZCodec(level=3).to_dict()["configuration"] == {"model": DEFAULT_MODEL, "level": 3, "batch_size": 32}
    assert LLMZCodec(params=params.to_dict()).params == params
    with pytest.raises(ValueError, match="unknown configuration keys"):
        LLMZCodec.from_dict({"name": CODEC_NAME, "configuration": {"model": "default", "colour": "red"}})
    with pytest.raises(pyllmcodec.FormatError):
        LLMZCodec(params={"model_id": "00"})
    with pytest.raises(TypeError):
        LLMZCodec(model=get_model())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LLMZCodec.from_dict({"name": "zstd", "configuration": {}})
    with pytest.raises(NotImplementedError):
        c.compute_encoded_size(100, None)  # type: ignore[arg-type]


def test_fork_resets_the_runtime_state():
    import pyllmcodec.zarr as pz

    c = LLMZCodec()
    st = c._state
    st.lock.acquire()  # as if another thread held them when the process forked
    st.decode._busy = True
    st.decode._pending.append(([b"x"], None))
    pz._after_fork()
    assert not st.lock.locked() and not st.decode._busy and not st.decode._pending


def test_entry_point():
    eps = entry_points(group="zarr.codecs", name=CODEC_NAME)
    if not eps:
        pytest.skip("pyllmcodec is installed without its zarr.codecs entry point (reinstall it)")
    (ep,) = eps
    assert ep.load() is LLMZCodec


# ---------------------------------------------------------------- bad input


def test_corrupt_chunk_names_it(tmp_path):
    path = tmp_path / "corrupt.zarr"
    make(path, TEXT_1D[:1600], (400,))
    files = chunk_files(path)
    victim = files[2]
    raw = bytearray(victim.read_bytes())
    raw[-5] ^= 0x20  # a payload byte: found by the chunk's CRC-32 after decoding
    victim.write_bytes(bytes(raw))
    crc = f"{zlib.crc32(raw):08x}"
    a = zarr.open_array(str(path))
    assert a[:400].tobytes() == TEXT_1D[:400].tobytes()  # the other chunks still read
    for size in (1, 8):  # one chunk per codec call (merged), and all chunks in one call
        with zarr.config.set({"codec_pipeline.batch_size": size}):
            with pytest.raises(pyllmcodec.ChecksumError, match=f"{CODEC_NAME}: .*{len(raw)} bytes, CRC-32 {crc}"):
                zarr.open_array(str(path))[:]
    raw[1] ^= 0x01  # its index: found before any model work
    victim.write_bytes(bytes(raw))
    with pytest.raises(pyllmcodec.FormatError, match=f"CRC-32 {zlib.crc32(raw):08x}"):
        zarr.open_array(str(path))[800:1200]
    victim.write_bytes(b"")
    with pytest.raises(pyllmcodec.CodecError):
        zarr.open_array(str(path))[800:1200]


@pytest.mark.parametrize("change", [
    {"params": {"model_id": "11" * 8}},  # another model
    {"params": {"probe": "22" * 8}},  # other numerics
    {"params": {"batch_size": 16, "probe_batch": 16}},  # other options
    {"params": {"chunk_size": 4096}},
    {"params": {"mixer": False}},
    {"model": "test-bigram"},  # another model by name
])
def test_wrong_params_fail_cleanly(tmp_path, change):
    path = tmp_path / "w.zarr"
    make(path, TEXT_1D[:800], (400,))
    meta = json.loads((path / "zarr.json").read_text())
    (conf,) = [c["configuration"] for c in meta["codecs"] if c["name"] == CODEC_NAME]
    for k, v in change.items():
        conf[k].update(v) if isinstance(v, dict) else conf.update({k: v})
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(pyllmcodec.CodecError, match=CODEC_NAME):
        zarr.open_array(str(path))[:]


def test_other_numerics_on_this_machine(tmp_path):
    """The same model id with other numerics (the probe digest differs):
    NumericsMismatchError on reading, ValueError on writing -- never wrong bytes."""
    from pyllmcodec.models import clear_cache, register_model

    path = tmp_path / "n.zarr"
    data = np.frombuffer(CORPUS[:600], dtype=np.uint8)
    make(path, data, (200,), LLMZCodec("test-bigram", chunk_size=256, batch_size=4))
    assert zarr.open_array(str(path))[:].tobytes() == data.tobytes()
    register_model("test-bigram", lambda **_: get_model(variant=1), replace=True)
    clear_cache()
    try:
        with pytest.raises(pyllmcodec.NumericsMismatchError, match=CODEC_NAME):
            zarr.open_array(str(path))[:]
        with pytest.raises(ValueError, match="not this Compressor's"):
            zarr.open_array(str(path), mode="r+")[0:200] = data[:200]
    finally:
        register_model("test-bigram", lambda **_: get_model(), replace=True)
        clear_cache()
