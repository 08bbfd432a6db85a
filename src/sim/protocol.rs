//! The per-period protocol, written once. Every simulated period — `simulate` on any backend,
//! the points of the gradient check, the trainer's rollouts and evaluations — runs [`period`]:
//!
//! ```text
//! noise → bounds → discrete actions → regimes → continuous actions (0 outside their regime) → step
//! ```
//!
//! after which the caller reads what it needs (costs, the batch) and [`World::advance`] makes the
//! next states the states. Two traits split the work:
//!
//! - a [`World`] is where the programs run: [`Scenario`], one scenario's buffers on the
//!   interpreter, or [`Batched`], a batch of scenarios on a backend's kernels, its noise drawn as
//!   the periods come or drawn beforehand (the trainer's fixed scenario sets);
//! - a [`Decide`] chooses the actions: [`Scenariowise`] runs a [`Policy`] scenario by scenario on
//!   each scenario's own policy stream, the trainer's networks decide for a whole batch.
//!
//! [`costs`] runs a whole horizon and sums the reported costs, stopping at the first cost or next
//! state that is not finite ([`super::finite`]); [`simulate_on_interpreter`] and
//! [`simulate_on_backend`] run a scenario set through it, chunk by chunk in parallel. A scenario's
//! numbers depend only on its own streams, so they are the same on every world, every chunking and
//! every thread count (bit for bit with a backend that agrees with the interpreter).

use std::ops::Range;

use rand::rngs::ChaCha8Rng;
use rayon::prelude::*;

use super::finite::{self, NonFinite, Stop};
use super::{Policy, report_scale};
use crate::backend::{self, Backend, Batch, Buffers, Kernel, Machine, RunError};
use crate::ir::{BufferId, BufferKind, Module};
use crate::random::{ScenarioSet, Seeds, policy_stream, scenario_stream};

