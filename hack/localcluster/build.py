"""Builds and caches the control-plane binaries from their upstream Go modules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ClusterError

HACK_DIR = Path(__file__).resolve().parent.parent
GOMOD_DIR = HACK_DIR / "gomod"
KUBERNETES_MODULE_DIR = GOMOD_DIR / "kubernetes"
ETCD_MODULE_DIR = GOMOD_DIR / "etcd"
HELM_MODULE_DIR = GOMOD_DIR / "helm"
CONTAINERD_MODULE_DIR = GOMOD_DIR / "containerd"
CRI_TOOLS_MODULE_DIR = GOMOD_DIR / "cri-tools"

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kubectl")
HELM_MODULE = "helm.sh/helm/v3"
HELM_COMMAND = f"{HELM_MODULE}/cmd/helm"
BINARIES = ("etcd", *KUBERNETES_COMMANDS, "helm")

# A node (`build --node`, `up --node`): the kubelet and the two components a node needs beside it, from the same
# wrapper module; containerd with its runc shim and ctr (to load images); crictl (to clear pods at teardown).
NODE_KUBERNETES_COMMANDS = ("kubelet", "kube-scheduler", "kube-proxy")
CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
# No cgo here, so no btrfs, devmapper or zfs snapshotters (overlayfs is the one a node uses).
CONTAINERD_TAGS = "no_btrfs no_devmapper no_zfs urfave_cli_no_docs osusergo netgo static_build"
CRI_TOOLS_MODULE = "sigs.k8s.io/cri-tools"
NODE_BINARIES = (*NODE_KUBERNETES_COMMANDS, *CONTAINERD_COMMANDS, "crictl")

_REQUIRE_RE = re.compile(r"^\s*(?:require\s+)?(\S+)\s+(v\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Pins:
    """The releases the wrapper modules build; read from their committed go.mod files."""

    kubernetes: str
    etcd: str
    helm: str


def _required_version(go_mod: Path, module: str) -> str:
    try:
        text = go_mod.read_text()
    except OSError as e:
        raise ClusterError(f"cannot read {go_mod}: {e}; the wrapper modules are part of the repository") from e
    for name, version in _REQUIRE_RE.findall(text):
        if name == module:
            return str(version)
    raise ClusterError(f"{go_mod} does not require {module}; regenerate it with `hack/local-cluster gomod`")


def read_pins() -> Pins:
    return Pins(
        kubernetes=_required_version(KUBERNETES_MODULE_DIR / "go.mod", "k8s.io/kubernetes"),
        etcd=_required_version(ETCD_MODULE_DIR / "go.mod", "go.etcd.io/etcd/server/v3"),
        helm=_required_version(HELM_MODULE_DIR / "go.mod", HELM_MODULE),
    )


@dataclass(frozen=True)
class NodePins:
    """The releases of a node's own parts (the kubelet is the control plane's release)."""

    containerd: str
    cri_tools: str


def read_node_pins() -> NodePins:
    return NodePins(
        containerd=_required_version(CONTAINERD_MODULE_DIR / "go.mod", CONTAINERD_MODULE),
        cri_tools=_required_version(CRI_TOOLS_MODULE_DIR / "go.mod", CRI_TOOLS_MODULE),
    )


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubectl-gitops"


def bin_dir(pins: Pins | None = None) -> Path:
    pins = pins or read_pins()
    return cache_root() / f"k8s-{pins.kubernetes}" / "bin"


def missing_binaries(directory: Path, *, node: bool = False) -> list[str]:
    wanted = (*BINARIES, *NODE_BINARIES) if node else BINARIES
    return [name for name in wanted if not os.access(directory / name, os.X_OK)]


def go_executable() -> str:
    go = shutil.which("go")
    if go is None:
        raise ClusterError(
            "Go is not installed or not on PATH; the control plane is built from its Go modules. "
            "Install Go 1.26 or newer (for example from your distribution) and run again."
        )
    return go


def _run_go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "CGO_ENABLED": "0", **(env or {})}
    # A project checkout may be used with GOFLAGS=-mod=vendor or similar; the wrapper modules need module mode.
    full_env.pop("GOFLAGS", None)
    proc = subprocess.run(
        [go_executable(), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ClusterError(f"`go {' '.join(args)}` failed in {cwd} (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout


def version_ldflags(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".", 2)
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "gitCommit": "",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in values.items() if value]
    return " ".join(flags)


def helm_ldflags(version: str, client_go: str) -> str:
    """The ldflags of Helm's own Makefile: its version, and the Kubernetes version `helm template` assumes.

    Helm derives the latter from the client-go it is built with (v0.<minor>.x means Kubernetes 1.<minor>); without
    it `.Capabilities.KubeVersion` falls back to v1.20.0.
    """
    _, client_go_minor, _ = client_go.lstrip("v").split(".", 2)
    flags = ["-s", "-w"]
    flags += [
        f"-X {HELM_MODULE}/internal/version.version={version}",
        f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
    ]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [
            f"-X {HELM_MODULE}/{package}.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/{package}.k8sVersionMinor={client_go_minor}",
        ]
    return " ".join(flags)


def build(log: Callable[[str], None] = print, *, node: bool = False) -> Path:
    """Builds the binaries that are not in the cache yet and returns the cache's bin directory; with `node`, also
    those a node runs (NODE_BINARIES)."""
    pins = read_pins()
    target = bin_dir(pins)
    missing = missing_binaries(target, node=node)
    if not missing:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="bin.", dir=target.parent))
    try:
        k8s_missing = [name for name in missing if name in (*KUBERNETES_COMMANDS, *NODE_KUBERNETES_COMMANDS)]
        if k8s_missing:
            log(f"building {', '.join(k8s_missing)} from k8s.io/kubernetes {pins.kubernetes} (first time only; slow)")
            _run_go(
                [
                    "build",
                    "-trimpath",
                    "-tags=selinux,notest",
                    f"-ldflags={version_ldflags(pins.kubernetes)}",
                    "-o",
                    str(staging) + os.sep,
                    *[f"k8s.io/kubernetes/cmd/{name}" for name in k8s_missing],
                ],
                cwd=KUBERNETES_MODULE_DIR,
            )
        if "etcd" in missing:
            log(f"building etcd from go.etcd.io/etcd/server/v3 {pins.etcd}")
            _run_go(
                ["build", "-trimpath", "-ldflags=-s -w", "-o", str(staging / "etcd"), "go.etcd.io/etcd/server/v3"],
                cwd=ETCD_MODULE_DIR,
            )
        if "helm" in missing:
            log(f"building helm from {HELM_MODULE} {pins.helm}")
            client_go = _required_version(HELM_MODULE_DIR / "go.mod", "k8s.io/client-go")
            _run_go(
                [
                    "build",
                    "-trimpath",
                    f"-ldflags={helm_ldflags(pins.helm, client_go)}",
                    "-o",
                    str(staging / "helm"),
                    HELM_COMMAND,
                ],
                cwd=HELM_MODULE_DIR,
            )
        _build_node_runtime(missing, staging, log)
        target.mkdir(exist_ok=True)
        for name in missing:
            os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build_node_runtime(missing: list[str], staging: Path, log: Callable[[str], None]) -> None:
    if not set(missing) & {*CONTAINERD_COMMANDS, "crictl"}:
        return
    pins = read_node_pins()
    containerd_missing = [name for name in missing if name in CONTAINERD_COMMANDS]
    if containerd_missing:
        log(f"building {', '.join(containerd_missing)} from {CONTAINERD_MODULE} {pins.containerd}")
        _run_go(
            [
                "build",
                "-trimpath",
                f"-tags={CONTAINERD_TAGS}",
                f"-ldflags=-s -w -X {CONTAINERD_MODULE}/version.Version={pins.containerd}",
                "-o",
                str(staging) + os.sep,
                *[f"{CONTAINERD_MODULE}/cmd/{name}" for name in containerd_missing],
            ],
            cwd=CONTAINERD_MODULE_DIR,
        )
    if "crictl" in missing:
        log(f"building crictl from {CRI_TOOLS_MODULE} {pins.cri_tools}")
        _run_go(
            [
                "build",
                "-trimpath",
                f"-ldflags=-s -w -X {CRI_TOOLS_MODULE}/pkg/version.Version={pins.cri_tools}",
                "-o",
                str(staging / "crictl"),
                f"{CRI_TOOLS_MODULE}/cmd/crictl",
            ],
            cwd=CRI_TOOLS_MODULE_DIR,
        )


# --- regenerating the wrapper modules -------------------------------------------------------------

_STAGING_REPLACE_RE = re.compile(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", re.MULTILINE)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The staging modules that k8s.io/kubernetes replaces with local paths (derived, never typed)."""
    return sorted(set(_STAGING_REPLACE_RE.findall(kubernetes_go_mod)))


