"""Sources as users bring them, against the real API server: Jsonnet, empty sources, Helm dependencies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..conftest import Gitops, GitRepo, Kubectl
from . import test_sync_through_webhook as through_webhook
from .test_webhook import WebhookProcess, denied

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]

# The webhook registered in enforce mode (alice exempt), for the last test: the other front door.
webhook = through_webhook.webhook
judged = through_webhook.judged


@pytest.fixture(autouse=True)
def application_deleted(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """Each test's Application is deleted after it: those whose sources fail on purpose would otherwise be rendered
    again by every webhook that later tests start (a Helm dependency build that cannot reach its repository each
    time)."""
    yield
    kubectl.run("-n", "gitops-system", "delete", "application", namespace, "--ignore-not-found", check=False)


JSONNET_APP = ["--path", "guestbook", "--jsonnet-lib", "vendor", "--jsonnet-ext-var", "environment=staging"]


def diff_json(gitops: Gitops, app: str, expect: int) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(gitops.run("diff", app, "-o", "json", expect=expect).stdout)
    return out


def deployment(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl.run("-n", namespace, "get", "deployment", name, "-o", "json").stdout)
    return out


def test_a_jsonnet_application_diffs_and_syncs(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    repo = git_repo("examples/jsonnet-guestbook")
    gitops.run(
        "create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, *JSONNET_APP,
        "--jsonnet-tla-code", "replicas=2",
    )  # fmt: skip
    before = diff_json(gitops, namespace, 1)
    assert {(o["kind"], o["name"], o["state"]) for o in before["objects"]} == {
        ("Service", "guestbook-ui", "missing"),
        ("Deployment", "guestbook-ui", "missing"),
    }
    gitops.run("sync", namespace, user="gitops")
    live = deployment(kubectl, namespace, "guestbook-ui")
    assert live["spec"]["replicas"] == 2  # the TLA, as code
    assert live["metadata"]["annotations"]["guestbook.example/environment"] == "staging"  # the external variable
    assert diff_json(gitops, namespace, 0)["objects"]

    # A change in a library file is a change of the rendered objects.
    params = repo.path / "guestbook" / "params.libsonnet"
    params.write_text(params.read_text().replace("guestbook-ui:0.2", "guestbook-ui:0.3"))
    repo.commit("guestbook-ui 0.3")
    changed = diff_json(gitops, namespace, 1)
    [entry] = [o for o in changed["objects"] if o["state"] != "synced"]
    assert (entry["kind"], entry["name"]) == ("Deployment", "guestbook-ui")
    assert [d["path"] for d in entry["drift"]] == ["/spec/template/spec/containers/0/image"]
    gitops.run("sync", namespace, user="gitops")
    image = deployment(kubectl, namespace, "guestbook-ui")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/guestbook-ui:0.3"


def test_the_crd_keeps_the_directory_fields(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    """An Application written by hand, Argo CD's way: the CRD's schema keeps every field (a structural schema drops
    the fields it does not list), and a string TLA with Argo CD's build variable reaches the program."""
    repo = git_repo("examples/jsonnet-guestbook")
    (repo.path / "guestbook" / "guestbook-ui.jsonnet").write_text(
        "local kube = import 'kube.libsonnet';\nfunction(name) [kube.deployment(name, 'registry.example/x:1', 1, 80)]\n"
    )
    repo.commit("named by a TLA")
    application = {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": namespace, "namespace": "gitops-system"},
        "spec": {
            "source": {
                "repoURL": str(repo.path),
                "path": "guestbook",
                "directory": {
                    "recurse": False,
                    "include": "*.jsonnet",
                    "jsonnet": {
                        "libs": ["vendor"],
                        "tlas": [{"name": "name", "value": "$ARGOCD_APP_NAMESPACE-ui"}],
                        "extVars": [{"name": "unused", "value": "1", "code": True}],
                    },
                },
                "allowEmpty": False,
            },
            "destination": {"namespace": namespace},
        },
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(application))
    stored = json.loads(kubectl.run("-n", "gitops-system", "get", "application", namespace, "-o", "json").stdout)
    assert stored["spec"]["source"]["directory"] == application["spec"]["source"]["directory"]  # type: ignore[index]
    gitops.run("sync", namespace, user="gitops")
    assert deployment(kubectl, namespace, f"{namespace}-ui")["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("program", "refusal"),
    [
        ("importstr '/etc/passwd'", "import of '/etc/passwd' refused"),
        ("importstr '../../../../../../etc/passwd'", "import of '../../../../../../etc/passwd' refused"),
        ("import '../vendor/../../outside.libsonnet'", "refused: it leads outside the repository"),
    ],
)
def test_jsonnet_cannot_read_outside_the_repository(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, program: str, refusal: str
) -> None:
    repo = git_repo("examples/jsonnet-guestbook")
    (repo.path.parent / "outside.libsonnet").write_text("{apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: 'x'}}")
    repo.write(
        "guestbook/leak.jsonnet",
        f"{{apiVersion: 'v1', kind: 'ConfigMap', metadata: {{name: 'leak'}}, data: {{passwd: {program}}}}}\n",
    )
    repo.commit("try to read the host")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, *JSONNET_APP)
    for verb, code in (("sync", 1), ("diff", 2)):
        failed = gitops.run(verb, namespace, expect=code)
        assert "jsonnet evaluation of guestbook/leak.jsonnet" in failed.stderr
        assert refusal in failed.stderr
        assert "root:x:0" not in failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr
    assert "NotFound" in kubectl.run("-n", namespace, "get", "deployment", "guestbook-ui", check=False).stderr


