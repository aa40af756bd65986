"""Benchmark of the drift admission webhook, on its own local control plane.

1. decision: `engine.core.admission.decide` in process, for a typical Deployment (Git's object as the API server stores
   it): p50/p99 of an allowed request (an undeclared label) and of a denied one (a changed image).
2. throughput: requests/s of POST /validate over HTTPS (gunicorn, 1 worker), from a client on the same 2 cores.
3. API server: latency of writes to managed objects with 20 concurrent writers, with the webhook registered vs not
   registered (the ratio is what the webhook costs a real client), and with a no-op webhook (bench/noop_webhook, in
   Go) registered the same way (what calling any webhook costs), in turns; closed loop (the 2 cores
   saturated: the ratio is the CPU the webhook adds to a write) and open loop at a moderate rate (200 writes/s in
   all: what a client waits for in a cluster that is not saturated), with the CPU per write of every process.
4. memory: resident memory of the webhook (master + worker) with no Application, then with --objects (2000) loaded,
   and how long the load took (`--memory-only` stops there).

Usage: .venv/bin/python bench/webhook.py [--out bench/results/webhook.json] [--seconds 10] [--rounds 6] [--workers 1]
       [--objects 2000] [--memory-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from diff_sync import objects, tool_env  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402

from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.compare import DesiredObject  # noqa: E402
from engine.core.admission import Exemptions, GitObject, decide  # noqa: E402
from engine.core.manifests import Manifest  # noqa: E402
from engine.core.normalize import SecretMasker  # noqa: E402
from engine.core.objects import AppRef, DriftMode, key_of, with_tracking  # noqa: E402
from engine.core.webhookconfig import NAME  # noqa: E402
from engine.gitstate import stored_form  # noqa: E402


class Finished(Exception):
    """Raised when the figures asked for are in (--memory-only)."""


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(argv: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {proc.stderr[-2000:]}")
    return proc.stdout


def review(obj: dict[str, Any], old: dict[str, Any], uid: str = "bench") -> dict[str, Any]:
    key = key_of(obj)
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "operation": "UPDATE",
            "name": key.name,
            "namespace": key.namespace,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "userInfo": {"username": "alice", "groups": ["developers", "system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def bench_decision(git: GitObject, live: dict[str, Any]) -> dict[str, Any]:
    labelled = json.loads(json.dumps(live))
    labelled["metadata"].setdefault("labels", {})["team"] = "web"
    changed = json.loads(json.dumps(live))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/evil:1"
    exemptions, masker = Exemptions(), SecretMasker(b"bench")
    out: dict[str, Any] = {}
    for name, new in (("allowed_label", labelled), ("denied_image", changed)):
        request = review(new, live)["request"]
        timings = []
        for _ in range(3000):  # warm-up and measurement
            start = time.perf_counter()
            decision = decide(request, git, exemptions=exemptions, masker=masker)
            timings.append(time.perf_counter() - start)
        timings = timings[500:]
        out[name] = {
            "allowed": decision.allowed,
            "p50_ms": percentile(timings, 50) * 1000,
            "p99_ms": percentile(timings, 99) * 1000,
        }
    return out


def bench_throughput(
    url: str, ca: Path, certificate: tuple[Path, Path], body: bytes, seconds: float, clients: int = 8
) -> dict[str, float]:
    """POST /validate as the API server does it: with its client certificate (`certificate`: cert and key)."""
    http = urllib3.PoolManager(
        maxsize=clients,
        cert_reqs=ssl.CERT_REQUIRED,
        ca_certs=str(ca),
        cert_file=str(certificate[0]),
        key_file=str(certificate[1]),
    )
    done = 0
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        nonlocal done
        while time.monotonic() < stop:
            start = time.perf_counter()
            response = http.request("POST", url, body=body, headers={"Content-Type": "application/json"})
            elapsed = time.perf_counter() - start
            assert response.status == 200, response.status
            with lock:
                done += 1
                latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "requests_per_second": done / seconds,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "clients": clients,
    }


def build_noop_webhook(work: Path) -> Path:
    """The no-op webhook (bench/noop_webhook), built with the machine's Go."""
    out = work / "noop-webhook"
    subprocess.run(
        ["go", "build", "-o", str(out), "."],
        cwd=ROOT / "bench" / "noop_webhook",
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
        check=True,
    )
    return out


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


