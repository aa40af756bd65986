"""Benchmark: the memory of the webhook's index of Git's stored forms, and what keeping it compactly saves.

On its own local control plane: asks the API server for the stored form of N objects of the benchmark's mix
(bench/diff_sync.py: 40% ConfigMaps, 20% Secrets, 20% Services, 20% Deployments), as the webhook does when it loads
an Application (a dry-run apply of each, 16 at a time: `engine.gitstate.stored_form`), and times that. Then, each in a
fresh process, builds the index (ObjectKey -> GitObject) from those forms, kept three ways, and reports the resident
memory it adds, per object, and the decision's p50/p99 (bench/webhook.py's: an allowed label, a denied image) against
a Deployment of that index:

- plain:     as JSON decoding leaves them (what the webhook kept before)
- interned:  every key and short string interned (engine.core.compact.interned)
- compact:   interned, and one shared copy per distinct declared-field set (engine.core.compact.DeclaredSets):
             what engine.gitstate keeps now

And the load as the webhook runs it (`--load`): `engine.gitstate.DesiredState.refresh` in this process, for an
Application of N objects in a Git repository, its time and the resident memory it leaves (what a webhook worker
holds once loaded).

Usage: .venv/bin/python bench/webhook_memory.py [--objects 20000] [--load] [--out bench/results/webhook_memory.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "bench"))

from diff_sync import objects  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402

from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.compare import DesiredObject, concurrently  # noqa: E402
from engine.core.admission import GitObject  # noqa: E402
from engine.core.compact import DeclaredSets, interned  # noqa: E402
from engine.core.manifests import Manifest  # noqa: E402
from engine.core.objects import AppRef, DriftMode, ObjectKey, with_tracking  # noqa: E402
from engine.gitstate import DesiredState, stored_form  # noqa: E402
from webhook import bench_decision  # noqa: E402

APP = AppRef("gitops-system", "bench")
VARIANTS = ("plain", "interned", "compact")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe(kube: KubeClient, count: int, out: Path) -> float:
    """Writes (key, stored, declared) of `count` objects as JSON lines; returns the seconds the probes took."""
    docs = []
    for doc in objects(count):
        obj = with_tracking({**doc, "metadata": {**doc["metadata"], "namespace": "bench"}}, APP, "0" * 40)
        info = kube.resource_for(obj["apiVersion"], obj["kind"])
        assert info is not None
        docs.append(DesiredObject(Manifest("bench", 1, obj), obj, info))
    started = time.perf_counter()
    forms = concurrently(lambda d: stored_form(kube, d)[:2], docs)
    elapsed = time.perf_counter() - started
    with out.open("w") as f:
        for d, (stored, declared) in zip(docs, forms, strict=True):
            f.write(json.dumps([d.key.as_dict(), stored, declared]) + "\n")
    return elapsed


def measure(variant: str, forms: Path) -> dict[str, Any]:
    """In this (fresh) process: the index built from `forms` kept as `variant`, its memory and the decision."""
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    sets = DeclaredSets()
    index: dict[ObjectKey, GitObject] = {}
    with forms.open() as f:
        for line in f:
            key, stored, declared = json.loads(line)
            if variant != "plain":
                stored = interned(stored)
                declared = sets.shared(declared) if variant == "compact" else interned(declared)
            k = ObjectKey(**key)
            index[k] = GitObject(k, APP, DriftMode.ENFORCE, "0" * 40, stored, declared)
    built = time.perf_counter() - started
    gc.collect()
    after = rss_mb()
    deployment = next(g for g in index.values() if g.key.kind == "Deployment")
    live = json.loads(json.dumps(deployment.stored))
    live["metadata"] = {**live["metadata"], "uid": "u", "resourceVersion": "1"}
    decision = bench_decision(deployment, live)
    # The decision caches what it derives from an object (declared paths); with every object asked once, as a busy
    # webhook would, the index grows by that too.
    for g in index.values():
        _ = g.declared_paths
    gc.collect()
    asked = rss_mb()
    n = len(index)
    return {
        "variant": variant,
        "objects": n,
        "rss_mb_before": before,
        "index_mb": after - before,
        "kb_per_object": (after - before) * 1024 / n,
        "index_mb_every_object_asked": asked - before,
        "kb_per_object_every_object_asked": (asked - before) * 1024 / n,
        "build_seconds": built,
        "declared_sets": len(sets) if variant == "compact" else None,
        "decision": decision,
    }


def load(work: Path, count: int) -> dict[str, Any]:
    """The webhook's load of an Application of `count` objects, in this process: seconds and resident memory."""
    repo = work / "repo"
    repo.mkdir()
    for i, doc in enumerate(objects(count)):
        (repo / f"{i:05d}.yaml").write_text(json.dumps(doc))
    for git_args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b",
                     "commit", "-qm", "bench"]):  # fmt: skip
        subprocess.run(["git", *git_args], cwd=repo, check=True)
    app = {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "bench", "namespace": "gitops-system", "generation": 1},
        "spec": {"source": {"repoURL": str(repo)}, "destination": {"namespace": "bench"}, "driftMode": "enforce"},
    }
    kube = KubeClient(KubeTarget(kubeconfig=os.environ["KUBECONFIG"]))
    state = DesiredState(kube, lambda: [app], load_timeout=600)
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    state.refresh()
    seconds = time.perf_counter() - started
    gc.collect()
    after = rss_mb()
    loaded = state.status()["applications"]["gitops-system/bench"]["objects"]
    return {"objects": loaded, "load_seconds": seconds, "rss_mb_before": before, "rss_mb_loaded": after,
            "kb_per_object": (after - before) * 1024 / max(1, loaded)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "webhook_memory.json")
    parser.add_argument("--load", action="store_true", help="only the load, as the webhook runs it")
    parser.add_argument("--measure", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure and args.measure[0] == "load":
        print(json.dumps(load(Path(args.measure[1]), args.objects)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="gitops-bench-memory-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster")
        state = cluster.up(log=lambda m: print(m, file=sys.stderr))
        try:
            kubectl = str(Path(state.bin_dir) / "kubectl")
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig("admin"))}
            subprocess.run([kubectl, "create", "namespace", "bench"], env=env, check=True, capture_output=True)
            kube = KubeClient(KubeTarget(kubeconfig=str(cluster.kubeconfig("admin"))))
            if args.load:
                subprocess.run([kubectl, "apply", "-f", str(ROOT / "manifests" / "crd-application.yaml")], env=env,
                               check=True, capture_output=True)  # fmt: skip
                proc = subprocess.run(
                    [sys.executable, __file__, "--measure", "load", str(work), "--objects", str(args.objects)],
                    env={**env, "XDG_CACHE_HOME": str(work / "cache")}, capture_output=True, text=True, check=True,
                )  # fmt: skip
                print(proc.stdout.strip(), flush=True)
                return
            forms = work / "forms.jsonl"
            probe_seconds = probe(kube, args.objects, forms)
            print(f"{args.objects} stored forms probed in {probe_seconds:.1f} s", flush=True)
        finally:
            cluster.down()
        results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "probe_seconds": probe_seconds, "variants": []}
        for variant in VARIANTS:
            proc = subprocess.run(
                [sys.executable, __file__, "--measure", variant, str(forms)], capture_output=True, text=True, check=True
            )
            row = json.loads(proc.stdout)
            results["variants"].append(row)
            d = row["decision"]
            print(
                f"{variant:<9} index {row['index_mb']:6.1f} MB ({row['kb_per_object']:.2f} KB/object; "
                f"{row['kb_per_object_every_object_asked']:.2f} KB with every object asked) built in "
                f"{row['build_seconds']:.1f} s | decision p50/p99 allowed {d['allowed_label']['p50_ms']:.3f}/"
                f"{d['allowed_label']['p99_ms']:.3f} ms, denied {d['denied_image']['p50_ms']:.3f}/"
                f"{d['denied_image']['p99_ms']:.3f} ms",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
