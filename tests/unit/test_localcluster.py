"""The local control plane tool's pure parts: module derivation, flags, certificates, state, error messages."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from localcluster import build, pki
from localcluster.__main__ import main
from localcluster.cluster import RBAC, LocalCluster, ProcessRecord, State, developers_edit, process_alive
from localcluster.errors import ClusterError

UPSTREAM_GO_MOD = """\
module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/sample-cli-plugin => ./staging/src/k8s.io/sample-cli-plugin
\tgithub.com/example/fork => github.com/example/fork v1.2.3
)
"""


def test_staging_modules_are_derived_from_the_replaces() -> None:
    assert build.staging_modules(UPSTREAM_GO_MOD) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/sample-cli-plugin"]


def test_wrapper_go_mod_replaces_each_staging_module_with_its_published_version() -> None:
    text = build.kubernetes_wrapper_go_mod("v1.37.2", "1.26.0", ["k8s.io/api", "k8s.io/client-go"])
    assert "require k8s.io/kubernetes v1.37.2" in text
    assert "\tk8s.io/api => k8s.io/api v0.37.2" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.2" in text
    assert "tool k8s.io/kubernetes/cmd/kube-apiserver" in text


def test_committed_wrapper_module_matches_the_pin() -> None:
    pins = build.read_pins()
    text = (build.KUBERNETES_MODULE_DIR / "go.mod").read_text()
    _, minor, patch = pins.kubernetes.lstrip("v").split(".")
    replaces = [line.split() for line in text.splitlines() if "=>" in line]
    assert len(replaces) > 25
    assert all(parts[-1] == f"v0.{minor}.{patch}" and parts[0] == parts[2] for parts in replaces)
    assert (build.KUBERNETES_MODULE_DIR / "go.sum").stat().st_size > 0
    assert (build.ETCD_MODULE_DIR / "go.sum").stat().st_size > 0
    assert pins.etcd.startswith("v3.6.")


def test_version_ldflags_set_both_version_packages() -> None:
    flags = build.version_ldflags("v1.37.2")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMinor=37" in flags
        assert f"-X {package}.gitTreeState=clean" in flags


def test_helm_pin_is_read_from_its_committed_wrapper_module() -> None:
    pins = build.read_pins()
    assert re.fullmatch(r"v3\.\d+\.\d+", pins.helm)
    lines = (build.HELM_MODULE_DIR / "go.mod").read_text().splitlines()
    assert "module kubectl-gitops.local/hack/gomod/helm" in lines
    assert f"\thelm.sh/helm/v3 {pins.helm} // indirect" in lines or f"require helm.sh/helm/v3 {pins.helm}" in lines
    assert "tool helm.sh/helm/v3/cmd/helm" in lines
    assert any(line.startswith("\tk8s.io/client-go v0.") for line in lines)
    assert f"helm.sh/helm/v3 {pins.helm} h1:" in (build.HELM_MODULE_DIR / "go.sum").read_text()


def test_helm_wrapper_go_mod_requires_helm_and_declares_its_command() -> None:
    text = build.helm_wrapper_go_mod("v3.22.0", "1.26.0")
    lines = text.splitlines()
    assert "module kubectl-gitops.local/hack/gomod/helm" in lines
    assert "go 1.26.0" in lines
    assert "require helm.sh/helm/v3 v3.22.0" in lines
    assert "tool helm.sh/helm/v3/cmd/helm" in lines
    assert text.endswith("\n")


def test_helm_ldflags_set_its_version_and_kubernetes_capabilities() -> None:
    flags = build.helm_ldflags("v3.22.0", "v0.37.0").split(" -X ")
    assert flags[0] == "-s -w"
    assert "helm.sh/helm/v3/internal/version.version=v3.22.0" in flags
    assert "helm.sh/helm/v3/internal/version.gitTreeState=clean" in flags
    for package in ("pkg/chartutil", "pkg/lint/rules"):
        assert f"helm.sh/helm/v3/{package}.k8sVersionMajor=1" in flags
        assert f"helm.sh/helm/v3/{package}.k8sVersionMinor=37" in flags


def test_a_cache_without_helm_is_incomplete(tmp_path: Path) -> None:
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert build.missing_binaries(tmp_path) == ["helm"]
    (tmp_path / "helm").write_text("#!/bin/sh\n")
    (tmp_path / "helm").chmod(0o755)
    assert build.missing_binaries(tmp_path) == []


def test_gomod_regenerates_only_the_modules_given(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, str | None, str | None]] = []

    def regenerate(kubernetes: str | None, etcd: str | None, log: object = None, helm: str | None = None) -> None:
        calls.append((kubernetes, etcd, helm))

    monkeypatch.setattr(build, "regenerate_modules", regenerate)
    assert main(["gomod", "--helm", "v3.22.0"]) == 0
    assert main(["gomod", "--kubernetes", "v1.37.2", "--etcd", "v3.6.16"]) == 0
    assert calls == [(None, None, "v3.22.0"), ("v1.37.2", "v3.6.16", None)]
    with pytest.raises(SystemExit) as exit_info:
        main(["gomod"])
    assert exit_info.value.code == 2
    assert len(calls) == 2


def test_gomod_refuses_a_helm_version_outside_v3() -> None:
    with pytest.raises(ClusterError, match="not a Helm v3 release"):
        build.regenerate_modules(helm="v4.0.0")


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pins = build.Pins(kubernetes="v1.37.2", etcd="v3.6.16", helm="v3.22.0")
    assert build.bin_dir(pins) == tmp_path / "kubectl-gitops" / "k8s-v1.37.2" / "bin"


def test_missing_go_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match="Go is not installed"):
        build.go_executable()


def test_a_failing_go_command_shows_gos_error(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module example.test/broken\n\ngo 1.21\n")
    (tmp_path / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    with pytest.raises(ClusterError, match="undefined: undefinedThing"):
        build._run_go(["build", "."], cwd=tmp_path)


def test_client_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority(tmp_path)
    oncall = next(i for i in pki.IDENTITIES if i.name == "breakglass")
    pair = ca.issue_client(tmp_path, oncall)
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "oncall"
    groups = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    assert groups == {"developers", "gitops:break-glass"}
    assert os.stat(pair.key).st_mode & 0o077 == 0


def test_serving_certificate_names_loopback(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority(tmp_path)
    pair = ca.issue_server(tmp_path, "serving", ["localhost"], ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert cert.issuer == ca.cert.subject


def test_state_round_trips(tmp_path: Path) -> None:
    state = State(
        version="v1.37.2",
        bin_dir="/bin",
        server="https://127.0.0.1:1",
        ports={"kube-apiserver": 1},
        processes={"etcd": ProcessRecord(pid=1, log="/x", argv=["/bin/etcd"])},
    )
    state.save(tmp_path / "state.json")
    assert State.load(tmp_path / "state.json") == state


def test_a_recycled_pid_is_not_ours() -> None:
    own_argv0 = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert process_alive(ProcessRecord(pid=os.getpid(), log="", argv=[own_argv0]))
    assert not process_alive(ProcessRecord(pid=os.getpid(), log="", argv=["/somewhere/etcd"]))


def test_a_dead_process_is_not_alive() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not process_alive(ProcessRecord(pid=proc.pid, log="", argv=["true"]))


def test_up_refuses_a_directory_that_is_not_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ClusterError, match="not a local cluster directory"):
        LocalCluster(tmp_path).up()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_up_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 .* is in use"):
            LocalCluster(tmp_path / "c").up(port=port)


def test_status_of_an_empty_directory(tmp_path: Path) -> None:
    assert LocalCluster(tmp_path).status() == (None, [])
    assert not LocalCluster(tmp_path).is_up()


def test_the_api_server_presents_its_webhook_client_certificate_to_every_webhook(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    cluster._write_pki("https://127.0.0.1:1")
    config = yaml.safe_load(cluster._write_admission_config().read_text())
    plugins = {p["name"]: p["configuration"] for p in config["plugins"]}
    assert config["kind"] == "AdmissionConfiguration"
    webhook = plugins["ValidatingAdmissionWebhook"]
    assert webhook["kind"] == "WebhookAdmissionConfiguration"
    kubeconfig = yaml.safe_load(Path(webhook["kubeConfigFile"]).read_text())
    users = {u["name"]: u["user"] for u in kubeconfig["users"]}
    # `*` for URLs on 127.0.0.1 with any port (wildcards stand only for leading DNS labels), `*.svc` for Services
    assert set(users) == {"*", "*.svc"}
    for user in users.values():
        cert = x509.load_pem_x509_certificate(Path(user["client-certificate"]).read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kube-apiserver-webhook-client"
        assert Path(user["client-key"]).exists()
    assert cluster.webhook_client_ca == tmp_path.resolve() / "pki" / "ca.crt"


@pytest.mark.parametrize("namespace", ["gitops-system", "kube-system", "default"])
def test_developers_never_edit_the_platforms_namespaces(namespace: str) -> None:
    with pytest.raises(ClusterError, match="never get `edit`"):
        developers_edit(namespace)


def test_developers_edit_one_namespace_through_a_role_binding() -> None:
    binding = yaml.safe_load(developers_edit("shop"))
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["roleRef"]["name"] == "edit"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"}]
    assert "ClusterRoleBinding\nmetadata:\n  name: local-cluster:developers-edit" not in RBAC
    assert "developers" not in RBAC
