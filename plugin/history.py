"""`kubectl gitops history`, `changes` and `rollback`: what ran when, what changed, and going back."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click
from dateutil import tz

from engine.adapters.clock import SYSTEM
from engine.compare import new_masker
from engine.core.history import SyncRecord
from engine.core.renderdiff import Change, ObjectChange, compared_form
from engine.core.text import shown
from engine.core.timespec import resolve
from engine.usecases import (
    AtTime,
    RenderDiff,
    at_time,
    history_of,
    render_revision,
    resume,
    rollback,
    sync_record,
    timeline,
)
from engine.usecases import (
    load_application as load,
)

from .context import CliContext, CommandError, domain_errors, output_option, pass_cli
from .render import print_table, to_yaml


def instant(text: str) -> datetime.datetime:
    """A time the user gave, resolved in the local time zone unless it names one."""
    with domain_errors(exit_code=2):
        return resolve(text, SYSTEM.wall(), tz.tzlocal())


def local(at: datetime.datetime) -> str:
    return at.astimezone(tz.tzlocal()).isoformat(timespec="seconds")


def history_row(r: SyncRecord) -> list[str]:
    return [
        str(r.id),
        local(r.finished),
        r.trigger.value,
        r.user,
        r.commit.sha[:12],
        r.commit.subject,
        r.result.value,
        str(r.changed),
    ]


HISTORY_HEADER = ["ID", "TIME", "TRIGGER", "WHO", "COMMIT", "SUBJECT", "RESULT", "CHANGED"]


@click.command("history")
@click.argument("name")
@click.argument("record_id", metavar="[ID]", required=False, type=int)
@click.option(
    "--at", "at", default="", help="Which sync was live at this time (RFC 3339, 2026-11-26 15:00, 36h, thursday)."
)
@click.option(
    "--manifests", is_flag=True, help="With ID: also print the sync's rendered manifests (Secret values masked)."
)
@output_option("text", "json")
@pass_cli
def history(cli: CliContext, name: str, record_id: int | None, at: str, manifests: bool, output: str) -> None:
    """List Application NAME's syncs, newest first; show one whole (ID); or say which was live at a time (--at)."""
    ref = cli.app_ref(name)
    if at and record_id is not None:
        raise click.UsageError("give either ID or --at")
    if at:
        when = instant(at)
        with domain_errors():
            answer = at_time(cli.client, ref, when)
        print_at(name, answer, output)
        return
    if record_id is not None:
        with domain_errors():
            record = sync_record(cli.client, ref, record_id)
            rendered = (
                render_revision(cli.client, load(cli.client, ref).spec, record.commit.sha, record)
                if manifests
                else None
            )
        print_record(record, rendered.objects if rendered else None, rendered.mismatch() if rendered else "", output)
        return
    with domain_errors():
        records = history_of(cli.client, ref)
    if output == "json":
        click.echo(json.dumps([r.summary() for r in records], indent=2))
        return
    if not records:
        click.echo(f"No syncs of {name} recorded.")
        return
    print_table(HISTORY_HEADER, [history_row(r) for r in records])


def print_at(name: str, answer: AtTime, output: str) -> None:
    if output == "json":
        body = {
            "application": name,
            "at": local(answer.at),
            "sync": answer.record.summary() if answer.record else None,
            "drift": answer.drift,
        }
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(f"At {local(answer.at)}:")
    if answer.record is None:
        click.echo(f"  no sync of {name} had finished by then (or its record is no longer kept)")
        return
    r = answer.record
    click.echo(
        f"  sync {r.id} was live: {r.commit.sha[:12]} {r.commit.subject!r}, {r.trigger.value} by {r.user}, "
        f"finished {local(r.finished)}, {r.result.value}"
    )
    if not answer.drift:
        click.echo("  no drift recorded between that sync and then")
        return
    click.echo(f"  drift the webhook let through since that sync ({len(answer.drift)}):")
    for a in answer.drift:
        click.echo("    " + attempt_line(a))


def attempt_line(a: dict[str, Any]) -> str:
    obj = a.get("object") or {}
    fields = ", ".join(str(f.get("path")) for f in a.get("fields") or [])
    return (
        f"{a.get('time')} {a.get('decision')} {a.get('operation')} {obj.get('kind')} "
        f"{obj.get('namespace')}/{obj.get('name')} by {a.get('user')}" + (f": {fields}" if fields else "")
    )