/// Where the per-period programs run, for one or several scenarios ("rows").
pub trait World {
    /// The number of scenarios.
    fn rows(&self) -> usize;
    /// Buffer `id` of scenario `row`.
    fn get(&self, id: BufferId, row: usize) -> &[f64];
    /// A copy of every buffer of scenario `row`, as the interpreter holds them.
    fn buffers(&self, row: usize) -> Buffers;
    /// Which scenario `row` is: its set and its index in the set.
    fn scenario(&self, row: usize) -> (ScenarioSet, usize);
    /// Draws (or loads) the noise of `period`.
    fn noise(&mut self, period: usize) -> Result<(), RunError>;
    /// Runs one of the per-period programs (`bounds`, `regimes`, `step`).
    fn run(&mut self, kernel: Kernel) -> Result<(), RunError>;
    /// Runs `visit` on each scenario's buffers with that scenario's stream, `streams[row]`.
    fn each_scenario(&mut self, streams: &mut [ChaCha8Rng], visit: &Visit<'_>) -> Result<(), RunError>;
    /// Sets every continuous action outside its regime (its `Regime` mask is 0) to 0.
    fn mask_inactive(&mut self);
    /// The next states become the states.
    fn advance(&mut self);
}

/// What [`World::each_scenario`] runs on one scenario.
pub type Visit<'v> = dyn Fn(&mut Buffers, &mut ChaCha8Rng) -> Result<(), RunError> + Sync + 'v;

/// Chooses the actions of a period, in two phases: the discrete actions, after the `bounds`
/// program; then, after the `regimes` program has computed which continuous actions act and
/// within which bounds (the chosen piece of a reformulated action), the continuous actions.
pub trait Decide<W: ?Sized> {
    type Error: From<RunError> + From<NonFinite>;
    fn discrete(&mut self, world: &mut W, period: usize) -> Result<(), Self::Error>;
    fn continuous(&mut self, world: &mut W, period: usize) -> Result<(), Self::Error>;
}

/// A period up to its decision: the noise, the bounds, the discrete actions, the regimes, the
/// continuous actions, and the rule that a continuous action outside its regime is 0.
pub fn decide<W: World + ?Sized, D: Decide<W>>(world: &mut W, policy: &mut D, period: usize) -> Result<(), D::Error> {
    observe(world, period)?;
    act(world, policy, period)
}

/// The start of a period, up to what a policy observes: the noise, the bounds. A front end that
/// hands the decision to its caller (the Python module's environment) stops here and goes on
/// with [`act`] when the actions come.
pub fn observe<W: World + ?Sized>(world: &mut W, period: usize) -> Result<(), RunError> {
    world.noise(period)?;
    world.run(Kernel::Bounds)
}

/// The decision of a period whose noise and bounds are drawn ([`observe`]): the discrete
/// actions, the regimes, the continuous actions, and the rule that a continuous action outside
/// its regime is 0.
pub fn act<W: World + ?Sized, D: Decide<W>>(world: &mut W, policy: &mut D, period: usize) -> Result<(), D::Error> {
    policy.discrete(world, period)?;
    world.run(Kernel::Regimes)?;
    policy.continuous(world, period)?;
    world.mask_inactive();
    Ok(())
}

/// A whole period: [`decide`], then the step (next states, lets, costs).
pub fn period<W: World + ?Sized, D: Decide<W>>(world: &mut W, policy: &mut D, period: usize) -> Result<(), D::Error> {
    decide(world, policy, period)?;
    world.run(Kernel::Step)?;
    Ok(())
}

/// Runs the whole horizon; per scenario, each cost term summed over the reported periods (from
/// `warmup` on). A cost or next state that is NaN or infinite stops it ([`finite::check`]).
pub fn costs<W: World + ?Sized, D: Decide<W>>(
    module: &Module,
    world: &mut W,
    policy: &mut D,
) -> Result<Vec<Vec<f64>>, D::Error> {
    let terms: Vec<BufferId> = module.costs().map(|(id, _)| id).collect();
    let mut totals = vec![vec![0.0; terms.len()]; world.rows()];
    for t in 0..module.horizon {
        period(world, policy, t as usize)?;
        finite::check(module, world, t as usize)?;
        if t >= module.warmup {
            for (row, total) in totals.iter_mut().enumerate() {
                for (sum, &id) in total.iter_mut().zip(&terms) {
                    *sum += world.get(id, row)[0];
                }
            }
        }
        world.advance();
    }
    Ok(totals)
}

/// Sets every continuous action outside its regime to 0, in one scenario's buffers or in a
/// batch (an action and its mask share a layout).
fn mask_inactive(module: &Module, values: &mut [Vec<f64>]) {
    for (mask, b) in module.buffers.iter().enumerate() {
        if let BufferKind::Regime { action } = b.kind {
            for k in 0..values[action].len() {
                if values[mask][k] == 0.0 {
                    values[action][k] = 0.0;
                }
            }
        }
    }
}

/// Copies every next state into its state, in one scenario's buffers or in a batch.
fn advance(module: &Module, values: &mut [Vec<f64>]) {
    for (next, state) in module.next_states() {
        let (from, to) = if next < state {
            let (left, right) = values.split_at_mut(state);
            (&left[next], &mut right[0])
        } else {
            let (left, right) = values.split_at_mut(next);
            (&right[0], &mut left[state])
        };
        to.copy_from_slice(from);
    }
}

/// One scenario on the interpreter, its noise drawn from its own stream.
pub struct Scenario<'m> {
    module: &'m Module,
    pub buffers: Buffers,
    stream: ChaCha8Rng,
    set: ScenarioSet,
    index: usize,
}

impl<'m> Scenario<'m> {
    /// Scenario `index` of a set: the instance's buffers, the initial states drawn from the
    /// scenario's stream.
    pub fn start(
        module: &'m Module,
        instance: &Buffers,
        seed: u64,
        set: ScenarioSet,
        index: u64,
    ) -> Result<Scenario<'m>, RunError> {
        let mut buffers = instance.clone();
        let mut stream = scenario_stream(seed, set, index);
        Machine::new(module, &mut buffers, Some(&mut stream)).run(&module.init)?;
        Ok(Scenario { module, buffers, stream, set, index: index as usize })
    }
}

impl World for Scenario<'_> {
    fn rows(&self) -> usize {
        1
    }

    fn get(&self, id: BufferId, _row: usize) -> &[f64] {
        &self.buffers.values[id]
    }

    fn buffers(&self, _row: usize) -> Buffers {
        self.buffers.clone()
    }

    fn scenario(&self, _row: usize) -> (ScenarioSet, usize) {
        (self.set, self.index)
    }

    fn noise(&mut self, _period: usize) -> Result<(), RunError> {
        Machine::new(self.module, &mut self.buffers, Some(&mut self.stream)).run(&self.module.noise)
    }

    fn run(&mut self, kernel: Kernel) -> Result<(), RunError> {
        Machine::new(self.module, &mut self.buffers, None).run(kernel.program(self.module))
    }

    fn each_scenario(&mut self, streams: &mut [ChaCha8Rng], visit: &Visit<'_>) -> Result<(), RunError> {
        visit(&mut self.buffers, &mut streams[0])
    }

    fn mask_inactive(&mut self) {
        mask_inactive(self.module, &mut self.buffers.values);
    }

    fn advance(&mut self) {
        advance(self.module, &mut self.buffers.values);
    }
}

