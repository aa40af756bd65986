"""Parsing rendered manifests: YAML/JSON documents to validated objects, each remembering where it came from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import ManifestError
from .objects import KubeObject, ObjectKey, key_of

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Manifest:
    """One object as Git declares it, with its file and document number (1-based) for error messages."""

    source: str
    document: int
    obj: KubeObject

    @property
    def key(self) -> ObjectKey:
        return key_of(self.obj)

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.document})"


_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """A safe loader that keeps timestamps as the strings kubectl would send."""


# Kubernetes reads YAML through a JSON conversion: `2024-01-01` stays a string, and so should it here.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _documents(text: str, source: str) -> Iterator[tuple[int, Any]]:
    if source.endswith(".json"):
        try:
            yield 1, json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
        return
    index = 0
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_Loader), start=1):
            yield index, doc
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ManifestError(f"{source} (document {index + 1}): invalid YAML{where}: {problem}") from e


def _validate(obj: Any, where: str) -> KubeObject:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a Kubernetes object (a mapping), found {type(obj).__name__}")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise ManifestError(f"{where}: the object has no `{field}`")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        hint = (
            " (generateName is not supported: Git must name every object)"
            if isinstance(metadata, dict) and ("generateName" in metadata)
            else ""
        )
        raise ManifestError(f"{where}: {obj['kind']} has no `metadata.name`{hint}")
    return obj


def parse(text: str, source: str) -> list[Manifest]:
    """Every object in one file: multi-document YAML or JSON, empty documents skipped, `List` kinds flattened."""
    return from_documents(_documents(text, source), source)


def from_documents(documents: Iterable[tuple[int, Any]], source: str) -> list[Manifest]:
    """Objects from (document number, parsed value) pairs, as a file or a Jsonnet evaluation yields them: empty
    documents skipped, `List` kinds flattened."""
    found: list[Manifest] = []
    for document, doc in documents:
        if doc is None:
            continue
        where = f"{source} (document {document})"
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("kind"), str)
            and doc["kind"].endswith("List")
            and ("items" in doc)
        ):
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise ManifestError(f"{where}: `items` of a {doc['kind']} must be a list")
            for number, item in enumerate(items):
                found.append(Manifest(source, document, _validate(item, f"{where} item {number}")))
            continue
        found.append(Manifest(source, document, _validate(doc, where)))
    return found


def check_unique(manifests: Iterable[Manifest]) -> None:
    """Git may declare each object once; a second declaration is an error that names both places."""
    seen: dict[ObjectKey, Manifest] = {}
    for manifest in manifests:
        first = seen.setdefault(manifest.key, manifest)
        if first is not manifest:
            raise ManifestError(f"{manifest.key} is declared twice: in {first.where} and in {manifest.where}")
