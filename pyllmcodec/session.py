"""Model sessions: a model at one geometry, with its probe digest.

A :class:`Session` is what the codec steps: a
:class:`~pyllmcodec.scheduler.WaveRunner` for a model at a
:class:`~pyllmcodec.geometry.Geometry`, with the model's probe digests and
fingerprint.  Sessions are cheap; what is worth keeping -- the probe digests
(each costs a probe run) and the fingerprint -- is cached per model,
weakly: an entry holds no reference to its model and goes when the model
goes (the registry's bounded cache, or the caller, holds models --
:mod:`pyllmcodec.models`), so this cache never keeps a model alive.

The checks an archive's header must pass before decoding also live here:
:func:`check_model` (the archive's model and this one agree),
:func:`check_codable` (the coder can run the header's numbers, before any
model is loaded) and :meth:`Session.check_probe` (the model reproduces the
archive's numerics, else :class:`~pyllmcodec.errors.NumericsMismatchError`).

Threading: a session holds no per-call state (every wave makes its own coder
objects and model state), so one session may serve several threads when the
model's ``step`` is reentrant for distinct states (ONNX Runtime's is).  The
caches are plain dicts under a lock; a race only computes a digest twice.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from . import core
from .backends.base import StepModel
from .container import Header
from .errors import ChecksumError, FormatError, MemoryLimitError, ModelError, NumericsMismatchError
from .geometry import Geometry
from .methods import finish, stop_rule
from .mixer import MixerSpec
from .models.bundle import model_identity
from .scheduler import Progress, WaveRunner

__all__ = ["Session", "bind_frame", "check_codable", "check_model", "model_id", "session_for"]


class _ModelCache:
    """What is worth keeping per model: probe digests by (geometry, batch), the fingerprint."""

    def __init__(self) -> None:
        self.probes: dict[tuple[Any, ...], str] = {}
        self.fingerprint: dict[str, str] | None = None


class Session:
    """A model at one geometry: its step runner, probe digests and fingerprint."""

    def __init__(self, model: StepModel, geometry: Geometry, cache: _ModelCache | None = None,
                 max_memory: int | None = None) -> None:
        self.model = model
        self.geometry = geometry
        self.runner = WaveRunner(model, geometry, max_memory)
        self._cache = _ModelCache() if cache is None else cache

    def probe(self, batch: int) -> str:
        """The probe digest at batch size ``batch`` (computed once per model and geometry)."""
        key = (self.geometry.session_key, batch)
        digest = self._cache.probes.get(key)
        if digest is None:
            digest = self._cache.probes[key] = self.runner.probe_digest(batch)
        return digest

    def fingerprint(self) -> dict[str, str]:
        if self._cache.fingerprint is None:
            self._cache.fingerprint = {str(k): str(v) for k, v in self.model.fingerprint().items()}
        return self._cache.fingerprint

    def decode_rows(self, batch: int, rows: Sequence[int], methods: Sequence[int], raw_lens: Sequence[int],
                    payloads: Sequence[Any], progress: Progress | None = None,
                    groups: Sequence[int] | None = None, cm_start: Mapping[int, Any] | None = None,
                    cm_end: dict[int, Any] | None = None) -> list[bytes]:
        """Decode the model-coded chunks at ``rows`` of one wave of ``batch``
        rows into bytes: each row ends by its method's rule
        (:func:`pyllmcodec.methods.stop_rule`) and is finished by it.
        ChecksumError when a row cannot end so (corrupt data).  ``groups``:
        each chunk's archive where a wave holds several (the context-mixing
        stage keeps one state per archive); ``cm_start`` / ``cm_end``: its
        long mode's states (:meth:`pyllmcodec.scheduler.WaveRunner.decode_wave`)."""
        tk = self.model.tokenizer
        weights, newlines, extra = stop_rule(methods, tk, int(self.model.vocab_size))
        try:
            got = self.runner.decode_wave(batch, rows, raw_lens, payloads, weights=weights, newlines=newlines,
                                          extra=extra, progress=progress, groups=groups, cm_start=cm_start,
                                          cm_end=cm_end)
        except ValueError as exc:
            raise ChecksumError(f"{exc}: the archive is corrupt (or was decoded with different numerics)") from None
        except MemoryError:
            raise MemoryLimitError(
                f"out of memory decoding a wave of {batch} rows x {max(raw_lens, default=0)} bytes; lower "
                "max_memory= to be refused before allocating, or decode on a machine with more memory"
            ) from None
        return [finish(sym, m, n, tk) for sym, m, n in zip(got, methods, raw_lens)]

    def check_probe(self, header: Header) -> None:
        """NumericsMismatchError unless this session reproduces the probe
        digest ``header`` records.  When this machine's fingerprint is the
        archive's, the numerics are the writer's, so the header's own numbers
        (precision, probe batch, digest) are what changed: FormatError, the
        archive is corrupt (a header edited with a valid checksum)."""
        mine = self.probe(header.probe_batch)
        # a frame records the digest's first 8 bytes (docs/FORMAT.md section 11a)
        if mine == header.probe_digest or (header.frame is not None and mine.startswith(header.probe_digest)):
            return
        if header.fingerprint == self.fingerprint():
            raise FormatError(
                "the archive's header does not reproduce its own probe digest on a machine whose fingerprint "
                f"is the writer's ({mine[:16]}... here vs {header.probe_digest[:16]}... recorded): its numbers "
                "(precision, probe batch or digest) were changed after writing -- the archive is corrupt"
            )
        raise NumericsMismatchError(_mismatch_message(header, self.fingerprint(), mine))


