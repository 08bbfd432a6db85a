//! Gradient check: the `vjp` program against central finite differences of the `step`.
//!
//! At random points — the state a random policy reaches after a random number of steps of a
//! random scenario, and random actions — the check draws random output weights `w` and compares,
//! for every element `x` of every state and continuous action, the VJP's `∂(w·outputs)/∂x` with
//! `(f(x + h) − f(x − h)) / 2h`. Elements where the one-sided differences disagree sit on a kink
//! or a jump (the derivative does not exist there) and are skipped and counted.
//!
//! When bounds read the state (the module's `bounds_vjp` is not empty), those bounds are outputs
//! too, and so are the lets the policy observes (computed by `bounds` from the state): `f` adds
//! their weighted sum, computed by `bounds` and `regimes`, and the derivative is that of `vjp`
//! plus that of `bounds_vjp` ([`vjp_with_bounds`]), as the trainer uses them.
//!
//! The error of an element is `max(0, |ad − fd| − noise) / max(1, |ad|, |fd|)`, where `noise`
//! bounds the rounding error of the difference quotient (`8 ε max|f| / h`), so that a model
//! with large costs is not failed for rounding it cannot avoid.

use rand::rngs::ChaCha8Rng;

use super::RandomPolicy;
use super::protocol::{self, Scenario, Scenariowise, World};
use crate::backend::interp::{self, Buffers, Machine, RunError};
use crate::backend::{self, Backend, Batch, Interp, Kernel};
use crate::ir::{BufferId, BufferKind, Dist, Module, ValidModule};
use crate::random::{self, ScenarioSet, policy_stream};

/// The result for one input buffer (a state or a continuous action).
#[derive(Clone, Debug)]
pub struct InputReport {
    pub name: String,
    pub checked: usize,
    /// Elements skipped because they sit on a kink or a jump.
    pub at_kinks: usize,
    pub max_error: f64,
    /// The element with the largest error: (point, element, vjp value, finite difference).
    pub worst: Option<(usize, usize, f64, f64)>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub inputs: Vec<InputReport>,
    pub points: usize,
}

impl Report {
    pub fn max_error(&self) -> f64 {
        self.inputs.iter().map(|i| i.max_error).fold(0.0, f64::max)
    }
}

/// Where a point comes from: the state after `steps` steps of scenario `index`.
pub fn prepare(module: &Module, instance: &Buffers, seed: u64, index: u64) -> Result<Buffers, RunError> {
    let mut world = Scenario::start(module, instance, seed, ScenarioSet::Test, index)?;
    let mut own = policy_stream(seed, ScenarioSet::Test, index);
    let steps = (random::unit(&mut own) * module.horizon as f64) as usize;
    let mut policy = Scenariowise { module, policy: &RandomPolicy, streams: std::slice::from_mut(&mut own) };
    for t in 0..steps {
        protocol::period(&mut world, &mut policy, t)?;
        world.advance();
    }
    protocol::decide(&mut world, &mut policy, steps)?;
    Ok(world.buffers)
}

/// The weighted sum of the step's outputs (and of the bounds that read the state).
fn objective(module: &Module, buffers: &mut Buffers, weights: &[(BufferId, Vec<f64>)]) -> Result<f64, RunError> {
    if !module.bounds_vjp.body.is_empty() {
        Machine::new(module, buffers, None).run(&module.bounds)?;
        Machine::new(module, buffers, None).run(&module.regimes)?;
    }
    Machine::new(module, buffers, None).run(&module.step)?;
    Ok(weights.iter().map(|(id, w)| w.iter().zip(&buffers.values[*id]).map(|(a, b)| a * b).sum::<f64>()).sum())
}

pub fn adjoint_of(module: &Module, buffer: BufferId) -> Option<BufferId> {
    module.buffers.iter().position(|b| b.kind == BufferKind::Adjoint { of: buffer })
}

/// The inputs of the derivative, in buffer order: the states and continuous actions (a choice
/// state holds a label, which has no derivative to check).
pub fn inputs(module: &Module) -> Vec<BufferId> {
    module
        .buffers_of(|k| matches!(k, BufferKind::State | BufferKind::Continuous))
        .filter(|&(id, _)| module.is_differentiable(id))
        .map(|(id, _)| id)
        .collect()
}

/// The outputs that the derivative starts from: next states and costs, the bounds and piece
/// bounds that read the state (those with an adjoint), and the lets the policy observes (which
/// `bounds` computes from the state before the decision).
pub fn outputs(module: &Module) -> Vec<BufferId> {
    module
        .buffers_of(|k| {
            matches!(
                k,
                BufferKind::Next { .. }
                    | BufferKind::Cost
                    | BufferKind::Bound { .. }
                    | BufferKind::PieceBound { .. }
                    | BufferKind::Let
            )
        })
        .filter(|&(id, b)| match b.kind {
            BufferKind::Bound { .. } | BufferKind::PieceBound { .. } => adjoint_of(module, id).is_some(),
            BufferKind::Let => module.observe.contains(&id) && !module.bounds_vjp.body.is_empty(),
            _ => true,
        })
        .map(|(id, _)| id)
        .collect()
}

