//! Simulation: instances, scenario sets, and rollouts of a policy through the per-period
//! protocol ([`protocol`]) on the interpreter or a backend's kernels.
//!
//! Every random number comes from the streams of [`crate::random`]: an instance from the instance
//! seed, each scenario's initial state and noise from its own stream, a policy's choices from
//! another per scenario, so two policies meet the same scenarios and no figure depends on the
//! number of threads.

pub mod compare;
pub mod finite;
pub mod gradcheck;
pub mod policy;
pub mod protocol;

use rand::rngs::ChaCha8Rng;

use crate::backend::interp;
use crate::backend::{Buffers, Machine, RunError};
use crate::ir::{BufferKind, Module};
use crate::random::{self, ScenarioSet, Seeds};
pub use protocol::{Costs, costs_on_backend, costs_on_interpreter, simulate_on_backend, simulate_on_interpreter};

/// Draws the parameters of an instance: all buffers, with the parameters filled in.
pub fn instance(module: &Module, seed: u64) -> Result<Buffers, RunError> {
    let mut buffers = Buffers::new(module);
    let mut rng = random::instance_stream(seed);
    Machine::new(module, &mut buffers, Some(&mut rng)).run(&module.instance)?;
    Ok(buffers)
}

/// Chooses the actions of one scenario's period, in the two phases of [`protocol::Decide`]: the
/// discrete actions first; then, after the `regimes` program has computed which continuous
/// actions act and within which bounds (the chosen piece of a reformulated action), the
/// continuous actions. [`protocol::Scenariowise`] runs it on every scenario of a world.
pub trait Policy: Sync {
    fn discrete(&self, module: &Module, buffers: &mut Buffers, rng: &mut ChaCha8Rng) -> Result<(), RunError>;
    fn continuous(&self, module: &Module, buffers: &mut Buffers, rng: &mut ChaCha8Rng) -> Result<(), RunError>;
}

/// The bounds a continuous action is drawn in: its piece bounds when it has them, else its
/// bounds; an infinite bound is no bound.
fn action_bounds(module: &Module, buffers: &Buffers, action: usize) -> Vec<(Option<f64>, Option<f64>)> {
    let find = |upper: bool| {
        let piece = module.buffers.iter().position(|x| x.kind == BufferKind::PieceBound { action, upper });
        piece.or_else(|| module.buffers.iter().position(|x| x.kind == BufferKind::Bound { action, upper }))
    };
    let (lo, hi) = (find(false), find(true));
    let finite = |v: f64| v.is_finite().then_some(v);
    (0..buffers.values[action].len())
        .map(|k| (lo.and_then(|l| finite(buffers.values[l][k])), hi.and_then(|h| finite(buffers.values[h][k]))))
        .collect()
}

/// Where an action's bounds are written: the source of its lower and upper bound expressions.
fn bound_span(module: &Module, action: usize) -> crate::diagnostics::Span {
    fn value(stmts: &[crate::ir::Stmt], bound: usize) -> Option<crate::ir::Handle<crate::ir::Expr>> {
        stmts.iter().find_map(|s| match s {
            crate::ir::Stmt::For { body, .. } => value(body, bound),
            crate::ir::Stmt::Store { buffer, value, .. } if *buffer == bound => Some(*value),
            _ => None,
        })
    }
    let span_of = |upper: bool| {
        let bound = module.buffers.iter().position(|x| x.kind == BufferKind::Bound { action, upper })?;
        value(&module.bounds.body, bound).map(|v| module.exprs.span(v))
    };
    match (span_of(false), span_of(true)) {
        (Some(lo), Some(hi)) => lo.to(hi),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => crate::diagnostics::Span::default(),
    }
}

/// Uniformly random actions: each discrete action picks a label uniformly; a continuous action
/// is uniform on `[lo, hi]` when both bounds exist, `lo + Exp(1)` or `hi - Exp(1)` on a
/// half-line, and standard normal when unbounded.
pub struct RandomPolicy;

impl Policy for RandomPolicy {
    fn discrete(&self, module: &Module, buffers: &mut Buffers, rng: &mut ChaCha8Rng) -> Result<(), RunError> {
        for (id, b) in module.buffers.iter().enumerate() {
            if b.kind == BufferKind::Discrete {
                let labels = b.labels.len().max(1) as f64;
                for v in &mut buffers.values[id] {
                    *v = (random::unit(rng) * labels).floor().min(labels - 1.0);
                }
            }
        }
        Ok(())
    }

