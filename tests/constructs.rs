//! The constructs models needed beyond the first language (issue 19, items 10–13), each from
//! its reproducer: empty sets and a lead time of 0, observing a `let`, the period index and a
//! terminal cost, and a state that holds a choice.

mod common;

use std::process::Command;

use hmdp::backend::Machine;
use hmdp::ir::ValidModule;
use hmdp::sim;

fn hmdpc(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let (ok, interp, err) =
        hmdpc(&["simulate", "--scenarios", "100", "--set", "lead=0", "models/inventory_fixed_cost.hmdp"]);
    assert!(ok, "{err}");
    let (ok, jit, err) = hmdpc(&[
        "simulate",
        "--backend",
        "jit",
        "--scenarios",
        "100",
        "--set",
        "lead=0",
        "models/inventory_fixed_cost.hmdp",
    ]);
    assert!(ok, "{err}");
    let total = |out: &str| -> f64 {
        let line = out.lines().find(|l| l.trim_start().starts_with("total")).expect("a total line");
        line.split_whitespace().nth(1).expect("a figure").parse().expect("a number")
    };
    assert_eq!(total(&interp), total(&jit));

    let folder = std::env::temp_dir().join(format!("hmdp-constructs-lead0-{}", std::process::id()));
    let folder_arg = folder.to_str().expect("utf-8 temp dir");
    let (ok, _, err) = hmdpc(&[
        "train",
        "--quiet",
        "--force",
        "--set",
        "lead=0",
        "--updates",
        "6",
        "--batch",
        "32",
        "--scenarios",
        "32",
        "--out",
        folder_arg,
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

/// `models/inventory.hmdp` with the inventory position (`ip`; the shipped `can_order` policy has
/// its own `position`) observed instead of its parts.
fn inventory_observing_the_position() -> String {
    let source = std::fs::read_to_string(common::root().join("models/inventory.hmdp")).expect("model");
    let source = source.replace("step {\n", "step {\n  let ip[i] = onhand[i] + sum(l in L) pipe[i, l]\n");
    assert!(source.contains("observe { onhand, pipe, mu, h, p }"));
    source.replace("observe { onhand, pipe, mu, h, p }", "observe { ip, mu, h, p }")
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
        assert_eq!(buffers.values[buffer(&module, "ip")], expected, "lead {lead}");
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
    let (ok, out, err) = train_briefly("hpo", model_arg, run_arg);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = train_briefly("ppo", model_arg, run_arg);
    std::fs::remove_dir_all(&folder).ok();
    assert!(ok, "{out}{err}");
}

/// `hmdpc train` with `algo`, 4 updates of 32 of 32 scenarios: enough to run every part of
/// the trainer on a model. Writes over `run`.
fn train_briefly(algo: &str, model: &str, run: &str) -> (bool, String, String) {
    hmdpc(&[
        "train",
        "--quiet",
        "--algo",
        algo,
        "--force",
        "--updates",
        "4",
        "--batch",
        "32",
        "--scenarios",
        "32",
        "--out",
        run,
        model,
    ])
}

/// A `let` that reads noise or an action has no value when the policy decides: refused, at the
/// read, also through another `let`.
#[test]
fn a_let_of_noise_or_actions_cannot_be_observed() {
    let (_, rendered, diagnostics) =
        common::rendered(&common::root().join("tests/diagnostics/observe_let_reading_noise.hmdp"));
    assert_eq!(diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(), ["observe"]);
    assert!(rendered.contains("reads noise `demand`") && rendered.contains("`post` reads it"), "{rendered}");
    let source = "model t\nstate x = 0\naction u: real\nstep {\n  let next = x + u\n  x' = next\n  cost c = next^2\n}\nobserve { next }\nhorizon 3\n";
    let outcome = hmdp::check::check_source(source, &hmdp::check::NoFiles, &hmdp::check::Options::default());
    let rendered = hmdp::diagnostics::render(&outcome.diagnostics, "model.hmdp", source, false);
    assert!(rendered.contains("cannot observe `next`: it reads action `u`"), "{rendered}");
}

// ---- item 11: the period index and terminal costs ----------------------------------------------

/// A deterministic model: `x` counts the periods, each period costs its index, and the terminal
/// cost charges the final count.
const COUNTER: &str = "
model counter
state x = 0
action u: real in [0, 1]
step {
  x' = x + 1
  cost tick = period + 0 * u
}
terminal {
  cost final = 10 * x
}
observe { x, period }
horizon 4
";

fn total(out: &str) -> f64 {
    let line = out.lines().find(|l| l.trim_start().starts_with("total")).expect("a total line");
    line.split_whitespace().nth(1).expect("a figure").parse().expect("a number")
}

/// `period` runs 0, 1, ..., horizon - 1, and the terminal cost is charged once, on the final
/// states, in the reported totals, on every backend.
#[test]
fn the_period_index_counts_and_the_terminal_cost_is_charged_once() {
    let folder = std::env::temp_dir().join(format!("hmdp-constructs-counter-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("temp dir");
    let model = folder.join("counter.hmdp");
    std::fs::write(&model, COUNTER).expect("write model");
    for backend in ["interp", "jit"] {
        let (ok, out, err) =
            hmdpc(&["simulate", "--backend", backend, "--scenarios", "10", model.to_str().expect("utf-8")]);
        assert!(ok, "{err}");
        // 0 + 1 + 2 + 3 for the periods, and 10 × 4 for the final count.
        assert_eq!(total(&out), 6.0 + 40.0, "{backend}:\n{out}");
        let final_line =
            out.lines().find(|l| l.trim_start().starts_with("final")).expect("the terminal cost is reported");
        assert!(final_line.contains("40.0000"), "{final_line}");
    }
    std::fs::remove_dir_all(&folder).ok();
    // The VJP of the step, terminal cost included (active at the points in the last period),
    // agrees with finite differences.
    let salvage = common::compile_file(&common::root().join("tests/constructs/salvage.hmdp"), &[]);
    assert!(gradient_error(&salvage) <= 1e-6);
}

#[test]
fn period_is_reserved_and_read_only_in_the_step() {
    let diagnose = |source: &str| {
        let outcome = hmdp::check::check_source(source, &hmdp::check::NoFiles, &hmdp::check::Options::default());
        hmdp::diagnostics::render(&outcome.diagnostics, "model.hmdp", source, false)
    };
    let declared = COUNTER.replace("state x = 0", "state x = 0\nparam period = 3");
    assert!(diagnose(&declared).contains("a parameter cannot be named `period`"), "{}", diagnose(&declared));
    let in_bound = COUNTER.replace("real in [0, 1]", "real in [0, period]");
    assert!(diagnose(&in_bound).contains("an action's bound cannot use the period index"), "{}", diagnose(&in_bound));
    let terminal_reads_noise = COUNTER.replace("cost final = 10 * x", "cost final = 10 * x + u");
    assert!(
        diagnose(&terminal_reads_noise).contains("a terminal cost cannot use"),
        "{}",
        diagnose(&terminal_reads_noise)
    );
}

/// The trainer's pathwise gradient includes the terminal cost: it matches central finite
/// differences of a whole rollout's cost, terminal cost included, and differs from the gradient
/// of the same model without it.
#[test]
fn the_pathwise_gradient_includes_the_terminal_cost() {
    use hmdp::backend::jit::Jit;
    use hmdp::random::ScenarioSet;
    use hmdp::train::policy::Nets;
    use hmdp::train::rollout::{Context, Mode, rollout};
    use hmdp::train::scenarios::Scenarios;
    use hmdp::train::spec::Spec;
    use hmdp::train::update::pathwise;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    let source = std::fs::read_to_string(common::root().join("tests/constructs/salvage.hmdp")).expect("model");
    let penalty = source.replace("cost salvage = -v * max(stock, 0)", "cost salvage = v * (stock - 4)^2");
    let without = penalty.replace("cost salvage = v * (stock - 4)^2", "cost salvage = 0 * stock");
    let gradient = |source: &str| {
        let module = common::compile_text(source, &common::root(), &[]);
        let spec = Spec::of(&module);
        let jit = Jit::compile(&module).expect("compiles");
        let instance = sim::instance(&module, 0).expect("instance");
        let set = Scenarios::draw(&module, &instance, 0, ScenarioSet::Train, 3).expect("scenarios");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut nets = Nets::new(&spec, &[6], false, &mut rng);
        for (k, p) in nets.continuous.params_mut().iter_mut().enumerate() {
            *p = 0.3 * ((k * 7919 % 13) as f32 / 6.0 - 1.0);
        }
        let ctx = Context { module: &module, spec: &spec, backend: &jit, instance: &instance };
        let cost = |nets: &Nets| {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let traj = rollout(&ctx, nets, &set, &[0, 1, 2], Mode::Sample, true, &mut rng).expect("rollout");
            let total: f64 = traj.steps.iter().flat_map(|st| st.costs.iter()).sum::<f64>() / 3.0;
            (total, traj)
        };
        let (_, mut traj) = cost(&nets);
        let weight = |_: usize| 1.0 / 3.0;
        let grad = pathwise(&ctx, &nets, &mut traj, &weight, 0.0, None).expect("pathwise");
        let mut worst = 0.0f64;
        for (k, &ad) in grad.iter().enumerate() {
            let h = 1e-3f32;
            let (mut plus, mut minus) = (nets.clone(), nets.clone());
            plus.continuous.params_mut()[k] += h;
            minus.continuous.params_mut()[k] -= h;
            let width = (plus.continuous.params()[k] - minus.continuous.params()[k]) as f64;
            let fd = (cost(&plus).0 - cost(&minus).0) / width;
            worst = worst.max((fd - ad as f64).abs() / fd.abs().max(ad.abs() as f64).max(1.0));
        }
        assert!(worst < 2e-2, "largest relative error {worst}");
        grad
    };
    let with_terminal = gradient(&penalty);
    let without_terminal = gradient(&without);
    let difference: f64 = with_terminal.iter().zip(&without_terminal).map(|(a, b)| (a - b).abs() as f64).sum();
    assert!(difference > 0.1, "the terminal cost does not reach the gradient ({difference})");
}

// ---- item 10: a state that holds a choice ------------------------------------------------------

const SWITCHING: &str = "tests/gradients/switching_cost.hmdp";

fn analysis_of(module: &ValidModule) -> hmdp::passes::smoothness::Analysis {
    hmdp::passes::smoothness::analyze(module)
}

fn cost_entry<'a>(
    module: &ValidModule,
    analysis: &'a hmdp::passes::smoothness::Analysis,
    name: &str,
) -> &'a hmdp::passes::smoothness::Entry {
    let id = buffer(module, name);
    analysis.costs.iter().find(|c| c.buffer == id).unwrap_or_else(|| panic!("no cost `{name}`"))
}

/// A switching cost on the last mode, held in a choice state, is split into regimes by the mode
/// and the last mode: the report lists no jump. The same cost on a real state was a jump in the
/// state, which the pathwise gradient cannot see.
#[test]
fn a_switching_cost_on_a_choice_state_is_regime_split_not_a_jump() {
    use hmdp::passes::smoothness::Class;
    let path = common::root().join(SWITCHING);
    let compiled = common::compiled_file(&path, &[]);
    let module = &compiled.module;
    let analysis = analysis_of(module);
    let switch = cost_entry(module, &analysis, "switch");
    assert_eq!(switch.class, Class::Constant);
    let names: Vec<&str> = switch.regimes.iter().map(|&r| module.buffers[r].name.as_str()).collect();
    assert_eq!(names, ["last", "mode"]);
    let wear = cost_entry(module, &analysis, "wear");
    assert_eq!(wear.class, Class::Smooth, "smooth in the trim within each regime of `last`");
    assert!(wear.regimes.contains(&buffer(module, "last")));
    let every = analysis.costs.iter().chain(&analysis.updates);
    assert!(every.flat_map(|e| &e.sites).all(|s| s.class != Class::Jump), "{analysis:?}");
    let source = std::fs::read_to_string(&path).expect("model");
    let report =
        hmdp::passes::smoothness::render(module, &analysis, &compiled.rewrites, "switching_cost.hmdp", &source);
    assert!(!report.contains("jump"), "{report}");
    insta::assert_snapshot!("report_switching_cost", report);

    // The same cost with the last mode in a real state: a jump in the state.
    let real = "model real_last\nstate last = 0\naction mode: choice { off, on }\naction u: real in [0, 1]\n\
                step {\n  last' = 1 * (mode == on) + 0 * u\n  cost switch = if (mode == on) != (last > 0.5) then 3 else 0\n\
                  cost effort = u^2\n}\nhorizon 3\n";
    let module = common::compile_text(real, &common::root(), &[]);
    let analysis = analysis_of(&module);
    assert_eq!(cost_entry(&module, &analysis, "switch").class, Class::Jump);
}

/// The choice state starts at its label and holds the label it is given: `last' = mode` stores
/// the mode's position, and a `choice[SET]` state over `1..4` holds its element, read back as
/// the element (`gear[z] * trim[z]`).
#[test]
fn a_choice_state_holds_the_label_it_is_given() {
    let module = common::compile_file(&common::root().join(SWITCHING), &[]);
    assert_eq!(module.buffers[buffer(&module, "last")].labels, ["off", "low", "high"]);
    assert_eq!(module.buffers[buffer(&module, "gear")].labels, ["1", "2", "3"]);
    let instance = sim::instance(&module, 1).expect("instance");
    let mut buffers = instance.clone();
    let mut rng = hmdp::random::scenario_stream(1, hmdp::random::ScenarioSet::Dev, 0);
    Machine::new(&module, &mut buffers, Some(&mut rng)).run(&module.init).expect("init runs");
    assert_eq!(buffers.values[buffer(&module, "last")], [0.0]);
    assert_eq!(buffers.values[buffer(&module, "gear")], [0.0, 0.0], "gear 1 is the first element");
    let (mode, shift, trim) = (buffer(&module, "mode"), buffer(&module, "shift"), buffer(&module, "trim"));
    buffers.values[mode] = vec![2.0];
    buffers.values[shift] = vec![2.0, 1.0];
    buffers.values[trim] = vec![0.5, -0.5];
    buffers.values[buffer(&module, "outside")] = vec![10.0];
    Machine::new(&module, &mut buffers, None).run(&module.step).expect("step runs");
    assert_eq!(buffers.values[buffer(&module, "last'")], [2.0], "`last' = mode` holds `high`");
    assert_eq!(buffers.values[buffer(&module, "gear'")], [2.0, 1.0], "shifted when the mode is high");
    assert_eq!(buffers.values[buffer(&module, "switch")], [3.0], "off → high is a switch");
    // wear: 0.1 (last is off) × gear 1 × trim² per zone.
    let wear = buffers.values[buffer(&module, "wear")][0];
    assert!((wear - 0.1 * (0.25 + 0.25)).abs() < 1e-12, "{wear}");
}

/// A choice state is not differentiated: it and its next state have no adjoint, gradcheck does
/// not perturb it, and the VJP agrees with finite differences on the interpreter and the JIT
/// (the Enzyme backend in `tests/enzyme.rs`), as does the trainer's pathwise gradient of a
/// whole rollout, whose policy observes the choice states.
#[test]
fn the_gradient_holds_a_choice_state_constant_on_every_backend() {
    use hmdp::backend::jit::Jit;
    use hmdp::ir::BufferKind;
    let module = common::compile_file(&common::root().join(SWITCHING), &[]);
    for name in ["last", "last'", "gear", "gear'"] {
        let id = buffer(&module, name);
        assert!(!module.buffers.iter().any(|b| b.kind == BufferKind::Adjoint { of: id }), "`{name}` has an adjoint");
    }
    let instance = sim::instance(&module, 1).expect("instance");
    let report = sim::gradcheck::check(&module, &instance, 1, 6).expect("gradcheck runs");
    let inputs: Vec<&str> = report.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["temp", "trim"]);
    assert!(gradient_error(&module) <= 1e-6);
    let jit = Jit::compile(&module).expect("compiles");
    let interp = hmdp::backend::Interp::new(&module);
    let table = sim::compare::compare(&module, &instance, &[&interp, &jit], 12, 3, 1e-6, 1e-12).expect("runs");
    assert!(table.failures().is_empty(), "{}", table.render("model"));
    for backend in [&interp as &dyn hmdp::backend::Backend, &jit] {
        let (worst, largest) = common::pathwise_against_finite_differences(&module, backend, 3);
        assert!(largest > 0.1, "{}: the gradient is trivial ({largest})", backend.name());
        assert!(worst < 2e-2, "{}: largest relative error {worst}", backend.name());
    }
}

/// The model simulates, trains (HPO and PPO, briefly), and its rollout shows the choice states
/// by label.
#[test]
fn a_model_with_a_choice_state_simulates_trains_and_rolls_out() {
    let folder = std::env::temp_dir().join(format!("hmdp-constructs-choice-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("temp dir");
    let run = folder.join("run");
    let csv = folder.join("rollout.csv");
    let (run_arg, csv_arg) = (run.to_str().expect("utf-8"), csv.to_str().expect("utf-8"));
    let (ok, _, err) = hmdpc(&["simulate", "--scenarios", "50", "--backend", "jit", SWITCHING]);
    assert!(ok, "{err}");
    let (ok, out, err) = train_briefly("ppo", SWITCHING, run_arg);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = train_briefly("hpo", SWITCHING, run_arg);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = hmdpc(&["rollout", run_arg, "--scenarios", "2", "--out", csv_arg]);
    assert!(ok, "{out}{err}");
    let trace = std::fs::read_to_string(&csv).expect("rollout written");
    std::fs::remove_dir_all(&folder).ok();
    let header: Vec<&str> = trace.lines().next().expect("header").split(',').collect();
    let column =
        |name: &str| header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no `{name}`: {header:?}"));
    let (last, gear) = (column("last"), column("gear[0]"));
    for line in trace.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        assert!(["off", "low", "high"].contains(&fields[last]), "{line}");
        assert!(["1", "2", "3"].contains(&fields[gear]), "{line}");
    }
}

/// The new constructs survive the textual IR: an observed let stored by `bounds`, the period
/// index, a terminal cost and an empty set print, parse back, validate and run the same.
#[test]
fn the_textual_ir_round_trips_the_new_constructs() {
    let modules = [
        common::compile_file(&common::root().join("tests/constructs/salvage.hmdp"), &[]),
        common::compile_text(&inventory_observing_the_position(), &common::root().join("models"), &[("lead", 0.0)]),
        common::compile_text(EMPTY, &common::root(), &[]),
        common::compile_file(&common::root().join(SWITCHING), &[]),
    ];
    for module in modules {
        let text = hmdp::ir::text::print(&module);
        let parsed = hmdp::ir::text::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", module.name));
        assert_eq!(hmdp::ir::text::print(&parsed), text);
        let parsed = ValidModule::new(parsed).unwrap_or_else(|p| panic!("{}: parsed IR invalid: {p:?}", module.name));
        let run = |m: &ValidModule| {
            let instance = sim::instance(m, 2).expect("instance");
            let seeds = hmdp::random::Seeds::same(4);
            sim::simulate(m, &instance, &sim::RandomPolicy, seeds, hmdp::random::ScenarioSet::Dev, 16)
                .expect("runs")
                .total
        };
        assert_eq!(run(&module), run(&parsed), "{}", module.name);
    }
}
