"""`kubectl gitops create | list | delete`: Applications themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.adapters.source import GitSource, redact_url, without_credentials
from engine.apps import application_resource, create_application, list_applications
from engine.core.application import ApplicationSpec, HelmOptions, parse_application, parse_directory, validate_name
from engine.core.errors import ApiError, GitOpsError
from engine.core.objects import API_GROUP, DRIFT_MODES, DriftMode, ObjectKey
from engine.core.repourl import HOST_PATH_HINT, is_host_path
from engine.core.timespec import duration
from engine.gitcredentials import with_credentials
from engine.registration import served_in_cluster

from .context import CliContext, CommandError, domain_errors, output_option, pass_cli
from .render import print_table


@click.command("create")
@click.argument("name")
@click.option("--repo", required=True, help="Git repository URL (any URL git understands, local paths included).")
@click.option("--revision", default="", help="Branch, tag or commit (default: the repository's default branch).")
@click.option("--path", default=".", show_default=True, help="Directory in the repository.")
@click.option("--dest-namespace", default="default", show_default=True, help="Namespace for namespaced objects.")
@click.option("--mode", type=click.Choice(DRIFT_MODES), default="enforce", show_default=True, help="Drift mode.")
@click.option("--prune", is_flag=True, help="Sync deletes tracked objects that Git no longer has.")
@click.option(
    "--secret", "secret_ref", default="", help="A Secret beside the Application with Git credentials (secretRef)."
)
@click.option("--auto-sync", is_flag=True, help="The reconciler syncs each new commit (syncPolicy.automated).")
@click.option("--self-heal", is_flag=True, help="The reconciler syncs drift back (syncPolicy.selfHeal).")
@click.option("--interval", default="3m", show_default=True, help="How often the reconciler fetches Git (30s, 5m).")
@click.option("--release-name", default="", help="Helm release name (default: the chart directory's name).")
@click.option("--values", "values_files", multiple=True, help="Helm values file in the chart (repeatable).")
@click.option("--no-recurse", is_flag=True, help="Read only the files directly in PATH (Argo CD's default).")
@click.option("--include", default="", help="Glob of files to read, relative to PATH ({a,b} for several).")
@click.option("--exclude", default="", help="Glob of files to skip, relative to PATH (wins over --include).")
@click.option("--jsonnet-lib", "jsonnet_libs", multiple=True, help="Jsonnet library folder, from the repo's root.")
@click.option("--jsonnet-tla", "tlas", multiple=True, metavar="NAME=VALUE", help="Jsonnet top-level argument.")
@click.option("--jsonnet-tla-code", "tla_codes", multiple=True, metavar="NAME=CODE", help="... as Jsonnet code.")
@click.option("--jsonnet-ext-var", "ext_vars", multiple=True, metavar="NAME=VALUE", help="Jsonnet external var.")
@click.option("--jsonnet-ext-code", "ext_codes", multiple=True, metavar="NAME=CODE", help="... as Jsonnet code.")
@click.option("--allow-empty", is_flag=True, help="A source that renders no object is fine (else an error).")
@output_option("name", "yaml", "json")
@pass_cli
def create(
    cli: CliContext,
    name: str,
    repo: str,
    revision: str,
    path: str,
    dest_namespace: str,
    mode: str,
    prune: bool,
    secret_ref: str,
    auto_sync: bool,
    self_heal: bool,
    interval: str,
    release_name: str,
    values_files: tuple[str, ...],
    no_recurse: bool,
    include: str,
    exclude: str,
    jsonnet_libs: tuple[str, ...],
    tlas: tuple[str, ...],
    tla_codes: tuple[str, ...],
    ext_vars: tuple[str, ...],
    ext_codes: tuple[str, ...],
    allow_empty: bool,
    output: str,
) -> None:
    """Create an Application that follows PATH of REPO at REVISION."""
    if "://" not in repo and Path(repo).exists():
        repo = str(Path(repo).resolve())  # a local path means the same from every working directory
    with domain_errors():
        validate_name(name)
        validate_name(dest_namespace, "destination namespace")
        spec = ApplicationSpec(
            ref=cli.app_ref(name),
            repo_url=repo,
            revision=revision,
            path=path,
            destination_namespace=dest_namespace,
            drift_mode=DriftMode(mode),
            helm=HelmOptions(release_name, values_files),
            directory=parse_directory(
                {
                    "recurse": not no_recurse,
                    "include": include,
                    "exclude": exclude,
                    "jsonnet": {
                        "libs": list(jsonnet_libs),
                        "tlas": _jsonnet_pairs(tlas, tla_codes, ("--jsonnet-tla", "--jsonnet-tla-code")),
                        "extVars": _jsonnet_pairs(ext_vars, ext_codes, ("--jsonnet-ext-var", "--jsonnet-ext-code")),
                    },
                }
            ),
            allow_empty=allow_empty,
            prune=prune,
            automated=auto_sync,
            self_heal=self_heal,
            interval=_seconds(interval),
            secret_ref=secret_ref,
        )
        # Fail now on a bad URL, revision or credentials, not at the first sync.
        with_credentials(GitSource(repo), cli.client, spec).resolve(revision or None)
        try:
            created = create_application(cli.client, spec)
        except ApiError as e:
            if e.status == 409:
                raise CommandError(f"Application {name!r} already exists in {spec.ref.namespace!r}") from e
            raise
    if is_host_path(repo) and served_in_cluster(cli.client):
        click.echo(
            f"warning: the webhook runs in the cluster and cannot read {repo}: {HOST_PATH_HINT}. "
            "Until then it fails closed on this Application's objects.",
            err=True,
        )
    if output == "name":
        click.echo(f"application.{API_GROUP}/{name} created")
    else:
        click.echo(json.dumps(created, indent=2) if output == "json" else _yaml(created))


def _seconds(text: str) -> float:
    try:
        seconds = duration(text).total_seconds()
    except GitOpsError as e:
        raise click.BadParameter(str(e), param_hint="--interval") from e
    if seconds < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--interval")
    return seconds


def _jsonnet_pairs(strings: tuple[str, ...], codes: tuple[str, ...], flags: tuple[str, str]) -> list[dict[str, Any]]:
    """NAME=VALUE flags as Argo CD's [{name, value, code}] list (code: the flag given as the second of `flags`)."""
    pairs = []
    for given, code in [(s, False) for s in strings] + [(c, True) for c in codes]:
        name, sep, value = given.partition("=")
        if not sep or not name:
            raise click.UsageError(f"{flags[code]} wants NAME=VALUE, not {given!r}")
        pairs.append({"name": name, "value": value, "code": code})
    return pairs


