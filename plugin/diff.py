"""`kubectl gitops diff`: how the cluster differs from Git; exit 0 no drift, 1 drift, 2 error (as kubectl diff)."""

from __future__ import annotations

import json

import click

from engine.usecases import compare_application, diff_revisions, diff_times, load_application

from .context import CliContext, CommandError, domain_errors, output_option, pass_cli


@click.command("diff")
@click.argument("name")
@click.option("--revision", default=None, help="Compare with this revision instead of the Application's.")
@click.option("--since", default="", help="What changed in the cluster since this time (36h, thursday, RFC 3339).")
@click.option("--until", default="", help="With --since: up to this time (default: now).")
@click.option("--from", "from_revision", default="", help="Git's objects at this revision, against those at --to.")
@click.option("--to", "to_revision", default="", help="With --from: the other revision (default: the Application's).")
@output_option("text", "json")
@pass_cli
def diff(
    cli: CliContext,
    name: str,
    revision: str | None,
    since: str,
    until: str,
    from_revision: str,
    to_revision: str,
    output: str,
) -> None:
    """Show how the cluster differs from Git for Application NAME; or what changed between two times (--since,
    --until) or two revisions (--from, --to), as rendered objects."""
    if sum(bool(x) for x in (revision, since or until, from_revision or to_revision)) > 1:
        raise click.UsageError("--revision, --since/--until and --from/--to do not go together")
    if until and not since:
        raise click.UsageError("--until needs --since")
    if to_revision and not from_revision:
        raise click.UsageError("--to needs --from")
    if since:
        diff_times_verb(cli, name, since, until, output)
        return
    if from_revision:
        diff_revisions_verb(cli, name, from_revision, to_revision, output)
        return
    with domain_errors(exit_code=2):
        loaded, comparison = compare_application(
            cli.client, cli.app_ref(name), revision=revision, shortcut=not cli.full
        )
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
        from .render import external_diff_command, print_text_diff, run_external_diff  # rich: only when shown

        command = external_diff_command()
        if command:
            run_external_diff(command, drifted)
        else:
            print_text_diff(drifted)
    raise SystemExit(1 if drifted else 0)


def diff_revisions_verb(cli: CliContext, name: str, from_revision: str, to_revision: str, output: str) -> None:
    from .history import diff_json, print_changes  # imported when used: a plain diff starts faster (plugin.cli)

    ref = cli.app_ref(name)
    with domain_errors(exit_code=2):
        result = diff_revisions(
            cli.client, ref, from_revision, to_revision or load_application(cli.client, ref).spec.target
        )
    if output == "json":
        click.echo(json.dumps({"application": name, **diff_json(result)}, indent=2))
    else:
        before, after = result.before.desired.commit, result.after.desired.commit
        click.echo(f"From {before.sha[:12]} ({before.subject}) to {after.sha[:12]} ({after.subject}):")
        if result.changes:
            print_changes(result.changes)
        else:
            click.echo("  no object differs")
    raise SystemExit(1 if result.changes else 0)


def diff_times_verb(cli: CliContext, name: str, since: str, until: str, output: str) -> None:
    from .history import attempt_line, diff_json, instant, local, print_changes  # as in diff_revisions_verb

    start, end = instant(since), instant(until or "now")
    if end < start:
        raise CommandError(f"--until ({local(end)}) is before --since ({local(start)})", 2)
    with domain_errors(exit_code=2):
        result = diff_times(cli.client, cli.app_ref(name), start, end)
    changed = bool(result.diff and result.diff.changes)
    if output == "json":
        body = {
            "application": name,
            "since": {"at": local(start), "sync": result.since.record.summary() if result.since.record else None},
            "until": {"at": local(end), "sync": result.until.record.summary() if result.until.record else None},
            **diff_json(result.diff),
            "syncs": [r.summary() for r in result.syncs],
            "driftAttempts": result.attempts,
        }
        click.echo(json.dumps(body, indent=2))
        raise SystemExit(1 if changed else 0)
    for label, answer in (("Since", result.since), ("Until", result.until)):
        r = answer.record
        live = f"sync {r.id}, {r.commit.sha[:12]} ({r.commit.subject})" if r else "no sync recorded by then"
        click.echo(f"{label} {local(answer.at)}: {live}")
    if result.diff is not None:
        for rendered in (result.diff.before, result.diff.after):
            if rendered.mismatch():
                click.echo(f"warning: {rendered.mismatch()}", err=True)
        if result.diff.changes:
            print_changes(result.diff.changes)
        else:
            click.echo("No object Git declares changed.")
    click.echo(f"Syncs in between ({len(result.syncs)}):")
    for r in result.syncs:
        click.echo(
            f"  {local(r.finished)} sync {r.id} {r.trigger.value} by {r.user}: {r.commit.sha[:12]} "
            f"{r.commit.subject} ({r.result.value})"
        )
    click.echo(f"Drift attempts ({len(result.attempts)}):")
    for a in result.attempts:
        click.echo("  " + attempt_line(a))
    raise SystemExit(1 if changed else 0)
