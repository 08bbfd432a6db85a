"""Packaging, compiling, the compiler's report as data, and errors as the CLI prints them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hmdp
from conftest import MODELS, ROOT


def test_the_package_imports_as_hmdp_with_its_rust_half():
    assert hmdp.__name__ == "hmdp"
    assert hmdp._hmdp.__name__ == "hmdp._hmdp"
    for name in ["compile", "train", "open_run", "HmdpError", "Model", "Run", "Policy"]:
        assert getattr(hmdp, name).__doc__, f"hmdp.{name} has no docstring"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_every_shipped_model_compiles_with_its_report_and_parameters(path, run_cli):
    model = hmdp.compile(path, instance_seed=3)
    report = model.report()
    code, out, _ = run_cli("compile", path)
    assert code == 0
    assert report["text"] == out, "the report's text is what `hmdpc compile` prints"
    assert report["model"] == model.name
    assert {c["cost"] for c in report["costs"]} == set(model.layout()["costs"])
    assert all(c["class"] in {"constant", "smooth", "kinked", "regime-split", "jump"} for c in report["costs"])
    # The parameters are the instance `hmdpc instance --seed 3` prints.
    code, out, _ = run_cli("instance", path, "--seed", "3")
    assert code == 0
    printed = json.loads(out)["params"]
    assert set(printed) == set(model.params)
    for name, values in model.params.items():
        np.testing.assert_array_equal(values, np.array(printed[name], dtype=np.float64).reshape(values.shape))


def test_the_report_shows_the_hybrid_structure_of_the_inventory():
    report = hmdp.compile(ROOT / "models/inventory.hmdp").report()
    actions = {a["name"]: a for a in report["actions"]}
    assert actions["order"]["kind"] == "discrete" and actions["order"]["labels"] == ["skip", "buy"]
    assert actions["q"]["kind"] == "continuous" and actions["q"]["shape"] == [10]
    assert actions["q"]["acts_in_some_regimes"]
    fixed = next(c for c in report["costs"] if c["cost"] == "fixed")
    assert fixed["class"] == "constant" and fixed["regimes"] == ["order"]
    pipe = next(u for u in report["updates"] if u["state"] == "pipe")
    assert pipe["class"] == "regime-split" and pipe["regimes"] == ["order"]
    holding = next(c for c in report["costs"] if c["cost"] == "holding")
    assert holding["class"] == "kinked" and holding["sites"] and holding["sites"][0]["line"] > 1
    assert [s["name"] for s in report["states"]] == ["onhand", "pipe"]
    assert report["unit"] == "per period per items"


def test_overrides_and_rewrites_are_reported():
    model = hmdp.compile(ROOT / "models/inventory_fixed_cost.hmdp", set={"items": 3})
    assert model.params["h"].shape == (3,)
    assert model.overrides == [("items", 3.0)]
    rewrites = model.report()["rewrites"]
    assert rewrites and rewrites[0]["action"] == "q.order" and rewrites[0]["line"] > 1


def test_a_model_with_errors_raises_the_diagnostics_the_cli_prints(tmp_path, run_cli):
    bad = tmp_path / "bad.hmdp"
    bad.write_text("model bad\nstate x = 0\naction u: real\nstep {\n  x' = x + v\n  cost c = x^2\n}\nhorizon 5\n")
    with pytest.raises(hmdp.HmdpError) as caught:
        hmdp.compile(bad)
    code, _, err = run_cli("compile", bad)
    assert code == 1
    assert str(caught.value) == err.rstrip()
    [d] = caught.value.diagnostics
    assert (d["file"], d["line"], d["column"], d["severity"]) == (str(bad), 5, 12, "error")
    assert d["code"].startswith("hmdp::") and "`v`" in d["message"]
    assert "help" in d


def test_a_misspelt_override_and_a_missing_file_raise_the_same_exception(run_cli):
    with pytest.raises(hmdp.HmdpError, match="no size or scalar parameter `itemz`") as caught:
        hmdp.compile(ROOT / "models/inventory.hmdp", set={"itemz": 3})
    assert caught.value.diagnostics == []
    code, _, err = run_cli("compile", ROOT / "models/inventory.hmdp", "--set", "itemz=3")
    assert str(caught.value) == err.rstrip()
    with pytest.raises(hmdp.HmdpError, match="cannot read"):
        hmdp.compile(ROOT / "models/nothing-here.hmdp")
