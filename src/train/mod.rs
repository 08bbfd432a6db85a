//! The trainer: Hybrid Policy Optimization (the mixed pathwise / score-function gradient), its
//! decentralised variant, and PPO, on rollouts through a backend's compiled kernels.
//!
//! A run draws one instance and three fixed scenario sets (train, dev, test) from its seeds, the
//! same for every algorithm (common random numbers). Each update takes the next `batch`
//! scenarios of the shuffled train set ([`rollout`]) and changes the networks once ([`update`]);
//! after every pass over the train set (an *epoch*) the greedy policy is evaluated on the dev set
//! and the best parameters so far are kept. [`run`] writes all of it to a run folder.

pub mod config;
pub mod defaults;
pub mod diagnose;
pub mod folder;
pub mod policy;
pub mod riccati;
pub mod rollout;
pub mod run;
pub mod scenarios;
pub mod spec;
pub mod update;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::backend::RunError;
use crate::sim::finite::NonFinite;
use policy::Nets;
use rollout::{Context, Mode};
use scenarios::Scenarios;
use spec::Spec;

pub use config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Algo {
    /// Pathwise gradient for the continuous head, score function for the discrete head, and the
    /// cross term.
    #[serde(rename = "hpo")]
    Hpo,
    /// HPO without the cross term (the decentralised update).
    #[value(name = "hpo-nocross")]
    #[serde(rename = "hpo-nocross")]
    HpoNoCross,
    /// PPO with Gaussian continuous actions and no gradient through the simulator.
    #[serde(rename = "ppo")]
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

/// Why training stopped or could not start. `RunFolder`: the run folder cannot be written, or
/// cannot be resumed as asked (the message says why); `Internal`: a bug.
#[derive(Debug)]
pub enum TrainError {
    Run(RunError),
    /// A cost or next state that is NaN or infinite, and when in the run it came up (the loop
    /// of [`run`] says; `None` outside it).
    NotFinite {
        found: NonFinite,
        during: Option<During>,
    },
    NotFiniteGradient,
    EmptyBounds {
        action: String,
        element: usize,
        step: usize,
        lo: f64,
        hi: f64,
    },
    NoActions,
    RunFolder(String),
    Internal(String),
}

impl From<RunError> for TrainError {
    fn from(e: RunError) -> TrainError {
        TrainError::Run(e)
    }
}

impl From<NonFinite> for TrainError {
    fn from(found: NonFinite) -> TrainError {
        TrainError::NotFinite { found, during: None }
    }
}

/// When in a run a problem came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum During {
    /// The rollouts of update `n` (counted from 1).
    Update(usize),
    /// The evaluation of the policy after `n` updates.
    Evaluation(usize),
}

impl TrainError {
    /// The error with when in the run it came up, if it is one that says.
    pub fn during(self, when: During) -> TrainError {
        match self {
            TrainError::NotFinite { found, during: None } => TrainError::NotFinite { found, during: Some(when) },
            e => e,
        }
    }

    /// The error as a located diagnostic of the model, when it has a place in the model.
    pub fn located(&self) -> Option<RunError> {
        match self {
            TrainError::Run(e) => Some(e.clone()),
            TrainError::NotFinite { found, .. } => Some(RunError { span: found.span, message: self.to_string() }),
            _ => None,
        }
    }
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Run(e) => write!(f, "{}", e.message),
            TrainError::NotFinite { found, during } => {
                let kept = "; training stopped (checkpoints written so far are kept)";
                let (during, after) = match during {
                    Some(During::Update(n)) => (format!(", in update {n}"), kept),
                    Some(During::Evaluation(0)) => {
                        (", evaluating the untrained policy".to_string(), "; training stopped before its first update")
                    }
                    Some(During::Evaluation(n)) => (format!(", evaluating the policy after update {n}"), kept),
                    None => (String::new(), ""),
                };
                write!(f, "{}{after}", found.message(&during))
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
    /// What the policy chose and did, from the model's `warmup` on.
    pub behaviour: diagnose::Behaviour,
    /// Per scenario, the total cost discounted as [`crate::sim::discounted`] says.
    pub discounted: Vec<f64>,
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
    let mut behaviour = diagnose::Behaviour::new(ctx.spec);
    let mut discounted = Vec::with_capacity(set.count);
    let discount_scale = crate::sim::discount_scale(ctx.module);
    for chunk in indices.chunks(256) {
        let traj = rollout::rollout(ctx, nets, set, chunk, Mode::Greedy, false, &mut rng)?;
        behaviour.add(ctx.spec, &traj, ctx.module.warmup as usize);
        discounted.extend(traj.discounted(terms, ctx.module).iter().map(|d| d / discount_scale));
        let totals = traj.totals(terms, ctx.module.warmup as usize);
        for row in totals.chunks(terms.max(1)) {
            per_scenario.push(row.iter().map(|c| c / scale).collect::<Vec<f64>>());
        }
    }
    let n = per_scenario.len().max(1) as f64;
    let terms = (0..terms).map(|j| per_scenario.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    Ok(Evaluation { terms, per_scenario, behaviour, discounted })
}

/// The spec of a module with the scale and shift of its half-line actions set (actions on an
/// interval or the whole line are neither scaled nor shifted): how runs recorded before the
/// per-action scales squashed, kept so that their folders evaluate as they did.
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

/// The spec of a module with each continuous action's scale taken from `scales` (by name; 1 when
/// absent) and every action shifted by `shift` (which only a half-line uses).
pub fn spec_with_scales(
    module: &crate::ir::Module,
    scales: &std::collections::BTreeMap<String, f64>,
    shift: f64,
) -> Spec {
    let mut spec = Spec::of(module);
    for head in &mut spec.continuous {
        head.scale = scales.get(&module.buffers[head.buffer].name).copied().unwrap_or(1.0);
        head.shift = shift;
    }
    spec
}

/// What training holds at once: the model, the train and dev scenarios, a batch and its
/// trajectories, and the three networks with their optimisers.
pub fn need(module: &crate::ir::Module, config: &Config) -> crate::resources::Need {
    let spec = spec::Spec::of(module);
    let mut widths = vec![spec.features];
    widths.extend(config.hidden());
    widths.push(spec.logits.max(spec.outputs).max(1));
    crate::resources::Need::new()
        .model(module)
        .stored_scenarios(module, "train", config.scenarios, module.horizon)
        .stored_scenarios(module, "dev", config.scenarios, module.horizon)
        .scenarios_at_once(module, config.batch)
        .trajectories(module, config.batch, module.horizon)
        .networks(&widths, 3)
}
