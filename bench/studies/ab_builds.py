"""Two builds of the package in one run: the default tier's round trip
(``default-exact``, context-mixing stage on and off) on the given files,
the builds alternating, medians of ``--repeats``.

    python -m bench.studies.ab_builds OLD_DIR NEW_DIR FILE[:LIMIT] ... [--repeats 3]

A build directory holds a copy of ``pyllmcodec/`` with its own ``_core``
extension beside it, e.g. (from a checkout of the commit to measure)::

    mkdir -p /tmp/old && cp -r pyllmcodec csrc /tmp/old/ && cd /tmp/old && \\
      g++ -O3 -ffp-contract=off -fno-fast-math -std=c++17 -shared -fPIC -DNDEBUG -Wno-psabi \\
      $(python -m pybind11 --includes) csrc/bindings.cpp -o pyllmcodec/_core$(python3-config --extension-suffix)

Each measurement runs in a child process that imports the package from the
build directory (the editable install's finder is taken off ``sys.meta_path``;
the kernel copy is chosen once per process), compresses with ``threads=2``,
decompresses and compares.  These machines are shared and noisy: compare
only rows of one run.  Prints a Markdown table (KB/s of input, bits/byte).

Run 2026-12-05 on a 2-vCPU AMD EPYC Zen 2 (AVX2, no AVX-512), before and after
the AVX2 kernels of csrc/exact_step.hpp: bench/results/avx2-kernels.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r'''
import sys, time, json
d = sys.argv[1]
sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__ and "skbc" not in repr(f).lower()]
sys.path.insert(0, d)
import pyllmcodec
from pyllmcodec import _core
assert _core.__file__.startswith(d), _core.__file__
path, limit, cm = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
data = open(path, "rb").read()[:limit] if limit else open(path, "rb").read()
t = time.perf_counter(); a = pyllmcodec.compress(data, threads=2, cm=cm); tc = time.perf_counter() - t
t = time.perf_counter(); b = pyllmcodec.decompress(a, threads=2); td = time.perf_counter() - t
assert b == data
print(json.dumps({"bytes": len(data), "c": len(data) / tc, "d": len(data) / td, "bpb": len(a) * 8 / len(data)}))
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.ab_builds", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("files", nargs="+", help="FILE or FILE:LIMIT (the first LIMIT bytes)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    print("| file | cm | build | compress KB/s | decompress KB/s | bits/byte |")
    print("|---|---|---|---:|---:|---:|")
    for spec in a.files:
        path, _, lim = spec.partition(":")
        for cm in ("1", "0"):
            res: dict[str, list[dict]] = {a.old: [], a.new: []}
            for _ in range(a.repeats):
                for d in (a.old, a.new):
                    out = subprocess.run([sys.executable, "-c", CHILD, d, path, lim or "0", cm], capture_output=True,
                                         text=True, check=True)
                    res[d].append(json.loads(out.stdout))
            for d, name in ((a.old, "before"), (a.new, "after")):
                r = res[d]
                print(f"| {path.rsplit('/', 1)[-1]}{':' + lim if lim else ''} | {'on' if cm == '1' else 'off'} | {name} | "
                      f"{statistics.median(x['c'] for x in r) / 1e3:.2f} | {statistics.median(x['d'] for x in r) / 1e3:.2f} | "
                      f"{r[0]['bpb']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
