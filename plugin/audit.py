"""`kubectl gitops audit`: the drift attempts the webhook recorded, and `audit verify` of their chain."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import click

from engine.adapters.audit import ClusterWitness, filter_records, load_public_key, read_public_key, read_records, verify
from engine.adapters.auditwitness import read_witness
from engine.adapters.clock import SYSTEM

from .context import CliContext, CommandError, domain_errors, pass_cli
from .render import print_table

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_time(value: str, now: datetime.datetime | None = None) -> str:
    """`2h` (a duration) or an RFC 3339 time, as the RFC 3339 UTC string records compare with."""
    now = now or SYSTEM.wall()
    match = _DURATION.match(value)
    if match:
        start = now - datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            start = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise click.BadParameter(f"{value!r} is neither a duration (30m, 2h, 7d) nor a time (RFC 3339)") from e
        if start.tzinfo is None:
            start = start.replace(tzinfo=datetime.UTC)
    return start.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@click.command("audit", context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1)
@click.option("--user", default="", help="Only records of this user.")
@click.option("--since", default="", help="Only records since a duration ago (30m, 2h, 7d) or a time (RFC 3339).")
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="For `verify`: a pinned public key (default: the one the webhook published).",
)
@click.option(
    "--witness",
    default="",
    metavar="FILE_OR_REPO",
    help="For `verify`: checkpoints kept outside the cluster (a file of JSON lines from the webhook's stdout, or the "
    "witness Git repository); catches truncation and re-signing.",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_cli
def audit(
    cli: CliContext,
    args: tuple[str, ...],
    user: str,
    since: str,
    public_key: Path | None,
    witness: str,
    output: str,
) -> None:
    """List drift attempts: `audit [APP]`; check the log's integrity: `audit verify`."""
    if args[:1] == ("verify",):
        if len(args) > 1:
            raise click.UsageError("`audit verify` takes no arguments")
        _verify(cli, public_key, witness, output)
        return
    if len(args) > 1:
        raise click.UsageError("at most one Application name")
    app = args[0] if args else ""
    with domain_errors():
        records = list(
            filter_records(
                read_records(cli.client, cli.app_namespace),
                app=app,
                user=user,
                since=since_time(since) if since else "",
            )
        )
    if output == "json":
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo("No drift attempts recorded" + (f" for {app}" if app else "") + ".")
        return
    rows = []
    for r in records:
        if r.get("type") == "retention":
            retired = r.get("retired") or {}
            rows.append([str(r.get("time")), "-", "retention", f"records up to {retired.get('through')}", "-", "-"])
            continue
        obj = r.get("object") or {}
        kind = f"{obj.get('kind')}.{obj.get('group')}" if obj.get("group") else str(obj.get("kind"))
        where = f"{obj.get('namespace')}/" if obj.get("namespace") else ""
        op = str(r.get("operation")) + (f"/{r['subResource']}" if r.get("subResource") else "")
        fields = ", ".join(f"{f['path']} ({f['kind']})" for f in r.get("fields") or [])
        if r.get("fieldsOmitted"):
            fields += f" and {r['fieldsOmitted']} more"
        tally = r.get("tally") or {}
        when = str(r.get("time")) + (f" ({tally['count']}x to {tally.get('lastTime')})" if tally.get("count") else "")
        decision = str(r.get("decision")) + (" (late)" if tally.get("late") else "")
        rows.append(
            [
                when,
                str(r.get("user")),
                op,
                f"{kind} {where}{obj.get('name')}",
                decision,
                fields or "-",
            ]
        )
    print_table(["TIME", "USER", "OPERATION", "OBJECT", "DECISION", "FIELDS"], rows)


def _verify(cli: CliContext, public_key: Path | None, witness: str, output: str) -> None:
    with domain_errors():
        key = load_public_key(public_key.read_bytes()) if public_key else read_public_key(cli.client, cli.app_namespace)
        records = read_records(cli.client, cli.app_namespace)
        checkpoints = read_witness(witness) if witness else []
        if witness and not checkpoints:
            raise CommandError(f"the witness {witness} holds no audit checkpoints; check the path or repository")
        # The cluster-scoped high-water mark, always: no namespace role can lower it, so a tail deleted by one
        # shows without a witness outside the cluster.
        checkpoints += ClusterWitness(cli.client, cli.app_namespace).read()
    problems = verify(records, key, witness=checkpoints)
    if output == "json":
        summary = {"records": len(records), "witnessed": len(checkpoints), "problems": [str(p) for p in problems]}
        click.echo(json.dumps(summary, indent=2))
    else:
        for problem in problems:
            click.echo(problem)
        if not problems:
            against = f", and agrees with {len(checkpoints)} witnessed checkpoints" if checkpoints else ""
            click.echo(f"audit log verified: {len(records)} records, hash chain and signatures intact{against}")
    if problems:
        raise CommandError(f"audit log verification failed: {len(problems)} problem(s)")