/// Where a [`Batched`] world's noise comes from.
pub enum Noise<'a> {
    /// Each scenario's own stream (`streams[row]`), drawn through the interpreter period by period.
    Streams(Vec<ChaCha8Rng>),
    /// Drawn beforehand: per period, per noise buffer, the values of every scenario of a set
    /// (scenario-major); row `b` of the batch is scenario `rows[b]`.
    Drawn { periods: &'a [Vec<(BufferId, Vec<f64>)>], rows: &'a [usize] },
}

/// A batch of scenarios on a backend's kernels.
pub struct Batched<'a> {
    module: &'a Module,
    backend: &'a dyn Backend,
    pub batch: Batch,
    noise: Noise<'a>,
    /// The set of the scenarios, and the index in it of each row's scenario.
    set: ScenarioSet,
    scenarios: Vec<usize>,
}

impl<'a> Batched<'a> {
    /// Scenarios `indices` of a set, their initial states and noise drawn from their own streams
    /// (the numbers [`Scenario`] draws).
    pub fn start(
        module: &'a Module,
        instance: &Buffers,
        backend: &'a dyn Backend,
        seed: u64,
        set: ScenarioSet,
        indices: Range<usize>,
    ) -> Result<Batched<'a>, RunError> {
        let mut batch = Batch::new(module, instance, indices.len());
        let mut streams: Vec<ChaCha8Rng> = indices.clone().map(|i| scenario_stream(seed, set, i as u64)).collect();
        each_scenario(&mut batch, &mut streams, &|buffers, stream| {
            Machine::new(module, buffers, Some(stream)).run(&module.init)
        })?;
        Ok(Batched { module, backend, batch, noise: Noise::Streams(streams), set, scenarios: indices.collect() })
    }

    /// Scenarios `rows` of `set` drawn beforehand: `init` per state buffer and `periods` per
    /// period and noise buffer, the values of every scenario of the set (scenario-major).
    pub fn drawn(
        module: &'a Module,
        instance: &Buffers,
        backend: &'a dyn Backend,
        set: ScenarioSet,
        init: &[(BufferId, Vec<f64>)],
        periods: &'a [Vec<(BufferId, Vec<f64>)>],
        rows: &'a [usize],
    ) -> Batched<'a> {
        let mut batch = Batch::new(module, instance, rows.len());
        copy_rows(&mut batch, init, rows);
        Batched { module, backend, batch, noise: Noise::Drawn { periods, rows }, set, scenarios: rows.to_vec() }
    }
}

/// Copies scenarios `rows` of per-scenario values (scenario-major) into a batch.
fn copy_rows(batch: &mut Batch, values: &[(BufferId, Vec<f64>)], rows: &[usize]) {
    for (id, values) in values {
        let len = batch.lens[*id];
        for (b, &s) in rows.iter().enumerate() {
            batch.get_mut(*id, b).copy_from_slice(&values[s * len..(s + 1) * len]);
        }
    }
}

/// Runs `visit` on a copy of each scenario of a batch in turn, writing each copy back before
/// the next is taken (so one scenario's copy is in memory at a time). The parameters are copied
/// once, not once per scenario: a model whose parameters are large data tables would otherwise
/// spend its time copying them.
fn each_scenario(batch: &mut Batch, streams: &mut [ChaCha8Rng], visit: &Visit<'_>) -> Result<(), RunError> {
    let mut copy: Option<Buffers> = None;
    for (b, stream) in streams.iter_mut().enumerate() {
        let buffers = match &mut copy {
            Some(buffers) => {
                batch.load_scenario(b, buffers);
                buffers
            }
            None => copy.insert(batch.scenario(b)),
        };
        visit(buffers, stream)?;
        batch.set_scenario(b, buffers);
    }
    Ok(())
}

impl World for Batched<'_> {
    fn rows(&self) -> usize {
        self.batch.size
    }

    fn get(&self, id: BufferId, row: usize) -> &[f64] {
        self.batch.get(id, row)
    }

    fn buffers(&self, row: usize) -> Buffers {
        self.batch.scenario(row)
    }

    fn scenario(&self, row: usize) -> (ScenarioSet, usize) {
        (self.set, self.scenarios[row])
    }

    fn noise(&mut self, period: usize) -> Result<(), RunError> {
        let module = self.module;
        match &mut self.noise {
            Noise::Streams(streams) => each_scenario(&mut self.batch, streams, &|buffers, stream| {
                Machine::new(module, buffers, Some(stream)).run(&module.noise)
            }),
            Noise::Drawn { periods, rows } => {
                if let Some(values) = periods.get(period) {
                    copy_rows(&mut self.batch, values, rows);
                }
                Ok(())
            }
        }
    }

    fn run(&mut self, kernel: Kernel) -> Result<(), RunError> {
        backend::run(self.backend, kernel, &mut self.batch)
    }

    fn each_scenario(&mut self, streams: &mut [ChaCha8Rng], visit: &Visit<'_>) -> Result<(), RunError> {
        each_scenario(&mut self.batch, streams, visit)
    }

    fn mask_inactive(&mut self) {
        mask_inactive(self.module, &mut self.batch.values);
    }

    fn advance(&mut self) {
        advance(self.module, &mut self.batch.values);
    }
}

