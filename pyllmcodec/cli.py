"""The ``pyllmcodec`` command line: compress, decompress, info, export.

Behaves like gzip/xz/zstd where it can: ``pyllmcodec FILE`` compresses to
``FILE.llmz`` and removes FILE (keep it with ``-k``), ``pyllmcodec -d
FILE.llmz`` restores it, ``-c`` writes to stdout, ``-o`` names the output,
``-f`` allows overwriting.  Output goes to a temporary file in the target's
directory that is renamed into place only after the archive is complete (and,
when decompressing, verified), so an interrupted or failed run leaves no
partial output and never touches the input.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO, Any

from ._version import __version__
from .constants import DEFAULT_BATCH_SIZE, DEFAULT_MAX_MEMORY, DEFAULT_MODEL, FILE_EXTENSION
from .errors import CodecError, DictionaryError, ModelError, NumericsMismatchError

__all__ = ["EXIT_CORRUPT", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_MISMATCH", "EXIT_OK", "EXIT_USAGE", "main"]

#: success
EXIT_OK = 0
#: an operational error: missing input, output exists without -f, I/O error
EXIT_ERROR = 1
#: bad command line (argparse's convention)
EXIT_USAGE = 2
#: the input is not a valid archive, is corrupt, or exceeds a limit
EXIT_CORRUPT = 3
#: the archive needs a model or numerics this machine does not have
EXIT_MISMATCH = 4
#: interrupted by SIGINT (128 + 2, the shell's convention); SIGTERM and SIGHUP
#: give 128 + their number (143, 129), after the partial output is removed
EXIT_INTERRUPTED = 130

_COMMANDS = ("compress", "decompress", "info", "export", "train-dictionary")
_DEVICES = ("auto", "cpu", "cuda")
_BACKENDS = ("auto", "onnxruntime", "torch")
_READ_SIZE = 1 << 20

EPILOG = f"""\
gzip style: 'pyllmcodec FILE...' compresses (removing FILE; -k keeps it, -c writes to stdout),
'pyllmcodec -d FILE.llmz...' decompresses, -t tests, -l lists; no FILE reads stdin when it is not
a terminal.  -1 .. -9 pick the level (unlike gzip's, a level picks how much context the model
sees per step: -7/-8 segments of 768 bytes, -9 the model's whole context; 1-6 its default 512).
exit status: {EXIT_OK} ok, {EXIT_ERROR} error (I/O, output exists, ...), {EXIT_USAGE} usage,
{EXIT_CORRUPT} corrupt or invalid archive, {EXIT_MISMATCH} model, numerics or dictionary mismatch,
{EXIT_INTERRUPTED} interrupted.
"""


class _Fail(Exception):
    """An error already worded for the user, with its exit status."""

    def __init__(self, msg: str, code: int = EXIT_ERROR) -> None:
        super().__init__(msg)
        self.code = code


class _Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler, so that the cleanup of a partial
    output (``_atomic_output``) runs as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


@contextmanager
def _termination_raises() -> Iterator[None]:
    """While the command runs, SIGTERM and SIGHUP raise :class:`_Terminated`
    (Python's default would end the process at once, leaving the temporary
    output file behind).  Signals someone set to be ignored (nohup) stay
    ignored; only the main thread can install handlers."""
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
                old[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------ argument parsing


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
    return n


def _size(text: str) -> int:
    """Bytes, with an optional K/M/G/T suffix (powers of 1024)."""
    scale = 1
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t and t[-1] in "KMGT":
        scale = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    try:
        n = int(float(t) * scale)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 8G, not {text!r}")
    return n


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="input files ('-' or none: stdin)")
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH (one input only)")
    p.add_argument("-c", "--stdout", action="store_true", help="write to standard output, keep inputs")
    p.add_argument("-k", "--keep", action="store_true", help="keep (don't delete) input files")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing output; write binary to a terminal")
    p.add_argument("-v", "--verbose", action="count", default=0, help="report ratio and speed per file")
    p.add_argument("-q", "--quiet", action="store_true", help="no warnings, no progress bar")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--model", help="model name (compress default: 'default'; decompress: the archive's)")
    p.add_argument("--device", default="auto", choices=_DEVICES, help="auto, cpu or cuda (default auto)")
    p.add_argument("--backend", default="auto", choices=_BACKENDS, help="auto, onnxruntime or torch (default auto)")
    p.add_argument("-T", "--threads", type=_positive, help="inference threads (default: the backend's)")
    p.add_argument("--rm", dest="keep", action="store_false",
                   help="remove the input after success (the default, as gzip; zstd's spelling)")
    p.add_argument("-t", "--test", action="store_true", help="decompress and check, write nothing")
    p.add_argument("-l", "--list", action="store_true", help="list sizes and ratio of archives (as gzip -l)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="walk directories: every file inside (every FILE.llmz when decompressing)")
    p.add_argument("--max-memory", type=_size, default=DEFAULT_MAX_MEMORY, metavar="BYTES",
                   help="memory one wave may take, e.g. 8G (default 4G); give the same when decompressing")
    p.add_argument("-D", "--dict", dest="dictionary", metavar="FILE",
                   help="prime every chunk with this dictionary (train-dictionary makes one); give the same "
                        "when decompressing")


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pyllmcodec",
        description="Lossless compression with a language model and a range coder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="store_true", help="the version and what decoding depends on")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    pc = sub.add_parser("compress", help="compress files to FILE.llmz", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(pc)
    pc.add_argument("-d", "--decompress", action="store_true", help="decompress instead")
    pc.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                    help="rows stepped together (default %(default)s)")
    pc.add_argument("--chunk-size", type=int,
                    help="bytes per chunk (default: the model's, 8192 for the default model); a chunk longer "
                    "than the model's context is coded in segments")
    pc.add_argument("--prime", type=int,
                    help="bytes of context each segment after the first starts from (default: the model's, 64 "
                    "for the default model)")
    for n in range(1, 10):
        pc.add_argument(f"-{n}", dest="level", action="store_const", const=n,
                        help="levels 1 (fastest) .. 9 (best): see below" if n == 1 else argparse.SUPPRESS)
    pc.add_argument("--context", type=int,
                    help="length of the segments chunks are coded in (default: the model's, 512 for the default "
                    "model; at most the model's context)")
    pc.add_argument("--no-mixer", dest="mixer", action="store_const", const=False, default=None,
                    help="do not run the model's match model (default: run it when the model ships one)")
    pc.add_argument("--no-cm", dest="cm", action="store_const", const=False, default=None,
                    help="do not code through the context-mixing stage (default: use it where the model can, "
                    "the exact byte-level models; docs/FORMAT.md section 4f)")
    pc.add_argument("--long", nargs="?", type=int, const=True, default=False, metavar="WAVES",
                    help="the context-mixing stage's long mode, as zstd's --long: each wave learns from the "
                    "archive's earlier waves too (smaller on inputs of several waves; random access then "
                    "decodes from the start of a group of WAVES waves, default 16; docs/FORMAT.md section 4f)")
    pc.add_argument("--verify", action="store_true", help="decode every wave after coding it and compare")
    pc.add_argument("--no-eol", dest="eol", action="store_false",
                    help="code CR LF line endings as they are (default: model-code CR LF text as LF, "
                    "restored exactly)")
    pd = sub.add_parser("decompress", help="decompress FILE.llmz", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(pd)
    pd.add_argument("-d", "--decompress", action="store_true", help=argparse.SUPPRESS)
    pt = sub.add_parser("train-dictionary", help="build a dictionary from sample files (as zstd --train)")
    pt.add_argument("files", nargs="+", metavar="FILE", help="sample files (one sample each, or see --lines)")
    pt.add_argument("-o", "--output", required=True, metavar="PATH", help="write the dictionary here")
    pt.add_argument("--size", type=_positive, default=256,
                    help="bytes at most (default %(default)s: half the default model's segments)")
    pt.add_argument("--lines", action="store_true", help="every line of the files is a sample (JSONL, logs)")
    pi = sub.add_parser("info", help="print an archive's header and index summary")
    pi.add_argument("files", nargs="+", metavar="FILE")
    pi.add_argument("--json", action="store_true", help="print JSON")
    pi.add_argument("--chunks", action="store_true", help="include one line per chunk")
    pe = sub.add_parser("export", help="turn a Hugging Face Llama-family causal LM into a model bundle "
                        "(needs transformers)")
    pe.add_argument("source", help="Hugging Face model id or local directory")
    pe.add_argument("out", help="bundle directory to write")
    pe.add_argument("--name", help="registry name recorded in the bundle (default: the source's last part)")
    pe.add_argument("--context", type=int, default=2048, help="tokens per state (default %(default)s)")
    pe.add_argument("--bos", type=int, help="token id that starts every chunk (default: the BOS token)")
    return top


def _normalise_argv(argv: list[str]) -> list[str]:
    """gzip style: no subcommand means compress (or decompress with -d, -t
    or -l); no argument at all reads stdin when it is not a terminal."""
    if not argv:
        return [] if sys.stdin is None or sys.stdin.isatty() else ["compress"]
    if argv[0] in _COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    flags = [a for a in argv if a.startswith("-") and not a.startswith("--") and len(a) > 2]
    short = {c for f in flags for c in f[1:]} if all(f[1:].isalpha() for f in flags) else set()
    if any(a in ("-d", "--decompress", "-t", "--test", "-l", "--list") for a in argv) or short & {"d", "t", "l"}:
        return ["decompress"] + [a for a in argv if a not in ("-d", "--decompress")]
    return ["compress", *argv]


# ------------------------------------------------------------------ helpers


def _say(args: Any, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"pyllmcodec: {msg}", file=sys.stderr)


def _unnamed_file(d: str) -> int | None:
    """An open file in directory ``d`` that has no name yet (Linux ``O_TMPFILE``):
    nothing of it survives a SIGKILL or power loss. None where the kernel, the
    filesystem or a missing ``/proc`` rule it out; real errors (no such
    directory, read-only, permission) propagate."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(d, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.EOPNOTSUPP, errno.EINVAL):
            return None  # a kernel or filesystem without O_TMPFILE
        raise


def _exists_message(path: str) -> str:
    return f"{path} already exists; not overwritten (use -f)"


def _publish_unnamed(fd: int, path: str, force: bool) -> None:
    """Give the unnamed file ``fd`` the name ``path``: one atomic link that
    refuses to clobber; with ``force`` an existing ``path`` is replaced through
    a hidden name that exists only between a link and a rename."""
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _publish_via(proc, str(fd), path, force)
    finally:
        os.close(proc)


def _publish_via(proc: int, src: str, path: str, force: bool) -> None:
    # linkat(proc, "FD", AT_FDCWD, path, AT_SYMLINK_FOLLOW); os.link's plain
    # link(2), used when no directory fd is given, would not follow the magic link
    try:
        os.link(src, path, src_dir_fd=proc)  # atomic, fails if path exists
        return
    except FileExistsError:
        if not force:
            raise _Fail(_exists_message(path)) from None
    d, base = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(d, f".{base}.{os.urandom(4).hex()}.tmp")
        try:
            os.link(src, tmp, src_dir_fd=proc)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name next to {path}")
    try:
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextmanager
def _atomic_output(path: str, force: bool) -> Iterator[IO[bytes]]:
    """A file that becomes ``path`` only when the block finishes without an
    exception. On Linux it has no name until then (``O_TMPFILE``), so not even
    SIGKILL leaves anything behind; elsewhere it is a hidden temporary file
    next to ``path``, removed on any exception."""
    d = os.path.dirname(os.path.abspath(path))
    fd = _unnamed_file(d)
    if fd is not None:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            _publish_unnamed(fh.fileno(), path, force)
        return
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and refuses to clobber a file created meanwhile
            except FileExistsError:
                raise _Fail(_exists_message(path)) from None
            except OSError:  # filesystem without hard links
                if os.path.exists(path):
                    raise _Fail(_exists_message(path)) from None
                os.rename(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Progress:
    """A progress bar on stderr for long work (tqdm, shown after 1 s, only on a terminal)."""

    def __init__(self, args: Any, total: int | None, desc: str) -> None:
        self._bar = None
        if args.quiet or args.no_progress or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, delay=1.0, leave=False, file=sys.stderr)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason


def _drop_stdout() -> None:
    """After a failed write to stdout (disk full, closed pipe), point fd 1 at
    /dev/null so the interpreter's final flush of the unwritten buffer cannot
    fail again (which would turn our exit status into 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _input_size(fin: IO[bytes]) -> int | None:
    """Bytes left in ``fin`` when it is a regular file, else None (a pipe, a
    terminal): the progress bar's total and the size compress picks its chunk
    size from."""
    try:
        st = os.fstat(fin.fileno())
        return max(0, st.st_size - fin.tell()) if stat.S_ISREG(st.st_mode) else None
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None


def _output_size(fin: IO[bytes]) -> int | None:
    """What a regular archive file decodes to (its footer, through the
    mapped index; the read position stays), for the progress bar's total."""
    if _input_size(fin) is None:
        return None
    from .codec import info

    try:
        return int(info(fin)["size"])
    except CodecError:
        return None  # the decoder will say what is wrong


def _check_input(src: str, args: Any, removes: bool) -> None:
    """Refuse what gzip refuses: a missing file, a directory, anything not a
    regular file unless writing to stdout (a FIFO or a device is read, never
    removed), and -- without -f -- a symbolic link or a file with other hard
    links when the input would be removed."""
    try:
        lst = os.lstat(src)
        st = os.stat(src)
    except FileNotFoundError:
        raise _Fail(f"{src}: no such file") from None
    if stat.S_ISDIR(st.st_mode):
        raise _Fail(f"{src} is a directory -- ignored")
    if not stat.S_ISREG(st.st_mode) and not args.stdout:
        raise _Fail(f"{src} is not a directory or a regular file -- ignored (use -c to read it to stdout)")
    if removes and not args.force:
        if stat.S_ISLNK(lst.st_mode):
            raise _Fail(f"{src} is a symbolic link -- unchanged (use -f to follow it and remove the link, "
                        "or -k to keep it)")
        if st.st_nlink > 1:
            others = st.st_nlink - 1
            raise _Fail(f"{src} has {others} other link{'s' if others > 1 else ''} -- unchanged "
                        "(use -f to remove this name anyway, or -k to keep it)")


def _plan_output(args: Any, src: str, decompress: bool) -> str | None:
    """The output path for ``src``, or None for stdout."""
    if args.stdout:
        return None
    if args.output:
        return args.output
    if src == "-":
        return None
    if decompress:
        if not src.endswith(FILE_EXTENSION) or len(src) == len(FILE_EXTENSION):
            raise _Fail(f"{src}: unknown suffix (expected {FILE_EXTENSION}); use -o or -c")
        return src[: -len(FILE_EXTENSION)]
    if src.endswith(FILE_EXTENSION) and not args.force:
        raise _Fail(f"{src} already has the {FILE_EXTENSION} suffix -- unchanged (use -f to compress anyway)")
    return src + FILE_EXTENSION


# ------------------------------------------------------------------ commands


def _run_file(args: Any, src: str, work: Any, decompress: bool) -> None:
    if args.test:  # decode and check, write nothing (gzip -t)
        _test_file(args, src, work)
        return
    out = _plan_output(args, src, decompress)
    removes = out is not None and src != "-" and not args.keep and not args.output
    if src != "-":
        _check_input(src, args, removes)
    if out is not None and os.path.exists(out) and not args.force:
        raise _Fail(f"{out} already exists; not overwritten (use -f)")
    if out is None and not decompress and sys.stdout.isatty() and not args.force:
        raise _Fail("compressed data not written to a terminal (use -f to force)")
    if out is not None and src != "-" and os.path.abspath(out) == os.path.abspath(src):
        raise _Fail(f"{src}: input and output are the same file")
    t0 = time.perf_counter()
    fin = sys.stdin.buffer if src == "-" else open(src, "rb")
    try:
        total = _output_size(fin) if decompress else _input_size(fin)
        progress = _Progress(args, total, os.path.basename(src) if src != "-" else "stdin")
        try:
            if out is None:
                try:
                    n_in, n_out = work(fin, sys.stdout.buffer, progress)
                    sys.stdout.buffer.flush()
                except BrokenPipeError:
                    raise
                except OSError as exc:
                    _drop_stdout()
                    raise _Fail(f"{src}: writing to standard output failed: {_os_reason(exc)}") from None
            else:
                try:
                    with _atomic_output(out, args.force) as fout:
                        n_in, n_out = work(fin, fout, progress)
                except OSError as exc:  # disk full, read-only, no such directory, I/O error
                    raise _Fail(
                        f"{src} -> {out}: {_os_reason(exc)}; no output was left behind"
                        + (f" and {src} is unchanged" if src != "-" else "")
                    ) from None
                if src != "-":
                    try:
                        shutil.copystat(src, out)
                    except OSError:
                        pass
        finally:
            progress.close()
    finally:
        if fin is not sys.stdin.buffer:
            fin.close()
    if removes:
        os.unlink(src)
    if args.verbose and not args.quiet:
        dt = time.perf_counter() - t0
        raw, packed = (n_out, n_in) if decompress else (n_in, n_out)
        pct = 100.0 * (1 - packed / raw) if raw else 0.0
        speed = raw / dt / 1e6 if dt > 0 else 0.0
        dest = "stdout" if out is None else out
        print(f"{src}: {pct:5.1f}% saved ({raw} -> {packed} bytes), {speed:.3f} MB/s -> {dest}", file=sys.stderr)


class _Discard:
    """A sink for -t: counts what would have been written."""

    def write(self, data: Any) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _test_file(args: Any, src: str, work: Any) -> None:
    if src != "-":
        _check_input(src, args, removes=False)
    fin = sys.stdin.buffer if src == "-" else open(src, "rb")
    try:
        progress = _Progress(args, _input_size(fin), os.path.basename(src) if src != "-" else "stdin")
        try:
            n_in, n_out = work(fin, _Discard(), progress)
        finally:
            progress.close()
    finally:
        if fin is not sys.stdin.buffer:
            fin.close()
    if args.verbose and not args.quiet:
        print(f"{src}: OK ({n_in} -> {n_out} bytes)", file=sys.stderr)


def _cmd_list(args: Any) -> int:
    """gzip -l: compressed and uncompressed sizes, ratio and name, per archive."""
    from .codec import info
    from .frames import split

    status = EXIT_OK
    print(f"{'compressed':>12} {'uncompressed':>12}  ratio  uncompressed_name")
    for src in _expand(args, decompress=True):
        try:
            data = sys.stdin.buffer.read() if src == "-" else open(src, "rb").read()
            parts = [info(m) for m in split(data)]
        except CodecError as exc:
            _say(args, f"{src}: {exc}")
            status = max(status, EXIT_CORRUPT)
            continue
        except OSError as exc:
            _say(args, f"{src}: {exc.strerror or exc}")
            status = max(status, EXIT_ERROR)
            continue
        packed, raw = len(data), sum(d["size"] for d in parts)
        ratio = 100.0 * (1 - packed / raw) if raw else 0.0
        name = src[: -len(FILE_EXTENSION)] if src.endswith(FILE_EXTENSION) else src
        print(f"{packed:>12} {raw:>12} {ratio:5.1f}%  {name}")
    return status


def _version_text() -> str:
    """The version and what decoding an archive depends on (docs/FORMAT.md:
    the model, and for float models the numerics fingerprint)."""
    lines = [f"pyllmcodec {__version__}"]
    try:
        import numpy as np
        import onnxruntime as ort

        from .backends.onnxruntime import cpu_isa_class
        from .models import available_models, load_model

        lines.append(f"python {sys.version.split()[0]}, numpy {np.__version__}, onnxruntime {ort.__version__}, "
                     f"CPU class {cpu_isa_class()}")
        for name in available_models():
            if name.startswith(("test-", "bench-")):
                continue
            if name == "default":
                m = load_model(name, device="cpu", backend="onnxruntime")
                lines.append(f"model {name}: sha256 {m.sha256}")
            else:
                lines.append(f"model {name}: available (loaded on first use)")
    except Exception as exc:  # a broken install still prints its version
        lines.append(f"(decoding environment unavailable: {type(exc).__name__}: {exc})")
    return "\n".join(lines)


def _read_dictionary(args: Any) -> bytes | None:
    """The bytes of ``-D FILE``, or None."""
    if not getattr(args, "dictionary", None):
        return None
    try:
        with open(args.dictionary, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise _Fail(f"cannot read the dictionary: {exc}", EXIT_USAGE) from None


def _cmd_train_dictionary(args: Any) -> int:
    from .dictionary import train_dictionary

    samples: list[bytes] = []
    for name in args.files:
        try:
            with open(name, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise _Fail(f"cannot read {name}: {exc}", EXIT_USAGE) from None
        samples += data.splitlines(keepends=True) if args.lines else [data]
    try:
        dic = train_dictionary(samples, size=args.size)
    except ValueError as exc:
        raise _Fail(str(exc), EXIT_USAGE) from None
    with _atomic_output(args.output, force=True) as fh:  # never half-written
        fh.write(dic)
    print(f"{args.output}: {len(dic)} bytes from {len(samples)} samples", file=sys.stderr)
    return EXIT_OK


def _cmd_compress(args: Any) -> int:
    from .codec import Compressor

    try:
        comp = Compressor(
            args.model or DEFAULT_MODEL, device=args.device, backend=args.backend, threads=args.threads,
            chunk_size=args.chunk_size, batch_size=args.batch_size, verify=args.verify, eol=args.eol,
            prime=args.prime, mixer=args.mixer, context=args.context, max_memory=args.max_memory,
            level=args.level, dictionary=_read_dictionary(args), cm=args.cm, long=args.long,
        )
    except ValueError as exc:
        raise _Fail(str(exc), EXIT_USAGE) from None

    def work(fin: IO[bytes], fout: IO[bytes], progress: _Progress) -> tuple[int, int]:
        size = _input_size(fin)  # a regular file's size picks the chunk size, as compress() does
        # the bar follows coded bytes; an exception (Ctrl-C, SIGTERM) aborts the writer: nothing more is coded
        return comp.copy_stream(fin, fout, size=size, read_size=comp.batch_size * comp.chunk_size_for(size),
                                progress=progress.update)

    files = _expand(args, decompress=False)
    if len(files) > 1 and not (args.stdout or args.output or args.test or "-" in files):
        return _compress_together(args, comp, files)
    return _each_file(args, work, decompress=False)


#: several input files are read and coded together (Compressor.compress_batch:
#: their chunks share waves) in groups of at most this many bytes
_TOGETHER_BYTES = 64 << 20


def _compress_together(args: Any, comp: Any, files: list[str]) -> int:
    """Several files in one command: their chunks share the waves (one
    ``compress_batch`` per group of up to 64 MiB), each still its own
    archive, written and published one by one as ``_run_file`` does."""
    status = EXIT_OK
    group: list[tuple[str, str, bytes]] = []
    size = 0

    def code(group: list[tuple[str, str, bytes]]) -> int:
        worst = EXIT_OK
        t0 = time.perf_counter()
        blobs = comp.compress_batch([data for _, _, data in group])
        dt = time.perf_counter() - t0
        for (src, out, data), blob in zip(group, blobs):
            try:
                try:
                    with _atomic_output(out, args.force) as fout:
                        fout.write(blob)
                except OSError as exc:
                    raise _Fail(f"{src} -> {out}: {_os_reason(exc)}; no output was left behind and {src} is "
                                "unchanged") from None
                with suppress(OSError):
                    shutil.copystat(src, out)
            except _Fail as exc:
                worst = max(worst, _failed(args, src, exc))
                continue
            if not args.keep:
                os.unlink(src)
            if args.verbose and not args.quiet:
                pct = 100.0 * (1 - len(blob) / len(data)) if data else 0.0
                print(f"{src}: {pct:5.1f}% saved ({len(data)} -> {len(blob)} bytes) -> {out}", file=sys.stderr)
        if args.verbose and not args.quiet:
            print(f"{len(group)} files coded together in {dt:.2f} s", file=sys.stderr)
        return worst

    for src in files:
        try:
            out = _plan_output(args, src, decompress=False)
            assert out is not None
            _check_input(src, args, removes=not args.keep)
            if os.path.exists(out) and not args.force:
                raise _Fail(f"{out} already exists; not overwritten (use -f)")
            with open(src, "rb") as fh:
                data = fh.read()
        except (_Fail, OSError) as exc:
            status = max(status, _failed(args, src, exc))
            continue
        if group and size + len(data) > _TOGETHER_BYTES:
            status = max(status, code(group))
            group, size = [], 0
        group.append((src, out, data))
        size += len(data)
    if group:
        status = max(status, code(group))
    return status


def _cmd_decompress(args: Any) -> int:
    from .codec import Decompressor

    dec = Decompressor(args.model, device=args.device, backend=args.backend, threads=args.threads,
                       max_memory=args.max_memory, dictionary=_read_dictionary(args))

    def work(fin: IO[bytes], fout: IO[bytes], progress: _Progress) -> tuple[int, int]:
        return dec.copy_stream(fin, fout, read_size=_READ_SIZE, progress=progress.update)  # bar: decoded bytes

    return _each_file(args, work, decompress=True)


def _expand(args: Any, decompress: bool) -> list[str]:
    """The inputs, with directories walked under -r (gzip -r): regular files
    not yet compressed, or the archives to decompress."""
    files = args.files or ["-"]
    if not getattr(args, "recursive", False):
        return files
    out: list[str] = []
    for f in files:
        if f != "-" and os.path.isdir(f):
            for d, dirs, names in os.walk(f):
                dirs.sort()
                out += [os.path.join(d, n) for n in sorted(names)
                        if n.endswith(FILE_EXTENSION) == decompress or args.test or args.list]
        else:
            out.append(f)
    return out


def _failed(args: Any, src: str, exc: BaseException) -> int:
    """Report a per-file failure (the run goes on with the next file); its exit status."""
    if isinstance(exc, _Fail):
        _say(args, str(exc))
        return exc.code
    if isinstance(exc, (NumericsMismatchError, ModelError, DictionaryError)):
        _say(args, f"{src}: {exc}")
        return EXIT_MISMATCH
    if isinstance(exc, CodecError):
        _say(args, f"{src}: {exc}")
        return EXIT_CORRUPT
    assert isinstance(exc, OSError)
    _say(args, f"{src}: {exc.strerror or exc}")
    return EXIT_ERROR


def _each_file(args: Any, work: Any, decompress: bool) -> int:
    files = _expand(args, decompress)
    if args.output and len(files) > 1:
        raise _Fail("-o/--output takes one input file", EXIT_USAGE)
    if args.output and args.stdout:
        raise _Fail("-o and -c exclude each other", EXIT_USAGE)
    status = EXIT_OK
    for src in files:
        try:
            _run_file(args, src, work, decompress)
        except BrokenPipeError:
            raise
        except (_Fail, CodecError, OSError) as exc:
            status = max(status, _failed(args, src, exc))
    return status


def _cmd_info(args: Any) -> int:
    from .codec import info

    status = EXIT_OK
    for path in args.files:
        try:
            with open(path, "rb") as fh:  # mapped, not read: info touches the header, tables and footer
                d = info(fh, chunks=args.chunks)
        except CodecError as exc:
            print(f"pyllmcodec: {path}: {exc}", file=sys.stderr)
            status = max(status, EXIT_CORRUPT)
            continue
        except OSError as exc:
            print(f"pyllmcodec: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = max(status, EXIT_ERROR)
            continue
        if args.json:
            print(json.dumps({"file": path, **d}, indent=2, sort_keys=True))
            continue
        ratio = f"{d['ratio']:.4f}" if d["ratio"] is not None else "-"
        print(f"{path}:")
        print(f"  format version  {d['format_version']}   written by {d.get('writer', '?')}")
        print(f"  model           {d['model']['name']} sha256={d['model']['sha256']}")
        print(f"  fingerprint     {json.dumps(d['fingerprint'], sort_keys=True)}")
        probe = d["probe"]
        print(f"  probe           batch={probe['batch']} steps={probe['steps']} digest={probe['digest']}")
        print(f"  geometry        chunk_size={d['chunk_size']} batch_size={d['batch_size']} "
              f"precision={d['precision']} pad_token={d['pad_token']}"
              + (f" prime={d['prime']}" if d.get("prime") else "")
              + (f" context={d['context']}" if d.get("context") else ""))
        if d.get("mixer"):
            print(f"  match model     {d['mixer']['kind']} digest={d['mixer']['digest']}")
        if d.get("cm"):
            print(f"  context mixing  {d['cm']['kind']} table_bits={d['cm']['table_bits']}")
        print(f"  size            {d['size']} -> {d['compressed_size']} bytes (ratio {ratio})")
        print(f"  chunks          {d['n_chunks']} in {d['n_blocks']} blocks; methods {d['methods']}")
        lay = d["layout"]
        print(f"  layout          header {lay['header']} + index {lay['index']} + payloads {lay['payloads']} "
              f"+ footer {lay['footer']} bytes")
        print(f"  sha256          {d['sha256']}")
        for i, c in enumerate(d.get("chunks", [])):
            print(f"  chunk {i:6d}  offset={c['offset']} raw={c['raw_len']} coded={c['coded_len']} "
                  f"{c['method']} crc32={c['crc32']:08x} batch={c['batch']} row={c['row']}")
    return status


def _cmd_export(args: Any) -> int:
    try:
        from .export.hf import export_hf
    except ImportError as exc:
        raise _Fail(f"export needs transformers and torch: pip install transformers torch ({exc})",
                    EXIT_USAGE) from None
    try:
        out = export_hf(args.source, args.out, name=args.name, context_length=args.context, bos=args.bos)
    except ImportError as exc:
        raise _Fail(f"export needs transformers and torch: pip install transformers torch ({exc})",
                    EXIT_USAGE) from None
    except ValueError as exc:
        raise _Fail(f"cannot export {args.source}: {exc}", EXIT_USAGE) from None
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyllmcodec`` console script; returns the exit status."""
    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help/--version 0
        return int(exc.code or 0)
    if getattr(args, "version", False) and args.command is None:
        print(_version_text())
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with _termination_raises():
            if args.command in ("compress", "decompress") and args.list:
                return _cmd_list(args)
            if args.command == "compress" and (args.decompress or args.test):
                return _cmd_decompress(args)
            return {"compress": _cmd_compress, "decompress": _cmd_decompress,
                    "info": _cmd_info, "export": _cmd_export,
                    "train-dictionary": _cmd_train_dictionary}[args.command](args)
    except _Terminated as exc:
        print(f"pyllmcodec: terminated by signal {exc.signum}; any partial output file was removed", file=sys.stderr)
        return 128 + exc.signum
    except _Fail as exc:
        print(f"pyllmcodec: {exc}", file=sys.stderr)
        return exc.code
    except (ModelError, NumericsMismatchError, DictionaryError) as exc:
        print(f"pyllmcodec: {exc}", file=sys.stderr)
        return EXIT_MISMATCH
    except CodecError as exc:
        print(f"pyllmcodec: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except KeyboardInterrupt:
        print("pyllmcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, MemoryError) as exc:  # the model backend (ORT, torch, CUDA) failed mid-run
        print(
            f"pyllmcodec: the model backend failed: {type(exc).__name__}: {exc}\n"
            "  any partial output file was removed.  On a GPU (out of memory, driver error) retry with a "
            "smaller --batch-size or with --device cpu; an archive decodes only with the numerics it was "
            "written with, so decode GPU archives on a matching GPU",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (| head): end quietly, as gzip does when SIGPIPE kills it
        _drop_stdout()
        return 128 + int(getattr(signal, "SIGPIPE", 13))


if __name__ == "__main__":
    sys.exit(main())