def print_record(record: SyncRecord, objects: dict[Any, Any] | None, mismatch: str, output: str) -> None:
    masker = new_masker()  # a key of this process: markers compare within this one output, never across runs
    if output == "json":
        body = record.as_dict()
        if objects is not None:
            body["manifests"] = [compared_form(o, masker) for o in objects.values()]
            body["renderMatches"] = not mismatch
        click.echo(json.dumps(body, indent=2))
        return
    s = record.summary()
    for label, value in [
        ("Sync", f"{record.id} of {record.application}"),
        ("Commit", f"{record.commit.sha} {record.commit.subject!r} by {record.commit.author}"),
        ("Trigger", f"{record.trigger.value} by {record.user}" + (f" ({record.reason})" if record.reason else "")),
        ("Started", local(record.started)),
        ("Finished", local(record.finished)),
        ("Result", record.result.value),
        ("Render", s["renderDigest"]),
    ]:
        click.echo(f"{label + ':':<10}{value}")
    for error in record.errors:
        click.echo(f"Error:    {error}")
    click.echo()
    print_table(
        ["OBJECT", "ACTION", "DIGEST", "MESSAGE"],
        [[str(o.key), o.action.value, o.digest[:12], o.message] for o in record.objects],
    )
    if objects is not None:
        if mismatch:
            click.echo(f"\nwarning: {mismatch}", err=True)
        for obj in objects.values():
            click.echo("---")
            click.echo(to_yaml(compared_form(obj, masker)).rstrip())


def print_changes(changes: list[ObjectChange]) -> None:
    for c in changes:
        click.echo(click.style(f"=== {c.key} ({c.change.value})", bold=True))
        for f in c.fields:
            if f.change is Change.ADDED:
                click.echo(f"#   added   {f.path}: {shown(f.after, 120)}")
            elif f.change is Change.REMOVED:
                click.echo(f"#   removed {f.path}: {shown(f.before, 120)}")
            else:
                click.echo(f"#   changed {f.path}: {shown(f.before, 120)} -> {shown(f.after, 120)}")


def diff_json(diff: RenderDiff | None) -> dict[str, Any]:
    if diff is None:
        return {"objects": []}
    return {
        "from": diff.before.desired.commit.sha,
        "to": diff.after.desired.commit.sha,
        "objects": [c.as_dict() for c in diff.changes],
        "renderMatches": {"from": diff.before.matches_record, "to": diff.after.matches_record},
    }


@click.command("changes")
@click.argument("name", required=False, default="")
@click.option("--since", "since", default="24h", show_default=True, help="From this time (36h, thursday, 2026-11-26).")
@output_option("text", "json")
@pass_cli
def changes(cli: CliContext, name: str, since: str, output: str) -> None:
    """The cluster's timeline: syncs, rollbacks and drift attempts of every Application (or of NAME), newest first."""
    start = instant(since)
    with domain_errors():
        events = timeline(cli.client, cli.app_namespace, start, name)
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {"time": local(e.time), "application": e.application, "what": e.what, "detail": e.detail}
                    for e in events
                ],
                indent=2,
            )
        )
        return
    click.echo(f"Since {local(start)}:")
    if not events:
        click.echo("  nothing changed" + (f" for {name}" if name else ""))
        return
    print_table(
        ["TIME", "APPLICATION", "WHAT", "SUMMARY"], [[local(e.time), e.application, e.what, e.summary] for e in events]
    )


@click.command("rollback")
@click.argument("name")
@click.argument("target", metavar="[ID|REV]", required=False, default="")
@click.option("--resume", "lift", is_flag=True, help="Lift the rollback and sync the Application's own revision again.")
@click.option("--reason", default="", help="Why (kept with the rollback and its record).")
@click.option("--prune", is_flag=True, help="Delete tracked objects that commit does not have.")
@output_option("text", "json")
@pass_cli
def rollback_(cli: CliContext, name: str, target: str, lift: bool, reason: str, prune: bool, output: str) -> None:
    """Sync Application NAME to an earlier sync's commit (default: the one before the current) and hold it there
    until `rollback NAME --resume`."""
    if lift and target:
        raise click.UsageError("--resume takes no ID or revision")
    ref = cli.app_ref(name)
    with domain_errors():
        report = (
            resume(cli.client, ref, prune=prune)
            if lift
            else rollback(cli.client, ref, target, reason=reason, prune=prune)
        )
    record = report.record
    if output == "json":
        click.echo(json.dumps({"application": name, "sync": record.as_dict() if record else None}, indent=2))
    else:
        print_table(["OBJECT", "RESULT", "MESSAGE"], [[str(r.key), r.action.value, r.message] for r in report.results])
        commit = report.loaded.desired.commit
        what = "Resumed" if lift else "Rolled back"
        held = "" if lift else f"; held there until `kubectl gitops rollback {name} --resume`"
        click.echo(
            f"{what} {name} to {commit.sha[:12]} ({commit.subject}) as sync {record.id if record else '-'}{held}"
        )
    if report.failed:
        raise CommandError(f"{len(report.failed)} object(s) failed to sync")
