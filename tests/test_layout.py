"""The package's shape: imports run one way, each stage in its home, the public names pinned.

The import graph is read from the source (every ``import``, inside functions
too: a lazy import that dodges a circle is still a circle in the design).
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

import pyllmcodec

PKG = Path(pyllmcodec.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted([*PKG.rglob("*.py"), *PKG.rglob("*.pyi")]):  # a .pyi stands for a compiled module
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        mods.setdefault(name[: -len(".__init__")] if name.endswith(".__init__") else name, p)
    return mods


MODS = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The pyllmcodec modules ``name`` imports (the package root as "pyllmcodec")."""
    if path.suffix == ".pyi":
        return set()
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODS else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODS:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODS.items()}


def test_no_import_circles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v] - {"pyllmcodec"}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for m in GRAPH:
        if m not in index:
            visit(m)
    assert circles == []


def test_nothing_imports_the_package_root():
    assert [m for m, deps in GRAPH.items() if "pyllmcodec" in deps and m != "pyllmcodec"] == []


def test_the_graph_is_read_right():
    """The checks above can fail: the parser sees real edges."""
    assert "pyllmcodec.io" in GRAPH["pyllmcodec.codec"]
    assert "pyllmcodec.geometry" in GRAPH["pyllmcodec.scheduler"]
    assert "pyllmcodec.backends" in GRAPH["pyllmcodec.models"]
    assert "pyllmcodec.methods" in GRAPH["pyllmcodec.container"]


@pytest.mark.parametrize(("module", "forbidden"), [
    ("pyllmcodec.io", "pyllmcodec.codec"),  # the codec sits above its file objects
    ("pyllmcodec.methods", "pyllmcodec.container"),  # the container validates entries against the method table
    ("pyllmcodec.methods", "pyllmcodec.scheduler"),
    ("pyllmcodec.scheduler", "pyllmcodec.session"),
    ("pyllmcodec.container", "pyllmcodec.core"),  # the format works without the native build
    ("pyllmcodec.models.bundle", "pyllmcodec.backends"),
])
def test_layers(module, forbidden):
    assert forbidden not in GRAPH[module]


def test_runtime_builds_nothing():
    """What runs does not import what builds, except the registry's convert-on-first-use of SmolLM2."""
    run_time = [m for m in GRAPH if not m.startswith(("pyllmcodec.export", "pyllmcodec.nets", "pyllmcodec.cli"))]
    uses = {m: sorted(d for d in GRAPH[m] if d.startswith("pyllmcodec.export")) for m in run_time}
    assert {m: d for m, d in uses.items() if d} == {"pyllmcodec.models.smollm2": ["pyllmcodec.export.llama_graph"]}


def test_torch_networks_import_nothing_of_ours():
    for m in GRAPH:
        if m.startswith("pyllmcodec.nets"):
            assert not GRAPH[m], (m, GRAPH[m])


def test_every_step_model_lives_in_backends():
    homes = []
    for m, p in MODS.items():
        if m == "pyllmcodec._core":  # the native kernels' stubs: IntLM's step is a kernel, not a StepModel
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                if {"new_state", "step"} <= methods:
                    homes.append(m)
    assert homes and all(m.startswith("pyllmcodec.backends") for m in homes), homes


def test_public_names_are_pinned():
    assert sorted(pyllmcodec.__all__) == [
        "ChecksumError", "CodecError", "Compressor", "Decompressor", "Dictionary", "DictionaryError", "FormatError",
        "FrameParams", "LlmzFile", "MemoryLimitError", "ModelError",
        "NumericsMismatchError", "OutputLimitError", "__version__", "compress", "compress_batch", "core",
        "decompress", "decompress_batch", "info", "open", "stream_reader", "stream_writer", "train_dictionary",
    ]
    for name in pyllmcodec.__all__:
        assert getattr(pyllmcodec, name) is not None


def test_version_has_one_home():
    from pyllmcodec._version import __version__

    assert pyllmcodec.__version__ == __version__
    assert importlib.metadata.version("pyllmcodec") == __version__  # pyproject reads _version.py


def test_compress_takes_every_compressor_option():
    import inspect

    comp = set(inspect.signature(pyllmcodec.Compressor).parameters)
    for f in (pyllmcodec.compress, pyllmcodec.compress_batch):
        assert comp <= set(inspect.signature(f).parameters), f.__name__
    dec = set(inspect.signature(pyllmcodec.Decompressor).parameters)
    assert dec <= set(inspect.signature(pyllmcodec.decompress).parameters)


def _readme_ranks() -> dict[str, int]:
    """Each module's line in the README's Layout list (a package's line
    covers its modules; "models/__init__.py ... smollm2.py" covers both)."""
    text = (PKG.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries = []
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.strip():
            entries.append(line.strip().split("  ")[0])
    ranks: dict[str, int] = {}
    for m in MODS:
        rel = m.removeprefix("pyllmcodec.")
        for i, spec in enumerate(entries):
            names = [s.strip() for s in spec.split(",")]
            hit = any(
                (n.endswith("/") and rel.startswith(n[:-1].replace("/", ".")))
                or (n.endswith(".py") and rel == n[:-3].replace("/", ".").removesuffix(".__init__"))
                or (n.endswith(".pyi") and rel == n[:-4])
                for n in names
            ) or (spec == "models/__init__.py" and rel == "models.smollm2")
            if hit:
                ranks[m] = i
                break
    return ranks


def test_readme_layout_lists_every_module_in_import_order():
    """README: "a module imports only modules above it in this list"."""
    ranks = _readme_ranks()
    assert sorted(set(MODS) - set(ranks) - {"pyllmcodec", "pyllmcodec.__main__"}) == []
    upward = [(m, d) for m, deps in GRAPH.items() if m in ranks for d in deps if d in ranks and ranks[d] > ranks[m]]
    assert upward == []
