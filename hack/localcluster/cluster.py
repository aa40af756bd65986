"""Starts, inspects and stops a local control plane (etcd, kube-apiserver, kube-controller-manager) in one directory."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from . import build, node, pki
from .errors import ClusterError
from .node import SERVICE_CLUSTER_IP_RANGE

REPO_ROOT = build.HACK_DIR.parent
DEFAULT_DIR = REPO_ROOT / ".local-cluster"
STATE_FILE = "state.json"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")

# What the issue asks for (namespace, garbage collection, service accounts and their tokens), plus what makes the
# built-in aggregated roles (`edit`) complete and gives every namespace its kube-root-ca.crt.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
)
# With a node: what brings it Ready and makes Deployments run pods behind Services, and what keeps a PDB's status.
NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "taint-eviction-controller",
)

# People (alice, oncall: group developers) get `edit` only in the namespaces they work in, through a RoleBinding
# there (`developers_edit`; the tests' `namespace` fixture and the demo create it), never cluster-wide, never in
# gitops-system or kube-system: `edit` reads Secrets, and gitops-system holds the audit signing key and the webhook's
# CA key; it also impersonates ServiceAccounts and makes tokens for them.
DEVELOPERS = "developers"
DEVELOPERS_EDIT = "local-cluster:developers-edit"
RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: local-cluster:gitops-sync-cluster-admin
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "gitops:sync"}
"""


