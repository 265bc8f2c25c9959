"""pyllmcodec's benchmarks: corpora fetched by script, classical baselines,
the pyllmcodec rows, and the report (Markdown, JSON, plot).

Run ``python -m bench`` (or ``--quick``); see docs/BENCHMARKS.md.
"""