/// Whether `bounds_vjp` starts from the adjoint of `kind` as the caller wrote it: a bound's, or
/// an observed let's (the other lets start from 0).
pub fn seeds_bounds_vjp(module: &Module, kind: BufferKind) -> bool {
    match kind {
        BufferKind::Adjoint { of } => match module.buffers[of].kind {
            BufferKind::Bound { .. } | BufferKind::PieceBound { .. } => true,
            BufferKind::Let => module.observe.contains(&of),
            _ => false,
        },
        _ => false,
    }
}

/// Runs [`Kernel::Vjp`] and, when bounds read the state, [`Kernel::BoundsVjp`] on a batch whose
/// adjoints of the outputs are written, and leaves in the adjoints of the states the sum of both:
/// the derivative of the step's and the bounds' weighted outputs together. The adjoints of the
/// states are set to NaN before the second kernel, which must overwrite them.
pub fn vjp_with_bounds(backend: &dyn Backend, module: &Module, batch: &mut Batch) -> Result<(), RunError> {
    // The bounds kernel adds piece bounds' adjoints into bounds' ones, and the step's kernel
    // overwrites the lets' ones: keep the seeds.
    let seeds: Vec<(BufferId, Vec<f64>)> = module
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| seeds_bounds_vjp(module, b.kind))
        .map(|(id, _)| (id, batch.values[id].clone()))
        .collect();
    backend::run(backend, Kernel::Vjp, batch)?;
    if module.bounds_vjp.body.is_empty() {
        return Ok(());
    }
    // The step's kernel left its own adjoints of the lets: `bounds_vjp` starts from the seeds.
    for (id, b) in module.buffers.iter().enumerate() {
        if matches!(b.kind, BufferKind::Adjoint { of } if module.buffers[of].kind == BufferKind::Let) {
            batch.values[id].fill(0.0);
        }
    }
    for (id, seed) in &seeds {
        batch.values[*id].clone_from(seed);
    }
    let states: Vec<BufferId> =
        module.buffers_of(|k| *k == BufferKind::State).filter_map(|(id, _)| adjoint_of(module, id)).collect();
    let from_step: Vec<Vec<f64>> = states.iter().map(|&a| std::mem::take(&mut batch.values[a])).collect();
    for (&a, values) in states.iter().zip(&from_step) {
        batch.values[a] = vec![f64::NAN; values.len()];
    }
    backend::run(backend, Kernel::BoundsVjp, batch)?;
    for (&a, values) in states.iter().zip(&from_step) {
        for (total, step) in batch.values[a].iter_mut().zip(values) {
            *total += step;
        }
    }
    for (id, seed) in seeds {
        batch.values[id] = seed;
    }
    Ok(())
}

/// A point of the check: a scenario's buffers at a random state with random actions, and random
/// normal weights on the step's outputs (the adjoints the VJP starts from).
#[derive(Clone, Debug)]
pub struct Point {
    pub buffers: Buffers,
    pub weights: Vec<(BufferId, Vec<f64>)>,
}

/// `count` points: point `k` comes from scenario `k` of the test set.
pub fn points(module: &Module, instance: &Buffers, seed: u64, count: usize) -> Result<Vec<Point>, RunError> {
    (0..count)
        .map(|point| {
            let buffers = prepare(module, instance, seed, point as u64)?;
            let mut rng: ChaCha8Rng = policy_stream(seed ^ 0x5eed, ScenarioSet::Dev, point as u64);
            let mut weights = Vec::new();
            for id in outputs(module) {
                let w: Vec<f64> = (0..module.len(id))
                    .map(|_| interp::sample(Dist::Normal, &[0.0, 1.0], None, &mut rng))
                    .collect::<Result<_, _>>()
                    .map_err(|message| RunError { span: Default::default(), message })?;
                weights.push((id, w));
            }
            Ok(Point { buffers, weights })
        })
        .collect()
}

