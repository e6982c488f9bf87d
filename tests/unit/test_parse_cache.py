"""The HCL parse cache (`mlform.config.parse_cache`): a tree read back is the tree
python-hcl2 made, positions included, for every HCL file in this repository; a stack
whose files are cached loads without importing python-hcl2; a damaged entry is a miss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hcl2
import lark
import pytest

from mlform.config.loader import load_stack
from mlform.config.parse_cache import ParseCache

REPO = Path(__file__).resolve().parents[2]
HCL_FILES = sorted(p for p in REPO.glob("**/*.hcl")
                   if ".venv" not in p.parts and ".tools" not in p.parts)


def positions(node) -> list:
    """Every node's kind, text and position, in order."""
    if isinstance(node, lark.Token):
        return [(node.type, str(node), node.line, node.column, node.end_line, node.end_column,
                 node.start_pos, node.end_pos)]
    meta = node.meta
    where = None if meta.empty else (meta.line, meta.column, meta.end_line, meta.end_column)
    out = [(str(node.data), where)]
    for child in node.children:
        out.extend(positions(child))
    return out


def test_the_repository_has_hcl_files_to_check():
    assert len(HCL_FILES) > 20


@pytest.mark.parametrize("path", HCL_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_a_cached_tree_is_the_parsed_tree(tmp_path, path):
    text = path.read_text(encoding="utf-8-sig")
    try:
        tree = hcl2.parses_to_tree(text)
    except lark.exceptions.LarkError:
        pytest.skip("a deliberately broken file: errors are never cached")
    cache = ParseCache(tmp_path)
    cache.put(text, tree)
    again = cache.get(text)
    assert again is not None and again is not tree
    assert positions(again) == positions(tree)
    assert again == tree


def test_a_stack_whose_files_are_cached_loads_without_python_hcl2(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / ".mlform").mkdir()
    (stack / "main.hcl").write_text('dataset "d" {\n  source = "data/x.csv"\n  format = "csv"\n}\n')
    load_stack(stack)                       # parses and fills the cache
    assert list((stack / ".mlform" / "cache" / "hcl").glob("*.json"))
    probe = ("import sys; from mlform.config.loader import load_stack; "
             f"c = load_stack({str(stack)!r}); "
             "print('hcl2' in sys.modules, sorted(c.root.resources))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "False"                # python-hcl2 never imported
    assert "'dataset.d']" in out[-1]
    # an edit is a new text: parsed again, python-hcl2 imported
    (stack / "main.hcl").write_text('dataset "e" {\n  source = "data/x.csv"\n  format = "csv"\n}\n')
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "True" and "'dataset.e']" in out[-1]


def test_a_damaged_entry_is_a_miss_and_a_fresh_stack_gets_no_cache(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "main.hcl").write_text('dataset "d" {\n  source = "x.csv"\n}\n')
    load_stack(stack)
    assert not (stack / ".mlform").exists()     # validate of a fresh checkout writes nothing
    (stack / ".mlform").mkdir()
    load_stack(stack)
    [entry] = (stack / ".mlform" / "cache" / "hcl").glob("*.json")
    entry.write_text('{"d": "start", "c": [')
    config = load_stack(stack)                  # read as a miss, parsed again
    assert "dataset.d" in config.root.resources
    assert entry.read_text().startswith('{"d":"start"')
