"""Sources as users bring them: spec.source.directory and allowEmpty, Jsonnet, include/exclude, Helm dependencies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from localcluster.build import bin_dir

from engine.adapters.render import expand_build_env, render_files, render_helm, selected
from engine.adapters.source import GitSource
from engine.compare import load_desired
from engine.core.application import (
    ApplicationSpec,
    DirectoryOptions,
    HelmOptions,
    InvalidApplication,
    JsonnetVar,
    application_manifest,
    parse_application,
)
from engine.core.errors import ManifestError, RenderError
from engine.core.objects import AppRef, Claim, ObjectKey
from engine.gitstate import DesiredState
from plugin.cli import cli

from ..fakes import FakeCluster, namespace
from .test_compare_sync import RESOURCES
from .test_render_source import Repo, cm

pytestmark = pytest.mark.usefixtures("collect_git_processes")  # see tests/conftest.py

# --- the Application's fields -------------------------------------------------------------------------------------


def app_with(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "guestbook", "namespace": "gitops-system"},
        "spec": {"source": {"repoURL": "https://git.example/shop.git", **source}},
    }


def test_no_directory_fields_are_the_defaults() -> None:
    spec = parse_application(app_with({}))
    assert spec.directory == DirectoryOptions()
    assert spec.directory.recurse
    assert not spec.allow_empty


def test_directory_fields_are_read_as_argo_cd_spells_them() -> None:
    spec = parse_application(
        app_with(
            {
                "allowEmpty": True,
                "directory": {
                    "recurse": False,
                    "include": "{web,db}/*",
                    "exclude": "*-test.yaml",
                    "jsonnet": {
                        "libs": ["vendor", "lib/k8s"],
                        "tlas": [{"name": "replicas", "value": "3", "code": True}, {"name": "env", "value": "prod"}],
                        "extVars": [{"name": "app", "value": "$ARGOCD_APP_NAME"}],
                    },
                },
            }
        )
    )
    assert spec.allow_empty
    assert spec.directory == DirectoryOptions(
        recurse=False,
        include="{web,db}/*",
        exclude="*-test.yaml",
        jsonnet_libs=("vendor", "lib/k8s"),
        tlas=(JsonnetVar("replicas", "3", True), JsonnetVar("env", "prod")),
        ext_vars=(JsonnetVar("app", "$ARGOCD_APP_NAME"),),
    )


@pytest.mark.parametrize(
    "spec",
    [
        ApplicationSpec(ref=AppRef("gitops-system", "a"), repo_url="/srv/git/a"),
        ApplicationSpec(
            ref=AppRef("gitops-system", "a"),
            repo_url="/srv/git/a",
            allow_empty=True,
            directory=DirectoryOptions(
                recurse=False,
                include="*.jsonnet",
                exclude="test/*",
                jsonnet_libs=("vendor",),
                tlas=(JsonnetVar("n", "1", True),),
                ext_vars=(JsonnetVar("e", "x"),),
            ),
        ),
    ],
)
def test_the_manifest_parses_back_to_the_same_spec(spec: ApplicationSpec) -> None:
    assert parse_application(application_manifest(spec)) == spec


def test_default_directory_options_write_no_directory_field() -> None:
    manifest = application_manifest(ApplicationSpec(ref=AppRef("gitops-system", "a"), repo_url="/srv/git/a"))
    assert "directory" not in manifest["spec"]["source"]
    assert "allowEmpty" not in manifest["spec"]["source"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"allowEmpty": "yes"}, "spec.source.allowEmpty must be true or false"),
        ({"directory": []}, "spec.source.directory must be an object"),
        ({"directory": {"recurse": "true"}}, "spec.source.directory.recurse must be true or false"),
        ({"directory": {"include": 3}}, "spec.source.directory.include must be a string"),
        ({"directory": {"jsonnet": {"libs": "vendor"}}}, "spec.source.directory.jsonnet.libs must be a list"),
        ({"directory": {"jsonnet": {"libs": ["/usr/share/jsonnet"]}}}, "jsonnet.libs[0] '/usr/share/jsonnet' must"),
        ({"directory": {"jsonnet": {"libs": ["vendor", "../other"]}}}, "jsonnet.libs[1] '../other' must be a path"),
        ({"directory": {"jsonnet": {"tlas": {"a": 1}}}}, "spec.source.directory.jsonnet.tlas must be a list"),
        ({"directory": {"jsonnet": {"tlas": [{"value": "1"}]}}}, "jsonnet.tlas[0].name is required"),
        ({"directory": {"jsonnet": {"tlas": [{"name": "n", "value": 3}]}}}, "jsonnet.tlas[0].value must be a string"),
        ({"directory": {"jsonnet": {"extVars": [{"name": "e", "code": 1}]}}}, "extVars[0].code must be true or false"),
        (
            {"directory": {"jsonnet": {"extVars": [{"name": "e"}, {"name": "e"}]}}},
            "extVars[1].name 'e' is given twice",
        ),
    ],
)
def test_bad_directory_fields_name_the_field(source: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidApplication, match="Application gitops-system/guestbook: ") as info:
        parse_application(app_with(source))
    assert message in str(info.value)


# --- include / exclude and the build environment -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("include", "exclude", "path", "expected"),
    [
        ("", "", "a/b.yaml", True),
        ("*.yaml", "", "deploy.yaml", True),
        ("*.yaml", "", "deploy.json", False),
        ("*.yaml", "", "sub/deploy.yaml", True),  # `*` crosses folders, as Argo CD's globs do
        ("{web,db}/*", "", "db/cm.yaml", True),
        ("{web,db}/*", "", "cache/cm.yaml", False),
        ("", "test/*", "test/x.yaml", False),
        ("", "{*-test.yaml,tmp/*}", "tmp/a.yaml", False),
        ("", "{*-test.yaml,tmp/*}", "app-test.yaml", False),
        ("", "{*-test.yaml,tmp/*}", "app.yaml", True),
        ("*.yaml", "secret.yaml", "secret.yaml", False),  # exclude wins
    ],
)
def test_include_and_exclude(include: str, exclude: str, path: str, expected: bool) -> None:
    assert selected(path, DirectoryOptions(include=include, exclude=exclude)) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$ARGOCD_APP_NAME", "guestbook"),
        ("${ARGOCD_APP_NAMESPACE}-x", "shop-x"),
        ("ns=$ARGOCD_APP_NAMESPACE,app=${ARGOCD_APP_NAME}", "ns=shop,app=guestbook"),
        ("$ARGOCD_APP_UNKNOWN", "$ARGOCD_APP_UNKNOWN"),
        ("$HOME and $PATH", "$HOME and $PATH"),  # only Argo CD's variables: nothing from this process
        ("plain", "plain"),
    ],
)
def test_build_environment(value: str, expected: str) -> None:
    assert expand_build_env(value, {"ARGOCD_APP_NAME": "guestbook", "ARGOCD_APP_NAMESPACE": "shop"}) == expected


# --- Jsonnet ----------------------------------------------------------------------------------------------------

CM = "{apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: %s}}"


def jsonnet(
    files: dict[str, str], options: DirectoryOptions | None = None, base: str = "app", env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Renders the files below `base` of an in-memory repository (path from its root -> text)."""
    prefix = base + "/"
    below = [(p.removeprefix(prefix), t.encode()) for p, t in sorted(files.items()) if p.startswith(prefix)]

    def read(path: str) -> bytes | None:
        return files[path].encode() if path in files else None

    return [m.obj for m in render_files(below, "app@abc", options=options, base=base, read=read, env=env)]