def _yaml(obj: object) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False).rstrip()


@click.command("list")
@output_option("text", "json")
@pass_cli
def list_(cli: CliContext, output: str) -> None:
    """List the Applications in the namespace (-n, default gitops-system)."""
    with domain_errors():
        apps = list_applications(cli.client, cli.app_namespace)
    if output == "json":
        entries = [{"metadata": a["metadata"], "spec": a.get("spec"), "status": a.get("status")} for a in apps]
        click.echo(json.dumps([_shown(entry) for entry in entries], indent=2))
        return
    rows = []
    for app in apps:
        try:
            spec = parse_application(app)
        except GitOpsError as e:
            rows.append([app["metadata"]["name"], f"invalid: {e}", "", "", "", "", "", ""])
            continue
        status = app.get("status") or {}
        sync = status.get("sync") or {}
        rows.append(
            [
                spec.ref.name,
                redact_url(spec.repo_url),
                spec.path,
                f"rolled back to {spec.rollback.revision[:12]}"
                if spec.rollback
                else spec.revision or "(default branch)",
                str(sync.get("status", "Unknown")),
                str((status.get("health") or {}).get("status", "")),
                spec.drift_mode,
                _automation(spec),
            ]
        )
    if not rows:
        click.echo(f"No Applications in namespace {cli.app_namespace}.")
        return
    print_table(["NAME", "REPO", "PATH", "REVISION", "SYNC", "HEALTH", "MODE", "AUTOMATION"], rows)


def _automation(spec: ApplicationSpec) -> str:
    if spec.suspend is not None:
        return f"suspended by {spec.suspend.user}" + (f": {spec.suspend.reason}" if spec.suspend.reason else "")
    if spec.rollback is not None:
        return "held by rollback"
    if spec.automated:
        return "auto-sync, self-heal" if spec.self_heal else "auto-sync"
    return "self-heal" if spec.self_heal else "manual"


def _shown(entry: dict[str, Any]) -> Any:
    """An Application as `list -o json` shows it: its repository URL's credentials taken out, also from copies of
    it (kubectl's last-applied annotation)."""
    url = str(((entry.get("spec") or {}).get("source") or {}).get("repoURL") or "")

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return without_credentials(value, url)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return scrub(entry) if url else entry


@click.command("delete")
@click.argument("name")
@pass_cli
def delete(cli: CliContext, name: str) -> None:
    """Delete an Application (the objects it manages stay; sync --prune first to remove them)."""
    with domain_errors():
        info = application_resource(cli.client)
        ref = cli.app_ref(name)
        if not cli.client.delete(info, ObjectKey(API_GROUP, "Application", ref.namespace, name)):
            raise CommandError(f"Application {name!r} not found in namespace {ref.namespace!r}")
    click.echo(f"application.{API_GROUP}/{name} deleted")