    fn continuous(&self, module: &Module, buffers: &mut Buffers, rng: &mut ChaCha8Rng) -> Result<(), RunError> {
        for (id, b) in module.buffers.iter().enumerate() {
            if b.kind != BufferKind::Continuous {
                continue;
            }
            for (k, (lo, hi)) in action_bounds(module, buffers, id).into_iter().enumerate() {
                if let (Some(l), Some(h)) = (lo, hi)
                    && l > h
                {
                    return Err(RunError {
                        span: bound_span(module, id),
                        message: format!("the bounds of `{}` (element {k}) are empty here: {l} > {h}", b.name),
                    });
                }
                let u = random::unit(rng);
                buffers.values[id][k] = match (lo, hi) {
                    (Some(l), Some(h)) => l + (h - l).max(0.0) * u,
                    (Some(l), None) => l - (1.0 - u).ln(),
                    (None, Some(h)) => h + (1.0 - u).ln(),
                    (None, None) => interp::sample(crate::ir::Dist::Normal, &[0.0, 1.0], None, rng)
                        .map_err(|message| RunError { span: Default::default(), message })?,
                };
            }
        }
        Ok(())
    }
}

/// A mean over scenarios with the half-width of its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub half_width: f64,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Estimate {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance =
            if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Estimate { mean, half_width: 1.96 * (variance / n).sqrt() }
    }
}

/// What `simulate` and `eval` report: each cost term and the total, scaled as the model's
/// `report` says.
#[derive(Clone, Debug)]
pub struct Summary {
    pub terms: Vec<(String, Estimate)>,
    pub total: Estimate,
    pub scenarios: usize,
    /// What one unit of the figures is, e.g. "per period per items".
    pub unit: String,
}

/// The factor the model's `report` divides summed costs by.
pub fn report_scale(module: &Module) -> f64 {
    let periods = if module.report.per_period { (module.horizon - module.warmup) as f64 } else { 1.0 };
    periods * module.report.per_size.iter().map(|(_, v)| *v as f64).product::<f64>()
}

/// The factor a discounted total is divided by: the sizes the model's `report` names, not its
/// periods (a discounted sum is no sum over periods).
pub fn discount_scale(module: &Module) -> f64 {
    module.report.per_size.iter().map(|(_, v)| *v as f64).product::<f64>()
}

/// The line `simulate` and `eval` print under the costs of a model that declares a `discount`
/// below 1: the mean over scenarios, with its 95% confidence interval, of the total cost of the
/// periods from `warmup` on, period `warmup + k` weighed by `discount^k` (the cost discounted to
/// period `warmup`), divided by the sizes `report` names. `None` without a discount.
pub fn discounted(module: &Module, per_scenario: &[f64]) -> Option<String> {
    if module.discount >= 1.0 || per_scenario.is_empty() {
        return None;
    }
    let e = Estimate::of(per_scenario);
    let per: String = module.report.per_size.iter().map(|(name, _)| format!(" per {name}")).collect();
    let from = if module.warmup > 0 { format!(", from period {}", module.warmup) } else { String::new() };
    Some(format!("discounted total (discount {}{from}){per}: {:.4} ± {:.4}", module.discount, e.mean, e.half_width))
}

/// What one unit of reported figures is, e.g. "per period per items".
pub fn report_unit(module: &Module) -> String {
    let mut unit = String::new();
    if module.report.per_period {
        unit.push_str("per period");
    }
    for (name, _) in &module.report.per_size {
        unit.push_str(&format!("{}per {name}", if unit.is_empty() { "" } else { " " }));
    }
    // Without `per period` the figure is a total over the horizon, whatever it is divided by.
    match (unit.is_empty(), module.report.per_period) {
        (true, _) => "total over the horizon".into(),
        (false, false) => format!("total over the horizon {unit}"),
        (false, true) => unit,
    }
}

/// Runs `scenarios` scenarios of a set in parallel and summarises their reported costs.
pub fn simulate(
    module: &Module,
    instance: &Buffers,
    policy: &dyn Policy,
    seeds: Seeds,
    set: ScenarioSet,
    scenarios: usize,
) -> Result<Summary, RunError> {
    let per_scenario = simulate_on_interpreter(module, instance, policy, seeds, set, scenarios)?;
    Ok(summarise(module, &per_scenario, scenarios))
}

/// Each cost term's and the total's mean with its confidence interval.
pub fn summarise(module: &Module, per_scenario: &[Vec<f64>], scenarios: usize) -> Summary {
    let names: Vec<String> = module.costs().map(|(_, b)| b.name.clone()).collect();
    let terms = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values: Vec<f64> = per_scenario.iter().map(|c| c[k]).collect();
            (name.clone(), Estimate::of(&values))
        })
        .collect();
    let totals: Vec<f64> = per_scenario.iter().map(|c| c.iter().sum::<f64>()).collect();
    Summary { terms, total: Estimate::of(&totals), scenarios, unit: report_unit(module) }
}