# With a node: the API server's client certificate may use the kubelet's API (logs, exec, port-forward), as
# kubeadm binds it; kube-scheduler and kube-proxy have the built-in roles bound to their users already.
NODE_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: local-cluster:apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kubelet-api-admin"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
"""


PRIVILEGED_NAMESPACES = ("gitops-system", "kube-system", "kube-public", "kube-node-lease", "default")


def developers_edit(namespace: str) -> str:
    """The RoleBinding that lets alice and oncall (group developers) edit one namespace, for `kubectl apply -f -`."""
    if namespace in PRIVILEGED_NAMESPACES:
        raise ClusterError(f"developers never get `edit` in {namespace}: it holds what only the platform may read")
    return yaml.safe_dump(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": DEVELOPERS_EDIT, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DEVELOPERS}],
        }
    )


Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class ProcessRecord:
    pid: int
    log: str
    argv: list[str]


@dataclass
class State:
    """What `up` started and where; written to DIR/state.json so that `status` and `down` find it again."""

    version: str
    bin_dir: str
    server: str
    ports: dict[str, int]
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    node: bool = False

    @classmethod
    def load(cls, path: Path) -> State:
        raw = json.loads(path.read_text())
        processes = {name: ProcessRecord(**record) for name, record in raw.pop("processes", {}).items()}
        return cls(processes=processes, **raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool
    log: str


def process_alive(record: ProcessRecord) -> bool:
    """True if the recorded pid still runs the recorded program (a recycled pid is not ours)."""
    try:
        with open(f"/proc/{record.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        with open(f"/proc/{record.pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
    except (OSError, IndexError):
        return False
    return bool(argv) and argv[0].decode(errors="replace") == record.argv[0]


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: every socket stays bound until all are chosen, so none is handed out twice."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _ensure_port_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise ClusterError(
                f"port {port} on 127.0.0.1 (for {what}) is in use: {e.strerror}; "
                "stop whatever listens there or choose another port"
            ) from e


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class LocalCluster:
    """One control plane whose state, certificates, logs and kubeconfigs live in `directory`."""

    def __init__(self, directory: Path | str = DEFAULT_DIR) -> None:
        self.dir = Path(directory).resolve()
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # --- paths ---------------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    def kubeconfig(self, identity: str = "admin") -> Path:
        """DIR/<identity>.kubeconfig for one of admin, alice, gitops, breakglass."""
        path = self.dir / f"{identity}.kubeconfig"
        if not path.exists():
            known = ", ".join(i.name for i in pki.IDENTITIES)
            raise ClusterError(f"no kubeconfig for {identity!r} in {self.dir}; known identities: {known}")
        return path

    def load_state(self) -> State | None:
        if not self.state_path.exists():
            return None
        try:
            return State.load(self.state_path)
        except (ValueError, TypeError, KeyError) as e:
            raise ClusterError(
                f"{self.state_path} is unreadable ({e}); run `hack/local-cluster down --dir {self.dir}` to clear it"
            ) from e

    # --- status --------------------------------------------------------------------------------------------------
    def status(self) -> tuple[State | None, list[ComponentStatus]]:
        state = self.load_state()
        if state is None:
            return None, []
        return state, [
            ComponentStatus(name, record.pid, process_alive(record), record.log)
            for name, record in state.processes.items()
        ]

    def is_up(self) -> bool:
        state, components = self.status()
        wanted = len(COMPONENTS) + (len(node.NODE_COMPONENTS) if state is not None and state.node else 0)
        if state is None or len(components) != wanted or not all(c.running for c in components):
            return False
        return self._ready(state.server)

    # --- up ------------------------------------------------------------------------------------------------------
    def up(
        self, *, port: int | None = None, timeout: float = 120.0, log: Log = _quiet, with_node: bool = False
    ) -> State:
        """Starts the control plane (and with `with_node`, a node beside it), or reports the one already running in
        this directory."""
        state = self.load_state()
        if state is not None:
            if self.is_up():
                if state.node != with_node:
                    has = "has a node" if state.node else "has no node"
                    raise ClusterError(
                        f"the local cluster in {self.dir} is up and {has}; `hack/local-cluster down --dir {self.dir}` "
                        "first to start it the other way"
                    )
                log(f"the local cluster in {self.dir} is already up at {state.server}")
                return state
            log(f"{self.dir} holds a stale cluster (some of its processes are gone); cleaning it up")
            self.down(log=_quiet)
        elif self.dir.exists() and any(self.dir.iterdir()):
            if (self.dir / "pki").exists() or {e.name for e in self.dir.iterdir()} <= {"logs"}:
                log(f"{self.dir} holds the leftovers of an interrupted start; cleaning it up")
                self._remove_dir()
            else:
                raise ClusterError(f"{self.dir} exists and is not a local cluster directory; choose another --dir")

        if port is not None:
            _ensure_port_free(port, "kube-apiserver")
        binaries = build.build(log=log, node=with_node)
        pins = build.read_pins()
        host = node.NodeHost(self.dir, binaries)
        if with_node:
            host.check_prerequisites()
            host.lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            if with_node:
                host.prepare()
            state = self._start(binaries, pins.kubernetes, port, timeout, log, host if with_node else None)
        except BaseException:
            with contextlib.suppress(ClusterError):
                self.down(log=_quiet, keep_logs=True)
            raise
        log(f"local cluster up at {state.server} in {time.monotonic() - started:.1f}s; source {self.dir / 'env'}")
        return state

    def _start(
        self,
        binaries: Path,
        version: str,
        port: int | None,
        timeout: float,
        log: Log,
        host: node.NodeHost | None = None,
    ) -> State:
        names = ["kube-apiserver", "etcd-client", "etcd-peer", "kube-controller-manager"]
        if host is not None:
            names.append("kube-scheduler")
        if port is not None:
            names.remove("kube-apiserver")
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        if port is not None:
            ports["kube-apiserver"] = port
        api_port = ports["kube-apiserver"]
        # With a node, pods reach the API server through the `kubernetes` Service, whose endpoint is this address.
        api_address = node.HOST_ADDRESS if host is not None else "127.0.0.1"
        server = f"https://{api_address}:{api_port}"
        state = State(version=version, bin_dir=str(binaries), server=server, ports=ports, node=host is not None)
        self._write_pki(server)
        if host is not None:
            self._write_node_pki()
        admission = self._write_admission_config()
        deadline = time.monotonic() + timeout

        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn(
            state,
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=local",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(state, "etcd", lambda: self._http_ok(f"{etcd_url}/health"), deadline)

        p = self.pki_dir
        if host is None:
            authorization = ["--authorization-mode=RBAC", "--endpoint-reconciler-type=none"]
        else:
            # The kubelet is authorized as a node (its own Node, its pods' Secrets), never by a broad binding; the
            # API server calls the kubelet (logs, exec) with a client certificate and checks the kubelet's.
            authorization = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={p / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ]
        self._spawn(
            state,
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={api_address}",
                f"--secure-port={api_port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                *authorization,
                f"--admission-control-config-file={admission}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                f"--advertise-address={api_address}",
                "--profiling=false",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
            ],
        )
        self._write_kubeconfigs(server)
        self._wait(state, "kube-apiserver", lambda: self._ready(server), deadline)
        log("kube-apiserver is ready")

        self._kubectl(state, ["apply", "-f", "-"], stdin=RBAC)
        self._spawn(
            state,
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-controller-manager']}",
                f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if host is not None else ()))}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials",
                f"--cert-dir={self.dir / 'controller-manager-certs'}",
            ],
        )
        self._wait(state, "kube-controller-manager", lambda: self._has_default_service_account(state), deadline)
        log("kube-controller-manager is running its controllers")
        if host is not None:
            self._start_node(state, binaries, host, deadline, log)
        self._write_env(binaries)
        return state

    # --- pieces of up ----------------------------------------------------------------------------------------------
    def _write_pki(self, server: str) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        ca = pki.CertificateAuthority(self.pki_dir)
        ca.issue_server(
            self.pki_dir,
            "apiserver",
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ["127.0.0.1", "::1", str(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)[1]), node.HOST_ADDRESS],
        )
        for identity in (*pki.IDENTITIES, pki.WEBHOOK_CLIENT):
            ca.issue_client(self.pki_dir, identity)
        pki.write_signing_key(self.pki_dir / "sa.key", self.pki_dir / "sa.pub")

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the client certificate the API server presents to admission webhooks (gitops-webhook's
        --client-ca-file); its CN is pki.WEBHOOK_CLIENT.user."""
        return self.pki_dir / "ca.crt"

    @property
    def webhook_client(self) -> pki.KeyPair:
        """The client certificate and key the API server presents to admission webhooks."""
        return pki.KeyPair(
            self.pki_dir / f"{pki.WEBHOOK_CLIENT.name}.crt", self.pki_dir / f"{pki.WEBHOOK_CLIENT.name}.key"
        )

    def _write_admission_config(self) -> Path:
        """The API server's admission config: its webhook calls present pki.WEBHOOK_CLIENT's certificate.

        The kubeconfig's users are matched by the webhook's host: `name.namespace.svc:port` for a Service, then
        `*.namespace.svc:port`, `*.svc:port` (and the same without `:443`), else `host:port` of a URL; wildcards stand
        only for leading DNS labels, so a URL on 127.0.0.1 with any port is matched only by `*`, the default."""
        user = {"client-certificate": str(self.webhook_client.cert), "client-key": str(self.webhook_client.key)}
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "users": [{"name": "*.svc", "user": user}, {"name": "*", "user": user}],
        }
        kubeconfig_path = self.dir / "admission-webhooks.kubeconfig"
        kubeconfig_path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        kubeconfig_path.chmod(0o600)
        webhook = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig_path),
        }
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": name, "configuration": webhook}
                for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
            ],
        }
        path = self.dir / "admission.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _write_node_pki(self) -> None:
        ca = pki.CertificateAuthority.load(self.pki_dir)
        for identity in (*pki.NODE_IDENTITIES, pki.APISERVER_KUBELET_CLIENT):
            ca.issue_client(self.pki_dir, identity)
        ca.issue_server(self.pki_dir, "kubelet-serving", ["localhost"], [node.NODE_NAME])

    def _write_kubeconfigs(self, server: str, identities: tuple[pki.Identity, ...] = pki.IDENTITIES) -> None:
        ca = _b64(self.pki_dir / "ca.crt")
        for identity in identities:
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": ca}}],
                "users": [
                    {
                        "name": identity.user,
                        "user": {
                            "client-certificate-data": _b64(self.pki_dir / f"{identity.name}.crt"),
                            "client-key-data": _b64(self.pki_dir / f"{identity.name}.key"),
                        },
                    }
                ],
                "contexts": [{"name": identity.name, "context": {"cluster": "local", "user": identity.user}}],
                "current-context": identity.name,
            }
            path = self.dir / f"{identity.name}.kubeconfig"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)

    def _write_env(self, binaries: Path) -> None:
        paths = [str(binaries)]
        plugin = Path(sys.executable).parent / "kubectl-gitops"
        if plugin.exists():
            paths.append(str(plugin.parent))
        else:
            found = shutil.which("kubectl-gitops")
            if found:
                paths.append(str(Path(found).parent))
        text = (
            "# Source this file: the pinned kubectl and kubectl-gitops first on PATH, the local cluster as admin.\n"
            f'export PATH="{":".join(paths)}:$PATH"\n'
            f'export KUBECONFIG="{self.dir / "admin.kubeconfig"}"\n'
        )
        (self.dir / "env").write_text(text)

    def _spawn(self, state: State, name: str, argv: list[str], path: str | None = None) -> None:
        log_path = self.dir / "logs" / f"{name}.log"
        env = {**os.environ, "PATH": path} if path is not None else None
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                env=env,
            )
        self._children[name] = proc
        state.processes[name] = ProcessRecord(pid=proc.pid, log=str(log_path), argv=argv)
        state.save(self.state_path)

    def _wait(self, state: State, name: str, ready: Callable[[], bool], deadline: float) -> None:
        record = state.processes[name]
        while time.monotonic() < deadline:
            child = self._children.get(name)
            # Our own child is judged by waitpid alone: /proc can disagree for a moment around exec.
            exited = child.poll() is not None if child is not None else not process_alive(record)
            if exited:
                self._stop(name, record)
                code = child.returncode if child is not None else None
                how = (
                    f" (exit status {code})"
                    if code is not None and code >= 0
                    else (f" (killed by signal {-code})" if code is not None else "")
                )
                log_path = Path(record.log)
                hint = ""
                if "address already in use" in _tail(log_path, 200):
                    hint = "\nA port it needs is in use; stop whatever listens there and run `up` again."
                raise ClusterError(
                    f"{name} exited during start-up{how}; the end of {log_path}:\n{_tail(log_path)}{hint}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise ClusterError(f"{name} was not ready in time; the end of {record.log}:\n{_tail(Path(record.log))}")

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _admin_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return context

    def _ready(self, server: str) -> bool:
        try:
            context = self._admin_tls()
        except (OSError, ssl.SSLError):
            return False
        return self._http_ok(f"{server}/readyz", context)

    def _has_default_service_account(self, state: State) -> bool:
        url = f"{state.server}/api/v1/namespaces/default/serviceaccounts/default"
        return self._http_ok(url, self._admin_tls())

    def _kubectl(self, state: State, args: list[str], stdin: str | None = None) -> str:
        argv = [str(Path(state.bin_dir) / "kubectl"), f"--kubeconfig={self.dir / 'admin.kubeconfig'}", *args]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"`kubectl {' '.join(args)}` failed: {proc.stderr.strip()}")
        return proc.stdout

    def _start_node(self, state: State, binaries: Path, host: node.NodeHost, deadline: float, log: Log) -> None:
        """containerd, the kubelet, kube-scheduler and kube-proxy, with their files in DIR/node; returns once the
        node is Ready."""
        self._write_kubeconfigs(state.server, pki.NODE_IDENTITIES)
        self._kubectl(state, ["apply", "-f", "-"], stdin=NODE_RBAC)
        d = host.dir
        for sub in ("containerd", "cni", "ipam", "pod-logs", "kubelet"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "containerd.toml").write_text(node.containerd_config(d, binaries))
        (d / "containerd" / "certs.d" / "_default").mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "certs.d" / "_default" / "hosts.toml").write_text(node.NO_REGISTRY)
        (d / "cni" / "10-kubectl-gitops.conflist").write_text(node.cni_config(d))
        (d / "kubelet.json").write_text(node.kubelet_config(d, self.pki_dir))
        (d / "kube-proxy.json").write_text(node.kube_proxy_config(self.dir / "kube-proxy.kubeconfig"))
        path = f"{binaries}{os.pathsep}{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self._spawn(state, "containerd", [str(binaries / "containerd"), f"--config={d / 'containerd.toml'}"], path=path)
        self._wait(state, "containerd", lambda: self._containerd_ready(binaries, host), deadline)
        archive = d / "pause.oci.tar"
        node.pause_image_archive(archive)
        self._ctr(binaries, host, ["images", "import", "--local", str(archive)])
        log("containerd is running")
        self._spawn(
            state,
            "kubelet",
            [
                str(binaries / "kubelet"),
                f"--config={d / 'kubelet.json'}",
                f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
                f"--hostname-override={node.NODE_NAME}",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={d / 'kubelet' / 'pki'}",
            ],
            path=path,
        )
        sched = self.dir / "kube-scheduler.kubeconfig"
        self._spawn(
            state,
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                f"--kubeconfig={sched}",
                f"--authentication-kubeconfig={sched}",
                f"--authorization-kubeconfig={sched}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={state.ports['kube-scheduler']}",
                f"--cert-dir={d / 'kube-scheduler-certs'}",
            ],
        )
        self._spawn(state, "kube-proxy", [str(binaries / "kube-proxy"), f"--config={d / 'kube-proxy.json'}"], path=path)
        self._wait(state, "kubelet", lambda: self._node_ready(state), deadline)
        log(f"node {node.NODE_NAME} is Ready")

    def _ctr(self, binaries: Path, host: node.NodeHost, args: list[str]) -> str:
        argv = [str(binaries / "ctr"), f"--address={host.containerd_socket}", "--namespace=k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ClusterError(f"`ctr {' '.join(args)}` failed: {proc.stderr.strip()}")
        return proc.stdout

    def _containerd_ready(self, binaries: Path, host: node.NodeHost) -> bool:
        if not host.containerd_socket.exists():
            return False
        try:
            self._ctr(binaries, host, ["version"])
        except ClusterError:
            return False
        return True

    def _node_ready(self, state: State) -> bool:
        url = f"{state.server}/api/v1/nodes/{node.NODE_NAME}"
        try:
            with urllib.request.urlopen(url, timeout=2, context=self._admin_tls()) as response:
                status = json.load(response).get("status", {})
        except (urllib.error.URLError, OSError, ValueError):
            return False
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
        return conditions.get("Ready") == "True"

    # --- down ---------------------------------------------------------------------------------------------------
    def _stop(self, name: str, record: ProcessRecord, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; a child of this process is also reaped (no zombie left)."""
        child = self._children.pop(name, None)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if child is None and not process_alive(record):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, sig)
            if child is not None:
                # A thread-group leader shows as a zombie before its other threads are gone: only wait() knows.
                try:
                    child.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            deadline = time.monotonic() + wait
            while process_alive(record) and time.monotonic() < deadline:
                time.sleep(0.05)

    def down(self, *, log: Log = _quiet, keep_logs: bool = False) -> None:
        """Stops the recorded processes, each before the one it depends on, and removes the directory's state; with
        a node, then puts the machine back as it was before `up` (node.NodeHost.restore)."""
        try:
            state = self.load_state()
        except ClusterError:
            state = None
        host = node.NodeHost(self.dir, Path(state.bin_dir) if state is not None else build.bin_dir())
        has_node = (self.dir / "node").exists() or host.holds_lock()
        if state is None and not has_node:
            if self.dir.exists() and (self.dir / "pki").exists():
                self._remove_dir()
                log(f"removed the leftovers in {self.dir}")
            else:
                log(f"no local cluster in {self.dir}")
            return
        processes = list(state.processes.items()) if state is not None else []
        # The kubelet first (it would restart what goes), then the pods while containerd still answers.
        for name, record in reversed(processes):
            if name in ("kubelet", "kube-proxy", "kube-scheduler"):
                self._stop(name, record)
                log(f"stopped {name} (pid {record.pid})")
        if has_node:
            host.remove_pods()
        # The API server shuts down gracefully only while etcd still answers: stop in reverse start order.
        for name, record in reversed(processes):
            if name not in ("kubelet", "kube-proxy", "kube-scheduler"):
                self._stop(name, record)
                log(f"stopped {name} (pid {record.pid})")
        if has_node:
            host.kill_leftovers()
            problems = host.restore()
            if problems:
                raise ClusterError("the node's teardown left something behind:\n" + "\n".join(problems))
            log("the machine is as it was before the node (bridge, routes, netfilter, sysctls, cgroups, mounts)")
        if keep_logs:
            for entry in self.dir.iterdir():
                if entry.name != "logs":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        else:
            self._remove_dir()

    def _remove_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
