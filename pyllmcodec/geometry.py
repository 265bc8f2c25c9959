"""The geometry of an archive: how its bytes are cut into chunks and stepped.

Everything about chunks and waves that the decoder must reproduce lives in
one object, :class:`Geometry`: the chunk size, the batch size, the
quantizer's precision, the pad token, the segments' length (``context``) and
prime, and the match model.  It is

* resolved once from a model and the caller's options (:class:`Plan`, which
  :class:`~pyllmcodec.codec.Compressor` holds; :meth:`Plan.for_size` gives the
  geometry of one input, whose chunk size may follow the input's size);
* written into the header (:meth:`Geometry.header_fields`) and read back from
  it (:meth:`Geometry.from_header`), so that the encoder and the decoder hold
  equal objects for one archive;
* the key of a model session (:attr:`Geometry.session_key`: what the step
  loop's numbers depend on).

A geometry is canonical: ``prime`` is 0 and ``context`` is the model's whole
context unless chunks are longer than the segments (docs/FORMAT.md section
4b), as the header records them.

Cutting (:func:`cut`): bytes become cells of ``chunk_size``; for a
token-level model, a cell with more tokens than the context is split further
(:func:`split_point`), so every chunk fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import core
from .backends.base import StepModel
from .cmpriors import CmPriors
from .constants import (
    CM_LONG_PERIOD,
    CM_MAX_LONG,
    CM_MAX_LONG_TABLE_BITS,
    CM_MAX_TABLE_BITS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PRIME,
    DEFAULT_TOKEN_CHUNK_SIZE,
    MAX_BATCH_SIZE,
    MAX_BYTE_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_PRECISION,
    MIN_PRECISION,
)
from .container import Header, cm_table_bits
from .dictionary import Dictionary, check_dictionary
from .errors import ModelError
from .mixer import MixerSpec, WaveSpec
from .tokenizer import Tokenizer

__all__ = ["MIN_SPLIT_PIECE", "Geometry", "Plan", "cut", "header_cm", "header_cm_priors", "header_mixer", "is_int",
           "model_mixer", "model_runs_cm", "split_point"]


def model_mixer(model: StepModel) -> MixerSpec | WaveSpec | None:
    """The match model ``model`` ships and can run: none on the two-phase
    (accelerator) path, which quantizes on the device, and the wave match
    only on integer rows (it has no float twin)."""
    spec = None if model.device_quantize else model.default_mixer
    return None if isinstance(spec, WaveSpec) and not model.integer_rows else spec


def model_runs_cm(model: StepModel) -> bool:
    """Whether ``model`` can code through the context-mixing stage: integer
    rows over bytes, quantized on the host (csrc/cm.hpp reads the integer
    quantizer's table)."""
    return (bool(model.integer_rows) and not model.device_quantize and model.tokenizer is None
            and int(model.vocab_size) == 256)


def header_cm(header: Header, model: StepModel) -> int:
    """The stage's table_bits ``header`` asks for (0: none); ModelError when
    ``model`` cannot run the stage."""
    want = header.meta.get("cm")
    if want is None:
        return 0
    if not model_runs_cm(model):
        raise ModelError(f"archive was coded through the context-mixing stage, which model {model.name!r} cannot "
                         "run here (it needs integer rows over bytes quantized on the host: decode with the "
                         "exact model on device='cpu')")
    return int(want["table_bits"])


def _check_shipped(what: str, want: str, mine: MixerSpec | WaveSpec | CmPriors | None, header: Header) -> None:
    """ModelError unless ``mine`` (what the model's bundle ships of ``what``)
    has the digest ``want`` the archive was coded with."""
    if mine is None or mine.digest != want:
        have = "none" if mine is None else f"digest {mine.digest}"
        raise ModelError(
            f"archive was coded with the {what} {want} of model {header.model_name!r}; the model here ships "
            f"{have} (another release of the bundle with the same weights?): install the pyllmcodec release "
            "that wrote the archive, or load its bundle with model="
        )


def header_cm_priors(header: Header, model: StepModel) -> CmPriors | None:
    """The stage's priors ``header`` asks for (``cm.priors``), from ``model``'s
    bundle; ModelError when the bundle ships none or others."""
    want = (header.meta.get("cm") or {}).get("priors")
    if want is None:
        return None
    _check_shipped("context-mixing priors", str(want), model.default_cm_priors, header)
    return model.default_cm_priors


def header_mixer(header: Header, model: StepModel) -> MixerSpec | WaveSpec | None:
    """The match model ``header`` asks for, from ``model``'s bundle; ModelError
    when the model cannot run it or its table is not the one the archive was
    coded with (the container already refused kinds this version does not run)."""
    want = header.meta.get("mixer")
    if want is None:
        return None
    mine = model_mixer(model)
    if mine is None and model.device_quantize:
        raise ModelError("archive was coded through the match model, which runs with host quantization only; "
                         "decode with device='cpu' (CLI: --device cpu)")
    _check_shipped("match model", str(want["digest"]), mine, header)
    return mine


@dataclass(frozen=True)
class Geometry:
    """One archive's geometry (module docstring); every field is in its header."""

    #: bytes per chunk (the last of an input may be shorter; a token-level
    #: model's split cells are shorter too)
    chunk_size: int
    #: chunks stepped together: a wave's rows
    batch_size: int
    #: the quantizer's precision in bits
    precision: int
    #: the token fed to rows that have ended or are absent
    pad: int
    #: the segments' length (the model's context, or less)
    context: int
    #: silent steps that start each segment after the first (0: one segment per chunk)
    prime: int = 0
    #: the match model the chunks are coded through, or None
    mixer: MixerSpec | WaveSpec | None = None
    #: the bytes every chunk is primed with (docs/FORMAT.md section 4d), or None
    dictionary: Dictionary | None = None
    #: the context-mixing stage's table_bits (docs/FORMAT.md section 4f); 0: no stage
    cm_bits: int = 0
    #: the long mode's period (header key ``cm.long``): an archive's stage
    #: state carries across groups of this many blocks; 0: every wave fresh
    cm_long: int = 0
    #: the stage's kind (``CM_KINDS``: 1 cm1, 2 cm2, 3 cm3); full archives write 3, frames 1
    cm_kind: int = 3
    #: cm3's priors (the mixers' initial weights, header key ``cm.priors``), or None
    cm_priors: CmPriors | None = None

    @property
    def cm_priors_in_use(self) -> CmPriors | None:
        """The priors the stage runs with: ``cm_priors`` where the stage is cm3, else None."""
        return self.cm_priors if self.cm_bits and self.cm_kind == 3 else None

    @property
    def rows_share_state(self) -> bool:
        """Whether a wave's rows of one archive learn from each other (the
        context-mixing stage, the wave match): then the decoder must run
        exactly the rows the encoder ran, and two waves of one archive never
        share a decode job."""
        return self.cm_bits > 0 or isinstance(self.mixer, WaveSpec)

    @property
    def session_key(self) -> tuple[Any, ...]:
        """What a model session (its step runner and probe) depends on; the
        match model's tables are sized by the chunk size."""
        digest = None if self.mixer is None else self.mixer.digest
        return (self.precision, self.pad, self.prime, self.context, digest,
                self.chunk_size if self.mixer is not None else 0,
                None if self.dictionary is None else self.dictionary.sha256, self.cm_bits, self.cm_long,
                self.cm_kind if self.cm_bits else 0,
                None if self.cm_priors_in_use is None else self.cm_priors_in_use.digest)

    def header_fields(self, max_context: int) -> dict[str, Any]:
        """The header keys of this geometry (container.build_meta's arguments):
        ``prime`` and ``context`` only where they matter, canonically."""
        return {
            "chunk_size": self.chunk_size,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "pad_token": self.pad,
            "prime": self.prime,
            "context": self.context if self.context < max_context else 0,
            "mixer": None if self.mixer is None else {"kind": self.mixer.kind, "digest": self.mixer.digest},
            "dictionary": None if self.dictionary is None else {"sha256": self.dictionary.sha256,
                                                                 "size": len(self.dictionary)},
            "cm": None if not self.cm_bits else {
                "kind": f"cm{self.cm_kind}", "table_bits": self.cm_bits,
                **({"long": self.cm_long} if self.cm_long else {}),
                **({"priors": self.cm_priors_in_use.digest} if self.cm_priors_in_use is not None else {})},
        }

    @classmethod
    def from_header(cls, header: Header, model: StepModel, dictionary: Dictionary | None = None) -> Geometry:
        """The geometry ``header`` records, with the match model from
        ``model``'s bundle (:func:`header_mixer`) and the ``dictionary``
        given for it (DictionaryError unless it is the one recorded; one
        given for an archive that names none is not used)."""
        want = header.dictionary_digest
        check_dictionary(want, dictionary)
        return cls(chunk_size=header.chunk_size, batch_size=header.batch_size, precision=header.precision,
                   pad=header.pad_token, context=header.context, prime=header.prime,
                   mixer=header_mixer(header, model), dictionary=dictionary if want is not None else None,
                   cm_bits=header_cm(header, model), cm_long=header.cm_long,
                   cm_kind=header.cm_kind or 3, cm_priors=header_cm_priors(header, model))


def is_int(x: Any) -> bool:
    """An int, not a bool (which Python counts as one)."""
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Plan:
    """A Compressor's options resolved against its model: what every archive
    it writes shares, and :meth:`for_size` for what follows the input's size.
    Raises ValueError for an option the model cannot run (:meth:`resolve`).

    Levels (``level``, 1..9, like zstd's, but picking how much the model sees
    rather than a search effort): 1-6 take the model's defaults; 7 and 8
    code segments of 768 bytes, 9 of the model's whole context (1024 for the
    default model), slower per byte and smaller (docs/MODEL.md).  An explicit
    ``context`` wins; token-level models have one level.  Nothing about the
    level is recorded: the archive records the geometry it leads to."""

    #: the chunk size given, or the model's default
    chunk_size: int
    batch_size: int
    precision: int
    pad: int
    #: the segments' length for chunks longer than it
    context: int
    #: the prime of segments, for archives whose chunks exceed ``context`` (else 0)
    prime: int
    mixer: MixerSpec | WaveSpec | None
    #: chunk_size was not given, on a byte-level model that can segment: an
    #: input of known size gets longer chunks while it still fills a wave
    auto_chunk: bool
    max_context: int
    #: the bytes every chunk is primed with, or None
    dictionary: Dictionary | None = None
    #: the symbols the dictionary takes in each chunk's first segment (0: none)
    primed: int = 0
    #: code through the context-mixing stage (docs/FORMAT.md section 4f)
    cm: bool = False
    #: the stage's long mode: its period in blocks (0: off)
    cm_long: int = 0
    #: the stage's priors (cm3), the model's, or None
    cm_priors: CmPriors | None = None

    @classmethod
    def resolve(cls, model: StepModel, *, chunk_size: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                precision: int | None = None, prime: int | None = None, context: int | None = None,
                mixer: bool | None = None, level: int | None = None, dictionary: Dictionary | None = None,
                cm: bool | None = None, long: bool | int = False) -> Plan:
        tokens = model.tokenizer is not None
        model_ctx = int(model.max_context)
        if level is not None and (not is_int(level) or not 1 <= level <= 9):
            raise ValueError("level must be an int in 1..9")
        if context is None and level is not None and level >= 7 and not tokens:
            # a level picks the segments' length (docs/MODEL.md: 512 -> 768 -> 1024 trades speed for ratio)
            context = model_ctx if level == 9 else min(768, model_ctx)
        if context is None:  # the segments' length: the model's preference (its bundle's manifest)
            context = None if tokens else model.default_context
        if context is not None and (tokens or not is_int(context) or not 2 <= context <= model_ctx):
            raise ValueError(f"context must be an int in 2..{model_ctx} (the model's context), for "
                             "byte-level models only")
        ctx = model_ctx if context is None else int(context)
        primed = 0
        if dictionary is not None:  # it shares the first segment with the chunk: at most half of it
            primed = len(dictionary.symbols(model.tokenizer))
            if primed > ctx // 2:
                raise ValueError(f"the dictionary takes {primed} {'tokens' if tokens else 'bytes'}, over half the "
                                 f"segments' length ({ctx // 2}): use a shorter one (train_dictionary(size=...))")
        auto = chunk_size is None
        segmentable = False
        if tokens:  # chunk_size counts bytes, the context tokens (<= 1 per byte)
            max_chunk = MAX_CHUNK_SIZE
            if chunk_size is None:
                chunk_size = DEFAULT_TOKEN_CHUNK_SIZE
        else:  # longer than the context: coded in segments (scheduler.segment_plan)
            segmentable = ctx >= 2 and not model.device_quantize
            max_chunk = MAX_BYTE_CHUNK_SIZE if segmentable else min(ctx - primed, MAX_BYTE_CHUNK_SIZE)
            if chunk_size is None:  # the model's own preference (its bundle's manifest), else 1 KiB
                pref = model.default_chunk_size
                chunk_size = int(pref) if pref and segmentable else min(DEFAULT_CHUNK_SIZE, ctx - primed)
                chunk_size = min(chunk_size, max_chunk)
        if not is_int(chunk_size) or not 1 <= chunk_size <= max_chunk:
            raise ValueError(f"chunk_size must be an int in 1..{max_chunk}")
        auto_chunk = auto and segmentable
        resolved_prime = 0
        if not tokens and (chunk_size + primed > ctx or (auto_chunk and MAX_BYTE_CHUNK_SIZE > ctx)):
            if prime is None:
                prime = model.default_prime or min(DEFAULT_PRIME, ctx // 2)
            if not is_int(prime) or not 1 <= prime <= ctx // 2:
                raise ValueError(f"prime must be an int in 1..{ctx // 2} (half the context)")
            resolved_prime = int(prime)
        elif prime is not None and (not is_int(prime) or prime < 0):
            raise ValueError("prime must be an int >= 0")
        if not is_int(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be an int in 1..{MAX_BATCH_SIZE}")
        if precision is None:
            precision = int(core.DEFAULT_PRECISION)
        if not is_int(precision) or not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be an int in {MIN_PRECISION}..{MAX_PRECISION}")
        if mixer not in (None, True, False):
            raise ValueError("mixer must be None, True or False")
        spec = model_mixer(model)
        if mixer and spec is None:
            raise ValueError(f"model {model.name!r} ships no match model (its bundle manifest has no "
                             "codec.mixer, or it quantizes on an accelerator); pass mixer=None or False")
        if cm not in (None, True, False):
            raise ValueError("cm must be None, True or False")
        if cm and not model_runs_cm(model):
            raise ValueError(f"model {model.name!r} cannot run the context-mixing stage (it needs integer rows over "
                             "bytes, quantized on the host: the exact models on the CPU); pass cm=None or False")
        runs_cm = model_runs_cm(model) if cm is None else bool(cm)
        if long is True:
            long = CM_LONG_PERIOD
        if long is not False and (not is_int(long) or not 2 <= long <= CM_MAX_LONG):
            raise ValueError(f"long must be True, False or an int in 2..{CM_MAX_LONG} (waves per group)")
        if long and not runs_cm:
            raise ValueError("long needs the context-mixing stage (its state is what carries from wave to wave): "
                             "an exact byte-level model on the CPU, with cm=None or True")
        return cls(chunk_size=int(chunk_size), batch_size=batch_size, precision=int(precision), pad=int(model.bos),
                   context=ctx, prime=resolved_prime, mixer=None if mixer is False else spec,
                   auto_chunk=auto_chunk, max_context=model_ctx, dictionary=dictionary, primed=primed,
                   cm=runs_cm, cm_long=int(long), cm_priors=model.default_cm_priors if runs_cm else None)

    def chunk_size_for(self, size: int | None) -> int:
        """The chunk size for an input of ``size`` bytes (None: unknown): with
        ``auto_chunk``, doubled while the input still fills ``batch_size`` rows
        with chunks twice as long, up to 64 KiB (longer chunks code better at
        the same number of model steps: docs/MODEL.md).  Through the
        context-mixing stage, doubled while the input takes more than one
        wave: the stage learns within a wave, so fewer waves learn more (the
        model steps are as many: a second, part-filled wave costs its
        chunk's steps too).  plrabn12 (482 KB): 59 chunks of 8 KiB in two
        waves 2.166 bits/byte, 30 of 16 KiB in one wave 2.101; lcet10 1.647
        -> 1.589 (bench/studies/cm_stage.py --archives)."""
        c = self.chunk_size
        if not self.auto_chunk or size is None:
            return c
        if self.cm:
            while 2 * c <= MAX_BYTE_CHUNK_SIZE and size > c * self.batch_size:
                c *= 2
            return c
        while 2 * c <= MAX_BYTE_CHUNK_SIZE and size >= 2 * c * self.batch_size:
            c *= 2
        return c

    def for_size(self, size: int | None) -> Geometry:
        """The canonical geometry of an archive of ``size`` input bytes."""
        c = self.chunk_size_for(size)
        segmented = c + self.primed > self.context
        wave = c * self.batch_size
        # cm3's long mode: a state learns from up to a period of waves
        reach = wave * self.cm_long if self.cm_long else wave
        bits = (cm_table_bits(reach if size is None else min(size, reach),
                              CM_MAX_LONG_TABLE_BITS if self.cm_long else CM_MAX_TABLE_BITS) if self.cm else 0)
        return Geometry(chunk_size=c, batch_size=self.batch_size, precision=self.precision, pad=self.pad,
                        context=self.context if segmented else self.max_context,
                        prime=self.prime if segmented else 0, mixer=self.mixer, dictionary=self.dictionary,
                        cm_bits=bits, cm_long=self.cm_long if self.cm else 0, cm_priors=self.cm_priors)


#: no piece of a split cell is shorter than this (a shorter piece that is still
#: over the context is left to the fallback codec)
MIN_SPLIT_PIECE = 16


def cut(data: memoryview, chunk_size: int, tokenizer: Tokenizer | None = None,
        max_context: int = 0) -> list[memoryview]:
    """Cut ``data`` into chunks: cells of ``chunk_size`` bytes; for a
    token-level model (``tokenizer``), a cell with more tokens than
    ``max_context`` is cut in two at :func:`split_point`, and each half again
    while it is too long.  The pieces are ordinary chunks (``raw_len <=
    chunk_size``), so the decoder needs nothing new; the cut depends on the
    cell's bytes alone, so streaming and one-shot compression cut alike."""
    cells = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    if tokenizer is None:
        return cells
    out: list[memoryview] = []
    for cell in cells:
        todo = [cell]
        while todo:
            piece = todo.pop()
            if len(piece) < 2 * MIN_SPLIT_PIECE or len(tokenizer.tokenize(bytes(piece))) <= max_context:
                out.append(piece)
                continue
            k = split_point(bytes(piece))
            todo += [piece[k:], piece[:k]]  # a stack: the first half is handled first
    return out


def split_point(data: bytes) -> int:
    """Where :func:`cut` splits a too-long cell ``data`` (``len >= 2 *
    MIN_SPLIT_PIECE``; dense text -- code, non-Latin scripts -- can have more
    tokens than the context): after the last newline, else space, in the
    middle half of the data, else at the UTF-8 character start nearest below
    the middle."""
    n = len(data)
    lo, mid = max(n // 4, MIN_SPLIT_PIECE), n // 2
    for sep in (b"\n", b" "):
        k = data.rfind(sep, lo, mid + 1)
        if k >= 0:
            return k + 1
    k = mid
    while k > lo and (data[k] & 0xC0) == 0x80:  # do not cut inside a UTF-8 sequence
        k -= 1
    return k