_lock = threading.Lock()
#: id(model) -> (weak reference to the model, its cache); no strong reference to a model
_caches: dict[int, tuple[Any, _ModelCache]] = {}


def session_for(model: StepModel, geometry: Geometry, max_memory: int | None = None) -> Session:
    """A session of ``model`` at ``geometry`` whose waves may take
    ``max_memory`` bytes (None: no limit), sharing the model's cached probe
    digests (a model that cannot be weakly referenced gets none)."""
    mid = id(model)
    with _lock:
        entry = _caches.get(mid)
        if entry is not None and entry[0]() is model:
            return Session(model, geometry, entry[1], max_memory)

    def forget(ref: Any) -> None:
        _forget(mid, ref)

    try:
        ref = weakref.ref(model, forget)
    except TypeError:  # not weakly referenceable: no shared cache
        return Session(model, geometry, None, max_memory)
    with _lock:
        entry = _caches.get(mid)
        if entry is None or entry[0]() is not model:
            entry = _caches[mid] = (ref, _ModelCache())
        return Session(model, geometry, entry[1], max_memory)


def _forget(mid: int, ref: Any) -> None:
    """Drop a collected model's cache (a weakref callback: no lock, since it
    may run at any allocation, even in a thread holding the lock; the dict
    operations are atomic)."""
    caches = _caches
    if caches is not None:  # None at interpreter shutdown
        entry = caches.get(mid)
        if entry is not None and entry[0] is ref:
            caches.pop(mid, None)


def check_codable(header: Header) -> None:
    """FormatError unless the header's precision, vocabulary and pad token are
    ones this build's coder and a model could run: checked before any model
    is loaded, so a hostile header never reaches the core as a ValueError or
    feeds the model an out-of-range token."""
    p, m = header.precision, header.meta["model"]
    v, bos = int(m["vocab_size"]), int(m["bos"])
    if not core.MIN_PRECISION <= p <= core.MAX_PRECISION or v > min(1 << (p - 1), core.MAX_SYMBOLS) or v < 2:
        raise FormatError(
            f"archive asks for precision {p} with {v} symbols; this pyllmcodec's coder supports precision "
            f"{core.MIN_PRECISION}..{core.MAX_PRECISION} and 2..min(2^(precision-1), {core.MAX_SYMBOLS}) symbols "
            "(corrupt archive, or one from a newer pyllmcodec)"
        )
    if not (0 <= header.pad_token < v or header.pad_token == bos):
        raise FormatError(f"archive pad token {header.pad_token} is neither a symbol (< {v}) nor bos ({bos})")


