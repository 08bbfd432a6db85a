//! Bounds that read a discrete action (issue 19, item 9): `action u: real in [-umax[mode],
//! umax[mode]]` was refused ("an action's bound cannot use discrete action"); it now checks,
//! its bounds are computed by `regimes` after the discrete choice, and every policy's actions
//! stay within the bounds of the mode it chose. Their derivative is tested with the other
//! bounds' in `gradients.rs`, `train.rs` and `enzyme.rs` (`tests/gradients/mode_bounds.hmdp`).
//!
//! A bound on the sum of an action (issue 19, item 4: `action ship[W]: real >= 0, sum <= stock`)
//! is the upper bound of a total split into shares: every policy keeps it, and a short training
//! run learns under it. Its derivative is tested likewise (`tests/gradients/joint_bound.hmdp`).

mod common;

use std::process::Command;

use hmdp::backend::Machine;
use hmdp::ir::{BufferKind, Stmt, ValidModule};

/// The reproducer of the issue: one signed power whose bound depends on the mode.
const SIGNED_POWER: &str = "
model signed_power
size modes = 3
set M = 0..modes
param umax[m in M] = 1 + 4 * m
state x = 0
noise load ~ normal(0, 1)
action mode: choice[M]
action u: real in [-umax[mode], umax[mode]]
step {
  x' = 0.9 * x + u + load
  cost c = x^2 + mode
}
horizon 10
";

fn stores(body: &[Stmt]) -> Vec<usize> {
    body.iter()
        .flat_map(|s| match s {
            Stmt::For { body, .. } => stores(body),
            Stmt::Store { buffer, .. } => vec![*buffer],
            _ => Vec::new(),
        })
        .collect()
}

fn find(module: &ValidModule, name: &str) -> usize {
    module.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn a_bound_that_reads_the_discrete_action_is_computed_after_the_choice() {
    let module = common::compile_text(SIGNED_POWER, &common::root(), &[]);
    let (lo, hi) = (find(&module, "u.lo"), find(&module, "u.hi"));
    assert!(stores(&module.bounds.body).is_empty(), "no bound is known before the choice");
    assert_eq!(stores(&module.regimes.body), [lo, hi]);
    assert!(module.bounds_vjp.body.is_empty(), "these bounds do not read the state");
    let instance = hmdp::sim::instance(&module, 0).expect("instance");
    let (mode, u) = (find(&module, "mode"), find(&module, "u"));
    let mut modes = [0usize; 3];
    for point in 0..60 {
        // A random policy's state and actions after a random number of periods, as `simulate`
        // and `gradcheck` reach them.
        let at = hmdp::sim::gradcheck::prepare(&module, &instance, 3, point).expect("runs");
        let m = at.values[mode][0] as usize;
        let limit = 1.0 + 4.0 * m as f64;
        assert_eq!((at.values[lo][0], at.values[hi][0]), (-limit, limit), "point {point}: the chosen mode's bounds");
        assert!(at.values[u][0].abs() <= limit, "point {point}: u = {} in mode {m}", at.values[u][0]);
        modes[m] += 1;
    }
    assert!(modes.iter().all(|&n| n > 0), "every mode is visited: {modes:?}");
}

#[test]
fn a_bound_still_cannot_read_a_continuous_action() {
    let source = SIGNED_POWER
        .replace("action u: real in [-umax[mode], umax[mode]]", "action u: real in [0, 1]\naction v: real in [0, u]");
    let outcome = hmdp::check::check_source(&source, &hmdp::check::NoFiles, &hmdp::check::Options::default());
    let messages: Vec<&str> = outcome.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages, ["an action's bound cannot use continuous action `u`"]);
}

const JOINT_BOUND: &str = "tests/gradients/joint_bound.hmdp";

/// Per point, the stock the policy saw and what it shipped to each store: a random policy's
/// decision after a random number of periods, as `simulate` and `gradcheck` reach it, with the
/// step run so that it computes the shipments from the total and the shares.
fn shipments(module: &ValidModule, points: u64) -> Vec<(f64, Vec<f64>, f64)> {
    let instance = hmdp::sim::instance(module, 0).expect("instance");
    let (stock, ship, total) = (find(module, "stock"), find(module, "ship"), find(module, "ship.total"));
    (0..points)
        .map(|point| {
            let mut at = hmdp::sim::gradcheck::prepare(module, &instance, 3, point).expect("runs");
            Machine::new(module, &mut at, None).run(&module.step).expect("the step runs");
            (at.values[stock][0], at.values[ship].clone(), at.values[total][0])
        })
        .collect()
}

#[test]
fn a_bound_on_the_sum_bounds_a_total_split_into_shares() {
    let module = common::compile_file(&common::root().join(JOINT_BOUND), &[]);
    let kind = |name: &str| module.buffers[find(&module, name)].kind;
    let total = find(&module, "ship.total");
    assert_eq!(kind("ship"), BufferKind::Let, "the step computes the shipments");
    assert_eq!(kind("ship.share"), BufferKind::Continuous);
    assert_eq!(kind("ship.total.lo"), BufferKind::Bound { action: total, upper: false });
    assert_eq!(kind("ship.total.hi"), BufferKind::Bound { action: total, upper: true });
    let (lo, hi) = (find(&module, "ship.total.lo"), find(&module, "ship.total.hi"));
    assert_eq!(stores(&module.bounds.body), [hi, lo], "both bounds are known before the decision");
    assert!(!module.bounds_vjp.body.is_empty(), "the bound reads the state");
    let mut tight = 0;
    for (stock, ship, total) in shipments(&module, 60) {
        let shipped: f64 = ship.iter().sum();
        assert!(ship.iter().all(|s| *s >= 0.0), "{ship:?}");
        assert!(
            (shipped - total).abs() <= 1e-9 * total.max(1.0),
            "the shares add up to the total: {shipped} vs {total}"
        );
        assert!(shipped <= 0.8 * stock * (1.0 + 1e-12), "shipped {shipped} of a stock of {stock}");
        tight += usize::from(shipped > 0.5 * stock);
    }
    assert!(tight > 0, "some decisions come close to the bound");
}

