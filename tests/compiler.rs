//! The compiler's middle: golden IR and reports for every shipped model, the textual IR round
//! trip, and the automatic reformulation proven equivalent to the hand-written hybrid form.

mod common;

use std::path::Path;

use hmdp::backend::{Buffers, Kernel, Machine, RunError};
use hmdp::check::Options;
use hmdp::ir::{BufferKind, Module};
use hmdp::random::{self, ScenarioSet, Seeds};
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
            sim::simulate(m, &instance, &RandomPolicy, Seeds::same(4), ScenarioSet::Dev, 16).expect("runs").total
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

/// The class of every cost and update of a compiled model, and its rewrites' new actions.
fn classes_and_new_actions(
    source: &str,
    overrides: &[(&str, f64)],
) -> (Vec<hmdp::passes::smoothness::Class>, Vec<(String, Vec<String>)>) {
    let hmdp::pipeline::Compiled { module, rewrites, .. } = common::compiled_text(source, &common::root(), overrides);
    let analysis = hmdp::passes::smoothness::analyze(&module);
    let classes = analysis.costs.iter().chain(&analysis.updates).map(|e| e.class).collect();
    let actions = rewrites
        .iter()
        .map(|r| (module.buffers[r.action].name.clone(), module.buffers[r.action].labels.clone()))
        .collect();
    (classes, actions)
}

/// Runs the step of the model as written and of the reformulated model on the same values of
/// the action `q`, the rewritten model's new choices derived from them by [`Rewrite::choose`]:
/// every cost and next state must be identical.
fn assert_same_step(source: &str, overrides: &[(&str, f64)], quantities: &[Vec<f64>]) {
    let options = Options { overrides: overrides.iter().map(|(n, v)| (n.to_string(), *v)).collect() };
    let model = hmdp::check::check_source(source, &hmdp::check::NoFiles, &options).model.expect("checks");
    let original = hmdp::ir::lower::lower(&model);
    let hmdp::pipeline::Compiled { module: rewritten, rewrites, .. } =
        common::compiled_text(source, &common::root(), overrides);
    assert!(!rewrites.is_empty(), "something is rewritten");
    let find = |m: &Module, name: &str| m.buffers.iter().position(|b| b.name == name).expect(name);
    let compared: Vec<String> = original
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufferKind::Cost | BufferKind::Next { .. }))
        .map(|b| b.name.clone())
        .collect();
    let split = rewrites.iter().any(|r| matches!(r.choice, hmdp::passes::reformulate::Choice::Total { .. }));
    let tolerance = if split { 1e-12 } else { 0.0 };
    let mut a = sim::instance(&original, 3).expect("instance");
    let mut b = sim::instance(&rewritten, 3).expect("instance");
    for q in quantities {
        a.values[find(&original, "q")].clone_from(q);
        b.values[find(&rewritten, "q")].clone_from(q);
        hmdp::passes::reformulate::choose_all(&rewrites, &mut b.values);
        Machine::new(&original, &mut a, None).run(&original.step).expect("step");
        Machine::new(&rewritten, &mut b, None).run(&rewritten.step).expect("step");
        for name in &compared {
            let (x, y) = (&a.values[find(&original, name)], &b.values[find(&rewritten, name)]);
            // A split action is recomputed as total × softmax(log q): equal up to rounding.
            let close = x.iter().zip(y).all(|(x, y)| (x - y).abs() <= tolerance * x.abs().max(1.0));
            assert!(close && x.len() == y.len(), "{name} at q = {q:?}: {x:?} != {y:?}");
        }
        // When the shared order is `zero`, nothing is ordered, whatever pieces the policy chose.
        let order = rewritten.buffers.iter().position(|b| b.name == "q.order");
        let piece = rewritten.buffers.iter().position(|b| b.name == "q.piece");
        if let (Some(order), Some(piece)) = (order, piece)
            && b.values[order][0] == 0.0
        {
            let last = rewritten.buffers[piece].labels.len() as f64 - 1.0;
            b.values[piece].iter_mut().for_each(|p| *p = last);
            Machine::new(&rewritten, &mut b, None).run(&rewritten.step).expect("step");
            for name in &compared {
                assert_eq!(a.values[find(&original, name)], b.values[find(&rewritten, name)], "{name}, no order");
            }
        }
    }
}

