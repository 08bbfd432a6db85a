"""A sweep on a real Ray cluster started here on 127.0.0.1 (a head and a separate worker node),
into the same folder layout `hmdpc sweep` writes, so that `hmdpc report` reads it unchanged; and a
run whose worker is killed mid-training is retried by Ray and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hmdp import sweep

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and one worker node, each a `ray start` of its own, one CPU each."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run(
        [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
         "--temp-dir", str(temp), *common],
        check=True, capture_output=True, env=env,
    )
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([RAY, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                       check=True, capture_output=True, env=env)
        import ray

        ray.init(address=address, log_to_driver=False)
        deadline = time.time() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2, "the worker node did not join"
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env)


def _sweep_file(tmp: Path, body: str) -> Path:
    model = ROOT / "models" / "switched_lqr.hmdp"
    path = tmp / "study.toml"
    path.write_text(f'model = "{model}"\n{body}')
    return path


GRID = """
[settings]
updates = 6
batch = 8
scenarios = 32
[set]
modes = 1
[axes]
set.n = [1, 2]
algo = ["hpo", "ppo"]
seed = [0, 1]
"""


def test_a_grid_runs_as_ray_tasks_into_the_folders_hmdpc_reports(cluster, tmp_path, run_cli):
    file = _sweep_file(tmp_path, GRID)
    results = sweep.run_on_ray(file, on_result=None)
    assert sorted(r["name"] for r in results) == sorted(
        f"n={n},algo={a},seed={s}" for n in (1, 2) for a in ("hpo", "ppo") for s in (0, 1)
    )
    assert all(r["ended"] == "finished" for r in results), results
    folder = tmp_path / "study"
    for r in results:
        test = json.loads((folder / "runs" / r["name"] / "test.json").read_text())
        assert test["total"]["mean"] == pytest.approx(r["test"]["total"]["mean"], rel=0, abs=0)
    # Finished runs are not submitted again, and the command line sees them finished.
    assert sweep.run_on_ray(file, on_result=None) == []
    code, out, err = run_cli("sweep", file, "--dry-run")
    assert code == 0 and "8 finished, 0 started, 0 to start" in out, out + err
    code, out, err = run_cli("report", folder)
    assert code == 0, err
    assert "| problem | algo=hpo | algo=ppo |" in out and "| n=2 |" in out, out
    # The same run trained by Ray and by `hmdpc sweep --run` gives the same figures.
    name = "n=2,algo=ppo,seed=1"
    ray_test = (folder / "runs" / name / "test.json").read_text()
    again = tmp_path / "again"
    code, out, err = run_cli("sweep", file, "--folder", again, "--run", name, "--quiet")
    assert code == 0, err
    assert (again / "runs" / name / "test.json").read_text() == ray_test


def test_a_run_whose_worker_dies_is_retried_and_resumes_from_its_checkpoint(cluster, tmp_path):
    body = GRID.replace("updates = 6", "updates = 3000").replace("set.n = [1, 2]", "set.n = [2]")
    body = body.replace('algo = ["hpo", "ppo"]', 'algo = ["hpo"]').replace("seed = [0, 1]", "seed = [0]")
    file = _sweep_file(tmp_path, body)
    run_folder = tmp_path / "study" / "runs" / "n=2,algo=hpo,seed=0"
    results: list = []
    driver = threading.Thread(target=lambda: results.extend(sweep.run_on_ray(file, on_result=None)))
    driver.start()
    # Wait until the run has trained a while (a checkpoint is written), then kill its worker.
    deadline = time.time() + 180
    while not (run_folder / "best.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (run_folder / "best.ckpt").exists(), "the run wrote no checkpoint"
    pid = int((run_folder / ".lock").read_text().strip())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=600)
    assert not driver.is_alive()
    assert len(results) == 1 and results[0]["ended"] == "finished", results
    assert results[0]["pid"] != pid, "the run was not retried in another worker"
    record = json.loads((run_folder / "run.json").read_text())
    assert record["earlier_commands"], "the retried run did not resume the killed one"
    assert (run_folder / "test.json").exists()
