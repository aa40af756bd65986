"""`kubectl gitops status`: the Application's revision, last sync, and the state of each of its objects."""

from __future__ import annotations

import json

import click

from engine.adapters.source import redact_url
from engine.usecases import application_status

from .context import CliContext, domain_errors, output_option, pass_cli
from .render import print_table


@click.command("status")
@click.argument("name")
@output_option("text", "json")
@pass_cli
def status(cli: CliContext, name: str, output: str) -> None:
    """Show Application NAME: its revision, last sync, and each object's state."""
    with domain_errors():
        ref = cli.app_ref(name)
        report = application_status(cli.client, ref)
    spec, desired, comparison, summary = report.loaded.spec, report.loaded.desired, report.comparison, report.summary
    last = report.last_sync
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "application": name,
                    "revision": desired.commit.sha,
                    **summary,
                    "lastSync": last,
                    "rollback": report.loaded.spec.rollback.as_dict() if report.loaded.spec.rollback else None,
                    "suspend": report.loaded.spec.suspend.as_dict() if report.loaded.spec.suspend else None,
                    "conditions": (report.loaded.obj.get("status") or {}).get("conditions") or [],
                    "objects": [{**d.key.as_dict(), "state": d.state.value} for d in comparison.diffs],
                },
                indent=2,
            )
        )
        return
    click.echo(f"Application: {ref}")
    click.echo(
        f"Source:      {redact_url(spec.repo_url)} path {spec.path} revision {spec.revision or '(default branch)'}"
    )
    click.echo(f"Target:      {desired.commit.sha[:12]} {desired.commit.subject}")
    if spec.suspend is not None:
        why = f": {spec.suspend.reason}" if spec.suspend.reason else ""
        click.echo(
            f"Suspended:   by {spec.suspend.user} at {spec.suspend.at}{why} (`kubectl gitops resume {name}` lifts it)"
        )
    if spec.rollback is not None:
        held = spec.rollback
        why = f": {held.reason}" if held.reason else ""
        click.echo(
            f"Rolled back: to {held.revision[:12]} by {held.user} at {held.at}{why} "
            f"(`kubectl gitops rollback {name} --resume` lifts it)"
        )
    click.echo(f"Sync:        {summary['sync']['status']}")
    if last:
        click.echo(
            f"Last sync:   {last.get('result')} at {last.get('time')} by {last.get('user')} "
            f"to {str(last.get('revision', ''))[:12]} {last.get('subject', '')}"
        )
    else:
        click.echo("Last sync:   never")
    click.echo(f"Drift mode:  {spec.drift_mode}")
    controller_status = report.loaded.obj.get("status") or {}
    health = controller_status.get("health") or {}
    if health:
        click.echo(f"Health:      {health.get('status')} ({health.get('message', '')}), as the reconciler saw it")
    for c in controller_status.get("conditions") or []:
        click.echo(f"Condition:   {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message', '')}")
    click.echo()
    rows = [[str(d.key), d.state.value, str(len(d.items)) if d.items else ""] for d in comparison.diffs]
    print_table(["OBJECT", "STATE", "DRIFTED FIELDS"], rows)
