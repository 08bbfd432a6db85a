"""hmdp from Python: compile a `.hmdp` model, step it as a gymnasium environment or as a
differentiable function, train a policy with the same trainer as `hmdpc train`, and read run
folders.

>>> import hmdp
>>> model = hmdp.compile("models/inventory.hmdp", set={"items": 3}, instance_seed=0)
>>> model.report()["costs"][0]["class"]
'kinked'

Submodules: :mod:`hmdp.env` (gymnasium environments, needs ``gymnasium``) and :mod:`hmdp.jax`
(a ``jax.custom_vjp`` of the step, needs ``jax``). Everything runs the library `hmdpc` runs:
the same compiler, kernels, scenario streams, trainer and run folders. See docs/python.md.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from . import _hmdp
from ._hmdp import HmdpError, Model, Policy, Run, Simulator

__all__ = ["HmdpError", "Model", "Policy", "Run", "Simulator", "compile", "open_run", "train"]


def compile(
    path: str | os.PathLike,
    set: Mapping[str, float] | None = None,
    instance_seed: int = 0,
) -> Model:
    """Compile the model file at ``path``.

    ``set`` overrides sizes and scalar parameters as ``hmdpc ... --set NAME=VALUE`` does;
    ``instance_seed`` draws the parameters declared with ``~`` (``--instance-seed``).
    A model with errors raises :class:`HmdpError`, whose text is what ``hmdpc`` prints and
    whose ``diagnostics`` attribute lists each diagnostic as a dict.
    """
    overrides = [(str(k), float(v)) for k, v in (set or {}).items()]
    return _hmdp.compile(os.fspath(path), overrides, int(instance_seed))


def train(
    model: Model | str | os.PathLike,
    out: str | os.PathLike,
    *,
    backend: str = "jit",
    force: bool = False,
    resume: bool = False,
    save_every: float = 30.0,
    progress: bool = False,
    **settings: Any,
) -> dict:
    """Train a policy on ``model`` and write the run folder ``out``, as ``hmdpc train`` does.

    ``settings`` are the command line's training flags with underscores, e.g.
    ``algo="ppo"``, ``updates=200``, ``batch=64``, ``hidden=[64, 64]``, ``lr=1e-3``,
    ``seed=1``, ``scenario_seed=0``, ``normalize=False``, ``preset="paper"`` (the fields of
    ``run.json``'s ``config``); a misspelt one raises ``ValueError``. The model's ``set``
    overrides and instance seed come from :func:`compile`. The same settings give the same
    checkpoints as ``hmdpc train``, bit for bit.

    The GIL is released while training; Ctrl-C (KeyboardInterrupt) stops the run cleanly as in
    the command line (one more evaluation, the final checkpoint written), and the result says
    ``interrupted: True``. Returns a dict: ``folder``, ``updates``, ``best_update``,
    ``best_dev``, ``seconds``, ``seconds_in_updates``, ``interrupted``.
    """
    if not isinstance(model, Model):
        model = compile(model)
    return _hmdp.train(
        model,
        os.fspath(out),
        json.dumps(settings),
        backend,
        bool(force),
        bool(resume),
        float(save_every),
        bool(progress),
    )


def open_run(folder: str | os.PathLike) -> Run:
    """Open a run folder written by ``hmdpc train`` or :func:`train`.

    The returned :class:`Run` has ``config``, ``model``, ``curve()``,
    ``evaluate(policy="best", scenarios=None)`` and ``policy("best")``.
    """
    return _hmdp.open_run(os.fspath(folder))
