"""The model bundle format: a directory the codec loads a model from.

A bundle holds ONNX graph(s), an optional tokenizer, and ``manifest.json``:

```
{
  "format": "pyllmcodec-bundle", "bundle_version": 1,
  "name": "default", "version": "1.0.0", "architecture": "bytelm",
  "licence": "...", "description": "...",
  "vocab": {"kind": "bytes", "size": 256, "bos": 256, "tokenizer": null},
  "context_length": 1024,
  "config": {...architecture hyper-parameters...},
  "graphs": {
    "step": {"file": "step.onnx", "inputs": [...], "outputs": [...],
             "kv_cache": {"layout": "BNSH", "n_layer": 4, "n_kv_head": 1,
                          "head_dim": 64, "max_len": 1024,
                          "past": "past_key_{i}/past_value_{i}",
                          "present": "present_key_{i}/present_value_{i}",
                          "shared_buffer": true}},
    "forward": {"file": "forward.onnx", ...}
  },
  "files": {"step.onnx": "<sha256>", "forward.onnx": "<sha256>", "weights.bin": "<sha256>"},
  "training": {...data manifest, steps, metrics...},
  "codec": {"chunk_size": 8192, "prime": 64, "mixer": {"kind": "match1", ...},
            "cm": {"kind": "cm3", "weights": [...]}}
}
```

``codec`` (optional) holds the codec's defaults for this model, measured per
model: the chunk size ``Compressor`` uses when none is given, and the prime of
segments for chunks longer than the context (docs/FORMAT.md), and the match
model fitted for it (``mixer``: ``pyllmcodec.mixer.MixerSpec``, FORMAT.md
section 4c), and the context-mixing stage's priors fitted for it (``cm``:
``pyllmcodec.cmpriors.CmPriors``, FORMAT.md section 4f).  Archives record
the chunk size and prime they were written with, so decoding never reads
those; they record the match model's and the priors' digests, which the
decoder's bundle must match.  ``codec`` is not in ``files``: fitting a match
model or priors anew leaves the bundle's identity as it was.

Large initializers live once in ``weights.bin`` (ONNX external data) and both
graphs point at the same offsets, so a second graph costs a few KB.  The
bundle's identity (:attr:`Bundle.sha256`) is the SHA-256 of the sorted
``name:sha256`` lines of ``files`` -- it changes when any file changes and is
what archives record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import FRAME_ID_LEN
from ..errors import ModelError

__all__ = [
    "Bundle",
    "bundle_id",
    "file_sha256",
    "load_bundle",
    "manifest_identity",
    "model_identity",
    "read_arrays",
    "shipped_bundle_dirs",
    "write_arrays",
    "write_manifest",
]

BUNDLE_FORMAT = "pyllmcodec-bundle"
BUNDLE_VERSION = 1
_HERE = Path(__file__).resolve().parent


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``bundle_dir/manifest.json`` in the one format every writer uses
    (sorted keys, indent 1), through a temporary file renamed into place."""
    mf = Path(bundle_dir) / "manifest.json"
    tmp = mf.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(mf)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    sha256: str = field(default="")

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest["config"])

    def graph_path(self, kind: str) -> Path:
        try:
            return self.path / self.manifest["graphs"][kind]["file"]
        except KeyError:
            raise ModelError(f"bundle {self.name!r} has no {kind!r} graph") from None

    def verify(self) -> None:
        """Check every file's SHA-256 against the manifest (raises ModelError)."""
        for name, want in self.manifest["files"].items():
            p = self.path / name
            if not p.is_file():
                raise ModelError(
                    f"bundle {self.name!r}: file {name} is missing from {self.path}; "
                    "the installation is damaged -- reinstall pyllmcodec (or the package that ships the "
                    "model) or re-export the bundle"
                )
            got = file_sha256(p)
            if got != want:
                raise ModelError(
                    f"bundle {self.name!r}: {name} has SHA-256 {got}, manifest says {want}; "
                    "the installation is damaged -- reinstall pyllmcodec or re-export the bundle"
                )


def bundle_id(files: dict[str, str]) -> str:
    lines = "".join(f"{k}:{files[k]}\n" for k in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def model_identity(*, sha256: str, vocab_size: int, bos: int, max_context: int, tokenizer: str | None,
                   mixer: str | None) -> bytes:
    """The 8-byte id a compact frame names its model by (docs/FORMAT.md
    section 11a): a truncated SHA-256 of everything the coded bits depend on
    -- weights and graph (``sha256``), vocabulary, bos, context, the
    tokenizer's SHA-256 and the shipped match model's digest -- and of
    nothing else (not the name, not the machine)."""
    ident = {"sha256": str(sha256), "vocab_size": int(vocab_size), "bos": int(bos),
             "max_context": int(max_context), "tokenizer": tokenizer, "mixer": mixer}
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"pyllmcodec-model-id/1\0" + blob).digest()[:FRAME_ID_LEN]