/// Issue 19, item 2: a comparison whose operand is a `let` is rewritten as if written inline.
#[test]
fn comparisons_through_lets_are_rewritten() {
    use hmdp::passes::smoothness::Class;
    let joint = "model joint\nsize n = 3\nset I = 0..n\nparam K = 40\nstate x[I] = 0\n\
                 action q[I]: real in [0, 10]\nstep {\n  let total = sum(i in I) q[i]\n  x'[i] = x[i] + q[i]\n\
                 cost fixed = K * (total > 0)\n  cost unit = 2 * total\n}\nhorizon 3\n";
    let (classes, actions) = classes_and_new_actions(joint, &[]);
    assert_eq!(actions, [("q.order".to_string(), vec!["zero".to_string(), "positive".to_string()])]);
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    assert_same_step(joint, &[], &[vec![0.0; 3], vec![0.0, 2.5, 0.0], vec![1.0, 2.0, 10.0]]);

    let scalar = "model scalar\nparam K = 40\nstate x = 0\naction q: real in [0, 10]\nstep {\n  let ordered = q\n\
                  x' = x + ordered\n  cost fixed = K * (ordered > 0)\n}\nhorizon 3\n";
    let (classes, actions) = classes_and_new_actions(scalar, &[]);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].0, "q.regime");
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    assert_same_step(scalar, &[], &[vec![0.0], vec![3.0]]);

    // An indexed `let`, read at another index name, and a chain of two.
    let indexed = "model indexed\nsize n = 2\nset I = 0..n\nstate x[I] = 0\naction q[I]: real >= 0\nstep {\n\
                   let o[i in I] = q[i]\n  let p[j in I] = o[j]\n  x'[i] = x[i] + q[i]\n\
                   cost fixed = sum(k in I) 5 * (p[k] > 0)\n}\nhorizon 3\n";
    let (classes, actions) = classes_and_new_actions(indexed, &[]);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].0, "q.regime");
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    assert_same_step(indexed, &[], &[vec![0.0, 0.0], vec![0.0, 7.0], vec![1.0, 1.0]]);

    // A `let` read at a computed index is not followed: the jump stays, and is reported.
    let shifted = indexed.replace("let p[j in I] = o[j]", "let p[j in I] = o[(j + 1) % n]");
    let (classes, actions) = classes_and_new_actions(&shifted, &[]);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(classes.contains(&Class::Jump));
}

/// Issue 19, item 3: break points and bounds given by constant parameters are numbers to the
/// reformulation, and `--set` moves them.
#[test]
fn break_points_from_constant_parameters_are_rewritten_and_sweepable() {
    use hmdp::passes::smoothness::Class;
    let source = "model breaks\nparam brk = 30\nparam cap = 150\nparam lo = 0\nstate x = 0\n\
                  action q: real in [lo, cap]\nstep {\n  x' = x + q\n\
                  cost purchase = if q >= brk then 0.9 * q else q\n  cost fixed = 20 * (q > 0)\n}\nhorizon 3\n";
    let (classes, actions) = classes_and_new_actions(source, &[]);
    let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(actions, [("q.piece".to_string(), labels(&["zero", "0..30", "30..150"]))]);
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    assert_same_step(source, &[], &[vec![0.0], vec![10.0], vec![30.0], vec![149.0]]);
    let (_, actions) = classes_and_new_actions(source, &[("brk", 40.0), ("cap", 60.0)]);
    assert_eq!(actions, [("q.piece".to_string(), labels(&["zero", "0..40", "40..60"]))]);
    assert_same_step(source, &[("brk", 40.0), ("cap", 60.0)], &[vec![0.0], vec![39.0], vec![40.0], vec![60.0]]);
    // A parameter drawn at random is not known at compile time.
    let random = source.replace("param brk = 30", "param brk ~ uniform(20, 40)");
    let (classes, actions) = classes_and_new_actions(&random, &[]);
    assert_eq!(actions.len(), 1, "only the fixed cost: {actions:?}");
    assert_eq!(actions[0].0, "q.regime");
    assert!(classes.contains(&Class::Jump));
}

