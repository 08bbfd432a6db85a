"""The search mode: Optuna samples training settings from a sweep file's `[search]`, each trial a
run folder `trial=K` of the sweep folder, poor trials pruned on their dev cost as they train,
the study kept so that a second search adds to it, and `hmdpc report` tabulating the trials."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hmdp import sweep

ROOT = Path(__file__).resolve().parents[2]

SEARCH = """
[settings]
updates = 40
batch = 8
scenarios = 32
eval_every = 5
[set]
modes = 1
n = 2
[search]
trials = 3
[search.space]
lr = { low = 1e-4, high = 1e-2, log = true }
hidden = [[16, 16], [32, 32]]
"""


def _file(tmp: Path) -> Path:
    path = tmp / "search.toml"
    path.write_text(f'model = "{ROOT / "models" / "switched_lqr.hmdp"}"\n{SEARCH}')
    return path


def test_trials_are_runs_of_the_sweep_folder_and_a_second_search_adds_to_the_study(tmp_path, run_cli):
    file = _file(tmp_path)
    study = sweep.search(file, on_result=None)
    assert len(study.trials) == 3
    assert all(t.state.is_finished() for t in study.trials)
    folder = tmp_path / "search"
    for t in study.trials:
        run = folder / "runs" / f"trial={t.number}"
        assert (run / "test.json").exists()
        config = json.loads((run / "run.json").read_text())["config"]
        settings = t.user_attrs["settings"]
        assert config["lr"] == settings["lr"] and config["hidden"] == settings["hidden"]
        assert 1e-4 <= config["lr"] <= 1e-2 and config["hidden"] in ([16, 16], [32, 32])
        if t.state == optuna.trial.TrialState.COMPLETE:
            curve = (run / "curve.csv").read_text().splitlines()[1:]
            best = min(float(line.split(",")[-1]) for line in curve)
            assert t.value == pytest.approx(best, rel=1e-5)
    # Again, asking for one more trial: the study (SWEEP/search.db) goes on.
    study = sweep.search(file, trials=4, on_result=None)
    assert len(study.trials) == 4 and (folder / "runs" / "trial=3" / "test.json").exists()
    code, out, err = run_cli("report", folder)
    assert code == 0, err
    assert "## Search trials" in out and "| trial | lr | hidden |" in out, out
    assert all(f"\n| {k} | " in out for k in range(4)), out
    # The command line runs grids, not searches, and says where to go.
    code, out, err = run_cli("sweep", file)
    assert code == 2 and "hmdp.sweep.search" in err, err


def test_a_pruned_trial_stops_early_and_is_tested_as_it_stands(tmp_path):
    file = _file(tmp_path)
    # A threshold no dev cost meets: every trial is pruned at its first evaluation.
    study = sweep.search(file, trials=1, pruner=optuna.pruners.ThresholdPruner(upper=-1e300), on_result=None)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    run = tmp_path / "search" / "runs" / "trial=0"
    test = json.loads((run / "test.json").read_text())
    assert test["stopped_early"] is True
    rows = (run / "curve.csv").read_text().splitlines()[1:]
    assert int(rows[-1].split(",")[0]) < 40, "the pruned trial trained to the end"