def bench_writes(
    kube: KubeClient,
    namespace: str,
    names: list[str],
    processes: dict[str, list[int]],
    *,
    writers: int = 20,
    per_writer: int = 100,
    rate: float | None = None,
) -> dict[str, Any]:
    """PATCHes of an undeclared annotation (allowed, no record) to managed ConfigMaps, `writers` at once.

    Closed loop (`rate` None): each writer sends its next write when the last one is answered, so the 2 cores are
    saturated and latency measures the CPU every write costs. Open loop (`rate` writes/s in all): each writer sends
    on a fixed schedule and latency counts from the scheduled time (a late send is not forgiven), so it measures
    what a client waits for when the cluster is not saturated. CPU per write is counted for each process."""
    info = kube.resource_for("v1", "ConfigMap")
    assert info is not None
    latencies: list[float] = []
    lock = threading.Lock()
    period = writers / rate if rate else 0.0
    begin = time.perf_counter() + 0.05

    def writer(w: int) -> None:
        for i in range(per_writer):
            name = names[(w * per_writer + i) % len(names)]
            if period:
                start = begin + (i + w / writers) * period
                delay = start - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            else:
                start = time.perf_counter()
            kube.request(
                "PATCH",
                info.path(namespace, name),
                body={"metadata": {"annotations": {"bench": f"{w}-{i}-{start}"}}},
                content_type="application/merge-patch+json",
            )
            with lock:
                latencies.append(time.perf_counter() - start)

    before = {what: sum(cpu_seconds(p) for p in pids) for what, pids in processes.items()}
    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(writer, range(writers)))
    elapsed = time.perf_counter() - begin
    count = len(latencies)
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.mean(latencies) * 1000,
        "writes": count,
        "writes_per_second": count / elapsed,
        "cpu_ms_per_write": {
            what: round((sum(cpu_seconds(p) for p in pids) - before[what]) * 1000 / count, 3)
            for what, pids in processes.items()
        },
    }


CONFIGURATIONS = ("none", "noop", "webhook")  # no webhook registered; the no-op webhook; gitops-webhook


