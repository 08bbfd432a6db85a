//! The compiler's middle: golden IR and reports for every shipped model, the textual IR round
//! trip, and the automatic reformulation proven equivalent to the hand-written hybrid form.

mod common;

use std::path::Path;

use hmdp::check::Options;
use hmdp::ir::{BufferKind, Module};
use hmdp::sim::{self, Machine, Policy, RandomPolicy, ScenarioSet};

fn pipeline(path: &Path, options: &Options) -> (Module, Vec<hmdp::passes::reformulate::Rewrite>) {
    let source = std::fs::read_to_string(path).expect("model");
    let folder = common::Folder(path.parent().expect("folder").to_path_buf());
    let model = hmdp::check::check_source(&source, &folder, options).model.expect("checks");
    let mut module = hmdp::ir::lower::lower(&model);
    let rewrites = hmdp::passes::reformulate::reformulate(&mut module);
    hmdp::passes::ad::differentiate(&mut module);
    hmdp::ir::validate(&module).unwrap_or_else(|p| panic!("{}: {p:?}", path.display()));
    (module, rewrites)
}

#[test]
fn golden_ir_and_reports() {
    for path in common::models() {
        let name = path.file_stem().and_then(|n| n.to_str()).expect("name").to_string();
        let (module, rewrites) = pipeline(&path, &Options::default());
        let source = std::fs::read_to_string(&path).expect("model");
        let analysis = hmdp::passes::smoothness::analyze(&module);
        let file = format!("models/{name}.hmdp");
        let report = hmdp::passes::smoothness::render(&module, &analysis, &rewrites, &file, &source);
        insta::assert_snapshot!(format!("report_{name}"), report);
        insta::assert_snapshot!(format!("ir_{name}"), hmdp::ir::text::print(&module));
    }
}

#[test]
fn textual_ir_round_trips_and_runs_the_same() {
    for path in common::models() {
        let (module, _) = pipeline(&path, &Options::default());
        let text = hmdp::ir::text::print(&module);
        let parsed = hmdp::ir::text::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(hmdp::ir::text::print(&parsed), text, "{}", path.display());
        hmdp::ir::validate(&parsed).unwrap_or_else(|p| panic!("{}: parsed IR invalid: {p:?}", path.display()));
        let run = |m: &Module| {
            let instance = sim::instance(m, 2).expect("instance");
            sim::simulate(m, &instance, &RandomPolicy, 4, ScenarioSet::Dev, 16).expect("runs").total
        };
        assert_eq!(run(&module), run(&parsed), "{}", path.display());
    }
}

/// Runs the naive and the hybrid inventory side by side on the same scenarios, giving the
/// naive model's new `q.order` the hybrid model's `order` (`skip` ↔ `zero`, `buy` ↔ `positive`)
/// and the same quantities: every cost and next state must be identical at every step.
#[test]
fn the_naive_fixed_cost_model_becomes_the_hybrid_one() {
    let root = common::root();
    let (hybrid, none) = pipeline(&root.join("models/inventory.hmdp"), &Options::default());
    let (naive, rewrites) = pipeline(&root.join("models/inventory_fixed_cost.hmdp"), &Options::default());
    assert!(none.is_empty());
    assert_eq!(rewrites.len(), 1, "{rewrites:?}");
    let find =
        |m: &Module, name: &str| m.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("{name}"));
    let order = naive.buffers.get(find(&naive, "q.order")).expect("order");
    assert_eq!(order.kind, BufferKind::Discrete);
    assert_eq!(order.labels, ["zero", "positive"]);
    assert!(order.dims.is_empty(), "one choice shared by all items");

    let pairs: Vec<(usize, usize)> = ["onhand", "pipe", "onhand'", "pipe'", "holding", "shortage", "fixed"]
        .iter()
        .map(|n| (find(&hybrid, n), find(&naive, n)))
        .collect();
    let (mut compared, mut buys) = (0, 0);
    for scenario in 0..20u64 {
        let mut a = sim::instance(&hybrid, 9).expect("instance");
        let mut b = sim::instance(&naive, 9).expect("instance");
        let mut world_a = sim::scenario_stream(9, ScenarioSet::Test, scenario);
        let mut world_b = sim::scenario_stream(9, ScenarioSet::Test, scenario);
        let mut own = sim::policy_stream(9, ScenarioSet::Test, scenario);
        Machine::new(&hybrid, &mut a, Some(&mut world_a)).run(&hybrid.init).expect("init");
        Machine::new(&naive, &mut b, Some(&mut world_b)).run(&naive.init).expect("init");
        for _ in 0..hybrid.horizon {
            Machine::new(&hybrid, &mut a, Some(&mut world_a)).run(&hybrid.noise).expect("noise");
            Machine::new(&naive, &mut b, Some(&mut world_b)).run(&naive.noise).expect("noise");
            Machine::new(&hybrid, &mut a, None).run(&hybrid.bounds).expect("bounds");
            RandomPolicy.act(&hybrid, &mut a, &mut own).expect("act");
            // Mirror the hybrid model's actions into the naive one.
            let chosen = a.values[find(&hybrid, "order")][0];
            buys += usize::from(chosen == 1.0);
            b.values[find(&naive, "q.order")][0] = chosen;
            b.values[find(&naive, "q")] = a.values[find(&hybrid, "q")].clone();
            for (m, buffers) in [(&hybrid, &mut a), (&naive, &mut b)] {
                Machine::new(m, buffers, None).run(&m.regimes).expect("regimes");
                for (id, buffer) in m.buffers.iter().enumerate() {
                    if let BufferKind::Regime { action } = buffer.kind {
                        for k in 0..buffers.values[action].len() {
                            if buffers.values[id][k] == 0.0 {
                                buffers.values[action][k] = 0.0;
                            }
                        }
                    }
                }
                Machine::new(m, buffers, None).run(&m.step).expect("step");
            }
            for &(x, y) in &pairs {
                assert_eq!(a.values[x], b.values[y], "{} differs", hybrid.buffers[x].name);
                compared += 1;
            }
            for (name, state) in [("onhand'", "onhand"), ("pipe'", "pipe")] {
                a.values[find(&hybrid, state)] = a.values[find(&hybrid, name)].clone();
                b.values[find(&naive, state)] = b.values[find(&naive, name)].clone();
            }
        }
    }
    assert!(compared > 1000 && buys > 100, "compared {compared} values, {buys} orders");
}

