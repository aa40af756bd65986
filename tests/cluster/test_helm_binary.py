"""The cached helm binary, built from its Go module next to the control plane, is the pinned release and renders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from localcluster import build
from localcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def test_cached_helm_reports_the_pin_and_renders_a_chart(local_cluster: LocalCluster, tmp_path: Path) -> None:
    state = local_cluster.load_state()
    assert state is not None
    helm = Path(state.bin_dir) / "helm"
    # Keep helm's config, cache and data out of the user's home.
    env = {**os.environ, **{f"HELM_{kind}_HOME": str(tmp_path / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}}

    def run(*args: str) -> str:
        proc = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
        return proc.stdout

    assert run("version", "--short").strip() == build.read_pins().helm

    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-settings\n"
        "  namespace: {{ .Release.Namespace }}\n"
        "data:\n"
        "  greeting: {{ .Values.greeting | quote }}\n"
    )
    rendered = run("template", "demo", str(chart), "--namespace", "apps", "--set", "greeting=hi")
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert documents == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "demo-settings", "namespace": "apps"},
            "data": {"greeting": "hi"},
        }
    ]
