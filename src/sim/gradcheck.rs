//! Gradient check: the `vjp` program against central finite differences of the `step`.
//!
//! At random points — the state a random policy reaches after a random number of steps of a
//! random scenario, and random actions — the check draws random output weights `w` and compares,
//! for every element `x` of every state and continuous action, the VJP's `∂(w·outputs)/∂x` with
//! `(f(x + h) − f(x − h)) / 2h`. Elements where the one-sided differences disagree sit on a kink
//! or a jump (the derivative does not exist there) and are skipped and counted.
//!
//! The VJP checked is the one of a [`Backend`]: the interpreter's (the IR's own AD), or a
//! compiled one. For a compiled backend the check also compares, at the same points run as one
//! batch, its step and VJP outputs with the interpreter's: they should agree to rounding.
//!
//! The error of an element is `max(0, |ad − fd| − noise) / max(1, |ad|, |fd|)`, where `noise`
//! bounds the rounding error of the difference quotient (`16 ε max|f| / h`), so that a model
//! with large costs is not failed for rounding it cannot avoid.

use rand::rngs::ChaCha8Rng;

use super::eval::{self, Buffers, Machine, RunError};
use super::{RandomPolicy, ScenarioSet, policy_stream, scenario_stream};
use crate::backend::{self, Backend, Batch, Kernel};
use crate::ir::{BufferId, BufferKind, Dist, Module};

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
    /// Largest difference between the backend's step outputs (lets, next states, costs) and the
    /// interpreter's, as [`agreement`] measures it; 0 for the interpreter itself.
    pub forward_vs_interp: f64,
    /// The same for the VJP's outputs (adjoints of states and continuous actions).
    pub vjp_vs_interp: f64,
}

/// How far apart two results of the same computation are: `|a − b| / max(1, |a|, |b|)`,
/// relative for large values and absolute for small ones; 0 when both are the same NaN or
/// infinity, and infinite when only one is NaN.
pub fn agreement(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0.0;
    }
    let error = (a - b).abs() / a.abs().max(b.abs()).max(1.0);
    if error.is_nan() { f64::INFINITY } else { error }
}

impl Report {
    pub fn max_error(&self) -> f64 {
        self.inputs.iter().map(|i| i.max_error).fold(0.0, f64::max)
    }
}

/// A random point: the state after a random number of steps of scenario `index` of the test
/// set under the random policy, with that policy's actions and the step's noise.
pub fn prepare(module: &Module, instance: &Buffers, seed: u64, index: u64) -> Result<Buffers, RunError> {
    let mut buffers = instance.clone();
    let mut world = scenario_stream(seed, ScenarioSet::Test, index);
    let mut own = policy_stream(seed, ScenarioSet::Test, index);
    Machine::new(module, &mut buffers, Some(&mut world)).run(&module.init)?;
    let steps = (eval::unit(&mut own) * module.horizon as f64) as u64;
    for t in 0..=steps {
        Machine::new(module, &mut buffers, Some(&mut world)).run(&module.noise)?;
        super::decide(module, &mut buffers, &RandomPolicy, &mut own)?;
        if t == steps {
            break;
        }
        Machine::new(module, &mut buffers, None).run(&module.step)?;
        for (id, b) in module.buffers.iter().enumerate() {
            if let BufferKind::Next { of } = b.kind {
                let next = buffers.values[id].clone();
                buffers.values[of] = next;
            }
        }
    }
    Ok(buffers)
}

/// The weighted sum of the step's outputs.
fn objective(module: &Module, buffers: &mut Buffers, weights: &[(BufferId, Vec<f64>)]) -> Result<f64, RunError> {
    Machine::new(module, buffers, None).run(&module.step)?;
    Ok(weights.iter().map(|(id, w)| w.iter().zip(&buffers.values[*id]).map(|(a, b)| a * b).sum::<f64>()).sum())
}

fn adjoint_of(module: &Module, buffer: BufferId) -> Option<BufferId> {
    module.buffers.iter().position(|b| b.kind == BufferKind::Adjoint { of: buffer })
}

