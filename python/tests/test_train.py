"""Training from Python: the same run as `hmdpc train`, bit for bit; run folders, evaluation,
the policy in the environment, Ctrl-C; and a JAX training loop through the adapter."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hmdp
import hmdp.jax
from conftest import ROOT
from hmdp.env import VectorEnv

jax.config.update("jax_enable_x64", True)

SETTINGS = {"updates": 6, "batch": 8, "scenarios": 24, "hidden": [16, 16]}


def flags(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        out += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


def curve_without_seconds(folder) -> list[list[str]]:
    rows = [line.split(",") for line in (folder / "curve.csv").read_text().splitlines()]
    return [row[:1] + row[2:] for row in rows]


@pytest.mark.parametrize(
    ("model_file", "overrides", "algo"),
    [("inventory.hmdp", {"items": 3}, "hpo"), ("switched_lqr.hmdp", {"modes": 1}, "ppo"), ("machine_modes.hmdp", {}, "hpo-nocross")],
)
def test_a_short_training_is_the_cli_run_bit_for_bit(tmp_path, run_cli, model_file, overrides, algo):
    path = ROOT / "models" / model_file
    settings = {**SETTINGS, "algo": algo, "seed": 2}
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    code, _, err = run_cli("train", path, *sets, *flags(settings), "--out", tmp_path / "cli", "--quiet")
    assert code == 0, err
    model = hmdp.compile(path, set=overrides)
    result = hmdp.train(model, tmp_path / "py", **settings)
    assert result["updates"] == 6 and not result["interrupted"]
    for name in ["best.ckpt", "final.ckpt"]:
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert curve_without_seconds(tmp_path / "py") == curve_without_seconds(tmp_path / "cli")
    # The Python run's folder reads as a CLI run's: `hmdpc eval` evaluates it.
    code, out, err = run_cli("eval", tmp_path / "py")
    assert code == 0, err
    run = hmdp.open_run(tmp_path / "py")
    assert run.config["algo"] == algo and run.config["hidden"] == [16, 16]
    evaluation = run.evaluate()
    printed = dict(re.findall(r"^\s+(\S+)\s+(-?[\d.]+) ± [\d.]+$", out, re.M))
    for record in evaluation["records"]:
        assert f"{record['mean']:.4f}" == printed[record["term"]]
    assert evaluation["per_scenario"].shape == (24, len(model.layout()["costs"]))


def test_settings_are_the_cli_settings():
    model = hmdp.compile(ROOT / "models/switched_lqr.hmdp")
    with pytest.raises(ValueError, match="updatez"):
        hmdp.train(model, "/tmp/never", updatez=3)
    with pytest.raises(ValueError, match="comes from the model"):
        hmdp.train(model, "/tmp/never", set=[["n", 2]])
    with pytest.raises(ValueError, match="larger than the training set"):
        hmdp.train(model, "/tmp/never", batch=64, scenarios=32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "inventory"
    model = hmdp.compile(ROOT / "models/inventory.hmdp", set={"items": 3})
    hmdp.train(model, folder, **SETTINGS)
    return hmdp.open_run(folder)


def test_evaluation_is_records_ready_for_pandas(trained):
    evaluation = trained.evaluate(policy="final", scenarios=16)
    assert evaluation["scenarios"] == 16 and evaluation["unit"] == "per period per items"
    assert [r["term"] for r in evaluation["records"]] == ["holding", "shortage", "fixed", "total"]
    total = evaluation["total"]
    assert total["low"] < total["mean"] < total["high"]
    assert abs(sum(t["mean"] for t in evaluation["terms"].values()) - total["mean"]) < 1e-9
    random = trained.evaluate(policy="random", scenarios=16)
    assert random["total"]["mean"] != total["mean"]
    curve = trained.curve()
    assert curve["update"][0] == 0 and curve["update"][-1] == 6
    assert len(curve["dev_total"]) == len(curve["dev_holding"]) == len(curve["train"])
    with pytest.raises(hmdp.HmdpError, match="not a run folder|cannot read|no run"):
        hmdp.open_run(ROOT / "models")


def test_the_policy_in_the_environment_is_the_evaluated_policy(trained):
    model = trained.model
    layout = model.layout()
    n = trained.config["scenarios"]
    env = VectorEnv(model, n, scenario_set="test")
    env.reset(seed=trained.config["scenario_seed"])
    policy = trained.policy("best")
    sums = np.zeros((n, len(layout["costs"])))
    for t in range(model.horizon):
        _, _, _, _, info = env.step(env.policy_actions(policy))
        if t >= model.warmup:
            for k, term in enumerate(layout["costs"]):
                sums[:, k] += info["costs"][term]
    np.testing.assert_array_equal(sums / layout["report_scale"], trained.evaluate()["per_scenario"])


def test_ctrl_c_stops_training_cleanly(tmp_path):
    folder = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import signal
        import hmdp
        # Ctrl-C as in a terminal: a shell that starts the tests in the background (`&` without
        # job control) has them ignore SIGINT, and a Python started so keeps ignoring it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        model = hmdp.compile({str(ROOT / 'models/switched_lqr.hmdp')!r})
        result = hmdp.train(model, {str(folder)!r}, updates=100000, batch=8, scenarios=16, hidden=[8])
        print("interrupted", result["interrupted"], "updates", result["updates"])
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # The curve is first written after the second update: training is under way.
    while not (folder / "curve.csv").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise AssertionError(f"training did not stop within 120 s of SIGINT; stdout: {out!r}; stderr: {err[-4000:]!r}")
    assert child.returncode == 0, err
    found = re.search(r"interrupted True updates (\d+)", out)
    assert found and 0 < int(found.group(1)) < 100000, out
    assert (folder / "final.ckpt").exists() and (folder / "best.ckpt").exists()
    assert hmdp.open_run(folder).evaluate(policy="final", scenarios=4)["scenarios"] == 4


def test_a_jax_training_loop_through_the_adapter_lowers_the_cost():
    """A linear feedback u = K x for the LQR, fitted by gradient descent through 20 steps of the
    compiled model inside JAX."""
    model = hmdp.compile(ROOT / "models/switched_lqr.hmdp", set={"modes": 1})
    step = hmdp.jax.step_function(model)
    env = VectorEnv(model, 32, scenario_set="train")
    env.reset(seed=0)
    x0 = jnp.asarray(env.states()["x"])

    def cost(gain):
        x, total = x0, 0.0
        for _ in range(model.horizon):
            u = x @ gain
            next_states, costs = step({"x": x, "u": u, "mode": jnp.zeros(x.shape[0])})
            total = total + jnp.mean(costs["quad"])
            x = next_states["x"]
        return total

    value_and_grad = jax.jit(jax.value_and_grad(cost))
    gain = jnp.zeros((8, 8))
    losses = []
    for _ in range(5):
        loss, grad = value_and_grad(gain)
        losses.append(float(loss))
        gain = gain - 0.1 * grad / jnp.linalg.norm(grad)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0], losses
    # The gradient is the derivative: a step along it changes the cost as it says.
    _, grad = value_and_grad(gain)
    direction = grad / jnp.linalg.norm(grad)
    h = 1e-4
    forward = jax.jit(cost)
    fd = (forward(gain + h * direction) - forward(gain - h * direction)) / (2 * h)
    assert abs(float(fd) - float(jnp.vdot(grad, direction))) <= 1e-5 * max(1.0, abs(float(fd)))
