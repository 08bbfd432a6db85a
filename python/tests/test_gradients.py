"""The step and its VJP on numpy arrays, and the JAX adapter: its gradient against JAX finite
differences and against what `hmdpc gradcheck` checks, at the same points."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hmdp
import hmdp.jax
from conftest import MODELS, ROOT

jax.config.update("jax_enable_x64", True)


def objective(step, inputs, weights):
    """Σ w · outputs of the step (next states and costs), as hmdpc gradcheck weighs them."""
    next_w, cost_w = weights
    next_states, costs = step(inputs)
    return sum(jnp.sum(next_w[k] * v) for k, v in next_states.items()) + sum(
        jnp.sum(cost_w[k] * v) for k, v in costs.items()
    )


def differences(step, inputs, weights, names):
    """Per input element: the Richardson-extrapolated central difference of the objective, or
    NaN where one-sided differences disagree (a kink or a jump within the step) — the rule and
    the step sizes of `hmdpc gradcheck`, point by point. Returns {name: (fd, at_kink, noise)}."""
    points = next(iter(inputs.values())).shape[0]
    out = {name: (np.full(np.shape(inputs[name]), np.nan), np.zeros(np.shape(inputs[name]), dtype=bool),
                  np.zeros(np.shape(inputs[name]))) for name in names}
    for p in range(points):
        one = {k: jnp.asarray(np.asarray(v)[p : p + 1]) for k, v in inputs.items()}
        w = tuple({k: v[p : p + 1] for k, v in part.items()} for part in weights)
        compiled = jax.jit(lambda x: objective(step, x, w))
        f = lambda x: float(compiled(x))  # noqa: E731
        f0 = f(one)
        for name in names:
            base = np.asarray(one[name])
            for index in np.ndindex(base.shape):
                x = base[index]
                h = 1e-4 * max(abs(x), 1.0)

                def at(value):
                    moved = base.copy()
                    moved[index] = value
                    return f({**one, name: jnp.asarray(moved)})

                plus, minus, half_plus, half_minus = at(x + h), at(x - h), at(x + h / 2), at(x - h / 2)
                fd = (4 * (half_plus - half_minus) / h - (plus - minus) / (2 * h)) / 3
                size = max(abs(v) for v in [plus, minus, half_plus, half_minus, f0])
                noise = 16 * np.finfo(float).eps * size / h
                excess = (half_plus - 2 * f0 + half_minus) / (h / 2) - (plus - 2 * f0 + minus) / h / 2
                at_p = (p, *index[1:])
                if abs(excess) > 1e-3 * max(abs(fd), 1.0) + 4 * noise:
                    out[name][1][at_p] = True
                else:
                    out[name][0][at_p] = fd
                    out[name][2][at_p] = noise
    return out


def test_step_and_vjp_on_numpy_match_the_interpreter():
    model = hmdp.compile(ROOT / "models/inventory.hmdp", set={"items": 3})
    inputs, next_w, cost_w = model.gradcheck_points(seed=0, count=5)
    jit_next, jit_costs = model.step(inputs)
    ref_next, ref_costs = model.step(inputs, backend="interp")
    for k in jit_next:
        np.testing.assert_allclose(jit_next[k], ref_next[k], rtol=1e-12)
    assert jit_next["pipe"].shape == (5, 3, 1) and jit_costs["holding"].shape == (5,)
    grads = model.vjp(inputs, next_w, cost_w)
    ref = model.vjp(inputs, next_w, cost_w, backend="interp")
    assert set(grads) == {"onhand", "pipe", "q"}
    for k in grads:
        assert grads[k].shape == inputs[k].shape
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-12)
    with pytest.raises(KeyError, match="no array for `q`"):
        model.step({k: v for k, v in inputs.items() if k != "q"})


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_the_adapter_gradient_is_what_hmdpc_gradcheck_checks(path, run_cli):
    seed, points = 0, 2
    model = hmdp.compile(path, instance_seed=seed)
    step = hmdp.jax.step_function(model)
    inputs, next_w, cost_w = model.gradcheck_points(seed=seed, count=points)
    inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    weights = ({k: jnp.asarray(v) for k, v in next_w.items()}, {k: jnp.asarray(v) for k, v in cost_w.items()})
    names = [s["name"] for s in model.layout()["states"]] + [c["name"] for c in model.layout()["continuous"]]
    grads = jax.grad(lambda x: objective(step, x, weights))(inputs)
    fds = differences(step, inputs, weights, names)
    code, out, err = run_cli("gradcheck", path, "--seed", seed, "--points", points)
    assert code == 0, err
    table = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^\s+(\S+)\s+(\d+)\s+(\d+)\s+\S+$", out, re.M)}
    for name in names:
        fd, kinks, noise = fds[name]
        ad = np.asarray(grads[name])
        smooth = ~kinks
        error = np.maximum(np.abs(ad - fd) - noise, 0) / np.maximum(np.maximum(np.abs(ad), np.abs(fd)), 1.0)
        assert np.all(error[smooth] <= 1e-6), f"{name}: largest relative error {error[smooth].max():.3e}"
        # The same elements are checked and the same sit at kinks as in hmdpc gradcheck's table.
        assert table[name] == (int(smooth.sum()), int(kinks.sum())), name


def test_the_adapter_works_under_jit_and_its_vjp_is_the_compiled_one():
    model = hmdp.compile(ROOT / "models/switched_lqr.hmdp")
    step = hmdp.jax.step_function(model)
    inputs, next_w, cost_w = model.gradcheck_points(seed=1, count=4)
    jinputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    (next_states, costs), pullback = jax.vjp(jax.jit(step), jinputs)
    expected_next, expected_costs = model.step(inputs)
    np.testing.assert_array_equal(np.asarray(next_states["x"]), expected_next["x"])
    np.testing.assert_array_equal(np.asarray(costs["quad"]), expected_costs["quad"])
    (grads,) = pullback(({"x": jnp.asarray(next_w["x"])}, {"quad": jnp.asarray(cost_w["quad"])}))
    expected = model.vjp(inputs, next_w, cost_w)
    np.testing.assert_array_equal(np.asarray(grads["u"]), expected["u"])
    np.testing.assert_array_equal(np.asarray(grads["x"]), expected["x"])
    assert np.all(np.asarray(grads["mode"]) == 0), "a discrete label has no gradient"
