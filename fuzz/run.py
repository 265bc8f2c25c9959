"""Run a fuzz target.

    python -m fuzz.run --target archive --runs 1000000            # atheris if installed
    python -m fuzz.run --target core --engine random --runs 20000 --seed 3

Engines:

* ``atheris`` -- coverage-guided (libFuzzer) over the pyllmcodec Python code,
  with a custom mutator that mixes libFuzzer's byte mutations and the
  structure-aware ones of :mod:`fuzz.mutate`.  Stops at the first finding and
  writes it to ``--out`` (libFuzzer's ``crash-*`` / ``timeout-*`` files).
* ``random`` -- no coverage feedback: seeded mutation chains from the seed
  corpus (:mod:`fuzz.mutate`), a per-input time limit (SIGALRM), keeps going
  after a finding and saves each one to ``--out``.  Deterministic for a seed;
  what the tests' short run uses.

Exit status 0 when nothing was found; 1 otherwise.  The last line printed is a
summary: engine, target, inputs executed, seconds, findings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

FINDINGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "findings")


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang("input took longer than the time limit")


def run_random(target: Callable[[bytes], None], corpus: list[bytes], runs: int, seed: int,
               timeout: float = 10.0, out_dir: str | None = None, max_size: int = 1 << 16,
               quiet: bool = False, max_findings: int | None = None) -> dict[str, Any]:
    """The random-mutation engine; returns a summary dict (findings included).
    Stops early after ``max_findings`` findings if given."""
    from .mutate import mutate

    rng = random.Random(seed)
    pool = list(corpus)  # seeds + mutants that got past the parser (deeper)
    findings: list[tuple[str, bytes, str]] = []
    slowest = (0.0, b"")
    use_alarm = timeout > 0 and hasattr(signal, "setitimer")
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    t0 = time.perf_counter()
    try:
        for i in range(runs):
            if i < len(corpus):
                data = corpus[i]
            else:
                base = rng.choice(pool) if rng.random() < 0.3 else rng.choice(corpus)
                data = mutate(base, rng, corpus, max_size)
            s = time.perf_counter()
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    target(data)
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except Exception as exc:  # noqa: BLE001 - every exception is a finding
                kind = "hang" if isinstance(exc, Hang) else "crash"
                tb = traceback.format_exc()
                findings.append((kind, data, tb))
                if out_dir:
                    os.makedirs(out_dir, exist_ok=True)
                    name = f"{kind}-{hashlib.sha1(data).hexdigest()}"
                    with open(os.path.join(out_dir, name), "wb") as fh:
                        fh.write(data)
                if not quiet:
                    print(f"[{i}] {kind}: {type(exc).__name__}: {exc}\n{tb}", file=sys.stderr)
                if max_findings is not None and len(findings) >= max_findings:
                    runs = i + 1
                    break
            dt = time.perf_counter() - s
            if dt > slowest[0]:
                slowest = (dt, data)
            if i >= len(corpus) and len(pool) < 2000 and rng.random() < 0.05:
                pool.append(data)
            if not quiet and i and i % 100000 == 0:
                el = time.perf_counter() - t0
                print(f"#{i} {el:.0f}s {i / el:.0f}/s findings={len(findings)}", file=sys.stderr, flush=True)
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, old)
    return {"engine": "random", "runs": runs, "seconds": time.perf_counter() - t0, "findings": findings,
            "slowest_s": slowest[0], "slowest_input": slowest[1]}


def _instrument(prefix: str) -> int:
    """Instrument every function and method of the modules under ``prefix``
    (in place).  atheris.instrument_imports() cannot be used: an editable
    install loads pyllmcodec through its own import finder, which bypasses
    atheris's import hook."""
    import inspect

    import atheris

    n = 0
    for name, mod in list(sys.modules.items()):
        if name != prefix and not name.startswith(prefix + "."):
            continue
        for obj in list(vars(mod).values()):
            if getattr(obj, "__module__", None) != name:
                continue
            funcs = [obj] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                for v in vars(obj).values():
                    f = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
                    f = f.fget if isinstance(f, property) else f
                    if inspect.isfunction(f):
                        funcs.append(f)
            for f in funcs:
                atheris.instrument_func(f)
                n += 1
    return n


