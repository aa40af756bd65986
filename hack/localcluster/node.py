"""A node beside the local control plane: containerd, the kubelet, kube-scheduler and kube-proxy, and the host state
they change (a bridge, a route, netfilter tables, sysctls, cgroups, mounts), recorded before and restored after.

A node touches what is shared by the whole machine, so there is one per machine: MACHINE_LOCK names the directory
whose node holds it. Everything else lives in that directory (DIR/node), except the shims' sockets, which must be
short paths (a unix socket path has 108 bytes) and so sit in the lock's directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ClusterError

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
MACHINE_LOCK = Path("/run/kubectl-gitops-node")
BRIDGE = "gitops0"
POD_CIDR = "10.244.0.0/24"
# The host's address on the pod network: the API server listens here (pods reach it through the `kubernetes`
# Service), and so can a test's Git server.
HOST_ADDRESS = "10.244.0.1"
NODE_NAME = "127.0.0.1"  # --hostname-override: the API server reaches the kubelet on loopback
CGROUP_ROOT = "kubectl-gitops-node"
# Fixed by the kubelet and kube-proxy (one node per machine): kubelet, its healthz, kube-proxy's metrics, healthz.
FIXED_PORTS = {"kubelet": 10250, "kubelet-healthz": 10248, "kube-proxy-metrics": 10249, "kube-proxy-healthz": 10256}
PAUSE_IMAGE = "localhost/kubectl-gitops/pause:catatonit"
CATATONIT = Path("/usr/bin/catatonit")
RUNC = Path("/usr/sbin/runc")
CNI_BIN = Path("/usr/lib/cni")
NODE_COMPONENTS = ("containerd", "kubelet", "kube-scheduler", "kube-proxy")
# What the kubelet, kube-proxy and the CNI bridge may write; restored to the value found before `up`.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
HOST_DIRS = (Path("/var/lib/cni"), Path("/run/containerd"), Path("/var/run/netns"), Path("/etc/cni"))
CGROUP_FS = Path("/sys/fs/cgroup")


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _run(argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ClusterError(f"`{' '.join(argv)}` failed: {e}") from e
    if check and proc.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def nft_tables() -> list[str]:
    """`family name` of every nftables table (iptables-nft's tables included)."""
    out = _run(["nft", "list", "tables"]).stdout
    return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table "))


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, the named systemd one, the unified one)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        mount_point = Path(left.split()[4])
        if fstype in ("cgroup", "cgroup2") and mount_point.is_relative_to(CGROUP_FS):
            found.append(mount_point)
    return sorted(set(found))


