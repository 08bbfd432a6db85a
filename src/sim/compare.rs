//! Backends checked against each other and against finite differences (`hmdpc gradcheck
//! --backend all`).
//!
//! On the points of [`gradcheck`] (states a random policy reaches, random actions, random
//! normal adjoints of the next states and costs), every backend runs [`Kernel::Step`] and
//! [`Kernel::Vjp`] on the same [`Batch`]. For every pair of backends the table gives the largest
//! relative difference of the forward outputs (next states, lets, costs) and of the VJP outputs
//! (adjoints of the states and continuous actions); for every backend, the largest error of its
//! VJP against central finite differences, as `hmdpc gradcheck` measures it.
//!
//! The relative difference of two values is `|a - b| / max(1, |a|, |b|)`: relative for large
//! values, absolute for small ones, 0 when both are the same infinity or both NaN, infinite when
//! only one is NaN. Before the VJP runs, the adjoints it must overwrite are set to NaN, so a
//! backend that accumulates into them instead of overwriting them is caught.

use super::gradcheck::{self, InputReport};
use crate::backend::{self, Backend, Batch, Buffers, Kernel, RunError, is_accumulated};
use crate::ir::{BufferId, BufferKind, Module};

/// What the last column of a finite-difference row is compared with.
pub const FINITE_DIFFERENCES: &str = "finite differences";

/// The largest difference found between two sources, and where.
#[derive(Clone, Debug)]
pub struct Pair {
    pub left: String,
    /// A backend's name, or [`FINITE_DIFFERENCES`].
    pub right: String,
    /// Forward outputs; `None` against finite differences.
    pub forward: Option<Difference>,
    pub vjp: Difference,
    /// Against finite differences: the elements compared, and those skipped at kinks.
    pub checked: Option<(usize, usize)>,
}

/// A largest relative difference, with the element where it occurs.
#[derive(Clone, Debug, Default)]
pub struct Difference {
    pub max_error: f64,
    /// (buffer name, point, element, left value, right value).
    pub worst: Option<(String, usize, usize, f64, f64)>,
}

impl Difference {
    fn add(&mut self, name: &str, point: usize, element: usize, left: f64, right: f64) {
        let error = relative_difference(left, right);
        if error > self.max_error || self.worst.is_none() {
            self.max_error = self.max_error.max(error);
            self.worst = Some((name.to_string(), point, element, left, right));
        }
    }
}

/// `|a - b| / max(1, |a|, |b|)`; equal values (infinities, NaNs) differ by 0, a NaN against a
/// number by infinity.
pub fn relative_difference(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0.0;
    }
    let error = (a - b).abs() / a.abs().max(b.abs()).max(1.0);
    if error.is_nan() { f64::INFINITY } else { error }
}

/// The comparison table.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub backends: Vec<String>,
    pub points: usize,
    /// Largest acceptable error of a VJP against finite differences.
    pub tolerance: f64,
    /// Largest acceptable difference between two backends: they compute the same function, so
    /// they should agree to rounding.
    pub agreement: f64,
    pub pairs: Vec<Pair>,
}

impl Comparison {
    pub fn max_error(&self) -> f64 {
        self.pairs.iter().flat_map(|p| p.forward.iter().chain([&p.vjp])).map(|d| d.max_error).fold(0.0, f64::max)
    }

    /// The largest acceptable difference of a pair.
    pub fn limit(&self, pair: &Pair) -> f64 {
        if pair.right == FINITE_DIFFERENCES { self.tolerance } else { self.agreement }
    }

    /// The pairs that disagree beyond their limit.
    pub fn failures(&self) -> Vec<&Pair> {
        self.pairs.iter().filter(|p| p.forward.iter().chain([&p.vjp]).any(|d| d.max_error > self.limit(p))).collect()
    }

