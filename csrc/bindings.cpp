// bindings.cpp -- the pybind11 module pyllmcodec._core.  The ONLY file that
// includes pybind11: shapes, dtypes, exceptions and the GIL live here.
//
// Threading model: every native loop runs with the GIL released (after the
// inputs are validated and their pointers taken), so other Python threads --
// e.g. the one running the model for the next step -- keep running.  A coder
// object is not thread-safe; using one object from two threads at once raises
// RuntimeError instead of corrupting it (a try-lock per object).  The input
// arrays must not be written by another thread during a call.
//
// Copies: probs and cdf arrays are read in place (float32 / uint32,
// C-contiguous, aligned, native byte order -- anything else is a TypeError or
// ValueError with a hint, never a silent conversion).  symbols and rows (one
// integer per stream) are converted to int64 when they are not already.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "batch.hpp"
#include "cm.hpp"
#include "exact_step.hpp"
#include "intllama.hpp"
#include "mixer.hpp"
#include "quantizer.hpp"
#include "range_coder.hpp"
#include "wavematch.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
namespace plc = pyllmcodec;

namespace {

constexpr int kNpyAligned = 0x0100;  // NPY_ARRAY_ALIGNED

struct Matrix {
  py::array arr;  // keeps the data alive
  std::size_t rows = 0, cols = 0;
};

// A 2-D C-contiguous array of exactly dtype T, read in place.
template <class T>
Matrix matrix_arg(const py::handle& obj, const char* name, const char* dtype_name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of " + dtype_name + ", got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().attr("isnative").cast<bool>()) {
    throw py::type_error(std::string(name) + " must have dtype " + dtype_name + " (native byte order), got " +
                         std::string(py::str(a.dtype())) + "; convert with .astype(np." + dtype_name + ")");
  }
  if (a.ndim() != 2) {
    throw py::value_error(std::string(name) + " must be 2-D [rows, symbols], got " + std::to_string(a.ndim()) +
                          "-D; use x[None, :] for a single row");
  }
  if (!(a.flags() & py::array::c_style) || !(a.flags() & kNpyAligned)) {
    throw py::value_error(std::string(name) + " must be C-contiguous and aligned; use np.ascontiguousarray()");
  }
  Matrix m;
  m.rows = static_cast<std::size_t>(a.shape(0));
  m.cols = static_cast<std::size_t>(a.shape(1));
  m.arr = std::move(a);
  return m;
}

// A 1-D integer array-like (any integer dtype) as int64.
py::array_t<std::int64_t> index_arg(const py::handle& obj, const char* name) {
  auto np = py::module_::import("numpy");
  py::array a = np.attr("asarray")(obj);
  const char kind = a.dtype().kind();
  if (!(kind == 'i' || kind == 'u') && !(a.size() == 0 && kind == 'f')) {
    throw py::type_error(std::string(name) + " must be an integer array, got dtype " + std::string(py::str(a.dtype())));
  }
  if (a.ndim() != 1) {
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + "-D");
  }
  if (kind == 'u' && a.dtype().itemsize() == 8) {
    // uint64 values >= 2^63 must not wrap into valid-looking indices.
    if (a.size() && py::bool_(np.attr("any")(a.attr("__gt__")(py::int_(INT64_MAX))))) {
      throw py::value_error(std::string(name) + " has a value that does not fit int64");
    }
  }
  return py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

void check_count(std::size_t got, std::size_t want, const char* what, const char* other) {
  if (got != want) {
    throw py::value_error(std::string(what) + " has " + std::to_string(got) + " entries but " + other + " has " +
                          std::to_string(want) + " rows");
  }
}

// Optional rows: returns nullptr when None.
struct Rows {
  py::array_t<std::int64_t> arr;
  const std::int64_t* ptr = nullptr;
};
Rows rows_arg(const py::object& rows, std::size_t m, const char* other) {
  Rows r;
  if (rows.is_none()) return r;
  r.arr = index_arg(rows, "rows");
  check_count(static_cast<std::size_t>(r.arr.size()), m, "rows", other);
  r.ptr = r.arr.data();
  return r;
}

py::array_t<std::uint32_t> u32_vec_arg(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of uint32");
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<std::uint32_t>>(a) || !a.dtype().attr("isnative").cast<bool>()) {
    throw py::type_error(std::string(name) + " must have dtype uint32, got " + std::string(py::str(a.dtype())) +
                         "; convert with .astype(np.uint32)");
  }
  if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
  return py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

// Optional match overrides of the integer quantizer: match (int64, -1 =
// none) and q (uint32), both or neither, one entry per row.
struct Match {
  py::array_t<std::int64_t> m_arr;
  py::array_t<std::uint32_t> q_arr;
  const std::int64_t* m = nullptr;
  const std::uint32_t* q = nullptr;
};
Match match_arg(const py::object& match, const py::object& q, std::size_t n, const char* other) {
  Match r;
  if (match.is_none() != q.is_none()) throw py::value_error("pass both match and q, or neither");
  if (match.is_none()) return r;
  r.m_arr = index_arg(match, "match");
  r.q_arr = u32_vec_arg(q, "q");
  check_count(static_cast<std::size_t>(r.m_arr.size()), n, "match", other);
  check_count(static_cast<std::size_t>(r.q_arr.size()), n, "q", other);
  r.m = r.m_arr.data();
  r.q = r.q_arr.data();
  return r;
}

// The arguments of an integer-weights call (encode_weights / decode_weights,
// ContextMixer.encode / decode): weights uint32 [n, V], the symbols (encoders
// only: pass None otherwise), rows and the match overrides, all checked.
struct WeightsCall {
  Matrix w;
  py::array_t<std::int64_t> sym;
  Rows r;
  Match mt;
  const std::uint32_t* wp() const { return static_cast<const std::uint32_t*>(w.arr.data()); }
};
WeightsCall weights_call(const py::object& weights, const py::object& symbols, const py::object& rows,
                         const py::object& match, const py::object& q) {
  WeightsCall c;
  c.w = matrix_arg<std::uint32_t>(weights, "weights", "uint32");
  if (!symbols.is_none()) {
    c.sym = index_arg(symbols, "symbols");
    check_count(static_cast<std::size_t>(c.sym.size()), c.w.rows, "symbols", "weights");
  }
  c.r = rows_arg(rows, c.w.rows, "weights");
  c.mt = match_arg(match, q, c.w.rows, "weights");
  return c;
}

