"""The quantizer gives the same bits in every build: scalar, SSE2, AVX2, -O0.

Compiles csrc/ in a few configurations with the system C++ compiler (skipped
when there is none) and compares digests of quantize() tables.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
CXX = shutil.which("g++") or shutil.which("clang++")

DIGEST_CPP = r"""
// Prints quantize() tables of deterministic rows, for scalar/vector comparison.
#include <cstdio>
#include <vector>
#include "batch.hpp"
int main() {
  unsigned long long h = 1469598103934665603ull;
  const std::size_t Vs[] = {2, 3, 31, 32, 33, 100, 257, 1000, 50257};
  for (std::size_t V : Vs) {
    for (int kind = 0; kind < 4; ++kind) {
      std::vector<float> p(V);
      unsigned x = 12345u + static_cast<unsigned>(V) * 7u + kind;
      for (auto& v : p) {
        x = x * 1664525u + 1013904223u;
        const float u = static_cast<float>(x >> 8) / 16777216.0f;
        v = kind == 0 ? u : kind == 1 ? u * u * u * u * 1e-30f : kind == 2 ? u * 1e-42f : u * 1e25f;
      }
      std::vector<std::uint32_t> cdf(V + 1);
      for (int P : {16, 24, 30, 31}) {
        if (V > (std::size_t{1} << (P - 1))) continue;
        pyllmcodec::quantize(p.data(), 1, V, P, cdf.data());
        for (auto c : cdf) h = (h ^ c) * 1099511628211ull;
      }
    }
  }
  std::printf("%016llx\n", h);
}
"""

CONFIGS = [
    ["-O2", "-DPYLLMCODEC_SCALAR"],
    ["-O2"],
    ["-O0"],
    ["-O3", "-march=x86-64-v3", "-DPYLLMCODEC_NO_DISPATCH"],
]


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_scalar_and_vector_builds_agree(tmp_path):
    src = tmp_path / "digest.cpp"
    src.write_text(DIGEST_CPP)
    digests = {}
    for flags in CONFIGS:
        exe = tmp_path / ("dg" + str(len(digests)))
        cmd = [CXX, "-std=c++17", "-ffp-contract=off", "-Wno-psabi", *flags]
        cmd += ["-I", str(CSRC), str(src), "-o", str(exe)]
        if subprocess.run(cmd, check=False, capture_output=True).returncode != 0:
            if "-march=x86-64-v3" in flags:
                continue  # not an x86-64 compiler
            pytest.fail("compile failed: " + " ".join(cmd))
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
        digests[" ".join(flags)] = out.stdout.strip()
    assert len(set(digests.values())) == 1, digests
