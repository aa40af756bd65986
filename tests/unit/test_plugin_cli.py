"""The plugin's command line at its edge: flags, versions and error messages, with click's CliRunner."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine import __version__
from plugin.cli import cli


def test_version_client_only() -> None:
    result = CliRunner().invoke(cli, ["version", "--client"])
    assert result.exit_code == 0
    assert result.output == f"Client Version: kubectl-gitops {__version__}\n"


def test_unloadable_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kubeconfig"
    result = CliRunner().invoke(cli, ["--kubeconfig", str(missing), "version"])
    assert result.exit_code == 1
    assert f"cannot load {missing}" in result.output
    assert "--kubeconfig/--context" in result.output


def test_unreachable_api_server_is_a_clear_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    result = CliRunner().invoke(cli, ["--kubeconfig", str(kubeconfig), "version"])
    assert result.exit_code == 1
    assert "did not answer" in result.output
    assert "Traceback" not in result.output
