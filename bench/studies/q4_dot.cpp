// q4_dot.cpp -- how fast can the integer SmolLM2 tier's matrix product run?
// (issue 20; bench/studies/q4_dot.py builds and runs it, docs/SMOLLM2.md cites it)
//
// The exact block arithmetic of docs/SMOLLM2.md ("Toward an exact integer
// tier"): for rows r, outputs o, input blocks b of 32,
//     P[r][o] = sum_b A[r][b] * W[o][b] * S[r][o][b] + sum_b U[r][b] * M[o][b]
//     S = sum_{i in b} q[o][i] * x[r][i]   (q: 0..15 unsigned, x: int8)
//     U[r][b] = A[r][b] * T[r][b],  T = sum_{i in b} x[r][i]
// with |A| < 2^15, |W|, |M| < 2^14: A * S < 2^31 (int32), then * W in int64.
// The AVX-512 VNNI kernel computes S with vpdpbusd (64 multiply-adds each),
// A * S with vpmulld, then * W and U * M with vpmuldq into int64 lanes
// (U = A * T < 2^27 fits the low 32 bits vpmuldq reads).  A scalar reference checks every
// output.  Prints one line per shape: GMAC/s (main term's multiply-adds),
// after the ceiling: independent vpdpbusd zmm chains with nothing else (on
// Zen 4 one zmm vpdpbusd issues every second cycle: ~117 GMAC/s a core).
//
// Not part of the package: a measurement, built with -march=native.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#ifndef ROWS
#define ROWS 4
#endif

struct Mat {
  int out, in, nb;
  std::vector<uint8_t> q;     // [out][in] 0..15 (reference layout)
  std::vector<uint8_t> qp;    // [out/16][in/4][16][4] (vpdpbusd layout)
  std::vector<int64_t> w64;   // [out/16][nb][16] W as int64 lanes
  std::vector<int64_t> m64;   // [out/16][nb][16] M as int64 lanes
  std::vector<int32_t> w, m;  // [out][nb]
};

static Mat make(int out, int in, std::mt19937& g) {
  Mat M{out, in, in / 32, {}, {}, {}, {}, {}, {}};
  M.q.resize(size_t(out) * in);
  for (auto& v : M.q) v = g() % 16;
  M.w.resize(size_t(out) * M.nb);
  M.m.resize(size_t(out) * M.nb);
  for (auto& v : M.w) v = int32_t(g() % 32767) - 16383;
  for (auto& v : M.m) v = int32_t(g() % 32767) - 16383;
  M.qp.resize(M.q.size());
  for (int o = 0; o < out; ++o)
    for (int i = 0; i < in; ++i) M.qp[((size_t(o / 16) * (in / 4) + i / 4) * 16 + o % 16) * 4 + i % 4] = M.q[size_t(o) * in + i];
  M.w64.resize(size_t(out) * M.nb);
  M.m64.resize(size_t(out) * M.nb);
  for (int o = 0; o < out; ++o)
    for (int b = 0; b < M.nb; ++b) {
      M.w64[(size_t(o / 16) * M.nb + b) * 16 + o % 16] = M.w[size_t(o) * M.nb + b];
      M.m64[(size_t(o / 16) * M.nb + b) * 16 + o % 16] = M.m[size_t(o) * M.nb + b];
    }
  return M;
}

struct Act {
  int rows, in, nb;
  std::vector<int8_t> x;   // [rows][in]
  std::vector<int32_t> a;  // [rows][nb]
  std::vector<int64_t> u;  // [rows][nb] = A * T
};

static Act make_act(int rows, int in, std::mt19937& g) {
  Act X{rows, in, in / 32, {}, {}, {}};
  X.x.resize(size_t(rows) * in);
  for (auto& v : X.x) v = int8_t(int(g() % 255) - 127);
  X.a.resize(size_t(rows) * X.nb);
  for (auto& v : X.a) v = int32_t(g() % 32767);
  X.u.resize(X.a.size());
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < X.nb; ++b) {
      int t = 0;
      for (int i = 0; i < 32; ++i) t += X.x[size_t(r) * in + b * 32 + i];
      X.u[size_t(r) * X.nb + b] = int64_t(X.a[size_t(r) * X.nb + b]) * t;
    }
  return X;
}

static void reference(const Mat& M, const Act& X, std::vector<int64_t>& P) {
  for (int r = 0; r < X.rows; ++r)
    for (int o = 0; o < M.out; ++o) {
      int64_t p = 0;
      for (int b = 0; b < M.nb; ++b) {
        int32_t s = 0;
        for (int i = b * 32; i < b * 32 + 32; ++i) s += int32_t(M.q[size_t(o) * M.in + i]) * X.x[size_t(r) * M.in + i];
        p += int64_t(int32_t(X.a[size_t(r) * M.nb + b] * s)) * M.w[size_t(o) * M.nb + b];
        p += X.u[size_t(r) * M.nb + b] * M.m[size_t(o) * M.nb + b];
      }
      P[size_t(r) * M.out + o] = p;
    }
}

