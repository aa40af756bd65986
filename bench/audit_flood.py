"""Benchmark: how much etcd grows under a flood of drift attempts, through the real AuditStore and API server.

A flood is N denied attempts carrying a 1 MB value (what an attacker with `edit` can send as fast as the API server
takes them), written through engine.adapters.audit.AuditStore to a real kube-apiserver and etcd on a local control
plane, in three configurations:

1. unbounded: the whole value in every record, one record per attempt (how main recorded them);
2. bounded: values cut to 256 bytes with a digest, one record per attempt (folding off);
3. bounded + folded: identical attempts folded into one record (a tally re-signed in place).

For each: etcd's database size (etcd_mvcc_db_total_size_in_bytes) before and after, the size in use after the API
server's history is compacted and etcd defragmented (what stays), the stored records' bytes, the number of records
and the time per attempt. Prints a table and writes JSON.

Usage: .venv/bin/python bench/audit_flood.py [--attempts 100] [--out bench/results/audit_flood.json]
"""

from __future__ import annotations

import argparse
import base64
import json
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

from engine.adapters.audit import AuditStore, read_records  # noqa: E402
from engine.adapters.kube import KubeClient, KubeTarget  # noqa: E402
from engine.core.auditchain import bounded_value, canonical  # noqa: E402

VALUE = "x" * 1_000_000


def attempt(i: int, *, bounded: bool) -> dict[str, Any]:
    value = bounded_value(VALUE) if bounded else VALUE
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "requestUID": f"flood-{i}",
        "user": "alice",
        "groups": ["developers", "system:authenticated"],
        "operation": "UPDATE",
        "subResource": "",
        "object": {"group": "", "kind": "ConfigMap", "namespace": "shop", "name": "settings"},
        "application": "gitops-system/shop",
        "revision": "f" * 40,
        "mode": "enforce",
        "decision": "denied",
        "reason": "",
        "fields": [{"path": "/data/blob", "kind": "changed", "git": "small", "requested": value}],
    }


class Etcd:
    """etcd's own HTTP endpoints: metrics, and the v3 JSON gateway for compaction and defragmentation."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def sizes(self) -> tuple[int, int]:
        """(database file size, bytes in use)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        found = {}
        for line in text.splitlines():
            for name in ("etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes"):
                if line.startswith(name + " "):
                    found[name] = int(float(line.split()[1]))
        return found["etcd_mvcc_db_total_size_in_bytes"], found["etcd_mvcc_db_total_size_in_use_in_bytes"]

    def compact_and_defragment(self) -> None:
        key = base64.b64encode(b"/").decode()
        revision = int(self._post("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])
        self._post("/v3/kv/compaction", {"revision": revision, "physical": True})
        self._post("/v3/maintenance/defragment", {})


def run(client: KubeClient, kubectl: str, kubeconfig: str, etcd: Etcd, name: str, attempts: int) -> dict[str, Any]:
    namespace = f"flood-{name}"
    subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "create", "namespace", namespace], check=True, capture_output=True
    )
    etcd.compact_and_defragment()
    before, _ = etcd.sizes()
    bounded = name != "unbounded"
    store = AuditStore(client, namespace, publish=lambda cp: None, fold_seconds=0 if name != "folded" else 3600)
    store.append({**attempt(-1, bounded=True), "fields": []})  # the key and the first record, outside the count
    started = time.perf_counter()
    for i in range(attempts):
        store.append(attempt(i, bounded=bounded))
    elapsed = time.perf_counter() - started
    after, in_use = etcd.sizes()
    etcd.compact_and_defragment()
    kept, _ = etcd.sizes()
    records = read_records(client, namespace)
    stored = sum(len(canonical(r)) for r in records)
    # Gone before the next configuration is measured (the namespace controller deletes the records).
    subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "delete", "namespace", namespace, "--timeout=300s"],
        check=True,
        capture_output=True,
    )
    return {
        "configuration": name,
        "attempts": attempts,
        "records": len(records) - 1,
        "record bytes stored": stored,
        "etcd growth": after - before,
        "etcd growth per attempt": (after - before) / attempts,
        "etcd in use after the flood": in_use,
        "etcd after compaction and defragmentation": kept,
        "growth kept per attempt": (kept - before) / attempts,
        "ms per attempt": 1000 * elapsed / attempts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-flood-") as tmp:
        cluster = LocalCluster(Path(tmp) / "state")
        state = cluster.up()
        try:
            kubeconfig = str(cluster.kubeconfig("admin"))
            kubectl = str(Path(state.bin_dir) / "kubectl")
            subprocess.run(
                [
                    kubectl,
                    f"--kubeconfig={kubeconfig}",
                    "apply",
                    "-f",
                    str(ROOT / "manifests" / "namespace.yaml"),
                    "-f",
                    str(ROOT / "manifests" / "crd-auditrecord.yaml"),
                ],
                check=True,
                capture_output=True,
            )
            time.sleep(2)  # the CRD established
            client = KubeClient(KubeTarget(kubeconfig=kubeconfig))
            etcd = Etcd(f"http://127.0.0.1:{state.ports['etcd-client']}")
            results = [
                run(client, kubectl, kubeconfig, etcd, name, args.attempts)
                for name in ("bounded", "folded", "unbounded")
            ]
        finally:
            cluster.down()
    width = max(len(k) for k in results[0])
    for key in results[0]:
        cells = [f"{r[key]:.1f}" if isinstance(r[key], float) else str(r[key]) for r in results]
        print(f"{key:<{width}}  " + "  ".join(f"{c:>14}" for c in cells))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
