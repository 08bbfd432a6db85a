"""Gymnasium environments over a compiled model's kernels.

:class:`VectorEnv` steps ``num_envs`` scenarios together (the JIT kernels by default);
:class:`Env` is one scenario, for ``gymnasium.utils.env_checker.check_env`` and single-env code.

- **Observation**: the model's ``observe`` buffers, flattened and concatenated in order
  (``float64``, unbounded).
- **Action**: a ``Dict`` with one entry per action of the compiled model, in buffer order: each
  discrete choice (``Discrete`` for a scalar, ``MultiDiscrete`` for an array; the choices the
  reformulation added, such as ``q.order``, included) and each continuous action (``Box`` with
  the bounds that are the same in every state, ±inf where a bound depends on the state).
  Continuous values are clipped into their bounds in the current state (the chosen piece's
  bounds when the action has pieces) and are 0 outside their regime, as in every hmdp rollout.
- **Reward**: minus the total cost of the period; ``info["costs"]`` holds each cost term.
- **Episodes** end by truncation at the model's horizon (``terminated`` is always False).
  ``reset(seed=S)`` starts scenarios ``0 .. num_envs`` of the scenario set drawn with scenario
  seed S — the scenarios ``hmdpc simulate --scenario-seed S --scenario-set SET`` runs — and each
  later episode (a reset without a seed, or the autoreset after the horizon) the next
  ``num_envs`` scenarios. Reported figures of hmdpc sum the costs from the model's ``warmup``
  period on and divide by ``layout["report_scale"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from . import _hmdp

__all__ = ["Env", "VectorEnv", "action_space"]


def action_space(layout: dict) -> spaces.Dict:
    """The action space of one scenario, from ``model.layout()``."""
    entries: dict[str, spaces.Space] = {}
    for d in layout["discrete"]:
        labels = len(d["labels"])
        if d["shape"]:
            entries[d["name"]] = spaces.MultiDiscrete(np.full(d["shape"], labels, dtype=np.int64))
        else:
            entries[d["name"]] = spaces.Discrete(labels)
    for c in layout["continuous"]:
        shape = tuple(c["shape"])
        low = np.array([float(v) for v in c["low"]], dtype=np.float64).reshape(shape)
        high = np.array([float(v) for v in c["high"]], dtype=np.float64).reshape(shape)
        entries[c["name"]] = spaces.Box(low, high, shape, dtype=np.float64)
    return spaces.Dict(entries)


class VectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` scenarios of a compiled model, stepped together.

    ``backend`` is ``"jit"`` (compiled kernels) or ``"interp"`` (the reference interpreter; the
    numbers are the same). ``scenario_set`` is ``"train"``, ``"dev"`` or ``"test"``, the sets
    ``hmdpc`` draws with a scenario seed.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, model: _hmdp.Model, num_envs: int, *, backend: str = "jit", scenario_set: str = "test"):
        self.model = model
        self.layout = model.layout()
        self.num_envs = int(num_envs)
        self._sim = _hmdp.Simulator(model, self.num_envs, backend, scenario_set)
        self.single_observation_space = spaces.Box(
            -np.inf, np.inf, (self.layout["features"],), dtype=np.float64
        )
        self.single_action_space = action_space(self.layout)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.horizon = int(self.layout["horizon"])
        self.cost_terms = list(self.layout["costs"])
        self._scenario_seed = 0
        self._policy_seed = 0
        self._episode = 0
        self._started = False
        self._autoreset = False

    # The layout of actions between the dict the user sees and the two matrices of the kernels.
    def _flatten(self, actions: dict) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_envs

        def columns(entries: list) -> np.ndarray:
            parts = [np.asarray(actions[e["name"]], dtype=np.float64).reshape(n, -1) for e in entries]
            return np.ascontiguousarray(np.concatenate(parts, axis=1) if parts else np.zeros((n, 0)))

        missing = [e["name"] for e in self.layout["discrete"] + self.layout["continuous"] if e["name"] not in actions]
        if missing:
            raise KeyError(f"the action has no entry for {', '.join(missing)}")
        return columns(self.layout["discrete"]), columns(self.layout["continuous"])

    def _unflatten(self, discrete: np.ndarray, continuous: np.ndarray) -> dict:
        n = self.num_envs
        out: dict[str, np.ndarray] = {}
        for entries, matrix, dtype in (
            (self.layout["discrete"], discrete, np.int64),
            (self.layout["continuous"], continuous, np.float64),
        ):
            at = 0
            for e in entries:
                size = int(np.prod(e["shape"], dtype=np.int64))
                out[e["name"]] = matrix[:, at : at + size].reshape((n, *e["shape"])).astype(dtype)
                at += size
        return out

    def _start(self) -> tuple[np.ndarray, dict]:
        first = self._episode * self.num_envs
        self._sim.reset(self._scenario_seed, self._policy_seed, first)
        self._started = True
        self._autoreset = False
        return self._sim.observation(), {"period": 0, "scenarios": np.arange(first, first + self.num_envs)}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode. ``seed`` is the scenario seed (and the seed of
        :meth:`random_actions`' streams unless ``options["policy_seed"]`` says otherwise) and
        restarts at the set's first scenarios; without a seed, the next scenarios of the set.
        ``options["first"]`` starts at that scenario index instead."""
        options = options or {}
        if seed is not None:
            seed = int(np.asarray(seed).ravel()[0]) if not isinstance(seed, int) else seed
            self._scenario_seed = seed
            self._policy_seed = seed
            self._episode = 0
        elif self._started:
            self._episode += 1
        if "policy_seed" in options:
            self._policy_seed = int(options["policy_seed"])
        if "first" in options:
            first = int(options["first"])
            if first % self.num_envs:
                raise ValueError("options['first'] must be a multiple of num_envs")
            self._episode = first // self.num_envs
        return self._start()

    def step(self, actions: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One period for every scenario: ``actions`` maps each action's name to an array of
        shape (num_envs, *shape). Reward is minus the total cost; ``info["costs"][term]`` holds
        each term per scenario."""
        n = self.num_envs
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._autoreset:
            self._episode += 1
            obs, info = self._start()
            zeros = np.zeros(n, dtype=bool)
            return obs, np.zeros(n), zeros, zeros.copy(), info
        discrete, continuous = self._flatten(actions)
        period = self._sim.period
        costs = self._sim.step(discrete, continuous)
        truncated = np.full(n, self._sim.period >= self.horizon)
        self._autoreset = bool(truncated[0])
        info: dict[str, Any] = {
            "costs": {term: costs[:, k].copy() for k, term in enumerate(self.cost_terms)},
            "period": period,
        }
        return self._sim.observation(), -costs.sum(axis=1), np.zeros(n, dtype=bool), truncated, info

    @property
    def period(self) -> int:
        """The period the next step runs."""
        return self._sim.period

    def states(self) -> dict:
        """The current states by name, shaped (num_envs, *shape)."""
        return self._sim.states()

    def bounds(self) -> tuple[dict, dict]:
        """The bounds of each continuous action in the current state: (low, high), dicts of
        arrays (num_envs, *shape)."""
        low, high = self._sim.bounds()
        empty = np.zeros((self.num_envs, 0))
        as_dict = lambda m: {k: v for k, v in self._unflatten(empty, m).items()}  # noqa: E731
        return as_dict(low), as_dict(high)

    def random_actions(self) -> dict:
        """The actions ``hmdpc simulate --policy random`` takes now, drawn from each scenario's
        policy stream (seeded by the reset's seed, like ``--seed``)."""
        return self._unflatten(*self._sim.random_actions())

    def policy_actions(self, policy: _hmdp.Policy) -> dict:
        """The actions a trained policy (``run.policy("best")``) takes now: its greedy decision
        on every scenario's observation, as ``hmdpc eval`` evaluates it."""
        return self._unflatten(*self._sim.policy_actions(policy))


class Env(gymnasium.Env):
    """One scenario of a compiled model: the single-env view of :class:`VectorEnv`, with the
    same spaces (unbatched), rewards and info."""

    metadata = {"render_modes": []}

    def __init__(self, model: _hmdp.Model, *, backend: str = "jit", scenario_set: str = "test"):
        self._vector = VectorEnv(model, 1, backend=backend, scenario_set=scenario_set)
        self.model = model
        self.observation_space = self._vector.single_observation_space
        self.action_space = self._vector.single_action_space
        self.horizon = self._vector.horizon

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self._vector.reset(seed=seed, options=options)
        return obs[0], {"period": 0, "scenario": int(info["scenarios"][0])}

    def step(self, action: dict) -> tuple[np.ndarray, float, bool, bool, dict]:
        batched = {k: np.asarray(v)[None, ...] for k, v in action.items()}
        obs, reward, terminated, truncated, info = self._vector.step(batched)
        costs = {k: float(v[0]) for k, v in info["costs"].items()}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {"costs": costs, "period": info["period"]}

    def random_actions(self) -> dict:
        """The action ``hmdpc simulate --policy random`` takes now (see :class:`VectorEnv`)."""
        return {k: v[0] for k, v in self._vector.random_actions().items()}

    def policy_actions(self, policy: _hmdp.Policy) -> dict:
        """The action a trained policy takes now (see :class:`VectorEnv`)."""
        return {k: v[0] for k, v in self._vector.policy_actions(policy).items()}
