"""How objects, diffs and tables look in a terminal, a pipe, or an external diff program."""

from __future__ import annotations

import difflib
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from engine.core.drift import DriftKind, ObjectDiff
from engine.core.objects import KubeObject, ObjectKey
from engine.core.text import shown

if TYPE_CHECKING:
    from rich.console import Console


def to_yaml(obj: KubeObject | None) -> str:
    if obj is None:
        return ""
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True)


def file_name(key: ObjectKey) -> str:
    """As kubectl names them for KUBECTL_EXTERNAL_DIFF: group.kind.namespace.name (empty parts dropped)."""
    return ".".join(p for p in (key.group or "v1", key.kind, key.namespace, key.name) if p)


def _describe(value: Any) -> str:
    return shown(value, 80, separators=(", ", ": "))


def summary_lines(diff: ObjectDiff) -> list[str]:
    lines = []
    for item in diff.items:
        if item.kind is DriftKind.ADDED:
            lines.append(f"#   added   {item.path} (by {item.manager}): {_describe(item.live)}")
        else:
            lines.append(f"#   changed {item.path}: git {_describe(item.desired)}, live {_describe(item.live)}")
    return lines


def unified(diff: ObjectDiff) -> list[str]:
    name = file_name(diff.key)
    return list(
        difflib.unified_diff(
            to_yaml(diff.live).splitlines(),
            to_yaml(diff.target).splitlines(),
            fromfile=f"live/{name}",
            tofile=f"git/{name}",
            lineterm="",
        )
    )


def _colour(line: str) -> str:
    if line.startswith(("+++", "---")):
        return click.style(line, bold=True)
    if line.startswith("+"):
        return click.style(line, fg="green")
    if line.startswith("-"):
        return click.style(line, fg="red")
    if line.startswith("@@"):
        return click.style(line, fg="cyan")
    if line.startswith("#"):
        return click.style(line, fg="yellow")
    return line


def print_text_diff(diffs: Sequence[ObjectDiff]) -> None:
    """Per drifted object: a header, its drifted paths, and a unified YAML diff; coloured only on a terminal."""
    for diff in diffs:
        if not diff.drifted:
            continue
        click.echo(click.style(f"=== {diff.key} ({diff.state.value})", bold=True))
        for line in summary_lines(diff) + unified(diff):
            click.echo(_colour(line))


def run_external_diff(command: str, diffs: Sequence[ObjectDiff]) -> int:
    """Like kubectl: write LIVE and MERGED directories and run `$KUBECTL_EXTERNAL_DIFF LIVE MERGED`."""
    with tempfile.TemporaryDirectory(prefix="gitops-diff-") as tmp:
        live_dir, merged_dir = Path(tmp) / "LIVE", Path(tmp) / "MERGED"
        live_dir.mkdir()
        merged_dir.mkdir()
        for diff in diffs:
            if not diff.drifted:
                continue
            (live_dir / file_name(diff.key)).write_text(to_yaml(diff.live))
            (merged_dir / file_name(diff.key)).write_text(to_yaml(diff.target))
        argv = [*shlex.split(command), str(live_dir), str(merged_dir)]
        try:
            return subprocess.run(argv, check=False).returncode
        except OSError as e:
            raise click.ClickException(f"cannot run KUBECTL_EXTERNAL_DIFF ({command!r}): {e}") from e


def console(stderr: bool = False) -> Console:
    from rich.console import Console  # imported when a console is made: a sync or diff with nothing to show needs none

    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A kubectl-style table: left-aligned columns, three spaces apart, header in capitals."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "   ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    click.echo("\n".join([line(columns), *(line(r) for r in rows)]))


def external_diff_command() -> str | None:
    return os.environ.get("KUBECTL_EXTERNAL_DIFF") or None
