// coder_harness.cpp -- drives the plain C++ core (csrc/*.hpp) without Python,
// for the leak check in tools/sanitize.sh: built with
// -fsanitize=address,undefined (LeakSanitizer is part of ASan on Linux), it
// runs round trips, garbage and truncated streams, every error path (each
// throws and must free what it allocated) and exits 0; any leak, invalid
// access or undefined behaviour makes the sanitizer runtime fail the process.
//
//   g++ -std=c++17 -O1 -g -Wno-psabi -fsanitize=address,undefined -fno-sanitize-recover=all \
//       -Icsrc tools/coder_harness.cpp -o coder_harness && ./coder_harness [iterations]
//
// -DPLANT_LEAK leaks one buffer on purpose: sanitize.sh builds that variant
// too and requires it to FAIL, proving the leak check can fail.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <random>
#include <vector>

#include "batch.hpp"

namespace plc = pyllmcodec;

namespace {

std::vector<float> random_probs(std::mt19937_64& rng, std::size_t m, std::size_t V) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> p(m * V);
  for (auto& x : p) {
    const float r = u(rng);
    x = r * r * r * r;  // peaked
  }
  for (std::size_t k = 0; k < m; ++k) p[k * V] += 1e-3f;  // no all-zero row
  return p;
}

int round_trip(std::mt19937_64& rng) {
  const std::size_t n = 1 + rng() % 5, V = 2 + rng() % 600, steps = 1 + rng() % 80;
  int precision = 10 + static_cast<int>(rng() % 22);
  while ((std::size_t{1} << (precision - 1)) < V) ++precision;
  std::vector<std::vector<float>> probs;
  std::vector<std::vector<std::int64_t>> syms;
  plc::BatchEncoder enc(n, precision);
  for (std::size_t t = 0; t < steps; ++t) {
    probs.push_back(random_probs(rng, n, V));
    std::vector<std::int64_t> s(n);
    for (auto& x : s) x = static_cast<std::int64_t>(rng() % V);
    syms.push_back(s);
    if (t % 2) {
      enc.encode_probs(probs[t].data(), n, V, s.data(), nullptr);
    } else {
      std::vector<std::uint32_t> cdf(n * (V + 1));
      plc::quantize(probs[t].data(), n, V, precision, cdf.data());
      enc.encode_cdf(cdf.data(), n, V, s.data(), nullptr);
    }
  }
  auto streams = enc.finish();
  std::vector<std::uint8_t> data;
  std::vector<std::size_t> offsets{0};
  for (auto& s : streams) {
    data.insert(data.end(), s.begin(), s.end());
    offsets.push_back(data.size());
  }
  plc::BatchDecoder dec(data, offsets, precision);
  std::vector<std::int64_t> out(n);
  for (std::size_t t = 0; t < steps; ++t) {
    dec.decode_probs(probs[t].data(), n, V, out.data(), nullptr);
    if (out != syms[t]) {
      std::fprintf(stderr, "round trip failed at step %zu\n", t);
      return 1;
    }
  }
  return 0;
}

// Garbage / truncated streams: every call returns symbols or throws CorruptData.
void garbage(std::mt19937_64& rng) {
  const std::size_t n = 1 + rng() % 4, V = 2 + rng() % 300;
  const int precision = 16 + static_cast<int>(rng() % 16);
  std::vector<std::uint8_t> data(rng() % 200);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  std::vector<std::size_t> offsets{0};
  for (std::size_t i = 1; i < n; ++i) offsets.push_back(data.empty() ? 0 : rng() % (data.size() + 1));
  offsets.push_back(data.size());
  std::sort(offsets.begin(), offsets.end());
  plc::BatchDecoder dec(data, offsets, precision);
  std::vector<std::int64_t> out(n);
  std::vector<std::uint32_t> cdf(n * (V + 1));
  try {
    for (int t = 0; t < 100; ++t) {
      auto p = random_probs(rng, n, V);
      if (t % 2) {
        dec.decode_probs(p.data(), n, V, out.data(), nullptr);
      } else {
        plc::quantize(p.data(), n, V, precision, cdf.data());
        dec.decode_cdf(cdf.data(), n, V, out.data(), nullptr);
      }
    }
  } catch (const plc::CorruptData&) {
  }
}

// Every misuse path throws (and frees its scratch); the objects stay usable.
int errors(std::mt19937_64& rng) {
  int caught = 0;
  auto expect = [&](auto&& f) {
    try {
      f();
    } catch (const std::exception&) {
      ++caught;
      return;
    }
    std::fprintf(stderr, "an invalid call did not throw\n");
    std::exit(1);
  };
  expect([] { plc::BatchEncoder e(2, 40); });  // precision out of range
  plc::BatchEncoder enc(2, 16);
  std::vector<std::int64_t> bad_rows{0, 0}, sym{0, 1};
  std::vector<float> p = random_probs(rng, 2, 10);
  expect([&] { enc.encode_probs(p.data(), 2, 10, sym.data(), bad_rows.data()); });  // duplicate row
  std::vector<std::int64_t> big{0, 99};
  expect([&] { enc.encode_probs(p.data(), 2, 10, big.data(), nullptr); });  // symbol outside V
  std::vector<float> nan(20, 0.0f);
  nan[3] = std::numeric_limits<float>::quiet_NaN();
  expect([&] { enc.encode_probs(nan.data(), 2, 10, sym.data(), nullptr); });  // NaN row
  std::vector<std::uint32_t> cdf(22, 0);
  expect([&] { enc.encode_cdf(cdf.data(), 2, 10, sym.data(), nullptr); });  // not a table
  std::vector<std::uint32_t> c{0, 0}, f{0, 1};
  expect([&] { enc.encode_ranges(c.data(), f.data(), 2, nullptr); });  // zero frequency
  enc.encode_probs(p.data(), 2, 10, sym.data(), nullptr);
  enc.finish();
  expect([&] { enc.finish(); });  // finished twice
  return caught;
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 300;
  std::mt19937_64 rng(20240601);
  for (long i = 0; i < iterations; ++i) {
    if (round_trip(rng)) return 1;
    garbage(rng);
  }
  const int caught = errors(rng);
#ifdef PLANT_LEAK
  new std::vector<int>(1000, 7);  // on purpose: LeakSanitizer must report this
#endif
  std::printf("coder_harness: %ld round trips, %ld garbage streams, %d error paths: ok\n", iterations, iterations,
              caught);
  return 0;
}