def compare_writes(
    kube: KubeClient,
    names: list[str],
    processes: dict[str, list[int]],
    register: Callable[[str], None],
    rounds: int,
    rate: float | None = None,
) -> dict[str, Any]:
    """Rounds of writes with no webhook registered, with the no-op webhook and with gitops-webhook, each round all
    three. The order turns from round to round and runs backwards every other three rounds, so that over 6 rounds
    each configuration runs first, second and last twice and the machine's drift over a run favours none. Ratios
    are of the medians of the rounds' figures (each round's ratio is kept, to show the spread)."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGURATIONS}
    for i in range(rounds):
        order = CONFIGURATIONS[i % 3 :] + CONFIGURATIONS[: i % 3]
        for configuration in order[::-1] if (i // 3) % 2 else order:
            register(configuration)
            bench_writes(kube, "bench", names, processes, per_writer=5, rate=rate)  # warm-up
            runs[configuration].append(bench_writes(kube, "bench", names, processes, rate=rate))

    def median(configuration: str, figure: str) -> float:
        return float(statistics.median(r[figure] for r in runs[configuration]))

    def cpu(configuration: str) -> float:  # the CPU a write costs, all processes together
        return float(statistics.median(sum(r["cpu_ms_per_write"].values()) for r in runs[configuration]))

    return {
        "writers": 20,
        "rate": rate,
        "without_webhook": runs["none"],
        "with_noop_webhook": runs["noop"],
        "with_webhook": runs["webhook"],
        "p50_ratio": median("webhook", "p50_ms") / median("none", "p50_ms"),
        "p50_ratio_per_round": [w["p50_ms"] / o["p50_ms"] for w, o in zip(runs["webhook"], runs["none"], strict=True)],
        "mean_ratio": median("webhook", "mean_ms") / median("none", "mean_ms"),
        "p99_ratio": median("webhook", "p99_ms") / median("none", "p99_ms"),
        # on saturated cores, what the latency ratio follows
        "cpu_ratio": cpu("webhook") / cpu("none"),
        # what calling any webhook costs, and what gitops-webhook costs beyond that
        "noop_p50_ratio": median("noop", "p50_ms") / median("none", "p50_ms"),
        "noop_cpu_ratio": cpu("noop") / cpu("none"),
        "webhook_over_noop_p50_ratio": median("webhook", "p50_ms") / median("noop", "p50_ms"),
    }


def commit_objects(repo: Path, docs: list[dict[str, Any]]) -> None:
    """A new Git repository at `repo` whose one commit holds each object in a file of its own."""
    repo.mkdir(parents=True)
    for i, doc in enumerate(docs):
        (repo / f"{i:05d}.yaml").write_text(json.dumps(doc))
    for git_args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ):
        subprocess.run(["git", *git_args], cwd=repo, check=True)


def rss_mb(pid: int) -> float:
    total = 0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "webhook.json")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers of the webhook")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of writes, each with all three configurations")
    parser.add_argument("--objects", type=int, default=2000, help="managed objects loaded for the memory figure")
    parser.add_argument("--memory-only", action="store_true", help="stop after the memory figure")
    parser.add_argument("--paced-rate", type=float, default=200.0, help="writes/s in all of the open-loop rounds")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "webhook_workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="gitops-bench-webhook-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster")
        state = cluster.up(log=lambda m: print(m, file=sys.stderr))
        webhook: subprocess.Popen[bytes] | None = None
        try:
            kubectl = str(Path(state.bin_dir) / "kubectl")
            env = tool_env(cluster, state.bin_dir, work)
            run([kubectl, "gitops", "install"], env)
            kube = KubeClient(
                KubeTarget(kubeconfig=str(cluster.kubeconfig("admin"))), pool_size=20
            )  # 20 writers, 20 connections

            # 1. the decision, in process, for a typical Deployment
            deployment = objects(5)[4]
            app = AppRef("gitops-system", "bench")
            run([kubectl, "create", "namespace", "bench-decision"], env)
            obj = with_tracking(
                {**deployment, "metadata": {**deployment["metadata"], "namespace": "bench-decision"}}, app, "0" * 40
            )
            info = kube.resource_for("apps/v1", "Deployment")
            assert info is not None
            stored, declared, _ = stored_form(kube, DesiredObject(Manifest("bench", 1, obj), obj, info))
            live = kube.apply(info, obj).obj
            live["metadata"].pop("managedFields", None)
            git = GitObject(key_of(obj), app, DriftMode.ENFORCE, "0" * 40, stored, declared)
            results["decision"] = bench_decision(git, live)
            print("decision", json.dumps(results["decision"]), flush=True)

            # start the webhook before the Application exists: its memory empty, then with the objects loaded
            port = free_port()
            certs = work / "certs"
            log_file = stack.enter_context(open(work / "webhook.log", "wb"))
            webhook = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gitops-webhook"),
                    "--kubeconfig",
                    str(cluster.kubeconfig("gitops")),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--cert-dir",
                    str(certs),
                    "--workers",
                    str(args.workers),
                    "--client-ca-file",
                    str(cluster.webhook_client_ca),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
                env={**env, "GITOPS_WEBHOOK_REFRESH_SECONDS": "3600", "GITOPS_WEBHOOK_POLL_SECONDS": "1"},
            )
            http = urllib3.PoolManager(cert_reqs=ssl.CERT_NONE)

            def readyz() -> dict[str, Any]:
                try:
                    return dict(json.loads(http.request("GET", f"https://127.0.0.1:{port}/readyz").data))
                except (urllib3.exceptions.HTTPError, ValueError):
                    return {}

            while not readyz().get("ready"):
                time.sleep(0.5)
            time.sleep(2)
            empty_rss = rss_mb(webhook.pid)

            # the managed objects, synced by an Application
            repo = work / "repo"
            docs = objects(args.objects)
            commit_objects(repo, docs)
            # The webhook loads Git's state as soon as it sees the Application (its probes need none of the objects):
            # the load is timed from the Application's creation, while the sync runs.
            started = time.monotonic()
            run([kubectl, "gitops", "create", "bench", "--repo", str(repo), "--dest-namespace", "bench"], env)
            run([kubectl, "gitops", "sync", "bench"], env)
            synced_after = time.monotonic() - started
            configmaps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]

            deadline = time.monotonic() + 600
            loaded_after = None
            while time.monotonic() < deadline:
                entry = (readyz().get("applications") or {}).get("gitops-system/bench") or {}
                if entry.get("objects") == args.objects:
                    loaded_after = time.monotonic() - started
                    break
                time.sleep(0.5)
            time.sleep(2)
            full_rss = rss_mb(webhook.pid)
            results["memory"] = {
                "rss_mb_no_objects": empty_rss,
                "objects": args.objects,
                "rss_mb_loaded": full_rss,
                "kb_per_object": (full_rss - empty_rss) * 1024 / args.objects,
                "load_seconds": loaded_after,
                "create_and_sync_seconds": synced_after,
            }
            print("memory", json.dumps(results["memory"]), flush=True)
            if args.memory_only:
                raise Finished

            # 2. throughput over HTTPS (allowed requests: no audit write)
            body = json.dumps(
                review(
                    {
                        **live,
                        "metadata": {
                            **live["metadata"],
                            "labels": {**live["metadata"].get("labels", {}), "team": "web"},
                        },
                    },
                    live,
                )
            ).encode()
            client = (cluster.webhook_client.cert, cluster.webhook_client.key)
            results["throughput"] = bench_throughput(
                f"https://127.0.0.1:{port}/validate", certs / "ca.crt", client, body, args.seconds
            )
            print("throughput", json.dumps(results["throughput"]), flush=True)

            # 3. writes through the API server: no webhook, the no-op webhook, gitops-webhook (the same registration
            # for both, the same certificate), in turns
            noop_port = free_port()
            noop = stack.enter_context(
                subprocess.Popen(
                    [
                        str(build_noop_webhook(work)),
                        f"--listen=127.0.0.1:{noop_port}",
                        f"--cert={certs / 'tls.crt'}",
                        f"--key={certs / 'tls.key'}",
                    ],
                    stderr=log_file,
                )
            )
            stack.callback(noop.terminate)
            wait_for_port(noop_port)
            urls = {
                "noop": f"https://127.0.0.1:{noop_port}/validate",
                "webhook": f"https://127.0.0.1:{port}/validate",
            }

            def register(configuration: str) -> None:
                if configuration == "none":
                    run([kubectl, "delete", "validatingwebhookconfiguration", NAME, "--ignore-not-found"], env)
                else:
                    url = urls[configuration]
                    run([kubectl, "gitops", "install", "--webhook-url", url, "--ca-file", str(certs / "ca.crt")], env)
                    registered = json.loads(
                        run([kubectl, "get", "validatingwebhookconfiguration", NAME, "-o=json"], env)
                    )
                    assert {w["clientConfig"]["url"] for w in registered["webhooks"]} == {url}, registered
                time.sleep(1)

            processes = {
                "client": [os.getpid()],
                **{name: [record.pid] for name, record in state.processes.items()},
                "webhook": process_tree(webhook.pid),
                "noop-webhook": [noop.pid],
            }
            saturated = compare_writes(kube, configmaps, processes, register, args.rounds)
            results["api_server_writes"] = saturated
            print("writes, closed loop", json.dumps(saturated), flush=True)
            paced = compare_writes(kube, configmaps, processes, register, args.rounds, rate=args.paced_rate)
            results["api_server_writes_paced"] = paced
            print(f"writes, open loop at {args.paced_rate:g}/s", json.dumps(paced), flush=True)
        except Finished:
            pass  # --memory-only: what follows is not measured
        finally:
            if webhook is not None:
                os.killpg(webhook.pid, signal.SIGTERM)
                webhook.wait(timeout=30)
            cluster.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
