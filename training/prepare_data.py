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
            if kind == "html":
                raw = html_to_text(raw)
            elif kind == "gz":
                raw = gzip.decompress(raw)
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
    args = ap.parse_args()
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    docs: list[tuple[str, str, bytes]] = []
    manifest = {"sources": [], "seed": 1234}
    for pkg, (lic, pats, kind) in SOURCES.items():
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
    rng = random.Random(manifest["seed"])
    rng.shuffle(docs)
    n_val = max(1, int(len(docs) * args.val_fraction))
    val, train = docs[:n_val], docs[n_val:]
    for name, part in (("train", train), ("val", val)):
        blob = b"\n\n".join(d[2] for d in part)
        (work / f"{name}.bin").write_bytes(blob)
        manifest[f"{name}_bytes"] = len(blob)
        manifest[f"{name}_sha256"] = hashlib.sha256(blob).hexdigest()
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({k: v for k, v in manifest.items() if k != "sources"}), file=sys.stderr)


if __name__ == "__main__":
    main()