def names(objects: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objects]


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        (CM % "'one'", ["one"]),
        ("[" + CM % "'a'" + "," + CM % "'b'" + "]", ["a", "b"]),
        ("{apiVersion: 'v1', kind: 'List', items: [" + CM % "'x'" + "," + CM % "'y'" + "]}", ["x", "y"]),
        ("[]", []),
        ("null", []),
        ("[null, " + CM % "'c'" + "]", ["c"]),
    ],
)
def test_jsonnet_output_is_an_object_a_list_or_a_list_kind(program: str, expected: list[str]) -> None:
    assert names(jsonnet({"app/main.jsonnet": program})) == expected


def test_jsonnet_and_yaml_files_render_together_in_path_order() -> None:
    files = {"app/b.jsonnet": CM % "'b'", "app/a.yaml": cm("a"), "app/c.yaml": cm("c"), "app/lib.libsonnet": "{}"}
    assert names(jsonnet(files)) == ["a", "b", "c"]


def test_a_jsonnet_output_that_is_no_object_names_the_file() -> None:
    with pytest.raises(ManifestError, match=r"main\.jsonnet.*expected a Kubernetes object"):
        jsonnet({"app/main.jsonnet": "[1]"})


def test_imports_relative_to_the_file_and_from_library_folders() -> None:
    files = {
        "app/main.jsonnet": "local k = import 'k.libsonnet'; local h = import 'helpers.libsonnet'; k.cm(h.name)",
        "app/helpers.libsonnet": "{name: 'from-helpers'}",
        "vendor/k.libsonnet": "{cm(name):: " + CM % "name" + "}",
    }
    assert names(jsonnet(files, DirectoryOptions(jsonnet_libs=("vendor",)))) == ["from-helpers"]
    with pytest.raises(RenderError, match=r"cannot import 'k\.libsonnet'.*app/k\.libsonnet"):
        jsonnet(files)


