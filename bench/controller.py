"""Benchmark: gitops-controller with many small Applications on one local control plane.

For each count N (default 100, 300, 1000), in a fresh control plane of its own:
- N Applications (5 ConfigMaps each, one directory each of one repository, auto-sync) are created, each at its first
  commit and never synced; then the controller starts. Measured: the time until every Application is Synced, and
  the controller's resident memory (peak and at the end).
- Steady state, nothing changing, for `--steady` seconds with the Applications' interval `--interval`: the
  controller's CPU seconds per minute, and its API requests and Git fetches per interval (its own counters, from
  /metrics).
- Drift: an edit to one object of an Application without selfHeal, until the drift is in its status; and to one of
  an Application with selfHeal, until it is repaired.

The peer figure is Flux's published one (1,000 Kustomizations in 4m16s at 175 MiB, on three nodes); there is no
Flux here to run side by side. Usage:
    .venv/bin/python bench/controller.py [--counts 100,300,1000] [--steady 120] [--out bench/results/controller.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT))

from localcluster.cluster import LocalCluster  # noqa: E402

from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.apps import application_resource  # noqa: E402

OBJECTS_PER_APP = 5
NAMESPACES = 10
CONTROLLER = Path(sys.executable).parent / "gitops-controller"
KUBECTL_GITOPS = Path(sys.executable).parent / "kubectl-gitops"


def make_repo(path: Path, count: int) -> None:
    path.mkdir()
    for a in range(count):
        folder = path / f"app-{a:04d}"
        folder.mkdir()
        for o in range(OBJECTS_PER_APP):
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"app-{a:04d}-{o}"},
                "data": {"index": str(o), "app": str(a)},
            }
            (folder / f"cm-{o}.yaml").write_text(json.dumps(body))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "first"], cwd=path, check=True)


def applications(repo: Path, count: int, interval: str, self_heal_index: int) -> dict[str, Any]:
    items = []
    for a in range(count):
        items.append(
            {
                "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": f"app-{a:04d}", "namespace": "gitops-system"},
                "spec": {
                    "source": {"repoURL": str(repo), "path": f"app-{a:04d}"},
                    "destination": {"namespace": f"bench-{a % NAMESPACES}"},
                    "driftMode": "audit",
                    "syncPolicy": {"automated": True, "selfHeal": a == self_heal_index, "interval": interval},
                },
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def synced_count(client: KubeClient) -> int:
    info = application_resource(client)
    done = 0
    for app in client.list_objects(info, namespace="gitops-system"):
        for c in (app.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Synced" and c.get("status") == "True":
                done += 1
    return done


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_count(count: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gitops-bench-controller-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster")
        state = cluster.up(log=lambda m: print(m, file=sys.stderr))
        proc: subprocess.Popen[bytes] | None = None
        try:
            kubectl = str(Path(state.bin_dir) / "kubectl")
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig("admin")), "XDG_CACHE_HOME": str(work / "c")}
            subprocess.run([str(KUBECTL_GITOPS), "install"], env=env, check=True, capture_output=True)
            for n in range(NAMESPACES):
                subprocess.run([kubectl, "create", "namespace", f"bench-{n}"], env=env, check=True, capture_output=True)
            repo = work / "repo"
            make_repo(repo, count)
            heal_index, report_index = 0, 1
            listed = json.dumps(applications(repo, count, args.interval, heal_index))
            subprocess.run(
                [kubectl, "apply", "-f", "-"], input=listed.encode(), env=env, check=True, capture_output=True
            )
            client = KubeClient(KubeTarget(kubeconfig=str(cluster.kubeconfig("admin"))))
            port = free_port()
            log = open(work / "controller.log", "wb")  # noqa: SIM115 (open for the process's whole life)
            started = time.perf_counter()
            proc = subprocess.Popen(
                [str(CONTROLLER), "--probe-address", f"127.0.0.1:{port}", "--workers", str(args.workers)],
                env={**env, "GITOPS_CONTROLLER_LOG_LEVEL": "warning"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            peak = 0
            while True:
                peak = max(peak, rss_kib(proc.pid))
                done = synced_count(client)
                if done >= count:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"the controller exited: {(work / 'controller.log').read_text()[-3000:]}")
                if time.perf_counter() - started > args.limit:
                    raise SystemExit(f"only {done} of {count} Applications Synced after {args.limit}s")
                time.sleep(1.0)
            all_synced = time.perf_counter() - started
            end_rss = rss_kib(proc.pid)
            print(f"{count} apps: all Synced in {all_synced:.1f}s, RSS peak {peak / 1024:.0f} MiB", flush=True)
            # Steady state.
            cpu0, req0, fetch0, t0 = (
                cpu_seconds(proc.pid),
                metric(port, "gitops_api_requests_total"),
                metric(port, "gitops_git_fetches_total"),
                time.perf_counter(),
            )
            time.sleep(args.steady)
            elapsed = time.perf_counter() - t0
            cpu1, req1, fetch1 = (
                cpu_seconds(proc.pid),
                metric(port, "gitops_api_requests_total"),
                metric(port, "gitops_git_fetches_total"),
            )
            interval = float(args.interval.rstrip("s"))
            intervals = elapsed / interval
            steady = {
                "cpu_seconds_per_minute": (cpu1 - cpu0) / elapsed * 60,
                "api_requests_per_interval": (req1 - req0) / intervals,
                "git_fetches_per_interval": (fetch1 - fetch0) / intervals,
            }
            # Drift: reported (no selfHeal) and repaired (selfHeal).
            reported_name = f"app-{report_index:04d}"
            patch = '{"data":{"index":"edited"}}'
            ns_of = {heal_index: f"bench-{heal_index % NAMESPACES}", report_index: f"bench-{report_index % NAMESPACES}"}
            t = time.perf_counter()
            subprocess.run(
                [kubectl, "-n", ns_of[report_index], "patch", "configmap", f"{reported_name}-0", "-p", patch],
                env=env,
                check=True,
                capture_output=True,
            )
            info = application_resource(client)
            while True:
                app = client.get(info, "gitops-system", reported_name) or {}
                if ((app.get("status") or {}).get("drift") or {}).get("objects"):
                    break
                time.sleep(0.05)
            to_status = time.perf_counter() - t
            healed_name = f"app-{heal_index:04d}"
            t = time.perf_counter()
            subprocess.run(
                [kubectl, "-n", ns_of[heal_index], "patch", "configmap", f"{healed_name}-0", "-p", patch],
                env=env,
                check=True,
                capture_output=True,
            )
            while True:
                out = subprocess.run(
                    [
                        kubectl,
                        "-n",
                        ns_of[heal_index],
                        "get",
                        "configmap",
                        f"{healed_name}-0",
                        "-o",
                        "jsonpath={.data.index}",
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                ).stdout
                if out == "0":
                    break
                time.sleep(0.05)
            to_repair = time.perf_counter() - t
            print(
                f"{count} apps: steady {steady['cpu_seconds_per_minute']:.2f} CPU s/min, "
                f"{steady['api_requests_per_interval']:.0f} API requests and "
                f"{steady['git_fetches_per_interval']:.1f} Git fetches per interval; "
                f"drift in status {to_status:.2f}s, repaired {to_repair:.2f}s",
                flush=True,
            )
            return {
                "applications": count,
                "objects": count * OBJECTS_PER_APP,
                "seconds_until_all_synced": all_synced,
                "rss_mib_peak": peak / 1024,
                "rss_mib_end": end_rss / 1024,
                "steady": steady,
                "interval_seconds": interval,
                "seconds_edit_to_drift_in_status": to_status,
                "seconds_edit_to_repair": to_repair,
            }
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            cluster.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,300,1000")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--interval", default="60s", help="the Applications' interval (seconds)")
    parser.add_argument("--steady", type=float, default=120.0, help="seconds of steady state measured")
    parser.add_argument("--limit", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "controller.json")
    args = parser.parse_args()
    results = [run_count(int(c), args) for c in args.counts.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
