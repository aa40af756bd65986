"""Rendering a directory of Git's tree to manifests: plain YAML/JSON, Kustomize, or Helm."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ..core.application import HelmOptions
from ..core.errors import ManifestError, RenderError
from ..core.manifests import MANIFEST_SUFFIXES, Manifest, parse

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def detect_from_names(names: set[str]) -> str:
    """Which renderer a directory with these files needs: `kustomize`, `helm` or `directory`."""
    if names & set(KUSTOMIZATION_FILES):
        return "kustomize"
    if "Chart.yaml" in names:
        return "helm"
    return "directory"


def detect(directory: Path) -> str:
    return detect_from_names({p.name for p in directory.iterdir() if p.is_file()})


def parse_files(files: Iterable[tuple[str, bytes]], label: str) -> list[Manifest]:
    """Manifests from (relative path, content) pairs, as read from Git."""
    found: list[Manifest] = []
    for relative, data in files:
        source = f"{label}/{relative}"
        try:
            text = data.decode()
        except UnicodeDecodeError as e:
            raise ManifestError(f"{source}: not UTF-8 text: {e}") from e
        found.extend(parse(text, source))
    return found


def _tool(name: str, env_var: str) -> str:
    found = os.environ.get(env_var) or shutil.which(name)
    if not found:
        raise RenderError(f"`{name}` is needed to render this source and is not on PATH; install it or set {env_var}")
    return found


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise RenderError(f"cannot run {argv[0]}: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise RenderError(f"{what} did not finish within 300 s") from e
    if proc.returncode != 0:
        raise RenderError(f"{what} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def render_plain(directory: Path, label: str) -> list[Manifest]:
    """Every .yaml/.yml/.json file below `directory`, in path order; hidden files and folders are skipped."""
    found: list[Manifest] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith(MANIFEST_SUFFIXES):
                continue
            path = Path(root) / name
            relative = f"{label}/{path.relative_to(directory)}".lstrip("/")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise ManifestError(f"{relative}: cannot read: {e}") from e
            found.extend(parse(text, relative))
    return found


def render_directory(directory: Path, label: str, namespace: str, helm: HelmOptions) -> list[Manifest]:
    """Renders `directory` (Git's tree at one commit and path); `label` names it in messages."""
    if not directory.is_dir():
        raise ManifestError(f"{label}: no such directory in the repository")
    kind = detect(directory)
    if kind == "kustomize":
        out = _run([_tool("kubectl", "KUBECTL"), "kustomize", str(directory)], f"kustomize build of {label}")
        return parse(out, f"{label} (kustomize)")
    if kind == "helm":
        return render_helm(directory, label, namespace, helm)
    return render_plain(directory, label)


def render_helm(directory: Path, label: str, namespace: str, helm: HelmOptions) -> list[Manifest]:
    argv = [
        _tool("helm", "HELM"),
        "template",
        helm.release_name or directory.name,
        str(directory),
        "--namespace",
        namespace,
    ]
    for values in helm.values_files:
        candidate = (directory / values).resolve()
        if not candidate.is_relative_to(directory.resolve()) or not candidate.is_file():
            raise ManifestError(f"{label}: values file {values!r} does not exist in the chart")
        argv += ["--values", str(candidate)]
    return parse(_run(argv, f"helm template of {label}"), f"{label} (helm)")
