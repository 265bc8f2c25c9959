"""Short fuzz runs, run in CI: the seeded random-mutation engine of
``fuzz/run.py`` over every target (container parsers, ``decompress``,
``open().read()``, ``info``, the core decoder), a few seconds each.  Set
PYLLMCODEC_FUZZ=1 for runs 20 times longer; the long coverage-guided run is
``python -m fuzz.run`` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(REPO)  # for fuzz/

import pyllmcodec
from pyllmcodec.constants import FRAME_MAGIC, MAGIC
from fuzz import corpus, targets
from fuzz.mutate import build_loose, fix_checksums, mutate, parse_loose
from fuzz.run import run_random

SCALE = 20 if os.environ.get("PYLLMCODEC_FUZZ") else 1


@pytest.fixture(scope="module")
def seeds():
    targets.setup()
    return [b for _, b in corpus.seeds()]


@pytest.fixture(scope="module")
def core_seeds():
    targets.setup()
    return [b for _, b in corpus.core_seeds()]


def _fail_on(res):
    if res["findings"]:
        kind, data, tb = res["findings"][0]
        pytest.fail(f"{len(res['findings'])} findings; first ({kind}, {len(data)} bytes {data[:64]!r}...):\n{tb}")


@pytest.mark.parametrize("target,runs,seed", [("container", 2500, 11), ("archive", 1200, 12)])
def test_short_fuzz_run(seeds, target, runs, seed):
    _fail_on(run_random(targets.TARGETS[target], seeds, runs * SCALE, seed, timeout=20, quiet=True))


def test_short_fuzz_run_core(core_seeds):
    _fail_on(run_random(targets.core_decoder, core_seeds, 400 * SCALE, 13, timeout=20, quiet=True))


def test_seeds_decode_the_same_through_every_entry_point(seeds):
    kinds = set()
    for name, blob in corpus.seeds():
        targets.archive(blob)
        if name.startswith("headerless"):  # decodes only with its params
            kinds.add("headerless")
            out = pyllmcodec.Decompressor().decompress(blob, params=targets.params())
            with pytest.raises(pyllmcodec.FormatError):
                pyllmcodec.decompress(blob)
            assert out
            continue
        kinds.add("compact" if blob.startswith(FRAME_MAGIC) else "full")
        kw: dict = {"dictionary": targets.FUZZ_DICTIONARY}
        if blob.startswith(FRAME_MAGIC):  # a frame names its model by id: the name, in case it left the cache
            kw["model"] = {"compact-segments": "test-bigram-ctx32", "compact-segments-mixer": "test-bigram-mixer",
                           "compact-cm": "test-bigram-int", "compact-tokens-wave": "test-tokens-wave"}.get(
                               name, "test-bigram")
        out = pyllmcodec.decompress(blob, **kw)
        with pyllmcodec.open(io.BytesIO(blob), **kw) as f:
            assert f.read() == out
        assert pyllmcodec.info(blob)["size"] == len(out)
    assert kinds == {"full", "compact", "headerless"}


def test_both_entry_layouts_decode_to_the_same_bytes():
    named = dict(corpus.seeds())
    first = [n for n in named if n.endswith("-first-layout")]
    assert len(first) == 8
    for n in first:
        old, new = named[n], named[n.removesuffix("-first-layout")]
        assert old[len(old) - 16 :] != new[len(new) - 16 :] and len(old) > len(new)  # really the other layout
        assert pyllmcodec.decompress(old) == pyllmcodec.decompress(new)


def test_lenient_builder_reproduces_valid_archives_exactly(seeds):
    """parse_loose/build_loose are lossless on valid archives, so a structural
    mutant differs from its seed only where it was mutated."""
    for blob in seeds:
        if not blob.startswith(MAGIC):  # frames get the byte-level mutations only
            assert parse_loose(blob) is None
            continue
        assert build_loose(parse_loose(blob)) == blob
        assert fix_checksums(blob) == blob


def test_mutators_never_raise(seeds):
    rng = random.Random(3)
    for i in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))) if i % 3 == 0 else rng.choice(seeds)
        out = mutate(data, rng, seeds)
        assert isinstance(out, bytes) and len(out) <= 1 << 16


def test_the_fuzzer_finds_a_planted_bug(seeds, monkeypatch):
    """With the header check of fix 93ece31 taken out, the short run finds
    the ValueError it prevents: the harness does catch non-CodecErrors."""
    from pyllmcodec import codec

    monkeypatch.setattr(codec, "check_codable", lambda header: None)
    res = run_random(targets.archive, seeds, 20000, 12, timeout=20, quiet=True, max_findings=1)
    assert res["findings"], f"no finding in {res['runs']} inputs"
    assert "ValueError" in res["findings"][0][2] or "IndexError" in res["findings"][0][2]


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="ASan reserves terabytes of address space: an address-space limit cannot apply")
def test_the_fuzzer_finds_a_decoder_without_a_memory_budget():
    """With the memory check taken out, the run finds an input whose decode
    fails an allocation under the runner's address-space limit: the memory
    budget is a real finding (in a child process: the limit is process-wide)."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from fuzz import corpus, targets\n"
        "from fuzz.run import _limit_memory, run_random\n"
        "from pyllmcodec import scheduler\n"
        "scheduler.WaveRunner._check_memory = lambda self, batch, longest: None\n"
        "targets.setup()\n"
        "_limit_memory(1 << 30)\n"
        "res = run_random(targets.archive, [b for _, b in corpus.seeds()], 20000, 12, timeout=20, quiet=True,\n"
        "                 max_findings=1)\n"
        "print(res['findings'][0][2] if res['findings'] else 'no finding in %d inputs' % res['runs'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600).stdout
    assert "BudgetBlown: memory" in out, out[-2000:]