class Busy {
 public:
  explicit Busy(std::mutex& m) : lock_(m, std::try_to_lock) {
    if (!lock_.owns_lock()) {
      throw std::runtime_error("this coder object is in use by another thread; coder objects are not thread-safe");
    }
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

struct PyEncoder {
  plc::BatchEncoder enc;
  std::mutex mu;
  PyEncoder(std::size_t n, int p) : enc(n, p) {}
};

struct PyDecoder {
  plc::BatchDecoder dec;
  std::mutex mu;
  PyDecoder(std::vector<std::uint8_t> d, std::vector<std::size_t> o, int p) : dec(std::move(d), std::move(o), p) {}
};

std::unique_ptr<PyDecoder> make_decoder(const py::iterable& streams, int precision) {
  std::vector<std::uint8_t> data;
  std::vector<std::size_t> offsets{0};
  std::size_t k = 0;
  for (py::handle s : streams) {
    Py_buffer view;
    if (PyUnicode_Check(s.ptr()) || PyObject_GetBuffer(s.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) {
      PyErr_Clear();
      throw py::type_error("streams[" + std::to_string(k) + "] must be a contiguous bytes-like object, got " +
                           std::string(py::str(py::type::of(s).attr("__name__"))));
    }
    const auto* b = static_cast<const std::uint8_t*>(view.buf);
    data.insert(data.end(), b, b + view.len);
    PyBuffer_Release(&view);
    offsets.push_back(data.size());
    ++k;
  }
  return std::make_unique<PyDecoder>(std::move(data), std::move(offsets), precision);
}

struct PyMixer {
  plc::mix::MatchMixer mx;
  std::mutex mu;
  PyMixer(std::size_t n, std::size_t max_len, const plc::mix::Spec& s) : mx(n, max_len, s) {}
};

struct PyWaveMatch {
  plc::wave::WaveMatch mx;
  std::mutex mu;
  PyWaveMatch(std::size_t n, std::size_t max_len, const plc::wave::Spec& s) : mx(n, max_len, s) {}
};

// push or feed (MatchMixer, WaveMatch, ContextMixer): one symbol per row (rows[k], or k), under the owner's
// lock, the GIL released while appending.
template <class Target>
void append_symbols(std::mutex& mu, Target& target, const py::object& symbols, const py::object& rows,
                    void (Target::*append)(const std::int64_t*, std::size_t, const std::int64_t*)) {
  Busy busy(mu);
  auto sym = index_arg(symbols, "symbols");
  const std::size_t n = static_cast<std::size_t>(sym.size());
  Rows r = rows_arg(rows, n, "symbols");
  const std::int64_t* sp = sym.data();
  py::gil_scoped_release nogil;
  (target.*append)(sp, n, r.ptr);
}

// cm3's priors (the mixers' initial weights, cm.hpp Params::priors) from an
// integer array, or null for None; the size and range are Params::validate's.
std::shared_ptr<const std::vector<std::int32_t>> priors_arg(const py::object& priors) {
  if (priors.is_none()) return nullptr;
  auto a = index_arg(priors, "priors");
  auto v = std::make_shared<std::vector<std::int32_t>>(static_cast<std::size_t>(a.size()));
  for (py::ssize_t k = 0; k < a.size(); ++k) {
    const std::int64_t x = a.data()[k];
    if (x < -plc::cm::kPriorMax || x > plc::cm::kPriorMax)
      throw py::value_error("priors[" + std::to_string(k) + "] = " + std::to_string(x) + " is outside -2^24..2^24");
    (*v)[static_cast<std::size_t>(k)] = static_cast<std::int32_t>(x);
  }
  return v;
}

struct PyCm {
  plc::cm::ContextMixer cm;
  std::mutex mu;
  PyCm(const std::vector<std::int64_t>& g, const std::vector<int>& b,
       const std::vector<std::shared_ptr<plc::cm::State>>& s, int kind, std::size_t max_len,
       std::shared_ptr<const std::vector<std::int32_t>> priors)
      : cm(g, b, s, kind, max_len, std::move(priors)) {}
};

std::unique_ptr<PyCm> make_cm(const py::object& groups, const py::object& table_bits, const py::object& states,
                              int kind, std::size_t max_len, const py::object& priors) {
  auto g = index_arg(groups, "groups");
  auto b = index_arg(table_bits, "table_bits");
  std::vector<int> bits;
  for (py::ssize_t i = 0; i < b.size(); ++i) {
    const std::int64_t v = b.data()[i];
    if (v < 10 || v > 24) throw py::value_error("table_bits[" + std::to_string(i) + "] must be in 10..24");
    bits.push_back(static_cast<int>(v));
  }
  std::vector<std::shared_ptr<plc::cm::State>> st;
  if (!states.is_none()) {
    if (py::isinstance<py::str>(states) || py::isinstance<py::bytes>(states))
      throw py::type_error("states must be a sequence of CmState or None, one per group");
    for (py::handle h : states.cast<py::sequence>()) {
      if (h.is_none()) {
        st.push_back(nullptr);
      } else if (py::isinstance<plc::cm::State>(h)) {
        st.push_back(h.cast<std::shared_ptr<plc::cm::State>>());
      } else {
        throw py::type_error("states[" + std::to_string(st.size()) + "] must be a CmState or None, got " +
                             std::string(py::str(py::type::of(h).attr("__name__"))));
      }
    }
  }
  return std::make_unique<PyCm>(std::vector<std::int64_t>(g.data(), g.data() + g.size()), bits, st, kind, max_len,
                                priors_arg(priors));
}

std::unique_ptr<PyMixer> make_mixer(std::size_t n_rows, std::size_t max_len, const py::object& prior, int min_len,
                                    int hash_bits, int init_count, int limit) {
  plc::mix::Spec s;
  s.min_len = min_len;
  s.hash_bits = hash_bits;
  s.init_count = init_count;
  s.limit = limit;
  auto pr = index_arg(prior, "prior");
  if (pr.size() != plc::mix::kCells) {
    throw py::value_error("prior must have " + std::to_string(plc::mix::kCells) + " entries, got " +
                          std::to_string(pr.size()));
  }
  for (int c = 0; c < plc::mix::kCells; ++c) {
    const std::int64_t v = pr.data()[c];
    if (v < 1 || v > 65535) throw py::value_error("prior[" + std::to_string(c) + "] must be in 1..65535");
    s.prior[c] = static_cast<std::uint16_t>(v);
  }
  return std::make_unique<PyMixer>(n_rows, max_len, s);
}


// ---- the exact integer step (csrc/exact_step.hpp) ----

// arrays[name] as a C-contiguous array of exactly dtype T and the given shape
// (-1: any extent); ValueError naming the array otherwise.
template <class T>
py::array_t<T> exact_array(const py::dict& arrays, const std::string& name, std::vector<py::ssize_t> shape) {
  if (!arrays.contains(name)) throw py::value_error("the exact model lacks the array '" + name + "'");
  py::object obj = arrays[py::str(name)];
  if (!py::isinstance<py::array>(obj)) {  // numpy scalars (to_arrays' np.int64) become 0-d arrays; no casts
    if (!py::isinstance(obj, py::module_::import("numpy").attr("generic"))) {
      throw py::value_error("'" + name + "' is not a numpy array");
    }
    obj = py::module_::import("numpy").attr("asarray")(obj);
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().attr("isnative").cast<bool>()) {
    throw py::value_error("array '" + name + "' has dtype " + std::string(py::str(a.dtype())) + ", expected " +
                          std::string(py::str(py::dtype::of<T>())));
  }
  if (static_cast<std::size_t>(a.ndim()) != shape.size()) {
    throw py::value_error("array '" + name + "' has " + std::to_string(a.ndim()) + " dimensions, expected " +
                          std::to_string(shape.size()));
  }
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] >= 0 && a.shape(static_cast<py::ssize_t>(i)) != shape[i]) {
      throw py::value_error("array '" + name + "' has the wrong shape (dimension " + std::to_string(i) + " is " +
                            std::to_string(a.shape(static_cast<py::ssize_t>(i))) + ", expected " +
                            std::to_string(shape[i]) + ")");
    }
  }
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

std::int64_t exact_scalar(const py::dict& arrays, const std::string& name, std::int64_t lo, std::int64_t hi) {
  auto a = exact_array<std::int64_t>(arrays, name, {});
  const std::int64_t v = *a.data();
  if (v < lo || v > hi) {
    throw py::value_error(name + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
  }
  return v;
}

plc::exact::Linear exact_linear(const py::dict& arrays, const std::string& p, py::ssize_t out, py::ssize_t in,
                                std::int64_t max_in, std::int64_t lim) {
  auto w = exact_array<std::int8_t>(arrays, p + ".w", {out, in});
  auto m = exact_array<std::int64_t>(arrays, p + ".m", {w.shape(0)});
  auto b = exact_array<std::int64_t>(arrays, p + ".b", {w.shape(0)});
  const std::int64_t sh = exact_scalar(arrays, p + ".sh", 1, 62);
  plc::exact::LinearSpec s{w.data(), m.data(), b.data(), static_cast<std::size_t>(w.shape(0)),
                           static_cast<std::size_t>(w.shape(1)), sh};
  return plc::exact::Model::make_linear(s, max_in, lim, p);
}

std::vector<std::int32_t> exact_table(const py::dict& arrays, const std::string& name) {
  auto t = exact_array<std::int32_t>(arrays, name, {-1});
  if (t.shape(0) < 1 || t.shape(0) > (1 << 20)) throw py::value_error("table '" + name + "' has a bad length");
  return std::vector<std::int32_t>(t.data(), t.data() + t.shape(0));
}

struct PyExact {
  plc::exact::Model model;
  int threads = 1;
};

struct PyExactState {
  plc::exact::State st;
  std::mutex mu;
  PyExactState(std::size_t b, std::size_t l, std::size_t c, std::size_t h) : st(b, l, c, h) {}
};

std::unique_ptr<PyExact> make_exact(const py::dict& arrays, int threads) {
  namespace ex = plc::exact;
  if (threads < 1 || threads > 1024) throw py::value_error("threads must be in [1, 1024]");
  auto x = std::make_unique<PyExact>();
  x->threads = threads;
  ex::Model& m = x->model;
  m.d = static_cast<std::size_t>(exact_scalar(arrays, "d_model", 1, 4096));
  m.n_head = static_cast<std::size_t>(exact_scalar(arrays, "n_head", 1, 64));
  m.head_dim = static_cast<std::size_t>(exact_scalar(arrays, "head_dim", 1, ex::kMaxHeadDim));
  m.ctx = static_cast<std::size_t>(exact_scalar(arrays, "ctx", 1, ex::kMaxCtx));
  const auto n_layer = exact_scalar(arrays, "n_layer", 1, 64);
  m.ln_eps = exact_scalar(arrays, "ln_eps", 1, std::int64_t{1} << 40);
  m.ln_k = exact_scalar(arrays, "ln_k", 1, 1 << 15);
  if (m.n_head * m.head_dim != m.d) throw py::value_error("n_head * head_dim != d_model");
  const auto d = static_cast<py::ssize_t>(m.d), hd = static_cast<py::ssize_t>(m.head_dim);
  auto tok = exact_array<std::int32_t>(arrays, "tok", {-1, d});
  auto pos = exact_array<std::int32_t>(arrays, "pos", {static_cast<py::ssize_t>(m.ctx), d});
  m.n_tok = static_cast<std::size_t>(tok.shape(0));
  if (m.n_tok < 2) throw py::value_error("array 'tok' needs at least 2 rows");
  m.tok.assign(tok.data(), tok.data() + tok.size());
  m.pos.assign(pos.data(), pos.data() + pos.size());
  m.expa = exact_table(arrays, "expa");
  m.expl = exact_table(arrays, "expl");
  for (std::int64_t i = 0; i < n_layer; ++i) {
    const std::string p = "layer" + std::to_string(i);
    ex::Layer ly;
    ly.q = exact_linear(arrays, p + ".q", d, d, ex::kAct, ex::kAct);
    ly.kv = exact_linear(arrays, p + ".kv", 2 * hd, d, ex::kAct, ex::kKV);
    ly.o = exact_linear(arrays, p + ".o", d, d, ex::kKV << ex::kAttOutShift, ex::kRes);
    ly.fc1 = exact_linear(arrays, p + ".fc1", -1, d, ex::kAct, ex::kGelu);
    const auto f = static_cast<py::ssize_t>(ly.fc1.out);
    if (i == 0) m.d_mlp = ly.fc1.out;
    if (ly.fc1.out != m.d_mlp) throw py::value_error("array '" + p + ".fc1.w': every layer needs the same d_mlp");
    ly.fc2 = exact_linear(arrays, p + ".fc2", d, f, ex::kGelu, ex::kRes);
    ly.att_shift = static_cast<int>(exact_scalar(arrays, p + ".att_shift", 0, 40));
    auto g = exact_array<std::int16_t>(arrays, p + ".gelu", {2 * ex::kGelu + 1});
    ly.gelu.assign(g.data(), g.data() + g.size());
    m.layers.push_back(std::move(ly));
  }
  m.head = exact_linear(arrays, "head", -1, d, ex::kAct, ex::kLogit);
  m.vocab = m.head.out;
  if (m.vocab < 2 || m.vocab > (1 << 16)) throw py::value_error("array 'head.w' needs 2..65536 rows");
  m.check_all();
  return x;
}

// ---- the exact integer Llama (csrc/intllama.hpp) ----

struct PyLlama {
  plc::llama::Model model;
  int threads = 1;
};

struct PyLlamaState {
  plc::llama::State st;
  std::mutex mu;
  PyLlamaState(std::size_t b, std::size_t l, std::size_t kv, std::size_t c) : st(b, l, kv, c) {}
};

std::vector<std::int32_t> llama_table(const py::dict& tables, const std::string& name, std::size_t max_len) {
  auto t = exact_array<std::int32_t>(tables, name, {-1});
  if (t.shape(0) < 1 || static_cast<std::size_t>(t.shape(0)) > max_len) {
    throw py::value_error("table '" + name + "' has a bad length (1.." + std::to_string(max_len) + ")");
  }
  return std::vector<std::int32_t>(t.data(), t.data() + t.shape(0));
}

std::unique_ptr<PyLlama> make_llama(const py::dict& arrays, const py::dict& tables, int threads) {
  namespace ll = plc::llama;
  if (threads < 1 || threads > 256) throw py::value_error("threads must be in [1, 256]");
  auto x = std::make_unique<PyLlama>();
  x->threads = threads;
  ll::Model& m = x->model;
  auto rc = exact_array<std::int16_t>(tables, "rope_cos", {-1, -1});
  auto rs = exact_array<std::int16_t>(tables, "rope_sin", {rc.shape(0), rc.shape(1)});
  const auto L = exact_scalar(arrays, "n_layer", 1, 128);
  const auto d = exact_scalar(arrays, "d_model", 32, 8192);
  const auto H = exact_scalar(arrays, "n_head", 1, 64);
  const auto KV = exact_scalar(arrays, "n_kv_head", 1, H);
  const auto f = exact_scalar(arrays, "d_mlp", 32, 32768);
  const auto V = exact_scalar(arrays, "vocab", 2, 1 << 20);
  const auto ctx = exact_scalar(arrays, "ctx", 1, rc.shape(0));
  m.eps = exact_scalar(arrays, "eps", 0, std::int64_t{1} << 40);
  if (d % 32 || f % 32 || d % H || H % KV || d / H != 64 || rc.shape(1) != 32) {
    throw py::value_error("unsupported shape: d_model " + std::to_string(d) + ", n_head " + std::to_string(H) +
                          ", n_kv_head " + std::to_string(KV) + ", d_mlp " + std::to_string(f) +
                          " (blocks of 32, head_dim 64, rotary tables [ctx, 32])");
  }
  if (d > 64 * 32 || f > 64 * 32) {
    throw py::value_error("an input longer than 64 blocks would break the int64 bound of the products");
  }
  m.n_layer = static_cast<std::size_t>(L);
  m.d = static_cast<std::size_t>(d);
  m.H = static_cast<std::size_t>(H);
  m.KV = static_cast<std::size_t>(KV);
  m.f = static_cast<std::size_t>(f);
  m.V = static_cast<std::size_t>(V);
  m.ctx = static_cast<std::size_t>(ctx);
  m.rope_cos.assign(rc.data(), rc.data() + ctx * 32);
  m.rope_sin.assign(rs.data(), rs.data() + ctx * 32);
  auto silu = exact_array<std::int32_t>(tables, "silu", {ll::kSiluLen});
  m.silu.assign(silu.data(), silu.data() + silu.size());
  for (std::int64_t v : m.silu) {
    if (v >= (std::int64_t{1} << 27) || v <= -(std::int64_t{1} << 27)) {
      throw py::value_error("table 'silu' has entries beyond 2**27");
    }
  }
  m.expa = llama_table(tables, "expa", ll::kMaxExpa);
  m.expl = llama_table(tables, "expl", std::size_t{1} << 20);
  ll::Model::check_table(m.expa, ll::kExpaOne, "expa");
  ll::Model::check_table(m.expl, ll::kExplOne, "expl");
  const py::ssize_t hd = 64, kvd = KV * hd;
  struct Held {
    py::array_t<std::uint8_t> q;
    py::array_t<std::int16_t> d, m, e;
  };
  auto q41 = [&](const std::string& name, py::ssize_t out, py::ssize_t in, Held& h) {
    h.q = exact_array<std::uint8_t>(arrays, name + ".q", {out, in / 2});
    h.d = exact_array<std::int16_t>(arrays, name + ".d", {out, in / 32});
    h.m = exact_array<std::int16_t>(arrays, name + ".m", {out, in / 32});
    h.e = exact_array<std::int16_t>(arrays, name + ".e", {out});
    ll::MatSpec s{name, h.q.data(), h.d.data(), h.m.data(), h.e.data(), static_cast<std::size_t>(out),
                  static_cast<std::size_t>(in)};
    ll::Model::check_mat(s, false);
    return s;
  };
  auto gain = [&](const std::string& name) {
    auto g = exact_array<std::int32_t>(arrays, name, {d});
    return ll::Model::gain(g.data(), static_cast<std::size_t>(d), name);
  };
  for (std::int64_t i = 0; i < L; ++i) {
    const std::string p = "l" + std::to_string(i) + ".";
    Held hq, hk, hv, ho, hg, hu, hdn;
    ll::Layer ly;
    const ll::MatSpec sq = q41(p + "q", d, d, hq), sk = q41(p + "k", kvd, d, hk), sv = q41(p + "v", kvd, d, hv);
    const ll::MatSpec so = q41(p + "o", d, d, ho), sg = q41(p + "gate", f, d, hg), su = q41(p + "up", f, d, hu);
    const ll::MatSpec sd = q41(p + "down", d, f, hdn);
    ly.qkv = ll::Model::pack({sq, sk, sv}, false);
    ly.o = ll::Model::pack({so}, false);
    ly.gu = ll::Model::pack({sg, su}, false);
    ly.down = ll::Model::pack({sd}, false);
    ly.g1 = gain(p + "attn_norm");
    ly.g2 = gain(p + "mlp_norm");
    m.layers.push_back(std::move(ly));
  }
  m.norm = gain("norm");
  auto eq = exact_array<std::int8_t>(arrays, "embed.q", {V, d});
  auto ed = exact_array<std::int16_t>(arrays, "embed.d", {V, d / 32});
  auto ee = exact_array<std::int16_t>(arrays, "embed.e", {V});
  ll::MatSpec se{"embed.d'/'embed.e", reinterpret_cast<const std::uint8_t*>(eq.data()), ed.data(), nullptr, ee.data(),
                 static_cast<std::size_t>(V), static_cast<std::size_t>(d)};
  ll::Model::check_mat(se, true);
  m.head = ll::Model::pack({se}, true);
  m.eq.assign(eq.data(), eq.data() + eq.size());
  m.ed.assign(ed.data(), ed.data() + ed.size());
  m.ee.assign(ee.data(), ee.data() + ee.size());
  return x;
}

}  // namespace

// The properties every exact step's state shares (IntLMState, IntLlamaState):
// the position (settable, checked, under the state's lock), rows and bytes.
template <class S>
void state_properties(py::class_<S> cls) {
  cls.def_property(
         "position", [](const S& s) { return s.st.position; },
         [](S& s, std::size_t p) {
           Busy busy(s.mu);
           if (p > s.st.ctx()) throw py::value_error("position must be in [0, " + std::to_string(s.st.ctx()) + "]");
           s.st.position = p;
         },
         "Steps taken (settable: the benchmark moves a state to a position; the cache keeps its contents).")
      .def_property_readonly("batch_size", [](const S& s) { return s.st.batch(); })
      .def_property_readonly("nbytes", [](const S& s) { return s.st.nbytes(); });
}

// The calls MatchMixer and WaveMatch share (the same names and arguments on
// their native classes): n_rows, length, last_cells, mix_int, push, feed.
template <class P>
void add_match_calls(py::class_<P>& c) {
  using Native = decltype(P::mx);
  c.def_property_readonly(
       "n_rows", [](P& x) { return x.mx.n_rows(); }, "Number of rows.")
      .def(
          "length", [](P& x, std::size_t r) { return x.mx.length(r); }, "row"_a,
          "Symbols pushed into a row so far.")
      .def(
          "last_cells",
          [](P& x) {
            const std::size_t n = x.mx.n_rows();
            py::array_t<std::int64_t> cells(n), preds(n);
            for (std::size_t r = 0; r < n; ++r) {
              cells.mutable_data()[r] = x.mx.cell(r);
              preds.mutable_data()[r] = x.mx.predicted(r);
            }
            return py::make_tuple(cells, preds);
          },
          "(cell, predicted symbol) per row from its last mix; cell -1 where the row was left unchanged.")
      .def(
          "mix_int",
          [](P& x, const py::object& weights, const py::object& rows) {
            Busy busy(x.mu);
            Matrix w = matrix_arg<std::uint32_t>(weights, "weights", "uint32");
            Rows r = rows_arg(rows, w.rows, "weights");
            py::array_t<std::int64_t> match(static_cast<py::ssize_t>(w.rows));
            py::array_t<std::uint32_t> q(static_cast<py::ssize_t>(w.rows));
            const auto* wp = static_cast<const std::uint32_t*>(w.arr.data());
            std::int64_t* mp = match.mutable_data();
            std::uint32_t* qp = q.mutable_data();
            {
              py::gil_scoped_release nogil;
              x.mx.mix_int(wp, w.rows, w.cols, r.ptr, mp, qp);
            }
            return py::make_tuple(match, q);
          },
          "weights"_a, "rows"_a = py::none(),
          R"doc(The model on uint32 weights [n, V] (an exact model's rows), in integers only.

The rows are not edited: returns (match int64 [n], q uint32 [n]), the
overrides for quantize_int / encode_weights / decode_weights (match -1: none).)doc")
      .def(
          "push",
          [](P& x, const py::object& symbols, const py::object& rows) {
            append_symbols(x.mu, x.mx, symbols, rows, &Native::push);
          },
          "symbols"_a, "rows"_a = py::none(), "Feed each row the symbol coded after its last mix.")
      .def(
          "feed",
          [](P& x, const py::object& symbols, const py::object& rows) {
            append_symbols(x.mu, x.mx, symbols, rows, &Native::feed);
          },
          "symbols"_a, "rows"_a = py::none(),
          "Append a symbol to each row without coding it (a dictionary before the chunk): no mix, nothing learned.");
}

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
  m.doc() = R"doc(Native core of pyllmcodec: the quantizer and a batch range coder.

Use it through :mod:`pyllmcodec.core`, which documents the contract.)doc";

  m.attr("DEFAULT_PRECISION") = plc::quant::kDefaultPrecision;
  m.attr("MIN_PRECISION") = plc::quant::kMinPrecision;
  m.attr("MAX_PRECISION") = plc::quant::kMaxPrecision;
  m.attr("MAX_SYMBOLS") = plc::quant::kMaxSymbols;
  m.def(
      "kernels", []() { return std::string(plc::quant::kernels().name); },
      "Name of the row-kernel copy in use on this CPU ('avx2' or 'generic'; all give identical bits).");

  m.def(
      "cm_trace",
      [](const py::object& p_lm, const py::object& symbols, const py::object& offsets, bool shared, int table_bits,
         int limit, int lr, std::int64_t wave, bool keep, int kind, const py::object& priors, bool weights) {
        if (wave < 0) throw py::value_error("wave must be >= 0 (0: all chunks in one wave)");
        Matrix p = matrix_arg<std::uint16_t>(p_lm, "p_lm", "uint16");
        if (p.cols != 8) throw py::value_error("p_lm must be [n, 8]: the model's P(bit = 1) per bit, MSB first");
        auto sym = index_arg(symbols, "symbols");
        check_count(static_cast<std::size_t>(sym.size()), p.rows, "symbols", "p_lm");
        std::vector<std::int64_t> off{0, static_cast<std::int64_t>(p.rows)};
        if (!offsets.is_none()) {
          auto o = index_arg(offsets, "offsets");
          off.assign(o.data(), o.data() + o.size());
          if (off.size() < 2 || off.front() != 0 || off.back() != static_cast<std::int64_t>(p.rows))
            throw py::value_error("offsets must run from 0 to n");
          for (std::size_t i = 1; i < off.size(); ++i)
            if (off[i] < off[i - 1]) throw py::value_error("offsets must not decrease");
        }
        plc::cm::Params prm;
        prm.table_bits = table_bits;
        prm.limit = limit;
        prm.lr = lr;
        prm.kind = kind;
        prm.priors = priors_arg(priors);
        prm.validate();
        if (weights && kind != 3) throw py::value_error("weights=True needs kind 3 (cm3)");
        const auto* pp = static_cast<const std::uint16_t*>(p.arr.data());
        const std::int64_t* sp = sym.data();
        for (std::size_t k = 0; k < p.rows; ++k) {
          if (sp[k] < 0 || sp[k] > 255) throw py::value_error("symbols must be bytes (0..255)");
          for (int j = 0; j < 8; ++j)
            if (pp[k * 8 + j] == 0) throw py::value_error("p_lm entries must be in 1..65535");
        }
        py::array_t<std::uint16_t> out({static_cast<py::ssize_t>(p.rows), py::ssize_t{8}});
        std::uint16_t* op = out.mutable_data();
        std::vector<std::int32_t> last;  // weights=True: the weights of the state that coded the last chunk
        {
          py::gil_scoped_release nogil;
          const std::size_t n_chunks = off.size() - 1;
          const std::size_t per = wave ? static_cast<std::size_t>(wave) : std::max<std::size_t>(n_chunks, 1);
          std::vector<plc::cm::RowCtx> ctx(n_chunks);
          std::vector<std::unique_ptr<plc::cm::Model>> models(shared ? 1 : n_chunks);
          for (std::size_t w0 = 0; w0 < n_chunks; w0 += per) {  // waves of `per` chunks, one after another
            const std::size_t w1 = std::min(n_chunks, w0 + per);
            for (std::size_t c = shared ? 0 : w0; c < (shared ? 1 : w1); ++c)
              if (!models[c] || !keep) models[c] = std::make_unique<plc::cm::Model>(prm);
            std::int64_t longest = 0;
            for (std::size_t c = w0; c < w1; ++c) longest = std::max(longest, off[c + 1] - off[c]);
            for (std::size_t c = w0; c < w1; ++c)
              models[shared ? 0 : c]->attach(ctx[c], static_cast<std::size_t>(longest));
            for (std::int64_t t = 0; t < longest; ++t) {  // step t: every chunk's byte t, in chunk order
              for (std::size_t c = w0; c < w1; ++c) {
                const std::int64_t k = off[c] + t;
                if (k >= off[c + 1]) continue;
                plc::cm::Model& md = *models[shared ? 0 : c];
                for (int j = 0; j < 8; ++j) {
                  op[k * 8 + j] = static_cast<std::uint16_t>(md.predict(ctx[c], pp[k * 8 + j]));
                  md.update(ctx[c], static_cast<int>(sp[k] >> (7 - j)) & 1);
                }
              }
            }
          }
          if (weights && !models.empty() && models.back()) last = models.back()->weights();
        }
        if (!weights) return py::object(out);
        py::array_t<std::int32_t> w(static_cast<py::ssize_t>(last.size()));
        std::copy(last.begin(), last.end(), w.mutable_data());
        return py::object(py::make_tuple(out, w));
      },
      "p_lm"_a, "symbols"_a, "offsets"_a = py::none(), "shared"_a = false, "table_bits"_a = 16, "limit"_a = 255,
      "lr"_a = 8, "wave"_a = 0, "keep"_a = false, "kind"_a = 1, "priors"_a = py::none(), "weights"_a = false,
      R"doc(The context-mixing stage (csrc/cm.hpp) over chunks of bytes, as a wave codes them.

p_lm: uint16 [n, 8], the model's P(bit = 1) (units 2**-16, 1..65535) for
each byte's bits, MSB first, given the bits before it; symbols: the n bytes;
offsets: the chunks' boundaries (None: one chunk).  Step t codes every
chunk's byte t in chunk order, each chunk with its own state, or with one
state for all (shared).  wave: chunks per wave (0: all in one), the waves
run one after another, each with fresh states, or (keep) the shared state
carried from wave to wave (the long mode).  priors (kind 3): the fresh
states' initial mixer weights (int [CM3_PRIOR_WEIGHTS], csrc/cm.hpp Params::priors).
Returns uint16 [n, 8], the stage's P(bit = 1) for each bit (what the coder
codes with), and with weights=True (kind 3) also the mixers' final weights
(int32 [CM3_PRIOR_WEIGHTS], the priors' layout) of the state that coded the
last chunk.  For tests, studies and fitting priors.)doc");
  m.attr("CM3_PRIOR_WEIGHTS") = py::int_(plc::cm::kPriorWeights);

  // C++ errors -> Python.  CorruptData -> pyllmcodec.errors.CodecError;
  // InvalidInput (std::invalid_argument) -> ValueError via pybind11's default.
  static py::gil_safe_call_once_and_store<py::object> codec_error_storage;
  codec_error_storage.call_once_and_store_result(
      []() { return py::module_::import("pyllmcodec.errors").attr("CodecError"); });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const plc::CorruptData& e) {
      PyErr_SetString(codec_error_storage.get_stored().ptr(), e.what());
    }
  });

  m.def(
      "quantize",
      [](const py::object& probs, int precision, const py::object& out) {
        Matrix p = matrix_arg<float>(probs, "probs", "float32");
        plc::quant::check_shape(p.cols, precision);
        py::array result;
        if (out.is_none()) {
          result = py::array_t<std::uint32_t>({p.rows, p.cols + 1});
        } else {
          Matrix o = matrix_arg<std::uint32_t>(out, "out", "uint32");
          if (o.rows != p.rows || o.cols != p.cols + 1) {
            throw py::value_error("out must have shape (" + std::to_string(p.rows) + ", " +
                                  std::to_string(p.cols + 1) + "), got (" + std::to_string(o.rows) + ", " +
                                  std::to_string(o.cols) + ")");
          }
          if (!o.arr.writeable()) throw py::value_error("out must be writeable");
          result = o.arr;
        }
        const float* src = static_cast<const float*>(p.arr.data());
        auto* dst = static_cast<std::uint32_t*>(result.mutable_data());
        {
          py::gil_scoped_release nogil;
          plc::quantize(src, p.rows, p.cols, precision, dst);
        }
        return result;
      },
      "probs"_a, "precision"_a = plc::quant::kDefaultPrecision, "out"_a = py::none(),
      R"doc(Quantize float32 probabilities [B, V] to uint32 cumulative frequencies [B, V+1].

Rows need not be normalised.  Each output row starts at 0, ends at exactly
2**precision and gives every symbol a frequency >= 1.  Deterministic on every
machine (fixed-order row sum, float32 products; see csrc/quantizer.hpp for the
contract and its proof).  `out` (uint32 [B, V+1], C-contiguous) is filled and
returned instead of allocating a new array.

Raises ValueError naming the row if a row holds NaN, inf, a negative value,
sums to zero or has a sum >= 2**100, and if V < 2 or
V > min(2**(precision-1), MAX_SYMBOLS).  On an error `out` may be partly
written.)doc");

  m.def(
      "quantize_int",
      [](const py::object& weights, int precision, const py::object& match, const py::object& q,
         const py::object& out) {
        Matrix w = matrix_arg<std::uint32_t>(weights, "weights", "uint32");
        plc::quant::check_shape(w.cols, precision);
        Match mt = match_arg(match, q, w.rows, "weights");
        py::array result;
        if (out.is_none()) {
          result = py::array_t<std::uint32_t>({w.rows, w.cols + 1});
        } else {
          Matrix o = matrix_arg<std::uint32_t>(out, "out", "uint32");
          if (o.rows != w.rows || o.cols != w.cols + 1) {
            throw py::value_error("out must have shape (" + std::to_string(w.rows) + ", " +
                                  std::to_string(w.cols + 1) + ")");
          }
          if (!o.arr.writeable()) throw py::value_error("out must be writeable");
          result = o.arr;
        }
        const auto* src = static_cast<const std::uint32_t*>(w.arr.data());
        auto* dst = static_cast<std::uint32_t*>(result.mutable_data());
        {
          py::gil_scoped_release nogil;
          plc::quantize_int(src, w.rows, w.cols, precision, mt.m, mt.q, dst);
        }
        return result;
      },
      "weights"_a, "precision"_a = plc::quant::kDefaultPrecision, "match"_a = py::none(), "q"_a = py::none(),
      "out"_a = py::none(),
      R"doc(Quantize uint32 weights [B, V] to uint32 cumulative frequencies [B, V+1] in integers only.

The CDF entry of the exact models: no float touches the table (contract and
proof in csrc/quantizer_int.hpp).  Optional match (int64 [B], -1 = none) and
q (uint32 [B], 1..65535): row k's symbol match[k] gets q[k] / 2**16 of the
mass (the match model's override, MatchMixer.mix_int).  Raises ValueError
naming the row if a row sums to zero or an override is out of range.)doc");

  py::class_<PyEncoder>(m, "BatchEncoder", R"doc(Encodes n_streams independent range-coded streams, one symbol per stream per call.

Each call is all-or-nothing: on an error no stream changes.  Not thread-safe
(concurrent use of one object raises RuntimeError); the GIL is released while
coding.)doc")
      .def(py::init<std::size_t, int>(), "n_streams"_a, "precision"_a = plc::quant::kDefaultPrecision,
           "Create an encoder for n_streams streams with frequencies out of 2**precision.")
      .def_property_readonly(
          "n_streams", [](PyEncoder& e) { return e.enc.n_streams(); }, "Number of streams.")
      .def_property_readonly(
          "precision", [](PyEncoder& e) { return e.enc.precision(); }, "Frequencies sum to 2**precision.")
      .def(
          "encode",
          [](PyEncoder& e, const py::object& cdf, const py::object& symbols, const py::object& rows) {
            Busy busy(e.mu);
            Matrix c = matrix_arg<std::uint32_t>(cdf, "cdf", "uint32");
            if (c.cols < 1) throw py::value_error("cdf rows need V+1 >= 3 entries");
            auto sym = index_arg(symbols, "symbols");
            check_count(static_cast<std::size_t>(sym.size()), c.rows, "symbols", "cdf");
            Rows r = rows_arg(rows, c.rows, "cdf");
            const auto* cp = static_cast<const std::uint32_t*>(c.arr.data());
            const std::int64_t* sp = sym.data();
            py::gil_scoped_release nogil;
            e.enc.encode_cdf(cp, c.rows, c.cols - 1, sp, r.ptr);
          },
          "cdf"_a, "symbols"_a, "rows"_a = py::none(),
          R"doc(Encode symbols[k] with cumulative table cdf[k] (uint32 [n, V+1], as from quantize()).

Without rows, row k belongs to stream k and n must equal n_streams; with
rows (unique stream indices, int array of length n), row k belongs to stream
rows[k] and the other streams do not code in this step.  Each cdf row is
checked (starts at 0, ends at 2**precision, never decreases).)doc")
      .def(
          "encode_probs",
          [](PyEncoder& e, const py::object& probs, const py::object& symbols, const py::object& rows) {
            Busy busy(e.mu);
            Matrix p = matrix_arg<float>(probs, "probs", "float32");
            auto sym = index_arg(symbols, "symbols");
            check_count(static_cast<std::size_t>(sym.size()), p.rows, "symbols", "probs");
            Rows r = rows_arg(rows, p.rows, "probs");
            const auto* pp = static_cast<const float*>(p.arr.data());
            const std::int64_t* sp = sym.data();
            py::gil_scoped_release nogil;
            e.enc.encode_probs(pp, p.rows, p.cols, sp, r.ptr);
          },
          "probs"_a, "symbols"_a, "rows"_a = py::none(),
          R"doc(Quantize and encode in one pass: same bits as encode(quantize(probs, precision), symbols, rows).

probs is float32 [n, V]; the CDF matrix is never built (each row is read
once to normalise and then only up to the coded symbol).)doc")
      .def(
          "encode_weights",
          [](PyEncoder& e, const py::object& weights, const py::object& symbols, const py::object& rows,
             const py::object& match, const py::object& q) {
            Busy busy(e.mu);
            const WeightsCall c = weights_call(weights, symbols, rows, match, q);
            py::gil_scoped_release nogil;
            e.enc.encode_weights(c.wp(), c.w.rows, c.w.cols, c.sym.data(), c.r.ptr, c.mt.m, c.mt.q);
          },
          "weights"_a, "symbols"_a, "rows"_a = py::none(), "match"_a = py::none(), "q"_a = py::none(),
          R"doc(Integer-quantize and encode in one pass: same bits as encode(quantize_int(weights, precision, match, q), symbols, rows).)doc")
      .def(
          "encode_ranges",
          [](PyEncoder& e, const py::object& cum_low, const py::object& freq, const py::object& rows) {
            Busy busy(e.mu);
            auto c = u32_vec_arg(cum_low, "cum_low");
            auto f = u32_vec_arg(freq, "freq");
            check_count(static_cast<std::size_t>(f.size()), static_cast<std::size_t>(c.size()), "freq", "cum_low");
            Rows r = rows_arg(rows, static_cast<std::size_t>(c.size()), "cum_low");
            const std::uint32_t* cp = c.data();
            const std::uint32_t* fp = f.data();
            const std::size_t n = static_cast<std::size_t>(c.size());
            py::gil_scoped_release nogil;
            e.enc.encode_ranges(cp, fp, n, r.ptr);
          },
          "cum_low"_a, "freq"_a, "rows"_a = py::none(),
          R"doc(Encode the ranges [cum_low[k], cum_low[k] + freq[k]) out of 2**precision (uint32 arrays).

For CDFs that live elsewhere (e.g. on an accelerator): cum_low = cdf[s],
freq = cdf[s+1] - cdf[s].  freq >= 1 and cum_low + freq <= 2**precision.)doc")
      .def(
          "finish",
          [](PyEncoder& e) {
            Busy busy(e.mu);
            std::vector<std::vector<std::uint8_t>> out;
            {
              py::gil_scoped_release nogil;
              out = e.enc.finish();
            }
            py::list result;
            for (const auto& v : out) result.append(py::bytes(reinterpret_cast<const char*>(v.data()), v.size()));
            return result;
          },
          R"doc(Flush every stream and return their bytes as a list (index = stream).

A stream that coded no symbol is b"".  The encoder cannot be used afterwards.)doc");

  py::class_<plc::cm::State, std::shared_ptr<plc::cm::State>>(m, "CmState",
                                                              R"doc(A context-mixing group's learned state
(counters, mixers, APMs) that outlives its wave: the long mode continues it
in the archive's next wave (ContextMixer(..., states=)).  copy() is a deep
copy.  Used by one call at a time (a second concurrent one raises
ValueError).)doc")
      .def(py::init([](int table_bits, int kind) {
             if (table_bits < 10 || table_bits > 24) throw py::value_error("table_bits must be in 10..24");
             plc::cm::Params p;
             p.table_bits = table_bits;
             p.kind = kind;
             p.validate();
             return std::make_shared<plc::cm::State>(p);
           }),
           "table_bits"_a, "kind"_a = 1, "A fresh state (the one a group starts a chain with).")
      .def_property_readonly(
          "kind", [](const plc::cm::State& x) { return x.model.params().kind; }, "1 (cm1), 2 (cm2) or 3 (cm3).")
      .def_property_readonly(
          "table_bits", [](const plc::cm::State& x) { return x.model.params().table_bits; },
          "log2 of the counters per context.")
      .def_property_readonly(
          "nbytes", [](const plc::cm::State& x) { return x.model.params().row_bytes(); }, "Bytes the state holds.")
      .def(
          "copy",
          [](const plc::cm::State& x) {
            if (x.busy.load()) throw py::value_error("this context-mixing state is in use by another call");
            py::gil_scoped_release nogil;
            return std::make_shared<plc::cm::State>(x);
          },
          "A deep copy (the GIL released while copying).");

  py::class_<PyCm>(m, "ContextMixer", R"doc(The context-mixing stage of docs/FORMAT.md section 4f for one wave.

ContextMixer(groups, table_bits, states=None): groups (int [n_rows]) gives each row's
group, 0..G-1; table_bits (int [G], 10..24) each group's table size; states
(optional: a CmState or None per group) the states to continue, each of
table_bits[g] (the long mode; None: fresh).  One
learned state (counters, mixers, APMs) per group, shared by its rows, and one
byte history per row.  Per step,
encode(enc, weights, symbols, rows, match, q) codes each row's byte as eight
binary decisions on the encoder's streams, rows in the order given (the
decoder must give the same order: decode(dec, weights, rows, match, q)).
Memory per group: about 36 * 2**table_bits bytes plus up to 0.3 MB (nbytes).  Not
thread-safe (concurrent use raises RuntimeError); the GIL is released while
coding.)doc")
      .def(py::init(&make_cm), "groups"_a, "table_bits"_a, "states"_a = py::none(), "kind"_a = 1, "max_len"_a = 0,
           "priors"_a = py::none(),
           "A stage for len(groups) rows in len(table_bits) groups, 2**table_bits[g] counters per context; "
           "priors (kind 3): the fresh states' initial mixer weights.")
      .def(
          "state", [](PyCm& x, std::size_t g) { return x.cm.state(g); }, "g"_a,
          "Group g's state (live: it goes on learning while this stage codes), to continue in a later wave.")
      .def_property_readonly(
          "n_rows", [](PyCm& x) { return x.cm.n_rows(); }, "Number of rows.")
      .def_property_readonly(
          "table_bits",
          [](PyCm& x) {
            std::vector<int> b;
            for (std::size_t g = 0; g < x.cm.n_groups(); ++g) b.push_back(x.cm.table_bits(g));
            return b;
          },
          "Each group's log2 of the counters per context.")
      .def_property_readonly(
          "nbytes", [](PyCm& x) { return x.cm.nbytes(); }, "Bytes the stage holds.")
      .def(
          "encode",
          [](PyCm& x, PyEncoder& e, const py::object& weights, const py::object& symbols, const py::object& rows,
             const py::object& match, const py::object& q) {
            Busy busy(x.mu);
            Busy busy_enc(e.mu);
            const WeightsCall c = weights_call(weights, symbols, rows, match, q);
            py::gil_scoped_release nogil;
            x.cm.encode(e.enc, c.wp(), c.w.rows, c.w.cols, c.sym.data(), c.r.ptr, c.mt.m, c.mt.q);
          },
          "encoder"_a, "weights"_a, "symbols"_a, "rows"_a = py::none(), "match"_a = py::none(), "q"_a = py::none(),
          R"doc(Code symbols[k] (bytes) on the encoder's stream rows[k] (or k), from integer weights (uint32 [n, 256]) through quantize_int with the optional match overrides, then bit by bit through the stage.)doc")
      .def(
          "decode",
          [](PyCm& x, PyDecoder& d, const py::object& weights, const py::object& rows, const py::object& match,
             const py::object& q) {
            Busy busy(x.mu);
            Busy busy_dec(d.mu);
            const WeightsCall c = weights_call(weights, py::none(), rows, match, q);
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(c.w.rows));
            std::int64_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              x.cm.decode(d.dec, c.wp(), c.w.rows, c.w.cols, op, c.r.ptr, c.mt.m, c.mt.q);
            }
            return out;
          },
          "decoder"_a, "weights"_a, "rows"_a = py::none(), "match"_a = py::none(), "q"_a = py::none(),
          R"doc(Mirror of encode: decode one byte per row; returns int64 [n].)doc")
      .def(
          "feed",
          [](PyCm& x, const py::object& symbols, const py::object& rows) {
            append_symbols(x.mu, x.cm, symbols, rows, &plc::cm::ContextMixer::feed);
          },
          "symbols"_a, "rows"_a = py::none(),
          "Read one byte per row without coding it (a dictionary before its chunk).");

  {
    py::class_<PyMixer> c(m, "MatchMixer", R"doc(The match model of docs/FORMAT.md section 4c, one state per row (chunk).

Per step: mix(probs, rows) rewrites each row's predicted symbol in place,
then push(symbols, rows) feeds the coded symbols back; the two alternate per
row.  Encoder and decoder make the same calls, so they get the same rows.
Not thread-safe (concurrent use raises RuntimeError); the GIL is released
while mixing.)doc");
    c.def(py::init(&make_mixer), "n_rows"_a, "max_len"_a, "prior"_a, "min_len"_a = 4, "hash_bits"_a = 16,
           "init_count"_a = 30, "limit"_a = 127,
           "A mixer for n_rows rows of at most max_len symbols each; prior: 256 q16 values (1..65535).")
      .def(
          "mix",
          [](PyMixer& x, const py::object& probs, const py::object& rows) {
            Busy busy(x.mu);
            Matrix p = matrix_arg<float>(probs, "probs", "float32");
            if (!p.arr.writeable()) throw py::value_error("probs must be writeable (the mixer edits it in place)");
            Rows r = rows_arg(rows, p.rows, "probs");
            auto* pp = static_cast<float*>(p.arr.mutable_data());
            py::gil_scoped_release nogil;
            x.mx.mix(pp, p.rows, p.cols, r.ptr);
          },
          "probs"_a, "rows"_a = py::none(),
          R"doc(Mix float32 probs [n, V] in place: row k belongs to mixer row rows[k] (or k).)doc");
    add_match_calls(c);
  }

  {
    py::class_<PyWaveMatch> c(m, "WaveMatch", R"doc(The wave match of docs/FORMAT.md section 4g: one state shared by a wave's rows.

A token-level match over all the wave's rows, its guess's share learned by an
adaptive map over the model's probability of the guess (csrc/wavematch.hpp).
Per step: mix_int(weights, rows) gives each row's override, push(symbols,
rows) feeds the coded symbols back; encoder and decoder make the same calls.
Not thread-safe (concurrent use raises RuntimeError); the GIL is released.)doc");
    c.def(py::init([](std::size_t n_rows, std::size_t max_len, int long_len, int min_len, int hash_bits, int rate) {
             plc::wave::Spec s;
             s.long_len = long_len;
             s.min_len = min_len;
             s.hash_bits = hash_bits;
             s.rate = rate;
             return std::make_unique<PyWaveMatch>(n_rows, max_len, s);
           }),
           "n_rows"_a, "max_len"_a, "long_len"_a = 4, "min_len"_a = 2, "hash_bits"_a = 18, "rate"_a = 5,
           "A wave match for n_rows rows of at most max_len symbols each.");
    add_match_calls(c);
  }

  py::class_<PyDecoder>(m, "BatchDecoder", R"doc(Decodes the streams written by a BatchEncoder with the same precision.

Mirror of BatchEncoder: call decode / decode_probs (or targets + advance) with
the same distributions and rows, in the same order, as the encoder.  Garbage,
truncated or foreign input never reads out of bounds or hangs: it yields
symbols or raises pyllmcodec.CodecError.  Not thread-safe; the GIL is released
while decoding.)doc")
      .def(py::init(&make_decoder), "streams"_a, "precision"_a = plc::quant::kDefaultPrecision,
           "Create a decoder over a sequence of bytes-like streams (they are copied).")
      .def_property_readonly(
          "n_streams", [](PyDecoder& d) { return d.dec.n_streams(); }, "Number of streams.")
      .def_property_readonly(
          "precision", [](PyDecoder& d) { return d.dec.precision(); }, "Frequencies sum to 2**precision.")
      .def(
          "positions",
          [](PyDecoder& d) {
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(d.dec.n_streams()));
            auto* o = out.mutable_data();
            for (std::size_t i = 0; i < d.dec.n_streams(); ++i) o[i] = static_cast<std::int64_t>(d.dec.position(i));
            return out;
          },
          R"doc(Bytes read so far per stream (int64), counting the implicit zeros read past a stream's end.

