//! Bounds that read a discrete action (issue 19, item 9): `action u: real in [-umax[mode],
//! umax[mode]]` was refused ("an action's bound cannot use discrete action"); it now checks,
//! its bounds are computed by `regimes` after the discrete choice, and every policy's actions
//! stay within the bounds of the mode it chose. Their derivative is tested with the other
//! bounds' in `gradients.rs`, `train.rs` and `enzyme.rs` (`tests/gradients/mode_bounds.hmdp`).

mod common;

use hmdp::ir::{Stmt, ValidModule};

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
