//! The trainer's gradients are proven, not assumed: the pathwise gradient through the compiled
//! kernels and the networks matches finite differences; the mixed estimator (`mixed_gradient`,
//! the function every HPO update runs, here with the plain weights) is unbiased with the
//! cross term, biased without it where later discrete choices read states that continuous actions
//! move, and unbiased without it where they do not. What training reaches is tested in
//! `train_outcomes.rs` and `train_cli.rs`.

mod common;

use hmdp::backend::Buffers;
use hmdp::backend::jit::Jit;
use hmdp::ir::ValidModule;
use hmdp::nn::mlp::{Stack, Tape};
use hmdp::random::ScenarioSet;
use hmdp::sim;
use hmdp::train::policy::Nets;
use hmdp::train::rollout::{Context, Mode, rollout};
use hmdp::train::scenarios::Scenarios;
use hmdp::train::spec::Spec;
use hmdp::train::update::{Weights, mixed_gradient};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

struct Setup {
    module: ValidModule,
    spec: Spec,
    jit: Jit,
    instance: Buffers,
}

fn setup(source: &str, overrides: &[(&str, f64)]) -> Setup {
    let module = common::compile_text(source, &common::root().join("models"), overrides);
    let spec = Spec::of(&module);
    let jit = Jit::compile(&module).expect("compiles");
    let instance = sim::instance(&module, 0).expect("instance");
    Setup { module, spec, jit, instance }
}

/// Small networks with every weight random, so that every path of the gradient is exercised (a
/// zero discrete head would make the cross term vanish).
fn random_nets(spec: &Spec, seed: u64, size: f32) -> Nets {
    let mut nets = Nets::new(spec, &[6], false, &mut ChaCha8Rng::seed_from_u64(seed));
    // Drawn from a generator of their own, so that the weights do not change with the shape of
    // the value network.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for net in [&mut nets.discrete, &mut nets.continuous] {
        for p in net.params_mut() {
            let z: f64 = StandardNormal.sample(&mut rng);
            *p = size * z as f32;
        }
    }
    nets
}

/// A two-step problem where the discrete choice at the second step reads the state the first
/// continuous action moved, and its cost depends on that choice.
const TWO_STEPS: &str = "
model two_steps
state x = 0.5
action k: choice { low, high }
action u: real
step {
  let y = x + u
  x' = y
  cost c = (y - 1)^2 + 0.5 * u^2 + (if k == high then 2 * y else 0.4)
}
observe { x }
horizon 2
";

/// The same problem, but the policy sees only a constant: later choices cannot depend on
/// earlier continuous actions.
const BLIND: &str = "
model blind
param w = 1
state x = 0.5
action k: choice { low, high }
action u: real
step {
  let y = x + u
  x' = y
  cost c = (y - 1)^2 + 0.5 * u^2 + (if k == high then 2 * y else 0.4)
}
observe { w }
horizon 2
";