A value far above len(stream) + 7 means the stream was truncated or foreign.)doc")
      .def(
          "decode",
          [](PyDecoder& d, const py::object& cdf, const py::object& rows) {
            Busy busy(d.mu);
            Matrix c = matrix_arg<std::uint32_t>(cdf, "cdf", "uint32");
            if (c.cols < 1) throw py::value_error("cdf rows need V+1 >= 3 entries");
            Rows r = rows_arg(rows, c.rows, "cdf");
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(c.rows));
            const auto* cp = static_cast<const std::uint32_t*>(c.arr.data());
            std::int64_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              d.dec.decode_cdf(cp, c.rows, c.cols - 1, op, r.ptr);
            }
            return out;
          },
          "cdf"_a, "rows"_a = py::none(),
          R"doc(Decode one symbol per row with cumulative table cdf[k] (uint32 [n, V+1]); returns int64 [n].

rows as in BatchEncoder.encode.  Raises pyllmcodec.CodecError on corrupt data.)doc")
      .def(
          "decode_probs",
          [](PyDecoder& d, const py::object& probs, const py::object& rows) {
            Busy busy(d.mu);
            Matrix p = matrix_arg<float>(probs, "probs", "float32");
            Rows r = rows_arg(rows, p.rows, "probs");
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(p.rows));
            const auto* pp = static_cast<const float*>(p.arr.data());
            std::int64_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              d.dec.decode_probs(pp, p.rows, p.cols, op, r.ptr);
            }
            return out;
          },
          "probs"_a, "rows"_a = py::none(),
          R"doc(Quantize and decode in one pass (mirror of BatchEncoder.encode_probs); returns int64 [n].

