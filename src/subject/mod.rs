//! What is evaluated: a *subject* is a policy to score, compare, roll out, ask or export — a
//! trained run's checkpoint or the random policy — and a [`Testbed`] is the scenarios it meets.
//! `hmdpc eval`, `compare`, `rollout`, `act` and `export` all go through here, so a figure of one
//! command is the figure of the others.
//!
//! [`score`] runs a subject over the testbed's scenarios, period by period in the protocol of
//! [`crate::sim::protocol`], on batches drawn beforehand from the scenario streams (the numbers
//! `simulate` draws) and run on the testbed's backend. It gives each scenario's reported cost
//! terms, how often each label of each discrete action was chosen and the mean of each
//! continuous action where it acts, and, when asked, the trajectory of the first scenarios
//! ([`Trace`]). A trained policy decides greedily ([`greedy`]), exactly as the trainer's
//! evaluation does; the random policy is [`crate::sim::RandomPolicy`] on each scenario's policy
//! stream, as in `simulate`.
//!
//! A declared policy (`policy NAME { … }` in the model) is one more variant of [`Subject`]: a
//! [`crate::sim::Policy`] decided scenario by scenario like [`Subject::Random`]. Its arms are in
//! [`Subject::label`] and [`Subject::decides`] (`Decides::Rule` with [`Odds::Chosen`]); scoring,
//! trajectories and `act` then take it as they take the random policy.

pub mod act;
pub mod export;
pub mod greedy;

use std::fmt::Write as _;
use std::path::Path;

use rand::rngs::ChaCha8Rng;

use crate::backend::{Backend, Buffers};
use crate::ir::{BufferId, BufferKind, Module};
use crate::pipeline::Compiled;
use crate::random::{ScenarioSet, Seeds, policy_stream};
use crate::sim::finite;
use crate::sim::policy::DeclaredPolicy;
use crate::sim::protocol::{self, Batched, Decide, Scenariowise, World};
use crate::sim::{Estimate, Policy, RandomPolicy, report_scale};
use crate::train::TrainError;
use crate::train::folder::{Checkpoint, RunRecord};
use crate::train::policy::Nets;
use crate::train::rollout::Context;
use crate::train::scenarios::Scenarios;
use crate::train::spec::Spec;

/// A policy to evaluate.
pub enum Subject {
    /// A checkpoint of a trained run: its networks and what they see and produce.
    Trained { nets: Box<Nets>, spec: Spec, checkpoint: Checkpoint },
    /// Uniformly random actions within the bounds ([`RandomPolicy`]), on each scenario's policy
    /// stream of the testbed's policy seed.
    Random,
    /// A policy declared in the model (`policy NAME { … }`) with the values of its tunables: its
    /// start values, or those `hmdpc tune` kept.
    Declared { policy: Box<DeclaredPolicy>, tuned: bool },
}

impl Subject {
    /// What the subject is, in a user's words ("best checkpoint", "random policy").
    pub fn label(&self) -> String {
        match self {
            Subject::Trained { checkpoint, .. } => {
                format!("{} checkpoint", checkpoint.file().trim_end_matches(".ckpt"))
            }
            Subject::Random => "random policy".to_string(),
            Subject::Declared { policy, tuned: true } => format!("tuned policy `{}`", policy.name),
            Subject::Declared { policy, tuned: false } => format!("policy `{}`", policy.name),
        }
    }

    /// How the subject decides: its networks for a whole batch, or a rule scenario by scenario.
    pub fn decides(&self) -> Decides<'_> {
        match self {
            Subject::Trained { nets, spec, .. } => Decides::Networks { nets, spec },
            Subject::Random => Decides::Rule { policy: &RandomPolicy, odds: Odds::Uniform },
            Subject::Declared { policy, .. } => Decides::Rule { policy: policy.as_ref(), odds: Odds::Chosen },
        }
    }
}

