"""Archives on another CPU class: this machine's own Python under qemu-user
as an older x86-64 CPU (tests/_qemu.py; they skip without qemu-user).

Natively (AVX-512) ONNX Runtime's MLAS picks AVX-512 kernels; under
``-cpu Haswell-noTSX`` it picks the AVX2 ones, so a float model's numbers
change in the last bits.  The default (float) model must then refuse the
archive (NumericsMismatchError, never wrong bytes); an exact model must decode
it.  Each test costs a few seconds of emulation (~2 s to import numpy +
onnxruntime + pyllmcodec, ~1 s to decode a 200-byte archive).
"""

from __future__ import annotations

import json

import pytest
from _qemu import CPU_FEATURES_CODE, DEFAULT_CPU, native_cpu_features, requires_qemu, run_python
from conftest import needs_default

import pyllmcodec

pytestmark = requires_qemu

#: ~200 bytes of prose: one chunk, a quick decode even under emulation
DATA = (b"Lossless compression with a language model needs the decoder to see the same probabilities "
        b"as the encoder, bit for bit. The quick brown fox jumps over the lazy dog, twice, on every machine.")

#: child code: decode the archive at {path}; print "RAISED <type>" and the message, or "DECODED <matches>"
_DECODE_CODE = """
import pathlib
import pyllmcodec
arc = pathlib.Path({path!r}).read_bytes()
try:
    out = pyllmcodec.decompress(arc)
except Exception as exc:
    print("RAISED", type(exc).__name__)
    print(exc)
else:
    print("DECODED", out == {data!r})
"""


def _host_has_avx512() -> bool:
    return native_cpu_features().get("AVX512F", False)


def test_emulated_cpu_is_another_class() -> None:
    proc = run_python(CPU_FEATURES_CODE)
    assert proc.returncode == 0, proc.stderr
    emulated = json.loads(proc.stdout.splitlines()[-1])
    # what Haswell offers (MLAS's AVX2/FMA kernels) and what it lacks
    assert emulated["AVX2"] and emulated["FMA3"], emulated
    assert not emulated["AVX512F"] and not emulated.get("AVX512VNNI", False), emulated
    if not _host_has_avx512():
        pytest.skip("this host has no AVX-512 itself: the emulated Haswell is no other class than the host")
    assert native_cpu_features()["AVX512F"]


@needs_default
def test_float_archive_refused_on_emulated_cpu(tmp_path) -> None:
    if not _host_has_avx512():
        pytest.skip("this host has no AVX-512: emulating a Haswell does not change ONNX Runtime's kernels")
    arc = pyllmcodec.compress(DATA, model="default")  # the float model 1.5.0
    assert pyllmcodec.decompress(arc) == DATA
    path = tmp_path / "float.llmz"
    path.write_bytes(arc)
    proc = run_python(_DECODE_CODE.format(path=str(path), data=DATA))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # the emulated CPU's float numerics differ: refused, and for the right reason
    # (a FormatError "... the archive is corrupt" would mean this machine's fingerprint
    # still claims the host's CPU class, e.g. read from /proc/cpuinfo, which qemu-user passes through)
    assert lines and lines[0] == "RAISED NumericsMismatchError", (
        f"under -cpu {DEFAULT_CPU} the float archive was not refused with NumericsMismatchError:\n{proc.stdout}"
    )


# exact model: added by the integration work
