"""One-off measurements whose results the docs cite (index: README.md here).

Each is run as ``python -m bench.studies.NAME --help``; the comparison harness
(``python -m bench``), the pytest-benchmark suites and the standing tools
(``bench.codec_speed``, ``bench.model_speed``, ``bench.gpu_bench``,
``bench.smollm2_eval``, ``bench/compare_constriction.py``) stay in ``bench/``.
"""
