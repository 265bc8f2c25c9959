"""Compress and decompress a column of a Ray Data ``Dataset`` with pyllmcodec.

``pip install "pyllmcodec[ray]"``; ``import pyllmcodec`` never imports Ray,
only ``import pyllmcodec.ray`` does::

    import ray, pyllmcodec.ray as llmz_ray

    ds = ray.data.read_json("logs/")                     # a column "line" of str
    packed = llmz_ray.compress_column(ds, "line", output_column="line_llmz")
    back = llmz_ray.decompress_column(packed, "line_llmz", output_column="line")

How it scales out.  :func:`compress_column` and :func:`decompress_column`
are ``Dataset.map_batches`` with a callable class and ``batch_format="pyarrow"``:
Ray starts ``concurrency`` actors (an int, or ``(min, max)`` for an
autoscaling pool), each a process that builds ONE
:class:`~pyllmcodec.Compressor` (or :class:`~pyllmcodec.Decompressor`) when it
starts -- one model session per actor, loaded by its registered name there --
and reuses it for every batch it is sent.  Each batch of ``batch_size`` rows
goes through ONE ``compress_batch`` / ``decompress_batch`` call, so its small
cells share the rows of the model's waves (the scheduler's batch), exactly
as in one process.  More actors, on more nodes, code more batches at once;
nothing is shared between them but the model's name and options.

What bounds it:

- **Cores and threads.**  An actor's model step runs on ``threads`` cores
  (ONNX Runtime's default: all of them).  Pass ``num_cpus`` and each actor
  reserves that many CPUs from Ray *and* runs its model on that many threads
  (unless ``compressor_options`` sets ``threads``), so that
  ``concurrency * num_cpus <= cores`` keeps a node from oversubscribing.
  The thread count does not change the coded chunks (README, "Determinism
  contract"; archives written with one decode with any).  On GPUs,
  ``num_gpus`` is reserved per actor (a fraction shares a GPU); give
  ``{"device": "cuda", "backend": "torch"}`` in the options (the PyTorch
  backend: ``pyllmcodec[torch]`` with a CUDA build of torch).
- **Rows per wave.**  Two batch sizes are at work.  ``batch_size`` here is
  Ray's: how many rows one call receives (default 256).  The codec's
  ``batch_size`` (``compressor_options={"batch_size": ...}``, default 32) is
  how many chunks one model wave steps together; a cell of up to the chunk
  size (8 KiB for the default model) is one chunk, so a Ray batch of 256
  short cells runs as 8 waves of 32 rows, or one wave with a codec
  ``batch_size`` of 256.  A wave steps as many times as its longest chunk,
  so short cells mixed with a long one leave rows idle.
- **Memory per actor** is about the model (7 MB of weights for the default
  model, 0.5 GB for ``smollm2-135m``) plus one wave's state
  (``pyllmcodec.scheduler.wave_bytes``: about 65 MiB for the default model at
  32 rows and 8 KiB chunks, 0.5 GiB at 256 rows; bounded by ``max_memory``,
  4 GiB by default) plus the batch's cells in and out (Arrow).  Tell Ray
  with ``memory=`` (passed on to ``map_batches``) when it schedules by memory.
- **Throughput** is the model's: the default model codes about 12 KB/s per
  2 cores, so Ray pays off when the cluster has more cores than one machine;
  on one machine it adds overhead (``python -m bench.studies.ray_overhead``).
- **Numerics.**  As everywhere (README, "Determinism contract"), an archive
  decodes only where the model reproduces the numerics it was written with:
  on a cluster whose nodes differ in CPU instruction set, backend or library
  versions, decoding on another node can raise ``NumericsMismatchError``
  (never wrong bytes).

Output.  Each cell of the compressed column is a complete archive (or a
compact frame, with ``compressor_options={"frame": "compact"}``: about 43
bytes of fixed overhead a cell instead of about 550, what short records
want) that decodes alone with :func:`pyllmcodec.decompress`.  For a batch of cells, the
archives are byte-identical to what ``Compressor(model, **compressor_options)
.compress_batch(cells)`` gives in one process for the same cells, with the
same options: ``threads`` included, which the archive's header records in
the model's fingerprint (the coded chunks do not depend on it), so match a
``num_cpus`` given here with ``threads=int(num_cpus)`` there.  Ray chooses
where a batch ends (at most ``batch_size`` rows; a block boundary can end one
early), and ``compress_batch`` picks its chunk size from a batch's total
size, so the bytes of a cell can depend on its neighbours -- never what it
decodes to.  A ``str`` column is coded as UTF-8 and the compressed binary
column's field metadata (``b"pyllmcodec.type": b"string"``) says so, so that
:func:`decompress_column` returns ``str`` again (``as_str=`` overrides it, e.g.
when the metadata was lost on the way).  Nulls stay null.

Errors.  A corrupt cell raises the codec's :class:`~pyllmcodec.CodecError`
subclass (``FormatError``, ``ChecksumError``, ...) whose message names the
column and the cell's row within its batch, and the value of ``key_column``
in that row when one is given.  Ray delivers it when the dataset is
consumed: by default as Ray Data's ``UserCodeException`` (a
``RayTaskError``), which carries the codec's error only as text, from which
:func:`codec_error` rebuilds it; with
``ray.data.DataContext.get_current().raise_original_map_exception = True``
the exception raised is an instance of the codec's class itself.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import ray.data

from pyllmcodec import errors
from pyllmcodec.codec import Compressor, Decompressor
from pyllmcodec.constants import DEFAULT_MODEL
from pyllmcodec.errors import CodecError

__all__ = ["TYPE_KEY", "codec_error", "compress_column", "decompress_column"]

#: the compressed column's field-metadata key: b"string" (cells were str, coded as UTF-8) or b"binary"
TYPE_KEY = b"pyllmcodec.type"

#: a codec error as a remote traceback's text shows it
_ERROR_LINE = re.compile(r"^pyllmcodec\.errors\.(\w+): (.*)$", re.MULTILINE)


def _options(options: dict[str, Any] | None, num_cpus: float | None) -> dict[str, Any]:
    opts = dict(options or {})
    if "model" in opts:
        raise TypeError("pass the model as model=, not inside the options")
    if num_cpus is not None and "threads" not in opts:
        opts["threads"] = max(1, int(num_cpus))
    return opts


def _column_index(batch: pa.Table, column: str) -> int:
    i = batch.schema.get_field_index(column)
    if i < 0:
        raise KeyError(f"no column {column!r} in the dataset (its columns: {batch.schema.names})")
    return i


def _put(batch: pa.Table, column: str, output: str, field: pa.Field, values: pa.Array) -> pa.Table:
    i = batch.schema.get_field_index(output)
    if output == column or i >= 0:
        return batch.set_column(i if i >= 0 else _column_index(batch, column), field, values)
    return batch.append_column(field, values)


def _fill(cells: list[Any], present: list[int], values: list[Any]) -> list[Any]:
    out = list(cells)
    for i, v in zip(present, values):
        out[i] = v
    return out


class _CompressActor:
    """One Ray actor: one Compressor, built once; ONE compress_batch per batch."""

    def __init__(self, column: str, output_column: str, model: str, options: dict[str, Any]) -> None:
        self.column, self.output_column = column, output_column
        self.compressor = Compressor(model, **options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        field = batch.schema.field(_column_index(batch, self.column))
        t = field.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            kind = b"string"
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            kind = b"binary"
        else:
            raise TypeError(f"column {self.column!r} is {t}: pyllmcodec.ray compresses string or binary columns")
        cells = batch.column(self.column).to_pylist()
        present = [i for i, c in enumerate(cells) if c is not None]
        data = [cells[i].encode("utf-8") if kind == b"string" else cells[i] for i in present]
        packed = self.compressor.compress_batch(data)  # one model batch for the whole Ray batch
        large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        out_type = pa.large_binary() if large else pa.binary()
        out_field = pa.field(self.output_column, out_type, nullable=True, metadata={TYPE_KEY: kind})
        values = pa.array(_fill(cells, present, packed), type=out_type)
        return _put(batch, self.column, self.output_column, out_field, values)


def _first_failing(dec: Decompressor, cells: list[bytes]) -> int | None:
    """The index of the first cell that fails alone, found by bisection (the
    whole list failed): about as much model work as decoding the list once."""
    lo, hi = 0, len(cells)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            dec.decompress_batch(cells[lo:mid])
        except CodecError:
            hi = mid
        else:
            lo = mid
    try:
        dec.decompress_batch(cells[lo:hi])
    except CodecError:
        return lo
    return None


class _DecompressActor:
    """One Ray actor: one Decompressor, built once; ONE decompress_batch per batch."""

    def __init__(self, column: str, output_column: str, model: str | None, options: dict[str, Any],
                 as_str: bool | None, key_column: str | None) -> None:
        self.column, self.output_column = column, output_column
        self.as_str, self.key_column = as_str, key_column
        self.decompressor = Decompressor(model, **options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        field = batch.schema.field(_column_index(batch, self.column))
        t = field.type
        if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)):
            raise TypeError(f"column {self.column!r} is {t}, not binary: it does not hold pyllmcodec archives")
        as_str = self.as_str
        if as_str is None:
            as_str = (field.metadata or {}).get(TYPE_KEY) == b"string"
        cells = batch.column(self.column).to_pylist()
        present = [i for i, c in enumerate(cells) if c is not None]
        blobs = [cells[i] for i in present]
        try:
            data = self.decompressor.decompress_batch(blobs)  # one model batch for the whole Ray batch
        except CodecError as exc:
            bad = _first_failing(self.decompressor, blobs)
            if bad is None:
                raise
            row = present[bad]
            raise type(exc)(f"{self._where(batch, row, len(cells))}: {exc}") from exc
        values: list[Any] = data
        if as_str:
            values = []
            for i, d in zip(present, data):
                try:
                    values.append(d.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{self._where(batch, i, len(cells))} decodes to bytes that are not UTF-8; "
                                     "pass as_str=False") from exc
        large = pa.types.is_large_binary(t)
        out_type = (pa.large_string() if large else pa.string()) if as_str else (
            pa.large_binary() if large else pa.binary())
        out_field = pa.field(self.output_column, out_type, nullable=True)
        return _put(batch, self.column, self.output_column, out_field,
                    pa.array(_fill(cells, present, values), type=out_type))

    def _where(self, batch: pa.Table, row: int, n: int) -> str:
        where = f"column {self.column!r}, row {row} of a batch of {n}"
        if self.key_column is not None and batch.schema.get_field_index(self.key_column) >= 0:
            where += f" ({self.key_column}={batch.column(self.key_column)[row].as_py()!r})"
        return where


def _map_args(concurrency: int | tuple[int, ...], num_gpus: float | None, num_cpus: float | None,
              extra: dict[str, Any]) -> dict[str, Any]:
    if isinstance(concurrency, tuple):  # (min, max) or (min, max, initial): an autoscaling pool
        lo, hi, *initial = concurrency
        compute = ray.data.ActorPoolStrategy(min_size=lo, max_size=hi, initial_size=initial[0] if initial else None)
    else:
        compute = ray.data.ActorPoolStrategy(size=concurrency)
    args: dict[str, Any] = {"compute": compute, **extra}
    if num_gpus is not None:
        args["num_gpus"] = num_gpus
    if num_cpus is not None:
        args["num_cpus"] = num_cpus
    return args


def compress_column(
    ds: ray.data.Dataset,
    column: str,
    *,
    output_column: str | None = None,
    model: str = DEFAULT_MODEL,
    compressor_options: dict[str, Any] | None = None,
    batch_size: int = 256,
    concurrency: int | tuple[int, ...] = 1,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    **map_batches_args: Any,
) -> ray.data.Dataset:
    """A dataset whose ``output_column`` (default: ``column`` itself,
    replaced) holds each cell of ``column`` (str or bytes; nulls stay null)
    compressed into one archive, as a binary column.

    ``model`` must be a registered name (each actor loads it);
    ``compressor_options``: the other :class:`~pyllmcodec.Compressor`
    arguments.  ``batch_size``: rows per ``map_batches`` call, each ONE
    ``compress_batch``; ``concurrency``: actors (or ``(min, max)``, ``(min, max, initial)``);
    ``num_cpus`` / ``num_gpus``: reserved per actor (``num_cpus`` also sets
    the model's ``threads``).  Other keyword arguments go to
    ``Dataset.map_batches`` (``memory=``, ``resources=``, ...).  See the
    module docstring for how this scales and what bounds it."""
    if not isinstance(model, str):
        raise TypeError("model must be a registered model name: each Ray actor loads it by name")
    opts = _options(compressor_options, num_cpus)
    return ds.map_batches(
        _CompressActor,
        fn_constructor_args=(column, output_column or column, model, opts),
        batch_size=batch_size,
        batch_format="pyarrow",
        **_map_args(concurrency, num_gpus, num_cpus, map_batches_args),
    )


def decompress_column(
    ds: ray.data.Dataset,
    column: str,
    *,
    output_column: str | None = None,
    model: str | None = None,
    decompressor_options: dict[str, Any] | None = None,
    batch_size: int = 256,
    concurrency: int | tuple[int, ...] = 1,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    as_str: bool | None = None,
    key_column: str | None = None,
    **map_batches_args: Any,
) -> ray.data.Dataset:
    """The inverse of :func:`compress_column`: ``output_column`` (default:
    ``column``, replaced) holds each archive of the binary ``column``
    decompressed.  ``as_str``: ``None`` returns ``str`` where the column's
    metadata says the cells were strings, else ``bytes``; ``True`` / ``False``
    force it.  ``model``: ``None`` loads the model each archive names (as
    :class:`~pyllmcodec.Decompressor`), else a registered name;
    ``key_column``: a column whose value an error message names for a
    corrupt cell.  The other arguments are :func:`compress_column`'s."""
    if model is not None and not isinstance(model, str):
        raise TypeError("model must be None or a registered model name: each Ray actor loads it by name")
    opts = _options(decompressor_options, num_cpus)
    return ds.map_batches(
        _DecompressActor,
        fn_constructor_args=(column, output_column or column, model, opts, as_str, key_column),
        batch_size=batch_size,
        batch_format="pyarrow",
        **_map_args(concurrency, num_gpus, num_cpus, map_batches_args),
    )


def codec_error(exc: BaseException) -> CodecError | None:
    """The :class:`~pyllmcodec.CodecError` behind an exception that Ray raised
    while consuming a dataset, or None.  With
    ``DataContext.get_current().raise_original_map_exception = True`` Ray
    raises a ``RayTaskError`` that *is* an instance of the codec's class (and
    this returns its cause); by default Ray Data wraps the actor's error in a
    ``UserCodeException`` that keeps it only as text in its traceback, and
    this rebuilds it from there: same class, same message (row included)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, CodecError):
            cause = getattr(e, "cause", None)  # a RayTaskError(CodecError): the remote exception itself
            return cause if isinstance(cause, CodecError) else e
        cause = getattr(e, "cause", None)  # RayTaskError keeps the remote exception here
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    found = _ERROR_LINE.findall(str(exc))
    if not found:
        return None
    name, message = found[-1]  # the last one: ours, which names the row
    cls = getattr(errors, name, None)
    return cls(message) if isinstance(cls, type) and issubclass(cls, CodecError) else None