/// The subject a run folder holds: a `tune` run's declared policy with its tuned values
/// (whichever checkpoint is asked for: it has none), or the networks of one of its checkpoints.
/// The error says what is wrong with the folder.
pub fn of_run(
    folder: &Path,
    compiled: &Compiled,
    record: &RunRecord,
    checkpoint: Checkpoint,
) -> Result<Subject, String> {
    if let Some(tuned) = &record.tuned {
        let policy = crate::tune::tuned_policy(compiled, tuned)?;
        return Ok(Subject::Declared { policy: Box::new(policy), tuned: true });
    }
    let (nets, spec) = crate::train::folder::load_checkpoint(folder, &compiled.module, &record.config, checkpoint)?;
    Ok(Subject::Trained { nets: Box::new(nets), spec, checkpoint })
}

/// How a subject decides.
pub enum Decides<'s> {
    /// Trained networks, greedily ([`greedy`]).
    Networks { nets: &'s Nets, spec: &'s Spec },
    /// A [`Policy`] on each scenario's own policy stream, giving its choices these probabilities.
    Rule { policy: &'s dyn Policy, odds: Odds },
}

/// The probabilities a rule-based subject (one that decides scenario by scenario) gives its
/// discrete choices in a trajectory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Odds {
    /// Every label alike (the random policy).
    Uniform,
    /// 1 for the label chosen (a deterministic rule).
    Chosen,
}

/// The scenarios every subject meets: one instance of a model, a scenario set drawn from the
/// scenario seed, the policy seed of subjects that draw (the random policy), and the kernels
/// that run the model's programs.
pub struct Testbed<'m> {
    pub module: &'m Module,
    pub instance: Buffers,
    pub seeds: Seeds,
    pub set: Scenarios,
    pub backend: &'m dyn Backend,
}

impl<'m> Testbed<'m> {
    /// Draws the first `count` scenarios of `set` from `seeds.scenarios` for an instance.
    pub fn draw(
        module: &'m Module,
        instance: Buffers,
        backend: &'m dyn Backend,
        seeds: Seeds,
        set: ScenarioSet,
        count: usize,
    ) -> Result<Testbed<'m>, crate::backend::RunError> {
        let set = Scenarios::draw(module, &instance, seeds.scenarios, set, count)?;
        Ok(Testbed { module, instance, seeds, set, backend })
    }
}

/// How often each label of a discrete action was chosen, over every element, scenario and
/// reported period (from `warmup` on).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelCounts {
    pub action: String,
    pub labels: Vec<String>,
    pub counts: Vec<u64>,
}

impl LabelCounts {
    /// The share of choices that went to each label (0 for none when nothing was chosen).
    pub fn frequencies(&self) -> Vec<f64> {
        let all: u64 = self.counts.iter().sum();
        self.counts.iter().map(|&c| if all == 0 { 0.0 } else { c as f64 / all as f64 }).collect()
    }
}

/// Where a continuous action acted (its `when` held, or it has none), over every element,
/// scenario and reported period, and the sum of its values there.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionUse {
    pub action: String,
    pub acting: u64,
    pub elements: u64,
    pub sum: f64,
}

impl ActionUse {
    /// The share of elements and periods in which the action acted.
    pub fn share(&self) -> f64 {
        if self.elements == 0 { 0.0 } else { self.acting as f64 / self.elements as f64 }
    }

    /// The mean value where it acted (`None` when it never did).
    pub fn mean(&self) -> Option<f64> {
        (self.acting > 0).then(|| self.sum / self.acting as f64)
    }
}

/// What a subject did: every discrete action's label counts and every continuous action's use.
#[derive(Clone, Debug, PartialEq)]
pub struct Regimes {
    pub discrete: Vec<LabelCounts>,
    pub continuous: Vec<ActionUse>,
}

impl Regimes {
    fn new(module: &Module) -> Regimes {
        let discrete = module
            .buffers
            .iter()
            .filter(|b| b.kind == BufferKind::Discrete)
            .map(|b| LabelCounts { action: b.name.clone(), labels: b.labels.clone(), counts: vec![0; b.labels.len()] })
            .collect();
        let continuous = module
            .buffers
            .iter()
            .filter(|b| b.kind == BufferKind::Continuous)
            .map(|b| ActionUse { action: b.name.clone(), acting: 0, elements: 0, sum: 0.0 })
            .collect();
        Regimes { discrete, continuous }
    }