fn exact_objective(s: &Setup, nets: &Nets, set: &Scenarios) -> f64 {
    let ctx = Context { module: &s.module, spec: &s.spec, backend: &s.jit, instance: &s.instance };
    // Every path of labels (k0, k1): rows 0..4, labels per (step, row).
    let mut labels = vec![0u32; 2 * 4];
    for b in 0..4 {
        labels[b] = (b & 1) as u32;
        labels[4 + b] = (b >> 1) as u32;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let traj = rollout(&ctx, nets, set, &[0, 0, 0, 0], Mode::Forced(&labels), false, &mut rng).expect("rollout");
    (0..4)
        .map(|b| {
            let p: f64 = traj.steps.iter().map(|st| st.log_prob[b]).sum::<f64>().exp();
            p * traj.steps.iter().map(|st| st.costs[b]).sum::<f64>()
        })
        .sum()
}

/// Central finite differences of the exact objective in every network parameter.
fn finite_differences(s: &Setup, nets: &Nets, set: &Scenarios) -> (Vec<f64>, Vec<f64>) {
    let h = 1e-3f32;
    let fd = |which: usize, k: usize| {
        let mut plus = nets.clone();
        let mut minus = nets.clone();
        let (p, m) = if which == 0 {
            (&mut plus.discrete.params_mut()[k], &mut minus.discrete.params_mut()[k])
        } else {
            (&mut plus.continuous.params_mut()[k], &mut minus.continuous.params_mut()[k])
        };
        let (hp, hm) = (*p + h, *m - h);
        let width = (hp - hm) as f64;
        *p = hp;
        *m = hm;
        (exact_objective(s, &plus, set) - exact_objective(s, &minus, set)) / width
    };
    let d = (0..nets.discrete.params().len()).map(|k| fd(0, k)).collect();
    let c = (0..nets.continuous.params().len()).map(|k| fd(1, k)).collect();
    (d, c)
}

/// Mean and standard error over `groups` rollouts of `rows` sampled scenarios each.
fn estimator(
    s: &Setup,
    nets: &Nets,
    set: &Scenarios,
    cross: bool,
    groups: usize,
    rows: usize,
) -> [(Vec<f64>, Vec<f64>); 2] {
    let ctx = Context { module: &s.module, spec: &s.spec, backend: &s.jit, instance: &s.instance };
    let mut sums: [(Vec<f64>, Vec<f64>); 2] = [
        (vec![0.0; nets.discrete.params().len()], vec![0.0; nets.discrete.params().len()]),
        (vec![0.0; nets.continuous.params().len()], vec![0.0; nets.continuous.params().len()]),
    ];
    for g in 0..groups {
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + g as u64);
        let mut traj = rollout(&ctx, nets, set, &vec![0; rows], Mode::Sample, true, &mut rng).expect("rollout");
        // The plain estimator: each choice weighed by the cost to go from it, every step's cost
        // by 1, averaged over the rows; the trainer runs the same function with its own weights.
        let horizon = traj.steps.len();
        let mut score = vec![0.0; horizon * rows];
        for b in 0..rows {
            let mut to_go = 0.0;
            for t in (0..horizon).rev() {
                to_go += traj.steps[t].costs[b];
                score[t * rows + b] = to_go / rows as f64;
            }
        }
        let mut tape = Tape::default();
        tape.concatenate(traj.steps.iter().map(|s| s.discrete_tape.as_ref().expect("recorded")));
        let weight = |_: usize| 1.0 / rows as f64;
        let weights =
            Weights { steps: 0..horizon, score: &score, entropy: 0.0, pathwise: &weight, saturation: 0.0, cross };
        let (mut d, mut c) = (Vec::new(), Vec::new());
        mixed_gradient(&ctx, nets, &mut traj, &mut tape, &weights, &mut Stack::new(), &mut d, &mut c)
            .expect("gradient");
        for (k, v) in d.iter().enumerate() {
            sums[0].0[k] += *v as f64;
            sums[0].1[k] += (*v as f64).powi(2);
        }
        for (k, v) in c.iter().enumerate() {
            sums[1].0[k] += *v as f64;
            sums[1].1[k] += (*v as f64).powi(2);
        }
    }
    let n = groups as f64;
    sums.map(|(sum, sq)| {
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let se = sq.iter().zip(&mean).map(|(q, m)| ((q / n - m * m).max(0.0) / (n - 1.0)).sqrt()).collect();
        (mean, se)
    })
}

/// Parameters whose estimate is further than `sigmas` standard errors from the truth.
fn outliers(mean: &[f64], se: &[f64], truth: &[f64], sigmas: f64) -> Vec<(usize, f64, f64, f64)> {
    mean.iter()
        .zip(se)
        .zip(truth)
        .enumerate()
        .filter(|(_, ((m, s), t))| (*m - *t).abs() > sigmas * *s + 2e-3 * t.abs().max(0.05))
        .map(|(k, ((m, s), t))| (k, *m, *s, *t))
        .collect()
}

#[test]
fn the_mixed_estimator_is_unbiased_with_the_cross_term_and_biased_without_it() {
    let s = setup(TWO_STEPS, &[]);
    let set = Scenarios::draw(&s.module, &s.instance, 0, ScenarioSet::Train, 1).expect("scenarios");
    let nets = random_nets(&s.spec, 7, 0.8);
    let (fd_d, fd_c) = finite_differences(&s, &nets, &set);
    assert!(fd_c.iter().any(|v| v.abs() > 1e-2), "the continuous gradient is not trivial: {fd_c:?}");

    let [(d_mean, d_se), (c_mean, c_se)] = estimator(&s, &nets, &set, true, 40, 2000);
    let bad = outliers(&d_mean, &d_se, &fd_d, 4.5);
    assert!(bad.is_empty(), "discrete head, (param, estimate, s.e., finite differences): {bad:?}");
    let bad = outliers(&c_mean, &c_se, &fd_c, 4.5);
    assert!(bad.is_empty(), "continuous head with the cross term: {bad:?}");

    // Without the cross term the continuous head misses how u moves the second choice.
    let [_, (c_mean, c_se)] = estimator(&s, &nets, &set, false, 40, 2000);
    let bad = outliers(&c_mean, &c_se, &fd_c, 8.0);
    assert!(!bad.is_empty(), "dropping the cross term should bias this problem's continuous gradient");
}

