"""Reading kubeconfig files as kubectl does, without the kubernetes package."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from engine.adapters import kubeconfig
from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.errors import KubeConfigError


def write(path: Path, **doc: object) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **doc}))
    return path


def simple(
    path: Path, *, server: str = "https://a:6443", user: dict[str, object] | None = None, current: str = "a"
) -> Path:
    return write(
        path,
        clusters=[{"name": "a", "cluster": {"server": server, "certificate-authority": "ca.crt"}}],
        users=[{"name": "u", "user": user or {"token": "t0k"}}],
        contexts=[{"name": "a", "context": {"cluster": "a", "user": "u"}}],
        **({"current-context": current} if current else {}),
    )


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    creds = kubeconfig.load(str(simple(tmp_path / "config")))
    assert creds.host == "https://a:6443"
    assert creds.ca_file == str(tmp_path / "ca.crt")
    assert creds.token == "t0k"
    assert creds.verify


def test_inline_data_goes_to_private_files(tmp_path: Path) -> None:
    data = base64.b64encode(b"PEM BYTES").decode()
    path = write(
        tmp_path / "config",
        clusters=[{"name": "a", "cluster": {"server": "https://a", "certificate-authority-data": data}}],
        users=[{"name": "u", "user": {"client-certificate-data": data, "client-key-data": data}}],
        contexts=[{"name": "a", "context": {"cluster": "a", "user": "u"}}],
        **{"current-context": "a"},
    )
    creds = kubeconfig.load(str(path))
    for name in (creds.ca_file, creds.cert_file, creds.key_file):
        assert name is not None
        assert Path(name).read_bytes() == b"PEM BYTES"
        assert Path(name).stat().st_mode & 0o077 == 0
    assert creds.token is None


def test_token_file_is_read_and_remembered(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    creds = kubeconfig.load(str(simple(tmp_path / "config", user={"tokenFile": "token"})))
    assert creds.token == "from-file"
    assert creds.token_file == str(tmp_path / "token")


def test_kubeconfig_env_merges_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = simple(tmp_path / "one", server="https://first", current="")
    second = simple(tmp_path / "two", server="https://second", current="a")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    creds = kubeconfig.load()
    assert creds.host == "https://first"  # the first file to name cluster "a" wins
    assert creds.token == "t0k"


def test_insecure_and_server_name(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        clusters=[
            {
                "name": "a",
                "cluster": {
                    "server": "https://1.2.3.4/",
                    "insecure-skip-tls-verify": True,
                    "tls-server-name": "api.example",
                },
            }
        ],
        users=[{"name": "u", "user": {"username": "bob", "password": "pw"}}],
        contexts=[{"name": "a", "context": {"cluster": "a", "user": "u"}}],
        **{"current-context": "a"},
    )
    creds = kubeconfig.load(str(path))
    assert (creds.host, creds.verify, creds.server_name, creds.username) == (
        "https://1.2.3.4",
        False,
        "api.example",
        "bob",
    )


@pytest.mark.parametrize("user", [{"exec": {"command": "aws"}}, {"auth-provider": {"name": "oidc"}}])
def test_plugins_are_left_to_the_kubernetes_package(tmp_path: Path, user: dict[str, object]) -> None:
    with pytest.raises(kubeconfig.NeedsPlugin):
        kubeconfig.load(str(simple(tmp_path / "config", user=user)))


@pytest.mark.parametrize(
    ("context", "current", "message"),
    [
        ("nope", "a", "context 'nope' is not in the kubeconfig"),
        (None, "", "has no current-context"),
    ],
)
def test_context_errors(tmp_path: Path, context: str | None, current: str, message: str) -> None:
    with pytest.raises(KubeConfigError, match=message):
        kubeconfig.load(str(simple(tmp_path / "config", current=current)), context)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no kubeconfig found"):
        kubeconfig.load(str(tmp_path / "absent"))
    (tmp_path / "bad").write_text("clusters: [\n")
    with pytest.raises(KubeConfigError, match="not valid YAML"):
        kubeconfig.load(str(tmp_path / "bad"))
    (tmp_path / "list").write_text("- 1\n")
    with pytest.raises(KubeConfigError, match="not a kubeconfig"):
        kubeconfig.load(str(tmp_path / "list"))


def test_in_cluster_needs_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="not running in a cluster"):
        kubeconfig.in_cluster()


def test_a_failing_exec_plugin_is_reported_once_with_the_kubeconfig_it_came_from(tmp_path: Path) -> None:
    """The kubernetes package runs the plugin; its failure reads "cannot load FILE: ..." once, not twice."""
    config = simple(tmp_path / "config", user={"exec": {"apiVersion": "v1", "command": str(tmp_path / "no-such")}})
    with pytest.raises(KubeConfigError) as raised:
        KubeClient(KubeTarget(kubeconfig=str(config)))
    message = str(raised.value)
    assert message.count("cannot load") == 1
    assert message.startswith(f"cannot load {config}: ")