/// Checks a differentiated module's VJP, as `backend` computes it, at `points` random points.
pub fn check(
    module: &Module,
    instance: &Buffers,
    seed: u64,
    points: usize,
    backend: &dyn Backend,
) -> Result<Report, RunError> {
    let inputs: Vec<BufferId> = module
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b.kind, BufferKind::State | BufferKind::Continuous))
        .map(|(id, _)| id)
        .collect();
    let outputs: Vec<BufferId> = module
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b.kind, BufferKind::Next { .. } | BufferKind::Cost))
        .map(|(id, _)| id)
        .collect();
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

    // Every point, with its random output weights written into the adjoints of the outputs.
    let mut bases = Vec::with_capacity(points);
    let mut all_weights = Vec::with_capacity(points);
    for point in 0..points {
        let mut base = prepare(module, instance, seed, point as u64)?;
        let mut rng: ChaCha8Rng = policy_stream(seed ^ 0x5eed, ScenarioSet::Dev, point as u64);
        let mut weights = Vec::new();
        for &id in &outputs {
            let w: Vec<f64> = (0..module.len(id))
                .map(|_| eval::sample(Dist::Normal, &[0.0, 1.0], None, &mut rng))
                .collect::<Result<_, _>>()
                .map_err(|message| RunError { span: Default::default(), message })?;
            weights.push((id, w));
        }
        for (id, b) in module.buffers.iter().enumerate() {
            if let BufferKind::Adjoint { .. } = b.kind {
                base.values[id].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        for (id, w) in &weights {
            if let Some(adjoint) = adjoint_of(module, *id) {
                base.values[adjoint].clone_from(w);
            }
        }
        bases.push(base);
        all_weights.push(weights);
    }

    // The backend's step and VJP on all points at once, as one batch.
    let mut forward = Batch::new(module, instance, points);
    for (b, base) in bases.iter().enumerate() {
        forward.set_scenario(b, base);
    }
    let mut reverse = forward.clone();
    backend::run(backend, Kernel::Step, &mut forward)?;
    backend::run(backend, Kernel::Vjp, &mut reverse)?;

    let mut forward_vs_interp = 0.0f64;
    let mut vjp_vs_interp = 0.0f64;
    for (point, (base, weights)) in bases.iter().zip(&all_weights).enumerate() {
        let mut expected = base.clone();
        Machine::new(module, &mut expected, None).run(&module.step)?;
        let mut expected_vjp = base.clone();
        Machine::new(module, &mut expected_vjp, None).run(&module.vjp)?;
        for (id, b) in module.buffers.iter().enumerate() {
            let got_forward = forward.get(id, point);
            let got_reverse = reverse.get(id, point);
            match b.kind {
                BufferKind::Let | BufferKind::Next { .. } | BufferKind::Cost => {
                    for (a, e) in got_forward.iter().zip(&expected.values[id]) {
                        forward_vs_interp = forward_vs_interp.max(agreement(*a, *e));
                    }
                }
                BufferKind::Adjoint { of } if inputs.contains(&of) => {
                    for (a, e) in got_reverse.iter().zip(&expected_vjp.values[id]) {
                        vjp_vs_interp = vjp_vs_interp.max(agreement(*a, *e));
                    }
                }
                _ => {}
            }
        }

        let mut scratch = base.clone();
        let f0 = objective(module, &mut scratch, weights)?;
        for (report, &input) in reports.iter_mut().zip(&inputs) {
            let adjoint = adjoint_of(module, input);
            for k in 0..module.len(input) {
                let ad = adjoint.map_or(0.0, |a| reverse.get(a, point)[k]);
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
                if excess.abs() > 1e-3 * fd.abs().max(1.0) + 4.0 * noise {
                    report.at_kinks += 1;
                    continue;
                }
                report.checked += 1;
                let error = ((ad - fd).abs() - noise).max(0.0) / ad.abs().max(fd.abs()).max(1.0);
                if error > report.max_error || report.worst.is_none() {
                    report.max_error = report.max_error.max(error);
                    report.worst = Some((point, k, ad, fd));
                }
            }
        }
    }
    Ok(Report { inputs: reports, points, forward_vs_interp, vjp_vs_interp })
}
