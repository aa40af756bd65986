"""The node's files, without a node: what `up --node` writes for containerd, the CNI, the kubelet and kube-proxy, the
sandbox image archive, the node binaries in the cache check, and the Dockerfile's ldflags agreeing with the build's."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest
from localcluster import build
from localcluster import node as nodehost

HACK = Path(__file__).resolve().parents[2] / "hack"


def test_the_dockerfile_gets_the_same_ldflags_as_the_build() -> None:
    pins = build.read_pins()
    kubernetes = subprocess.run(
        ["sh", str(HACK / "gomod" / "ldflags.sh"), "kubernetes", str(build.KUBERNETES_MODULE_DIR)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert kubernetes == build.version_ldflags(pins.kubernetes)
    helm = subprocess.run(
        ["sh", str(HACK / "gomod" / "ldflags.sh"), "helm", str(build.HELM_MODULE_DIR)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    client_go = build._required_version(build.HELM_MODULE_DIR / "go.mod", "k8s.io/client-go")
    assert helm == build.helm_ldflags(pins.helm, client_go)


def test_the_node_binaries_are_wanted_only_for_a_node(tmp_path: Path) -> None:
    assert set(build.missing_binaries(tmp_path)) == set(build.BINARIES)
    assert set(build.missing_binaries(tmp_path, node=True)) == {*build.BINARIES, *build.NODE_BINARIES}
    pins = build.read_node_pins()
    assert pins.containerd.startswith("v2.")
    assert pins.cri_tools.startswith("v1.")


def test_containerd_keeps_its_state_in_the_directory_and_pulls_from_nowhere(tmp_path: Path) -> None:
    config = tomllib.loads(nodehost.containerd_config(tmp_path, tmp_path / "bin"))
    for key in ("root", "state", "temp"):
        assert Path(config[key]).is_relative_to(tmp_path)
    assert Path(config["grpc"]["address"]).is_relative_to(tmp_path)
    assert "io.containerd.nri.v1.nri" in config["disabled_plugins"]
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    assert Path(runc["Root"]).is_relative_to(tmp_path)
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == nodehost.PAUSE_IMAGE
    assert Path(images["registry"]["config_path"]).is_relative_to(tmp_path)
    assert tomllib.loads(nodehost.NO_REGISTRY)["server"].startswith("http://127.0.0.1:")


def test_pods_get_no_default_route(tmp_path: Path) -> None:
    cni = json.loads(nodehost.cni_config(tmp_path))
    bridge = cni["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["routes"] == [{"dst": nodehost.SERVICE_CLUSTER_IP_RANGE}]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(tmp_path)


def test_the_kubelet_takes_no_anonymous_request(tmp_path: Path) -> None:
    config = json.loads(nodehost.kubelet_config(tmp_path, tmp_path / "pki"))
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["webhook"] == {"enabled": True}
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["readOnlyPort"] == 0
    assert config["cgroupRoot"] == f"/{nodehost.CGROUP_ROOT}"


def test_kube_proxy_leaves_loopback_and_conntrack_alone(tmp_path: Path) -> None:
    config = json.loads(nodehost.kube_proxy_config(tmp_path / "kube-proxy.kubeconfig"))
    assert config["nodePortAddresses"] == [f"{nodehost.HOST_ADDRESS}/32"]  # no route_localnet
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["conntrack"]["maxPerCore"] == 0


@pytest.mark.skipif(not nodehost.CATATONIT.exists(), reason="needs Debian's catatonit (hack/setup --node)")
def test_the_sandbox_image_is_a_valid_oci_layout(tmp_path: Path) -> None:
    archive = tmp_path / "pause.tar"
    nodehost.pause_image_archive(archive)
    with tarfile.open(archive) as tar:
        read = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in read.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(read["index.json"])
    entry = index["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == nodehost.PAUSE_IMAGE
    manifest = json.loads(read[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(read[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"] == ["/pause", "-P"]
    layer_blob = read[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    with tarfile.open(fileobj=io.BytesIO(layer_blob)) as layer:
        assert layer.getnames() == ["pause"]
