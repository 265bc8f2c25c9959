"""``python -m bench``: fetch the corpora, run every codec, write the results.

    python -m bench            # full run -> bench/results/full.{md,json,png}
    python -m bench --quick    # CI-sized, under two minutes -> bench/results/quick.*

See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import baselines as _baselines
from .corpora import CORPUS_NAMES, CorpusError, load_corpus

RESULTS_DIR = Path(__file__).resolve().parent / "results"

FULL_CORPORA = ("canterbury4", "linux-doc-10MiB", "linux-doc-1MiB", "linux-doc-32KiB", "random-256KiB",
                "gzipped-linux-doc-1MiB")
QUICK_CORPORA = ("linux-doc-1MiB", "alice29", "linux-doc-32KiB")
#: The model rows cost about 1 s per KiB per pass on one CPU thread (the default
#: model, compress + decompress + ideal are three passes), so they run on the
#: corpora up to these sizes: the first row (default model, automatic backend)
#: up to 1.25 MiB in a full run (canterbury4, linux-doc-1MiB and the fallback
#: corpora), every other model/backend on the 32 KiB slice.
LLM_MAX_FULL = 1_310_720
LLM_MAX_QUICK = 32 << 10
LLM_OTHER_MAX = 32 << 10


def _csv(s: str) -> list[str]:
    return [x for x in (p.strip() for p in s.split(",")) if x]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"CI-sized run: corpora {', '.join(QUICK_CORPORA)}; the fast baselines and PPMd o8; "
                    "the default model on the 32 KiB slice only")
    ap.add_argument("--corpora", type=_csv, help=f"comma-separated, from: {', '.join(CORPUS_NAMES)}")
    ap.add_argument("--codecs", type=_csv, help=f"baselines, comma-separated, from: {', '.join(_baselines.ALL)}")
    ap.add_argument("--no-llm", action="store_true", help="baselines only")
    ap.add_argument("--llm-model", default="default", help="the model of the first pyllmcodec row (default: default)")
    ap.add_argument("--all-models", action="store_true",
                    help="also every registered model on every importable backend (default in a full run)")
    ap.add_argument("--default-model-only", action="store_true", help="only the default model's row")
    ap.add_argument("--llm-max-bytes", type=int,
                    help="run the first pyllmcodec row only on corpora up to this size "
                    f"(default: {LLM_MAX_FULL}, quick: {LLM_MAX_QUICK})")
    ap.add_argument("--llm-other-max-bytes", type=int, default=LLM_OTHER_MAX,
                    help=f"the same for the other model/backend rows (default {LLM_OTHER_MAX})")
    ap.add_argument("--llm-threads", type=int, default=1, help="model threads (default 1; 0: backend default)")
    ap.add_argument("--llm-batch-size", type=int, help="pyllmcodec batch size (default: the library's)")
    ap.add_argument("--llm-timeout", type=float, help="seconds per pyllmcodec worker (default: none; quick: 90)")
    ap.add_argument("--no-ideal", action="store_true", help="skip the model's ideal bits/byte")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    ap.add_argument("--name", help="file stem of the results (default: full / quick)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="re-render the .md and .png of an earlier results JSON (no measuring)")
    ap.add_argument("--merge-llm", type=Path, metavar="NEW_JSON",
                    help="with --render: replace the pyllmcodec rows of the rendered JSON by those of NEW_JSON "
                         "(same corpora; e.g. after shipping a new model, without re-running the baselines) "
                         "and rewrite it")
    ap.add_argument("--fetch-only", action="store_true", help="fetch and cache the corpora, then stop")
    return ap


def merge_llm_rows(doc: dict, new: dict) -> dict:
    """``doc`` with each corpus's pyllmcodec rows replaced by ``new``'s rows
    for the corpus of the same name, and a note saying so."""
    fresh = {c["name"]: [r for r in c["rows"] if r.get("kind") == "pyllmcodec"] for c in new["corpora"]}
    for c in doc["corpora"]:
        if fresh.get(c["name"]):
            c["rows"] = [r for r in c["rows"] if r.get("kind") != "pyllmcodec"] + fresh[c["name"]]
    m = new.get("machine", {})
    notes = [n for n in doc.get("notes", []) if not n.startswith("pyllmcodec rows")]  # superseded
    notes.append(
        f"pyllmcodec rows ({', '.join(sorted(n for n, r in fresh.items() if r))}) measured {m.get('date', '?')} "
        f"at commit {m.get('git_commit', '?')} by `python -m bench {new.get('argv', '...')}` and merged into "
        "the baseline run above with `--merge-llm` (same harness; the baselines take ~17 min on this machine)")
    doc["notes"] = notes
    return doc


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.render:
        import json

        from .report import write_results

        doc = json.loads(a.render.read_text())
        if a.merge_llm:
            doc = merge_llm_rows(doc, json.loads(a.merge_llm.read_text()))
            a.render.write_text(json.dumps(doc, indent=1))
        for p in write_results(doc, a.out if a.out != RESULTS_DIR else a.render.parent, a.name or a.render.stem):
            print(f"wrote {p}")
        return 0
    mode = "quick" if a.quick else "full"
    corpus_names = a.corpora or list(QUICK_CORPORA if a.quick else FULL_CORPORA)
    keys = a.codecs or list(_baselines.FAST if a.quick else _baselines.ALL)
    try:
        corpora = [load_corpus(n) for n in corpus_names]
    except (CorpusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.fetch_only:
        _baselines.find_zpaq_cli(fetch=True)
        for c in corpora:
            print(f"{c.name}: {c.size} bytes")
        return 0

    from .harness import run_benchmark
    from .llm import llm_configs, pyllmcodec_status
    from .report import check_expected, write_results

    try:
        bl = _baselines.get_baselines(keys)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    llm, skip = [], None
    if a.no_llm:
        skip = "not requested (--no-llm)"
    else:
        ok, info = pyllmcodec_status()
        if ok and a.llm_model not in info.split(","):
            ok, info = False, f"model {a.llm_model!r} is not registered (available: {info})"
        if ok:
            all_models = (a.all_models or not a.quick) and not a.default_model_only
            llm = llm_configs(info.split(","), first=a.llm_model, all_models=all_models, threads=a.llm_threads or None,
                              batch_size=a.llm_batch_size)
        else:
            skip = info
            print(f"[bench] skipping the pyllmcodec rows: {info}", file=sys.stderr)
    max_bytes = a.llm_max_bytes if a.llm_max_bytes is not None else (LLM_MAX_QUICK if a.quick else LLM_MAX_FULL)
    timeout = a.llm_timeout if a.llm_timeout is not None else (90.0 if a.quick else None)
    doc = run_benchmark(
        corpora, bl, llm, llm_max_bytes=max_bytes, llm_other_max_bytes=a.llm_other_max_bytes, llm_ideal=not a.no_ideal, llm_timeout=timeout,
        llm_skip_reason=skip, min_time=0.2 if a.quick else 0.5, max_repeats=3 if a.quick else 5, mode=mode,
    )
    doc["argv"] = " ".join(sys.argv[1:] if argv is None else argv)
    stem = a.name or mode
    for p in write_results(doc, a.out, stem):
        print(f"wrote {p}")
    bad = check_expected(doc)
    for b in bad:
        print(f"warning: disagrees with the reference: {b}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
