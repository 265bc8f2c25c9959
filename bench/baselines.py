"""The classical compressors pyllmcodec is compared against.

Each baseline is a :class:`Baseline`: ``compress(data) -> blob`` and
``decompress(blob, size) -> data`` (``size`` is the original length, which
the harness knows; only PPMd needs it).  Library bindings are used where they
exist; everything runs single-threaded.  The settings reproduce these command
lines:

=====================  =====================================================
row                    implementation
=====================  =====================================================
gzip -9                ``gzip`` module (zlib level 9, gzip framing, mtime 0)
bzip2 -9               ``bz2`` module, level 9
xz -9e                 ``lzma`` module, preset 9 | PRESET_EXTREME, .xz format
zstd -19               python-zstandard, level 19
zstd --ultra -22 ...   python-zstandard, level 22, window_log 27, long-distance matching
brotli -q 11 -w 24     brotli module, quality 11, lgwin 24
PPMd o8 / o16          pyppmd variant I (PPMd8), restore method RESTART, 256 MiB
zpaq -method 5         Debian's zpaq 7.15 CLI (``-method 5 -threads 1``), archive size
=====================  =====================================================

NOTE: PPMd is fed 16 KiB pieces.  pyppmd 1.3.1's encoder writes undecodable
output when one ``encode`` call produces more than about 32 KiB in some cases
(text: one call on more than 256 KiB; random data: a 32 KiB call, whose output
is 2.6 % larger than its input, while 31 KiB calls are fine), so 64 KiB pieces
are not enough for incompressible data.  Pieces of at most 31 KiB give
byte-identical streams (checked on text and random data), which decode with
one ``decode`` call; 16 KiB leaves a 2x margin.  256 MiB of model memory is what
reproduces the reference numbers (16 MiB costs 0.12 bits/byte on 10 MiB of
linux-doc: the model restarts when memory runs out).

NOTE: zpaq.  The reference numbers were made with the zpaq CLI, whose archive
(journaling format, text hints) is not what the PyPI ``zpaq`` binding writes:
on linux-doc-10MiB the CLI gives 1.426 bits/byte, the binding 1.448.  So the
CLI is used: ``zpaq`` on PATH, else a copy unpacked from Debian's ``zpaq``
package into the corpus cache (``apt-get download``, nothing installed).
Without apt the row falls back to the binding and says so in its name.

NOTE: gzip.  zlib level 9 and GNU gzip -9 are different deflate encoders:
on linux-doc-10MiB they give 2.4212 and 2.4204 bits/byte (on Canterbury
2.9802 and 2.9796).  The ``gzip`` module is used; the difference is the
encoder, not the corpus.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ALL", "FAST", "Baseline", "find_zpaq_cli", "get_baselines"]

PPMD_MEM = 256 << 20
PPMD_PIECE = 16 << 10  # see the NOTE above: keeps each call's output under 32 KiB


@dataclass
class Baseline:
    """One classical compressor at fixed settings."""

    #: the row name, written like the command line it reproduces
    name: str
    #: short identifier for ``--codecs``
    key: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]
    #: which library / binary and version does the work
    implementation: str
    #: cheap enough for ``--quick``
    fast: bool = False
    #: why this baseline cannot run here (None: it can)
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)


def _gzip() -> Baseline:
    import zlib

    return Baseline(
        "gzip -9", "gzip",
        lambda d: gzip.compress(d, compresslevel=9, mtime=0),
        lambda b, n: gzip.decompress(b),
        f"python gzip module, zlib {zlib.ZLIB_RUNTIME_VERSION}",
        fast=True,
    )


def _bzip2() -> Baseline:
    return Baseline("bzip2 -9", "bzip2", lambda d: bz2.compress(d, 9), lambda b, n: bz2.decompress(b),
                    "python bz2 module (libbz2)", fast=True)


def _xz() -> Baseline:
    return Baseline(
        "xz -9e", "xz",
        lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME),
        lambda b, n: lzma.decompress(b),
        "python lzma module (liblzma)",
        fast=True,
    )


def _zstd() -> list[Baseline]:
    try:
        import zstandard as zstd
    except ImportError as e:
        miss = f"zstandard not importable ({e})"
        return [Baseline("zstd -19", "zstd19", _none, _none2, "", unavailable=miss),
                Baseline("zstd --ultra -22 --long=27", "zstd22", _none, _none2, "", unavailable=miss)]
    impl = f"python-zstandard {zstd.__version__} (libzstd {'.'.join(map(str, zstd.ZSTD_VERSION))})"
    c19 = zstd.ZstdCompressor(level=19)
    d19 = zstd.ZstdDecompressor()
    p22 = zstd.ZstdCompressionParameters.from_level(22, window_log=27, enable_ldm=True)
    c22 = zstd.ZstdCompressor(compression_params=p22)
    d22 = zstd.ZstdDecompressor(max_window_size=1 << 27)
    return [
        Baseline("zstd -19", "zstd19", c19.compress, lambda b, n: d19.decompress(b), impl, fast=True),
        Baseline("zstd --ultra -22 --long=27", "zstd22", c22.compress, lambda b, n: d22.decompress(b), impl),
    ]


def _brotli() -> Baseline:
    try:
        import brotli
    except ImportError as e:
        return Baseline("brotli -q 11 -w 24", "brotli", _none, _none2, "",
                        unavailable=f"brotli not importable ({e}); pip install brotli")
    return Baseline(
        "brotli -q 11 -w 24", "brotli",
        lambda d: brotli.compress(d, quality=11, lgwin=24),
        lambda b, n: brotli.decompress(b),
        f"brotli module {getattr(brotli, '__version__', '?')}",
        fast=True,
    )


def ppmd_compress(data: bytes, order: int, mem: int = PPMD_MEM) -> bytes:
    """PPMd variant I, fed in 16 KiB pieces (see the module NOTE)."""
    import pyppmd

    enc = pyppmd.Ppmd8Encoder(order, mem, pyppmd.PPMD8_RESTORE_METHOD_RESTART)
    out = [enc.encode(data[i : i + PPMD_PIECE]) for i in range(0, len(data), PPMD_PIECE)]
    out.append(enc.flush())
    return b"".join(out)


def ppmd_decompress(blob: bytes, size: int, order: int, mem: int = PPMD_MEM) -> bytes:
    import pyppmd

    dec = pyppmd.Ppmd8Decoder(order, mem, pyppmd.PPMD8_RESTORE_METHOD_RESTART)
    return dec.decode(blob, size) if size else b""


def _ppmd() -> list[Baseline]:
    rows = []
    try:
        import pyppmd

        impl, miss = f"pyppmd {pyppmd.__version__} (PPMd var. I, {PPMD_MEM >> 20} MiB)", None
    except ImportError as e:
        impl, miss = "", f"pyppmd not importable ({e}); pip install pyppmd"
    for order in (8, 16):
        rows.append(Baseline(
            f"PPMd o{order}", f"ppmd{order}",
            lambda d, o=order: ppmd_compress(d, o),
            lambda b, n, o=order: ppmd_decompress(b, n, o),
            impl, fast=order == 8, unavailable=miss,
        ))
    return rows


# --------------------------------------------------------------------------
# zpaq


def find_zpaq_cli(fetch: bool = True) -> str | None:
    """Path of a zpaq CLI: ``zpaq`` on PATH, else one unpacked from Debian's
    package into the corpus cache (fetched with ``apt-get download`` when
    ``fetch``).  None when neither works."""
    on_path = shutil.which("zpaq")
    if on_path:
        return on_path
    from .corpora import CorpusError, _apt_download, cache_dir, extract_deb_members

    tool = cache_dir() / "tools" / "zpaq"
    if tool.is_file() and os.access(tool, os.X_OK):
        return str(tool)
    if not fetch:
        return None
    tool.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=tool.parent) as tmp:
            deb = _apt_download("zpaq", Path(tmp))
            files = extract_deb_members(deb.read_bytes(), "usr/bin/", "zpaq")
    except CorpusError:
        return None
    if "zpaq" not in files:
        return None
    tool.write_bytes(files["zpaq"])
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(tool)


def _zpaq_cli_codec(exe: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
    def compress(data: bytes) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "data").write_bytes(data)
            subprocess.run([exe, "a", "out.zpaq", "data", "-method", "5", "-threads", "1"],
                           cwd=tmp, check=True, capture_output=True)
            return Path(tmp, "out.zpaq").read_bytes()

    def decompress(blob: bytes, size: int) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "in.zpaq").write_bytes(blob)
            subprocess.run([exe, "x", "in.zpaq", "-to", "x", "-threads", "1"],
                           cwd=tmp, check=True, capture_output=True)
            return Path(tmp, "x", "data").read_bytes()

    return compress, decompress


def _zpaq(fetch: bool) -> Baseline:
    exe = find_zpaq_cli(fetch=fetch)
    if exe is not None:
        r = subprocess.run([exe], capture_output=True, text=True, check=False)
        first = (r.stdout or r.stderr).strip().splitlines()[:1]
        c, d = _zpaq_cli_codec(exe)
        return Baseline("zpaq -method 5", "zpaq", c, d, f"{first[0] if first else 'zpaq'} ({exe})")
    try:
        import zpaq
    except ImportError as e:
        return Baseline("zpaq -method 5", "zpaq", _none, _none2, "",
                        unavailable=f"no zpaq CLI (apt-get download zpaq failed) and no PyPI zpaq ({e})")
    return Baseline(
        "zpaq level 5 (PyPI binding)", "zpaq",
        lambda d: zpaq.compress(d, level=5, threads=1, hints=False),
        lambda b, n: zpaq.decompress(b),
        f"PyPI zpaq {zpaq.__version__}",
        notes=["no zpaq CLI here: the PyPI binding writes a different archive "
               "(1.448 vs the CLI's 1.426 bits/byte on linux-doc-10MiB)"],
    )


def _none(data: bytes) -> bytes:
    raise RuntimeError("baseline unavailable")


def _none2(blob: bytes, size: int) -> bytes:
    raise RuntimeError("baseline unavailable")


#: keys in table order
ALL = ("gzip", "bzip2", "xz", "zstd19", "zstd22", "brotli", "ppmd8", "ppmd16", "zpaq")
#: the ``--quick`` set: the fast ones plus PPMd o8
FAST = ("gzip", "bzip2", "xz", "zstd19", "brotli", "ppmd8")


def get_baselines(keys: tuple[str, ...] | list[str] = ALL, fetch_tools: bool = True) -> list[Baseline]:
    """The baselines named by ``keys`` (see :data:`ALL`), in table order;
    unavailable ones are included with ``unavailable`` set."""
    unknown = set(keys) - set(ALL)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {', '.join(ALL)}")
    rows = [_gzip(), _bzip2(), _xz(), *_zstd(), _brotli(), *_ppmd()]
    if "zpaq" in keys:  # only then look for (and maybe fetch) the CLI
        rows.append(_zpaq(fetch_tools))
    return [b for b in rows if b.key in keys]
