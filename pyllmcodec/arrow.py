"""Arrow and Parquet: a string or binary column of a ``pyarrow.Table``
compressed cell by cell in one model batch (``pip install "pyllmcodec[arrow]"``).

::

    import pyllmcodec.arrow as pa_llmz
    small = pa_llmz.compress_column(table, "text")       # binary column of headerless frames
    table2 = pa_llmz.decompress_column(small, "text")    # == table
    pa_llmz.write_parquet(table, "t.parquet", ["text"])  # compress, then write
    table3 = pa_llmz.read_parquet("t.parquet")           # read, then decompress

Each non-null cell becomes one *headerless frame* (docs/FORMAT.md section
11a: index, CRC-32 and payloads; about 15 bytes besides the payload for a
one-chunk cell, half of which Parquet's zstd takes back) made by
:meth:`~pyllmcodec.Compressor.compress_batch`, so the cells share one
schedule: many short cells fill the rows of one wave instead of running a
wave each.  Nulls stay nulls (no frame); an empty string is a
frame of a few bytes.  The parameters every frame needs (model id, probe
digest, geometry: :class:`~pyllmcodec.FrameParams`) are stored once, in the
**field metadata** of the compressed column under the key ``b"pyllmcodec"``
(JSON, see :func:`column_metadata`), together with the model's name, the
column's original Arrow type (so that decoding gives back ``string`` or
``binary``, large or not), the dictionary's bytes if one was used, and the
writer's version.  Field metadata rather than schema metadata: it stays with
the column through ``select``, ``rename_columns``, ``slice``,
``concat_tables``, record batches, datasets and Parquet files (pyarrow
stores the Arrow schema, field metadata included, in the file), where schema
metadata keyed by a column's name would go stale on a rename.

Each cell is coded on its own (from a fresh model state, or from the
dictionary), so any cell decodes without the others, but nothing is learnt
from one record for the next: on short, similar records (JSON lines of
~100 bytes) Parquet's own zstd, which compresses a whole page as one stream,
stays smaller (a trained ``dictionary`` narrows the gap); on longer text
cells (paragraphs, documents) the model wins.

Memory: the cells go to the model in batches of at most ``max_batch_bytes``
input bytes (default 64 MiB, about 1.5 hours of coding with the default
model on a 2-core CPU, so one batch for most tables); each batch is one ``compress_batch`` call, and decoding
regroups the frames by the same rule (their decoded sizes are in their
indexes), so it recreates the writer's waves.  A row slice or a filter of a
compressed table decodes too, only with fewer rows per wave.

Errors.  Data errors are :class:`~pyllmcodec.CodecError` subclasses, as
everywhere in pyllmcodec, and name the column and, for a corrupt cell, its
row in the table (``column 'text', row 17: ...``; nulls counted): a corrupt
frame index is found before any model work; a corrupt payload fails its
CRC-32 while decoding (``decompress_batch`` names the record; a failure of a
whole wave names the column only).  A column without the
metadata (not compressed, or its metadata lost on the way) is a
:class:`~pyllmcodec.FormatError` from :func:`decompress_column`.  Misuse
raises built-in errors: ``KeyError`` for a column that is not there,
``TypeError`` for a column type that cannot be compressed, ``ValueError``
for compressing a column twice or an ``output_column`` that is taken.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .codec import Compressor, Decompressor, ModelArg
from .constants import DEFAULT_MAX_OUTPUT_SIZE, DEFAULT_MODEL
from .dictionary import Dictionary, as_dictionary
from .errors import CodecError, FormatError, ModelError, OutputLimitError
from .frames import FrameIndex, FrameParams

__all__ = [
    "CODEC_ID",
    "DEFAULT_MAX_BATCH_BYTES",
    "METADATA_KEY",
    "column_metadata",
    "compress_column",
    "compressed_columns",
    "decompress_column",
    "read_parquet",
    "write_parquet",
]

#: the field-metadata key of a compressed column
METADATA_KEY = b"pyllmcodec"
#: the ``"codec"`` value in that metadata
CODEC_ID = "pyllmcodec"
#: the layout version of that metadata (a reader refuses newer ones)
METADATA_VERSION = 1
#: input bytes per ``compress_batch`` call (and per ``decompress_batch`` call)
DEFAULT_MAX_BATCH_BYTES = 64 << 20
#: rows turned into Python objects at a time
_PIECE_ROWS = 1 << 14

#: the column types that can be compressed, by the name the metadata stores
_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "string_view": pa.string_view(),
    "binary_view": pa.binary_view(),
}
_FIXED = re.compile(r"fixed_size_binary\[(\d+)\]\Z")
_RECORD = re.compile(r"record (\d+): (.*)\Z", re.S)


def _type_name(t: pa.DataType) -> str | None:
    """The metadata's name of ``t``, or None if it cannot be compressed."""
    for name, typ in _TYPES.items():
        if t == typ:
            return name
    if pa.types.is_fixed_size_binary(t):
        return f"fixed_size_binary[{t.byte_width}]"
    return None


