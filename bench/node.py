"""Benchmark of the local node and the webhook's pods (the machine's one node: none may run when this starts).

1. `up --node`: seconds until the node is Ready (control plane included), and `down`.
2. the image: `hack/image --load` seconds (base images already made or not: both said), its size uncompressed.
3. writes through the API server to managed ConfigMaps, 20 writers, as in bench/webhook.py (compare_writes): no
   webhook registered; two pods of gitops-webhook behind their Service; two pods of the no-op webhook
   (bench/noop_webhook) behind a Service of their own, with a certificate from the same CA. The registration is the
   same but for the Service's name, so the API server's side of the call is the same for both webhooks (and each
   has its own connections: no call rides on a connection to the other's pods).

Usage: .venv/bin/python bench/node.py [--out bench/results/node.json] [--rounds 3] [--objects 500]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT))

from localcluster import node as nodehost  # noqa: E402
from localcluster import pki  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402

from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.core.webhookconfig import NAME  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_webhook", ROOT / "bench" / "webhook.py")
assert _spec is not None
assert _spec.loader is not None
bench_webhook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_webhook)
NS = "gitops-system"
NOOP_IMAGE = "localhost/kubectl-gitops/noop-webhook:bench"


def noop_objects() -> list[dict[str, Any]]:
    """Two pods of the no-op webhook with the certificate in Secret noop-webhook-tls, and their Service."""
    labels = {"app.kubernetes.io/name": "noop-webhook"}
    container = {
        "name": "noop",
        "image": NOOP_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["--listen=0.0.0.0:8443", "--cert=/certs/tls.crt", "--key=/certs/tls.key"],
        "ports": [{"name": "https", "containerPort": 8443}],
        "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 2},
        "volumeMounts": [{"name": "certs", "mountPath": "/certs", "readOnly": True}],
    }
    pod = {"containers": [container], "volumes": [{"name": "certs", "secret": {"secretName": "noop-webhook-tls"}}]}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "noop-webhook", "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "noop-webhook", "namespace": NS},
        "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
    }
    return [deployment, service]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "node.json")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of writes, each with all three backends")
    parser.add_argument("--objects", type=int, default=500, help="objects the Application manages")
    parser.add_argument("--paced-rate", type=float, default=100.0, help="writes/s in all of the open-loop rounds")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="gitops-bench-node-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster")
        started = time.perf_counter()
        state = cluster.up(with_node=True, log=lambda m: print(m, file=sys.stderr))
        results["up_node_seconds"] = round(time.perf_counter() - started, 2)
        print("up --node", results["up_node_seconds"], flush=True)
        git_daemon: subprocess.Popen[bytes] | None = None
        try:
            kubectl = str(Path(state.bin_dir) / "kubectl")
            env = bench_webhook.tool_env(cluster, state.bin_dir, work)

            def run(*argv: str, stdin: str | None = None) -> str:
                return str(bench_webhook.run([kubectl, *argv], env, stdin))

            cached = (
                "localhost/kubectl-gitops/python"
                in subprocess.run(
                    ["buildah", "--root", str(Path.home() / ".cache/kubectl-gitops/image/storage"), "images"],
                    capture_output=True,
                    text=True,
                ).stdout
            )
            started = time.perf_counter()
            image = subprocess.run(
                [str(ROOT / "hack" / "image"), "--load", str(cluster.dir)], capture_output=True, text=True, check=True
            )
            built = re.search(r"built \S+ in (\d+) s: (\d+) MiB", image.stderr)
            imported = re.search(r"containerd in (\d+) s", image.stderr)
            assert built, image.stderr
            assert imported, image.stderr
            results["image"] = {
                "hack_image_seconds": round(time.perf_counter() - started, 1),
                "base_images_cached_before": cached,
                "build_seconds": int(built.group(1)),
                "load_seconds": int(imported.group(1)),
                "size_mib_uncompressed": int(built.group(2)),
            }
            print("image", json.dumps(results["image"]), flush=True)

            run("apply", "-k", str(ROOT / "manifests"))
            run(
                "-n",
                NS,
                "create",
                "configmap",
                "gitops-webhook-client-ca",
                f"--from-file=ca.crt={cluster.webhook_client_ca}",
            )
            run("apply", "-k", str(ROOT / "manifests" / "webhook"))
            run("-n", NS, "rollout", "status", "deployment/gitops-webhook", "--timeout=300s")
            ca = work / "ca.crt"
            ca.write_bytes(
                base64.b64decode(
                    run("-n", NS, "get", "secret", "gitops-webhook-tls", "-o", "jsonpath={.data.ca\\.crt}")
                )
            )
            run("gitops", "install", "--webhook-service", "--ca-file", str(ca))

            noop = work / "noop-webhook"
            subprocess.run(
                ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(noop), "."],
                cwd=ROOT / "bench" / "noop_webhook",
                env={**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
                check=True,
            )
            archive = work / "noop.oci.tar"
            nodehost.binary_image_archive(archive, noop, NOOP_IMAGE, ["/noop-webhook"])
            subprocess.run(
                [
                    str(Path(state.bin_dir) / "ctr"),
                    f"--address={cluster.dir / 'node/containerd/containerd.sock'}",
                    "--namespace=k8s.io",
                    "images",
                    "import",
                    "--local",
                    str(archive),
                ],
                check=True,
                capture_output=True,
            )
            # The no-op webhook's certificate, for its own Service's name, from the CA the registration trusts.
            secret = json.loads(run("-n", NS, "get", "secret", "gitops-webhook-tls", "-o", "json"))["data"]
            ca_dir = work / "noop-ca"
            ca_dir.mkdir()
            for key in ("ca.crt", "ca.key"):
                (ca_dir / key).write_bytes(base64.b64decode(secret[key]))
            leaf = pki.CertificateAuthority.load(ca_dir).issue_server(ca_dir, "noop", [f"noop-webhook.{NS}.svc"], [])
            run("-n", NS, "create", "secret", "tls", "noop-webhook-tls", f"--cert={leaf.cert}", f"--key={leaf.key}")
            for obj in noop_objects():
                run("apply", "-f", "-", stdin=json.dumps(obj))
            run("-n", NS, "rollout", "status", "deployment/noop-webhook", "--timeout=120s")

            docs = bench_webhook.objects(args.objects)
            bench_webhook.commit_objects(work / "git" / "bench", docs)
            port = bench_webhook.free_port()
            git_daemon = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    f"--base-path={work / 'git'}",
                    f"--listen={nodehost.HOST_ADDRESS}",
                    f"--port={port}",
                    str(work / "git"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            url = f"git://{nodehost.HOST_ADDRESS}:{port}/bench"
            run("create", "namespace", "bench")
            run("gitops", "create", "bench", "--repo", url, "--dest-namespace", "bench")
            run("gitops", "sync", "bench")
            configmaps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]

            def backend_ips(name: str) -> set[str]:
                pods = json.loads(run("-n", NS, "get", "pods", "-l", f"app.kubernetes.io/name={name}", "-o", "json"))
                return {p["status"].get("podIP") for p in pods["items"] if not p["metadata"].get("deletionTimestamp")}

            def loaded() -> bool:
                http = urllib3.PoolManager(cert_reqs="CERT_NONE")
                for ip in backend_ips("gitops-webhook"):
                    try:
                        status = json.loads(http.request("GET", f"https://{ip}:8443/readyz", timeout=5).data)
                    except (urllib3.exceptions.HTTPError, ValueError):
                        return False
                    if (status.get("applications") or {}).get(f"{NS}/bench", {}).get("objects") != args.objects:
                        return False
                return True

            def register(configuration: str) -> None:
                run("delete", "validatingwebhookconfiguration", NAME, "--ignore-not-found")
                if configuration != "none":
                    run("gitops", "install", "--webhook-service", "--ca-file", str(ca))
                if configuration == "noop":
                    registration = json.loads(run("get", "validatingwebhookconfiguration", NAME, "-o", "json"))
                    for hook in registration["webhooks"]:
                        hook["clientConfig"]["service"]["name"] = "noop-webhook"
                    run("replace", "-f", "-", stdin=json.dumps(registration))
                time.sleep(1)

            kube = KubeClient(KubeTarget(kubeconfig=str(cluster.kubeconfig("admin"))), pool_size=20)
            register("webhook")
            deadline = time.monotonic() + 600
            while not loaded():
                assert time.monotonic() < deadline, "the replicas did not load the Application"
                time.sleep(0.5)
            processes = {"client": [os.getpid()], **{name: [r.pid] for name, r in state.processes.items()}}
            saturated = bench_webhook.compare_writes(kube, configmaps, processes, register, args.rounds)
            results["api_server_writes_through_pods"] = saturated
            print("writes, closed loop", json.dumps(saturated), flush=True)
            paced = bench_webhook.compare_writes(
                kube, configmaps, processes, register, args.rounds, rate=args.paced_rate
            )
            results["api_server_writes_through_pods_paced"] = paced
            print(f"writes, open loop at {args.paced_rate:g}/s", json.dumps(paced), flush=True)
        finally:
            if git_daemon is not None:
                git_daemon.terminate()
                git_daemon.wait(timeout=30)
            started = time.perf_counter()
            cluster.down()
            results["down_seconds"] = round(time.perf_counter() - started, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