def kubernetes_wrapper_go_mod(version: str, go_directive: str, staging: list[str]) -> str:
    _major, minor, patch = version.lstrip("v").split(".", 2)
    published = f"v0.{minor}.{patch}"
    lines = [
        "// Generated by `hack/local-cluster gomod`: a wrapper that builds the control plane",
        "// from k8s.io/kubernetes, whose own go.mod points its staging modules at local paths.",
        "module kubectl-gitops.local/hack/gomod/kubernetes",
        "",
        f"go {go_directive}",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *[f"\t{module} => {module} {published}" for module in staging],
        ")",
        "",
        *[f"tool k8s.io/kubernetes/cmd/{name}" for name in (*KUBERNETES_COMMANDS, *NODE_KUBERNETES_COMMANDS)],
        "",
    ]
    return "\n".join(lines)


def etcd_wrapper_go_mod(version: str) -> str:
    return "\n".join(
        [
            "// Generated by `hack/local-cluster gomod`: a wrapper that builds etcd from its published server module.",
            "module kubectl-gitops.local/hack/gomod/etcd",
            "",
            "go 1.25",
            "",
            f"require go.etcd.io/etcd/server/v3 {version}",
            "",
            "tool go.etcd.io/etcd/server/v3",
            "",
        ]
    )