def _type_of(name: Any, column: str) -> pa.DataType:
    if isinstance(name, str):
        if name in _TYPES:
            return _TYPES[name]
        m = _FIXED.match(name)
        if m and 0 < int(m.group(1)) < 1 << 31:
            return pa.binary(int(m.group(1)))
    raise FormatError(f"column {column!r}: unknown original type {name!r} in its pyllmcodec metadata")


def _is_large(t: pa.DataType) -> bool:
    return bool(pa.types.is_large_string(t) or pa.types.is_large_binary(t))


def _frames_type(original: pa.DataType) -> pa.DataType:
    """The type of the compressed column: 64-bit offsets if the original had them."""
    return pa.large_binary() if _is_large(original) else pa.binary()


def _index(table: pa.Table, column: str | int) -> int:
    names = table.column_names
    if isinstance(column, int) and not isinstance(column, bool):
        if not -len(names) <= column < len(names):
            raise KeyError(f"column index {column} out of range for a table of {len(names)} columns")
        return column % len(names)
    if not isinstance(column, str):
        raise TypeError(f"column must be a name or an index, not {type(column).__name__}")
    if names.count(column) != 1:
        raise KeyError(f"no column named {column!r}" if column not in names
                       else f"{names.count(column)} columns are named {column!r}: pass an index")
    return names.index(column)


def _place(table: pa.Table, i: int, field: pa.Field, data: pa.ChunkedArray,
           output_column: str | None) -> pa.Table:
    """``table`` with column ``i`` replaced by ``field``/``data``, or with
    them appended as ``output_column`` (which must not exist)."""
    if _check_output(table, i, output_column) is None:
        return table.set_column(i, field, data)
    return table.append_column(field, data)


def _check_output(table: pa.Table, i: int, output_column: str | None) -> str | None:
    """``output_column`` if it names a new column, None if column ``i`` is
    to be replaced; ValueError if it names another column."""
    if output_column is None or output_column == table.column_names[i]:
        return None
    if not isinstance(output_column, str):
        raise TypeError(f"output_column must be a str, not {type(output_column).__name__}")
    if output_column in table.column_names:
        raise ValueError(f"output_column {output_column!r} is already a column of the table")
    return output_column


def _check_batch_bytes(max_batch_bytes: int | None) -> int | None:
    if max_batch_bytes is not None and (not isinstance(max_batch_bytes, int) or isinstance(max_batch_bytes, bool)
                                        or max_batch_bytes < 1):
        raise ValueError("max_batch_bytes must be an int >= 1, or None (one batch)")
    return max_batch_bytes


class _Batcher:
    """Cells (with where they go) gathered into batches of at most ``limit``
    input bytes (a longer cell alone): the rule both directions apply to the
    cells' decoded sizes, so that decoding runs the waves coding ran."""

    def __init__(self, limit: int | None, run: Callable[[list[Any], list[tuple[int, int]]], None]) -> None:
        self.limit, self.run = limit, run
        self.items: list[Any] = []
        self.targets: list[tuple[int, int]] = []
        self.size = 0

    def add(self, item: Any, size: int, target: tuple[int, int]) -> None:
        if self.items and self.limit is not None and self.size + size > self.limit:
            self.flush()
        self.items.append(item)
        self.targets.append(target)
        self.size += size

    def flush(self) -> None:
        if self.items:
            items, targets = self.items, self.targets
            self.items, self.targets, self.size = [], [], 0
            self.run(items, targets)


def _pieces(data: pa.ChunkedArray, as_type: pa.DataType) -> Iterable[tuple[int, int, list[Any]]]:
    """``(chunk, start row in it, values)`` of ``data`` cast to ``as_type``,
    ``_PIECE_ROWS`` at a time (None for a null)."""
    for ci, chunk in enumerate(data.chunks):
        for start in range(0, len(chunk), _PIECE_ROWS):
            yield ci, start, chunk.slice(start, _PIECE_ROWS).cast(as_type).to_pylist()


