"""A directory listed once (`digests.tree_entries`) finds the files `Path.rglob` finds,
under the keys `Path.resolve` gives: symlinked files included under their target's path,
symlinked directories not entered, broken links left out; and a directory dataset read
through it looks each file up once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlform.providers.kit import checks, datasets, digests


def _rglob_files(root: Path) -> list[tuple[str, Path]]:
    """What the listing did before it was one scandir walk."""
    found = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()]
    return sorted(found)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "target.csv").write_text("a\n1\n")
    (outside / "deep" / "hidden.csv").write_text("a\n2\n")
    root = tmp_path / "real"
    (root / "sub" / "subsub").mkdir(parents=True)
    (root / "a.csv").write_text("a\n3\n")
    (root / ".dot.csv").write_text("a\n4\n")
    (root / "a-b.csv").write_text("a\n5\n")
    (root / "sub" / "b.csv").write_text("a\n6\n")
    (root / "sub" / "subsub" / "c.csv").write_text("a\n7\n")
    (root / "sub" / "notes.txt").write_text("not a csv\n")
    (root / "link.csv").symlink_to(outside / "target.csv")
    (root / "sub" / "rel-link.csv").symlink_to(Path("..") / "a.csv")
    (root / "linked-dir").symlink_to(outside / "deep", target_is_directory=True)
    (root / "broken.csv").symlink_to(tmp_path / "nowhere.csv")
    # the dataset is named through a symlinked directory: the keys are the real paths
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    return tmp_path / "alias"


def test_listing_is_rglob_with_resolved_keys(tree: Path) -> None:
    listed = digests.tree_entries(tree)
    assert [(e.rel, e.path) for e in listed] == _rglob_files(tree)
    assert digests.tree_files(tree) == _rglob_files(tree)
    for entry in listed:
        assert entry.key == str(entry.path.resolve())
        assert entry.stat == os.stat(entry.path)
    keys = {e.rel: e.key for e in listed}
    assert keys["link.csv"].endswith("outside/target.csv")
    assert keys["sub/rel-link.csv"] == keys["a.csv"]
    assert "broken.csv" not in keys and not any(r.startswith("linked-dir") for r in keys)


def test_dir_files_order_is_the_paths_order(tree: Path) -> None:
    # "a-b.csv" sorts before "a.csv" as a string, and "sub/..." after "sub-x" as a string
    # but before it as a path: the profile reads files in the paths' order
    (tree / "sub-x.csv").write_text("a\n8\n")
    expected = sorted(p for p in tree.rglob("*") if p.is_file() and p.suffix == ".csv")
    assert checks.dir_files(tree, "csv") == expected


def test_a_directory_dataset_looks_each_file_up_once(tree: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = digests.DigestCache(tmp_path / "cache")
    attrs = {"format": "csv", "schema": {"a": "int"}, "profile": True}
    first = datasets.read_local_dataset("alias", tree, attrs, cache)
    assert first.profile is not None and first.profile.rows == 7, first
    lookups: list[str] = []
    real_lookup = digests.DigestCache.lookup

    def counted(self: digests.DigestCache, key: str, st: os.stat_result):
        lookups.append(key)
        return real_lookup(self, key, st)
    monkeypatch.setattr(digests.DigestCache, "lookup", counted)
    again = datasets.read_local_dataset("alias", tree, attrs, cache)
    assert again == first
    # every file of the content (the txt file too) once; nothing read again
    assert sorted(lookups) == sorted(e.key for e in digests.tree_entries(tree))


def test_what_rglob_leaves_out_the_listing_leaves_out(tmp_path: Path) -> None:
    (tmp_path / "file.csv").write_text("a\n1\n")
    assert digests.tree_entries(tmp_path / "file.csv") == []
    assert digests.tree_entries(tmp_path / "missing") == []
    if os.geteuid() == 0:
        return              # root reads every directory
    locked = tmp_path / "d" / "locked"
    locked.mkdir(parents=True)
    (locked / "x.csv").write_text("a\n1\n")
    (tmp_path / "d" / "y.csv").write_text("a\n1\n")
    locked.chmod(0)
    try:
        assert [(e.rel, e.path) for e in digests.tree_entries(tmp_path / "d")] \
            == _rglob_files(tmp_path / "d") == [("y.csv", tmp_path / "d" / "y.csv")]
    finally:
        locked.chmod(0o755)