def test_a_jsonnet_error_names_the_file_and_line(gitops: Gitops, git_repo: MakeRepo, namespace: str) -> None:
    repo = git_repo("examples/jsonnet-guestbook")
    repo.write("guestbook/broken.jsonnet", "local a = 1;\n{ b: a + }\n")
    repo.commit("broken")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, *JSONNET_APP)
    failed = gitops.run("diff", namespace, expect=2)
    assert "guestbook/broken.jsonnet:2:" in failed.stderr


def test_a_source_that_renders_nothing_is_an_error_unless_allowed(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    repo = git_repo("examples/jsonnet-guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, *JSONNET_APP)
    gitops.run("sync", namespace, user="gitops")
    # The program now yields nothing (a refactoring gone wrong): a sync must not take that as "delete everything".
    (repo.path / "guestbook" / "guestbook-ui.jsonnet").write_text("function(replicas=1, image='') []\n")
    repo.commit("oops")
    for args, code in ((["sync", "--prune"], 1), (["diff"], 2)):
        failed = gitops.run(*args, namespace, expect=code)
        assert "the source renders no object" in failed.stderr
        assert "spec.source.allowEmpty: true" in failed.stderr
    assert deployment(kubectl, namespace, "guestbook-ui")  # nothing was pruned

    gitops.run("delete", namespace)
    gitops.run(
        "create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, *JSONNET_APP, "--allow-empty"
    )
    gitops.run("sync", namespace, user="gitops")
    stored = json.loads(kubectl.run("-n", "gitops-system", "get", "application", namespace, "-o", "json").stdout)
    assert stored["spec"]["source"]["allowEmpty"] is True


def test_a_folder_of_libraries_only_is_an_empty_source(gitops: Gitops, git_repo: MakeRepo, namespace: str) -> None:
    repo = git_repo("examples/jsonnet-guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--path", "vendor", "--dest-namespace", namespace)
    failed = gitops.run("sync", namespace, expect=1)
    assert "vendor@" in failed.stderr
    assert "no .yaml, .yml, .json or .jsonnet file in the folder or below it declares an object" in failed.stderr


def test_helm_dependencies_missing_offline_are_a_clear_error(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    repo = git_repo("examples/guestbook-helm")
    chart = repo.path / "Chart.yaml"
    chart.write_text(
        chart.read_text()
        + "dependencies:\n  - name: redis\n    version: 18.0.0\n    repository: https://charts.example.invalid/stable\n"
    )
    repo.commit("depend on a chart repository this machine cannot reach")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    for verb, code in (("sync", 1), ("diff", 2)):
        failed = gitops.run(verb, namespace, expect=code)
        assert "the chart's dependencies redis are not vendored in charts/" in failed.stderr
        assert "`helm dependency build` could not fetch them" in failed.stderr
        assert "charts.example.invalid" in failed.stderr  # helm's own reason
        assert "Traceback" not in failed.stderr
    assert kubectl.run("-n", namespace, "get", "deployments", "-o", "name").stdout == ""


def test_the_webhook_renders_jsonnet_as_the_cli_does(
    gitops: Gitops,
    kubectl: Kubectl,
    git_repo: MakeRepo,
    namespace: str,
    webhook: WebhookProcess,
    judged: Callable[..., None],
) -> None:
    """The other front door: the webhook loads the Jsonnet Application with the same libraries, TLAs and external
    variables, so the sync passes it and a hand edit of a rendered field is denied with Git's value."""
    repo = git_repo("examples/jsonnet-guestbook")
    gitops.run(
        "create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, *JSONNET_APP,
        "--jsonnet-tla-code", "replicas=2",
    )  # fmt: skip
    webhook.wait_loaded(namespace)  # its objects rendered from Jsonnet by the webhook, before any is created
    gitops.run("sync", namespace, user="gitops")
    judged("deployments", "services")
    scale = kubectl.run("-n", namespace, "scale", "deployment/guestbook-ui", "--replicas=5", check=False)
    assert denied(scale), scale.stderr
    annotate = kubectl.run(
        "-n", namespace, "annotate", "deployment/guestbook-ui", "guestbook.example/environment=prod", "--overwrite",
        check=False,
    )  # fmt: skip
    assert denied(annotate), annotate.stderr
    assert deployment(kubectl, namespace, "guestbook-ui")["spec"]["replicas"] == 2
