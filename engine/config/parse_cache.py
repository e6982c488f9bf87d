"""Parsed HCL files, kept by content digest, so an unchanged file is not parsed again.

python-hcl2 is most of what loading an HCL stack costs: importing it and building its
Lark parser take 0.15–0.3 s of every run, and parsing a 1,000-block file 1.3–1.9 s.
What it produces, the Lark parse tree, depends only on the file's text and on the
versions of python-hcl2 and Lark, so the tree is saved once per distinct text under
``.mlform/cache/hcl/`` and read back on the next run, without importing python-hcl2.

The cache holds JSON (rule names, token types, values and positions), never pickles:
a stack's directory may come from a pull request, and reading the cache must not run
code.  An entry that cannot be read is a miss; writing one that fails loses nothing.
Nothing is written before the stack has a ``.mlform`` directory (its first plan or
apply makes it): `mlform validate` of a fresh checkout writes nothing.
Only trees of files that parsed are kept: syntax errors are reported by the parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import lark

#: bumped when the stored form changes
FORMAT = 1
#: entries kept at most; the oldest go first (an edit adds one per save)
MAX_ENTRIES = 512


def _library_stamp() -> str:
    """Which python-hcl2 and Lark made a tree (their files' sizes and times), found
    without importing python-hcl2."""
    parts = [str(FORMAT)]
    for name in ("hcl2", "lark"):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin:
            st = os.stat(origin)
            parts.append(f"{origin}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _encode(node: Any) -> Any:
    if isinstance(node, lark.Token):
        return [node.type, str(node.value), node.line, node.column, node.end_line,
                node.end_column, node.start_pos, node.end_pos]
    meta = node.meta
    where = None if meta.empty else [meta.line, meta.column, meta.end_line, meta.end_column,
                                     meta.start_pos, meta.end_pos]
    return {"d": str(node.data), "m": where, "c": [_encode(c) for c in node.children]}


def _decode(data: Any) -> Any:
    if isinstance(data, list):
        type_, value, line, column, end_line, end_column, start, end = data
        return lark.Token(type_, value, start_pos=start, line=line, column=column,
                          end_line=end_line, end_column=end_column, end_pos=end)
    tree = lark.Tree(data["d"], [_decode(c) for c in data["c"]])
    where = data["m"]
    if where is not None:
        meta = tree.meta
        (meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos,
         meta.end_pos) = where
        meta.empty = False
    return tree


class ParseCache:
    """Lark trees of HCL texts, one JSON file per distinct text, in `directory`."""

    def __init__(self, directory: Path, only_under: Path | None = None) -> None:
        self.directory = Path(directory)
        self.only_under = only_under      # written only once this directory exists
        self._stamp: str | None = None

    def _path(self, text: str) -> Path:
        if self._stamp is None:
            self._stamp = _library_stamp()
        digest = hashlib.blake2b(self._stamp.encode() + b"\0" + text.encode(),
                                 digest_size=20).hexdigest()
        return self.directory / f"{digest}.json"

    def get(self, text: str) -> lark.Tree | None:
        try:
            return _decode(json.loads(self._path(text).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def put(self, text: str, tree: lark.Tree) -> None:
        if self.only_under is not None and not self.only_under.is_dir():
            return
        path = self._path(text)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(_encode(tree), separators=(",", ":")))
            os.replace(tmp, path)
            self._prune()
        except (OSError, RecursionError):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _prune(self) -> None:
        entries = list(os.scandir(self.directory))
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[:len(entries) - MAX_ENTRIES]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


__all__ = ["ParseCache", "FORMAT"]
