"""Benchmark: `kubectl gitops diff|sync` against `kubectl diff|apply --server-side` on the same manifests and server.

Starts its own local control plane (hack/local-cluster), writes N generated objects (ConfigMaps, Secrets, Services,
Deployments) into a Git repository, and times, for each N, side by side on the same API server:

- sync:  `kubectl gitops sync APP`          vs `kubectl apply --server-side -f DIR`   (creating N objects)
- sync again (nothing to do)                vs `kubectl apply --server-side -f DIR`
- diff:  `kubectl gitops diff APP`          vs `kubectl diff -f DIR`                   (nothing drifted)

Each pair runs `--repeat` times (median reported). Usage:
    .venv/bin/python bench/diff_sync.py [--sizes 50,500,2000] [--repeat 3] [--out bench/results/diff_sync.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))

from localcluster.cluster import LocalCluster  # noqa: E402


def objects(count: int) -> list[dict[str, Any]]:
    """A mix like a real application's: 40% ConfigMaps, 20% Secrets, 20% Services, 20% Deployments."""
    out: list[dict[str, object]] = []
    for i in range(count):
        name = f"obj-{i:05d}"
        labels = {"app.kubernetes.io/name": name, "bench": "true"}
        match i % 5:
            case 0 | 1:
                out.append(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": name, "labels": labels},
                        "data": {"config.yaml": f"replicas: {i}\nmode: bench\n", "index": str(i)},
                    }
                )
            case 2:
                out.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": name, "labels": labels},
                        "stringData": {"password": f"pw-{i}"},
                    }
                )
            case 3:
                out.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": name, "labels": labels},
                        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                    }
                )
            case _:
                out.append(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": name, "labels": labels},
                        "spec": {
                            "replicas": 2,
                            "selector": {"matchLabels": labels},
                            "template": {
                                "metadata": {"labels": labels},
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "app",
                                            "image": f"registry.example/app:{i}",
                                            "ports": [{"containerPort": 8080}],
                                            "resources": {"requests": {"cpu": "0.1", "memory": "64Mi"}},
                                            "env": [{"name": "INDEX", "value": str(i)}],
                                        }
                                    ]
                                },
                            },
                        },
                    }
                )
    return out


def tool_env(cluster: LocalCluster, bin_dir: str, work: Path) -> dict[str, str]:
    """The environment the tools run in: admin's kubeconfig, a cache of their own, the pinned kubectl and this
    project's `kubectl-gitops` first on PATH."""
    return {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig("admin")),
        "XDG_CACHE_HOME": str(work / "cache"),
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def run_size(count: int, repeat: int, env: dict[str, str], work: Path, kubectl: str) -> dict[str, object]:
    manifests = work / f"repo-{count}"
    manifests.mkdir()
    for i, obj in enumerate(objects(count)):
        (manifests / f"{i:05d}.yaml").write_text(json.dumps(obj))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=manifests, check=True)
    subprocess.run(["git", "add", "-A"], cwd=manifests, check=True)
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"], cwd=manifests, check=True
    )
    gitops = [kubectl, "gitops"]
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "gitops_sync",
            "kubectl_apply",
            "gitops_sync_noop",
            "kubectl_apply_noop",
            "gitops_diff",
            "kubectl_diff",
        )
    }
    for round_ in range(repeat):
        ours, theirs = f"bench-{count}-g{round_}", f"bench-{count}-k{round_}"
        for ns in (ours, theirs):
            subprocess.run([kubectl, "create", "namespace", ns], env=env, check=True, capture_output=True)
        subprocess.run(
            [*gitops, "create", ours, "--repo", str(manifests), "--dest-namespace", ours],
            env=env,
            check=True,
            capture_output=True,
        )
        apply = [kubectl, "apply", "--server-side", "-n", theirs, "-f", str(manifests)]
        # Alternate who goes first so that neither always meets a warmer server.
        pairs = [("gitops_sync", [*gitops, "sync", ours]), ("kubectl_apply", apply)]
        for name, argv in pairs if round_ % 2 == 0 else reversed(pairs):
            samples[name].append(timed(argv, env))
        pairs = [("gitops_sync_noop", [*gitops, "sync", ours]), ("kubectl_apply_noop", apply)]
        for name, argv in pairs if round_ % 2 == 0 else reversed(pairs):
            samples[name].append(timed(argv, env))
        pairs = [
            ("gitops_diff", [*gitops, "diff", ours]),
            ("kubectl_diff", [kubectl, "diff", "-n", theirs, "-f", str(manifests)]),
        ]
        for name, argv in pairs if round_ % 2 == 0 else reversed(pairs):
            samples[name].append(timed(argv, env, ok=(0,)))
        for ns in (ours, theirs):
            subprocess.run([kubectl, "delete", "namespace", ns, "--wait=false"], env=env, capture_output=True)
        subprocess.run([*gitops, "delete", ours], env=env, capture_output=True)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "objects": count,
        "seconds": medians,
        "samples": samples,
        "diff_speedup_vs_kubectl_diff": medians["kubectl_diff"] / medians["gitops_diff"],
        "sync_speedup_vs_kubectl_apply": medians["kubectl_apply"] / medians["gitops_sync"],
        "noop_sync_speedup_vs_kubectl_apply": medians["kubectl_apply_noop"] / medians["gitops_sync_noop"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,500,2000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diff_sync.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitops-bench-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster")
        state = cluster.up(log=lambda m: print(m, file=sys.stderr))
        try:
            kubectl = str(Path(state.bin_dir) / "kubectl")
            env = tool_env(cluster, state.bin_dir, work)
            subprocess.run([kubectl, "gitops", "install"], env=env, check=True, capture_output=True)
            results = []
            for size in (int(s) for s in args.sizes.split(",")):
                result = run_size(size, args.repeat, env, work, kubectl)
                results.append(result)
                s = result["seconds"]
                assert isinstance(s, dict)
                print(
                    f"{size:>5} objects | diff {s['gitops_diff']:.2f}s vs kubectl diff {s['kubectl_diff']:.2f}s "
                    f"({result['diff_speedup_vs_kubectl_diff']:.1f}x) | sync {s['gitops_sync']:.2f}s vs apply "
                    f"{s['kubectl_apply']:.2f}s ({result['sync_speedup_vs_kubectl_apply']:.2f}x) | no-op sync "
                    f"{s['gitops_sync_noop']:.2f}s vs apply {s['kubectl_apply_noop']:.2f}s "
                    f"({result['noop_sync_speedup_vs_kubectl_apply']:.2f}x)",
                    flush=True,
                )
        finally:
            cluster.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
