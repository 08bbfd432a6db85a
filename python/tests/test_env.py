"""The gymnasium environments: spaces from the model, check_env on every shipped model, and
scenario streams identical to `hmdpc simulate`'s."""

from __future__ import annotations

import math
import re

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import hmdp
from conftest import MODELS, ROOT
from hmdp.env import Env, VectorEnv


def test_the_spaces_of_a_hybrid_action_come_from_the_model():
    model = hmdp.compile(ROOT / "models/inventory.hmdp", set={"items": 4})
    env = VectorEnv(model, 3)
    single = env.single_action_space
    assert isinstance(single, gymnasium.spaces.Dict)
    assert single["order"] == gymnasium.spaces.Discrete(2)
    q = single["q"]
    assert isinstance(q, gymnasium.spaces.Box) and q.shape == (4,)
    assert np.all(q.low == 0) and np.all(np.isinf(q.high)), "q >= 0: a lower bound, no upper"
    # observe { onhand, pipe, mu, h, p }: 4 + 4·1 + 3·4 features.
    assert env.single_observation_space.shape == (20,)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 20) and obs.dtype == np.float64
    assert list(info["scenarios"]) == [0, 1, 2]
    # A state-dependent bound is not in the Box; the current one is in `bounds()`.
    lost = VectorEnv(hmdp.compile(ROOT / "models/lost_sales.hmdp"), 2)
    assert np.all(lost.single_action_space["q"].low == 0)
    assert np.all(np.isinf(lost.single_action_space["q"].high))
    lost.reset(seed=0)
    low, high = lost.bounds()
    assert np.all(np.isfinite(high["q"])) and np.all(high["q"] >= low["q"])


def test_costs_rewards_truncation_and_clipping():
    model = hmdp.compile(ROOT / "models/inventory.hmdp", set={"items": 2})
    env = VectorEnv(model, 2)
    env.reset(seed=1)
    action = {"order": np.array([1, 0]), "q": np.array([[-5.0, 3.0], [7.0, 7.0]])}
    _, reward, terminated, truncated, info = env.step(action)
    assert set(info["costs"]) == {"holding", "shortage", "fixed"}
    total = sum(info["costs"].values())
    np.testing.assert_array_equal(reward, -total)
    assert info["costs"]["fixed"][0] > 0 and info["costs"]["fixed"][1] == 0
    assert not terminated.any() and not truncated.any()
    # The order was clipped at its bound 0 (-5 → 0) and is 0 where the action does not act.
    pipe = env.states()["pipe"]
    np.testing.assert_array_equal(pipe[0, :, -1], [0.0, 3.0])
    np.testing.assert_array_equal(pipe[1, :, -1], [0.0, 0.0])
    for _ in range(model.horizon - 1):
        _, _, _, truncated, _ = env.step(action)
    assert truncated.all() and env.period == model.horizon
    # The next step starts the next scenarios (autoreset), ignoring the action.
    _, reward, _, truncated, info = env.step(action)
    assert not truncated.any() and np.all(reward == 0) and list(info["scenarios"]) == [2, 3]
    with pytest.raises(ValueError, match="takes a label from 0 to 1"):
        env.step({"order": np.array([2, 0]), "q": np.zeros((2, 2))})


# The spaces of an unbounded observation or action are infinite on purpose.
@pytest.mark.filterwarnings("ignore:.*infinity. This is probably too:UserWarning")
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_check_env_passes_on_every_shipped_model(path):
    env = Env(hmdp.compile(path))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    assert env.observation_space.contains(obs)
    action = env.action_space.sample()
    obs, reward, terminated, truncated, info = env.step(action)
    assert math.isfinite(reward) and not terminated and not truncated
    assert set(info["costs"]) == set(env.model.layout()["costs"])


def estimates(per_scenario: list[list[float]]) -> list[tuple[float, float]]:
    """Mean and 95% half-width per column and of the row totals, as hmdp's `Estimate::of`."""

    def add(values) -> float:
        # In order, as Rust's `sum` (Python 3.12's `sum` compensates).
        total = 0.0
        for v in values:
            total += v
        return total

    def estimate(values: list[float]) -> tuple[float, float]:
        n = len(values)
        mean = add(values) / n
        var = add((v - mean) ** 2 for v in values) / (n - 1)
        return mean, 1.96 * math.sqrt(var / n)

    columns = [list(c) for c in zip(*per_scenario)]
    totals = [add(row) for row in per_scenario]
    return [estimate(c) for c in columns] + [estimate(totals)]


def simulated(model: hmdp.Model, scenarios: int, seed: int, backend: str) -> list[list[float]]:
    """The random policy through the environment: each scenario's reported cost per term."""
    env = VectorEnv(model, scenarios, backend=backend)
    layout = model.layout()
    env.reset(seed=seed)
    sums = [[0.0] * len(layout["costs"]) for _ in range(scenarios)]
    for t in range(model.horizon):
        _, _, _, _, info = env.step(env.random_actions())
        if t >= model.warmup:
            for row in range(scenarios):
                for k, term in enumerate(layout["costs"]):
                    sums[row][k] += float(info["costs"][term][row])
    return [[v / layout["report_scale"] for v in row] for row in sums]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_the_random_policy_through_the_env_gives_the_figures_of_hmdpc_simulate(path, run_cli):
    scenarios, seed = 12, 4
    model = hmdp.compile(path)
    code, out, err = run_cli("simulate", path, "--scenarios", scenarios, "--seed", seed)
    assert code == 0, err
    printed = [tuple(map(float, m)) for m in re.findall(r"^\s+\S+\s+(-?[\d.]+) ± ([\d.]+)$", out, re.M)]
    for backend in ["jit", "interp"]:
        ours = [(float(f"{m:.4f}"), float(f"{h:.4f}")) for m, h in estimates(simulated(model, scenarios, seed, backend))]
        assert ours == printed, f"{backend}: {ours} != {printed}"