def test_the_last_library_folder_wins_as_in_go_jsonnet() -> None:
    files = {
        "app/main.jsonnet": "import 'which.libsonnet'",
        "one/which.libsonnet": CM % "'one'",
        "two/which.libsonnet": CM % "'two'",
    }
    assert names(jsonnet(files, DirectoryOptions(jsonnet_libs=("one", "two")))) == ["two"]


def test_top_level_arguments_and_external_variables() -> None:
    program = (
        "function(replicas, env='dev') {apiVersion: 'v1', kind: 'ConfigMap', "
        "metadata: {name: std.extVar('app') + '-' + env}, "
        "data: {r: std.toString(replicas * 2), c: std.toString(std.extVar('c'))}}"
    )
    options = DirectoryOptions(
        tlas=(JsonnetVar("replicas", "3", code=True), JsonnetVar("env", "prod")),
        ext_vars=(JsonnetVar("app", "$ARGOCD_APP_NAME"), JsonnetVar("c", "{a: 1}.a + 1", code=True)),
    )
    [obj] = jsonnet({"app/main.jsonnet": program}, options, env={"ARGOCD_APP_NAME": "guestbook"})
    assert obj["metadata"]["name"] == "guestbook-prod"
    assert obj["data"] == {"r": "6", "c": "2"}


@pytest.mark.parametrize(
    ("program", "refusal"),
    [
        ("import '/etc/passwd'", "import of '/etc/passwd' refused: an absolute path"),
        ("importstr '/etc/passwd'", "import of '/etc/passwd' refused: an absolute path"),
        ("importbin '/etc/hostname'", "import of '/etc/hostname' refused: an absolute path"),
        ("importstr '../../etc/passwd'", "import of '../../etc/passwd' refused: it leads outside the repository"),
        ("importstr '../../../../../../../../etc/passwd'", "refused: it leads outside the repository"),
        ("import 'sub/../../../x.libsonnet'", "refused: it leads outside the repository"),
        ("import 'escape.libsonnet'", "import of '../../../etc/passwd' refused"),  # from an imported file, too
    ],
)
def test_jsonnet_cannot_read_outside_the_repository(program: str, refusal: str) -> None:
    files = {"app/main.jsonnet": program, "app/escape.libsonnet": "importstr '../../../etc/passwd'"}
    with pytest.raises(RenderError, match=r"jsonnet evaluation of app/main\.jsonnet \(app@abc\) failed") as info:
        jsonnet(files)
    assert refusal in str(info.value)
    assert "root:" not in str(info.value)