/// Issue 19, item 1: joint ordering with quantity discounts gets a shared order choice and
/// per-item pieces; the step is unchanged under the choices the user's quantities imply, an
/// item that does not order included.
#[test]
fn a_price_break_next_to_a_joint_fixed_cost_gets_both_rewrites() {
    use hmdp::passes::smoothness::Class;
    let source = "model joint_discount\nsize n = 3\nset I = 0..n\nparam K = 100\nstate x[I] = 0\n\
                  action q[I]: real in [0, 150]\nstep {\n  x'[i] = x[i] + q[i]\n\
                  cost purchase = sum(i in I) (if q[i] >= 50 then 4 else 5) * q[i]\n\
                  cost small = sum(i in I) 7 * (q[i] < 50)\n  cost fixed = K * (sum(i in I) q[i] > 0)\n}\nhorizon 3\n";
    let (classes, actions) = classes_and_new_actions(source, &[]);
    let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        actions,
        [
            ("q.piece".to_string(), labels(&["0..50", "50..150"])),
            ("q.order".to_string(), labels(&["zero", "positive"])),
        ]
    );
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    let quantities = [vec![0.0, 0.0, 0.0], vec![0.0, 60.0, 0.0], vec![10.0, 50.0, 150.0], vec![49.0, 0.0, 51.0]];
    assert_same_step(source, &[], &quantities);
    // With a per-item fixed cost as well, each item's pieces start with `zero`.
    let per_item =
        source.replace("cost small = sum(i in I) 7 * (q[i] < 50)", "cost small = sum(i in I) 3 * (q[i] > 0)");
    let (classes, actions) = classes_and_new_actions(&per_item, &[]);
    assert_eq!(actions[0], ("q.piece".to_string(), labels(&["zero", "0..50", "50..150"])));
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    assert_same_step(&per_item, &[], &quantities);
    // The policy draws each ordered quantity inside its piece, and an order of nothing is 0.
    let module = common::compile_text(source, &common::root(), &[]);
    let instance = sim::instance(&module, 1).expect("instance");
    let mut world = Scenario::start(&module, &instance, 1, ScenarioSet::Train, 0).expect("init");
    let mut rng = random::policy_stream(1, ScenarioSet::Train, 0);
    let mut policy = Scenariowise { module: &module, policy: &RandomPolicy, streams: std::slice::from_mut(&mut rng) };
    let find = |name: &str| module.buffers.iter().position(|b| b.name == name).expect(name);
    let (mut skipped, mut ordered) = (0, 0);
    for t in 0..100 {
        protocol::decide(&mut world, &mut policy, t).expect("decide");
        let values = &world.buffers.values;
        for k in 0..3 {
            let q = values[find("q")][k];
            if values[find("q.order")][0] == 0.0 {
                assert_eq!(q, 0.0);
                skipped += 1;
            } else {
                let piece = values[find("q.piece")][k];
                assert!(if piece == 0.0 { q <= 50.0 } else { (50.0..=150.0).contains(&q) }, "q = {q} in {piece}");
                ordered += 1;
            }
        }
    }
    assert!(skipped > 30 && ordered > 30, "{skipped} skipped, {ordered} ordered");
}

/// Issue 19, items 5 and 6: the report says why each jump was kept — which rule would have
/// applied and what stopped it, or that it is in the state — and what to write instead; an `if`
/// whose branches meet where it switches is a kink, not a jump.
#[test]
fn the_report_says_why_jumps_were_kept() {
    use hmdp::passes::smoothness::Class;
    let source = "model kept\nsize n = 2\nset I = 0..n\nparam cap ~ uniform(80, 120)\nstate stock[I] = 0\n\
                  state wear = 0\nnoise demand[I] ~ poisson(10)\naction q[I]: real in [5, 100]\naction r: real\n\
                  step {\n  let post[i] = stock[i] + q[i] + r - demand[i]\n  stock'[i] = post[i]\n  wear' = wear + 1\n\
                  cost setup  = sum(i in I) 50 * (q[i] > 5)\n  cost big   = sum(i in I) 9 * (q[i] > cap)\n\
                  cost truck  = 200 * (sum(i in I) q[i] > 150)\n  cost odd   = 3 * (r != 0)\n\
                  cost gap    = 4 * (q[0] > q[1])\n  cost wearing = 30 * (wear > 10)\n\
                  cost hold   = sum(i in I) (if post[i] > 0 then 2 * post[i] else -9 * post[i])\n}\nhorizon 3\n";
    let hmdp::pipeline::Compiled { module, rewrites, .. } = common::compiled_text(source, &common::root(), &[]);
    assert!(rewrites.is_empty(), "{rewrites:?}");
    let analysis = hmdp::passes::smoothness::analyze(&module);
    let report = hmdp::passes::smoothness::render(&module, &analysis, &rewrites, "kept.hmdp", source);
    let class = |name: &str| {
        let id = module.buffers.iter().position(|b| b.name == name).expect(name);
        analysis.costs.iter().find(|c| c.buffer == id).expect(name).class
    };
    assert_eq!(class("hold"), Class::Kink, "{report}");
    for name in ["setup", "big", "truck", "odd", "gap", "wearing"] {
        assert_eq!(class(name), Class::Jump, "{name}");
    }
    for expected in [
        "is 5",                                 // a fixed cost at a lower bound other than 0
        "`cap`, a parameter drawn at random",   // a threshold not known at compile time
        "here the lower bound of `q` is not 0", // a threshold on a sum that cannot be split
        "`r` has no lower bound",
        "both sides of the comparison read continuous actions",
        "it depends on the state `wear`",
        "1 in the state",
    ] {
        assert!(report.contains(expected), "`{expected}` missing from:\n{report}");
    }
    insta::assert_snapshot!("report_why_kept", report);
}

