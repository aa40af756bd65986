"""`kubectl gitops diff`: how the cluster differs from Git; exit 0 no drift, 1 drift, 2 error (as kubectl diff)."""

from __future__ import annotations

import json

import click

from engine.usecases import compare_application

from .context import CliContext, domain_errors, output_option, pass_cli
from .render import external_diff_command, print_text_diff, run_external_diff


@click.command("diff")
@click.argument("name")
@click.option("--revision", default=None, help="Compare with this revision instead of the Application's.")
@output_option("text", "json")
@pass_cli
def diff(cli: CliContext, name: str, revision: str | None, output: str) -> None:
    """Show how the cluster differs from Git for Application NAME."""
    with domain_errors(exit_code=2):
        loaded, comparison = compare_application(cli.client, cli.app_ref(name), revision=revision)
    drifted = [d for d in comparison.diffs if d.drifted]
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "application": name,
                    "revision": loaded.desired.commit.sha,
                    "objects": [d.as_dict() for d in comparison.diffs],
                },
                indent=2,
            )
        )
    elif drifted:
        command = external_diff_command()
        if command:
            run_external_diff(command, drifted)
        else:
            print_text_diff(drifted)
    raise SystemExit(1 if drifted else 0)
