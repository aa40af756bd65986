"""`kubectl gitops version`: the plugin's version and, when reachable, the API server's."""

from __future__ import annotations

import click

from engine import __version__
from engine.adapters.kube import server_version
from engine.core.errors import GitOpsError

from .context import CliContext, pass_cli


@click.command("version")
@click.option("--client", "client_only", is_flag=True, help="Print the plugin's version only.")
@pass_cli
def version(cli: CliContext, client_only: bool) -> None:
    """Print the plugin's and the API server's versions."""
    click.echo(f"Client Version: kubectl-gitops {__version__}")
    if client_only:
        return
    try:
        click.echo(f"Server Version: {server_version(cli.target)}")
    except GitOpsError as e:
        raise click.ClickException(str(e)) from e