def check_model(header: Header, model: StepModel) -> None:
    """ModelError unless ``model`` is the one the archive was written with."""
    if model.name != header.model_name or model.sha256 != header.model_sha256:
        raise ModelError(
            f"archive was written with model {header.model_name!r} (sha256 {header.model_sha256}); "
            f"the model given is {model.name!r} (sha256 {model.sha256}); load the archive's model"
        )
    meta_model = header.meta["model"]
    for k, have in (("vocab_size", model.vocab_size), ("bos", model.bos), ("max_context", model.max_context)):
        if int(have) != int(meta_model[k]):
            raise ModelError(f"model {k} is {have}, the archive says {meta_model[k]}")


def model_id(model: StepModel) -> bytes:
    """The 8-byte id a frame names ``model`` by
    (:func:`pyllmcodec.models.bundle.model_identity`): any session of the
    same bundle, on any machine, has the same one."""
    tk = model.tokenizer
    mx = model.default_mixer
    # a bundle's fitted match model (match1: its prior is the bundle's own)
    # is part of the id; the wave match is not (its kind fixes all of it),
    # so the exact SmolLM2 tier's frames keep the id they had before it
    return model_identity(sha256=str(model.sha256), vocab_size=int(model.vocab_size), bos=int(model.bos),
                          max_context=int(model.max_context), tokenizer=None if tk is None else str(tk.sha256),
                          mixer=str(mx.digest) if isinstance(mx, MixerSpec) else None)


def bind_frame(header: Header, model: StepModel) -> Header:
    """The full :class:`Header` of a frame (``header.frame`` set) decoded
    with ``model``: ModelError unless ``model`` is the one its id names; its
    model keys, pad token, tokenizer and match model filled in from
    ``model``, as a full archive records them.  A full header is returned
    as is."""
    params = header.frame
    if params is None or "name" in header.meta["model"]:
        return header
    mid = model_id(model)
    if mid != params.model_id:
        raise ModelError(
            f"this frame was written with the model whose id is {params.model_id.hex()}; the model given "
            f"({model.name!r}) has id {mid.hex()}: decode with the model (and pyllmcodec release) that wrote it"
        )
    if params.tokens != (model.tokenizer is not None):
        raise FormatError("frame's token-level flag disagrees with its model (corrupt frame)")
    meta = dict(header.meta)
    meta["model"] = {"name": str(model.name), "sha256": str(model.sha256), "vocab_size": int(model.vocab_size),
                     "bos": int(model.bos), "max_context": int(model.max_context), "id": mid.hex()}
    meta["pad_token"] = int(model.bos)
    if params.tokens:
        meta["tokenizer"] = {"kind": "bpe", "sha256": str(model.tokenizer.sha256)}  # type: ignore[union-attr]
    if params.context:
        if params.context > int(model.max_context):
            raise FormatError(f"frame's context {params.context} exceeds the model's {model.max_context}")
        if params.context == int(model.max_context):
            del meta["context"]  # the canonical form of a full header
    if params.mixer:
        mx = model.default_mixer
        if mx is None:
            raise ModelError("this frame was coded through a match model, which this model does not ship")
        meta["mixer"] = {"kind": mx.kind, "digest": mx.digest}
    return Header(version=header.version, meta=meta, size=header.size, frame=params)


def _mismatch_message(header: Header, mine_fp: dict[str, str], mine_digest: str) -> str:
    theirs = header.fingerprint
    keys = sorted(set(theirs) | set(mine_fp))
    diff = [f"    {k}: archive={theirs.get(k, '-')!s} here={mine_fp.get(k, '-')!s}"
            for k in keys if theirs.get(k) != mine_fp.get(k)]
    return (
        "numerics mismatch: the model on this machine does not reproduce the probabilities "
        f"this archive was written with (probe digest {mine_digest[:16]}... here vs "
        f"{header.probe_digest[:16]}... in the archive), so decoding would produce garbage.\n"
        f"  archive fingerprint: {theirs}\n"
        f"  this machine:        {mine_fp}\n"
        + ("  differences:\n" + "\n".join(diff) + "\n" if diff
           else "  (the fingerprints agree; the numerics still differ)\n")
        + "Decode on a machine whose fingerprint matches (same backend, device, library versions), "
        "e.g. pass device=/backend= (CLI: --device/--backend) to match the archive."
    )
