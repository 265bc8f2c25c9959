"""Run this machine's own Python under qemu-user as another x86-64 CPU class.

``qemu-x86_64 -cpu Haswell-noTSX python -c ...`` runs the interpreter, the
installed packages and the native extensions unchanged, but CPUID answers as a
Haswell (AVX2 + FMA, no AVX-512), so numpy and ONNX Runtime's MLAS pick the
kernels they would pick there -- a cheap stand-in for "decode on an older
machine".  Debian's package is ``qemu-user`` (binary ``qemu-x86_64``; the
``qemu-user-static`` one, ``qemu-x86_64-static``, works too).

Note that ``/proc/cpuinfo`` inside the emulator is the host's: only CPUID is
emulated, so ask numpy (:data:`CPU_FEATURES_CODE`) what the CPU offers.
Emulation is slow (an import of numpy + onnxruntime + pyllmcodec takes ~2 s).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys

import pytest

#: the CPU model the portability tests emulate: AVX2 + FMA, no AVX-512
DEFAULT_CPU = "Haswell-noTSX"
#: the emulator's names, preferred first (Debian: qemu-user, qemu-user-static)
_NAMES = ("qemu-x86_64", "qemu-x86_64-static")
#: features a CPU model names but TCG cannot emulate: qemu warns once per thread
_TCG_WARNING = "warning: TCG doesn't support requested feature"

#: child code printing, as its last line, a JSON object of numpy's runtime CPU
#: feature detection (CPUID-based, so it sees the emulated CPU)
CPU_FEATURES_CODE = """
import json
try:
    from numpy._core._multiarray_umath import __cpu_features__ as f
except ImportError:  # numpy < 2
    from numpy.core._multiarray_umath import __cpu_features__ as f
print(json.dumps({k: bool(v) for k, v in f.items()}))
"""


def native_cpu_features() -> dict[str, bool]:
    """numpy's CPU feature detection for this (unemulated) process."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as f
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as f
    return {str(k): bool(v) for k, v in f.items()}


@functools.cache
def qemu_binary() -> str | None:
    """The x86-64 user-mode emulator's path, or None when qemu-user is not
    installed (or works) or this is not x86-64 Linux (the tests run this
    machine's own Python under it, so the host must be x86-64)."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    for name in _NAMES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            ok = subprocess.run([path, "-version"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return path
    return None


def skip_reason() -> str | None:
    """Why the emulated-CPU tests cannot run here, or None when they can."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return f"emulated-CPU tests need x86-64 Linux (this is {sys.platform}/{platform.machine()})"
    if qemu_binary() is None:
        return "qemu-user is not installed (apt-get install qemu-user): the emulated-CPU tests skip"
    return None


#: mark a test (or a module, as ``pytestmark``) that runs Python under qemu-user
requires_qemu = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def require_qemu() -> str:
    """The emulator's path, or skip the calling test with the reason."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    binary = qemu_binary()
    assert binary is not None
    return binary


def run_python(code: str, *, cpu: str = DEFAULT_CPU, timeout: float = 180,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable -c code`` under qemu-user as CPU model ``cpu``
    (``qemu-x86_64 -cpu help`` lists them) with this process's environment
    (plus ``env``), in text mode with stdout/stderr captured.  qemu's warnings
    about CPU features TCG cannot emulate are dropped from stderr."""
    binary = qemu_binary()
    if binary is None:
        raise RuntimeError(skip_reason() or "qemu-user is unavailable")
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    proc = subprocess.run([binary, "-cpu", cpu, sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env, timeout=timeout)
    proc.stderr = "".join(ln for ln in proc.stderr.splitlines(keepends=True) if _TCG_WARNING not in ln)
    return proc
