"""The `kubectl gitops` command group: common flags, and every verb registered in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import click

from engine.adapters.kube import KubeTarget

from .applications import create, delete, list_
from .audit import audit
from .automation import reconcile, resume_, suspend_
from .context import CliContext
from .diff import diff
from .history import changes, history, rollback_
from .install import install
from .status import status
from .sync import sync
from .version import version


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")
@click.option("--context", "kube_context", help="The kubeconfig context to use (as kubectl).")
@click.option("-n", "--namespace", help="Namespace where Applications live (default: gitops-system).")
@click.pass_context
def cli(ctx: click.Context, kubeconfig: str | None, kube_context: str | None, namespace: str | None) -> None:
    """Git as the source of truth for this cluster: diff, sync, history and drift audit."""
    ctx.obj = CliContext(target=KubeTarget(kubeconfig=kubeconfig or None, context=kube_context), namespace=namespace)


def _override(attribute: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    """A verb's own --kubeconfig/--context/-n (kubectl takes them after the verb too) wins over the group's."""

    def callback(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        state = ctx.find_object(CliContext)
        if value is None or state is None:
            return
        if attribute == "namespace":
            state.namespace = value
        elif attribute == "kubeconfig":
            state.target = replace(state.target, kubeconfig=value)
        else:
            state.target = replace(state.target, context=value)

    return callback


COMMON_OPTIONS = (
    (("--kubeconfig",), "kubeconfig", "Path to the kubeconfig file."),
    (("--context",), "context", "The kubeconfig context to use."),
    (("-n", "--namespace"), "namespace", "Namespace where Applications live (default: gitops-system)."),
)

for command in (
    install,
    create,
    list_,
    delete,
    diff,
    sync,
    status,
    history,
    changes,
    rollback_,
    reconcile,
    suspend_,
    resume_,
    audit,
    version,
):
    for names, attribute, text in COMMON_OPTIONS:
        command.params.append(click.Option(list(names), expose_value=False, callback=_override(attribute), help=text))
    cli.add_command(command)


def main() -> None:
    cli(prog_name="kubectl gitops")