    /// Counts what scenario `row` of a world chose this period.
    fn count<W: World + ?Sized>(&mut self, actions: &Actions, world: &W, row: usize) {
        for (counts, &id) in self.discrete.iter_mut().zip(&actions.discrete) {
            for &label in world.get(id, row) {
                if let Some(c) = counts.counts.get_mut(label as usize) {
                    *c += 1;
                }
            }
        }
        for (used, &(id, mask)) in self.continuous.iter_mut().zip(&actions.continuous) {
            let values = world.get(id, row);
            for (k, &v) in values.iter().enumerate() {
                used.elements += 1;
                if mask.is_none_or(|m| world.get(m, row)[k] != 0.0) {
                    used.acting += 1;
                    used.sum += v;
                }
            }
        }
    }
}

/// The action buffers of a module: discrete ones, and continuous ones with their regime mask.
struct Actions {
    discrete: Vec<BufferId>,
    continuous: Vec<(BufferId, Option<BufferId>)>,
}

impl Actions {
    fn of(module: &Module) -> Actions {
        let discrete = module.buffers_of(|k| *k == BufferKind::Discrete).map(|(id, _)| id).collect();
        let continuous = module
            .buffers_of(|k| *k == BufferKind::Continuous)
            .map(|(id, _)| (id, module.buffers.iter().position(|b| b.kind == BufferKind::Regime { action: id })))
            .collect();
        Actions { discrete, continuous }
    }
}

/// A subject's figures on a testbed.
#[derive(Clone, Debug)]
pub struct Score {
    /// The cost terms, in the model's order.
    pub terms: Vec<String>,
    /// Per scenario, each cost term's reported figure (summed from `warmup` on, scaled as the
    /// model's `report` says).
    pub per_scenario: Vec<Vec<f64>>,
    /// Per scenario, the total discounted by the model's `discount` to period `warmup`, scaled
    /// as [`crate::sim::discounted`] says.
    pub discounted: Vec<f64>,
    pub regimes: Regimes,
}

impl Score {
    /// Each scenario's total.
    pub fn totals(&self) -> Vec<f64> {
        self.per_scenario.iter().map(|r| r.iter().sum()).collect()
    }

    /// Each scenario's value of every term and then the total.
    fn columns(&self) -> Vec<Vec<f64>> {
        let mut columns: Vec<Vec<f64>> =
            (0..self.terms.len()).map(|k| self.per_scenario.iter().map(|r| r[k]).collect()).collect();
        columns.push(self.totals());
        columns
    }

    /// Each cost term's and the total's mean with its 95% confidence interval.
    pub fn estimates(&self) -> Vec<(String, Estimate)> {
        let names = self.terms.iter().cloned().chain(["total".to_string()]);
        names.zip(self.columns()).map(|(name, values)| (name, Estimate::of(&values))).collect()
    }

    /// Per term and total, the mean of `other - self` over the scenarios both met, with the 95%
    /// confidence interval of the paired differences. `None` when the two were not scored on
    /// the same scenarios and terms.
    pub fn paired_difference(&self, other: &Score) -> Option<Vec<(String, Estimate)>> {
        if self.terms != other.terms || self.per_scenario.len() != other.per_scenario.len() {
            return None;
        }
        let names = self.terms.iter().cloned().chain(["total".to_string()]);
        let differences =
            self.columns().into_iter().zip(other.columns()).map(|(mine, theirs)| {
                Estimate::of(&theirs.iter().zip(&mine).map(|(t, m)| t - m).collect::<Vec<f64>>())
            });
        Some(names.zip(differences).collect())
    }

    /// One row per scenario: its index, each term and the total (`--per-scenario`).
    pub fn per_scenario_csv(&self) -> String {
        per_scenario_csv(&[Figures { prefix: "", terms: &self.terms, per_scenario: &self.per_scenario }])
    }
}