    /// The table as `hmdpc gradcheck --backend all` prints it.
    pub fn render(&self, file: &str) -> String {
        let mut out = format!(
            "gradcheck {file}: backends {} and {FINITE_DIFFERENCES}, {} random points\n",
            self.backends.join(", "),
            self.points
        );
        let width = self.pairs.iter().map(|p| p.left.len() + p.right.len() + 4).max().unwrap_or(0).max(4);
        out.push_str(&format!("  {:<width$}  {:>10}  {:>10}\n", "pair", "forward", "vjp"));
        for p in &self.pairs {
            let name = format!("{} vs {}", p.left, p.right);
            let forward = p.forward.as_ref().map_or("-".to_string(), |d| format!("{:.3e}", d.max_error));
            let extra =
                p.checked.map_or(String::new(), |(checked, kinks)| format!("  ({checked} checked, {kinks} at kinks)"));
            out.push_str(&format!("  {name:<width$}  {forward:>10}  {:>10.3e}{extra}\n", p.vjp.max_error));
        }
        out.push_str("  (largest relative difference, |a - b| / max(1, |a|, |b|))\n");
        out
    }
}

/// Runs every backend on the same points and compares each pair, and each VJP with finite
/// differences. `backends` must all run `module`.
pub fn compare(
    module: &Module,
    instance: &Buffers,
    backends: &[&dyn Backend],
    points: usize,
    seed: u64,
    tolerance: f64,
    agreement: f64,
) -> Result<Comparison, RunError> {
    let at = gradcheck::points(module, instance, seed, points)?;
    let base = gradcheck::batch(module, instance, &at);
    let forward_outputs: Vec<BufferId> = module
        .buffers_of(|k| matches!(k, BufferKind::Next { .. } | BufferKind::Let | BufferKind::Cost))
        .map(|(id, _)| id)
        .collect();
    let vjp_outputs: Vec<BufferId> =
        gradcheck::inputs(module).into_iter().filter_map(|id| gradcheck::adjoint_of(module, id)).collect();

    let mut runs: Vec<(Batch, Batch)> = Vec::new();
    for backend in backends {
        let mut forward = base.clone();
        backend::run(*backend, Kernel::Step, &mut forward)?;
        let mut vjp = base.clone();
        // Every adjoint a kernel must overwrite is NaN before it runs (an observed let's holds
        // the weight `bounds_vjp` starts from).
        for (id, b) in module.buffers.iter().enumerate() {
            if is_accumulated(module, b.kind) && !gradcheck::seeds_bounds_vjp(module, b.kind) {
                vjp.values[id].iter_mut().for_each(|v| *v = f64::NAN);
            }
        }
        gradcheck::vjp_with_bounds(*backend, module, &mut vjp)?;
        runs.push((forward, vjp));
    }

    let mut pairs = Vec::new();
    for i in 0..backends.len() {
        for j in i + 1..backends.len() {
            let (fa, va) = &runs[i];
            let (fb, vb) = &runs[j];
            pairs.push(Pair {
                left: backends[i].name().into(),
                right: backends[j].name().into(),
                forward: Some(differ(module, &forward_outputs, fa, fb, points)),
                vjp: differ(module, &vjp_outputs, va, vb, points),
                checked: None,
            });
        }
    }
    let differences = at.iter().map(|p| gradcheck::finite_differences(module, p)).collect::<Result<Vec<_>, _>>()?;
    for (backend, (_, vjp)) in backends.iter().zip(&runs) {
        let reports = gradcheck::against_differences(module, vjp, &differences);
        pairs.push(Pair {
            left: backend.name().into(),
            right: FINITE_DIFFERENCES.into(),
            forward: None,
            vjp: worst_of(&reports),
            checked: Some((reports.iter().map(|r| r.checked).sum(), reports.iter().map(|r| r.at_kinks).sum())),
        });
    }
    Ok(Comparison {
        backends: backends.iter().map(|b| b.name().to_string()).collect(),
        points,
        tolerance,
        agreement,
        pairs,
    })
}

fn differ(module: &Module, buffers: &[BufferId], a: &Batch, b: &Batch, points: usize) -> Difference {
    let mut d = Difference::default();
    for &id in buffers {
        let name = &module.buffers[id].name;
        for point in 0..points {
            for (k, (&x, &y)) in a.get(id, point).iter().zip(b.get(id, point)).enumerate() {
                d.add(name, point, k, x, y);
            }
        }
    }
    d
}

fn worst_of(reports: &[InputReport]) -> Difference {
    let mut d = Difference::default();
    for r in reports {
        if let Some((point, element, ad, fd)) = r.worst
            && (r.max_error > d.max_error || d.worst.is_none())
        {
            d.max_error = d.max_error.max(r.max_error);
            d.worst = Some((r.name.clone(), point, element, ad, fd));
        }
    }
    d
}