def _rebuild(values: list[list[Any]], build: pa.DataType, final: pa.DataType) -> pa.ChunkedArray:
    """One chunk per list (more if one outgrows 32-bit offsets), built as
    ``build`` and cast to ``final``."""
    chunks: list[pa.Array] = []
    for vals in values:
        arr = pa.array(vals, type=build)
        parts = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        chunks.extend(p if build == final else p.cast(final) for p in parts)
    return pa.chunked_array(chunks, type=final)


# ------------------------------------------------------------------ metadata


def column_metadata(field: pa.Field) -> dict[str, Any] | None:
    """The pyllmcodec metadata of a compressed column's field (a dict:
    ``codec``, ``version``, ``writer``, ``model``, ``params``, ``type``,
    ``max_batch_bytes``, and ``dictionary`` in base64 if one was used), or
    None if the field has none.  FormatError if it is there but unreadable."""
    raw = (field.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"column {field.name!r}: its pyllmcodec metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("codec") != CODEC_ID:
        raise FormatError(f"column {field.name!r}: its pyllmcodec metadata is not a dict with codec {CODEC_ID!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"column {field.name!r}: its pyllmcodec metadata has no valid version")
    if version > METADATA_VERSION:
        raise FormatError(f"column {field.name!r} was written by {meta.get('writer', 'a newer pyllmcodec')!r} "
                          f"with metadata version {version}; this pyllmcodec ({__version__}) reads up to "
                          f"{METADATA_VERSION}: upgrade pyllmcodec")
    return meta


def compressed_columns(table: pa.Table | pa.Schema) -> list[str]:
    """The names of the columns of ``table`` (or of a schema) that carry
    pyllmcodec metadata, in order."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    return [f.name for f in schema if f.metadata and METADATA_KEY in f.metadata]


def _without_key(metadata: Mapping[bytes, bytes] | None) -> dict[bytes, bytes] | None:
    rest = {k: v for k, v in (metadata or {}).items() if k != METADATA_KEY}
    return rest or None


# ------------------------------------------------------------------ compress


def compress_column(
    table: pa.Table,
    column: str | int,
    *,
    model: ModelArg = DEFAULT_MODEL,
    output_column: str | None = None,
    dictionary: bytes | Dictionary | None = None,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    **compressor_options: Any,
) -> pa.Table:
    """``table`` with its string or binary ``column`` (a name or an index)
    compressed: a ``binary`` column (``large_binary`` for a large type) of
    headerless frames, one per non-null cell, nulls kept; its field carries
    the metadata :func:`decompress_column` needs (see the module docstring).

    ``model``, ``dictionary`` and ``compressor_options`` (``level``,
    ``batch_size``, ``threads``, ...) are the :class:`~pyllmcodec.Compressor`'s;
    the dictionary's bytes go into the metadata, so decoding needs nothing
    else.  ``output_column``: a new column of that name gets the frames, the
    original stays (default: the column is replaced, in place, same name).
    ``max_batch_bytes``: input bytes per ``compress_batch`` call (None: the
    whole column in one).  Other columns and the schema metadata are kept."""
    i = _index(table, column)
    field = table.schema.field(i)
    type_name = _type_name(field.type)
    if type_name is None:
        raise TypeError(f"column {field.name!r} is {field.type}: only string, binary (large, view, fixed size) "
                        "columns can be compressed")
    if field.metadata and METADATA_KEY in field.metadata:
        raise ValueError(f"column {field.name!r} is already compressed (it has pyllmcodec metadata)")
    limit = _check_batch_bytes(max_batch_bytes)
    _check_output(table, i, output_column)
    dic = as_dictionary(dictionary)
    comp = Compressor(model, dictionary=dic, **compressor_options)
    params = comp.frame_params()

    data = table.column(i)
    frames: list[list[Any]] = [[None] * len(c) for c in data.chunks]

    def run(cells: list[Any], targets: list[tuple[int, int]]) -> None:
        for (ci, row), frame in zip(targets, comp.compress_batch(cells, params=params)):
            frames[ci][row] = frame

    batcher = _Batcher(limit, run)
    for ci, start, values in _pieces(data, pa.large_binary()):
        for k, v in enumerate(values):
            if v is not None:
                batcher.add(v, len(v), (ci, start + k))
    batcher.flush()

    meta: dict[str, Any] = {
        "codec": CODEC_ID,
        "version": METADATA_VERSION,
        "writer": f"pyllmcodec {__version__}",
        "model": model if isinstance(model, str) else str(comp.model.name),
        "params": params.to_dict(),
        "type": type_name,
        "max_batch_bytes": limit,
    }
    if dic is not None:
        meta["dictionary"] = base64.b64encode(dic.data).decode("ascii")
    out_type = _frames_type(field.type)
    new_field = pa.field(output_column if output_column is not None else field.name, out_type,
                         nullable=field.nullable,
                         metadata={**(field.metadata or {}), METADATA_KEY: json.dumps(meta).encode()})
    return _place(table, i, new_field, _rebuild(frames, out_type, out_type), output_column)


# ------------------------------------------------------------------ decompress


def _label(exc: CodecError, where: str) -> CodecError:
    """``exc`` again (same type) with ``where`` in front of its message."""
    return type(exc)(f"{where}: {exc}")


def decompress_column(
    table: pa.Table,
    column: str | int,
    *,
    model: ModelArg | None = None,
    output_column: str | None = None,
    max_output_size: int | None = DEFAULT_MAX_OUTPUT_SIZE,
    **decompressor_options: Any,
) -> pa.Table:
    """``table`` with the compressed ``column`` (from :func:`compress_column`)
    decoded back to its original type, nulls and field metadata.

    ``model``: default, the model name the metadata records (pass the model,
    or its registered name, when that name does not load here).
    ``output_column``: as in :func:`compress_column`.  ``max_output_size``:
    the most bytes one cell may decode to (as the Decompressor's: 4 GiB by
    default, None for no limit).  ``decompressor_options`` (``device``,
    ``threads``, ``max_memory``, ...) are the
    :class:`~pyllmcodec.Decompressor`'s.  Errors: see the module docstring."""
    i = _index(table, column)
    _check_output(table, i, output_column)
    field = table.schema.field(i)
    meta = column_metadata(field)
    name = field.name
    if meta is None:
        raise FormatError(f"column {name!r} has no pyllmcodec metadata (field metadata key {METADATA_KEY!r}): "
                          "it was not compressed by pyllmcodec.arrow, or its metadata was lost on the way")
    original = _type_of(meta.get("type"), name)
    if not (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)):
        raise FormatError(f"column {name!r} has pyllmcodec metadata but is {field.type}, not binary")
    try:
        params = FrameParams.from_dict(meta.get("params"))
    except FormatError as exc:
        raise _label(exc, f"column {name!r}") from None
    dic_b64 = meta.get("dictionary")
    dictionary = None
    if dic_b64 is not None:
        try:
            dictionary = base64.b64decode(dic_b64, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise FormatError(f"column {name!r}: the dictionary in its pyllmcodec metadata is not base64") from None
    from_meta = model is None
    if from_meta:
        model = meta.get("model")
        if not isinstance(model, str):
            raise FormatError(f"column {name!r}: its pyllmcodec metadata names no model")
    limit = meta.get("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise FormatError(f"column {name!r}: bad max_batch_bytes in its pyllmcodec metadata")
    dec = Decompressor(model, dictionary=dictionary, max_output_size=max_output_size, **decompressor_options)

    data = table.column(i)
    offsets = [0]
    for c in data.chunks:
        offsets.append(offsets[-1] + len(c))
    cells: list[list[Any]] = [[None] * len(c) for c in data.chunks]

    def run(frames: list[bytes], targets: list[tuple[int, int]]) -> None:
        try:
            outs = dec.decompress_batch(frames, params=params)
        except CodecError as exc:
            m = _RECORD.match(str(exc))
            if m is not None and int(m.group(1)) < len(targets):
                ci, row = targets[int(m.group(1))]
                raise type(exc)(f"column {name!r}, row {offsets[ci] + row}: {m.group(2)}") from None
            if isinstance(exc, ModelError) and from_meta:
                raise ModelError(f"column {name!r} was compressed with model {model!r} ({exc}): pass model= "
                                 "(that model, or the name it is registered under here) to decompress it") from None
            raise _label(exc, f"column {name!r}") from None
        for (ci, row), cell in zip(targets, outs):
            cells[ci][row] = cell

    batcher = _Batcher(limit, run)
    for ci, start, values in _pieces(data, pa.large_binary()):
        for k, v in enumerate(values):
            if v is None:
                continue
            where = f"column {name!r}, row {offsets[ci] + start + k}"
            try:  # the decoded size, for the batches (and the index checked before any model work)
                size = FrameIndex(v, params).footer.total_len
            except FormatError as exc:
                raise _label(exc, where) from None
            if max_output_size is not None and size > max_output_size:
                raise OutputLimitError(f"{where}: decodes to {size} bytes, over max_output_size={max_output_size}")
            batcher.add(v, size, (ci, start + k))
    batcher.flush()

    build = pa.large_binary() if _is_large(original) else pa.binary()
    try:
        restored = _rebuild(cells, build, original)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # e.g. a fixed size that the frames' sizes contradict
        raise FormatError(f"column {name!r}: the decoded cells are not {original}: {exc}") from None
    new_field = pa.field(output_column if output_column is not None else name, original, nullable=field.nullable,
                         metadata=_without_key(field.metadata))
    return _place(table, i, new_field, restored, output_column)


# ------------------------------------------------------------------ Parquet


def _leaf_paths(schema: pa.Schema, opts: Mapping[str, Any]) -> list[str]:
    """The Parquet column paths of ``schema`` as :func:`pyarrow.parquet.write_table`
    with ``opts`` lays it out (``s.x`` for a struct's child, ``l.list.element``
    for a list's items: the names its per-column options take)."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink,
                   **{k: opts[k] for k in ("use_compliant_nested_type", "flavor") if k in opts})
    md = pq.read_metadata(pa.BufferReader(sink.getvalue()))
    return [md.schema.column(j).path for j in range(md.num_columns)]


def write_parquet(
    table: pa.Table,
    where: Any,
    columns: str | Sequence[str],
    *,
    model: ModelArg = DEFAULT_MODEL,
    dictionary: bytes | Dictionary | None = None,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    frames_compression: str = "zstd",
    parquet_options: Mapping[str, Any] | None = None,
    **compressor_options: Any,
) -> pa.Table:
    """Compress ``columns`` of ``table`` (:func:`compress_column` with
    ``model``, ``dictionary``, ``max_batch_bytes`` and ``compressor_options``)
    and write the result to ``where`` (a path or a writable file object)
    with :func:`pyarrow.parquet.write_table` and ``parquet_options``.
    Returns the table as written.

    The compressed columns get Parquet compression ``frames_compression``
    (default ``"zstd"``: it takes back about half of the ~15 bytes a short
    cell's frame spends on its index and checksums, for a negligible time
    next to the model's; ``"none"`` to store the frames as they are), and
    neither Parquet dictionary encoding nor statistics (their cells are
    unique bytes).  The other columns get what ``parquet_options`` says,
    pyarrow's defaults otherwise.  A ``compression`` given as a dict by
    column path is used as is, only completed for the compressed columns;
    ``use_dictionary`` and ``write_statistics`` given as lists lose the
    compressed columns."""
    names = [columns] if isinstance(columns, str) else list(columns)
    for name in names:
        table = compress_column(table, name, model=model, dictionary=dictionary, max_batch_bytes=max_batch_bytes,
                                **compressor_options)
    opts = dict(parquet_options or {})
    packed = set(compressed_columns(table))
    if packed:
        others = [p for p in _leaf_paths(table.schema, opts) if p not in packed]
        comp = opts.get("compression", "snappy")  # pyarrow's default
        comp = dict(comp) if isinstance(comp, Mapping) else dict.fromkeys(others, comp)
        for name in packed:
            comp.setdefault(name, frames_compression)
        opts["compression"] = comp
        for key in ("use_dictionary", "write_statistics"):
            value = opts.get(key, True)
            if value is True:
                opts[key] = others
            elif value is not False and not isinstance(value, str) and isinstance(value, Iterable):
                opts[key] = [n for n in value if n not in packed]
    pq.write_table(table, where, **opts)
    return table


def read_parquet(source: Any, columns: Sequence[str] | None = None, *, decompress: bool = True,
                 model: ModelArg | None = None, decompressor_options: Mapping[str, Any] | None = None,
                 **read_options: Any) -> pa.Table:
    """Read a Parquet file (:func:`pyarrow.parquet.read_table` with
    ``columns`` and ``read_options``) and, with ``decompress``, decode every
    column that carries pyllmcodec metadata (:func:`decompress_column` with
    ``model`` and ``decompressor_options``).  ``decompress=False`` leaves
    them compressed (their metadata kept: decode them later with
    :func:`decompress_column`)."""
    table = pq.read_table(source, columns=columns, **read_options)
    if decompress:
        for i, f in enumerate(table.schema):
            if f.metadata and METADATA_KEY in f.metadata:
                table = decompress_column(table, i, model=model, **dict(decompressor_options or {}))
    return table
