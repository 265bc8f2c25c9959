"""Fuzzing of pyllmcodec's decoder entry points (see docs/RELIABILITY.md).

* :mod:`fuzz.targets` -- the targets: container parsers, ``decompress``,
  ``open(...).read()``, ``info`` and the core range decoder on arbitrary bytes;
  each must return or raise :class:`~pyllmcodec.errors.CodecError`, nothing else.
* :mod:`fuzz.mutate` -- a lenient archive parser/builder and structure-aware
  mutations (header JSON fields, index entries, payloads) that keep every
  CRC-32, the footer and the trailer consistent, so mutants get past the
  checksums into the deeper checks and the model decoder.
* :mod:`fuzz.corpus` -- the seed corpus: valid archives of several geometries
  made with the fast fake model ``test-bigram`` (``tests/conftest.py``).
* ``python -m fuzz.run`` -- the runner: atheris (coverage-guided, libFuzzer)
  when installed, else a seeded random-mutation loop over the same targets.
"""