def helm_wrapper_go_mod(version: str, go_directive: str) -> str:
    return "\n".join(
        [
            "// Generated by `hack/local-cluster gomod`: a wrapper that builds the helm CLI from its published module.",
            "module kubectl-gitops.local/hack/gomod/helm",
            "",
            f"go {go_directive}",
            "",
            f"require {HELM_MODULE} {version}",
            "",
            f"tool {HELM_COMMAND}",
            "",
        ]
    )


def _upstream_go_mod(module: str, version: str) -> tuple[str, str]:
    """The go.mod of module@version, downloaded through the module proxy, and its go directive."""
    info = json.loads(_run_go(["mod", "download", "-json", f"{module}@{version}"], cwd=HACK_DIR))
    text = Path(info["GoMod"]).read_text()
    go_match = re.search(r"^go\s+(\S+)", text, re.MULTILINE)
    if not go_match:
        raise ClusterError(f"{module} {version} go.mod has no go directive")
    return text, go_match.group(1)


def _write_wrapper(directory: Path, go_mod: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "go.mod").write_text(go_mod)
    (directory / "go.sum").write_text("")
    _run_go(["mod", "tidy"], cwd=directory)


def regenerate_modules(
    kubernetes: str | None = None,
    etcd: str | None = None,
    log: Callable[[str], None] = print,
    helm: str | None = None,
) -> None:
    """Rewrites the wrapper module of each release given (and only those), then `go mod tidy`s it."""
    if kubernetes is None and etcd is None and helm is None:
        raise ClusterError("nothing to regenerate: give a Kubernetes, etcd or Helm version")
    if kubernetes is not None:
        upstream, go_directive = _upstream_go_mod("k8s.io/kubernetes", kubernetes)
        staging = staging_modules(upstream)
        log(f"k8s.io/kubernetes {kubernetes}: {len(staging)} staging modules")
        _write_wrapper(KUBERNETES_MODULE_DIR, kubernetes_wrapper_go_mod(kubernetes, go_directive, staging))
    if etcd is not None:
        log(f"go.etcd.io/etcd/server/v3 {etcd}")
        _write_wrapper(ETCD_MODULE_DIR, etcd_wrapper_go_mod(etcd))
    if helm is not None:
        if not helm.startswith("v3."):
            raise ClusterError(f"{helm} is not a Helm v3 release; {HELM_MODULE} needs a v3.x.y version")
        _, go_directive = _upstream_go_mod(HELM_MODULE, helm)
        log(f"{HELM_MODULE} {helm}")
        _write_wrapper(HELM_MODULE_DIR, helm_wrapper_go_mod(helm, go_directive))
