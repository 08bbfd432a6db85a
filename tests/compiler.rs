//! The compiler's middle: golden IR and reports for every shipped model, the textual IR round
//! trip, and the automatic reformulation proven equivalent to the hand-written hybrid form.

mod common;

use std::path::Path;

use hmdp::backend::{Buffers, Kernel, Machine, RunError};
use hmdp::check::Options;
use hmdp::ir::{BufferKind, Module};
use hmdp::random::{self, ScenarioSet};
use hmdp::sim::protocol::{self, Scenario, Scenariowise, World};
use hmdp::sim::{self, Policy, RandomPolicy};
use rand::rngs::ChaCha8Rng;

/// Sets the naive model's actions to given values: `q.order` and `q`.
struct Mirror<'m> {
    order: f64,
    q: Vec<f64>,
    module: &'m Module,
}

impl Policy for Mirror<'_> {
    fn discrete(&self, _: &Module, buffers: &mut Buffers, _: &mut ChaCha8Rng) -> Result<(), RunError> {
        let id = self.module.buffers.iter().position(|b| b.name == "q.order").expect("q.order");
        buffers.values[id][0] = self.order;
        Ok(())
    }

    fn continuous(&self, _: &Module, buffers: &mut Buffers, _: &mut ChaCha8Rng) -> Result<(), RunError> {
        let id = self.module.buffers.iter().position(|b| b.name == "q").expect("q");
        buffers.values[id].clone_from(&self.q);
        Ok(())
    }
}

fn pipeline(path: &Path, options: &Options) -> (hmdp::ir::ValidModule, Vec<hmdp::passes::reformulate::Rewrite>) {
    let overrides: Vec<(&str, f64)> = options.overrides.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let compiled = common::compiled_file(path, &overrides);
    (compiled.module, compiled.rewrites)
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
    let (instance_a, instance_b) =
        (sim::instance(&hybrid, 9).expect("instance"), sim::instance(&naive, 9).expect("instance"));
    for scenario in 0..20u64 {
        let mut a = Scenario::start(&hybrid, &instance_a, 9, ScenarioSet::Test, scenario).expect("init");
        let mut b = Scenario::start(&naive, &instance_b, 9, ScenarioSet::Test, scenario).expect("init");
        let mut own = random::policy_stream(9, ScenarioSet::Test, scenario);
        for t in 0..hybrid.horizon as usize {
            let streams = std::slice::from_mut(&mut own);
            protocol::decide(&mut a, &mut Scenariowise { module: &hybrid, policy: &RandomPolicy, streams }, t)
                .expect("decide");
            // Mirror the hybrid model's actions into the naive one.
            let chosen = a.buffers.values[find(&hybrid, "order")][0];
            buys += usize::from(chosen == 1.0);
            let mirror = Mirror { order: chosen, q: a.buffers.values[find(&hybrid, "q")].clone(), module: &naive };
            let streams = std::slice::from_mut(&mut own);
            protocol::decide(&mut b, &mut Scenariowise { module: &naive, policy: &mirror, streams }, t)
                .expect("decide");
            a.run(Kernel::Step).expect("step");
            b.run(Kernel::Step).expect("step");
            for &(x, y) in &pairs {
                assert_eq!(a.buffers.values[x], b.buffers.values[y], "{} differs", hybrid.buffers[x].name);
                compared += 1;
            }
            a.advance();
            b.advance();
        }
    }
    assert!(compared > 1000 && buys > 100, "compared {compared} values, {buys} orders");
}