#[test]
fn per_item_fixed_costs_get_one_choice_per_item() {
    let source = "model per_item\nsize n = 3\nset I = 0..n\nparam K[I] ~ uniform(5, 10)\nstate x[I] = 0\n\
                  action q[I]: real >= 0\nstep {\n  x'[i] = x[i] + q[i]\n  cost fixed = sum(i in I) K[i] * (q[i] > 0)\n\
                  cost also = sum(i in I) if 0 < q[i] then 1 else 0\n}\nhorizon 3\n";
    let model = hmdp::check::check_source(source, &hmdp::check::NoFiles, &Options::default()).model.expect("checks");
    let mut module = hmdp::ir::lower::lower(&model);
    let rewrites = hmdp::passes::reformulate::reformulate(&mut module);
    hmdp::passes::ad::differentiate(&mut module);
    hmdp::ir::validate(&module).expect("valid");
    assert_eq!(rewrites.len(), 1, "both comparisons share one regime action: {rewrites:?}");
    let regime = module.buffers.iter().find(|b| b.name == "q.regime").expect("q.regime");
    assert_eq!(regime.dims.len(), 1);
    let analysis = hmdp::passes::smoothness::analyze(&module);
    assert!(analysis.costs.iter().all(|c| c.class == hmdp::passes::smoothness::Class::Constant));
    // A threshold other than the lower bound is a jump left for the user.
    let bulk = source.replace("q[i] > 0) ", "q[i] > 100) ").replace("K[i] * (q[i] > 0)", "K[i] * (q[i] > 100)");
    let model = hmdp::check::check_source(&bulk, &hmdp::check::NoFiles, &Options::default()).model.expect("checks");
    let mut module = hmdp::ir::lower::lower(&model);
    let rewrites = hmdp::passes::reformulate::reformulate(&mut module);
    assert_eq!(rewrites.len(), 1, "only the comparison with 0 is rewritten");
    let analysis = hmdp::passes::smoothness::analyze(&module);
    assert!(analysis.costs.iter().any(|c| c.class == hmdp::passes::smoothness::Class::Jump));

    // With a lower bound other than 0, `q > 5` is left alone: a `zero` regime would set q to 0.
    let shifted =
        source.replace("real >= 0", "real >= 5").replace("q[i] > 0", "q[i] > 5").replace("0 < q[i]", "5 < q[i]");
    let model = hmdp::check::check_source(&shifted, &hmdp::check::NoFiles, &Options::default()).model.expect("checks");
    let mut module = hmdp::ir::lower::lower(&model);
    assert!(hmdp::passes::reformulate::reformulate(&mut module).is_empty());
}
