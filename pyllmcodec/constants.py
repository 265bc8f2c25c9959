"""Format and scheduling constants of pyllmcodec, each with the reason for its value.

Everything that ends up inside an archive, or that a decoder must agree on,
is defined here and nowhere else.  The container layout itself is specified in
``docs/FORMAT.md``; the field sizes below are the ones that document names.
"""

from __future__ import annotations

__all__ = [
    "CM_KIND",
    "CM_KINDS",
    "CM_LONG_PERIOD",
    "CM_MAX_LONG",
    "CM_MAX_LONG_TABLE_BITS",
    "CM_MAX_TABLE_BITS",
    "CM_MIN_TABLE_BITS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_MAX_OUTPUT_SIZE",
    "DEFAULT_PRIME",
    "DEFAULT_TOKEN_CHUNK_SIZE",
    "DEFLATE_LEVEL",
    "ENTRY_FULL_CHUNK",
    "ENTRY_METHOD_MASK",
    "ENTRY_NEXT_ROW",
    "EOL_SUFFIXES",
    "FILE_EXTENSION",
    "FORMAT_VERSION",
    "FRAME_ID_LEN",
    "FRAME_MAGIC",
    "MAGIC",
    "MAX_BATCH_SIZE",
    "MAX_BYTE_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_DICTIONARY_SIZE",
    "MAX_META_LEN",
    "MAX_PRECISION",
    "METHOD_DEFLATE",
    "METHOD_MODEL",
    "METHOD_MODEL_EOL_CR",
    "METHOD_MODEL_EOL_SPACE_CR",
    "METHOD_MODEL_TOKENS",
    "METHOD_NAMES",
    "METHOD_STORED",
    "MIN_PRECISION",
    "MIXER_KIND",
    "MIXER_KINDS",
    "MODEL_METHODS",
    "PROBE_BYTES",
    "PROBE_VERSION",
    "TAG_BLOCK",
    "TAG_BLOCK_COMPACT",
    "TAG_FOOTER",
    "TRAILER_MAGIC",
    "WAVE_MIXER_KIND",
]

#: First 8 bytes of every archive.  PNG-style: the high-bit byte catches 7-bit
#: transports, "\r\n" and "\x1a" catch newline translation and DOS text mode,
#: so a mangled file fails at the magic instead of deep in the decoder.
MAGIC = b"\x89LLMZ\r\n\x1a"

#: The container version written by this code.  A reader refuses any other
#: value (FormatError): a future version may change every field after it.
FORMAT_VERSION = 1

#: Last 4 bytes of every archive, after the footer offset.  Lets a reader that
#: seeks to the end (random access, ``info``) check it found a trailer.
TRAILER_MAGIC = b"LZE1"

#: Block tag ("W" for wave): one block per wave that holds chunks of this archive.
TAG_BLOCK = 0x57
#: Block tag of the compact entry layout ("w"; docs/FORMAT.md section 3): the
#: same block, with entries that leave out a row, raw length or coded length
#: that follows from the previous entry, ``chunk_size`` or the method.
TAG_BLOCK_COMPACT = 0x77
#: A compact entry's lead byte: the method in the low 6 bits and two flags,
#: each meaning a field is left out because it is implied.
ENTRY_METHOD_MASK = 0x3F
ENTRY_FULL_CHUNK = 0x40  # raw_len == the header's chunk_size
ENTRY_NEXT_ROW = 0x80  # row == the previous entry's row + 1 (0 for a block's first)
#: Footer tag ("E" for end): exactly one, after the last block.
TAG_FOOTER = 0x45

#: First 4 bytes of a compact frame (docs/FORMAT.md section 11a), the format
#: for small records: PNG-style like MAGIC (a high-bit byte, then "\x1a" for
#: DOS text mode) in half the bytes, and different from MAGIC by its third
#: byte, so one look at 4 bytes tells the two apart.
FRAME_MAGIC = b"\x89LZ\x1a"
#: Bytes of a compact frame's model id and probe digest: truncated SHA-256s.
#: 64 bits make an accidental match (a different model, or numerics that
#: changed) a 2^-64 event per check; they guard against mistakes, not
#: attackers -- the per-chunk CRC-32s still catch what slips through, and a
#: full archive keeps the whole digests.
FRAME_ID_LEN = 8

#: The longest dictionary (docs/FORMAT.md section 4d): it is fed to the model
#: before every chunk, so it must leave room in the segment for the chunk;
#: the segment's length bounds it further (half of it, as the prime).
MAX_DICTIONARY_SIZE = 1 << 20

#: Suffix the CLI adds and strips.
FILE_EXTENSION = ".llmz"

