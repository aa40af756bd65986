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


def test_install_controller_dry_run_lists_the_reconcilers_objects_as_manifests_controller_has_them() -> None:
    import json

    import yaml

    result = CliRunner().invoke(
        cli, ["install", "--controller", "--image", "registry.example/gitops:1.2", "--dry-run", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)["items"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in items}
    assert {
        ("CustomResourceDefinition", "applications.gitops.kubectl-gitops.io"),
        ("ServiceAccount", "gitops-controller"),
        ("ClusterRole", "gitops-controller"),
        ("Role", "gitops-controller"),
        ("Deployment", "gitops-controller"),
        ("PodDisruptionBudget", "gitops-controller"),
    } <= kinds
    deployment = next(o for o in items if o["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "gitops-system"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/gitops:1.2"
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    shipped = Path(__file__).resolve().parents[2] / "manifests" / "controller" / "deployment.yaml"
    assert yaml.safe_load(shipped.read_text())["spec"]["replicas"] == deployment["spec"]["replicas"] == 2
    assert "gitops-controller" not in CliRunner().invoke(cli, ["install", "--dry-run"]).output
