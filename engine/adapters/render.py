"""Rendering a directory of Git's tree to manifests: plain YAML/JSON and Jsonnet, Kustomize, or Helm."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..core.application import DirectoryOptions, HelmOptions, JsonnetVar
from ..core.errors import ManifestError, RenderError
from ..core.manifests import MANIFEST_SUFFIXES, Manifest, from_documents, parse

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


JSONNET_SUFFIX = ".jsonnet"
DIRECTORY_SUFFIXES = (*MANIFEST_SUFFIXES, JSONNET_SUFFIX)  # what a plain directory renders; .libsonnet is imported
_BUILD_VAR = re.compile(r"\$(?:\{(ARGOCD_APP_[A-Z_]+)\}|(ARGOCD_APP_[A-Z_]+))")

# A file a Jsonnet program reads: (path relative to the repository's root, normalized) -> content, or None.
ReadFile = Callable[[str], bytes | None]


def selected(relative: str, options: DirectoryOptions) -> bool:
    """Whether a file (path relative to the source path) is read, by the include and exclude globs: Argo CD's rule,
    exclude before include, `{a,b}` for alternatives, `*` crossing folders."""
    from wcmatch import fnmatch  # imported by what filters (its import is a tenth of a diff's start-up)

    flags = fnmatch.BRACE | fnmatch.DOTMATCH
    if options.exclude and fnmatch.fnmatch(relative, options.exclude, flags=flags):
        return False
    return not options.include or fnmatch.fnmatch(relative, options.include, flags=flags)


def expand_build_env(value: str, env: Mapping[str, str]) -> str:
    """`$ARGOCD_APP_NAME`-style variables in a TLA or external variable, as Argo CD substitutes them; a variable
    that is not in `env` stays as written."""
    return _BUILD_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def render_files(
    files: Iterable[tuple[str, bytes]],
    label: str,
    *,
    options: DirectoryOptions | None = None,
    base: str = "",
    read: ReadFile | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """Manifests from a plain directory's (path relative to the source path, content) pairs as read from Git: YAML
    and JSON parsed, Jsonnet evaluated with `read` as its only way to other files. `base` is the source path
    relative to the repository's root."""
    options = options or DirectoryOptions()
    found: list[Manifest] = []
    plain: list[tuple[str, bytes]] = []
    for relative, data in files:
        if not relative.endswith(DIRECTORY_SUFFIXES) or not selected(relative, options):
            continue
        if relative.endswith(JSONNET_SUFFIX):
            found.extend(parse_files(plain, label))
            plain = []
            repo_path = posixpath.normpath(posixpath.join(base.strip("/") or ".", relative))
            found.extend(render_jsonnet(repo_path, data, label, options, read or (lambda _: None), env or {}))
        else:
            plain.append((relative, data))
    found.extend(parse_files(plain, label))
    return found


class _Importer:
    """The import callback over the commit's tree. A path is looked for as Jsonnet's own importer does (the importing
    file's folder first, then the library folders, the last named first, as `-J` works), but only inside the
    repository: an absolute path, or a `..` that climbs out of its root, is refused, and nothing else is read.

    It never raises: the binding reads past the end of a failing callback's message (measured: stray bytes, or a
    UnicodeDecodeError instead of the error). A refused or missing file is answered with a program that fails with
    the reason (`import` stops there, with Jsonnet's trace), and kept in `refused`: an evaluation that asked for one
    fails even where the answer was only read as text (`importstr`, `importbin`)."""

    def __init__(self, read: ReadFile, libs: tuple[str, ...]) -> None:
        self.read = read
        self.libs = libs
        self.refused: list[str] = []

    def __call__(self, folder: str, wanted: str) -> tuple[str, bytes]:
        try:
            return self._find(folder, wanted)
        except LookupError as e:
            reason = str(e.args[0])
            self.refused.append(reason)
            return f"<refused {len(self.refused)}: {wanted}>", f"error {json.dumps(reason)}".encode()

    def _find(self, folder: str, wanted: str) -> tuple[str, bytes]:
        if posixpath.isabs(wanted):
            raise LookupError(f"import of {wanted!r} refused: an absolute path points outside the repository")
        tried = []
        for base in (folder, *(lib.strip("/") + "/" for lib in reversed(self.libs))):
            path = posixpath.normpath(posixpath.join(base, wanted))
            if path == ".." or path.startswith("../"):
                raise LookupError(f"import of {wanted!r} refused: it leads outside the repository")
            data = self.read(path)
            if data is not None:
                return path, data
            tried.append(path)
        raise LookupError(f"cannot import {wanted!r}: no file {' or '.join(map(repr, tried))} in the repository")


