"""Assemble the default model's training corpus from Debian packages.

Reproducible: the same package versions give the same bytes.  Only packages
whose licences allow shipping a model trained on them are used (see SOURCES);
the evaluation corpora (linux-doc-*, the Canterbury texts) are never touched.

    python training/prepare_data.py [--out ~/.cache/pyllmcodec/train]

Writes ``train.bin`` / ``val.bin`` (raw bytes; documents joined by a blank
line, shuffled deterministically at document level) and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html.parser
import json
import random
import re
import subprocess
import sys
from pathlib import Path

# package -> (licence, list of glob patterns inside the extracted tree, kind)
SOURCES: dict[str, tuple[str, list[str], str]] = {
    "python3.11-doc": ("PSF-2.0", ["usr/share/doc/python3.11/html/_sources/**/*.rst.txt"], "text"),
    "git-doc": ("GPL-2.0", ["usr/share/doc/git-doc/**/*.txt"], "text"),
    "postgresql-doc-15": ("PostgreSQL", ["usr/share/doc/postgresql-doc-15/html/*.html"], "html"),
    "debian-reference-en": ("GPL-2.0-or-later", ["usr/share/debian-reference/**/*.en.html",
                                                  "usr/share/debian-reference/**/*.html"], "html"),
    "bash-doc": ("GPL-3.0-or-later", ["usr/share/doc/bash/bashref.html"], "html"),
    "manpages": ("Linux-man-pages (verbatim/BSD/GPL mix)", ["usr/share/man/**/*.gz"], "gz"),
    "manpages-dev": ("Linux-man-pages (verbatim/BSD/GPL mix)", ["usr/share/man/**/*.gz"], "gz"),
    "fortunes": ("BSD-4-Clause (fortune-mod)", ["usr/share/games/fortunes/*"], "fortune"),
}
#: Source set v2 (default model 0.2): v1 plus reStructuredText/C technical
#: documentation (compiler and build-tool manuals, the closest licensed relatives
#: of kernel documentation that are not the evaluation corpus) and older English
#: prose and verse (the dictionary's literary quotations, the Jargon File).
SOURCES_V2_EXTRA: dict[str, tuple[str, list[str], str]] = {
    "llvm-14-doc": ("Apache-2.0 WITH LLVM-exception", ["usr/share/doc/llvm-14-doc/html/_sources/**/*.rst.txt"], "text"),
    "clang-14-doc": ("Apache-2.0 WITH LLVM-exception", ["usr/share/doc/clang-14/html/_sources/**/*.rst.txt"], "text"),
    "cmake-doc": ("BSD-3-Clause", ["usr/share/doc/cmake-data/html/_sources/**/*.rst.txt"], "text"),
    "sphinx-doc": ("BSD-2-Clause", ["usr/share/doc/sphinx-doc/html/_sources/**/*.rst.txt"], "text"),
    "binutils-doc": ("GFDL-1.3", ["usr/share/info/*.info.gz"], "gz"),
    "gnu-standards": ("GFDL-1.3 (no invariant sections)", ["usr/share/doc/gnu-standards/*.html"], "html"),
    "jargon-text": ("public domain", ["usr/share/doc/jargon-text/jargon.txt.gz"], "gz"),
    "dict-gcide": ("GPL-3.0-or-later", ["usr/share/dictd/gcide.dict.dz"], "dictionary"),
}
#: Source set v3 (default model 1.5): v2 plus the manuals of four systems projects
#: that sit next to the kernel -- DPDK's and Open vSwitch's reStructuredText
#: guides (NIC and datapath drivers, VFIO, hugepages), Xen's documentation
#: (hypervisor, hypercall interfaces) and libvirt's (HTML from reStructuredText)
SOURCES_V3_EXTRA: dict[str, tuple[str, list[str], str]] = {
    "dpdk-doc": ("BSD-3-Clause", ["usr/share/doc/dpdk/guides/_sources/**/*.rst.txt"], "text"),
    "openvswitch-doc": ("Apache-2.0", ["usr/share/doc/openvswitch-doc/html/_sources/**/*.rst.txt"], "text"),
    "xen-doc": ("GPL-2.0 (Xen documentation)", ["usr/share/doc/xen/html/**/*.html",
                                                 "usr/share/doc/xen/**/*.txt"], "html"),
    "libvirt-doc": ("LGPL-2.1-or-later", ["usr/share/doc/libvirt-doc/html/**/*.html"], "html"),
}
SOURCE_SETS = {"v1": SOURCES, "v2": {**SOURCES, **SOURCES_V2_EXTRA},
               "v3": {**SOURCES, **SOURCES_V2_EXTRA, **SOURCES_V3_EXTRA}}
#: the dictionary is 40 MB: keep every DICT_KEEP-th 64 KB piece so that it does
#: not swamp the mix
DICT_KEEP = 4
FORBIDDEN = re.compile(r"linux-doc|alice29|asyoulik|lcet10|plrabn12")


class _Text(html.parser.HTMLParser):
    SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "pre", "dt", "dd"):
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(raw: bytes) -> bytes:
    p = _Text()
    p.feed(raw.decode("utf-8", "replace"))
    text = "".join(p.out)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip().encode("utf-8")


def extract(pkg: str, work: Path) -> Path:
    root = work / "pkgs" / pkg
    if root.exists():
        return root
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{pkg}_*.deb")):
        subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
    deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / (pkg + ".tmp")
    if tmp.exists():
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
    subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
    tmp.rename(root)
    return root


def documents(pkg: str, root: Path, patterns: list[str], kind: str):
    seen: set[Path] = set()
    for pat in patterns:
        for f in sorted(root.glob(pat)):
            if f in seen or not f.is_file() or f.is_symlink() or FORBIDDEN.search(str(f)):
                continue
            seen.add(f)
            raw = f.read_bytes()
            if kind == "html" and f.suffix == ".html":  # an html source's .txt files stay as they are
                raw = html_to_text(raw)
            elif kind == "gz":
                raw = gzip.decompress(raw)
            elif kind == "dictionary":  # dictzip is gzip; drop the per-sense source tags
                text = re.sub(rb"\n[ \t]*\[1913 Webster\][ \t]*(?=\n)", b"", gzip.decompress(raw))
                for k in range(0, len(text), 1 << 16):
                    if (k >> 16) % DICT_KEEP == 0:
                        yield f"{f.relative_to(root)}@{k}", text[k : k + (1 << 16)]
                continue
            elif kind == "fortune":
                if f.suffix in (".dat", ".u8"):
                    continue
                raw = raw.replace(b"\n%\n", b"\n\n")
            if len(raw) > 64:
                yield str(f.relative_to(root)), raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/pyllmcodec/train")
    ap.add_argument("--val-fraction", type=float, default=0.01)
    ap.add_argument("--sources", choices=sorted(SOURCE_SETS), default="v2",
                    help="source set (v1: model 1.0; v2 adds SOURCES_V2_EXTRA; v3 adds SOURCES_V3_EXTRA)")
    args = ap.parse_args()
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    docs: list[tuple[str, str, bytes]] = []
    manifest = {"sources": [], "seed": 1234, "source_set": args.sources}
    for pkg, (lic, pats, kind) in SOURCE_SETS[args.sources].items():
        root = extract(pkg, work)
        deb = sorted((work / "debs").glob(f"{pkg}_*.deb"))[-1]
        n0 = len(docs)
        for name, raw in documents(pkg, root, pats, kind):
            docs.append((pkg, name, raw))
        size = sum(len(d[2]) for d in docs[n0:])
        manifest["sources"].append({
            "package": pkg, "deb": deb.name, "licence": lic,
            "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest(),
            "documents": len(docs) - n0, "bytes": size,
        })
        print(f"{pkg:22s} {len(docs) - n0:6d} docs {size / 1e6:8.2f} MB", file=sys.stderr)
    # v1's split is kept as it was (a model fine-tuned on v2 after v1 must not
    # find v1 training documents in its validation set); documents of the later
    # sets go to validation by a hash of their name
    first = [d for d in docs if d[0] in SOURCES]
    later = [d for d in docs if d[0] not in SOURCES]
    rng = random.Random(manifest["seed"])
    rng.shuffle(first)
    n_val = max(1, int(len(first) * args.val_fraction))
    val, train = first[:n_val], first[n_val:]
    if later:
        def held_out(d: tuple[str, str, bytes]) -> bool:
            h = int(hashlib.sha256(f"{d[0]}/{d[1]}".encode()).hexdigest()[:8], 16)
            return h < args.val_fraction * 2**32
        val += [d for d in later if held_out(d)]
        train += [d for d in later if not held_out(d)]
        random.Random(manifest["seed"] + 1).shuffle(train)
    for name, part in (("train", train), ("val", val)):
        blob = b"\n\n".join(d[2] for d in part)
        (work / f"{name}.bin").write_bytes(blob)
        manifest[f"{name}_bytes"] = len(blob)
        manifest[f"{name}_sha256"] = hashlib.sha256(blob).hexdigest()
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({k: v for k, v in manifest.items() if k != "sources"}), file=sys.stderr)


if __name__ == "__main__":
    main()
