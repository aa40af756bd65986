"""`kubectl gitops install`: the Application CRD and the gitops-system namespace."""

from __future__ import annotations

import json

import click
import yaml

from engine.apps import install_manifests

from .context import CliContext, domain_errors, pass_cli


@click.command("install")
@click.option("--dry-run", is_flag=True, help="Print the manifests instead of applying them.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", help="Format for --dry-run.")
@pass_cli
def install(cli: CliContext, dry_run: bool, output: str) -> None:
    """Install the Application CRD and the gitops-system namespace (also in manifests/)."""
    objects = install_manifests()
    if dry_run:
        if output == "json":
            click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        else:
            click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
        return
    with domain_errors():
        client = cli.client
        for obj in objects:
            info = client.resource_for(obj["apiVersion"], obj["kind"])
            assert info is not None, obj["kind"]
            client.apply(info, obj)
            click.echo(f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied")
