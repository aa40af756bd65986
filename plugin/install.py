"""`kubectl gitops install`: the CRDs, the gitops-system namespace and, optionally, the webhook's registration."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from engine.apps import controller_manifests, install_manifests
from engine.core.errors import GitOpsError
from engine.core.objects import KubeObject
from engine.core.webhookconfig import webhook_configuration
from engine.registration import install_registration, planned_registration

from .context import CliContext, CommandError, domain_errors, pass_cli


@click.command("install")
@click.option("--webhook-url", help="Register the drift webhook at this URL (a webhook running outside the cluster).")
@click.option("--webhook-service", is_flag=True, help="Register the in-cluster gitops-webhook Service instead.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA that signed the webhook's serving certificate (its cert dir's ca.crt).",
)
@click.option("--controller", is_flag=True, help="Deploy the reconciler too (manifests/controller/).")
@click.option("--image", default="", help="The image the reconciler runs (default: the manifests' kubectl-gitops).")
@click.option("--dry-run", is_flag=True, help="Print the manifests instead of applying them.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", help="Format for --dry-run.")
@pass_cli
def install(
    cli: CliContext,
    webhook_url: str | None,
    webhook_service: bool,
    ca_file: Path | None,
    controller: bool,
    image: str,
    dry_run: bool,
    output: str,
) -> None:
    """Install the Application and AuditRecord CRDs and the gitops-system namespace (also in manifests/); with
    --webhook-url or --webhook-service, register the drift admission webhook too, for the resources the
    Applications manage (an existing registration's resources are kept; the webhook adds new ones itself); with
    --controller, deploy the reconciler (gitops-controller) as well."""
    objects = install_manifests() + (controller_manifests(image) if controller else [])
    ca_bundle = b""
    register = bool(webhook_url or webhook_service)
    if register:
        if ca_file is None:
            raise CommandError("--ca-file is needed to register the webhook (the CA of its serving certificate)")
        if webhook_url and not webhook_url.startswith("https://"):
            raise CommandError("--webhook-url must be an https:// URL (the API server only calls webhooks over TLS)")
        ca_bundle = ca_file.read_bytes()
    url = webhook_url or ""
    if dry_run:
        if register:
            objects.append(_planned_offline_if_need_be(cli, ca_bundle, url))
        if output == "json":
            click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        else:
            click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
        return
    with domain_errors():
        client = cli.client
        for obj in objects:
            info = client.resource_for(obj["apiVersion"], obj["kind"])
            if info is None:
                raise CommandError(f"the cluster does not serve {obj['kind']} ({obj['apiVersion']})")
            client.apply(info, obj)
            click.echo(f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied")
        if register:
            registration = install_registration(client, ca_bundle=ca_bundle, url=url)
            click.echo(f"validatingwebhookconfiguration/{registration['metadata']['name']} serverside-applied")


def _planned_offline_if_need_be(cli: CliContext, ca_bundle: bytes, url: str) -> KubeObject:
    """The registration install would write; when the cluster cannot be read, the one it would write on a cluster
    without Applications (said on stderr)."""
    try:
        config, _ = planned_registration(cli.client, ca_bundle=ca_bundle, url=url)
    except GitOpsError as e:
        click.echo(f"# cannot read the cluster ({e}): the registration lists no resources yet", err=True)
        return webhook_configuration(ca_bundle=ca_bundle, url=url, resources=())
    return config
