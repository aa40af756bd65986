"""The `kubectl gitops` command group: common flags, and every verb registered in one place."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace

import click

from engine.adapters.kube import KubeTarget

from .context import CliContext

# Each verb's module is imported when the verb runs, not before: a diff does not pay for the imports of audit
# (cryptography) or history. Measured: `import plugin.cli` with every verb took 0.41 s, a diff's own imports about
# half of that, out of a diff of 500 unchanged objects that takes under 1 s in all.
VERBS = {
    "install": "install:install",
    "create": "applications:create",
    "list": "applications:list_",
    "delete": "applications:delete",
    "diff": "diff:diff",
    "sync": "sync:sync",
    "status": "status:status",
    "history": "history:history",
    "changes": "history:changes",
    "rollback": "history:rollback_",
    "reconcile": "automation:reconcile",
    "suspend": "automation:suspend_",
    "resume": "automation:resume_",
    "audit": "audit:audit",
    "version": "version:version",
}
FULL_VERBS = ("diff", "status", "sync")  # those that trust fingerprints, unless --full


class LazyGroup(click.Group):
    """A group whose verbs are imported on first use, with the common flags added then."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*VERBS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in VERBS:
            return None
        module, _, attribute = VERBS[cmd_name].partition(":")
        command: click.Command = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
        if cmd_name in FULL_VERBS:
            command.params.append(
                click.Option(
                    ["--full"],
                    is_flag=True,
                    envvar="KUBECTL_GITOPS_FULL",
                    expose_value=False,
                    callback=_full,
                    help=FULL_HELP,
                )
            )
        for names, attribute_name, text in COMMON_OPTIONS:
            command.params.append(
                click.Option(list(names), expose_value=False, callback=_override(attribute_name), help=text)
            )
        self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def _full(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    state = ctx.find_object(CliContext)
    if state is not None and value:
        state.full = True


FULL_HELP = (
    "Dry-run (sync: apply) every object, also those whose fingerprint shows them as the last sync left them "
    "[env KUBECTL_GITOPS_FULL=1]."
)


def main() -> None:
    cli(prog_name="kubectl gitops")