def mounts_under(*roots: Path) -> list[Path]:
    """Mount points inside `roots`, deepest first (the order to unmount them in)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if any(point.is_relative_to(root) for root in roots):
            found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


@dataclass
class HostBefore:
    """What the machine looked like before `up --node` touched it: `down` puts back exactly this."""

    sysctls: dict[str, str | None]
    nft_tables: list[str]
    host_dirs: list[str]

    @classmethod
    def record(cls) -> HostBefore:
        return cls(
            sysctls={name: _read_sysctl(name) for name in SYSCTLS},
            nft_tables=nft_tables(),
            host_dirs=[str(d) for d in HOST_DIRS if d.exists()],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> HostBefore:
        return cls(**json.loads(path.read_text()))


def pause_image_archive(path: Path) -> None:
    """The pods' sandbox image: Debian's static catatonit in pause mode."""
    if not os.access(CATATONIT, os.X_OK):
        raise ClusterError(f"{CATATONIT} is missing: run `hack/setup --node` (it installs Debian's catatonit)")
    binary_image_archive(path, CATATONIT, PAUSE_IMAGE, ["/pause", "-P"], arcname="pause")


def binary_image_archive(
    path: Path, binary: Path, name: str, entrypoint: list[str], *, arcname: str = "", user: str = "65535:65535"
) -> None:
    """An image of one static binary, as a one-layer OCI archive (plain tar and JSON: the OCI image layout) for
    `ctr images import`: no registry, no image builder."""
    arcname = arcname or binary.name
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tar.gettarinfo(str(binary), arcname=arcname)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with open(binary, "rb") as content:
            tar.addfile(info, content)
    layer_bytes = layer.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
    }
    blobs: dict[str, bytes] = {layer_digest: layer_bytes}

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config_ref = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{layer_digest}",
                "size": len(layer_bytes),
            }
        ],
    }
    manifest_ref = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_ref,
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        ],
    }
    with tarfile.open(path, "w") as archive:
        files = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index).encode(),
        }
        for digest, blob_data in blobs.items():
            files[f"blobs/sha256/{digest}"] = blob_data
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


class NodeHost:
    """The host side of one node: its files in DIR/node, the machine lock, and the teardown."""

    def __init__(self, cluster_dir: Path, bin_dir: Path) -> None:
        self.cluster_dir = cluster_dir
        self.dir = cluster_dir / "node"
        self.bin_dir = bin_dir

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def before_path(self) -> Path:
        return self.dir / "host-before.json"

    # --- the machine lock --------------------------------------------------------------------------------------------
    @staticmethod
    def holder() -> Path | None:
        try:
            return Path((MACHINE_LOCK / "owner").read_text().strip())
        except OSError:
            return None if not MACHINE_LOCK.exists() else Path("(unknown)")

    def lock(self) -> None:
        try:
            MACHINE_LOCK.mkdir(mode=0o700)
        except FileExistsError:
            holder = self.holder()
            raise ClusterError(
                f"a node already runs on this machine, started from {holder}; there is one node per machine "
                f"(it changes the machine's network and cgroups): stop it with "
                f"`hack/local-cluster down --dir {holder}` first"
            ) from None
        (MACHINE_LOCK / "owner").write_text(f"{self.cluster_dir}\n")

    def holds_lock(self) -> bool:
        return self.holder() == self.cluster_dir

    # --- preparing the host -------------------------------------------------------------------------------------------
    def check_prerequisites(self) -> None:
        missing = [str(p) for p in (RUNC, CNI_BIN / "bridge", CNI_BIN / "host-local", CATATONIT) if not p.exists()]
        missing += [tool for tool in ("iptables", "nft", "ip") if shutil.which(tool) is None]
        if missing:
            raise ClusterError(f"a node needs {', '.join(missing)}: run `hack/setup --node` (Debian's packages)")
        if os.geteuid() != 0:
            raise ClusterError("a node needs root (containerd, the kubelet, a bridge and netfilter rules)")

    def prepare(self) -> None:
        """Records the machine's state, then makes the bridge, its route and the cgroup root the node runs in."""
        self.dir.mkdir(parents=True, exist_ok=True)
        HostBefore.record().save(self.before_path)
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        # A ClusterIP kube-proxy has not rewritten goes onto the bridge, where nothing answers: never off the machine.
        _run(["ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE])
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / CGROUP_ROOT
            root.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / name).exists() and not (root / name).read_text().strip():
                    (root / name).write_text((hierarchy / name).read_text())
        (MACHINE_LOCK / "s").mkdir(exist_ok=True)

    # --- the teardown ------------------------------------------------------------------------------------------------
    def remove_pods(self) -> None:
        """Asks containerd to stop and remove every pod (their network namespaces, veths and IP leases go too)."""
        if not self.containerd_socket.exists():
            return
        crictl = [str(self.bin_dir / "crictl"), f"--runtime-endpoint=unix://{self.containerd_socket}", "--timeout=20s"]
        with contextlib.suppress(ClusterError):
            _run([*crictl, "rmp", "-fa"], check=False, timeout=60)

    def kill_leftovers(self) -> None:
        """SIGKILLs what outlives containerd: its shims, and every process in the node's cgroups."""
        address = str(self.containerd_socket)
        shim = str(self.bin_dir / "containerd-shim-runc-v2")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if words and words[0] == shim and address in words:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
        for _ in range(100):
            pids = self._cgroup_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / CGROUP_ROOT
            if not root.exists():
                continue
            for procs in root.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        return pids

    def restore(self) -> list[str]:
        """Puts the machine back as HostBefore found it; returns what could not be undone (empty when all was)."""
        problems: list[str] = []
        for point in mounts_under(self.dir, MACHINE_LOCK):
            proc = _run(["umount", "-l", str(point)], check=False)
            if proc.returncode != 0 and point.exists():
                problems.append(f"cannot unmount {point}: {proc.stderr.strip()}")
        before = HostBefore.load(self.before_path) if self.before_path.exists() else None
        kube_proxy = self.bin_dir / "kube-proxy"
        if kube_proxy.exists():
            # kube-proxy removes its own chains and rules (iptables, and any nftables mode leftovers).
            _run([str(kube_proxy), "--cleanup"], check=False)
        if before is not None:
            for table in nft_tables():
                if table not in before.nft_tables:
                    proc = _run(["nft", "delete", "table", *table.split()], check=False)
                    if proc.returncode != 0:
                        problems.append(f"cannot delete nftables table {table}: {proc.stderr.strip()}")
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            for port in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir():
                _run(["ip", "link", "delete", port.name], check=False)
            proc = _run(["ip", "link", "delete", BRIDGE], check=False)  # its address and routes go with it
            if proc.returncode != 0:
                problems.append(f"cannot delete the bridge {BRIDGE}: {proc.stderr.strip()}")
        if before is not None:
            for name, value in before.sysctls.items():
                now = _read_sysctl(name)
                if value is not None and now is not None and now != value:
                    try:
                        (Path("/proc/sys") / name).write_text(value)
                    except OSError as e:
                        problems.append(f"cannot restore sysctl {name}={value}: {e}")
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / CGROUP_ROOT
            if root.exists():
                for cgroup in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        cgroup.rmdir()
                try:
                    root.rmdir()
                except OSError as e:
                    problems.append(f"cannot remove the cgroup {root}: {e}")
        if before is not None:
            for host_dir in HOST_DIRS:
                if str(host_dir) not in before.host_dirs and host_dir.exists():
                    shutil.rmtree(host_dir, ignore_errors=True)
        if self.holds_lock():
            shutil.rmtree(MACHINE_LOCK, ignore_errors=True)
        return problems


def containerd_config(node_dir: Path, bin_dir: Path) -> str:
    """containerd v2's configuration: root, state and sockets in DIR/node, the CRI with runc and the CNI bridge."""
    ctd = node_dir / "containerd"
    return f"""\
version = 3
root = "{ctd / "root"}"
state = "{ctd / "state"}"
temp = "{ctd / "tmp"}"
imports = []
# NRI would listen on /var/run/nri; nothing here uses it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{ctd / "containerd.sock"}"
[ttrpc]
  address = "{ctd / "containerd.sock.ttrpc"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{ctd / "opt"}"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{MACHINE_LOCK / "s"}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{ctd / "certs.d"}"
[plugins."io.containerd.cri.v1.runtime"]
  # This machine's capability bounding set lacks CAP_SYS_RESOURCE: runc cannot lower a child's oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{ctd / "runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{node_dir / "cni"}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


# Every registry is this unreachable loopback port: an image that was not loaded is never pulled from off the
# machine (a pod of a synced example that names registry.example gets ErrImagePull at once, and no traffic leaves).
NO_REGISTRY = """\
server = "http://127.0.0.1:9"

[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
"""


def cni_config(node_dir: Path) -> str:
    """The pod network: a bridge with host-local addresses; pods get routes to the pods and the Services only."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "kubectl-gitops",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(node_dir / "ipam"),
                        "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_ADDRESS}]],
                        "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE}],
                    },
                },
                {"type": "loopback"},
            ],
        },
        indent=2,
    )


