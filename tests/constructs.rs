//! The constructs models needed beyond the first language (issue 19, items 10–13), each from
//! its reproducer: empty sets and a lead time of 0, observing a `let`, the period index and a
//! terminal cost, and a state that holds a choice.

mod common;

use std::process::Command;

use hmdp::backend::Machine;
use hmdp::ir::ValidModule;
use hmdp::sim;

fn hmdpc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn buffer(module: &ValidModule, name: &str) -> usize {
    module.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("no buffer `{name}`"))
}

/// The largest relative error of the VJP against central finite differences on a few points.
fn gradient_error(module: &ValidModule) -> f64 {
    let instance = sim::instance(module, 1).expect("instance");
    let report = sim::gradcheck::check(module, &instance, 1, 6).expect("gradcheck runs");
    let checked: usize = report.inputs.iter().map(|i| i.checked).sum();
    assert!(checked > 0, "no element could be checked");
    report.max_error()
}

// ---- item 12: empty sets, lead time 0 ----------------------------------------------------------

/// `--set lead=0` was refused (`bad-size`). Every lead time now compiles, and the step means the
/// textbook timing: with a lead of 0 the order is on hand for this period's demand, with 1 it
/// arrives at the end of the period, with more it goes down the pipeline.
#[test]
fn the_inventory_models_run_at_every_lead_time() {
    for model in ["inventory.hmdp", "inventory_fixed_cost.hmdp"] {
        let path = common::root().join("models").join(model);
        for lead in [0.0, 1.0, 2.0, 3.0] {
            let module = common::compile_file(&path, &[("lead", lead)]);
            let slots = module.len(buffer(&module, "pipe"));
            assert_eq!(slots, 10 * (lead as usize).saturating_sub(1), "{model} at lead {lead}");
            let error = gradient_error(&module);
            assert!(error <= 1e-6, "{model} at lead {lead}: gradient off by {error:.3e}");
        }
    }
}

#[test]
fn a_lead_of_zero_puts_the_order_on_hand_before_the_demand() {
    let path = common::root().join("models/inventory.hmdp");
    // What one period does to an item with 3 on hand, 7 in the first pipeline slot (if any), an
    // order of 5 and a demand of 2: (post, onhand').
    let period = |lead: f64| {
        let module = common::compile_file(&path, &[("lead", lead)]);
        let mut buffers = sim::instance(&module, 0).expect("instance");
        buffers.values[buffer(&module, "onhand")].fill(3.0);
        buffers.values[buffer(&module, "pipe")].fill(7.0);
        buffers.values[buffer(&module, "order")][0] = 1.0; // buy
        buffers.values[buffer(&module, "q")].fill(5.0);
        buffers.values[buffer(&module, "demand")].fill(2.0);
        Machine::new(&module, &mut buffers, None).run(&module.step).expect("the step runs");
        (buffers.values[buffer(&module, "post")][0], buffers.values[buffer(&module, "onhand'")][0])
    };
    assert_eq!(period(0.0), (3.0 + 5.0 - 2.0, 6.0), "lead 0: on hand at once");
    assert_eq!(period(1.0), (3.0 - 2.0, 1.0 + 5.0), "lead 1: arrives at the end of the period");
    assert_eq!(period(2.0), (3.0 - 2.0, 1.0 + 7.0), "lead 2: the pipeline's first slot arrives");
}

/// At lead 0 the commands a user runs work end to end: `simulate` on the interpreter and the JIT
/// agree, and a short training run beats the random policy by far.
#[test]
fn lead_zero_simulates_and_trains() {
    let (ok, interp, err) = hmdpc(&["simulate", "--scenarios", "100", "--set", "lead=0", "models/inventory_fixed_cost.hmdp"]);
    assert!(ok, "{err}");
    let (ok, jit, err) =
        hmdpc(&["simulate", "--backend", "jit", "--scenarios", "100", "--set", "lead=0", "models/inventory_fixed_cost.hmdp"]);
    assert!(ok, "{err}");
    let total = |out: &str| -> f64 {
        let line = out.lines().find(|l| l.trim_start().starts_with("total")).expect("a total line");
        line.split_whitespace().nth(1).expect("a figure").parse().expect("a number")
    };
    assert_eq!(total(&interp), total(&jit));

    let folder = std::env::temp_dir().join(format!("hmdp-constructs-lead0-{}", std::process::id()));
    let folder_arg = folder.to_str().expect("utf-8 temp dir");
    let (ok, _, err) = hmdpc(&[
        "train", "--quiet", "--force", "--set", "lead=0", "--updates", "6", "--batch", "32", "--scenarios", "32", "--out", folder_arg,
        "models/inventory.hmdp",
    ]);
    assert!(ok, "{err}");
    let (ok, eval, err) = hmdpc(&["eval", "--scenarios", "100", folder_arg]);
    std::fs::remove_dir_all(&folder).ok();
    assert!(ok, "{err}");
    // The random policy pays thousands per item and period in shortage; a few updates of HPO
    // already order about the demand.
    let (_, random, _) = hmdpc(&["simulate", "--scenarios", "100", "--set", "lead=0", "models/inventory.hmdp"]);
    assert!(total(&eval) < 0.2 * total(&random), "trained {} vs random {}", total(&eval), total(&random));
}