def test_a_library_folder_is_no_way_out_either() -> None:
    files = {"app/main.jsonnet": "importstr '../../etc/passwd'"}
    with pytest.raises(RenderError, match="refused"):
        jsonnet(files, DirectoryOptions(jsonnet_libs=("vendor/deep",)))


@pytest.mark.parametrize(
    ("program", "where"),
    [
        ("{a: 1 +}", r"app/main\.jsonnet:1:8-9 Unexpected"),  # a syntax error
        ("local x = 1;\n{a: error 'boom'}", r"RUNTIME ERROR: boom\s+app/main\.jsonnet:2:5"),
        ("{a: std.extVar('missing')}", r"Undefined external variable: missing\s+app/main\.jsonnet:1:5"),
    ],
)
def test_jsonnet_errors_name_the_file_and_line(program: str, where: str) -> None:
    with pytest.raises(RenderError, match=where):
        jsonnet({"app/main.jsonnet": program})


# --- from a real repository: recurse, include, empty ----------------------------------------------------------------

SHOP = AppRef("gitops-system", "shop")


def fake_cluster() -> FakeCluster:
    return FakeCluster(RESOURCES, objects=[namespace("shop")])


def spec(repo: Repo, path: str, **fields: Any) -> ApplicationSpec:
    return ApplicationSpec(ref=SHOP, repo_url=str(repo.path), path=path, destination_namespace="shop", **fields)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo.create(tmp_path / "origin")
    r.write("guestbook/guestbook-ui.jsonnet", "function(name='guestbook-ui') " + CM % "name")
    r.write("guestbook/sub/extra.yaml", cm("extra"))
    r.write("guestbook/sub/more.jsonnet", CM % "'more'")
    r.write("only-libs/params.libsonnet", "{}")
    r.write("only-libs/README.md", "# nothing to render\n")
    r.write("lib/secret.libsonnet", "{}")
    r.commit("jsonnet guestbook")
    return r


def desired_names(repo: Repo, tmp_path: Path, app: ApplicationSpec) -> list[str]:
    desired = load_desired(app, fake_cluster(), source=GitSource(str(repo.path), cache_dir=tmp_path / "cache"))
    return [d.key.name for d in desired.objects]


def test_a_jsonnet_directory_from_git(repo: Repo, tmp_path: Path) -> None:
    assert desired_names(repo, tmp_path, spec(repo, "guestbook")) == ["guestbook-ui", "extra", "more"]
    tla = DirectoryOptions(recurse=False, tlas=(JsonnetVar("name", "$ARGOCD_APP_NAME-ui"),))
    assert desired_names(repo, tmp_path, spec(repo, "guestbook", directory=tla)) == ["shop-ui"]
    only_yaml = DirectoryOptions(include="*.yaml")
    assert desired_names(repo, tmp_path, spec(repo, "guestbook", directory=only_yaml)) == ["extra"]


def test_a_source_that_renders_nothing_is_an_error(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"only-libs@\w{12}: the source renders no object \(no \.yaml") as info:
        desired_names(repo, tmp_path, spec(repo, "only-libs"))
    assert "spec.source.allowEmpty: true" in str(info.value)
    excluded = DirectoryOptions(exclude="*")
    with pytest.raises(ManifestError, match="matching include/exclude"):
        desired_names(repo, tmp_path, spec(repo, "guestbook", directory=excluded))