Never builds the CDF: each row is summed once, then scanned only up to the
decoded symbol.)doc")
      .def(
          "decode_weights",
          [](PyDecoder& d, const py::object& weights, const py::object& rows, const py::object& match,
             const py::object& q) {
            Busy busy(d.mu);
            const WeightsCall c = weights_call(weights, py::none(), rows, match, q);
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(c.w.rows));
            std::int64_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              d.dec.decode_weights(c.wp(), c.w.rows, c.w.cols, op, c.r.ptr, c.mt.m, c.mt.q);
            }
            return out;
          },
          "weights"_a, "rows"_a = py::none(), "match"_a = py::none(), "q"_a = py::none(),
          R"doc(Integer-quantize and decode in one pass (mirror of BatchEncoder.encode_weights); returns int64 [n].)doc")
      .def(
          "targets",
          [](PyDecoder& d, const py::object& rows) {
            Busy busy(d.mu);
            const std::size_t m = rows.is_none() ? d.dec.n_streams() : static_cast<std::size_t>(py::len(rows));
            Rows r = rows_arg(rows, m, "rows");
            py::array_t<std::uint32_t> out(static_cast<py::ssize_t>(m));
            std::uint32_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              d.dec.targets(op, m, r.ptr);
            }
            return out;
          },
          "rows"_a = py::none(),
          R"doc(Phase 1 of a two-phase step: each stream's target value in [0, 2**precision) (uint32).

