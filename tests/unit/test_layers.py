"""The layers hold at run time, not only in import-linter's reading (hack/test runs `lint-imports`): the pure core
and its tests run in a Python where git, kubernetes, urllib3, flask and gunicorn cannot be imported."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine.core

ROOT = Path(__file__).resolve().parents[2]
UNAVAILABLE = ("git", "kubernetes", "urllib3", "flask", "gunicorn")
BLOCK = f"import sys\nfor name in {UNAVAILABLE!r}:\n    sys.modules[name] = None  # `import name` raises ImportError\n"


def run_without_io_libraries(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RULE_MODEL_SMOKE": "1"}
    env.pop("RULE_MODEL_EXAMPLES", None)
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_blocker_blocks() -> None:
    """Without this, the two tests below would prove nothing."""
    done = run_without_io_libraries("import git")
    assert done.returncode != 0
    assert "ModuleNotFoundError: import of git halted" in done.stderr


def test_every_core_module_imports_without_the_io_libraries() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules(engine.core.__path__, "engine.core."))
    assert "engine.core.admission" in modules
    done = run_without_io_libraries(
        "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    )
    assert done.returncode == 0, done.stderr


def test_the_core_tests_run_without_the_io_libraries() -> None:
    done = run_without_io_libraries(
        "import pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-W', 'error', 'tests/unit/core']))\n"
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " passed" in done.stdout


def test_the_webhook_arbiter_imports_none_of_the_app() -> None:
    """gunicorn's arbiter imports webhook.cli and the worker class (webhook.server) and serves nothing: what it
    imports is held twice, its copy and the forked worker's (README, the webhook's memory), so the app (Flask, Git,
    the engine's loading) is imported in the worker only."""
    blocked = ("flask", "git", "jinja2", "_gojsonnet", "prometheus_client", "webhook.app", "webhook.asgi")
    _python_passes(
        f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
        "import webhook.cli, webhook.server\n"
        "from gunicorn.util import load_class\n"
        "assert load_class('webhook.server.Worker') is webhook.server.Worker\n"
    )


def test_go_jsonnet_is_loaded_only_to_render_jsonnet() -> None:
    """go-jsonnet's library is several MB in every process that imports it; the webhook's worker and the plugin
    load it only when a source has a Jsonnet file."""
    _python_passes(
        "import sys\nimport engine.adapters.render, engine.gitstate, webhook.app, plugin.cli\n"
        "assert '_gojsonnet' not in sys.modules\n"
    )


def _python_passes(program: str) -> None:
    """`program` run by a fresh interpreter in the project: it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
