"""The typed state every verb receives: which cluster, where Applications live, and the clients built from those."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.application import DEFAULT_NAMESPACE
from engine.core.errors import GitOpsError
from engine.core.objects import AppRef

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class CliContext:
    target: KubeTarget
    namespace: str | None
    _client: KubeClient | None = field(default=None, repr=False)
    # diff, status, sync --full: compare (or apply) every object, trusting no fingerprint of the last sync
    full: bool = False

    @property
    def app_namespace(self) -> str:
        return self.namespace or DEFAULT_NAMESPACE

    def app_ref(self, name: str) -> AppRef:
        return AppRef(self.app_namespace, name)

    @property
    def client(self) -> KubeClient:
        if self._client is None:
            self._client = KubeClient(self.target)
        return self._client


pass_cli = click.make_pass_decorator(CliContext)


class CommandError(click.ClickException):
    """An error at the CLI edge; `exit_code` follows the verb's convention (diff: 2, others: 1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


@contextmanager
def domain_errors(exit_code: int = 1) -> Iterator[None]:
    """Turns the engine's errors into a clean message and exit code (no traceback)."""
    try:
        yield
    except GitOpsError as e:
        raise CommandError(str(e), exit_code) from e


def reports_errors(exit_code: int = 1) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with domain_errors(exit_code):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def output_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )
