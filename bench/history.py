"""Benchmark of history on its own local control plane.

1. records: N sync records over 100 Applications (20 objects each, their finish times spread over 30 days), written
   through engine.adapters.history.HistoryStore; etcd's bytes per record (etcd_mvcc_db_total_size_in_use_in_bytes
   after compaction and defragmentation, before and after), and the time of `kubectl gitops history APP` (one
   Application's records) and `kubectl gitops changes --since 30d` (every Application's: metadata only), at 1,000
   and then at 10,000 records, so that the table shows how they grow.
2. diff --from/--to: Git's objects of two commits of a 500-object repository (bench/diff_sync.py's mix, 10% of the
   objects changed between them), rendered and compared, against `git diff` of the same two commits (the peer at
   its best: no rendering, no cluster), median of 5, side by side.

Usage: .venv/bin/python bench/history.py [--records 1000,10000] [--out bench/results/history.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from audit_flood import Etcd  # noqa: E402
from diff_sync import objects, timed, tool_env  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402

from engine.adapters.history import HistoryStore  # noqa: E402
from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.core.history import (  # noqa: E402
    CommitInfo,
    ObjectAction,
    RecordedObject,
    Result,
    SyncRecord,
    Trigger,
    counts_of,
    object_digest,
)
from engine.core.objects import ObjectKey  # noqa: E402

APPS = 100
OBJECTS = 20
NOW = datetime.datetime.now(datetime.UTC)


def application(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "gitops-system"},
        "spec": {"source": {"repoURL": "https://git.example/shop.git"}, "destination": {"namespace": name}},
    }


def record(app: str, i: int, total: int) -> SyncRecord:
    finished = NOW - datetime.timedelta(days=30) + datetime.timedelta(days=30) * i / total
    items = tuple(
        RecordedObject(
            ObjectKey("", "ConfigMap", app, f"cm-{n}"),
            ObjectAction.CONFIGURED if n == i % OBJECTS else ObjectAction.UNCHANGED,
            object_digest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{n}"}, "data": {"i": i}}),
        )
        for n in range(OBJECTS)
    )
    return SyncRecord(
        application=app,
        namespace="gitops-system",
        id=0,
        commit=CommitInfo(f"{i:040x}", f"release {i}", "Dev <dev@example.com>", finished.isoformat()),
        trigger=Trigger.AUTOMATED,
        user="system:serviceaccount:gitops-system:gitops-controller",
        started=finished - datetime.timedelta(seconds=3),
        finished=finished,
        result=Result.SUCCEEDED,
        render_digest="0" * 64,
        objects=items,
        counts=counts_of(items),
    )


def median_of(argv: list[str], env: dict[str, str], repeat: int, ok: tuple[int, ...] = (0,)) -> float:
    return statistics.median(timed(argv, env, ok) for _ in range(repeat))


def records_benchmark(client: KubeClient, env: dict[str, str], etcd: Etcd, sizes: list[int]) -> list[dict[str, Any]]:
    store = HistoryStore(client, "gitops-system")
    apps = [f"app-{n:03d}" for n in range(APPS)]
    for app in apps:
        client.request(
            "POST",
            "/apis/gitops.kubectl-gitops.io/v1alpha1/namespaces/gitops-system/applications",
            body=application(app),
        )
    out = []
    written = 0
    etcd.compact_and_defragment()
    _, base = etcd.sizes()
    for size in sizes:
        per_app = size // APPS
        have = written // APPS

        def write(app: str, have: int = have, per_app: int = per_app) -> None:
            for i in range(have, per_app):
                store.add(record(app, i, per_app))

        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(write, apps))
        elapsed = time.perf_counter() - started
        new = size - written
        written = size
        etcd.compact_and_defragment()
        _, in_use = etcd.sizes()
        history = median_of(["kubectl", "gitops", "history", apps[0]], env, 5)
        changes = median_of(["kubectl", "gitops", "changes", "--since", "31d"], env, 3)
        out.append(
            {
                "records": size,
                "ms per record written": round(1000 * elapsed / new, 2),
                "etcd bytes per record (in use, compacted)": round((in_use - base) / size),
                "history APP (s)": round(history, 3),
                "changes --since 31d (s)": round(changes, 3),
            }
        )
        print(out[-1], flush=True)
    return out


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def diff_benchmark(env: dict[str, str], work: Path, kubectl: str, count: int = 500) -> dict[str, Any]:
    repo = work / "corpus"
    repo.mkdir()
    items = objects(count)
    for i, obj in enumerate(items):
        (repo / f"{i:05d}.yaml").write_text(json.dumps(obj))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "a")
    first = git(repo, "rev-parse", "HEAD")
    for i, obj in enumerate(items):
        if i % 10 == 0 and obj["kind"] == "ConfigMap":
            obj["data"] = {"config.yaml": f"replicas: {i + 1}\nmode: changed\n", "index": str(i)}
            (repo / f"{i:05d}.yaml").write_text(json.dumps(obj))
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "b")
    second = git(repo, "rev-parse", "HEAD")
    subprocess.run([kubectl, "create", "namespace", "corpus"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["kubectl", "gitops", "create", "corpus", "--repo", str(repo), "--dest-namespace", "corpus"],
        env=env,
        check=True,
        capture_output=True,
    )
    ours = median_of(["kubectl", "gitops", "diff", "corpus", "--from", first, "--to", second], env, 5, ok=(1,))
    peer = median_of(["git", "-C", str(repo), "diff", first, second], env, 5)
    return {
        "objects": count,
        "diff --from/--to (s)": round(ours, 3),
        "git diff (s)": round(peer, 3),
        "ratio (ours / git diff)": round(ours / peer, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="1000,10000")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.records.split(",")]
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "state")
        state = cluster.up()
        try:
            env = tool_env(cluster, state.bin_dir, work)
            kubectl = str(Path(state.bin_dir) / "kubectl")
            subprocess.run(["kubectl", "gitops", "install"], env=env, check=True, capture_output=True)
            client = KubeClient(KubeTarget(kubeconfig=str(cluster.kubeconfig("admin"))))
            etcd = Etcd(f"http://127.0.0.1:{state.ports['etcd-client']}")
            results = {
                "diff": diff_benchmark(env, work, kubectl),
                "records": records_benchmark(client, env, etcd, sizes),
            }
        finally:
            cluster.down()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