def manifest_identity(bundle: Bundle) -> bytes | None:
    """:func:`model_identity` of a byte-level bundle from its manifest alone
    (no session is made); None for a token-level one (its tokenizer's hash
    needs the tokenizer loaded)."""
    m = bundle.manifest
    if m["vocab"].get("tokenizer"):
        return None
    mixer = (m.get("codec") or {}).get("mixer")
    digest = None
    if mixer is not None:
        from ..mixer import MixerSpec, spec_from_json

        try:
            spec = spec_from_json(mixer)
            digest = spec.digest if isinstance(spec, MixerSpec) else None
        except ValueError:
            return None
    return model_identity(sha256=bundle.sha256, vocab_size=int(m["vocab"]["size"]), bos=int(m["vocab"]["bos"]),
                          max_context=int(m["context_length"]), tokenizer=None, mixer=digest)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read and validate ``path/manifest.json``; with ``verify`` also hash every file."""
    path = Path(path)
    mf = path / "manifest.json"
    try:
        manifest = json.loads(mf.read_text())
    except FileNotFoundError:
        raise ModelError(f"no model bundle at {path} (manifest.json missing)") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"unreadable bundle manifest {mf}: {e}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{mf} is not a pyllmcodec bundle manifest")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise ModelError(
            f"bundle {path} has bundle_version {manifest.get('bundle_version')}; this pyllmcodec "
            f"reads version {BUNDLE_VERSION}: upgrade pyllmcodec or re-export the bundle"
        )
    for key in ("name", "vocab", "context_length", "graphs", "files", "config"):
        if key not in manifest:
            raise ModelError(f"bundle manifest {mf} lacks {key!r}")
    b = Bundle(path=path, manifest=manifest, sha256=bundle_id(manifest["files"]))
    if verify:
        b.verify()
    return b


def shipped_bundle_dirs() -> list[Path]:
    """Bundles inside the installed package (``pyllmcodec/models/<name>/``)."""
    return sorted(p.parent for p in _HERE.glob("*/manifest.json"))


def float_tensors(bundle: Bundle) -> dict[str, np.ndarray]:
    """A float bundle's ``weights.bin`` as its tensor table names it: float32
    arrays in the network's own layout (linear weights ``[out, in]``; the
    graphs store them transposed)."""
    raw = (bundle.path / "weights.bin").read_bytes()
    out = {}
    for k, t in bundle.manifest["tensors"].items():
        arr = np.frombuffer(raw, np.float32, count=t["length"] // 4, offset=t["offset"])
        shape = t["shape"]
        arr = arr.reshape(shape[::-1]).T if t["transposed"] else arr.reshape(shape)
        out[k] = np.array(arr, dtype=np.float32, order="C")
    return out


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write ``arrays`` as one raw little-endian file (sorted names, 64-byte
    aligned) and return its index ``{name: {offset, dtype, shape}}``.  The
    bytes depend on the arrays alone (an ``.npz`` holds timestamps), so every
    machine that converts the same GGUF writes the same file, the same hash
    and so the same model identity."""
    index: dict[str, Any] = {}
    off = 0
    with open(path, "wb") as f:
        for name in sorted(arrays):
            a = np.array(arrays[name], order="C")  # (ascontiguousarray would make scalars 1-D)
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)
            pad = -off % 64
            f.write(b"\0" * pad)
            off += pad
            index[name] = {"offset": off, "dtype": a.dtype.str, "shape": list(a.shape)}
            f.write(a.tobytes())
            off += a.nbytes
    return index


def read_arrays(path: Path, index: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays :func:`write_arrays` wrote (memory-mapped, read-only); a
    damaged index is a ModelError."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict[str, np.ndarray] = {}
    try:
        for name, t in index.items():
            dt = np.dtype(t["dtype"])
            shape = tuple(int(x) for x in t["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            off = int(t["offset"])
            if off < 0 or off + count * dt.itemsize > len(raw):
                raise ValueError(f"array {name!r} runs past the end of {path.name}")
            out[name] = np.frombuffer(raw, dt, count=count, offset=off).reshape(shape)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{path}: bad array index: {e}") from None
    return out