/// A batch with one scenario per point, the weights written into the adjoints of the outputs.
pub fn batch(module: &Module, instance: &Buffers, points: &[Point]) -> Batch {
    let mut batch = Batch::new(module, instance, points.len());
    for (b, point) in points.iter().enumerate() {
        let mut buffers = point.buffers.clone();
        for (id, buffer) in module.buffers.iter().enumerate() {
            if let BufferKind::Adjoint { .. } = buffer.kind {
                buffers.values[id].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        for (id, w) in &point.weights {
            if let Some(adjoint) = adjoint_of(module, *id) {
                buffers.values[adjoint].clone_from(w);
            }
        }
        batch.set_scenario(b, &buffers);
    }
    batch
}

/// The central finite difference of the weighted outputs in one input element.
#[derive(Clone, Copy, Debug)]
pub enum Difference {
    /// A kink or a jump lies within the step: there is no derivative to compare with.
    Kink,
    /// The derivative, and the bound on its rounding error.
    Value { fd: f64, noise: f64 },
}

/// The finite differences at a point, for every element of every input (in [`inputs`] order).
pub fn finite_differences(module: &Module, point: &Point) -> Result<Vec<Vec<Difference>>, RunError> {
    let base = &point.buffers;
    let weights = &point.weights;
    let mut scratch = base.clone();
    let f0 = objective(module, &mut scratch, weights)?;
    let mut all = Vec::new();
    for input in inputs(module) {
        let mut differences = Vec::with_capacity(module.len(input));
        for k in 0..module.len(input) {
            let x = base.values[input][k];
            let h = 1e-4 * x.abs().max(1.0);
            let at = |value: f64| -> Result<f64, RunError> {
                let mut b = base.clone();
                b.values[input][k] = value;
                objective(module, &mut b, weights)
            };
            let (plus, minus) = (at(x + h)?, at(x - h)?);
            let (half_plus, half_minus) = (at(x + h / 2.0)?, at(x - h / 2.0)?);
            // Richardson extrapolation of the central difference: error O(h⁴).
            let wide = (plus - minus) / (2.0 * h);
            let narrow = (half_plus - half_minus) / h;
            let fd = (4.0 * narrow - wide) / 3.0;
            let size = [plus, minus, half_plus, half_minus, f0].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let noise = 16.0 * f64::EPSILON * size / h;
            // Curvature test: for a smooth f, (f(x+d) − 2f(x) + f(x−d)) / d is about d·f'', so
            // halving d halves it. A kink or jump within h leaves a part that does not halve.
            let curvature = |p: f64, m: f64, d: f64| (p - 2.0 * f0 + m) / d;
            let excess = curvature(half_plus, half_minus, h / 2.0) - curvature(plus, minus, h) / 2.0;
            differences.push(if excess.abs() > 1e-3 * fd.abs().max(1.0) + 4.0 * noise {
                Difference::Kink
            } else {
                Difference::Value { fd, noise }
            });
        }
        all.push(differences);
    }
    Ok(all)
}

/// Compares VJPs (`vjp`: the batch after [`Kernel::Vjp`], one scenario per point) with finite
/// differences (`differences[point]` from [`finite_differences`]).
pub fn against_differences(module: &Module, vjp: &Batch, differences: &[Vec<Vec<Difference>>]) -> Vec<InputReport> {
    let inputs = inputs(module);
    let mut reports: Vec<InputReport> = inputs
        .iter()
        .map(|&id| InputReport {
            name: module.buffers[id].name.clone(),
            checked: 0,
            at_kinks: 0,
            max_error: 0.0,
            worst: None,
        })
        .collect();
    for (point, at_point) in differences.iter().enumerate() {
        for ((report, &input), elements) in reports.iter_mut().zip(&inputs).zip(at_point) {
            let adjoint = adjoint_of(module, input);
            for (k, difference) in elements.iter().enumerate() {
                let Difference::Value { fd, noise } = *difference else {
                    report.at_kinks += 1;
                    continue;
                };
                let ad = adjoint.map_or(0.0, |a| vjp.get(a, point)[k]);
                report.checked += 1;
                // A NaN derivative is as wrong as can be (`max` would hide it).
                let error = if ad.is_nan() || fd.is_nan() {
                    f64::INFINITY
                } else {
                    ((ad - fd).abs() - noise).max(0.0) / ad.abs().max(fd.abs()).max(1.0)
                };
                if error > report.max_error || report.worst.is_none() {
                    report.max_error = report.max_error.max(error);
                    report.worst = Some((point, k, ad, fd));
                }
            }
        }
    }
    reports
}

/// Checks a differentiated module's `vjp`, run by the interpreter, at `points` random points.
pub fn check(module: &ValidModule, instance: &Buffers, seed: u64, points: usize) -> Result<Report, RunError> {
    check_backend(&Interp::new(module), module, instance, seed, points)
}

/// Checks the VJP kernel of a backend at `points` random points.
pub fn check_backend(
    backend: &dyn Backend,
    module: &Module,
    instance: &Buffers,
    seed: u64,
    points: usize,
) -> Result<Report, RunError> {
    let at = self::points(module, instance, seed, points)?;
    let mut vjp = batch(module, instance, &at);
    vjp_with_bounds(backend, module, &mut vjp)?;
    let differences = at.iter().map(|p| finite_differences(module, p)).collect::<Result<Vec<_>, _>>()?;
    Ok(Report { inputs: against_differences(module, &vjp, &differences), points })
}
