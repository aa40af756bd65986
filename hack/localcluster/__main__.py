"""Command line of hack/local-cluster: build, up, down, status, env, gomod, developers-edit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import build
from .cluster import DEFAULT_DIR, LocalCluster, developers_edit
from .errors import ClusterError


def _say(message: str) -> None:
    print(f"local-cluster: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/local-cluster",
        description="Build and run a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build the binaries once and cache them; prints their directory")
    build_parser.add_argument(
        "--node", action="store_true", help="also kubelet, kube-scheduler, kube-proxy, containerd and crictl"
    )
    for name, text in (
        ("up", "start a control plane in DIR (or say that it already runs)"),
        ("down", "stop the control plane in DIR and remove its state"),
        ("status", "say what runs where"),
        ("env", "print the path of DIR/env, the file to source"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: .local-cluster)")
        if name == "up":
            sub.add_argument("--port", type=int, help="kube-apiserver's port on 127.0.0.1 (default: a free one)")
            sub.add_argument(
                "--node",
                action="store_true",
                help="also a node (containerd, kubelet, kube-scheduler, kube-proxy): pods run; root, one per machine",
            )
    grant = commands.add_parser(
        "developers-edit",
        help="print the RoleBinding that gives alice and oncall (group developers) `edit` in NAMESPACE, "
        "for `kubectl apply -f -`",
    )
    grant.add_argument("namespace")
    gomod = commands.add_parser(
        "gomod", help="regenerate the Go wrapper modules for other releases (only those whose version is given)"
    )
    gomod.add_argument("--kubernetes", help="k8s.io/kubernetes version, e.g. v1.37.2")
    gomod.add_argument("--etcd", help="go.etcd.io/etcd/server/v3 version, e.g. v3.6.16")
    gomod.add_argument("--helm", help="helm.sh/helm/v3 version, e.g. v3.22.0")
    args = parser.parse_args(argv)
    if args.command == "gomod" and not (args.kubernetes or args.etcd or args.helm):
        gomod.error("give at least one of --kubernetes, --etcd, --helm")

    try:
        if args.command == "build":
            print(build.build(log=_say, node=args.node))
        elif args.command == "gomod":
            build.regenerate_modules(args.kubernetes, args.etcd, log=_say, helm=args.helm)
        elif args.command == "up":
            state = LocalCluster(args.dir).up(port=args.port, log=_say, with_node=args.node)
            print(state.server)
        elif args.command == "down":
            LocalCluster(args.dir).down(log=_say)
        elif args.command == "developers-edit":
            print(developers_edit(args.namespace), end="")
        elif args.command == "env":
            print(LocalCluster(args.dir).dir / "env")
        else:
            return _status(LocalCluster(args.dir))
    except ClusterError as e:
        _say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _status(cluster: LocalCluster) -> int:
    state, components = cluster.status()
    if state is None:
        print(f"no local cluster in {cluster.dir}")
        return 3
    ready = cluster.is_up()
    print(f"directory:  {cluster.dir}")
    print(f"version:    {state.version} (binaries in {state.bin_dir})")
    print(f"server:     {state.server} ({'ready' if ready else 'NOT ready'})")
    for component in components:
        port = state.ports.get(component.name) or state.ports.get(f"{component.name}-client")
        where = f"127.0.0.1:{port}" if port else ""
        print(f"{component.name:<24} pid {component.pid:<8} {'running' if component.running else 'stopped':<8} {where}")
    print(f"kubeconfigs: {', '.join(str(p) for p in sorted(cluster.dir.glob('*.kubeconfig')))}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
