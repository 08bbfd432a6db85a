//! The trainer: Hybrid Policy Optimization (the mixed pathwise / score-function gradient), its
//! decentralised variant, and PPO, on rollouts through a backend's compiled kernels.
//!
//! A run draws one instance and three fixed scenario sets (train, dev, test) from its seeds, the
//! same for every algorithm (common random numbers). Each update takes the next `batch`
//! scenarios of the shuffled train set ([`rollout`]) and changes the networks once ([`update`]);
//! after every pass over the train set (an *epoch*) the greedy policy is evaluated on the dev set
//! and the best parameters so far are kept. [`run`] writes all of it to a run folder.

pub mod policy;
pub mod riccati;
pub mod rollout;
pub mod run;
pub mod scenarios;
pub mod spec;
pub mod update;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::sim::RunError;
use policy::Nets;
use rollout::{Context, Mode};
use scenarios::Scenarios;
use spec::Spec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    /// Pathwise gradient for the continuous head, score function for the discrete head, and the
    /// cross term.
    Hpo,
    /// HPO without the cross term (the decentralised update).
    HpoNoCross,
    /// PPO with Gaussian continuous actions and no gradient through the simulator.
    Ppo,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Hpo => "hpo",
            Algo::HpoNoCross => "hpo-nocross",
            Algo::Ppo => "ppo",
        }
    }
}

/// Every setting of a run; the defaults are those of the HPO paper's configurations.
#[derive(Clone, Debug)]
pub struct Config {
    pub algo: Algo,
    pub updates: usize,
    pub batch: usize,
    pub lr: f64,
    pub hidden: Vec<usize>,
    pub gamma: f64,
    pub lambda: f64,
    pub clip: f64,
    pub epochs: usize,
    pub minibatches: usize,
    pub value_coef: f64,
    pub entropy_start: f64,
    pub entropy_end: f64,
    pub pathwise_coef: f64,
    pub max_grad_norm: f64,
    pub target_kl: f64,
    pub buffer_periods: usize,
    pub adam_eps: f64,
    pub normalize: bool,
    /// Scenarios in each of the train, dev and test sets.
    pub scenarios: usize,
    pub seed: u64,
    pub instance_seed: u64,
    /// Multiplies a softplus on a half-line; `None` takes the mean size of the noise.
    pub action_scale: Option<f64>,
    /// Added to the raw output inside a softplus on a half-line: the reference's shift of 1
    /// makes the first actions `1.31 ·` the scale rather than `0.69 ·`.
    pub action_shift: f64,
}

impl Config {
    /// The paper's settings for `algo`, with `gamma` and `buffer_periods` from the model.
    pub fn defaults(algo: Algo, module: &crate::ir::Module) -> Config {
        Config {
            algo,
            updates: 1600,
            batch: 16,
            lr: if algo == Algo::Ppo { 1e-4 } else { 1e-3 },
            hidden: vec![512, 512],
            gamma: if module.discount < 1.0 { module.discount } else { 0.99 },
            lambda: 0.96,
            clip: 0.15,
            epochs: 5,
            minibatches: 4,
            value_coef: 0.15,
            entropy_start: 0.5,
            entropy_end: 0.001,
            pathwise_coef: 5.0,
            max_grad_norm: 5.0,
            target_kl: 0.015,
            buffer_periods: module.warmup as usize,
            adam_eps: 1e-5,
            normalize: true,
            scenarios: 1024,
            seed: 0,
            instance_seed: 0,
            action_scale: None,
            action_shift: 1.0,
        }
    }
}

/// Why training stopped or could not start. `RunFolder`: the run folder cannot be written, or
/// cannot be resumed as asked (the message says why); `Internal`: a bug.
#[derive(Debug)]
pub enum TrainError {
    Run(RunError),
    NotFinite { term: String, step: usize, value: f64 },
    NotFiniteGradient,
    EmptyBounds { action: String, element: usize, step: usize, lo: f64, hi: f64 },
    NoActions,
    RunFolder(String),
    Internal(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Run(e) => write!(f, "{}", e.message),
            TrainError::NotFinite { term, step, value } => {
                write!(
                    f,
                    "cost `{term}` is {value} at step {step}; training stopped (checkpoints written so far are kept)"
                )
            }
            TrainError::NotFiniteGradient => {
                write!(
                    f,
                    "a gradient is NaN or infinite (or its norm is beyond 3.4e38); training stopped (checkpoints written so far are kept)"
                )
            }
            TrainError::EmptyBounds { action, element, step, lo, hi } => {
                write!(f, "the bounds of `{action}` (element {element}) are empty at step {step}: {lo} > {hi}")
            }
            TrainError::NoActions => write!(f, "the model has no actions, so there is no policy to train"),
            TrainError::RunFolder(what) => write!(f, "{what}"),
            TrainError::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

/// Mean reported cost per term and total of a greedy rollout over a whole set, scaled as the
/// model's `report` says; per scenario totals for confidence intervals.
pub struct Evaluation {
    pub terms: Vec<f64>,
    pub per_scenario: Vec<Vec<f64>>,
}

impl Evaluation {
    pub fn total(&self) -> f64 {
        self.terms.iter().sum()
    }
}

/// Greedy rollouts of every scenario of a set, in batches.
pub fn evaluate(ctx: &Context, nets: &Nets, set: &Scenarios) -> Result<Evaluation, TrainError> {
    let scale = crate::sim::report_scale(ctx.module);
    let terms = ctx.spec.costs.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut per_scenario = Vec::with_capacity(set.count);
    let indices: Vec<usize> = (0..set.count).collect();
    for chunk in indices.chunks(256) {
        let traj = rollout::rollout(ctx, nets, set, chunk, Mode::Greedy, false, &mut rng)?;
        let totals = traj.totals(terms, ctx.module.warmup as usize);
        for row in totals.chunks(terms.max(1)) {
            per_scenario.push(row.iter().map(|c| c / scale).collect::<Vec<f64>>());
        }
    }
    let n = per_scenario.len().max(1) as f64;
    let terms = (0..terms).map(|j| per_scenario.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    Ok(Evaluation { terms, per_scenario })
}

/// The spec of a module with the scale and shift of its half-line actions set (actions on an
/// interval or the whole line are neither scaled nor shifted).
pub fn spec_with_squash(module: &crate::ir::Module, scale: f64, shift: f64) -> Spec {
    let mut spec = Spec::of(module);
    for head in &mut spec.continuous {
        if head.lower.is_some() != head.upper.is_some() {
            head.scale = scale;
            head.shift = shift;
        }
    }
    spec
}
