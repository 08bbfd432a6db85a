"""hmdp from Python, notebook style: compile the joint replenishment model, train a policy with
HPO, compare it with an order-up-to heuristic written in Python on the same test scenarios,
and plot the learning curve (if matplotlib is installed).

    .venv/bin/python examples/python_inventory.py [UPDATES]

Run from the repository root after the README's set-up command; the run folder is
runs/python-inventory. UPDATES defaults to 150; the comparison is on the same scenarios, so
the difference's confidence interval is narrower than either figure's.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

import hmdp
from hmdp.env import VectorEnv

updates = int(sys.argv[1]) if len(sys.argv) > 1 else 150
root = Path(__file__).resolve().parents[1]

# %% Compile: the report says what the compiler made of the model.
model = hmdp.compile(root / "models/inventory.hmdp")
report = model.report()
print(f"model {model.name}: horizon {model.horizon}, warmup {model.warmup}")
for cost in report["costs"]:
    print(f"  cost {cost['cost']:<9} {cost['class']}")

# %% Train: the same trainer and run folder as `hmdpc train`.
folder = root / "runs/python-inventory"
result = hmdp.train(model, folder, updates=updates, batch=32, force=True)
print(f"trained {result['updates']} updates in {result['seconds']:.1f} s; best dev cost {result['best_dev']:.3f}")
run = hmdp.open_run(folder)
trained = run.evaluate()
scenarios = len(trained["per_scenario"])


# %% A heuristic in Python: when some item's inventory position falls below its reorder point,
# buy every item up to its order-up-to level (one fixed cost for the joint order).
def heuristic(env: VectorEnv) -> dict:
    mu = model.params["mu"]
    lead = env.states()["pipe"].shape[2] + 1
    position = env.states()["onhand"] + env.states()["pipe"].sum(axis=2)
    reorder = mu * lead
    up_to = mu * (lead + 4)
    order = (position < reorder).any(axis=1)
    q = np.maximum(up_to - position, 0.0)
    return {"order": order.astype(int), "q": q}


# The run's test scenarios: its scenario seed, the test set, as many as `evaluate` used.
env = VectorEnv(model, scenarios, scenario_set="test")
env.reset(seed=run.config["scenario_seed"])
totals = np.zeros(scenarios)
for t in range(model.horizon):
    _, reward, _, _, _ = env.step(heuristic(env))
    if t >= model.warmup:
        totals -= reward
totals /= env.layout["report_scale"]
half = 1.96 * totals.std(ddof=1) / math.sqrt(scenarios)

print(f"cost {trained['unit']} on {scenarios} test scenarios (mean ± 95% CI):")
print(f"  HPO policy      {trained['total']['mean']:10.4f} ± {trained['total']['half_width']:.4f}")
print(f"  order-up-to     {totals.mean():10.4f} ± {half:.4f}")
gaps = np.array(trained["per_scenario"]).sum(axis=1) - totals
print(f"  difference      {gaps.mean():+10.4f} ± {1.96 * gaps.std(ddof=1) / math.sqrt(scenarios):.4f} (same scenarios)")

# %% The learning curve.
curve = run.curve()
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot (the run folder has curve.svg)")
else:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["update"], curve["dev_total"], label="HPO, dev set")
    ax.axhline(totals.mean(), color="gray", linestyle="--", label="order-up-to, test set")
    ax.set_xlabel("update")
    ax.set_ylabel(f"cost {trained['unit']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "curve-python.png", dpi=120)
    print(f"plot: {folder / 'curve-python.png'}")
