"""Render a results document as Markdown, JSON and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["EXPECTED", "check_expected", "plot", "to_markdown", "write_results"]

#: Reference bits/byte for the baselines (issue 5), measured on this machine
#: class with the same corpora.  A baseline that differs by more than
#: ``TOLERANCE`` means the corpus assembly differs and is flagged.
EXPECTED: dict[str, dict[str, float]] = {
    "canterbury4": {"gzip -9": 2.980, "bzip2 -9": 2.267, "xz -9e": 2.550, "zstd -19": 2.585,
                    "brotli -q 11 -w 24": 2.468, "PPMd o16": 2.044, "zpaq -method 5": 1.960},
    "linux-doc-10MiB": {"gzip -9": 2.420, "xz -9e": 1.876, "zstd -19": 1.917,
                        "brotli -q 11 -w 24": 1.877, "PPMd o16": 1.654, "zpaq -method 5": 1.426},
}
#: 0.0015 bits/byte: the references have 3 decimals, and zlib vs GNU gzip
#: differ by 0.0008 on linux-doc (see bench/baselines.py).
TOLERANCE = 0.0015


def check_expected(doc: dict[str, Any]) -> list[str]:
    """Lines describing every baseline that disagrees with :data:`EXPECTED`."""
    bad = []
    for c in doc["corpora"]:
        ref = EXPECTED.get(c["name"], {})
        for r in c["rows"]:
            if r["codec"] in ref and abs(r["bits_per_byte"] - ref[r["codec"]]) > TOLERANCE:
                bad.append(f"{c['name']}: {r['codec']} {r['bits_per_byte']:.4f}, reference {ref[r['codec']]:.3f}")
    return bad


def _f(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, fmt)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def to_markdown(doc: dict[str, Any], plot_file: str | None = None) -> str:
    m = doc["machine"]
    out = [
        f"# pyllmcodec benchmark ({doc['mode']})",
        "",
        f"Run {m['date']} on {m['cpu']} ({m['cpu_count']} logical CPUs, {m['memory_GiB']} GiB), "
        f"{m['os']}, Python {m['python']}, repo commit {m['git_commit'] or '?'}; took {doc.get('elapsed_s', '?')} s.",
        "",
        *[f"Note: {n}\n" for n in doc.get("notes", [])],
        "bits/byte = 8 x compressed / original bytes, totalled over a corpus's files (each compressed "
        "separately). MB/s = 10^6 original bytes per CPU second (user + system, "
        "child processes included; steadier than wall clock on a shared machine, which is in the JSON as "
        "`*_wall_MBps`), single thread, median of repeats for small inputs. Every row is round-trip verified. *ref* = reference bits/byte "
        "from issue 5. For pyllmcodec rows, *ideal* is the model's own cross-entropy "
        "(sum of -log2 p) and *overhead* = bits/byte - ideal (quantizer, coder, container; "
        "negative where chunks fell back to deflate or stored, which the model alone cannot do).",
        "",
    ]
    if plot_file:
        out += [f"![bits/byte against MB/s]({plot_file})", ""]
    for c in doc["corpora"]:
        ref = EXPECTED.get(c["name"], {})
        out += [f"## {c['name']} ({_mib(c['bytes'])}, {len(c['files'])} file{'s' if len(c['files']) > 1 else ''})",
                "", c["description"] + ".", ""]
        has_llm = any(r["kind"] == "pyllmcodec" for r in c["rows"])
        head = ["codec", "bits/byte", "ratio", "compress MB/s", "decompress MB/s"]
        if ref:
            head.append("ref")
        if has_llm:
            head += ["peak RSS MiB", "ideal bits/byte", "overhead"]
        out += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for r in c["rows"]:
            if "error" in r:
                cells = [r["codec"], f"failed: {r['error']}"] + [""] * (len(head) - 2)
            else:
                ratio = r["original_bytes"] / r["compressed_bytes"] if r["compressed_bytes"] else float("inf")
                cells = [r["codec"], _f(r["bits_per_byte"], ".3f"), _f(ratio, ".2f"),
                         _f(r["compress_MBps"], ".3g"), _f(r["decompress_MBps"], ".3g")]
                if ref:
                    cells.append(_f(ref.get(r["codec"]), ".3f"))
                if has_llm:
                    cells += [_f(r.get("peak_rss_MiB"), ".0f"), _f(r.get("ideal_bits_per_byte"), ".3f"),
                              _f(r.get("overhead_bits_per_byte"), "+.3f")]
            out.append("| " + " | ".join(cells) + " |")
        errs = [f"{r['codec']}: ideal bits/byte not measured: {r['ideal_error']}"
                for r in c["rows"] if r.get("ideal_error")]
        if errs:
            out += [""] + [f"- {e}" for e in errs]
        if c.get("llm_note"):
            out += ["", c["llm_note"] + "."]
        out.append("")
    impl = {}
    for c in doc["corpora"]:
        for r in c["rows"]:
            if r["kind"] == "baseline":
                impl[r["codec"]] = (r["implementation"], r.get("notes", []))
    if impl:
        out += ["## Implementations", ""]
        for name, (how, notes) in impl.items():
            out.append(f"- **{name}**: {how}" + "".join(f"; {n}" for n in notes))
        out.append("")
    llm_rows = [r for c in doc["corpora"] for r in c["rows"] if r["kind"] == "pyllmcodec" and "error" not in r]
    if llm_rows:
        out += ["pyllmcodec model fingerprints:", ""]
        for fp in sorted({r["implementation"] for r in llm_rows}):
            out.append(f"- `{fp}`")
        out.append("")
    bad = check_expected(doc)
    if bad:
        out += ["## Disagreements with the reference numbers", ""] + [f"- {b}" for b in bad] + [""]
    if doc["skipped"]:
        out += ["## Skipped", ""] + [f"- {s}" for s in doc["skipped"]] + [""]
    return "\n".join(out)


def plot(doc: dict[str, Any], path: Path) -> bool:
    """bits/byte against compress/decompress MB/s (log x), one panel per text
    corpus.  Returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    corpora = [c for c in doc["corpora"] if not c["name"].startswith(("random", "gzipped"))]
    if not corpora:
        return False
    ncols = min(2, len(corpora))
    nrows = math.ceil(len(corpora) / ncols)
    fig, axes_grid = plt.subplots(nrows, ncols, figsize=(7 * ncols, 4.6 * nrows + 0.8), squeeze=False)
    axes = [ax for row in axes_grid for ax in row]
    for ax in axes[len(corpora):]:
        ax.set_visible(False)
    names = sorted({r["codec"] for c in corpora for r in c["rows"]})
    cmap = plt.get_cmap("tab20")
    colour = {n: cmap(i % 20) for i, n in enumerate(names)}
    for ax, c in zip(axes, corpora):
        for r in c["rows"]:
            if "error" in r:
                continue
            x1, x2, y = r["compress_MBps"], r["decompress_MBps"], r["bits_per_byte"]
            col = colour[r["codec"]]
            marker = "*" if r["kind"] == "pyllmcodec" else "o"
            ax.plot([x1, x2], [y, y], color=col, lw=1, alpha=0.6)
            ax.scatter([x1], [y], color=col, marker=marker, s=60 if marker == "o" else 140, zorder=3,
                       label=r["codec"])
            ax.scatter([x2], [y], facecolors="none", edgecolors=[col], marker=marker,
                       s=60 if marker == "o" else 140, zorder=3)
            if r.get("ideal_bits_per_byte") is not None:
                ax.scatter([x1], [r["ideal_bits_per_byte"]], color=col, marker="_", s=200, zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("MB/s (filled: compress, hollow: decompress)")
        ax.set_ylabel("bits/byte")
        ax.set_title(f"{c['name']} ({_mib(c['bytes'])})")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes[: len(corpora)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    m = doc["machine"]
    fig.suptitle(f"bits/byte vs. MB/s per CPU second ({doc['mode']}) - {m['cpu']}, {m['date']}", fontsize=10)
    legend_h = (0.3 + 0.22 * math.ceil(len(labels) / 5)) / fig.get_figheight()
    fig.tight_layout(rect=(0, legend_h, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(doc: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.md``, ``stem.json`` and (with matplotlib) ``stem.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    has_png = plot(doc, png)
    md = out_dir / f"{stem}.md"
    md.write_text(to_markdown(doc, png.name if has_png else None))
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")
    return [md, js] + ([png] if has_png else [])