def _jsonnet_values(values: tuple[JsonnetVar, ...], env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    strings = {v.name: expand_build_env(v.value, env) for v in values if not v.code}
    codes = {v.name: expand_build_env(v.value, env) for v in values if v.code}
    return strings, codes


def render_jsonnet(
    repo_path: str, data: bytes, label: str, options: DirectoryOptions, read: ReadFile, env: Mapping[str, str]
) -> list[Manifest]:
    """One .jsonnet file evaluated (go-jsonnet, the implementation Argo CD renders with) with the
    Application's library folders, top-level arguments and external variables. Its output is an object, a list of
    objects or a `List`."""
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{repo_path}: not UTF-8 text: {e}") from e
    ext_vars, ext_codes = _jsonnet_values(options.ext_vars, env)
    tla_vars, tla_codes = _jsonnet_values(options.tlas, env)
    import _gojsonnet  # imported by what evaluates Jsonnet: most Applications have none

    importer = _Importer(read, options.jsonnet_libs)
    failed = f"jsonnet evaluation of {repo_path} ({label}) failed"
    try:
        out = _gojsonnet.evaluate_snippet(
            repo_path,
            text,
            ext_vars=ext_vars,
            ext_codes=ext_codes,
            tla_vars=tla_vars,
            tla_codes=tla_codes,
            import_callback=importer,
        )
    except RuntimeError as e:
        raise RenderError(f"{failed}: {str(e).strip()}") from e
    if importer.refused:
        raise RenderError(f"{failed}: {importer.refused[0]}")
    value: Any = json.loads(out)
    documents = value if isinstance(value, list) else [value]
    return from_documents(enumerate(documents, start=1), f"{repo_path} (jsonnet, {label})")


def _tool(name: str, env_var: str) -> str:
    found = os.environ.get(env_var) or shutil.which(name)
    if not found:
        raise RenderError(f"`{name}` is needed to render this source and is not on PATH; install it or set {env_var}")
    return found


def _run(argv: list[str], what: str, *, both_outputs: bool = False) -> str:
    """The tool's standard output; its failure as a RenderError with its own words (stderr, or with
    `both_outputs` both streams: `helm dependency build` says on stdout which repository it could not reach)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise RenderError(f"cannot run {argv[0]}: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise RenderError(f"{what} did not finish within 300 s") from e
    if proc.returncode != 0:
        said = "\n".join(t for t in (proc.stdout.strip(), proc.stderr.strip()) if t) if both_outputs else ""
        raise RenderError(f"{what} failed: {said or proc.stderr.strip() or proc.stdout.strip()}")
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


def render_directory(
    directory: Path, label: str, namespace: str, helm: HelmOptions, *, root: Path | None = None
) -> list[Manifest]:
    """Renders `directory` (Git's tree at one commit and path, exported below `root`); `label` names it in
    messages."""
    if not directory.is_dir():
        raise ManifestError(f"{label}: no such directory in the repository")
    kind = detect(directory)
    if kind == "kustomize":
        out = _run([_tool("kubectl", "KUBECTL"), "kustomize", str(directory)], f"kustomize build of {label}")
        return parse(out, f"{label} (kustomize)")
    if kind == "helm":
        return render_helm(directory, label, namespace, helm, root=root)
    return render_plain(directory, label)


def chart_dependencies(directory: Path, label: str) -> list[dict[str, Any]]:
    """The dependencies a chart declares (Chart.yaml, or requirements.yaml for apiVersion v1 charts)."""
    declared: list[dict[str, Any]] = []
    for name in ("Chart.yaml", "requirements.yaml"):
        path = directory / name
        if not path.is_file():
            continue
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ManifestError(f"{label}/{name}: cannot read: {e}") from e
        deps = doc.get("dependencies") if isinstance(doc, dict) else None
        if deps is not None and not isinstance(deps, list):
            raise ManifestError(f"{label}/{name}: `dependencies` must be a list")
        declared.extend(d for d in deps or () if isinstance(d, dict) and d.get("name"))
    return declared


def missing_dependencies(directory: Path, declared: list[dict[str, Any]]) -> list[str]:
    """Names of the declared dependencies that charts/ does not hold (as a folder, or a `NAME-VERSION.tgz`)."""
    charts = directory / "charts"
    present = {p.name for p in charts.iterdir()} if charts.is_dir() else set()
    missing = []
    for dep in declared:
        name = str(dep["name"])
        if name not in present and not any(p.startswith(f"{name}-") and p.endswith(".tgz") for p in present):
            missing.append(name)
    return missing


def build_dependencies(directory: Path, label: str, root: Path, declared: list[dict[str, Any]]) -> None:
    """`helm dependency build` into the export's charts/: fetched from the chart repositories, or from a chart
    elsewhere in the same repository (`file://`), but never from a path outside the repository."""
    for dep in declared:
        repository = str(dep.get("repository") or "")
        if repository.startswith("file://"):
            target = (directory / repository.removeprefix("file://")).resolve()
            if not target.is_relative_to(root):
                raise ManifestError(
                    f"{label}: dependency {dep['name']!r} points outside the repository ({repository}); "
                    "vendor it into charts/ or refer to a chart inside the repository"
                )
    missing = ", ".join(missing_dependencies(directory, declared))
    try:
        argv = [_tool("helm", "HELM"), "dependency", "build", str(directory)]
        _run(argv, f"helm dependency build of {label}", both_outputs=True)
    except RenderError as e:
        raise RenderError(
            f"{label}: the chart's dependencies {missing} are not vendored in charts/, and `helm dependency build` "
            f"could not fetch them ({e}). Vendor them (`helm dependency build` where the chart repository is "
            "reachable, then commit charts/), or make the chart repository reachable from here"
        ) from e


def render_helm(
    directory: Path, label: str, namespace: str, helm: HelmOptions, *, root: Path | None = None
) -> list[Manifest]:
    """`helm template` of the chart; dependencies missing from charts/ are first built (build_dependencies)."""
    declared = chart_dependencies(directory, label)
    if declared and missing_dependencies(directory, declared):
        build_dependencies(directory, label, (root or directory).resolve(), declared)
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
