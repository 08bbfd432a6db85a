//! Simulation agrees with hand computation, draws have the right expectations, and results do
//! not depend on the number of threads.

mod common;

use hmdp::check::{NoFiles, Options};
use hmdp::ir::ValidModule;
use hmdp::random::{self, ScenarioSet, Seeds};
use hmdp::sim::{self, RandomPolicy};
use rand_distr::Distribution;

/// A model compiled as every command compiles it.
fn compile(source: &str) -> ValidModule {
    common::compile_text(source, &common::root(), &[])
}

const TINY: &str = "model tiny
param a = 0.5
state x ~ uniform(0, 1)
noise e ~ normal(0, 1)
action u: real in [0, 2]
step {
  x' = a * x + u + e
  cost quad = x^2
  cost effort = u
}
horizon 5
warmup 1
";

#[test]
fn rollout_matches_a_direct_computation() {
    let module = compile(TINY);
    let instance = sim::instance(&module, 0).expect("instance");
    let all = sim::simulate_on_interpreter(&module, &instance, &RandomPolicy, Seeds::same(7), ScenarioSet::Test, 20)
        .expect("runs");
    for (index, costs) in (0..20).zip(&all) {
        // The same streams, drawn in the documented order: x0, then per step the noise, then u.
        let mut world = random::scenario_stream(7, ScenarioSet::Test, index);
        let mut own = random::policy_stream(7, ScenarioSet::Test, index);
        let mut x = random::unit(&mut world);
        let (mut quad, mut effort) = (0.0, 0.0);
        for t in 0..5 {
            let e: f64 = rand_distr::Normal::new(0.0, 1.0).expect("normal").sample(&mut world);
            let u = 2.0 * random::unit(&mut own);
            if t >= 1 {
                quad += x * x;
                effort += u;
            }
            x = 0.5 * x + u + e;
        }
        assert!((costs[0] - quad).abs() < 1e-12 && (costs[1] - effort).abs() < 1e-12, "{costs:?} vs {quad} {effort}");
    }
}

#[test]
fn draws_have_their_expected_means() {
    let module = compile(
        "model draws
state x = 0
noise d ~ poisson(3)
noise g ~ gamma(2, 1.5)
noise b ~ bernoulli(0.25)
noise k ~ categorical(1, 1, 2)
noise n ~ negbinomial(4, 0.5)
noise t ~ truncated(normal(0, 1), 0, 10)
step {
  x' = x
  cost poisson = d
  cost gamma = g
  cost bernoulli = b
  cost categorical = k
  cost negbinomial = n
  cost halfnormal = t
}
horizon 10
report per period
",
    );
    let instance = sim::instance(&module, 0).expect("instance");
    let summary =
        sim::simulate(&module, &instance, &RandomPolicy, Seeds::same(1), ScenarioSet::Train, 4000).expect("simulate");
    let expected = [3.0, 3.0, 0.25, 1.25, 4.0, (2.0 / std::f64::consts::PI).sqrt()];
    for ((name, estimate), want) in summary.terms.iter().zip(expected) {
        // Two half-widths, about four standard errors; the seed is fixed, so this never flakes.
        assert!(
            (estimate.mean - want).abs() < 2.0 * estimate.half_width.max(1e-9),
            "{name}: {} ± {} vs {want}",
            estimate.mean,
            estimate.half_width
        );
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let path = common::root().join("models/inventory.hmdp");
    let source = std::fs::read_to_string(path).expect("model");
    let module = compile(&source);
    let instance = sim::instance(&module, 3).expect("instance");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            sim::simulate(&module, &instance, &RandomPolicy, Seeds::same(5), ScenarioSet::Dev, 64).expect("simulate")
        })
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.total, two.total);
    for (a, b) in one.terms.iter().zip(&two.terms) {
        assert_eq!(a, b);
    }
}

#[test]
fn ir_size_does_not_grow_with_the_model_sizes() {
    for (model, size) in [("inventory.hmdp", "items"), ("switched_lqr.hmdp", "n")] {
        let source = std::fs::read_to_string(common::root().join("models").join(model)).expect("model");
        let lower = |value: f64| {
            let options = Options { overrides: vec![(size.to_string(), value)] };
            let model = hmdp::check::check_source(&source, &NoFiles, &options).model.expect("checks");
            hmdp::ir::lower::lower(&model)
        };
        let (small, large) = (lower(10.0), lower(10_000.0));
        assert_eq!(small.exprs.len(), large.exprs.len(), "{model}");
        assert_eq!(small.buffers.len(), large.buffers.len(), "{model}");
        assert_eq!(small.step, large.step, "{model}: the step program is the same");
    }
}

#[test]
fn every_shipped_model_compiles_and_runs() {
    for path in common::models() {
        let module = common::compile_file(&path, &[]);
        let instance = sim::instance(&module, 0).expect("instance");
        let summary =
            sim::simulate(&module, &instance, &RandomPolicy, Seeds::same(0), ScenarioSet::Test, 8).expect("runs");
        assert!(summary.total.mean.is_finite(), "{}", path.display());
    }
}

#[test]
fn a_discounted_model_reports_its_cost_discounted_to_the_end_of_its_warmup() {
    // Cost k + 1 in period k: periods 2..6 cost 3, 4, 5, 6, weighed 1, 1/2, 1/4, 1/8.
    let source = "model counted
state k = 0
action u: real in [0, 1]
step {
  k' = k + 1
  cost c = k + 1 + 0 * u
}
horizon 6
warmup 2
discount 0.5
report per period
";
    let module = compile(source);
    let instance = sim::instance(&module, 0).expect("instance");
    let costs = sim::costs_on_interpreter(&module, &instance, &RandomPolicy, Seeds::same(1), ScenarioSet::Test, 3)
        .expect("runs");
    // The undiscounted figure is per period; the discounted one is not.
    assert_eq!(costs.per_scenario, vec![vec![4.5]; 3]);
    assert_eq!(costs.discounted, vec![3.0 + 2.0 + 1.25 + 0.75; 3]);
    let line = sim::discounted(&module, &costs.discounted).expect("a discount below 1 is reported");
    assert_eq!(line, "discounted total (discount 0.5, from period 2): 7.0000 ± 0.0000");
    // Without a discount there is nothing more to say.
    assert_eq!(sim::discounted(&compile(TINY), &costs.discounted), None);
}

/// Issue 19, item 7: without `per period` a report per a size is a total over the horizon, and
/// says so.
#[test]
fn the_report_unit_says_a_total_over_the_horizon() {
    let unit = |report: &str| sim::report_unit(&compile(&TINY.replace("warmup 1\n", &format!("warmup 1\n{report}\n"))));
    let sized = TINY.replace("model tiny\n", "model tiny\nsize items = 2\n");
    let sized_unit =
        |report: &str| sim::report_unit(&compile(&sized.replace("warmup 1\n", &format!("warmup 1\n{report}\n"))));
    assert_eq!(unit("report total"), "total over the horizon");
    assert_eq!(unit("report per period"), "per period");
    assert_eq!(sized_unit("report per items"), "total over the horizon per items");
    assert_eq!(sized_unit("report per period per items"), "per period per items");
}
