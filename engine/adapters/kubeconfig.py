"""Reading kubeconfig files as kubectl does, for the common cases, without importing the `kubernetes` package.

Client certificates, bearer tokens (inline or from a file) and basic auth are handled here; a user with an `exec`
plugin or an `auth-provider` is handed to the `kubernetes` package (imported only then), which runs them.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import KubeConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    host: str
    ca_file: str | None = None
    verify: bool = True
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None  # re-read now and then: projected ServiceAccount tokens rotate
    username: str | None = None
    password: str | None = None
    server_name: str | None = None


class NeedsPlugin(Exception):
    """The user authenticates through an exec plugin or auth-provider: the kubernetes package handles it."""


_CLEANUP: list[str] = []


@atexit.register
def _remove_temporary_files() -> None:
    for name in _CLEANUP:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _data_file(data: str, suffix: str) -> str:
    """Inline base64 data written to a private temporary file (what ssl wants), removed at exit."""
    handle = tempfile.NamedTemporaryFile(prefix="kubectl-gitops-", suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        handle.write(base64.b64decode(data))
    os.chmod(handle.name, 0o600)
    _CLEANUP.append(handle.name)
    return handle.name


def _files(explicit: str | None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def _merged(files: list[Path]) -> tuple[dict[str, Any], dict[str, Path]]:
    """kubectl's merge: the first file to name a cluster, user or context wins; the first current-context wins.
    Also returns, per named entry, the file it came from (relative paths resolve against it)."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": ""}
    origin: dict[str, Path] = {}
    found_any = False
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise KubeConfigError(f"cannot read {path}: {e}") from e
        found_any = True
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise KubeConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise KubeConfigError(f"{path} is not a kubeconfig (expected a mapping)")
        for section, field in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in doc.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") and entry["name"] not in merged[section]:
                    merged[section][entry["name"]] = entry.get(field) or {}
                    origin[f"{section}/{entry['name']}"] = path
        if not merged["current-context"] and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
    if not found_any:
        raise KubeConfigError(f"no kubeconfig found at {', '.join(str(f) for f in files)}")
    return merged, origin


def _resolve(path: str, relative_to: Path) -> str:
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else relative_to.parent / candidate)


def load(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """Credentials for `context` (default: the current context) of the kubeconfig kubectl would read."""
    merged, origin = _merged(_files(kubeconfig))
    name = context or merged["current-context"]
    if not name:
        raise KubeConfigError("the kubeconfig has no current-context; pass --context")
    ctx = merged["contexts"].get(name)
    if ctx is None:
        raise KubeConfigError(f"context {name!r} is not in the kubeconfig")
    cluster = merged["clusters"].get(ctx.get("cluster", ""))
    if cluster is None or not cluster.get("server"):
        raise KubeConfigError(f"context {name!r} names cluster {ctx.get('cluster')!r}, which has no server")
    user = merged["users"].get(ctx.get("user", ""), {})
    if "exec" in user or "auth-provider" in user:
        raise NeedsPlugin(name)
    cluster_file = origin.get(f"clusters/{ctx.get('cluster')}", Path("."))
    user_file = origin.get(f"users/{ctx.get('user')}", Path("."))

    def pick(entry: Mapping[str, Any], key: str, source: Path, suffix: str) -> str | None:
        if entry.get(f"{key}-data"):
            return _data_file(str(entry[f"{key}-data"]), suffix)
        if entry.get(key):
            return _resolve(str(entry[key]), source)
        return None

    token = user.get("token")
    token_file = _resolve(str(user["tokenFile"]), user_file) if not token and user.get("tokenFile") else None
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise KubeConfigError(f"cannot read tokenFile of user {ctx.get('user')!r}: {e}") from e
    return Credentials(
        host=str(cluster["server"]).rstrip("/"),
        ca_file=pick(cluster, "certificate-authority", cluster_file, ".crt"),
        verify=not bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=pick(user, "client-certificate", user_file, ".crt"),
        key_file=pick(user, "client-key", user_file, ".key"),
        token=str(token) if token else None,
        token_file=token_file,
        username=user.get("username"),
        password=user.get("password"),
        server_name=cluster.get("tls-server-name"),
    )


def in_cluster() -> Credentials:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeConfigError("not running in a cluster (KUBERNETES_SERVICE_HOST is not set)")
    try:
        token = (SERVICE_ACCOUNT_DIR / "token").read_text().strip()
    except OSError as e:
        raise KubeConfigError(f"cannot read the ServiceAccount token: {e}") from e
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        host=f"https://{host}:{port}",
        ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        token=token,
        token_file=str(SERVICE_ACCOUNT_DIR / "token"),
    )