#: Default chunk size in bytes.  Each chunk is coded from a fresh context (BOS),
#: so a longer chunk gives the model more context (better ratio) but costs more
#: per step (attention over the KV cache grows with the position), gives fewer
#: chunks to spread over the batch rows of a small input (less parallelism) and
#: a larger unit for random access.  1024 because: the default model is trained
#: on BOS + 1024-byte windows (exactly this chunking); measured on a 4-layer
#: d=128 ByteLM graph in ONNX Runtime (CPU, batch 32) the mean step cost is
#: 7.2 / 10.0 / 15.8 / 21.8 ms at 512 / 1024 / 2048 / 4096 bytes, so 2048 would
#: cost ~1.6x the time per byte; and 32 rows fill from 32 KiB of input.  Re-run
#: ``python -m bench.codec_speed --sweep-chunks 512,1024,2048`` when the model changes.
#: Capped by the model's ``max_context`` at run time.
DEFAULT_CHUNK_SIZE = 1024

#: Default number of rows stepped together.  32 keeps a CPU core's GEMMs busy
#: and, with 1 KiB chunks, means a wave buffers 32 KiB of input.
DEFAULT_BATCH_SIZE = 32

#: the model new archives use unless told otherwise: the exact integer model
#: (pyllmcodec.nets.intlm), whose archives open on every machine.  "default"
#: names the float model 1.5.0, kept so that its archives keep decoding.
DEFAULT_MODEL = "default-exact"

#: Row indices and wave batch sizes are stored as u16 in blocks.
MAX_BATCH_SIZE = 65535

#: A byte-level chunk longer than the model's context is coded in segments
#: (scheduler.segment_plan): each segment after the first starts from a fresh
#: state fed the ``prime`` bytes before it, so it is not coded from nothing.
#: Measured with model 1.4.0 on linux-doc's first 256 KiB (ideal bits/byte):
#: 1024-byte chunks 1.655, 8192-byte chunks with a 128-byte prime 1.602, at
#: 1.125 model steps per byte.
DEFAULT_PRIME = 128

#: The match model archives may be coded through (header key ``mixer``,
#: FORMAT.md section 4c; the algorithm is csrc/mixer.hpp).  A later algorithm
#: gets a new name, so a reader refuses kinds it does not run.
MIXER_KIND = "match1"
#: The token-level tier's match model (the same header key, FORMAT.md section
#: 4g; csrc/wavematch.hpp): one state shared by a wave's rows.
WAVE_MIXER_KIND = "wave1"
#: Every match model kind a reader runs.
MIXER_KINDS = (MIXER_KIND, WAVE_MIXER_KIND)

#: The context-mixing stage archives may be coded through (header key ``cm``,
#: FORMAT.md section 4f; the algorithm, with its constants, is csrc/cm.hpp).
#: A later algorithm gets a new name, so a reader refuses kinds it does not run.
CM_KIND = "cm3"
#: Every kind a reader runs, by name -> csrc/cm.hpp's Params::kind: ``cm1``
#: (the first stage; compact and headerless frames still write it), ``cm2``
#: (cm1 plus a match model over the group's bytes and a weight set by match
#: length) and ``cm3`` (cm2 with checked buckets, counter maps and a third
#: mixer; what full archives write)
CM_KINDS = {"cm1": 1, "cm2": 2, "cm3": 3}
#: The stage's counters per context are 2^table_bits; the header records
#: table_bits, bounded so that a hostile header cannot ask for more than
#: 11 * 4 * 2^22 bytes (176 MiB; cm1 144 MiB) plus at most 0.4 MB.
CM_MIN_TABLE_BITS = 10
CM_MAX_TABLE_BITS = 22
#: cm3 in the long mode may record up to this (a state learns from up to a
#: period of waves): 11 * 4 * 2^24 bytes, 704 MiB per state
CM_MAX_LONG_TABLE_BITS = 24
#: the long mode (header key ``cm.long``, FORMAT.md section 4f): an archive's
#: context-mixing state carries from block to block within groups of this
#: many blocks by default (32 MiB of input at 32 rows x 64 KiB); a reader
#: takes 2..CM_MAX_LONG
CM_LONG_PERIOD = 16
CM_MAX_LONG = 1 << 20

#: Byte-level chunks are at most this long (64 KiB) even when coded in
#: segments: it bounds the decoder's per-wave symbol buffer (chunk x batch).
MAX_BYTE_CHUNK_SIZE = 1 << 16

#: Chunk lengths are bounded by this whatever the model allows (16 MiB); it
#: also bounds what one hostile index entry can make a reader allocate.
MAX_CHUNK_SIZE = 1 << 24

#: The JSON metadata of a header is at most 1 MiB; a reader checks the length
#: field against this before reading, so a hostile length cannot allocate more.
MAX_META_LEN = 1 << 20