def test_allow_empty_accepts_an_empty_source(repo: Repo, tmp_path: Path) -> None:
    assert desired_names(repo, tmp_path, spec(repo, "only-libs", allow_empty=True)) == []


def test_a_repository_symlink_out_of_the_tree_reads_as_no_file(repo: Repo, tmp_path: Path) -> None:
    (repo.path / "guestbook" / "passwd.libsonnet").symlink_to("/etc/passwd")
    repo.write(
        "guestbook/leak.jsonnet",
        "{apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: importstr 'passwd.libsonnet'}}",
    )
    repo.commit("a link out")
    with pytest.raises(RenderError, match=r"cannot import 'passwd\.libsonnet'"):
        desired_names(repo, tmp_path, spec(repo, "guestbook", directory=DirectoryOptions(recurse=False)))


# --- Helm dependencies ----------------------------------------------------------------------------------------------

CHART = "apiVersion: v2\nname: web\nversion: 0.1.0\n"
TEMPLATE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Chart.Name }}-{{ .Release.Name }}\n"


def chart(root: Path, dependencies: str = "") -> Path:
    directory = root / "web"
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text(CHART + dependencies)
    (directory / "templates" / "cm.yaml").write_text(TEMPLATE)
    return directory


# The helm that hack/setup builds (hack/local-cluster build) when none is on PATH: these tests run in CI.
CACHED_HELM = bin_dir() / "helm"
needs_helm = pytest.mark.skipif(
    not (shutil.which("helm") or os.environ.get("HELM") or CACHED_HELM.exists()),
    reason="no helm: hack/setup builds one",
)


@pytest.fixture(autouse=True)
def helm_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("helm") and not os.environ.get("HELM") and CACHED_HELM.exists():
        monkeypatch.setenv("HELM", str(CACHED_HELM))


@needs_helm
def test_missing_dependencies_from_an_unreachable_repository_are_a_clear_error(tmp_path: Path) -> None:
    deps = "dependencies:\n  - name: redis\n    version: 1.2.3\n    repository: http://127.0.0.1:9/charts\n"
    directory = chart(tmp_path, deps)
    with pytest.raises(RenderError) as info:
        render_helm(directory, "web@abc", "shop", HelmOptions(), root=tmp_path)
    message = str(info.value)
    assert message.startswith("web@abc: the chart's dependencies redis are not vendored in charts/")
    assert "`helm dependency build` could not fetch them" in message
    assert "127.0.0.1:9" in message  # helm's own reason is kept
    assert "commit charts/" in message


@needs_helm
def test_a_vendored_dependency_needs_no_build(tmp_path: Path) -> None:
    deps = "dependencies:\n  - name: redis\n    version: 1.2.3\n    repository: http://127.0.0.1:9/charts\n"
    directory = chart(tmp_path, deps)
    vendored = directory / "charts" / "redis"
    (vendored / "templates").mkdir(parents=True)
    (vendored / "Chart.yaml").write_text("apiVersion: v2\nname: redis\nversion: 1.2.3\n")
    (vendored / "templates" / "cm.yaml").write_text(TEMPLATE)
    found = render_helm(directory, "web@abc", "shop", HelmOptions(release_name="r"), root=tmp_path)
    assert sorted(m.obj["metadata"]["name"] for m in found) == ["redis-r", "web-r"]


@needs_helm
def test_a_dependency_elsewhere_in_the_repository_is_built(tmp_path: Path) -> None:
    common = tmp_path / "common"
    (common / "templates").mkdir(parents=True)
    (common / "Chart.yaml").write_text("apiVersion: v2\nname: common\nversion: 0.2.0\n")
    (common / "templates" / "cm.yaml").write_text(TEMPLATE)
    directory = chart(
        tmp_path, "dependencies:\n  - name: common\n    version: 0.2.0\n    repository: file://../common\n"
    )
    found = render_helm(directory, "web@abc", "shop", HelmOptions(release_name="r"), root=tmp_path)
    assert sorted(m.obj["metadata"]["name"] for m in found) == ["common-r", "web-r"]