#[test]
fn per_item_fixed_costs_get_one_choice_per_item() {
    let source = "model per_item\nsize n = 3\nset I = 0..n\nparam K[I] ~ uniform(5, 10)\nstate x[I] = 0\n\
                  action q[I]: real >= 0\nstep {\n  x'[i] = x[i] + q[i]\n  cost fixed = sum(i in I) K[i] * (q[i] > 0)\n\
                  cost also = sum(i in I) if 0 < q[i] then 1 else 0\n}\nhorizon 3\n";
    let hmdp::pipeline::Compiled { module, rewrites, .. } = common::compiled_text(source, &common::root(), &[]);
    assert_eq!(rewrites.len(), 1, "both comparisons share one regime action: {rewrites:?}");
    let regime = module.buffers.iter().find(|b| b.name == "q.regime").expect("q.regime");
    assert_eq!(regime.dims.len(), 1);
    let analysis = hmdp::passes::smoothness::analyze(&module);
    assert!(analysis.costs.iter().all(|c| c.class == hmdp::passes::smoothness::Class::Constant));
    // A threshold inside the domain cuts it into pieces; with the comparison with 0 too, the
    // first piece is `zero`. The top piece of a half-line is unbounded.
    let bulk = source.replace("K[i] * (q[i] > 0)", "K[i] * (q[i] > 100)");
    let hmdp::pipeline::Compiled { module, rewrites, .. } = common::compiled_text(&bulk, &common::root(), &[]);
    assert_eq!(rewrites.len(), 1, "{rewrites:?}");
    let piece = module.buffers.iter().find(|b| b.name == "q.piece").expect("q.piece");
    assert_eq!(piece.labels, ["zero", "0..100", "100..inf"]);
    let analysis = hmdp::passes::smoothness::analyze(&module);
    assert!(analysis.costs.iter().all(|c| c.class != hmdp::passes::smoothness::Class::Jump));
    let text = hmdp::ir::text::print(&module);
    assert!(text.contains("inf"), "the unbounded piece has an infinite bound");
    let parsed = hmdp::ir::text::parse(&text).expect("parses");
    assert_eq!(hmdp::ir::text::print(&parsed), text);

    // With a lower bound other than 0, `q > 5` is left alone: a `zero` regime would set q to 0.
    let shifted =
        source.replace("real >= 0", "real >= 5").replace("q[i] > 0", "q[i] > 5").replace("0 < q[i]", "5 < q[i]");
    let model = hmdp::check::check_source(&shifted, &hmdp::check::NoFiles, &Options::default()).model.expect("checks");
    let mut module = hmdp::ir::lower::lower(&model);
    assert!(hmdp::passes::reformulate::reformulate(&mut module).is_empty());
}

/// The bulk-discount model, reformulated, gives exactly the original model's costs and next
/// states when each quantity's piece is the one it lies in, including 0 and the price breaks.
#[test]
fn pieces_reproduce_the_original_step() {
    let path = common::root().join("models/bulk_discount.hmdp");
    let source = std::fs::read_to_string(&path).expect("model");
    let model = hmdp::check::check_source(&source, &hmdp::check::NoFiles, &Options::default()).model.expect("checks");
    let original = hmdp::ir::lower::lower(&model);
    let (pieced, rewrites) = pipeline(&path, &Options::default());
    assert_eq!(rewrites.len(), 1);
    let find =
        |m: &Module, name: &str| m.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("{name}"));
    let starts = [0.0, 0.0, 100.0, 500.0];
    let piece_of = |q: f64| -> f64 {
        if q == 0.0 {
            0.0
        } else {
            (1..starts.len()).rev().find(|&k| q >= starts[k] && (k > 1 || q > 0.0)).unwrap_or(1) as f64
        }
    };
    let quantities = [0.0, 0.5, 99.9, 100.0, 250.0, 499.0, 500.0, 1000.0];
    let mut a = sim::instance(&original, 5).expect("instance");
    let mut b = sim::instance(&pieced, 5).expect("instance");
    for (round, window) in quantities.windows(3).enumerate() {
        for (k, q) in window.iter().enumerate() {
            a.values[find(&original, "q")][k] = *q;
            b.values[find(&pieced, "q")][k] = *q;
            b.values[find(&pieced, "q.piece")][k] = piece_of(*q);
            a.values[find(&original, "demand")][k] = 100.0 + round as f64;
            b.values[find(&pieced, "demand")][k] = 100.0 + round as f64;
        }
        Machine::new(&original, &mut a, None).run(&original.step).expect("step");
        Machine::new(&pieced, &mut b, None).run(&pieced.step).expect("step");
        for name in ["purchase", "holding", "shortage", "stock'"] {
            assert_eq!(a.values[find(&original, name)], b.values[find(&pieced, name)], "{name} at {window:?}");
        }
    }
    // The random policy draws each quantity inside its chosen piece.
    let instance = sim::instance(&pieced, 1).expect("instance");
    let mut world = Scenario::start(&pieced, &instance, 1, ScenarioSet::Train, 0).expect("init");
    let mut rng = random::policy_stream(1, ScenarioSet::Train, 0);
    let mut policy = Scenariowise { module: &pieced, policy: &RandomPolicy, streams: std::slice::from_mut(&mut rng) };
    let ends = [0.0, 100.0, 500.0, 1000.0];
    for t in 0..200 {
        protocol::decide(&mut world, &mut policy, t).expect("decide");
        let buffers = &world.buffers;
        for k in 0..3 {
            let piece = buffers.values[find(&pieced, "q.piece")][k] as usize;
            let q = buffers.values[find(&pieced, "q")][k];
            assert!(q >= starts[piece] && q <= ends[piece], "q = {q} outside piece {piece}");
        }
    }
}