/// A declared policy that ships more than the bound is scaled down to it, every store alike.
#[test]
fn a_declared_policy_is_kept_within_the_bound_on_the_sum() {
    let source = std::fs::read_to_string(common::root().join(JOINT_BOUND)).expect("model")
        + "\npolicy greedy {\n  ship[w] = if stock > 11.5 then target[w] else 1\n}\n";
    let compiled = common::compiled_text(&source, &common::root(), &[]);
    let module = &compiled.module;
    let policy = hmdp::sim::policy::DeclaredPolicy::new(module, compiled.policy("greedy").expect("policy"), None)
        .expect("the policy runs on the split action");
    use hmdp::sim::protocol::{self, Scenario, Scenariowise, World};
    let instance = hmdp::sim::instance(module, 0).expect("instance");
    let (stock, ship) = (find(module, "stock"), find(module, "ship"));
    let set = hmdp::random::ScenarioSet::Test;
    let mut world = Scenario::start(module, &instance, 0, set, 0).expect("scenario");
    let mut own = hmdp::random::policy_stream(0, set, 0);
    let mut decide = Scenariowise { module, policy: &policy, streams: std::slice::from_mut(&mut own) };
    let mut clamped = 0;
    for t in 0..module.horizon as usize {
        protocol::period(&mut world, &mut decide, t).expect("a period");
        let held = world.buffers.values[stock][0];
        let target = if held > 11.5 { [4.0, 6.0, 8.0] } else { [1.0; 3] };
        let shipped = &world.buffers.values[ship];
        let wanted: f64 = target.iter().sum();
        let scale = (0.8 * held).min(wanted) / wanted;
        for (w, (s, want)) in shipped.iter().zip(target).enumerate() {
            assert!(
                (s - scale * want).abs() <= 1e-9 * want,
                "period {t}, store {w}: shipped {s} of {want} (scale {scale})"
            );
        }
        clamped += usize::from(scale < 1.0);
        world.advance();
    }
    assert!(clamped > 0 && clamped < module.horizon as usize, "the bound binds in some periods only: {clamped}");
}

/// A few updates of HPO under the bound on the sum learn to ship what the stores need, far
/// better than the random policy, and the trained policy keeps the bound in every period.
#[test]
fn a_model_with_a_bound_on_the_sum_trains() {
    let folder = std::env::temp_dir().join(format!("hmdp-joint-bound-{}", std::process::id()));
    let out = folder.to_str().expect("utf-8 temp dir");
    let hmdpc = |args: &[&str]| {
        let run =
            Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(run.status.success(), "{}{}", text(&run.stdout), text(&run.stderr));
        text(&run.stdout)
    };
    hmdpc(&[
        "train",
        "--quiet",
        "--force",
        "--updates",
        "40",
        "--batch",
        "32",
        "--scenarios",
        "32",
        "--out",
        out,
        JOINT_BOUND,
    ]);
    let total = |text: &str| -> f64 {
        let line = text.lines().find(|l| l.trim_start().starts_with("total")).expect("a total line");
        line.split_whitespace().nth(1).expect("a figure").parse().expect("a number")
    };
    let trained = total(&hmdpc(&["eval", "--scenarios", "100", out]));
    let random = total(&hmdpc(&["simulate", "--scenarios", "100", JOINT_BOUND]));
    assert!(trained < 0.5 * random, "trained {trained} vs random {random}");

    let run = hmdp::train::folder::Run::open(&folder).expect("run folder");
    let module = &run.compiled.module;
    let (nets, spec) = run.policy(hmdp::train::folder::Checkpoint::Best).expect("policy");
    let instance = hmdp::sim::instance(module, 0).expect("instance");
    let set = hmdp::train::scenarios::Scenarios::draw(module, &instance, 0, hmdp::random::ScenarioSet::Test, 8)
        .expect("scenarios");
    let jit = hmdp::backend::jit::Jit::compile(module).expect("jit");
    let ctx = hmdp::train::rollout::Context { module, spec: &spec, backend: &jit, instance: &instance };
    let mut rng = <rand::rngs::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let indices: Vec<usize> = (0..8).collect();
    let mode = hmdp::train::rollout::Mode::Greedy;
    let traj = hmdp::train::rollout::rollout(&ctx, &nets, &set, &indices, mode, true, &mut rng).expect("rollout");
    std::fs::remove_dir_all(&folder).ok();
    let (stock, ship) = (find(module, "stock"), find(module, "ship"));
    for (t, step) in traj.steps.iter().enumerate() {
        let batch = step.batch.as_ref().expect("recorded");
        for b in 0..batch.size {
            let (held, shipped) = (batch.get(stock, b)[0], batch.get(ship, b).iter().sum::<f64>());
            assert!(shipped <= 0.8 * held * (1.0 + 1e-12), "period {t}, scenario {b}: shipped {shipped} of {held}");
        }
    }
}