/// Issue 19, item 4: a threshold on the sum of a non-negative action (a truck's capacity) splits
/// the action into a total, whose domain is cut into pieces at the threshold, and shares; the
/// step is unchanged under the total, piece and shares the user's quantities imply.
#[test]
fn a_threshold_on_a_sum_splits_the_action_into_a_total_and_shares() {
    use hmdp::passes::smoothness::Class;
    let source = "model truck\nsize n = 3\nset I = 0..n\nstate x[I] = 0\naction q[I]: real >= 0\nstep {\n\
                  let load = sum(i in I) q[i]\n  x'[i] = x[i] + q[i]\n\
                  cost trucks = 200 * (load > 100) + 50 * (sum(i in I) q[i] > 0)\n\
                  cost unit = sum(i in I) (i + 1) * q[i]\n}\nhorizon 3\n";
    let (classes, actions) = classes_and_new_actions(source, &[]);
    let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        actions,
        [("q.total".to_string(), labels(&[])), ("q.total.piece".to_string(), labels(&["zero", "0..100", "100..inf"]))]
    );
    assert!(classes.iter().all(|c| *c < Class::Jump), "{classes:?}");
    let quantities = [vec![0.0; 3], vec![10.0, 0.0, 20.0], vec![50.0, 49.0, 0.0], vec![40.0, 30.0, 31.0]];
    assert_same_step(source, &[], &quantities);
    // The policy draws a total inside its piece, and the quantities add up to it.
    let module = common::compile_text(source, &common::root(), &[]);
    let instance = sim::instance(&module, 1).expect("instance");
    let mut world = Scenario::start(&module, &instance, 1, ScenarioSet::Train, 0).expect("init");
    let mut rng = random::policy_stream(1, ScenarioSet::Train, 0);
    let mut policy = Scenariowise { module: &module, policy: &RandomPolicy, streams: std::slice::from_mut(&mut rng) };
    let find = |name: &str| module.buffers.iter().position(|b| b.name == name).expect(name);
    let mut pieces = [0; 3];
    for t in 0..100 {
        protocol::decide(&mut world, &mut policy, t).expect("decide");
        world.run(Kernel::Step).expect("step");
        let values = &world.buffers.values;
        let (piece, total) = (values[find("q.total.piece")][0], values[find("q.total")][0]);
        let q: f64 = values[find("q")].iter().sum();
        assert!((q - total).abs() <= 1e-9 * total.max(1.0), "{q} != {total}");
        let (lo, hi) = [(0.0, 0.0), (0.0, 100.0), (100.0, f64::INFINITY)][piece as usize];
        assert!((lo..=hi).contains(&total), "total {total} outside piece {piece}");
        pieces[piece as usize] += 1;
        world.advance();
    }
    assert!(pieces.iter().all(|n| *n > 10), "{pieces:?}");
    // An upper bound on the elements keeps the action whole: the threshold stays a jump.
    let bounded = source.replace("real >= 0", "real in [0, 60]");
    let (classes, _) = classes_and_new_actions(&bounded, &[]);
    assert!(classes.contains(&Class::Jump));
}
