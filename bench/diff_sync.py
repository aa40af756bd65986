"""Benchmark: `kubectl gitops diff|sync` against kubectl at its best, on the same manifests and API server.

Starts its own local control plane (hack/local-cluster), writes N generated objects (40% ConfigMaps, 20% Secrets, 20%
Services, 20% Deployments) into a Git repository, and times, for each N, side by side (alternating who goes first):

- sync (creating N objects)       `kubectl gitops sync`  vs `kubectl apply --server-side --force-conflicts`
- sync with nothing to do         `kubectl gitops sync`  vs `kubectl apply --server-side --force-conflicts`
- diff, nothing drifted           `kubectl gitops diff`  vs `kubectl diff --server-side --concurrency=16` (kubectl at
                                  its best) and, second column, `kubectl diff` (client-side, its default: slow, so
                                  sampled once, at the sizes --client-side names)
- diff, 10% drifted               the same pair after a label Git declares was changed on every tenth object
- sync, 10% changed               `kubectl gitops sync`  vs `kubectl apply --server-side --force-conflicts`
- and `kubectl gitops diff --full` (no fingerprints trusted), to show what the fingerprints save.

Medians of `--repeat` rounds, ratios theirs/ours (above 1: we are faster). Usage:
    .venv/bin/python bench/diff_sync.py [--sizes 500,2000] [--repeat 3] [--client-side 500]
        [--out bench/results/diff_sync.json]
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

from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.compare import concurrently  # noqa: E402


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


# What would make Python compile the project's modules anew in every run (a shell that sets these for its own
# reasons): a user's `pip install` compiles them once, at install, and the tool is measured as installed.
BYTECODE_OFF = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


def as_installed() -> None:
    """The project's modules compiled to bytecode, as `pip install` leaves them (an editable install compiles
    nothing: without this, each of the first runs would spend most of its time compiling)."""
    packages = [str(ROOT / name) for name in ("engine", "plugin", "webhook", "controller")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, env=_bytecode_on())


def _bytecode_on() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in BYTECODE_OFF}


def tool_env(cluster: LocalCluster, bin_dir: str, work: Path) -> dict[str, str]:
    """The environment the tools run in: admin's kubeconfig, a cache of their own, the pinned kubectl and this
    project's `kubectl-gitops` first on PATH, and Python reading the bytecode `as_installed` left."""
    return {
        **_bytecode_on(),
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


def drift(env: dict[str, str], namespace: str, count: int) -> None:
    """Every tenth object gets another value for the label `bench`, which Git declares: drift of kind changed."""
    client = KubeClient(KubeTarget(kubeconfig=env["KUBECONFIG"]))
    targets = [o for i, o in enumerate(objects(count)) if i % 10 == 0]

    def one(obj: dict[str, Any]) -> None:
        info = client.resource_for(obj["apiVersion"], obj["kind"])
        assert info is not None
        client.request(
            "PATCH",
            info.path(namespace, obj["metadata"]["name"]),
            body={"metadata": {"labels": {"bench": "drifted"}}},
            params={"fieldManager": "bench-drift"},
            content_type="application/merge-patch+json",
        )

    concurrently(one, targets)


PAIRS = {  # (ours, theirs) per step; the client-side diff is timed apart
    "sync": ("gitops_sync", "kubectl_apply"),
    "noop_sync": ("gitops_sync_noop", "kubectl_apply_noop"),
    "diff": ("gitops_diff", "kubectl_diff_ss16"),
    "diff_10pct": ("gitops_diff_10pct", "kubectl_diff_ss16_10pct"),
    "sync_10pct": ("gitops_sync_10pct", "kubectl_apply_10pct"),
}


def run_size(
    count: int, repeat: int, client_side: bool, env: dict[str, str], work: Path, kubectl: str
) -> dict[str, Any]:
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
    samples: dict[str, list[float]] = {name: [] for pair in PAIRS.values() for name in pair}
    samples |= {"gitops_diff_full": [], "kubectl_diff_client_side": []}
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
        apply = [kubectl, "apply", "--server-side", "--force-conflicts", "-n", theirs, "-f", str(manifests)]
        diff_ss = [kubectl, "diff", "--server-side", "--force-conflicts", "--concurrency=16", "-n", theirs]
        diff_ss += ["-f", str(manifests)]
        commands = {
            "sync": ([*gitops, "sync", ours], apply, (0,)),
            "noop_sync": ([*gitops, "sync", ours], apply, (0,)),
            "diff": ([*gitops, "diff", ours], diff_ss, (0,)),
            "diff_10pct": ([*gitops, "diff", ours], diff_ss, (1,)),
            "sync_10pct": ([*gitops, "sync", ours], apply, (0,)),
        }
        for step, (mine, kubectls, ok) in commands.items():
            if step == "diff_10pct":
                drift(env, ours, count)
                drift(env, theirs, count)
            pairs = [(PAIRS[step][0], mine), (PAIRS[step][1], kubectls)]
            for name, argv in pairs if round_ % 2 == 0 else reversed(pairs):
                samples[name].append(timed(argv, env, ok=ok))
            if step == "diff":
                samples["gitops_diff_full"].append(timed([*gitops, "diff", "--full", ours], env))
                if client_side and round_ == 0:
                    argv = [kubectl, "diff", "-n", theirs, "-f", str(manifests)]
                    samples["kubectl_diff_client_side"].append(timed(argv, env))
        for ns in (ours, theirs):
            subprocess.run([kubectl, "delete", "namespace", ns, "--wait=false"], env=env, capture_output=True)
        subprocess.run([*gitops, "delete", ours], env=env, capture_output=True)
    medians = {k: statistics.median(v) for k, v in samples.items() if v}
    ratios = {step: medians[theirs] / medians[ours] for step, (ours, theirs) in PAIRS.items()}
    if "kubectl_diff_client_side" in medians:
        ratios["diff_vs_client_side"] = medians["kubectl_diff_client_side"] / medians["gitops_diff"]
    ratios["diff_full_vs_ss16"] = medians["kubectl_diff_ss16"] / medians["gitops_diff_full"]
    return {"objects": count, "seconds": medians, "samples": samples, "ratios": ratios}


ROWS = (  # step, what ours is, what theirs is, target ratio
    ("diff", "diff, nothing drifted", "kubectl diff --server-side --concurrency=16", 3.0),
    ("diff_10pct", "diff, 10% drifted", "kubectl diff --server-side --concurrency=16", 2.0),
    ("noop_sync", "sync, nothing to do", "kubectl apply --server-side", 3.0),
    ("sync_10pct", "sync, 10% changed", "kubectl apply --server-side", 1.5),
    ("sync", "sync, creating every object", "kubectl apply --server-side", 0.0),
)


def report(result: dict[str, Any]) -> list[str]:
    s, r, n = result["seconds"], result["ratios"], result["objects"]
    lines = [f"{n} objects (medians of {len(result['samples']['gitops_diff'])} rounds)"]
    for step, what, theirs, target in ROWS:
        ours_name, theirs_name = PAIRS[step]
        reached = "" if not target else (f"  target {target:g}x " + ("met" if r[step] >= target else "NOT met"))
        lines.append(
            f"  {what:<30} ours {s[ours_name]:6.2f} s | {theirs} {s[theirs_name]:6.2f} s | {r[step]:5.2f}x{reached}"
        )
    side = s.get("kubectl_diff_client_side")
    lines.append(
        f"  {'diff, client-side column':<30} ours {s['gitops_diff']:6.2f} s | kubectl diff (client-side) "
        + (f"{side:6.2f} s | {r['diff_vs_client_side']:5.2f}x" if side else "not sampled")
    )
    lines.append(
        f"  {'diff --full (no fingerprints)':<30} ours {s['gitops_diff_full']:6.2f} s | kubectl diff --server-side "
        f"--concurrency=16 {s['kubectl_diff_ss16']:6.2f} s | {r['diff_full_vs_ss16']:5.2f}x"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--client-side", default="500", help="sizes at which the client-side diff is sampled once")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diff_sync.json")
    args = parser.parse_args()
    client_side = {int(s) for s in args.client_side.split(",") if s}
    as_installed()
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
                result = run_size(size, args.repeat, size in client_side, env, work, kubectl)
                results.append(result)
                print("\n".join(report(result)), flush=True)
        finally:
            cluster.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
