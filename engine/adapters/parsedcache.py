"""Parsed manifests of a plain directory at one commit, kept next to the repository's mirror: a commit's files never
change, so a second diff or sync of the same commit reads one JSON file instead of every blob and its YAML.

Measured on the benchmark's 500 objects: reading the blobs took 0.37 s and parsing their YAML 0.29 s of a 2.1 s diff;
the cached form loads in about 0.02 s. Only plain directories are kept (Kustomize and Helm may read what a commit
does not pin). The file holds what the mirror next to it already holds, Secret values included, so it is written
for its owner only."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..core.manifests import Manifest

VERSION = 1
KEPT = 16  # commits kept per repository; the oldest read goes first


class ParsedCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, sha: str, path: str, label: str) -> Path:
        name = hashlib.sha256(f"{VERSION}\0{sha}\0{path}\0{label}".encode()).hexdigest()[:32]
        return self.directory / f"{name}.json"

    def get(self, sha: str, path: str, label: str) -> list[Manifest] | None:
        file = self._file(sha, path, label)
        try:
            data: dict[str, Any] = json.loads(file.read_bytes())
        except (OSError, ValueError):
            return None
        if [data.get("version"), data.get("sha"), data.get("path"), data.get("label")] != [VERSION, sha, path, label]:
            return None
        try:
            manifests = [Manifest(str(source), int(document), obj) for source, document, obj in data["manifests"]]
        except (KeyError, TypeError, ValueError):
            return None
        os.utime(file)  # read: kept longer
        return manifests

    def put(self, sha: str, path: str, label: str, manifests: list[Manifest]) -> None:
        """Best effort: a cache that cannot be written (a read-only home, a value JSON cannot hold) is no error."""
        body = {
            "version": VERSION,
            "sha": sha,
            "path": path,
            "label": label,
            "manifests": [[m.source, m.document, m.obj] for m in manifests],
        }
        try:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")  # mode 0600
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self._file(sha, path, label))
            self._trim()
        except (OSError, TypeError, ValueError):
            return

    def _trim(self) -> None:
        files = sorted(self.directory.glob("*.json"), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in files[KEPT:]:
            old.unlink(missing_ok=True)
