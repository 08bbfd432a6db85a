"""Shared fixtures: the repository, its shipped models, and the `hmdpc` binary the Python
results are compared with (`$HMDPC`, else built with cargo)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted((ROOT / "models").glob("*.hmdp"))


def _build_hmdpc() -> Path:
    subprocess.run(["cargo", "build", "--locked", "--bin", "hmdpc"], cwd=ROOT, check=True)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT, check=True, capture_output=True
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "hmdpc"


@pytest.fixture(scope="session")
def hmdpc() -> Path:
    given = os.environ.get("HMDPC")
    path = Path(given) if given else _build_hmdpc()
    assert path.exists(), f"no hmdpc binary at {path}"
    return path


@pytest.fixture(scope="session")
def run_cli(hmdpc):
    """Runs hmdpc with arguments; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [str(hmdpc), *map(str, args)], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
        )
        return done.returncode, done.stdout, done.stderr

    return run
