"""The benchmark corpora, fetched by script and cached outside the repository.

Nothing large is committed.  Each corpus is assembled from a public source the
first time it is asked for and cached under :func:`cache_dir`
(``~/.cache/pyllmcodec/corpora``, or ``$PYLLMCODEC_CORPUS_DIR``):

``canterbury4``
    The four large English texts of the Canterbury corpus (alice29, asyoulik,
    lcet10, plrabn12), taken from ``tests/testdata/`` of the brotli 1.2.1
    source distribution on PyPI.  They are benchmarked as four files, each
    compressed on its own.
``alice29``
    The first of those alone (the ``--quick`` text).
``linux-doc-10MiB`` / ``linux-doc-1MiB`` / ``linux-doc-32KiB``
    The English reStructuredText sources of Debian's ``linux-doc-6.1``
    package (``usr/share/doc/linux-doc-6.1/html/_sources/**/*.rst.txt``
    without ``translations/``), concatenated with nothing between them in
    byte-sorted order of their paths, then cut to the first 10 MiB, 1 MiB or
    32 KiB (the last is one full wave of the default geometry, 32 rows x 1 KiB
    chunks: the slice the slow model rows run on).  The ``.deb`` is fetched with ``apt-get download`` and unpacked
    here in Python (nothing is installed).
``random-256KiB``
    256 KiB of SHAKE-256 output: incompressible, exercises the fallback path.
``gzipped-linux-doc-1MiB``
    An already-compressed file: gzip -9 (mtime 0) of linux-doc-1MiB (320 KB).

NOTE: aggregation.  A corpus of several files is reported as total
compressed bits / total original bytes over its files, each compressed
separately; that is the convention that reproduces the reference numbers
(see ``EXPECTED`` in :mod:`bench.report`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CORPUS_NAMES",
    "Corpus",
    "CorpusError",
    "assemble_linux_doc",
    "cache_dir",
    "extract_deb_members",
    "load_corpus",
]

KiB = 1 << 10
MiB = 1 << 20

BROTLI_SDIST = "brotli==1.2.1"
CANTERBURY_FILES = {
    # name: SHA-256 of the file as shipped in brotli-1.2.1/tests/testdata/
    "alice29.txt": "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
    "asyoulik.txt": "eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc",
    "lcet10.txt": "5314ba1dbb03f471df88bec6cd120a938ef60d0fd3511c5c1dce61bf7463245f",
    "plrabn12.txt": "07e2e0b461af78c7c647cb53dab39de560198e16f799b4516eccf0fbd69f764c",
}

LINUX_DOC_PACKAGE = "linux-doc-6.1"
LINUX_DOC_SOURCES = "usr/share/doc/linux-doc-6.1/html/_sources/"
LINUX_DOC_BYTES = 10 * MiB
#: SHA-256 of the 10 MiB prefix as built from linux-doc-6.1 6.1.192-2 (the
#: reference numbers were measured on it).  Other package versions are
#: accepted with a warning: a security update rarely touches the first 10 MiB,
#: but if it does, bits/byte may move slightly.
LINUX_DOC_10MIB_SHA256 = "fa14228d3f7ea4d9aad77d48d422a1c7c54ef045488d4c85280f5d42258a2bf3"


class CorpusError(RuntimeError):
    """A corpus could not be fetched or assembled; the message says how to fix it."""


@dataclass(frozen=True)
class Corpus:
    """A named list of files; each file is compressed on its own."""

    name: str
    description: str
    files: tuple[tuple[str, bytes], ...]
    #: where the data came from (package versions, hashes), for the results file
    provenance: dict

    @property
    def size(self) -> int:
        return sum(len(d) for _, d in self.files)

    def prefix(self, nbytes: int, name: str | None = None) -> Corpus:
        """The first ``nbytes`` of a one-file corpus, as a new corpus."""
        if len(self.files) != 1:
            raise ValueError("prefix() needs a one-file corpus")
        fname, data = self.files[0]
        return Corpus(
            name or f"{self.name}[:{nbytes}]",
            f"first {nbytes} bytes of {self.name}",
            ((fname, data[:nbytes]),),
            self.provenance,
        )


def cache_dir() -> Path:
    """``$PYLLMCODEC_CORPUS_DIR``, else ``~/.cache/pyllmcodec/corpora``; created."""
    env = os.environ.get("PYLLMCODEC_CORPUS_DIR")
    d = Path(env) if env else Path.home() / ".cache" / "pyllmcodec" / "corpora"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _log(msg: str) -> None:
    print(f"[bench.corpora] {msg}", file=sys.stderr, flush=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# --------------------------------------------------------------------------
# Canterbury (from the brotli sdist on PyPI)


def _fetch_canterbury(dest: Path) -> None:
    _log(f"downloading the {BROTLI_SDIST} sdist from PyPI for the Canterbury texts")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", BROTLI_SDIST, "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise CorpusError(
                f"`{' '.join(cmd)}` failed (needs network access to PyPI):\n{r.stderr.strip()}\n"
                f"Alternatively put {', '.join(CANTERBURY_FILES)} into {dest}/."
            )
        (sdist,) = Path(tmp).glob("brotli-*.tar.gz")
        found: dict[str, bytes] = {}
        with tarfile.open(sdist) as tf:
            for m in tf.getmembers():
                parts = m.name.split("/")
                if m.isfile() and parts[-2:-1] == ["testdata"] and parts[-1] in CANTERBURY_FILES:
                    found[parts[-1]] = tf.extractfile(m).read()  # type: ignore[union-attr]
    dest.mkdir(parents=True, exist_ok=True)
    for name in CANTERBURY_FILES:
        if name not in found:
            raise CorpusError(f"{name} not found in the {BROTLI_SDIST} sdist")
        _atomic_write(dest / name, found[name])


def _canterbury_files() -> list[tuple[str, bytes]]:
    dest = cache_dir() / "canterbury"
    if not all((dest / n).is_file() for n in CANTERBURY_FILES):
        _fetch_canterbury(dest)
    files = []
    for name, digest in CANTERBURY_FILES.items():
        data = (dest / name).read_bytes()
        if _sha256(data) != digest:
            raise CorpusError(f"{dest / name} has the wrong SHA-256; delete it to refetch")
        files.append((name, data))
    return files


def _canterbury4() -> Corpus:
    return Corpus(
        "canterbury4",
        "Canterbury large English texts (alice29, asyoulik, lcet10, plrabn12), each compressed separately",
        tuple(_canterbury_files()),
        {"source": f"{BROTLI_SDIST} sdist tests/testdata", "sha256": dict(CANTERBURY_FILES)},
    )


def _alice29() -> Corpus:
    files = _canterbury_files()[:1]
    return Corpus("alice29", "Canterbury alice29.txt", tuple(files),
                  {"source": f"{BROTLI_SDIST} sdist tests/testdata",
                   "sha256": {"alice29.txt": CANTERBURY_FILES["alice29.txt"]}})


# --------------------------------------------------------------------------
# linux-doc-6.1 (Debian package, unpacked in Python)


def _ar_members(deb: bytes) -> Iterator[tuple[str, bytes]]:
    """The members of a Debian ``ar`` archive (common format, no long names)."""
    if deb[:8] != b"!<arch>\n":
        raise CorpusError("not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        yield name, deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)  # members are 2-byte aligned


def _open_data_tar(name: str, payload: bytes) -> tarfile.TarFile:
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload))
        return tarfile.open(fileobj=raw, mode="r|")
    return tarfile.open(fileobj=io.BytesIO(payload), mode="r|*")  # .xz, .gz, .bz2, plain


def extract_deb_members(deb: bytes, prefix: str, suffix: str) -> dict[str, bytes]:
    """Regular files of a ``.deb``'s data archive whose path (without the
    leading ``./``) starts with ``prefix`` and ends with ``suffix``; keys are
    the paths relative to ``prefix``."""
    for name, payload in _ar_members(deb):
        if name.startswith("data.tar"):
            out: dict[str, bytes] = {}
            with _open_data_tar(name, payload) as tf:
                for m in tf:
                    path = m.name.removeprefix("./")
                    if m.isfile() and path.startswith(prefix) and path.endswith(suffix):
                        out[path[len(prefix) :]] = tf.extractfile(m).read()  # type: ignore[union-attr]
            return out
    raise CorpusError("the .deb has no data.tar.* member")


def assemble_linux_doc(sources: dict[str, bytes]) -> bytes:
    """Join the ``*.rst.txt`` files outside ``translations/`` in byte-sorted
    order of their relative paths, with nothing between them."""
    keys = [k for k in sources if k.endswith(".rst.txt") and not k.startswith("translations/")]
    keys.sort(key=lambda k: k.encode("utf-8"))
    return b"".join(sources[k] for k in keys)


def _apt_download(package: str, workdir: Path) -> Path:
    """``apt-get download package`` into workdir; runs ``apt-get update`` once
    and retries if the package lists are empty and we are root."""
    if shutil.which("apt-get") is None:
        raise CorpusError(
            f"{package} comes from Debian's archive and this machine has no apt-get.  "
            f"Download {package}_*_all.deb from https://packages.debian.org/bookworm/{package} "
            f"(or a mirror) and put it into {workdir}/, then rerun."
        )
    cmd = ["apt-get", "download", "-q", package]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
    if r.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        _log("apt-get download failed; running apt-get update and retrying")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, check=False)
        r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise CorpusError(
            f"`{' '.join(cmd)}` failed:\n{r.stderr.strip()}\n"
            f"Run `sudo apt-get update` (the package is in Debian bookworm main), or put "
            f"{package}_*_all.deb into {workdir}/ by hand, then rerun."
        )
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise CorpusError(f"apt-get download did not produce {package}_*.deb in {workdir}")
    return debs[-1]


def _linux_doc_prefix() -> tuple[bytes, dict]:
    d = cache_dir() / "linux-doc"
    data_path = d / "linux-doc-6.1-10MiB.txt"
    meta_path = d / "manifest.json"
    if data_path.is_file() and meta_path.is_file():
        return data_path.read_bytes(), json.loads(meta_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    debs = sorted(d.glob(f"{LINUX_DOC_PACKAGE}_*.deb"))
    if debs:
        deb_path = debs[-1]
    else:
        _log(f"fetching {LINUX_DOC_PACKAGE} with apt-get download (about 37 MB)")
        deb_path = _apt_download(LINUX_DOC_PACKAGE, d)
    _log(f"unpacking {deb_path.name}")
    sources = extract_deb_members(deb_path.read_bytes(), LINUX_DOC_SOURCES, ".rst.txt")
    joined = assemble_linux_doc(sources)
    if len(joined) < LINUX_DOC_BYTES:
        raise CorpusError(f"{deb_path.name} gave only {len(joined)} bytes of sources")
    data = joined[:LINUX_DOC_BYTES]
    n_files = sum(1 for k in sources if not k.startswith("translations/"))
    meta = {
        "source": f"Debian {deb_path.name}: {LINUX_DOC_SOURCES}**/*.rst.txt without translations/, "
        "byte-sorted paths, concatenated, first 10 MiB",
        "deb": deb_path.name,
        "files": n_files,
        "joined_bytes": len(joined),
        "sha256_10MiB": _sha256(data),
    }
    _atomic_write(data_path, data)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    deb_path.unlink()  # 37 MB; the assembled prefix is all we need
    return data, meta


def _linux_doc(nbytes: int, name: str) -> Callable[[], Corpus]:
    def load() -> Corpus:
        data, meta = _linux_doc_prefix()
        if meta["sha256_10MiB"] != LINUX_DOC_10MIB_SHA256:
            _log(
                f"warning: the linux-doc 10 MiB prefix from {meta['deb']} differs from the one the "
                "reference numbers were measured on (6.1.192-2); bits/byte may differ slightly"
            )
        return Corpus(
            name,
            f"first {nbytes} bytes of the joined linux-doc-6.1 .rst sources",
            ((f"linux-doc-6.1[:{nbytes}]", data[:nbytes]),),
            dict(meta),
        )

    return load


# --------------------------------------------------------------------------
# generated data (the codec's fallback path)


def _random_256kib() -> Corpus:
    data = hashlib.shake_256(b"pyllmcodec bench random").digest(256 * KiB)
    return Corpus("random-256KiB", "256 KiB of SHAKE-256 output (incompressible)",
                  (("random.bin", data),), {"source": "hashlib.shake_256(b'pyllmcodec bench random')"})


def _gzipped_linux_doc() -> Corpus:
    data, _ = _linux_doc_prefix()
    blob = gzip.compress(data[:MiB], compresslevel=9, mtime=0)
    return Corpus("gzipped-linux-doc-1MiB", "an already-compressed file: gzip -9 of linux-doc-1MiB",
                  (("linux-doc-1MiB.gz", blob),), {"source": "gzip.compress(linux-doc[:1 MiB], 9, mtime=0)"})


_LOADERS: dict[str, Callable[[], Corpus]] = {
    "canterbury4": _canterbury4,
    "alice29": _alice29,
    "linux-doc-10MiB": _linux_doc(10 * MiB, "linux-doc-10MiB"),
    "linux-doc-1MiB": _linux_doc(1 * MiB, "linux-doc-1MiB"),
    "linux-doc-32KiB": _linux_doc(32 * KiB, "linux-doc-32KiB"),
    "random-256KiB": _random_256kib,
    "gzipped-linux-doc-1MiB": _gzipped_linux_doc,
}

#: every corpus name :func:`load_corpus` accepts
CORPUS_NAMES = tuple(_LOADERS)


def load_corpus(name: str) -> Corpus:
    """Fetch (first time) and return the corpus called ``name``."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose from {', '.join(CORPUS_NAMES)}") from None
    return loader()