// R rows share every weight load.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni"))) static void tile(
    const Mat& M, const Act& X, int r0, int ob, std::vector<int64_t>& P) {
  const int in = M.in, nb = M.nb, quads = in / 4;
  __m512i lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_si512();
  const uint8_t* qb = M.qp.data() + size_t(ob) * quads * 64;
  for (int b = 0; b < nb; ++b) {
    __m512i wq[8];
    for (int k = 0; k < 8; ++k) wq[k] = _mm512_loadu_si512(qb + size_t(b * 8 + k) * 64);
    const __m512i wlo = _mm512_loadu_si512(M.w64.data() + (size_t(ob) * nb + b) * 16);
    const __m512i whi = _mm512_loadu_si512(M.w64.data() + (size_t(ob) * nb + b) * 16 + 8);
    const __m512i mlo = _mm512_loadu_si512(M.m64.data() + (size_t(ob) * nb + b) * 16);
    const __m512i mhi = _mm512_loadu_si512(M.m64.data() + (size_t(ob) * nb + b) * 16 + 8);
    for (int r = 0; r < R; ++r) {
      const int8_t* xr = X.x.data() + size_t(r0 + r) * in + b * 32;
      // two chains of four multiply-adds (latency), then A * S, then * W and + U * M in int64 lanes
      __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
      for (int k = 0; k < 8; k += 2) {
        int32_t v0, v1;
        std::memcpy(&v0, xr + 4 * k, 4);
        std::memcpy(&v1, xr + 4 * k + 4, 4);
        s0 = _mm512_dpbusd_epi32(s0, wq[k], _mm512_set1_epi32(v0));
        s1 = _mm512_dpbusd_epi32(s1, wq[k + 1], _mm512_set1_epi32(v1));
      }
      const __m512i s = _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(X.a[size_t(r0 + r) * nb + b]));
      const __m512i slo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(s));
      const __m512i shi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(s, 1));
      const __m512i u = _mm512_set1_epi64(X.u[size_t(r0 + r) * nb + b]);
      lo[r] = _mm512_add_epi64(lo[r], _mm512_add_epi64(_mm512_mul_epi32(slo, wlo), _mm512_mul_epi32(u, mlo)));
      hi[r] = _mm512_add_epi64(hi[r], _mm512_add_epi64(_mm512_mul_epi32(shi, whi), _mm512_mul_epi32(u, mhi)));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_si512(P.data() + size_t(r0 + r) * M.out + ob * 16, lo[r]);
    _mm512_storeu_si512(P.data() + size_t(r0 + r) * M.out + ob * 16 + 8, hi[r]);
  }
}

template <int R>
static void kernel(const Mat& M, const Act& X, std::vector<int64_t>& P) {
  // output blocks outside: one block's weights (in/4 x 64 bytes) stay in L1 for every row tile
  for (int ob = 0; ob < M.out / 16; ++ob)
    for (int r0 = 0; r0 + R <= X.rows; r0 += R) tile<R>(M, X, r0, ob, P);
}

// 12 independent chains of vpdpbusd zmm, nothing else: this core's ceiling for the products
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double vnni_peak() {
  __m512i a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_epi32(i);
  __m512i w = _mm512_set1_epi32(0x01010101);
  const __m512i x = _mm512_set1_epi32(0x02020202);
  const long n = 240000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < n; k += 12) {
    for (int i = 0; i < 12; ++i) a[i] = _mm512_dpbusd_epi32(a[i], w, x);
    asm volatile("" : "+v"(w));  // keeps the loop from being folded
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m512i s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, a[i]);
  if (_mm512_reduce_add_epi32(s) == 42) std::printf(" ");
  return n * 64.0 / dt / 1e9;
}

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 16;
  std::printf("vpdpbusd zmm alone, one core: %.1f GMAC/s\n", vnni_peak());
  std::mt19937 g(1);
  const int shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
  double total_macs = 0, total_s = 0;
  for (auto& sh : shapes) {
    Mat M = make(sh[0], sh[1], g);
    Act X = make_act(rows, sh[1], g);
    std::vector<int64_t> want(size_t(rows) * sh[0]), got(want.size());
    reference(M, X, want);
    kernel<ROWS>(M, X, got);
    if (got != want) {
      std::printf("MISMATCH out=%d in=%d\n", sh[0], sh[1]);
      return 1;
    }
    double best = 1e9;
    for (int rep = 0; rep < 15; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      kernel<ROWS>(M, X, got);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double macs = double(rows) * sh[0] * sh[1];
    std::printf("out=%5d in=%4d rows=%d: %.1f GMAC/s (%.3f ms)\n", sh[0], sh[1], rows, macs / best / 1e9, best * 1e3);
    // SmolLM2 weighting: per token, 30 layers of q(576x576), k+v (2x 192x576), o (576x576),
    // gate+up (2x 1536x576), down (576x1536), and the head once
    const double per_token = sh[0] == 49152 ? 1 : (sh[0] == 192 ? 60 : (sh[0] == 1536 ? 60 : 30));
    const double w = (sh[0] == 576 && sh[1] == 576) ? 60 : per_token;
    total_macs += w * double(sh[0]) * sh[1];
    total_s += w * best / rows;
  }
  std::printf("SmolLM2 matrix products, one core: %.0f tokens/s (%.1f GMAC/s overall, %d rows)\n", 1 / total_s,
              total_macs / total_s / 1e9, rows);
  return 0;
}
