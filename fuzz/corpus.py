"""The seed corpus: valid archives of several geometries and methods, made
with the fake models "test-bigram" and (when ``tokenizers`` is installed)
"test-tokens", plus a few of their mutants.

``python -m fuzz.corpus DIR`` writes them to DIR (one file per seed) for
atheris/libFuzzer; :func:`seeds` returns them in memory for the random engine
and the tests.  Small on purpose (a few hundred bytes to ~2 KiB each) so that a
decode costs a millisecond or so.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from . import targets
from .mutate import build_loose, mutate, parse_loose

__all__ = ["core_seeds", "seeds", "write"]

TEXT = (
    b"The quick brown fox jumps over the lazy dog. A language model assigns a probability to "
    b"every next byte, and an arithmetic coder turns those probabilities into a short code. "
)


def seeds() -> list[tuple[str, bytes]]:
    """Valid archives (name, bytes); deterministic."""
    targets.setup()
    from pyllmcodec import Compressor

    from .targets import _dec  # noqa: F401 - setup registered the model

    model = "test-bigram"
    rnd = bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8))
    out: list[tuple[str, bytes]] = []

    def add(name: str, data: bytes, on: str = model, **kw: int | str) -> None:
        out.append((name, Compressor(on, **kw).compress(data)))  # type: ignore[arg-type]

    add("empty", b"", chunk_size=32, batch_size=2)
    add("one-byte", b"x", chunk_size=32, batch_size=2)
    add("text-model", TEXT[:150], chunk_size=64, batch_size=4, fallback="stored")
    add("text-waves", TEXT * 2, chunk_size=32, batch_size=3, fallback="stored")
    add("random-stored", rnd, chunk_size=64, batch_size=2)
    add("zeros-deflate", b"\0" * 700, chunk_size=128, batch_size=2)
    add("mixed", TEXT[:100] + rnd[:60] + b"ab" * 60, chunk_size=32, batch_size=4)
    add("precision-16", TEXT[:120], chunk_size=40, batch_size=2, precision=16, fallback="stored")
    crlf = TEXT[:160].replace(b" ", b"\r\n", 6) + b" \r\nend \r\n"
    add("eol-bytes", crlf + crlf.replace(b"\r\n", b" \r\n") + TEXT[:50], chunk_size=40, batch_size=3,
        fallback="stored")
    # chunks longer than the context (32): segments primed with 5 symbols, also with the line-ending methods
    add("segments", TEXT[:90] + crlf[:70] + TEXT[200:300], on="test-bigram-ctx32", chunk_size=75, batch_size=3,
        fallback="stored", prime=5)
    # segments shorter than the model's context (header key `context`, flag bit 2)
    add("context", TEXT[:120] + crlf[:60], chunk_size=75, batch_size=3, fallback="stored", context=30, prime=5)
    # through the match model (header flag bit 1): repeats and line endings
    add("mixer", (TEXT[:60] * 3) + crlf[:80], on="test-bigram-mixer", chunk_size=70, batch_size=3,
        fallback="stored")
    # through the context-mixing stage (header key `cm`, flag bit 4), with a stored row dropped from its wave
    add("cm", (TEXT[:100] * 2) + rnd[:40] + crlf[:80], on="test-bigram-int", chunk_size=40, batch_size=3)
    # its long mode (header key `cm.long`): the state carried across groups of 2 waves
    add("cm-long", (TEXT[:100] * 3) + rnd[:40], on="test-bigram-int", chunk_size=40, batch_size=2, long=2)
    # from a bundle's priors (header key `cm.priors`): the mixers' fitted initial weights
    add("cm-priors", (TEXT[:100] * 2) + rnd[:40], on="test-bigram-int-priors", chunk_size=40, batch_size=3)
    add("compact-cm", TEXT[:150], on="test-bigram-int", chunk_size=48, batch_size=3, fallback="stored",
        frame="compact")
    a, b = Compressor(model, chunk_size=32, batch_size=4, fallback="stored").compress_batch([TEXT[:40], TEXT[40:130]])
    out += [("shared-a", a), ("shared-b", b)]
    # compact frames (FORMAT.md section 11a), a dictionary (section 4d), headerless frames at the fuzz params
    add("compact-text", TEXT[:150], chunk_size=64, batch_size=4, fallback="stored", frame="compact")
    add("compact-waves", TEXT * 2 + rnd[:50], chunk_size=32, batch_size=3, frame="compact")
    add("compact-segments-mixer", (TEXT[:60] * 3), on="test-bigram-mixer", chunk_size=70, batch_size=3,
        fallback="stored", frame="compact")
    add("compact-segments", TEXT[:90] + crlf[:70], on="test-bigram-ctx32", chunk_size=75, batch_size=3,
        fallback="stored", prime=5, frame="compact")
    dic = targets.FUZZ_DICTIONARY
    out.append(("dictionary", Compressor(model, chunk_size=40, batch_size=3, fallback="stored",
                                         dictionary=dic).compress(TEXT[:130])))
    out.append(("compact-dictionary", Compressor(model, chunk_size=40, batch_size=3, fallback="stored",
                                                 dictionary=dic, frame="compact").compress(TEXT[:130])))
    hl = targets.headerless_compressor()
    for i, blob in enumerate(hl.compress_batch([TEXT[:30], TEXT[30:200], b"\0" * 90], params=targets.params())):
        out.append((f"headerless-{i}", blob))
    for name, blob in list(out):  # the first entry layout (tag 'W'), which readers keep accepting
        if name in ("text-waves", "mixed", "eol-bytes", "shared-b", "segments", "mixer", "context", "cm"):
            lz = parse_loose(blob)
            assert lz is not None
            lz.compact = False
            out.append((name + "-first-layout", build_loose(lz)))
    try:  # token-level archives (method model-tokens, split cells), with the fake "test-tokens"
        import tokenizers  # noqa: F401
    except ImportError:
        return out
    model = "test-tokens"
    add("tokens-text", TEXT[:200], chunk_size=64, batch_size=3, fallback="stored")
    add("tokens-split", bytes(range(32, 127)) * 2 + TEXT[:90], chunk_size=128, batch_size=2)
    add("tokens-eol", crlf + crlf.replace(b"\r\n", b" \r\n"), chunk_size=64, batch_size=3, fallback="stored")
    add("tokens-invalid-utf8", b"caf\xc3 \xff\xfe the hat " * 5, chunk_size=48, batch_size=2)
    # through the wave match (header key `mixer`, kind wave1): repeats across the wave's rows
    add("tokens-wave", TEXT[:90] * 3 + crlf[:60], on="test-tokens-wave", chunk_size=64, batch_size=3)
    add("compact-tokens-wave", TEXT[:90] * 2, on="test-tokens-wave", chunk_size=64, batch_size=3, frame="compact")
    return out


def core_seeds() -> list[tuple[str, bytes]]:
    """Inputs for the core target: a header (streams, precision, V, steps,
    mode) and stream bytes, some of them real encoder output."""
    targets.setup()
    from pyllmcodec import core

    out = []
    for n, prec, V, steps, mode in [(1, 30, 256, 20, 0), (2, 16, 300, 30, 0x55), (4, 31, 5, 47, 0xAA),
                                    (3, 13, 700, 10, 0xE4), (1, 2, 2, 40, 0xFF)]:
        rng = np.random.default_rng(n * 1000 + prec)
        enc = core.BatchEncoder(n, max(prec, core.MIN_PRECISION))
        for _ in range(steps):
            enc.encode_ranges(np.full(n, 0, np.uint32), np.full(n, 1 << (max(prec, 2) - 1), np.uint32))
        streams = b"".join(enc.finish()) + bytes(rng.integers(0, 256, 40, dtype=np.uint8))
        head = bytes([n - 1, prec, V & 0xFF, (V - 2) >> 8, steps - 1, mode])
        out.append((f"core-{n}x{prec}", head + streams))
    return out


def mutants(base: list[tuple[str, bytes]], count: int, seed: int = 1) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    blobs = [b for _, b in base]
    return [(f"mutant-{i}", mutate(rng.choice(blobs), rng, blobs)) for i in range(count)]


def write(directory: str, target: str = "archive", n_mutants: int = 40) -> int:
    os.makedirs(directory, exist_ok=True)
    base = core_seeds() if target == "core" else seeds()
    items = base + mutants(base, n_mutants)
    for name, blob in items:
        with open(os.path.join(directory, name), "wb") as fh:
            fh.write(blob)
    return len(items)


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"
    t = sys.argv[2] if len(sys.argv) > 2 else "archive"
    print(f"wrote {write(d, t)} seeds to {d}")