/// A policy's per-scenario figures, for [`per_scenario_csv`].
pub struct Figures<'a> {
    /// Put before the policy's column names, to tell the policies of `compare` apart.
    pub prefix: &'a str,
    pub terms: &'a [String],
    /// Per scenario, each term's figure.
    pub per_scenario: &'a [Vec<f64>],
}

/// One row per scenario: its index, then for each policy each term and the total. The
/// policies' figures are of the same scenarios.
pub fn per_scenario_csv(results: &[Figures]) -> String {
    let mut out = String::from("scenario");
    for Figures { prefix, terms, .. } in results {
        for name in terms.iter().map(String::as_str).chain(["total"]) {
            let _ = write!(out, ",{}", csv_field(&format!("{prefix}{name}")));
        }
    }
    out.push('\n');
    let count = results.iter().map(|r| r.per_scenario.len()).min().unwrap_or(0);
    for s in 0..count {
        let _ = write!(out, "{s}");
        for figures in results {
            let row = &figures.per_scenario[s];
            for v in row.iter().chain([&row.iter().sum::<f64>()]) {
                let _ = write!(out, ",{v}");
            }
        }
        out.push('\n');
    }
    out
}

/// A CSV field: quoted when it holds a comma or a quote.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

/// A decider that can say, after it decided, the probability it gave each label of each
/// discrete element of a scenario.
pub trait Explained<W: ?Sized>: Decide<W> {
    /// Appends to `out`, for every element of every discrete action in the module's order, the
    /// probability of each of its labels for scenario `row` this period.
    fn probabilities(&self, world: &W, row: usize, out: &mut Vec<f64>);
}

/// A [`Policy`] deciding scenario by scenario, each on its own policy stream, with the
/// probabilities it gives its choices.
struct Rules<'a> {
    inner: Scenariowise<'a>,
    odds: Odds,
    discrete: &'a [BufferId],
}

impl<'w> Decide<Batched<'w>> for Rules<'_> {
    type Error = TrainError;

    fn discrete(&mut self, world: &mut Batched<'w>, period: usize) -> Result<(), TrainError> {
        self.inner.discrete(world, period).map_err(|stop| TrainError::from(crate::backend::RunError::from(stop)))
    }

    fn continuous(&mut self, world: &mut Batched<'w>, period: usize) -> Result<(), TrainError> {
        self.inner.continuous(world, period).map_err(|stop| TrainError::from(crate::backend::RunError::from(stop)))
    }
}

impl<'w> Explained<Batched<'w>> for Rules<'_> {
    fn probabilities(&self, world: &Batched<'w>, row: usize, out: &mut Vec<f64>) {
        for &id in self.discrete {
            let labels = self.inner.module.buffers[id].labels.len().max(1);
            for &chosen in world.get(id, row) {
                for label in 0..labels {
                    out.push(match self.odds {
                        Odds::Uniform => 1.0 / labels as f64,
                        Odds::Chosen => f64::from(label == chosen as usize),
                    });
                }
            }
        }
    }
}

/// Scenarios are run this many at a time: the trainer's evaluation batch, so that a trained
/// policy's figures are bit for bit those of its dev evaluations and of `train`'s summary.
const CHUNK: usize = 256;