def kubelet_config(node_dir: Path, pki_dir: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # this machine has cgroup v1 (hybrid)
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failSwapOn": False,
        "address": "127.0.0.1",
        "port": FIXED_PORTS["kubelet"],
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": FIXED_PORTS["kubelet-healthz"],
        "readOnlyPort": 0,
        "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
        # Who may call the kubelet (logs, exec, metrics): client certificates of the cluster's CA and bearer tokens,
        # each checked with the API server (TokenReview, SubjectAccessReview); nobody anonymously.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node_dir / 'containerd' / 'containerd.sock'}",
        "podLogsDir": str(node_dir / "pod-logs"),
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "makeIPTablesUtilChains": False,
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "staticPodPath": "",
        "enableServer": True,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "4s",
    }
    return json.dumps(config, indent=2)


def kube_proxy_config(kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "metricsBindAddress": f"127.0.0.1:{FIXED_PORTS['kube-proxy-metrics']}",
        "healthzBindAddress": f"127.0.0.1:{FIXED_PORTS['kube-proxy-healthz']}",
        "clusterCIDR": POD_CIDR,
        # Node ports on the bridge's address only: on loopback they need route_localnet=1.
        "nodePortAddresses": [f"{HOST_ADDRESS}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        # 0: leave the machine's conntrack limits alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "detectLocalMode": "ClusterCIDR",
    }
    return json.dumps(config, indent=2)
