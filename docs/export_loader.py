"""Runs a policy written by `hmdpc export` with numpy alone (no hmdp, no safetensors package).

    policy = load("exported")                       # the folder `hmdpc export RUN -o exported` wrote
    act(policy, {"onhand": [3, 0], "pipe": [[0], [0]]})
    # {"discrete": {"order": {"chosen": "buy", "probabilities": {...}}}, "continuous": {"q": [...]}}

`act` gives what `hmdpc act RUN --state JSON` prints (deterministic mode: the most likely
label, the network's continuous actions). Parameters the policy observes come from the exported
instance unless the state gives them. A bound that depends on the state is, in policy.json, an
object {"given": "state", "expression": ..., "line": ..., "reads": ..., "pass": ...}: the model's
expression for it, which you evaluate in the state (parameters from `hmdpc instance`) and pass
as `bounds={"q": ([lower per element], [upper per element])}` (only the side that is given is
read); an action whose `when` is marked "given" needs `active={"q": [True, False, ...]}`.

From the command line: python export_loader.py FOLDER STATE_JSON [BOUNDS_JSON] prints the JSON.
"""

import json
import struct
import sys

import numpy as np


def load(folder):
    """The description and the tensors of an exported policy."""
    with open(f"{folder}/policy.json", encoding="utf-8") as f:
        description = json.load(f)
    with open(f"{folder}/policy.safetensors", "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name != "__metadata__":
            start, end = info["data_offsets"]
            tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return {"description": description, "tensors": tensors}


def forward(policy, network, x):
    """A network's outputs for one row of float32 features: tanh layers, a linear last one."""
    h = x
    for layer in policy["description"]["networks"][network]["layers"]:
        h = (h @ policy["tensors"][layer["weight"]] + policy["tensors"][layer["bias"]]).astype(np.float32)
        if layer["activation"] == "tanh":
            h = np.tanh(h)
    return h


def features(description, state):
    values = []
    for feature in description["features"]:
        value = state.get(feature["name"], feature.get("value"))
        if value is None:
            raise KeyError(f"the state gives no value for `{feature['name']}`")
        values.append(np.asarray(value, dtype=np.float64).reshape(-1))
    norm = description["normalisation"]
    x = (np.concatenate(values) - np.asarray(norm["center"])) / np.asarray(norm["scale"])
    return x.astype(np.float32)


def softplus(x):
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


def squash(z, lo, hi, scale, shift):
    if np.isfinite(lo) and np.isfinite(hi):
        return lo + (hi - lo) * (1.0 / (1.0 + np.exp(-z)))
    if np.isfinite(lo):
        return lo + scale * softplus(z + shift)
    if np.isfinite(hi):
        return hi - scale * softplus(shift - z)
    return scale * z


def act(policy, state, bounds=None, active=None):
    """The policy's decision in `state` (a dict of states, and optionally parameters, by name)."""
    description = policy["description"]
    x = features(description, state)
    chosen, discrete = {}, {}
    if description["networks"]["discrete"] is not None:
        logits = forward(policy, "discrete", x).astype(np.float64)
        for head in description["discrete"]:
            labels = head["labels"]
            picks, odds = [], []
            for k in range(head["len"]):
                start = head["offset"] + k * len(labels)
                row = logits[start : start + len(labels)]
                log_probs = row - (np.log(np.sum(np.exp(row - row.max()))) + row.max())
                picks.append(int(np.argmax(log_probs)))
                odds.append(dict(zip(labels, np.exp(log_probs).tolist())))
            chosen[head["action"]] = picks
            scalar = head["shape"] == []
            discrete[head["action"]] = {
                "chosen": labels[picks[0]] if scalar else [labels[p] for p in picks],
                "probabilities": odds[0] if scalar else odds,
            }
    continuous = {}
    if description["networks"]["continuous"] is not None:
        z = forward(policy, "continuous", x).astype(np.float64)
        for head in description["continuous"]:
            name, values = head["action"], []
            for k in range(head["len"]):
                label_of = lambda action: chosen[action][k if len(chosen[action]) > 1 else 0]
                when = head["active_when"]
                if when == "given":
                    acts = active[name][k]
                else:
                    acts = when is None or description_label(description, when["action"], label_of(when["action"])) in when["labels"][k]
                if not acts:
                    values.append(0.0)
                    continue
                regime = head["regime"]
                label = 0 if regime is None else label_of(regime["action"])
                raw = z[head["offset"] + k * (1 if regime is None else regime["labels"]) + label]
                lo, hi = bound(head["lower"], k, -np.inf, bounds, name, 0), bound(head["upper"], k, np.inf, bounds, name, 1)
                if isinstance(head["pieces"], dict):
                    piece = label_of(head["pieces"]["action"])
                    lo = none_as(head["pieces"]["lower"][piece][k], -np.inf)
                    hi = none_as(head["pieces"]["upper"][piece][k], np.inf)
                values.append(float(squash(float(raw), lo, hi, head["squash"]["scale"], head["squash"]["shift"])))
            continuous[name] = values[0] if head["shape"] == [] else values
    return {"discrete": discrete, "continuous": continuous}


def description_label(description, action, index):
    return next(h["labels"][index] for h in description["discrete"] if h["action"] == action)


def none_as(value, default):
    return default if value is None else value


def bound(spec, k, default, given, name, side):
    if spec is None:
        return default
    if isinstance(spec, dict) and spec.get("given") == "state":
        return given[name][side][k]
    return none_as(spec["values"][k], default)


if __name__ == "__main__":
    state = json.loads(sys.argv[2])
    bounds = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(act(load(sys.argv[1]), state, bounds)))