#[test]
fn without_the_cross_term_the_estimator_is_unbiased_when_choices_cannot_see_the_state() {
    let s = setup(BLIND, &[]);
    let set = Scenarios::draw(&s.module, &s.instance, 0, ScenarioSet::Train, 1).expect("scenarios");
    let nets = random_nets(&s.spec, 11, 0.8);
    let (fd_d, fd_c) = finite_differences(&s, &nets, &set);
    let [(d_mean, d_se), (c_mean, c_se)] = estimator(&s, &nets, &set, false, 40, 2000);
    assert!(outliers(&d_mean, &d_se, &fd_d, 4.5).is_empty());
    assert!(outliers(&c_mean, &c_se, &fd_c, 4.5).is_empty(), "{:?}", outliers(&c_mean, &c_se, &fd_c, 4.5));
}

/// Smooth dynamics with actions on a finite interval (sigmoid), on a half-line (softplus) and
/// inside the pieces a price break creates, with noise.
const SQUASHED: &str = "
model squashed
size n = 3
set I = 0..n
param a[I] ~ uniform(0.5, 0.9)
state x[I] = 1
noise e[I] ~ normal(0, 0.3)
action m: choice { slow, fast }
action r[I]: real in [-1, 2]
action q[I]: real >= 0
action v: real in [0, 10]
step {
  let price = if v < 4 then 1.0 else 0.8
  x'[i] = a[i] * x[i] + 0.3 * r[i] + 0.2 * q[i] - 0.1 * v + e[i] + (if m == fast then 0.2 else 0.0)
  cost c = sum(i in I) (x[i] - 1)^2 + 0.1 * sum(i in I) q[i]^2 + 0.05 * v^2 * price
}
horizon 12
";

/// With the discrete labels held fixed, the trajectory cost is a smooth function of the
/// continuous network's parameters; backpropagation through the kernels' VJPs, the squashes, the
/// network and the features must give its derivative.
#[test]
fn pathwise_gradient_through_time_matches_finite_differences() {
    let lqr = std::fs::read_to_string(common::root().join("models/switched_lqr.hmdp")).expect("model");
    for (source, overrides) in [(lqr.as_str(), vec![("n", 3.0), ("modes", 2.0)]), (SQUASHED, vec![])] {
        let s = setup(source, &overrides);
        let (worst, largest) = common::pathwise_against_finite_differences(&s.module, &s.jit, 3);
        assert!(largest > 0.1, "{}: the gradient is trivial ({largest})", s.module.name);
        assert!(worst < 2e-2, "{}: largest relative error {worst}", s.module.name);
    }
}

/// The saturation penalty that holds a bounded action's raw output where its squash has a slope
/// (issue 16: a policy driven into the flat end stays there) is part of the loss the pathwise
/// gradient differentiates: with networks whose outputs are pushed out to the flat side, on an
/// interval whose bounds read the state (`energy_storage`) and on half-lines (`inventory`), it
/// matches finite differences of cost plus penalty on the interpreter and the JIT (a gradient
/// without it, wrong by the penalty's part, fails); so does the cost alone, without the penalty.
#[test]
fn the_saturation_penalty_is_differentiated_with_the_cost() {
    let energy = std::fs::read_to_string(common::root().join("models/energy_storage.hmdp")).expect("model");
    let inventory = std::fs::read_to_string(common::root().join("models/inventory.hmdp")).expect("model");
    for (source, overrides) in [(energy.as_str(), vec![]), (inventory.as_str(), vec![("items", 2.0)])] {
        let s = setup(source, &overrides);
        let interp = hmdp::backend::Interp::new(&s.module);
        for backend in [&interp as &dyn hmdp::backend::Backend, &s.jit] {
            let at = format!("{} on {}", s.module.name, backend.name());
            let (worst, largest, active) =
                common::pathwise_with_penalty_against_finite_differences(&s.module, backend, 3, 8.0, 2.0);
            assert!(active > 10, "{at}: only {active} raw outputs are beyond 6");
            assert!(largest > 0.1, "{at}: the gradient is trivial ({largest})");
            assert!(worst < 2e-2, "{at}: largest relative error {worst}");
        }
        // The same networks, the penalty left out of both.
        let (worst, _, _) = common::pathwise_with_penalty_against_finite_differences(&s.module, &s.jit, 3, 8.0, 0.0);
        assert!(worst < 2e-2, "{}: without the penalty, {worst}", s.module.name);
    }
}

