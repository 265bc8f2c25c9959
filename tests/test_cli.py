"""The command line: gzip-style behaviour, safety of outputs, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import TEXT, get_model

from pyllmcodec import cli
from pyllmcodec.cli import (
    EXIT_CORRUPT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_USAGE,
    main,
)

HERE = os.path.dirname(os.path.abspath(__file__))
M = ["--model", "test-bigram", "--chunk-size", "256", "--batch-size", "4"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(TEXT)
    return tmp_path


def listing(d):
    return sorted(os.listdir(d))


def test_compress_then_decompress_roundtrip(work):
    assert main(["compress", *M, "a.txt"]) == EXIT_OK
    assert listing(work) == ["a.txt.llmz"]  # input removed, like gzip
    assert main(["decompress", "a.txt.llmz"]) == EXIT_OK
    assert listing(work) == ["a.txt"]
    assert (work / "a.txt").read_bytes() == TEXT


def test_crlf_text_and_no_eol(work):
    import pyllmcodec

    crlf = TEXT.replace(b"\n", b"\r\n") if b"\n" in TEXT else TEXT.replace(b". ", b".\r\n")
    (work / "w.txt").write_bytes(crlf)
    assert main(["compress", *M, "-k", "-o", "on.llmz", "w.txt"]) == EXIT_OK
    assert main(["compress", *M, "-k", "--no-eol", "-o", "off.llmz", "w.txt"]) == EXIT_OK
    on, off = ((work / n).read_bytes() for n in ("on.llmz", "off.llmz"))
    assert pyllmcodec.info(on)["methods"]["model-eol-cr"] > 0
    assert pyllmcodec.info(off)["methods"]["model-eol-cr"] == 0
    for n in ("on", "off"):
        assert main(["decompress", "-k", "-o", f"{n}.out", f"{n}.llmz"]) == EXIT_OK
        assert (work / f"{n}.out").read_bytes() == crlf


def test_gzip_style_invocation(work):
    assert main([*M, "-k", "a.txt"]) == EXIT_OK
    assert listing(work) == ["a.txt", "a.txt.llmz"]
    os.remove("a.txt")
    assert main(["-d", "a.txt.llmz"]) == EXIT_OK
    assert (work / "a.txt").read_bytes() == TEXT


def test_keep_output_and_stdout(work, capsysbinary):
    assert main(["compress", *M, "-o", "x.llmz", "a.txt"]) == EXIT_OK
    assert listing(work) == ["a.txt", "x.llmz"]  # -o keeps the input
    capsysbinary.readouterr()
    assert main(["decompress", "-c", "x.llmz"]) == EXIT_OK
    assert capsysbinary.readouterr().out == TEXT
    assert listing(work) == ["a.txt", "x.llmz"]
    assert main(["compress", *M, "-c", "-f", "a.txt"]) == EXIT_OK
    blob = capsysbinary.readouterr().out
    assert blob == (work / "x.llmz").read_bytes()


def test_never_overwrites_without_force(work):
    (work / "a.txt.llmz").write_bytes(b"precious")
    assert main(["compress", *M, "a.txt"]) == EXIT_ERROR
    assert (work / "a.txt.llmz").read_bytes() == b"precious"
    assert (work / "a.txt").read_bytes() == TEXT
    assert main(["compress", *M, "-f", "a.txt"]) == EXIT_OK
    assert (work / "a.txt.llmz").read_bytes() != b"precious"


def test_decompress_refuses_to_overwrite(work):
    assert main(["compress", *M, "-k", "a.txt"]) == EXIT_OK
    assert main(["decompress", "a.txt.llmz"]) == EXIT_ERROR
    assert main(["decompress", "-f", "a.txt.llmz"]) == EXIT_OK


def test_corrupt_archive_leaves_no_output_and_keeps_input(work):
    assert main(["compress", *M, "a.txt"]) == EXIT_OK
    blob = bytearray((work / "a.txt.llmz").read_bytes())
    blob[len(blob) // 2] ^= 0x08
    (work / "a.txt.llmz").write_bytes(bytes(blob))
    assert main(["decompress", "a.txt.llmz"]) == EXIT_CORRUPT
    assert listing(work) == ["a.txt.llmz"]  # no output, no temp file, input kept
    assert (work / "a.txt.llmz").read_bytes() == bytes(blob)


def test_not_an_archive(work):
    (work / "b.llmz").write_bytes(b"hello, not an archive")
    assert main(["decompress", "b.llmz"]) == EXIT_CORRUPT
    assert main(["info", "b.llmz"]) == EXIT_CORRUPT
    assert listing(work) == ["a.txt", "b.llmz"]


def test_interrupted_run_leaves_nothing(work, monkeypatch):
    model = get_model()
    calls = {"n": 0}
    real = type(model).step

    def step(self, state, tokens):
        calls["n"] += 1
        if calls["n"] > 400:
            raise KeyboardInterrupt
        return real(self, state, tokens)

    monkeypatch.setattr(type(model), "step", step)
    assert main(["compress", *M, "a.txt"]) == EXIT_INTERRUPTED
    assert listing(work) == ["a.txt"]
    assert (work / "a.txt").read_bytes() == TEXT


def test_numerics_mismatch_exit_code(work):
    from pyllmcodec.models import register_model

    assert main(["compress", *M, "-k", "a.txt"]) == EXIT_OK
    from pyllmcodec.models import clear_cache

    register_model("test-bigram", lambda **_: get_model(variant=1), replace=True)
    clear_cache()  # loaded models are cached by name
    try:
        assert main(["decompress", "-f", "a.txt.llmz"]) == EXIT_MISMATCH
    finally:
        register_model("test-bigram", lambda **_: get_model(), replace=True)
        clear_cache()
    assert listing(work) == ["a.txt", "a.txt.llmz"]


class _Terminal:
    def isatty(self):
        return True


def test_usage_errors(work, monkeypatch):
    assert main(["decompress", "a.txt"]) == EXIT_ERROR  # unknown suffix
    assert main(["compress", *M, "missing.txt"]) == EXIT_ERROR
    assert main(["compress", *M, "-o", "x", "a.txt", "a.txt"]) == EXIT_USAGE
    assert main(["compress", "--bogus-flag"]) == EXIT_USAGE
    assert main(["compress", "--model", "test-bigram", "--chunk-size", "0", "a.txt"]) == EXIT_USAGE
    monkeypatch.setattr(sys, "stdin", _Terminal())
    assert main([]) == EXIT_USAGE  # nothing to read: help (with stdin not a terminal, it is compressed)
    assert main(["compress", "--model", "no-such-model", "a.txt"]) == EXIT_MISMATCH
    assert listing(work) == ["a.txt"]


def test_already_suffixed(work):
    (work / "z.llmz").write_bytes(b"x")
    assert main(["compress", *M, "z.llmz"]) == EXIT_ERROR


def test_info(work, capsys):
    assert main(["compress", *M, "-k", "a.txt"]) == EXIT_OK
    capsys.readouterr()
    assert main(["info", "a.txt.llmz"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "test-bigram" in out and "chunk_size=256" in out and "layout          header " in out
    assert main(["info", "--json", "--chunks", "a.txt.llmz"]) == EXIT_OK
    d = json.loads(capsys.readouterr().out)
    assert d["size"] == len(TEXT) and len(d["chunks"]) == d["n_chunks"]
    assert "prime" not in d and "prime=" not in out


def test_prime_option(work, capsys):
    """--chunk-size over the context codes segments; --prime sets their context."""
    cm = ["--model", "test-bigram-ctx32", "--batch-size", "3"]
    assert main(["compress", *cm, "--chunk-size", "200", "--prime", "9", "-k", "a.txt"]) == EXIT_OK
    capsys.readouterr()
    assert main(["info", "a.txt.llmz"]) == EXIT_OK
    assert "chunk_size=200" in (out := capsys.readouterr().out) and "prime=9" in out
    os.remove("a.txt")
    assert main(["decompress", "a.txt.llmz"]) == EXIT_OK
    assert (work / "a.txt").read_bytes() == TEXT
    assert main(["compress", *cm, "--chunk-size", "200", "--prime", "17", "-f", "a.txt"]) == EXIT_USAGE
    assert "prime" in capsys.readouterr().err


def test_verbose_and_quiet(work, capsys):
    assert main(["compress", *M, "-v", "-k", "a.txt"]) == EXIT_OK
    assert "saved" in capsys.readouterr().err
    assert main(["compress", *M, "-q", "a.txt"]) == EXIT_ERROR  # exists
    assert capsys.readouterr().err == ""


def test_stdin_to_stdout(work, monkeypatch, capsysbinary):
    import io

    class FakeStdin:
        buffer = io.BytesIO(TEXT[:1000])

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    assert main(["compress", *M, "-f"]) == EXIT_OK
    blob = capsysbinary.readouterr().out

    class FakeStdin2:
        buffer = io.BytesIO(blob)

    monkeypatch.setattr(sys, "stdin", FakeStdin2)
    assert main(["decompress", "-"]) == EXIT_OK
    assert capsysbinary.readouterr().out == TEXT[:1000]


def test_no_bench_subcommand(capsys):
    """The throughput check is ``python -m bench.codec_speed`` (bench/test_codec_speed.py)."""
    assert main(["--help"]) == EXIT_OK
    assert " bench " not in capsys.readouterr().out
    assert not hasattr(cli, "run_bench") and not hasattr(cli, "bench_text")


def _run(args, cwd):
    code = (
        "import sys; sys.path.insert(0, %r); import conftest; "
        "from pyllmcodec.cli import main; sys.exit(main(sys.argv[1:]))" % HERE
    )
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True)


def test_subprocess_roundtrip(work):
    r = _run(["compress", *M, "a.txt"], work)
    assert r.returncode == 0, r.stderr
    r = _run(["decompress", "a.txt.llmz"], work)
    assert r.returncode == 0, r.stderr
    assert (work / "a.txt").read_bytes() == TEXT


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "pyllmcodec", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "compress" in r.stdout and "exit status" in r.stdout


# ---------------------------------------------------------------- gzip / zstd conventions (issue 18)


def _cli(args, cwd, stdin=None):
    code = f"import sys; sys.path.insert(0, {HERE!r}); import conftest\n" \
           "from pyllmcodec.cli import main; sys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, input=stdin, capture_output=True)


def test_levels_pick_the_segments_and_are_recorded_nowhere_else(work):
    import pyllmcodec

    m = get_model(max_context=4096)
    data = TEXT * 3
    for lvl, want in ((1, None), (6, None), (7, 768), (9, None)):  # 9: the model's whole context (no key)
        meta = pyllmcodec.info(pyllmcodec.compress(data, m, level=lvl, chunk_size=2048))
        assert meta.get("context") == want, (lvl, meta.get("context"))
    assert pyllmcodec.compress(data, m, level=7, chunk_size=2048, context=1024) != \
        pyllmcodec.compress(data, m, level=7, chunk_size=2048)  # an explicit context wins
    with pytest.raises(ValueError, match="level"):
        pyllmcodec.compress(data, m, level=10)
    assert main(["-9", "-k", *M, "a.txt"]) == EXIT_OK  # gzip's -9 spelling
    assert pyllmcodec.decompress((work / "a.txt.llmz").read_bytes()) == TEXT
    with pyllmcodec.open(work / "b.llmz", "wb", model="test-bigram", compresslevel=9) as f:
        f.write(TEXT[:100])
    assert pyllmcodec.decompress((work / "b.llmz").read_bytes()) == TEXT[:100]


def test_test_and_list(work, capsys):
    assert main(["-k", *M, "a.txt"]) == EXIT_OK
    capsys.readouterr()
    assert main(["-t", "a.txt.llmz"]) == EXIT_OK  # nothing written
    assert listing(work) == ["a.txt", "a.txt.llmz"]
    assert main(["-l", "a.txt.llmz"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["compressed", "uncompressed", "ratio", "uncompressed_name"]
    packed, raw, _, name = out[1].split()
    assert (int(packed), int(raw), name) == ((work / "a.txt.llmz").stat().st_size, len(TEXT), "a.txt")
    (work / "bad.llmz").write_bytes((work / "a.txt.llmz").read_bytes()[:-30])
    assert main(["-t", "bad.llmz"]) == EXIT_CORRUPT
    assert main(["-l", "bad.llmz"]) == EXIT_CORRUPT


def test_rm_threads_and_stdin_by_default(work):
    assert main(["--rm", "-T", "1", *M, "a.txt"]) == EXIT_OK  # zstd's --rm, -T
    assert listing(work) == ["a.txt.llmz"]
    assert main(["--threads", "0", *M, "a.txt.llmz"]) == EXIT_USAGE
    r = _cli(M, work, stdin=TEXT)  # no file and stdin not a terminal: stdin -> stdout, as gzip
    assert r.returncode == EXIT_OK, r.stderr
    back = _cli(["-d"], work, stdin=r.stdout)
    assert back.returncode == EXIT_OK and back.stdout == TEXT


def test_version_names_what_decoding_depends_on(capsys):
    assert main(["--version"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("pyllmcodec ") and "onnxruntime" in out and "CPU class" in out
    assert "model default: sha256 " in out


def test_several_files_are_coded_together(work, monkeypatch, capsys):
    import pyllmcodec

    names = [f"f{i}.txt" for i in range(5)]
    for i, n in enumerate(names):
        (work / n).write_bytes(TEXT[i * 50 : i * 50 + 200 + 40 * i])
    (work / "f4.txt.llmz").write_bytes(b"exists")
    calls = []
    real = pyllmcodec.Compressor.compress_batch
    monkeypatch.setattr(pyllmcodec.Compressor, "compress_batch",
                        lambda self, bufs: calls.append(len(bufs)) or real(self, bufs))
    assert main(["-v", *M, *names, "missing.txt"]) == EXIT_ERROR
    assert calls == [4]  # one shared schedule for the four that could go
    err = capsys.readouterr().err
    assert "missing.txt: no such file" in err and "f4.txt.llmz already exists" in err
    for i, n in enumerate(names[:4]):
        assert not (work / n).exists()  # removed, as one by one
        back = pyllmcodec.decompress((work / (n + ".llmz")).read_bytes())
        assert back == TEXT[i * 50 : i * 50 + 200 + 40 * i]
    assert (work / "f4.txt").exists() and (work / "f4.txt.llmz").read_bytes() == b"exists"


def test_recursive(work):
    import pyllmcodec

    (work / "d" / "e").mkdir(parents=True)
    (work / "d" / "x.txt").write_bytes(TEXT[:300])
    (work / "d" / "e" / "y.txt").write_bytes(TEXT[300:700])
    assert main(["-r", *M, "d"]) == EXIT_OK
    assert sorted(p.name for p in (work / "d").rglob("*")) == ["e", "x.txt.llmz", "y.txt.llmz"]
    assert pyllmcodec.decompress((work / "d" / "e" / "y.txt.llmz").read_bytes()) == TEXT[300:700]
    assert main(["-d", "-r", "d"]) == EXIT_OK
    assert sorted(p.name for p in (work / "d").rglob("*")) == ["e", "x.txt", "y.txt"]
    assert main([*M, "d"]) == EXIT_ERROR  # a directory without -r: ignored, as gzip


def test_train_dictionary_and_dict_option(work):
    lines = b"".join(b'{"id": %d, "user": "fox", "text": "the lazy dog %d"}\n' % (i, i * 7) for i in range(200))
    (work / "s.jsonl").write_bytes(lines)
    assert main(["train-dictionary", "--lines", "--size", "64", "-o", "d.bin", "s.jsonl"]) == EXIT_OK
    dic = (work / "d.bin").read_bytes()
    assert 0 < len(dic) <= 64 and b'"user": "fox"' in dic
    (work / "r.json").write_bytes(b'{"id": 9999, "user": "fox", "text": "the lazy dog 1"}\n')
    assert main(["compress", *M, "-k", "-D", "d.bin", "r.json"]) == EXIT_OK
    assert main(["decompress", "-c", "r.json.llmz"]) == EXIT_MISMATCH  # the dictionary is missing
    assert main(["decompress", "-k", "-f", "-D", "d.bin", "r.json.llmz"]) == EXIT_OK
    assert (work / "r.json").read_bytes().startswith(b'{"id": 9999')
    assert main(["compress", *M, "-D", "missing.bin", "r.json"]) == EXIT_USAGE
    assert main(["train-dictionary", "-o", "x.bin", "missing.jsonl"]) == EXIT_USAGE
