"""`kubectl gitops reconcile`, `suspend` and `resume`: the remote control of the in-cluster reconciler
(gitops-controller)."""

from __future__ import annotations

import time
from typing import Any

import click

from engine.adapters.clock import SYSTEM
from engine.apps import get_application
from engine.core.clock import rfc3339
from engine.core.conditions import READY
from engine.core.timespec import duration
from engine.usecases import CONTROLLER_LEASE, controller_lease, request_reconcile, resume_automation, suspend

from .context import CliContext, CommandError, domain_errors, pass_cli

# Reasons of a Ready condition that say the reconcile failed (others, such as NewCommit or DriftFound with
# selfHeal off, are the Application's policy at work).
FAILURES = ("SyncFailed", "SourceUnavailable", "RenderFailed", "InvalidSpec", "RetryBackoff")


def _controller_running(cli: CliContext) -> str:
    """The holder of the reconciler's lease, or an error saying that no reconciler runs."""
    lease = controller_lease(cli.client, cli.app_namespace)
    if lease is None:
        raise CommandError(
            f"no gitops-controller runs for namespace {cli.app_namespace} (no Lease {CONTROLLER_LEASE} there): "
            "`kubectl gitops install --controller` deploys it; `kubectl gitops sync` works without it"
        )
    if not lease.held(SYSTEM.wall()):
        raise CommandError(
            f"no gitops-controller runs for namespace {cli.app_namespace}: its Lease {CONTROLLER_LEASE} was last "
            f"renewed at {rfc3339(lease.renewed) if lease.renewed else 'never'} by {lease.holder or 'nobody'}; "
            "`kubectl gitops sync` works without it"
        )
    return lease.holder


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return {}
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == kind), {})


@click.command("reconcile")
@click.argument("name")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the reconciler's answer.")
@click.option("--timeout", default="2m", show_default=True, help="How long to wait (30s, 2m).")
@pass_cli
def reconcile(cli: CliContext, name: str, wait: bool, timeout: str) -> None:
    """Ask the reconciler to fetch Git and reconcile Application NAME now."""
    with domain_errors():
        ref = cli.app_ref(name)
        try:
            limit = duration(timeout).total_seconds()
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--timeout") from e
        holder = _controller_running(cli)
        token = rfc3339(SYSTEM.wall(), milliseconds=True)
        request_reconcile(cli.client, ref, token)
        if not wait:
            click.echo(f"reconcile of {ref} requested from {holder}")
            return
        deadline = time.monotonic() + limit
        while True:
            obj, _ = get_application(cli.client, ref)
            status = dict(obj.get("status") or {})
            if status.get("lastHandledReconcileAt") == token:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"{ref}: the reconciler ({holder}) did not answer within {timeout}", exit_code=1)
            time.sleep(0.25)
    ready = _condition(status, READY)
    sync = status.get("sync") or {}
    health = status.get("health") or {}
    drift = status.get("drift") or {}
    click.echo(f"Application: {ref} (reconciled by {status.get('controller', holder)})")
    click.echo(f"Ready:       {ready.get('status', 'Unknown')} {ready.get('reason', '')}: {ready.get('message', '')}")
    click.echo(f"Sync:        {sync.get('status', 'Unknown')} at {str(sync.get('revision') or 'nothing')[:12]}")
    click.echo(f"Health:      {health.get('status', 'Unknown')}")
    click.echo(f"Drift:       {drift.get('objects', 0)} objects")
    last = status.get("lastSync") or {}
    if isinstance(last, dict) and str(last.get("time", "")) >= token[:19]:
        click.echo(f"Synced now:  sync {last.get('id')} ({last.get('trigger')}), {last.get('result')}")
    if ready.get("reason") in FAILURES:
        raise CommandError(f"{ref}: {ready.get('reason')}: {ready.get('message')}")


@click.command("suspend")
@click.argument("name")
@click.option("--reason", default="", help="Why (an incident, maintenance): kept in history and shown by status.")
@pass_cli
def suspend_(cli: CliContext, name: str, reason: str) -> None:
    """Pause the reconciler's automation for NAME: no sync of new commits, no heal (drift is still reported)."""
    with domain_errors():
        record = suspend(cli.client, cli.app_ref(name), reason)
    click.echo(f"{name} suspended (history record {record.id}); `kubectl gitops resume {name}` lifts it")


@click.command("resume")
@click.argument("name")
@pass_cli
def resume_(cli: CliContext, name: str) -> None:
    """Lift a suspension: the reconciler takes NAME up again at once."""
    with domain_errors():
        record = resume_automation(cli.client, cli.app_ref(name))
    click.echo(f"{name} resumed (history record {record.id})")
