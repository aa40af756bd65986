"""engine.adapters.parsedcache: a commit's parsed manifests come back as they went in, and only for that commit,
path and label; a damaged or foreign file is no answer, and an unwritable cache is no error."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from engine.adapters.parsedcache import KEPT, ParsedCache
from engine.core.manifests import Manifest

SHA = "a" * 40
MANIFESTS = [
    Manifest("app@aaaaaaaaaaaa/cm.yaml", 1, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    Manifest("app@aaaaaaaaaaaa/s.yaml", 2, {"apiVersion": "v1", "kind": "Secret", "data": {"k": "dg=="}}),
]


def test_a_round_trip_for_the_same_commit_path_and_label_only(tmp_path: Path) -> None:
    cache = ParsedCache(tmp_path / "parsed")
    assert cache.get(SHA, "app", "app@aaaaaaaaaaaa") is None
    cache.put(SHA, "app", "app@aaaaaaaaaaaa", MANIFESTS)
    assert cache.get(SHA, "app", "app@aaaaaaaaaaaa") == MANIFESTS
    assert cache.get("b" * 40, "app", "app@aaaaaaaaaaaa") is None
    assert cache.get(SHA, "other", "app@aaaaaaaaaaaa") is None
    (file,) = (tmp_path / "parsed").glob("*.json")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # it holds Secret values, as the mirror does


def test_a_damaged_or_mislabelled_file_is_no_answer(tmp_path: Path) -> None:
    cache = ParsedCache(tmp_path)
    cache.put(SHA, "app", "l", MANIFESTS)
    (file,) = tmp_path.glob("*.json")
    body = json.loads(file.read_text())
    file.write_text(json.dumps({**body, "sha": "c" * 40}))
    assert cache.get(SHA, "app", "l") is None
    file.write_text("{not json")
    assert cache.get(SHA, "app", "l") is None


def test_values_json_cannot_hold_and_unwritable_folders_are_skipped(tmp_path: Path) -> None:
    cache = ParsedCache(tmp_path / "c")
    cache.put(SHA, "app", "l", [Manifest("x", 1, {"data": b"bytes"})])
    assert cache.get(SHA, "app", "l") is None
    (tmp_path / "file").write_text("")
    ParsedCache(tmp_path / "file" / "below").put(SHA, "app", "l", MANIFESTS)  # no error


def test_only_the_latest_commits_are_kept(tmp_path: Path) -> None:
    cache = ParsedCache(tmp_path)
    for i in range(KEPT + 3):
        cache.put(f"{i:040x}", "app", "l", MANIFESTS)
    assert len(list(tmp_path.glob("*.json"))) == KEPT