def run_atheris(target_name: str, corpus_dir: str, runs: int, timeout: int, out_dir: str,
                extra: list[str]) -> int:
    import atheris

    from . import mutate as mutate_mod
    from . import targets

    targets.setup()
    target = targets.TARGETS[target_name]
    counter = {"n": 0}

    def one(data: bytes) -> None:
        counter["n"] += 1
        target(bytes(data))

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if target_name != "core" and rng.random() < 0.5:
            return mutate_mod.mutate(bytes(data), rng, None, max_size)
        out = atheris.Mutate(data, max_size)
        if target_name != "core" and rng.random() < 0.3:
            out = mutate_mod.fix_checksums(out)[:max_size]
        return out

    os.makedirs(out_dir, exist_ok=True)
    argv = [sys.argv[0], corpus_dir, f"-runs={runs}", f"-timeout={timeout}", "-rss_limit_mb=8192",
            "-max_len=65536", f"-artifact_prefix={out_dir.rstrip('/')}/", "-print_final_stats=1", *extra]
    t0 = time.perf_counter()
    try:
        atheris.Setup(argv, one, custom_mutator=custom_mutator)
        atheris.Fuzz()
    finally:  # atheris exits the process itself; libFuzzer prints its own stats
        print(f"summary: engine=atheris target={target_name} inputs={counter['n']} "
              f"seconds={time.perf_counter() - t0:.0f}", flush=True)
    return 0


def _limit_memory(extra: int) -> None:
    """RLIMIT_AS: the address space in use now (models loaded) plus ``extra`` bytes."""
    import resource

    with open("/proc/self/statm") as fh:
        used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, resource.RLIM_INFINITY))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("archive", "container", "core"), default="archive")
    ap.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument("--runs", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=10, help="seconds per input before it counts as a hang")
    ap.add_argument("--memory-limit", type=int, default=2048, metavar="MIB",
                    help="address space the run may add after start-up (RLIMIT_AS): an input that needs more "
                         "fails an allocation, which the archive target counts as a blown budget (0: none)")
    ap.add_argument("--corpus", help="corpus directory (atheris; default: a fresh one from fuzz.corpus)")
    ap.add_argument("--out", default=FINDINGS_DIR, help="where findings are written")
    ap.add_argument("extra", nargs="*", help="extra libFuzzer flags (after --)")
    args = ap.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    if engine == "atheris":  # instrument pyllmcodec's Python code for coverage
        import pyllmcodec
        import pyllmcodec.codec
        import pyllmcodec.container
        import pyllmcodec.geometry
        import pyllmcodec.io
        import pyllmcodec.methods
        import pyllmcodec.scheduler
        import pyllmcodec.session  # noqa: F401

        print(f"instrumented {_instrument('pyllmcodec')} functions", file=sys.stderr)
    from . import corpus as corpus_mod

    if engine == "atheris":
        cdir = args.corpus
        if cdir is None:
            import tempfile

            cdir = tempfile.mkdtemp(prefix=f"pyllmcodec-fuzz-{args.target}-")
            corpus_mod.write(cdir, args.target)
        return run_atheris(args.target, cdir, args.runs, args.timeout, args.out, args.extra)
    from . import targets

    targets.setup()
    seeds = corpus_mod.core_seeds() if args.target == "core" else corpus_mod.seeds()
    if args.memory_limit:
        _limit_memory(args.memory_limit << 20)
    res = run_random(targets.TARGETS[args.target], [b for _, b in seeds], args.runs, args.seed,
                     args.timeout, args.out)
    n = len(res["findings"])
    print(f"summary: engine=random target={args.target} seed={args.seed} inputs={res['runs']} "
          f"seconds={res['seconds']:.0f} rate={res['runs'] / max(res['seconds'], 1e-9):.0f}/s "
          f"slowest={res['slowest_s'] * 1000:.0f}ms findings={n}", flush=True)
    return 1 if n else 0


if __name__ == "__main__":
    sys.exit(main())
