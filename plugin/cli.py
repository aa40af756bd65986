"""The `kubectl gitops` command group: common flags, and every verb registered in one place."""

from __future__ import annotations

import click

from engine.kube import KubeTarget

from .applications import create, delete, list_
from .context import CliContext
from .diff import diff
from .install import install
from .status import status
from .sync import sync
from .version import version


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")
@click.option("--context", "kube_context", help="The kubeconfig context to use (as kubectl).")
@click.option("-n", "--namespace", help="Namespace where Applications live (default: gitops-system).")
@click.pass_context
def cli(ctx: click.Context, kubeconfig: str | None, kube_context: str | None, namespace: str | None) -> None:
    """Git as the source of truth for this cluster: diff, sync, history and drift audit."""
    ctx.obj = CliContext(target=KubeTarget(kubeconfig=kubeconfig or None, context=kube_context), namespace=namespace)


for command in (install, create, list_, delete, diff, sync, status, version):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="kubectl gitops")
