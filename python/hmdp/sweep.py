"""Sweeps on a Ray cluster: the runs of a sweep file (see docs/sweeps.md) as Ray tasks.

Each run is one task that trains and tests it exactly as ``hmdpc sweep FILE --run NAME`` does,
into the same sweep folder, so ``hmdpc report SWEEP_DIR`` summarises the result unchanged and
``hmdpc sweep FILE`` on one machine can finish what a cluster started (and the other way round).
A task whose worker dies is retried by Ray (``max_retries``); the retry resumes the run from the
checkpoint it left. The run folder's lock keeps two tasks out of one run.

>>> from hmdp import sweep
>>> results = sweep.run_on_ray("sweeps/jrp.toml", address="auto")   # doctest: +SKIP

The sweep folder must be on a file system every node sees (NFS, say), at the same path: pass
absolute paths, or run from a shared working directory.
"""

from __future__ import annotations

import os
import socket
from typing import Callable

from . import _hmdp

__all__ = ["plan", "run", "run_on_ray", "search"]


def plan(file: str | os.PathLike, folder: str | os.PathLike | None = None) -> dict:
    """The runs of a sweep file and where each stands: ``{"folder": ..., "runs": [{"name",
    "cell", "seed", "folder", "status"}, ...]}`` with status ``"done"``, ``"started"`` or
    ``"absent"``. Creates the sweep folder, or checks that it holds this sweep file."""
    return _hmdp.sweep_plan(os.fspath(file), None if folder is None else os.fspath(folder))


def run(file: str | os.PathLike, name: str, folder: str | os.PathLike | None = None, progress: bool = False) -> dict:
    """Trains and tests the run ``name`` of a sweep in this process (resuming a started run,
    skipping a finished one), as ``hmdpc sweep FILE --run NAME`` does. Returns ``{"name",
    "ended", "test"}`` with ``ended`` one of ``"finished"``, ``"skipped"``, ``"interrupted"``."""
    return _hmdp.sweep_run(os.fspath(file), name, None if folder is None else os.fspath(folder), progress)


def _task(file: str, name: str, folder: str | None) -> dict:
    """One run as a Ray task: the run's result, and the host and process that ran it."""
    result = run(file, name, folder)
    result["host"] = socket.gethostname()
    result["pid"] = os.getpid()
    return result


def run_on_ray(
    file: str | os.PathLike,
    address: str | None = None,
    folder: str | os.PathLike | None = None,
    cpus_per_run: int = 1,
    max_retries: int = 3,
    on_result: Callable[[dict], None] | None = print,
) -> list[dict]:
    """Runs every unfinished run of a sweep file as a Ray task and waits for them all.

    ``address`` is a Ray cluster's address (``"auto"``, ``"HOST:PORT"`` as ``ray start`` prints
    it, or ``"ray://HOST:10001"``); ``None`` connects to the cluster this process already joined
    with ``ray.init``, else starts a local one. Each task asks for ``cpus_per_run`` CPUs and its
    trainer uses that many threads. A task whose worker dies is retried up to ``max_retries``
    times and resumes the run from its checkpoint. ``on_result`` is called with each run's
    result as it arrives (``print`` by default; ``None`` for silence).

    Returns one dict per run submitted: ``{"name", "ended", "test", "host", "pid"}``, or
    ``{"name", "ended": "failed", "error"}`` for a run that failed (a NaN cost, say) or whose
    retries ran out. Finished runs are not submitted again.
    """
    import ray

    file = os.path.abspath(os.fspath(file))
    folder = None if folder is None else os.path.abspath(os.fspath(folder))
    todo = [r for r in plan(file, folder)["runs"] if r["status"] != "done"]
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    task = ray.remote(_task).options(
        num_cpus=cpus_per_run,
        max_retries=max_retries,
        retry_exceptions=False,
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(cpus_per_run)}},
    )
    names = {task.remote(file, r["name"], folder): r["name"] for r in todo}
    pending = list(names)
    results = []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                result = {"name": names[ref], "ended": "failed", "error": str(e)}
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def search(
    file: str | os.PathLike,
    folder: str | os.PathLike | None = None,
    trials: int | None = None,
    pruner=None,
    seed: int = 0,
    on_result: Callable[[dict], None] | None = print,
):
    """Searches the training settings of a sweep file's ``[search]`` with Optuna: each trial
    samples the settings of ``[search.space]``, trains a run ``trial=K`` of the sweep folder and
    reports each dev evaluation to Optuna, whose pruner stops poor trials early (a pruned trial
    is tested as it stands and marked ``stopped_early``). The objective is the trial's best dev
    cost. The study lives in ``SWEEP/search.db`` (SQLite), so running the search again adds
    trials to it up to ``trials`` (default: the file's ``search.trials``).

    ``pruner`` is an Optuna pruner (default ``MedianPruner(n_startup_trials=2,
    n_warmup_steps=0)``). Returns the Optuna study; ``hmdpc report SWEEP_DIR`` tabulates the
    trials with their settings, dev and test costs.
    """
    import json

    import optuna

    file = os.path.abspath(os.fspath(file))
    spec = _hmdp.sweep_search_space(file)
    if spec is None:
        raise ValueError(f"{file} has no [search] table")
    swept = plan(file, None if folder is None else os.path.abspath(os.fspath(folder)))
    where = swept["folder"]
    study = optuna.create_study(
        study_name="search",
        storage=f"sqlite:///{os.path.join(where, 'search.db')}",
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner if pruner is not None else optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    wanted = trials if trials is not None else spec["trials"]

    def sample(trial: "optuna.Trial") -> dict:
        settings = {}
        for name, space in spec["space"].items():
            if "choices" in space:
                # Optuna's categorical values are scalars: choose by index among lists.
                k = trial.suggest_categorical(name, list(range(len(space["choices"]))))
                settings[name] = space["choices"][k]
            elif space["integer"]:
                settings[name] = trial.suggest_int(name, int(space["low"]), int(space["high"]), log=space["log"])
            else:
                settings[name] = trial.suggest_float(name, space["low"], space["high"], log=space["log"])
        return settings

    def objective(trial: "optuna.Trial") -> float:
        settings = sample(trial)
        trial.set_user_attr("settings", settings)

        def report(update: int, dev: float) -> bool:
            trial.report(dev, update)
            return trial.should_prune()

        result = _hmdp.sweep_trial(file, trial.number, json.dumps(settings), report, where)
        result["settings"] = settings
        if on_result is not None:
            on_result(result)
        if result["ended"] == "pruned":
            raise optuna.TrialPruned()
        if result["ended"] != "finished" and result["ended"] != "skipped":
            raise KeyboardInterrupt
        return result["best_dev"]

    done = len([t for t in study.trials if t.state.is_finished()])
    if wanted > done:
        study.optimize(objective, n_trials=wanted - done)
    return study