#: The quantizer precisions (bits of a row's frequency total) a header may
#: name: the native core's range (csrc/quantizer.hpp kMinPrecision /
#: kMaxPrecision; P <= 31 so 2^P fits a uint32 CDF entry), repeated here so
#: that the container validates headers without importing the native core.
#: tests/test_container.py checks they equal ``pyllmcodec.core``'s.
MIN_PRECISION = 2
MAX_PRECISION = 31

#: Chunk methods (the ``method`` byte of an index entry).
#: stored: the raw bytes.  Chosen when nothing else is smaller, so a chunk
#: never grows; this is what bounds the output size.
METHOD_STORED = 0
#: model: arithmetic-coded with the language model at the block's geometry.
METHOD_MODEL = 1
#: deflate: raw DEFLATE (zlib, wbits=-15, no zlib header: the entry's CRC-32
#: already protects it).  Chosen when it beats the model (e.g. long repeats
#: that a short-context model cannot see).
METHOD_DEFLATE = 2

#: model-tokens: a token-level model (one with a tokenizer, header key
#: ``tokenizer``) coded the chunk's token sequence.  The payload is the coder's
#: stream; the token count is not stored: the decoder stops a row at the token
#: that brings its bytes to the entry's ``raw_len``.  Only valid in archives
#: whose header has ``tokenizer``; byte-level archives never contain it.
METHOD_MODEL_TOKENS = 3

#: model-eol-cr / model-eol-space-cr: the archive's model method (``model`` in
#: a byte-level archive, ``model-tokens`` in a token-level one) coded the chunk
#: with the suffix below removed before every LF; every LF of the chunk was
#: preceded by it (see pyllmcodec/eol.py).  The decoder stops a row when its
#: restored length (decoded bytes plus the suffix once per LF) reaches
#: ``raw_len``.
METHOD_MODEL_EOL_CR = 4
METHOD_MODEL_EOL_SPACE_CR = 5
EOL_SUFFIXES = {METHOD_MODEL_EOL_CR: b"\r", METHOD_MODEL_EOL_SPACE_CR: b" \r"}

#: The methods that need the model to decode.
MODEL_METHODS = (METHOD_MODEL, METHOD_MODEL_TOKENS, METHOD_MODEL_EOL_CR, METHOD_MODEL_EOL_SPACE_CR)

METHOD_NAMES = {METHOD_STORED: "stored", METHOD_MODEL: "model", METHOD_DEFLATE: "deflate",
                METHOD_MODEL_TOKENS: "model-tokens", METHOD_MODEL_EOL_CR: "model-eol-cr",
                METHOD_MODEL_EOL_SPACE_CR: "model-eol-space-cr"}

#: Default chunk size (bytes) for token-level models.  Measured with
#: smollm2-135m (context 2048 tokens) on the first 64 KiB of alice29 and of
#: linux-doc (bench/smollm2_eval.py, docs/SMOLLM2.md): ideal bits/byte
#: 1.229/1.056 at 2048 bytes, 1.174/0.974 at 4096, 1.148/0.948 at 6144.  6144
#: bytes is ~1700 tokens of English (3.6 bytes/token), the largest size that
#: still fits the context; denser cells are split (codec.Compressor._split_cell).
DEFAULT_TOKEN_CHUNK_SIZE = 6144

#: zlib level for the deflate fallback.  6 is zlib's default: within ~1% of 9 on
#: 1-2 KiB chunks and several times faster, and it is tried on every chunk.
DEFLATE_LEVEL = 6

#: The probe: fed (rotated by the row index) to every row of a batch of the
#: archive's batch size; the SHA-256 of the quantized tables it yields is the
#: archive's probe digest.  48 steps: long enough to leave the position-0 code
#: path and mix text, digits, punctuation, a high byte and a NUL; short enough
#: to cost a fraction of one wave.  Never change it without bumping PROBE_VERSION.
PROBE_BYTES = b"The quick brown fox, 0123456789 {}[]\n\xc3\xa9\x00\xff ok!?\t~"
#: Recorded in the header so a later probe definition does not silently
#: compare against digests made with this one.
PROBE_VERSION = 1

#: ``decompress`` refuses to produce more than this (OutputLimitError) unless
#: the caller passes a larger ``max_output_size``: a guard against hostile
#: archives that claim huge sizes.  Streaming readers have no limit: they never
#: hold more than one wave.
DEFAULT_MAX_OUTPUT_SIZE = 1 << 32

#: The memory one wave may take (model state of its rows and the coder's
#: arrays; ``WaveRunner.wave_bytes``), the same default for the encoder and
#: the decoder, so that whatever the default encoder writes the default
#: decoder reads: 4 GiB is 2048 rows of the default model (2 MiB of KV cache
#: per row).  Both sides refuse a wave over it before allocating; a hostile
#: archive cannot make a decoder allocate more.  Pass ``max_memory=`` on both
#: sides for bigger waves (a GPU run).
DEFAULT_MAX_MEMORY = 4 << 30
