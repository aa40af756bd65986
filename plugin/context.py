"""The typed state every verb receives: which cluster, which namespace, which output format."""

from __future__ import annotations

from dataclasses import dataclass

import click

from engine.kube import KubeTarget


@dataclass
class CliContext:
    target: KubeTarget
    namespace: str | None


pass_cli = click.make_pass_decorator(CliContext)