/// Scores a subject on every scenario of the testbed; with `trace`, also records the
/// trajectory of the first `trace` scenarios.
pub fn score(subject: &Subject, testbed: &Testbed, trace: Option<usize>) -> Result<(Score, Option<Trace>), TrainError> {
    let module = testbed.module;
    let actions = Actions::of(module);
    let mut regimes = Regimes::new(module);
    let mut per_scenario = Vec::with_capacity(testbed.set.count);
    let mut discounted = Vec::with_capacity(testbed.set.count);
    let mut recorded = trace.map(|_| Trace::new(module));
    let indices: Vec<usize> = (0..testbed.set.count).collect();
    for chunk in indices.chunks(CHUNK) {
        let mut world = Batched::drawn(
            module,
            &testbed.instance,
            testbed.backend,
            testbed.set.set,
            &testbed.set.init,
            &testbed.set.noise,
            chunk,
        );
        let traced = trace.map_or(0, |n| n.saturating_sub(chunk[0]).min(chunk.len()));
        let tracing = recorded.as_mut().filter(|_| traced > 0).map(|t| (t, traced, chunk[0]));
        let (totals, chunk_discounted) = match subject.decides() {
            Decides::Networks { nets, spec } => {
                let ctx = Context { module, spec, backend: testbed.backend, instance: &testbed.instance };
                // Greedy decisions draw nothing.
                let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
                let mut decider = greedy::decider(&ctx, nets, false, &mut rng);
                horizon(module, &mut world, &mut decider, &actions, &mut regimes, tracing)?
            }
            Decides::Rule { policy, odds } => {
                let mut streams: Vec<ChaCha8Rng> =
                    chunk.iter().map(|&i| policy_stream(testbed.seeds.policy, testbed.set.set, i as u64)).collect();
                let mut decider = rules(module, policy, odds, &mut streams, &actions.discrete);
                horizon(module, &mut world, &mut decider, &actions, &mut regimes, tracing)?
            }
        };
        per_scenario.extend(totals);
        discounted.extend(chunk_discounted);
    }
    let terms = module.costs().map(|(_, b)| b.name.clone()).collect();
    Ok((Score { terms, per_scenario, discounted, regimes }, recorded))
}

/// A rule-based subject as a decider on a batch.
fn rules<'a>(
    module: &'a Module,
    policy: &'a dyn Policy,
    odds: Odds,
    streams: &'a mut [ChaCha8Rng],
    discrete: &'a [BufferId],
) -> Rules<'a> {
    Rules { inner: Scenariowise { module, policy, streams }, odds, discrete }
}

/// Runs a batch for the whole horizon; per scenario, each cost term's reported figure and the
/// discounted total. Counts the reported periods' choices into `regimes` and records the first
/// `traced` rows' periods.
fn horizon<'w, D: Explained<Batched<'w>, Error = TrainError>>(
    module: &Module,
    world: &mut Batched<'w>,
    decider: &mut D,
    actions: &Actions,
    regimes: &mut Regimes,
    trace: Option<(&mut Trace, usize, usize)>,
) -> Result<(Vec<Vec<f64>>, Vec<f64>), TrainError> {
    // Per traced row, its lines; appended in scenario order at the end.
    let mut trace = trace.map(|(trace, rows, first)| (trace, vec![Vec::new(); rows], first));
    let scale = report_scale(module);
    let terms: Vec<BufferId> = module.costs().map(|(id, _)| id).collect();
    let mut totals = vec![vec![0.0; terms.len()]; world.rows()];
    let mut discounted = vec![0.0; world.rows()];
    let mut weight = 1.0;
    for t in 0..module.horizon {
        protocol::period(world, decider, t as usize)?;
        finite::check(module, world, t as usize)?;
        if t >= module.warmup {
            for (row, total) in totals.iter_mut().enumerate() {
                for (sum, &id) in total.iter_mut().zip(&terms) {
                    let cost = world.get(id, row)[0];
                    *sum += cost;
                    discounted[row] += weight * cost;
                }
                regimes.count(actions, world, row);
            }
            weight *= module.discount;
        }
        if let Some((trace, lines, _)) = trace.as_mut() {
            for (row, lines) in lines.iter_mut().enumerate() {
                lines.push(trace.line(module, world, &*decider, row, t as usize));
            }
        }
        world.advance();
    }
    if let Some((trace, lines, first)) = trace {
        for (row, lines) in lines.into_iter().enumerate() {
            trace.rows.extend(lines.into_iter().map(|line| format!("{},{line}", first + row)));
        }
    }
    let totals = totals.into_iter().map(|c| c.iter().map(|v| v / scale).collect()).collect();
    let discount_scale = crate::sim::discount_scale(module);
    Ok((totals, discounted.into_iter().map(|v| v / discount_scale).collect()))
}