def test_a_file_dependency_outside_the_repository_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    directory = chart(
        root, "dependencies:\n  - name: common\n    version: 0.2.0\n    repository: file://../../elsewhere\n"
    )
    with pytest.raises(ManifestError, match=r"dependency 'common' points outside the repository \(file://\.\./\.\./"):
        render_helm(directory, "web@abc", "shop", HelmOptions(), root=root)


def test_chart_yaml_that_is_not_yaml_names_the_file(tmp_path: Path) -> None:
    directory = chart(tmp_path)
    (directory / "Chart.yaml").write_text("dependencies: [\n")
    with pytest.raises(ManifestError, match=r"web@abc/Chart.yaml: cannot read"):
        render_helm(directory, "web@abc", "shop", HelmOptions(), root=tmp_path)


# --- the webhook's view: an empty source judges nothing (fails closed), unless allowed -----------------------------


@pytest.mark.parametrize("allow_empty", [False, True])
def test_the_webhook_cannot_judge_an_application_whose_source_renders_nothing(
    repo: Repo, tmp_path: Path, allow_empty: bool
) -> None:
    application = {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop", "namespace": "gitops-system", "generation": 1},
        "spec": {
            "source": {"repoURL": str(repo.path), "path": "only-libs", "allowEmpty": allow_empty},
            "destination": {"namespace": "shop"},
        },
    }
    index = DesiredState(
        FakeCluster(objects=[namespace("shop"), namespace("gitops-system")]),
        lambda: [application],
        source_factory=lambda url: GitSource(url, tmp_path / "cache"),
        load_timeout=30,
        retry_seconds=0,
    )
    index.refresh()
    status = index.status()["applications"]["gitops-system/shop"]
    found = index.lookup(ObjectKey("", "ConfigMap", "shop", "a"), "", (Claim("", "shop"),))
    if allow_empty:
        assert (status["loaded"], status["objects"], status["error"]) == (True, 0, "")
        assert found.unjudged is None
        assert found.git is None  # nothing in Git: the object is extra, as a prune sees it
    else:
        assert not status["loaded"]
        assert "the source renders no object" in status["error"]
        assert found.unjudged is not None  # fails closed, as for any render error
        assert "the source renders no object" in found.unjudged.why


def test_jsonnet_code_from_the_application_cannot_import_outside_the_repository_either() -> None:
    options = DirectoryOptions(tlas=(JsonnetVar("x", "importstr '/etc/passwd'", code=True),))
    with pytest.raises(RenderError, match="import of '/etc/passwd' refused"):
        jsonnet({"app/main.jsonnet": "function(x) {apiVersion: 'v1', kind: 'ConfigMap', data: {x: x}}"}, options)


# --- kubectl gitops create's flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--jsonnet-tla", "replicas"], 2, "--jsonnet-tla wants NAME=VALUE, not 'replicas'"),
        (["--jsonnet-ext-code", "=1"], 2, "--jsonnet-ext-code wants NAME=VALUE, not '=1'"),
        (["--jsonnet-lib", "../elsewhere"], 1, "jsonnet.libs[0] '../elsewhere' must be a path inside the repository"),
        (["--jsonnet-tla", "a=1", "--jsonnet-tla-code", "a=2"], 1, "jsonnet.tlas[1].name 'a' is given twice"),
    ],
)
def test_create_flags_are_checked_before_anything_is_asked(
    tmp_path: Path, flags: list[str], code: int, message: str
) -> None:
    kubeconfig = tmp_path / "nowhere.yaml"  # never read: the flags fail first
    result = CliRunner().invoke(cli, ["--kubeconfig", str(kubeconfig), "create", "gb", "--repo", "/srv/git/x", *flags])
    assert result.exit_code == code, result.output
    assert message in result.output