/// A [`Policy`] deciding scenario by scenario, scenario `row` on its own stream `streams[row]`.
pub struct Scenariowise<'a> {
    pub module: &'a Module,
    pub policy: &'a dyn Policy,
    pub streams: &'a mut [ChaCha8Rng],
}

impl<W: World + ?Sized> Decide<W> for Scenariowise<'_> {
    type Error = Stop;

    fn discrete(&mut self, world: &mut W, _period: usize) -> Result<(), Stop> {
        let (module, policy) = (self.module, self.policy);
        Ok(world.each_scenario(self.streams, &|buffers, stream| policy.discrete(module, buffers, stream))?)
    }

    fn continuous(&mut self, world: &mut W, _period: usize) -> Result<(), Stop> {
        let (module, policy) = (self.module, self.policy);
        Ok(world.each_scenario(self.streams, &|buffers, stream| policy.continuous(module, buffers, stream))?)
    }
}

/// Runs `scenarios` scenarios of a set, `chunk` at a time in parallel, each chunk in the world
/// `start` makes for its scenario indices; per scenario, each cost term's reported figure (summed
/// from `warmup` on and scaled as the model's `report` says). Of the chunks that stop, the one
/// [`finite::first`] chooses is reported.
fn over_scenarios<W: World>(
    module: &Module,
    policy: &dyn Policy,
    seeds: Seeds,
    set: ScenarioSet,
    scenarios: usize,
    chunk: usize,
    start: impl Fn(Range<usize>) -> Result<W, RunError> + Sync,
) -> Result<Vec<Vec<f64>>, RunError> {
    let scale = report_scale(module);
    let chunks: Vec<Range<usize>> = (0..scenarios).step_by(chunk).map(|s| s..(s + chunk).min(scenarios)).collect();
    let per_chunk: Vec<Result<Vec<Vec<f64>>, Stop>> = chunks
        .into_par_iter()
        .map(|indices| {
            let mut streams: Vec<ChaCha8Rng> =
                indices.clone().map(|i| policy_stream(seeds.policy, set, i as u64)).collect();
            let mut world = start(indices)?;
            costs(module, &mut world, &mut Scenariowise { module, policy, streams: &mut streams })
        })
        .collect();
    let mut out = Vec::with_capacity(scenarios);
    let mut stops = Vec::new();
    for totals in per_chunk {
        match totals {
            Ok(totals) => out.extend(totals.into_iter().map(|c| c.iter().map(|v| v / scale).collect::<Vec<f64>>())),
            Err(stop) => stops.push(stop),
        }
    }
    match finite::first(stops) {
        Some(stop) => Err(stop.into()),
        None => Ok(out),
    }
}

/// Runs `scenarios` scenarios of a set on the interpreter, each on its own buffers, in parallel;
/// per scenario, each cost term's reported figure.
pub fn simulate_on_interpreter(
    module: &Module,
    instance: &Buffers,
    policy: &dyn Policy,
    seeds: Seeds,
    set: ScenarioSet,
    scenarios: usize,
) -> Result<Vec<Vec<f64>>, RunError> {
    over_scenarios(module, policy, seeds, set, scenarios, 1, |indices| {
        Scenario::start(module, instance, seeds.scenarios, set, indices.start as u64)
    })
}

/// [`simulate_on_interpreter`] with the per-period programs run by a backend's kernels on batches
/// of scenarios. The noise is still drawn and the policy still decides scenario by scenario, on
/// the same streams, so the numbers are the interpreter's (bit for bit with a backend that agrees
/// with it).
pub fn simulate_on_backend(
    module: &Module,
    instance: &Buffers,
    backend: &dyn Backend,
    policy: &dyn Policy,
    seeds: Seeds,
    set: ScenarioSet,
    scenarios: usize,
) -> Result<Vec<Vec<f64>>, RunError> {
    over_scenarios(module, policy, seeds, set, scenarios, 1024, |indices| {
        Batched::start(module, instance, backend, seeds.scenarios, set, indices)
    })
}