/// An action squashed into bounds that read the state moves with the state through its bounds:
/// the pathwise gradient follows it (the `bounds_vjp` kernel), on the interpreter and the JIT
/// (the Enzyme backend in `enzyme.rs`), and without that term it is measurably wrong. The bounds
/// of `mode_bounds` also read the discrete action, so `regimes` computes them after the choice.
#[test]
fn pathwise_gradient_follows_bounds_that_read_the_state() {
    let lost_sales = std::fs::read_to_string(common::root().join("models/lost_sales.hmdp")).expect("model");
    let energy = std::fs::read_to_string(common::root().join("models/energy_storage.hmdp")).expect("model");
    let mode_bounds = std::fs::read_to_string(common::root().join("tests/gradients/mode_bounds.hmdp")).expect("model");
    // A bound on the sum of an action that reads the state (issue 19, item 4): the total's bound.
    let joint = std::fs::read_to_string(common::root().join("tests/gradients/joint_bound.hmdp")).expect("model");
    for (source, overrides) in [
        (energy.as_str(), vec![]),
        (lost_sales.as_str(), vec![("items", 2.0)]),
        (mode_bounds.as_str(), vec![]),
        (joint.as_str(), vec![]),
    ] {
        let s = setup(source, &overrides);
        assert!(!s.module.bounds_vjp.body.is_empty(), "{}: the bounds read the state", s.module.name);
        let interp = hmdp::backend::Interp::new(&s.module);
        for backend in [&interp as &dyn hmdp::backend::Backend, &s.jit] {
            let (worst, largest) = common::pathwise_against_finite_differences(&s.module, backend, 3);
            let at = format!("{} on {}", s.module.name, backend.name());
            assert!(largest > 0.1, "{at}: the gradient is trivial ({largest})");
            assert!(worst < 2e-2, "{at}: largest relative error {worst}");
        }
        let mut blind = s.module.clone().into_inner();
        blind.bounds_vjp.body.clear();
        let blind = ValidModule::new(blind).expect("still valid");
        let jit = Jit::compile(&blind).expect("compiles");
        let (worst, _) = common::pathwise_against_finite_differences(&blind, &jit, 3);
        assert!(worst > 0.1, "{}: ignoring the bounds must be caught ({worst})", s.module.name);
    }
}

/// A `let` the policy observes moves with the state, and the features with it (issue 19, item
/// 13): the pathwise gradient carries the features' gradient back through the let into the
/// states (the `bounds_vjp` kernel, seeded with it), on the interpreter and the JIT (the Enzyme
/// backend in `enzyme.rs`); holding the observed let fixed, as the trainer did, is measurably
/// wrong.
#[test]
fn pathwise_gradient_follows_an_observed_let() {
    let source = std::fs::read_to_string(common::root().join("tests/gradients/observed_let.hmdp")).expect("model");
    let s = setup(&source, &[]);
    assert!(!s.module.bounds_vjp.body.is_empty(), "the observed let reads the state");
    let interp = hmdp::backend::Interp::new(&s.module);
    for backend in [&interp as &dyn hmdp::backend::Backend, &s.jit] {
        let (worst, largest) = common::pathwise_against_finite_differences(&s.module, backend, 3);
        let at = format!("on {}", backend.name());
        assert!(largest > 0.1, "{at}: the gradient is trivial ({largest})");
        assert!(worst < 2e-2, "{at}: largest relative error {worst}");
    }
    let mut blind = s.module.clone().into_inner();
    blind.bounds_vjp.body.clear();
    let blind = ValidModule::new(blind).expect("still valid");
    let jit = Jit::compile(&blind).expect("compiles");
    let (worst, _) = common::pathwise_against_finite_differences(&blind, &jit, 3);
    assert!(worst > 0.1, "holding the observed let fixed must be caught ({worst})");
}
