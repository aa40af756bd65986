"""`kubectl gitops sync`: bring the cluster back to Git, with an optional prune."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from engine.compare import DesiredObject
from engine.core.errors import GitOpsError
from engine.core.webhookconfig import managed_resources
from engine.registration import Coverage, RegistrationStore, cover
from engine.sync import Action, BeforeApply, SyncResult
from engine.usecases import load_application, sync_loaded

from .context import CliContext, CommandError, domain_errors, output_option, pass_cli
from .render import console, print_table


@click.command("sync")
@click.argument("name")
@click.option("--revision", default=None, help="Sync this revision instead of the Application's.")
@click.option("--prune", is_flag=True, help="Delete tracked objects that Git no longer has.")
@click.option("--dry-run", is_flag=True, help="Ask the API server what would happen; change nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Also say on stderr what became of the webhook registration.")
@output_option("text", "json")
@pass_cli
def sync(
    cli: CliContext, name: str, revision: str | None, prune: bool, dry_run: bool, verbose: bool, output: str
) -> None:
    """Apply Git's state of Application NAME to the cluster."""
    with domain_errors():
        client = cli.client
        loaded = load_application(client, cli.app_ref(name), revision=revision)
        desired = loaded.desired
        show_progress = output == "text" and sys.stderr.isatty() and len(desired.objects) > 20
        with progress_bar(len(desired.objects), show_progress) as advance:
            report = sync_loaded(
                client,
                loaded,
                prune=prune,
                dry_run=dry_run,
                progress=advance,
                before_apply=registration_guard(client, verbose),
                shortcut=not cli.full,
            )
    results, failed = report.results, report.failed
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "application": name,
                    "revision": desired.commit.sha,
                    "dryRun": dry_run,
                    "results": [r.as_dict() for r in results],
                },
                indent=2,
            )
        )
    else:
        suffix = " (dry run)" if dry_run else ""
        rows = [[str(r.key), r.action.value + suffix, r.message] for r in results]
        print_table(["OBJECT", "RESULT", "MESSAGE"], rows)
        counts = {a: sum(1 for r in results if r.action is a) for a in Action}
        summary = ", ".join(f"{n} {a.value}" for a, n in counts.items() if n)
        commit = desired.commit
        click.echo(f"Synced {name} to {commit.sha[:12]} ({commit.subject}): {summary or 'nothing to do'}{suffix}")
    if failed:
        raise CommandError(f"{len(failed)} object(s) failed to sync")


@contextmanager
def progress_bar(total: int, shown: bool) -> Iterator[Callable[[SyncResult], None]]:
    """A bar on stderr, advanced once per object; rich is imported only when one is shown (plugin.cli: start-up)."""
    if not shown:
        yield lambda _: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("syncing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("sync", total=total)
        yield lambda _: bar.advance(task)


def registration_guard(client: RegistrationStore, verbose: bool) -> BeforeApply:
    """Before objects are applied, an existing webhook registration is made to cover their kinds, so that no
    freshly synced kind is unguarded until the webhook catches up. Best-effort: without RBAC on
    validatingwebhookconfigurations, or without a registration, the sync goes on (said only with -v)."""

    def guard(objects: list[DesiredObject]) -> None:
        try:
            outcome = cover(client, managed_resources(d.info for d in objects if d.info is not None))
        except GitOpsError as e:
            if verbose:
                click.echo(f"webhook registration not checked: {e}", err=True)
            return
        if verbose or outcome.coverage is Coverage.EXTENDED:
            click.echo(str(outcome), err=True)

    return guard
