"""Build and run ``q4_dot.cpp``: the integer SmolLM2 tier's matrix product
(Q4_1 weights x int8 activations per block of 32, exact in int64) on this
CPU, checked against its scalar reference (issue 20).

    python -m bench.studies.q4_dot [--rows 32] [--tile 4]

Needs g++ and an AVX-512 VNNI CPU (the kernel is a measurement, built with
``-march=native``; it is not part of the package).  Measured 2026-12-04 on
this machine (AMD EPYC Zen 4, one core, 32 rows, tiles of 4 rows): 110-119
G multiply-adds/s for the layers' shapes, 72 for the 49,152 x 576 head, so
SmolLM2's matrix products run at ~755 tokens/s per core (docs/SMOLLM2.md).
It first prints the ceiling, ``vpdpbusd`` zmm alone: 234 G multiply-adds/s a
core here (2026-12-04; one zmm ``vpdpbusd`` a cycle), so the block combine
costs the kernel about half of it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.q4_dot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=32, help="rows (a multiple of --tile)")
    ap.add_argument("--tile", type=int, default=4, help="rows sharing each weight load")
    a = ap.parse_args(argv)
    src = Path(__file__).with_suffix(".cpp")
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "q4_dot"
        subprocess.run(["g++", "-O3", "-march=native", "-std=c++17", f"-DROWS={a.tile}", str(src), "-o", str(exe)],
                       check=True)
        return subprocess.run([str(exe), str(a.rows)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
