"""The step as a JAX function with the compiled VJP as its derivative (``jax.custom_vjp``), so a
model can sit inside a user's JAX code and be backpropagated through.

>>> import jax, hmdp, hmdp.jax
>>> jax.config.update("jax_enable_x64", True)
>>> model = hmdp.compile("models/switched_lqr.hmdp", set={"modes": 1})
>>> step = hmdp.jax.step_function(model)
>>> next_states, costs = step(inputs)          # inputs: dict name -> (batch, *shape)

``inputs`` names every state, noise and action of the model (discrete labels as floats), as
:meth:`hmdp.Model.step` takes them. Gradients flow to the states and the continuous actions;
noise and discrete labels get zero cotangents. Values are computed in float64 and returned in
JAX's default float type (enable ``jax_enable_x64`` for float64 gradients).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _hmdp

__all__ = ["step_function"]


def _numpy(tree: dict) -> dict:
    return {k: np.ascontiguousarray(np.asarray(v, dtype=np.float64)) for k, v in tree.items()}


def step_function(model: _hmdp.Model, backend: str = "jit") -> Callable[[dict], tuple[dict, dict]]:
    """``f(inputs) -> (next_states, costs)``: the model's step on a batch, differentiable with
    ``jax.grad``/``jax.vjp`` through the compiled vector-Jacobian product. Works under
    ``jax.jit`` (the kernels run as a host callback); not under ``jax.vmap``: batch instead."""
    layout = model.layout()
    states = [s["name"] for s in layout["states"]]
    shapes = {s["name"]: tuple(s["shape"]) for s in layout["states"]}
    costs = list(layout["costs"])
    differentiable = set(states) | {c["name"] for c in layout["continuous"]}

    def result_shapes(inputs: dict) -> tuple[dict, dict]:
        batch = next(iter(inputs.values())).shape[0]
        dtype = jnp.result_type(float)
        next_shape = {s: jax.ShapeDtypeStruct((batch, *shapes[s]), dtype) for s in states}
        cost_shape = {c: jax.ShapeDtypeStruct((batch,), dtype) for c in costs}
        return next_shape, cost_shape

    def forward(inputs: dict) -> tuple[dict, dict]:
        dtype = jnp.result_type(float)

        def host(values: dict) -> tuple[dict, dict]:
            next_states, cost_values = model.step(_numpy(values), backend)
            cast = lambda d: {k: np.asarray(v, dtype=dtype) for k, v in d.items()}  # noqa: E731
            return cast(next_states), cast(cost_values)

        return jax.pure_callback(host, result_shapes(inputs), inputs)

    @jax.custom_vjp
    def step(inputs: dict) -> tuple[dict, dict]:
        return forward(inputs)

    def step_forward(inputs: dict):
        return forward(inputs), inputs

    def step_backward(inputs: dict, cotangents: tuple[dict, dict]):
        next_bar, costs_bar = cotangents
        dtype = jnp.result_type(float)
        wanted = {k: jax.ShapeDtypeStruct(v.shape, dtype) for k, v in inputs.items() if k in differentiable}

        def host(values: dict, next_values: dict, cost_values: dict) -> dict:
            grads = model.vjp(_numpy(values), _numpy(next_values), _numpy(cost_values), backend)
            return {k: np.asarray(grads[k], dtype=dtype) for k in wanted}

        grads = jax.pure_callback(host, wanted, inputs, next_bar, costs_bar)
        return ({k: grads[k] if k in grads else jnp.zeros_like(v) for k, v in inputs.items()},)

    step.defvjp(step_forward, step_backward)
    return step