/// The trajectory of some scenarios: per scenario and period, the states the policy saw (a
/// choice state by its label), each
/// discrete choice and the probability of each label, the continuous actions (0 where they do
/// not act), and each cost term of the period as the step computed it (not scaled by `report`).
#[derive(Clone, Debug)]
pub struct Trace {
    pub columns: Vec<String>,
    /// One line of CSV per scenario and period, in scenario order, then period order.
    pub rows: Vec<String>,
    states: Vec<BufferId>,
    discrete: Vec<BufferId>,
    continuous: Vec<BufferId>,
    costs: Vec<BufferId>,
}

impl Trace {
    fn new(module: &Module) -> Trace {
        let of = |kind: fn(&BufferKind) -> bool| module.buffers_of(kind).map(|(id, _)| id).collect::<Vec<_>>();
        let states = of(|k| *k == BufferKind::State);
        let discrete = of(|k| *k == BufferKind::Discrete);
        let continuous = of(|k| *k == BufferKind::Continuous);
        let costs = of(|k| *k == BufferKind::Cost);
        let mut columns = vec!["scenario".to_string(), "period".to_string()];
        columns.extend(states.iter().flat_map(|&id| element_names(module, id)));
        for &id in &discrete {
            let labels = &module.buffers[id].labels;
            for name in element_names(module, id) {
                columns.extend(labels.iter().map(|l| format!("P({name}={l})")));
                columns.push(name);
            }
        }
        columns.extend(continuous.iter().flat_map(|&id| element_names(module, id)));
        columns.extend(costs.iter().map(|&id| module.buffers[id].name.clone()));
        Trace { columns, rows: Vec::new(), states, discrete, continuous, costs }
    }

    /// Scenario `row`'s period `t`, as a line of CSV without the scenario's index.
    fn line<W: World + ?Sized, D: Explained<W> + ?Sized>(
        &self,
        module: &Module,
        world: &W,
        decider: &D,
        row: usize,
        t: usize,
    ) -> String {
        let mut line = t.to_string();
        for &id in &self.states {
            // A choice state is shown by its label, like a discrete action.
            let labels = &module.buffers[id].labels;
            for &v in world.get(id, row) {
                match labels.get(v as usize) {
                    Some(label) => {
                        let _ = write!(line, ",{}", csv_field(label));
                    }
                    None => {
                        let _ = write!(line, ",{v}");
                    }
                }
            }
        }
        let mut probabilities = Vec::new();
        decider.probabilities(world, row, &mut probabilities);
        let mut p = probabilities.iter();
        for &id in &self.discrete {
            let labels = &module.buffers[id].labels;
            for &chosen in world.get(id, row) {
                for _ in labels {
                    let _ = write!(line, ",{}", p.next().copied().unwrap_or(f64::NAN));
                }
                let label = labels.get(chosen as usize).map_or("?", String::as_str);
                let _ = write!(line, ",{}", csv_field(label));
            }
        }
        for &id in self.continuous.iter().chain(&self.costs) {
            for v in world.get(id, row) {
                let _ = write!(line, ",{v}");
            }
        }
        line
    }

    /// The trajectory as CSV, a header line first.
    pub fn csv(&self) -> String {
        let mut out = self.columns.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",");
        out.push('\n');
        for row in &self.rows {
            out.push_str(row);
            out.push('\n');
        }
        out
    }
}

/// The name of each element of a buffer: `x` for a scalar, `x[i]` or `x[i,j]` with the indices
/// of its sets.
pub fn element_names(module: &Module, id: BufferId) -> Vec<String> {
    let buffer = &module.buffers[id];
    let sets: Vec<&crate::ir::Set> = buffer.dims.iter().map(|&s| &module.sets[s]).collect();
    if sets.is_empty() {
        return vec![buffer.name.clone()];
    }
    let len = module.len(id);
    (0..len)
        .map(|mut flat| {
            let mut index = vec![0i64; sets.len()];
            for (d, set) in sets.iter().enumerate().rev() {
                let n = set.len().max(1);
                index[d] = set.lo + (flat % n) as i64;
                flat /= n;
            }
            let index: Vec<String> = index.iter().map(i64::to_string).collect();
            format!("{}[{}]", buffer.name, index.join(","))
        })
        .collect()
}