const EMPTY: &str = "
model empty_parts
size n = 0
set E = 0..n
param w[E] ~ uniform(1, 2)
state x = 0
state z[E] = 0
noise d ~ normal(0, 1)
noise e[E] ~ normal(0, 1)
action u: real in [-1, 1]
action v[E]: real >= 0
action open[E]: choice { no, yes }
step {
  let s = sum(k in E) (z[k] + v[k] + w[k] * (open[k] == yes) + e[k])
  let p = prod(k in E) (2 + z[k])
  let m = if n > 0 then max(k in E) z[k] else -1
  x' = x + u + d
  z'[k] = z[k] + v[k] * (open[k] == yes)
  cost quad = x^2 + u^2
  cost parts = s + 10 * p + 100 * m
}
observe { x, z, w }
horizon 10
";

/// Arrays over an empty set have no elements; a sum over nothing is 0, a product 1; a `max`
/// guarded by a size it needs is decided when the model is compiled; an empty observation adds
/// no feature.
#[test]
fn empty_sets_behave_as_in_mathematics() {
    let module = common::compile_text(EMPTY, &common::root(), &[]);
    let mut buffers = sim::instance(&module, 0).expect("instance");
    Machine::new(&module, &mut buffers, None).run(&module.step).expect("the step runs");
    assert_eq!(buffers.values[buffer(&module, "s")], [0.0]);
    assert_eq!(buffers.values[buffer(&module, "p")], [1.0]);
    assert_eq!(buffers.values[buffer(&module, "parts")], [0.0 + 10.0 - 100.0]);
    assert_eq!(hmdp::train::spec::Spec::of(&module).features, 1, "only `x` is seen");
    assert!(gradient_error(&module) <= 1e-6);
    let text = hmdp::ir::text::print(&module);
    assert!(!text.contains("max("), "the guarded `max` is not lowered:\n{text}");
}

// ---- item 13: observing a `let` --------------------------------------------------------------

/// `models/inventory.hmdp` with the inventory position observed instead of its parts.
fn inventory_observing_the_position() -> String {
    let source = std::fs::read_to_string(common::root().join("models/inventory.hmdp")).expect("model");
    let source = source.replace("step {\n", "step {\n  let position[i] = onhand[i] + sum(l in L) pipe[i, l]\n");
    assert!(source.contains("observe { onhand, pipe, mu, h, p }"));
    source.replace("observe { onhand, pipe, mu, h, p }", "observe { position, mu, h, p }")
}

/// The policy sees the position of the current states, computed before it decides: after the
/// `bounds` program (which runs before the decision), before any step.
#[test]
fn an_observed_let_is_computed_before_the_decision() {
    let source = inventory_observing_the_position();
    for lead in [0.0, 3.0] {
        let module = common::compile_text(&source, &common::root().join("models"), &[("lead", lead)]);
        let spec = hmdp::train::spec::Spec::of(&module);
        assert_eq!(spec.features, 40, "10 positions and three parameters per item");
        let mut buffers = sim::instance(&module, 0).expect("instance");
        let onhand: Vec<f64> = (0..10).map(|i| i as f64 - 3.0).collect();
        buffers.values[buffer(&module, "onhand")].clone_from(&onhand);
        let pipe = buffer(&module, "pipe");
        for (k, v) in buffers.values[pipe].iter_mut().enumerate() {
            *v = 0.5 * k as f64;
        }
        Machine::new(&module, &mut buffers, None).run(&module.bounds).expect("bounds run");
        let slots = (lead as usize).saturating_sub(1);
        let expected: Vec<f64> =
            (0..10).map(|i| onhand[i] + (0..slots).map(|l| 0.5 * (i * slots + l) as f64).sum::<f64>()).collect();
        assert_eq!(buffers.values[buffer(&module, "position")], expected, "lead {lead}");
    }
}

#[test]
fn a_model_observing_a_let_simulates_and_trains() {
    let folder = std::env::temp_dir().join(format!("hmdp-constructs-observe-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("temp dir");
    let model = folder.join("position.hmdp");
    std::fs::write(&model, inventory_observing_the_position()).expect("write model");
    let run = folder.join("run");
    let (model_arg, run_arg) = (model.to_str().expect("utf-8"), run.to_str().expect("utf-8"));
    let (ok, _, err) = hmdpc(&["simulate", "--scenarios", "50", model_arg]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        hmdpc(&["train", "--quiet", "--updates", "4", "--batch", "32", "--scenarios", "32", "--out", run_arg, model_arg]);
    assert!(ok, "{err}");
    let (ok, out, err) = hmdpc(&["train", "--quiet", "--algo", "ppo", "--force", "--updates", "2", "--batch", "32", "--scenarios", "32", "--out", run_arg, model_arg]);
    std::fs::remove_dir_all(&folder).ok();
    assert!(ok, "{out}{err}");
}

/// A `let` that reads noise or an action has no value when the policy decides: refused, at the
/// read, also through another `let`.
#[test]
fn a_let_of_noise_or_actions_cannot_be_observed() {
    let (_, rendered, diagnostics) = common::rendered(&common::root().join("tests/diagnostics/observe_let_reading_noise.hmdp"));
    assert_eq!(diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(), ["observe"]);
    assert!(rendered.contains("reads noise `demand`") && rendered.contains("`post` reads it"), "{rendered}");
    let source = "model t\nstate x = 0\naction u: real\nstep {\n  let next = x + u\n  x' = next\n  cost c = next^2\n}\nobserve { next }\nhorizon 3\n";
    let outcome = hmdp::check::check_source(source, &hmdp::check::NoFiles, &hmdp::check::Options::default());
    let rendered = hmdp::diagnostics::render(&outcome.diagnostics, "model.hmdp", source, false);
    assert!(rendered.contains("cannot observe `next`: it reads action `u`"), "{rendered}");
}
