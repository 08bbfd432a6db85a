//! `hmdpc bench`: throughput of the step and of step + VJP on every backend, measured side by
//! side in one run on the same batch.
//!
//! The batch holds `size` scenarios at random points (states a random policy reaches, random
//! actions and noise; a few distinct points tiled over the batch, since drawing thousands with
//! the interpreter would take longer than the measurement). Each measurement repeats the kernel
//! until a time budget is spent and reports the median repetition, as scenario-steps per second
//! (`size / seconds`). The interpreter runs the way `simulate` runs it, on each scenario's own
//! buffers in parallel, with no copying; every other backend runs on the batch layout.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::backend::{self, Backend, Batch, Buffers, Kernel, Machine, RunError};
use crate::ir::{BufferKind, Module};
use crate::sim::gradcheck;

/// Distinct random points tiled over the batch.
const DISTINCT_POINTS: usize = 64;

/// One backend's figures, in scenario-steps per second.
#[derive(Clone, Debug)]
pub struct Row {
    pub backend: String,
    pub threads: usize,
    pub forward: f64,
    pub forward_vjp: f64,
}

/// A batch of `size` scenarios at random points, with random output adjoints for the VJP.
pub fn random_batch(module: &Module, instance: &Buffers, seed: u64, size: usize) -> Result<Batch, RunError> {
    let distinct = size.clamp(1, DISTINCT_POINTS);
    let mut points = Vec::with_capacity(distinct);
    for index in 0..distinct {
        let mut point = gradcheck::prepare(module, instance, seed, index as u64)?;
        for (id, b) in module.buffers.iter().enumerate() {
            if let BufferKind::Adjoint { of } = b.kind
                && matches!(module.buffers[of].kind, BufferKind::Next { .. } | BufferKind::Cost)
            {
                for (k, v) in point.values[id].iter_mut().enumerate() {
                    // A fixed, varied seed: the figures do not depend on its values.
                    *v = 1.0 + ((k + index) % 7) as f64 * 0.25;
                }
            }
        }
        points.push(point);
    }
    let mut batch = Batch::new(module, instance, size);
    for b in 0..size {
        batch.set_scenario(b, &points[b % distinct]);
    }
    Ok(batch)
}

/// The median duration of `run` over repetitions that together take about `budget`.
fn median_time(budget: Duration, mut run: impl FnMut() -> Result<(), RunError>) -> Result<f64, RunError> {
    run()?; // warm-up
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 3 || (started.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Measures a batch backend on `threads` threads.
pub fn measure(backend: &dyn Backend, batch: &Batch, threads: usize, budget: Duration) -> Result<Row, RunError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RunError { span: Default::default(), message: format!("cannot start {threads} threads: {e}") })?;
    let size = batch.size as f64;
    pool.install(|| {
        let mut work = batch.clone();
        let forward = median_time(budget, || backend::run(backend, Kernel::Step, &mut work))?;
        let forward_vjp = median_time(budget, || {
            backend::run(backend, Kernel::Step, &mut work)?;
            backend::run(backend, Kernel::Vjp, &mut work)
        })?;
        Ok(Row { backend: backend.name().into(), threads, forward: size / forward, forward_vjp: size / forward_vjp })
    })
}

/// Measures the interpreter on each scenario's own buffers, on `threads` threads.
pub fn measure_interpreter(module: &Module, batch: &Batch, threads: usize, budget: Duration) -> Result<Row, RunError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RunError { span: Default::default(), message: format!("cannot start {threads} threads: {e}") })?;
    let mut scenarios: Vec<Buffers> = (0..batch.size).map(|b| batch.scenario(b)).collect();
    let size = batch.size as f64;
    let accumulated: Vec<usize> = module
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| backend::is_accumulated(module, b.kind))
        .map(|(id, _)| id)
        .collect();
    pool.install(|| {
        let forward = median_time(budget, || {
            scenarios.par_iter_mut().try_for_each(|s| Machine::new(module, s, None).run(&module.step))
        })?;
        let forward_vjp = median_time(budget, || {
            scenarios.par_iter_mut().try_for_each(|s| {
                Machine::new(module, s, None).run(&module.step)?;
                for &id in &accumulated {
                    s.values[id].fill(0.0);
                }
                Machine::new(module, s, None).run(&module.vjp)
            })
        })?;
        Ok(Row { backend: "interp".into(), threads, forward: size / forward, forward_vjp: size / forward_vjp })
    })
}
