"""Benchmark of rendering a source from Git: the Jsonnet guestbook against the same app as plain YAML.

Both are read from a bare mirror of one local repository (examples/jsonnet-guestbook and examples/guestbook
committed side by side) through engine.adapters.source and engine.adapters.render, as engine.compare.load_desired
reads a directory source, without a cluster: what a render costs the webhook's refresh and every diff. With
`--cpp`, the C++ binding (`jsonnet`, if installed) evaluates the same program, to show why go-jsonnet was taken.
Median of N runs.

Usage: .venv/bin/python bench/sources.py [--runs 50] [--cpp]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.adapters.render import DIRECTORY_SUFFIXES, render_files  # noqa: E402
from engine.adapters.source import GitSource  # noqa: E402
from engine.core.application import DirectoryOptions, JsonnetVar  # noqa: E402

JSONNET = DirectoryOptions(jsonnet_libs=("jsonnet/vendor",), ext_vars=(JsonnetVar("environment", "bench"),))


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cpp", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(ROOT / "examples" / "jsonnet-guestbook", repo / "jsonnet")
        shutil.copytree(ROOT / "examples" / "guestbook", repo / "yaml")
        git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "sources"], check=True)
        source = GitSource(str(repo), cache_dir=Path(tmp) / "cache")
        sha = source.resolve(None).sha

        def render(path: str, options: DirectoryOptions) -> int:
            files = source.read_files(sha, path, DIRECTORY_SUFFIXES)
            found = render_files(files, path, options=options, base=path, read=lambda p: source.read_file(sha, p))
            return len(found)

        for name, path, options in (("jsonnet", "jsonnet/guestbook", JSONNET), ("yaml", "yaml", DirectoryOptions())):
            count = render(path, options)
            ms = median_ms(functools.partial(render, path, options), args.runs)
            print(f"{name:8} {count} objects  {ms:7.2f} ms")
        if args.cpp:
            try:
                cpp = importlib.import_module("_jsonnet")
            except ImportError:
                print("the C++ binding is not installed (pip install jsonnet)")
                return
            program = (repo / "jsonnet" / "guestbook" / "guestbook-ui.jsonnet").read_text()
            folder = repo / "jsonnet"

            def evaluate() -> str:
                def imported(base: str, rel: str) -> tuple[str, bytes]:
                    for candidate in (folder / "guestbook" / rel, folder / "vendor" / rel):
                        if candidate.is_file():
                            return str(candidate), candidate.read_bytes()
                    raise RuntimeError(rel)

                out: str = cpp.evaluate_snippet(
                    "guestbook-ui.jsonnet", program, ext_vars={"environment": "bench"}, import_callback=imported
                )
                return out

            print(f"C++ binding, the same program: {median_ms(evaluate, max(3, args.runs // 10)):7.2f} ms")


if __name__ == "__main__":
    main()