The symbol is the s with cdf[s] <= target < cdf[s+1] (e.g. searchsorted on an
accelerator); pass its (s, cdf[s], cdf[s+1] - cdf[s]) to advance().  Does not
change the decoder.)doc")
      .def(
          "advance",
          [](PyDecoder& d, const py::object& symbols, const py::object& cum_low, const py::object& freq,
             const py::object& rows) {
            Busy busy(d.mu);
            auto c = u32_vec_arg(cum_low, "cum_low");
            auto f = u32_vec_arg(freq, "freq");
            auto sym = index_arg(symbols, "symbols");
            const std::size_t n = static_cast<std::size_t>(c.size());
            check_count(static_cast<std::size_t>(f.size()), n, "freq", "cum_low");
            check_count(static_cast<std::size_t>(sym.size()), n, "symbols", "cum_low");
            Rows r = rows_arg(rows, n, "cum_low");
            const std::uint32_t* cp = c.data();
            const std::uint32_t* fp = f.data();
            py::gil_scoped_release nogil;
            d.dec.advance(cp, fp, n, r.ptr);
          },
          "symbols"_a, "cum_low"_a, "freq"_a, "rows"_a = py::none(),
          R"doc(Phase 2 of a two-phase step: consume [cum_low[k], cum_low[k] + freq[k]) on each stream.

symbols are the decoded symbols (checked for shape only; the coder needs just
the range).  Each range must contain the stream's target, else
pyllmcodec.CodecError (the distribution differs from the encoder's).)doc");

  state_properties(py::class_<PyExactState>(m, "IntLMState",
                                           "The int16 key/value caches of an IntLM step for a batch of rows."));

  py::class_<PyExact>(m, "IntLM", R"doc(The exact integer byte model's step (pyllmcodec/nets/intlm.py is its specification).

IntLM(arrays, threads=1): arrays as pyllmcodec.nets.intlm.to_arrays gives them;
every dtype, shape and bound the arithmetic relies on is checked (ValueError
naming the array).  step() splits the rows over `threads` threads; the
result does not depend on it, nor on the CPU.)doc")
      .def(py::init(&make_exact), "arrays"_a, "threads"_a = 1)
      .def_property_readonly("threads", [](const PyExact& x) { return x.threads; })
      .def_property_readonly("ctx", [](const PyExact& x) { return x.model.ctx; })
      .def_property_readonly("vocab_size", [](const PyExact& x) { return x.model.vocab; })
      .def_property_readonly("n_layer", [](const PyExact& x) { return x.model.layers.size(); })
      .def_property_readonly("kernels", [](const PyExact&) { return std::string(plc::exact::kernels().name); })
      .def_static(
          "_rdiv",
          [](const py::object& a, std::int64_t b) {
            auto v = index_arg(a, "a");
            if (b < 1 || b >= (std::int64_t{1} << 61)) throw py::value_error("b must be in [1, 2**61)");
            const std::size_t n = static_cast<std::size_t>(v.size());
            const std::int64_t* ap = v.data();
            py::array_t<std::int64_t> q(static_cast<py::ssize_t>(n));
            const plc::exact::RDiv by(b);
            for (std::size_t i = 0; i < n; ++i) {
              if (ap[i] <= -(std::int64_t{1} << 61) || ap[i] >= (std::int64_t{1} << 61)) {
                throw py::value_error("a must be in (-2**61, 2**61)");
              }
              q.mutable_data()[i] = by(ap[i]);
            }
            return q;
          },
          "a"_a, "b"_a,
          "The step's rounding division, for tests: floor((2 a + b) / 2b) through the reciprocal the step uses.")
      .def(
          "new_state",
          [](const PyExact& x, std::size_t batch) {
            if (batch < 1 || batch > (1u << 20)) throw py::value_error("batch_size must be in [1, 2**20]");
            return std::make_unique<PyExactState>(batch, x.model.layers.size(), x.model.ctx, x.model.head_dim);
          },
          "batch_size"_a, "A fresh state (position 0) for batch_size rows.")
      .def(
          "step",
          [](const PyExact& x, PyExactState& s, const py::object& tokens, const py::object& out) {
            Busy busy(s.mu);
            auto tk = index_arg(tokens, "tokens");
            const std::size_t B = s.st.batch();
            if (static_cast<std::size_t>(tk.size()) != B) {
              throw py::value_error("tokens has " + std::to_string(tk.size()) + " entries for a state of " +
                                    std::to_string(B) + " rows");
            }
            const bool ints = py::isinstance<py::array_t<std::uint32_t>>(out);
            Matrix o = ints ? matrix_arg<std::uint32_t>(out, "out", "uint32") : matrix_arg<float>(out, "out", "float32");
            if (o.rows != B || o.cols != x.model.vocab) {
              throw py::value_error("out must have shape (" + std::to_string(B) + ", " + std::to_string(x.model.vocab) +
                                    ")");
            }
            if (!o.arr.writeable()) throw py::value_error("out must be writeable");
            const std::int64_t* tp = tk.data();
            void* op = o.arr.mutable_data();
            py::gil_scoped_release nogil;
            if (ints) {
              x.model.step(s.st, tp, static_cast<std::uint32_t*>(op), x.threads);
            } else {
              x.model.step(s.st, tp, static_cast<float*>(op), x.threads);
            }
          },
          "state"_a, "tokens"_a, "out"_a,
          R"doc(One step for every row: writes out[b, v] (uint32 or float32 [B, V]) with row b's
unnormalised integer probabilities (exact in float32 too) and advances state.position.  The GIL is released.)doc");

  state_properties(py::class_<PyLlamaState>(m, "IntLlamaState", R"doc(The int8 key/value cache of an IntLlama step for a batch of rows.

Memory: n_layer * batch_size * n_kv_head * ctx * 136 bytes at most (int8 keys
and values of head_dim 64, int32 scales; SmolLM2-135M at ctx 2048: 24 MiB a
row), allocated zeroed so that only the positions stepped through are
touched, plus the step's working buffers (about batch_size * (vocab + 8 *
d_mlp) * 8 bytes).)doc"));

  py::class_<PyLlama>(m, "IntLlama", R"doc(The exact integer Llama's step (pyllmcodec/nets/intllama.py is its specification).

IntLlama(arrays, tables, threads=1): arrays as pyllmcodec.models.smollm2.int_arrays
(or intllama.random_arrays) gives them, tables as intllama.load_tables(); the
weights are copied and repacked; every dtype, shape and bound the arithmetic
relies on is checked (ValueError naming the array).  step() runs on `threads`
threads; the result does not depend on it, nor on the CPU.)doc")
      .def(py::init(&make_llama), "arrays"_a, "tables"_a, "threads"_a = 1)
      .def_property_readonly("threads", [](const PyLlama& x) { return x.threads; })
      .def_property_readonly("ctx", [](const PyLlama& x) { return x.model.ctx; })
      .def_property_readonly("vocab", [](const PyLlama& x) { return x.model.V; })
      .def_property_readonly("n_layer", [](const PyLlama& x) { return x.model.n_layer; })
      .def_property_readonly("kernels", [](const PyLlama&) { return std::string(plc::llama::kernels().name); })
      .def_static(
          "_div127",
          [](const py::object& y, std::uint64_t Y) {
            auto v = index_arg(y, "y");
            const std::size_t n = static_cast<std::size_t>(v.size());
            if (n % 8 != 0) throw py::value_error("y must hold a multiple of 8 values");
            if (Y == 0 || Y >= (std::uint64_t{1} << 55)) throw py::value_error("Y must be in [1, 2**55)");
            const std::int64_t* yp = v.data();
            for (std::size_t i = 0; i < n; ++i) {
              if (plc::llama::uabs(yp[i]) > Y) throw py::value_error("|y| must not exceed Y");
            }
            py::array_t<std::int8_t> q(static_cast<py::ssize_t>(n));
            const std::int64_t T = plc::llama::row_ops().div127(yp, n, Y, q.mutable_data());
            return py::make_tuple(q, T);
          },
          "y"_a, "Y"_a,
          "The block quantizer's rounding, for tests: (q, sum q) with q = floor((254 y + Y) / 2Y) in this "
          "CPU's row-ops copy.")
      .def(
          "new_state",
          [](const PyLlama& x, std::size_t batch) {
            if (batch < 1 || batch > (1u << 16)) throw py::value_error("batch_size must be in [1, 65536]");
            return std::make_unique<PyLlamaState>(batch, x.model.n_layer, x.model.KV, x.model.ctx);
          },
          "batch_size"_a, "A fresh state (position 0) for batch_size rows (see IntLlamaState for its memory).")
      .def(
          "step",
          [](const PyLlama& x, PyLlamaState& s, const py::object& tokens, const py::object& out) {
            Busy busy(s.mu);
            auto tk = index_arg(tokens, "tokens");
            const std::size_t B = s.st.batch();
            if (static_cast<std::size_t>(tk.size()) != B) {
              throw py::value_error("tokens has " + std::to_string(tk.size()) + " entries for a state of " +
                                    std::to_string(B) + " rows");
            }
            Matrix o = matrix_arg<std::uint32_t>(out, "out", "uint32");
            if (o.rows != B || o.cols != x.model.V) {
              throw py::value_error("out must have shape (" + std::to_string(B) + ", " + std::to_string(x.model.V) + ")");
            }
            if (!o.arr.writeable()) throw py::value_error("out must be writeable");
            const std::int64_t* tp = tk.data();
            auto* op = static_cast<std::uint32_t*>(o.arr.mutable_data());
            py::gil_scoped_release nogil;
            x.model.step(s.st, tp, op, x.threads);
          },
          "state"_a, "tokens"_a, "out"_a,
          R"doc(One step for every row: writes out[b, v] (uint32 [B, vocab]) with row b's weights
(intllama.ref_step's rows, bit for bit) and advances state.position.  The GIL is released.)doc");
}
