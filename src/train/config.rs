//! Every setting of a training run, defined once: [`Config`] is both the arguments of
//! `hmdpc train` (clap) and the `config` of a run folder's `run.json` (serde), and its defaults
//! are clap's, so a setting and its default live in one line. A setting left to the model
//! (`None`: the learning rate and gradient clip by algorithm, the networks by preset, γ from the
//! model's `discount`, the buffer from its `warmup`, the action scales from the states and noise
//! each action acts on) is resolved by [`Config::resolved`] (the action scales by the trainer,
//! which needs the train set, through [`super::defaults`]); a run folder records the resolved
//! settings, so `hmdpc train --config RUN/run.json` repeats the run, and [`Config::explain`] says
//! why each was chosen.

use clap::Parser;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Algo;
use crate::ir::Module;

/// The settings of a training run. Defaults are the HPO paper's where it states them, except the
/// networks, HPO's learning rate and its gradient clip (128×128, 3e-3 and 1 unless `--preset
/// paper`) and the action scales (from the model).
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The algorithm.
    #[arg(long, value_enum, default_value_t = Algo::Hpo)]
    pub algo: Algo,
    /// Policy updates in all (one rollout of `--batch` scenarios each).
    #[arg(long, default_value_t = 1600, value_parser = count(1, 100_000_000))]
    pub updates: usize,
    /// Scenarios per update.
    #[arg(long, default_value_t = 16, value_parser = count(1, 1_000_000))]
    pub batch: usize,
    /// Adam learning rate [default: 3e-3 for HPO, 1e-4 for PPO; 1e-3 for HPO with `--preset
    /// paper`].
    #[arg(long, value_parser = positive)]
    pub lr: Option<f64>,
    /// Hidden layer sizes of every network, e.g. `512,512` [default: 128,128; 512,512 with
    /// `--preset paper`].
    #[arg(long, value_delimiter = ',', value_parser = count(1, 65536))]
    pub hidden: Option<Vec<usize>>,
    /// Settings left unset take the preset's values: `paper`, the HPO paper's networks (two
    /// hidden layers of 512), learning rate (1e-3 for HPO), gradient clip (5), no saturation
    /// penalty and a first entropy weight of 0.5 on every model.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Seed of the training randomness: the networks' initial weights, the sampled actions, the
    /// order of the train set. Runs that differ only in it train on the same scenarios.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the train, dev and test scenario sets (initial states and noise).
    #[arg(long, default_value_t = 0)]
    pub scenario_seed: u64,
    /// Seed of the instance (the parameters drawn once).
    #[arg(long, default_value_t = 0)]
    pub instance_seed: u64,
    /// Scenarios in each of the train, dev and test sets.
    #[arg(long, default_value_t = 1024, value_parser = count(1, 10_000_000))]
    pub scenarios: usize,
    /// Discount of the GAE advantages [default: the model's `discount` if below 1, else 0.99].
    #[arg(long, value_parser = unit)]
    pub gamma: Option<f64>,
    /// GAE's lambda.
    #[arg(long, default_value_t = 0.96, value_parser = unit)]
    pub lambda: f64,
    /// PPO clip range.
    #[arg(long, default_value_t = 0.15, value_parser = positive)]
    pub clip: f64,
    /// PPO epochs per update (the first is one full-batch step).
    #[arg(long, default_value_t = 5, value_parser = count(1, 1000))]
    pub epochs: usize,
    /// Minibatches of the later epochs.
    #[arg(long, default_value_t = 4, value_parser = count(1, 1000))]
    pub minibatches: usize,
    /// Weight of the value loss.
    #[arg(long, default_value_t = 0.15, value_parser = non_negative)]
    pub value_coef: f64,
    /// Entropy weight at the first update, annealed linearly to `--entropy-end` (or halved every
    /// `--entropy-half-life` updates) [default: 0.5; 0.1 for HPO on a model whose actions are all
    /// discrete].
    #[arg(long, value_parser = non_negative)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_start: Option<f64>,
    /// Entropy weight at the last update (with `--entropy-half-life`: the weight it decays to).
    #[arg(long, default_value_t = 0.001, value_parser = non_negative)]
    pub entropy_end: f64,
    /// Halve the entropy weight's distance to `--entropy-end` every this many updates, whatever
    /// the length of the run, instead of annealing it linearly over `--updates`.
    #[arg(long, value_parser = count(1, 100_000_000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_half_life: Option<usize>,
    /// Adam's learning rate for the discrete network [default: `--lr`].
    #[arg(long, value_parser = positive)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_discrete: Option<f64>,
    /// The learning rate falls linearly from `--lr` at the first update to this fraction of it
    /// at the last [default: 1, no decay].
    #[arg(long, value_parser = unit)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<f64>,
    /// Stop when the dev cost has not improved for this many updates (the best policy on dev
    /// is kept either way).
    #[arg(long, value_parser = count(1, 100_000_000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// Weight of the pathwise loss (HPO).
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    pub pathwise_coef: f64,
    /// Gradient-norm clip of each network [default: 1 for HPO, 5 for PPO and with `--preset
    /// paper`].
    #[arg(long, value_parser = positive)]
    pub max_grad_norm: Option<f64>,
    /// Weight of the penalty that holds the raw output of a bounded continuous action within
    /// ±6 of where its squash has a slope (HPO; 0: none) [default: 0.1; 0 with `--preset paper`].
    #[arg(long, value_parser = non_negative)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturation_penalty: Option<f64>,
    /// Stop an update's later epochs when the approximate KL divergence exceeds this (0: never).
    #[arg(long, default_value_t = 0.015, value_parser = non_negative)]
    pub target_kl: f64,
    /// Steps left out of the losses at each end of the horizon [default: the model's `warmup`].
    #[arg(long, value_parser = count(0, 1_000_000_000))]
    pub buffer_periods: Option<usize>,
    /// Adam's epsilon.
    #[arg(long, default_value_t = 1e-5, value_parser = positive)]
    pub adam_eps: f64,
    /// Feed the networks running-normalised features (`--no-normalize`: raw ones).
    #[arg(long = "no-normalize", action = clap::ArgAction::SetFalse)]
    pub normalize: bool,
    /// The scale of every continuous action not on a finite interval [default: per action, the
    /// typical size of the states it changes and of the noise that enters them].
    #[arg(long, value_parser = positive)]
    pub action_scale: Option<f64>,
    /// The scale of each continuous action by name, as the trainer resolved it (`run.json`
    /// only); `--action-scale` overrides it. Empty in runs recorded before it existed, which
    /// scaled only half-lines, by `action_scale`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub action_scales: BTreeMap<String, f64>,
    /// Added to the raw output inside the softplus of a half-line action.
    #[arg(long, default_value_t = 1.0, value_parser = finite, allow_negative_numbers = true)]
    pub action_shift: f64,
    /// Evaluate the greedy policy on the dev set every this many updates, and at the end
    /// [default: a fortieth of `--updates`, at most one pass over the train set apart].
    #[arg(long, value_parser = count(1, 100_000_000))]
    pub eval_every: Option<usize>,
    /// Override a size or a scalar parameter of the model, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    pub set: Vec<(String, f64)>,
}

/// Parses an empty command line: clap's defaults are the only defaults.
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    config: Config,
}

impl Default for Config {
    fn default() -> Config {
        Defaults::parse_from(["hmdpc"]).config
    }
}

/// A named set of defaults for the settings left unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Preset {
    /// The HPO paper's networks (two hidden layers of 512 units), learning rate and clip.
    #[serde(rename = "paper")]
    Paper,
}

/// The hidden layers when neither `--hidden` nor a preset says: an update takes milliseconds on
/// the shipped models, 5 to 30 times less than at the paper's 512×512, and with HPO's learning
/// rate of 3e-3 200 updates train every shipped model about as well (64×64 fell behind on the
/// LQR and on the model whose choices are all discrete).
pub const DEFAULT_HIDDEN: [usize; 2] = [128, 128];

/// HPO's first entropy weight on a model whose actions are all discrete ([`Config::entropy_start`]).
pub const ALL_DISCRETE_ENTROPY_START: f64 = 0.1;

impl Config {
    /// The defaults with another algorithm.
    pub fn for_algo(algo: Algo) -> Config {
        Config { algo, ..Config::default() }
    }

    /// Adam's learning rate: `--lr`, or PPO's 1e-4, or HPO's: the paper's 1e-3 with its
    /// networks, 3e-3 with the smaller default ones.
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(match (self.algo, self.preset) {
            (Algo::Ppo, _) => 1e-4,
            (_, Some(Preset::Paper)) => 1e-3,
            (_, None) => 3e-3,
        })
    }

    /// The largest gradient norm of each network: `--max-grad-norm`, or the paper's 5 for PPO
    /// and with `--preset paper`, or 1 for HPO: its pathwise gradient spikes (a norm 20 times its
    /// usual size between two evaluations), and at a clip of 5 a few such steps can drive a
    /// squashed action into the flat end of its squash, where the pathwise gradient vanishes.
    pub fn max_grad_norm(&self) -> f64 {
        self.max_grad_norm.unwrap_or(match (self.algo, self.preset) {
            (Algo::Ppo, _) | (_, Some(Preset::Paper)) => 5.0,
            (_, None) => 1.0,
        })
    }

    /// The weight of HPO's saturation penalty (`update::SATURATION_START`):
    /// `--saturation-penalty`, or 0.1; 0 with `--preset paper`, which has none, and for PPO,
    /// whose continuous actions have no pathwise gradient to lose.
    pub fn saturation_penalty(&self) -> f64 {
        match (self.algo, self.preset) {
            (Algo::Ppo, _) => 0.0,
            (_, Some(Preset::Paper)) => self.saturation_penalty.unwrap_or(0.0),
            (_, None) => self.saturation_penalty.unwrap_or(0.1),
        }
    }

    /// The discrete network's learning rate: `--lr-discrete`, or [`Config::lr`].
    pub fn lr_discrete(&self) -> f64 {
        self.lr_discrete.unwrap_or_else(|| self.lr())
    }

    /// The fraction of the learning rate left at the last update: `--lr-decay`, or 1.
    pub fn lr_decay(&self) -> f64 {
        self.lr_decay.unwrap_or(1.0)
    }

    /// The learning rate of update `u` (counted from 0): from [`Config::lr`] linearly to
    /// `lr_decay` times it at the last update.
    pub fn lr_at(&self, u: usize) -> f64 {
        let progress = u as f64 / (self.updates.max(2) - 1) as f64;
        self.lr() * (1.0 - (1.0 - self.lr_decay()) * progress.min(1.0))
    }

    /// The hidden layer sizes: `--hidden`, or the preset's, or 128×128.
    pub fn hidden(&self) -> Vec<usize> {
        match (&self.hidden, self.preset) {
            (Some(hidden), _) => hidden.clone(),
            (None, Some(Preset::Paper)) => vec![512, 512],
            (None, None) => DEFAULT_HIDDEN.to_vec(),
        }
    }

    /// The discount of the advantages: `--gamma`, or the model's `discount` below 1, or 0.99.
    pub fn gamma(&self, module: &Module) -> f64 {
        self.gamma.unwrap_or(if module.discount < 1.0 { module.discount } else { 0.99 })
    }

    /// Steps left out at each end of the horizon: `--buffer-periods`, or the model's `warmup`.
    pub fn buffer_periods(&self, module: &Module) -> usize {
        self.buffer_periods.unwrap_or(module.warmup as usize)
    }

    /// The entropy weight at the first update: `--entropy-start`, or for HPO 0.5 when the model
    /// has a continuous action (its discrete choices keep exploring while the actions of their
    /// regimes are learned, and a regime whose action is still poor looks worse than it is) and
    /// 0.1 when its actions are all discrete (there is nothing to wait for, and a bonus of 0.5
    /// holds a choice whose advantage is weak near uniform for most of the run); the paper's 0.5
    /// for PPO and with `--preset paper`.
    pub fn entropy_start(&self, module: &Module) -> f64 {
        let continuous = module.buffers.iter().any(|b| b.kind == crate::ir::BufferKind::Continuous);
        self.entropy_start.unwrap_or(match (self.algo, self.preset) {
            (Algo::Ppo, _) | (_, Some(Preset::Paper)) => 0.5,
            _ if continuous => 0.5,
            _ => ALL_DISCRETE_ENTROPY_START,
        })
    }

    /// The entropy weight of update `u` (counted from 0): from `--entropy-start` (0.5 when it
    /// is left to [`Config::entropy_start`] and not resolved) to `--entropy-end`, linearly over
    /// the run, or halving its distance to the end every `--entropy-half-life` updates.
    pub fn entropy_weight(&self, u: usize) -> f64 {
        let (start, end) = (self.entropy_start.unwrap_or(0.5), self.entropy_end);
        match self.entropy_half_life {
            Some(half_life) => end + (start - end) * 0.5f64.powf(u as f64 / half_life as f64),
            None => start + (end - start) * (u as f64 / (self.updates.max(2) - 1) as f64),
        }
    }

    /// Updates between two dev evaluations: `--eval-every`, or a fortieth of the run (a curve
    /// of a few dozen points, whatever its length), at most one pass over the train set.
    pub fn eval_every(&self) -> usize {
        let per_epoch = (self.scenarios / self.batch.max(1)).max(1);
        self.eval_every.unwrap_or_else(|| (self.updates / 40).clamp(1, per_epoch))
    }

    /// Every setting left to the model made explicit, except the action scales, which need the
    /// train set (the trainer resolves them): what a run folder records.
    pub fn resolved(&self, module: &Module) -> Config {
        Config {
            lr: Some(self.lr()),
            lr_decay: Some(self.lr_decay()),
            max_grad_norm: Some(self.max_grad_norm()),
            saturation_penalty: Some(self.saturation_penalty()),
            entropy_start: Some(self.entropy_start(module)),
            hidden: Some(self.hidden()),
            gamma: Some(self.gamma(module)),
            buffer_periods: Some(self.buffer_periods(module)),
            eval_every: Some(self.eval_every()),
            ..self.clone()
        }
    }
}

/// Where a setting of a run came from, as `train` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// The settings `--config` read.
    Config,
    /// The model's `train { … }` block.
    Model,
    /// Left to the defaults or to a rule.
    Rule,
}

impl Origin {
    /// ` (why)` for a setting given by a flag, `--config` or the model; `None` for a rule.
    pub fn why(self, flag: &str) -> Option<String> {
        match self {
            Origin::Flag => Some(format!(" (--{flag})")),
            Origin::Config => Some(" (the settings of --config)".to_string()),
            Origin::Model => Some(" (the model's `train` block)".to_string()),
            Origin::Rule => None,
        }
    }
}

impl Config {
    /// The settings of a model's `train { … }` block put in for those that `flagged` (the
    /// command line) does not give; returns the keys taken from the model.
    pub fn with_model_defaults(
        &mut self,
        model: &crate::check::model::TrainDefaults,
        module: &Module,
        flagged: &dyn Fn(&str) -> bool,
    ) -> Vec<&'static str> {
        let mut taken = Vec::new();
        let mut take = |key: &'static str, present: bool| {
            let take = present && !flagged(key);
            if take {
                taken.push(key);
            }
            take
        };
        if take("gamma", model.gamma.is_some()) {
            self.gamma = model.gamma;
        }
        if take("buffer_periods", model.buffer_periods.is_some()) {
            self.buffer_periods = model.buffer_periods;
        }
        // `--preset paper` names the networks too: the model's do not override it.
        if take("hidden", model.hidden.is_some() && !flagged("preset")) {
            self.hidden.clone_from(&model.hidden);
        }
        if take("lr", model.lr.is_some() && !flagged("preset")) {
            self.lr = model.lr;
        }
        if let Some(updates) = model.updates.filter(|_| take("updates", true)) {
            self.updates = updates;
        }
        if let Some(batch) = model.batch.filter(|_| take("batch", true)) {
            self.batch = batch;
        }
        if take("patience", model.patience.is_some()) {
            self.patience = model.patience;
        }
        if take("entropy_half_life", model.entropy_half_life.is_some()) {
            self.entropy_half_life = model.entropy_half_life;
        }
        // `--action-scale` sets every scale; without it, the model's per-action scales come
        // before its scale for all.
        // `--action-scale` sets every scale; without it, the model's scale of an action by name
        // comes before its scale for all.
        if take("action_scale", model.action_scale.is_some() || !model.action_scales.is_empty()) {
            for (id, b) in module.buffers.iter().enumerate() {
                if b.kind == crate::ir::BufferKind::Continuous {
                    let named = model.action_scales.get(&b.name).copied().or(model.action_scale);
                    if let Some(scale) = named {
                        self.action_scales.insert(module.buffers[id].name.clone(), scale);
                    }
                }
            }
        }
        taken
    }

    /// One line per setting, saying what the run uses and where it came from: a flag, the
    /// settings of `--config`, the model's `train` block, or the rule that chose it (`self` is
    /// the settings asked for, the model's put in; `resolved` is `self.resolved(module)`).
    pub fn explain(&self, resolved: &Config, module: &Module, origin: &dyn Fn(&str) -> Origin) -> Vec<String> {
        let mut lines = Vec::new();
        let hidden = resolved.hidden().iter().map(|h| h.to_string()).collect::<Vec<_>>().join("×");
        let why = match (origin("hidden").why("hidden"), self.preset, self.hidden.is_some()) {
            (Some(why), _, true) => why,
            (_, Some(Preset::Paper), _) => " (the paper's, `--preset paper`)".to_string(),
            _ => " (the default; `--preset paper` for the paper's 512×512)".to_string(),
        };
        lines.push(format!("networks: {hidden}{why}"));
        let lr = match origin("lr").why("lr").filter(|_| self.lr.is_some()) {
            Some(why) => why,
            None => {
                let preset = if self.preset.is_some() { " with `--preset paper`" } else { "" };
                format!(" (the default for {}{preset})", self.algo.name())
            }
        };
        lines.push(format!("learning rate: {}{lr}", resolved.lr()));
        let clip = match origin("max_grad_norm").why("max-grad-norm").filter(|_| self.max_grad_norm.is_some()) {
            Some(why) => why,
            None if self.algo == Algo::Ppo || self.preset.is_some() => " (the paper's)".to_string(),
            None => " (the default for HPO: its pathwise gradient spikes; 5 is the paper's)".to_string(),
        };
        lines.push(format!("gradient clip: {} per network{clip}", resolved.max_grad_norm()));
        if self.algo != Algo::Ppo {
            let why = match origin("saturation_penalty").why("saturation-penalty") {
                Some(why) if self.saturation_penalty.is_some() => why,
                _ if self.preset.is_some() => " (the paper's: none)".to_string(),
                _ => " (the default: a bounded action's squash keeps a slope)".to_string(),
            };
            lines.push(format!(
                "saturation penalty: {} beyond a raw output of ±{}{why}",
                resolved.saturation_penalty(),
                super::update::SATURATION_START
            ));
        }
        if resolved.lr_decay() < 1.0 {
            let why = origin("lr_decay").why("lr-decay").unwrap_or_default();
            lines.push(format!("learning rate at the last update: {}{why}", resolved.lr_at(resolved.updates)));
        }
        let gamma = match origin("gamma").why("gamma").filter(|_| self.gamma.is_some()) {
            Some(why) => why,
            None if module.discount < 1.0 => " (the model's discount)".to_string(),
            None => " (the model has no discount below 1)".to_string(),
        };
        lines.push(format!("gamma: {}{gamma}", resolved.gamma(module)));
        let buffer = origin("buffer_periods").why("buffer-periods").filter(|_| self.buffer_periods.is_some());
        let buffer = buffer.unwrap_or_else(|| " (the model's warmup)".to_string());
        lines.push(format!("buffer periods: {}{buffer}", resolved.buffer_periods(module)));
        let given = |key: &str, flag: &str| origin(key).why(flag).unwrap_or_else(|| " (the default)".to_string());
        lines.push(format!("updates: {}{}", self.updates, given("updates", "updates")));
        lines.push(format!("batch: {} scenarios{}", self.batch, given("batch", "batch")));
        let every = origin("eval_every").why("eval-every").filter(|_| self.eval_every.is_some());
        let every = every.unwrap_or_else(|| " (a fortieth of the run, at most an epoch apart)".to_string());
        lines.push(format!("dev evaluation: every {} updates{every}", resolved.eval_every()));
        let schedule = match self.entropy_half_life {
            Some(h) => {
                format!("halved towards the end every {h} updates{}", given("entropy_half_life", "entropy-half-life"))
            }
            None => "linearly over the run (the default; `--entropy-half-life` for a schedule in updates)".to_string(),
        };
        let start = match origin("entropy_start").why("entropy-start").filter(|_| self.entropy_start.is_some()) {
            Some(why) => why,
            None if resolved.entropy_start(module) == ALL_DISCRETE_ENTROPY_START && self.entropy_start.is_none() => {
                " (the default for a model whose actions are all discrete; 0.5 with a continuous action)".to_string()
            }
            None => String::new(),
        };
        lines.push(format!(
            "entropy weight: {}{start} to {}, {schedule}",
            resolved.entropy_start(module),
            self.entropy_end
        ));
        if let Some(p) = self.patience {
            lines.push(format!(
                "patience: stop after {p} updates without a better dev cost{}",
                given("patience", "patience")
            ));
        }
        if let (Some(all), Some(why)) = (self.action_scale, origin("action_scale").why("action-scale")) {
            lines.push(format!("action scale: {all} for every action not on an interval{why}"));
        }
        lines
    }
}

/// The settings that define the problem, its scenario sets and the policy's parametrisation,
/// where `new` differs from `old`, as `name was A, now B`. The others (the learning rate, the
/// schedule, the number of updates) may change when a run is resumed.
pub fn problem_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    // Values as they stand in run.json.
    let mut compare = |name: &str, was: serde_json::Value, now: serde_json::Value| {
        if was != now {
            changes.push(format!("{name} was {was}, now {now}"));
        }
    };
    let sorted = |set: &[(String, f64)]| {
        let mut set = set.to_vec();
        set.sort_by(|a, b| a.0.cmp(&b.0));
        serde_json::json!(set)
    };
    use serde_json::json;
    compare("set", sorted(&old.set), sorted(&new.set));
    compare("instance_seed", json!(old.instance_seed), json!(new.instance_seed));
    compare("scenario_seed", json!(old.scenario_seed), json!(new.scenario_seed));
    compare("seed", json!(old.seed), json!(new.seed));
    compare("scenarios", json!(old.scenarios), json!(new.scenarios));
    compare("hidden", json!(old.hidden()), json!(new.hidden()));
    compare("normalize", json!(old.normalize), json!(new.normalize));
    // A scale left to the noise is the same scale on the same train set.
    if let (Some(was), Some(now)) = (old.action_scale, new.action_scale) {
        compare("action_scale", json!(was), json!(now));
    }
    // Runs recorded before the per-action scales scaled half-lines by `action_scale` alone.
    let was = if old.action_scales.is_empty() && !new.action_scales.is_empty() {
        json!("an earlier version's")
    } else {
        json!(old.action_scales)
    };
    compare("action_scales", was, json!(new.action_scales));
    compare("action_shift", json!(old.action_shift), json!(new.action_shift));
    changes
}

/// `--set NAME=VALUE`.
pub fn parse_override(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, found `{text}`"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{name}` is not a name"));
    }
    let value: f64 = value.trim().parse().map_err(|_| format!("`{}` is not a number", value.trim()))?;
    if !value.is_finite() {
        return Err(format!("`{value}` is not a finite number"));
    }
    Ok((name.to_string(), value))
}

/// A parser of whole numbers in `lo..=hi`.
pub fn count(lo: usize, hi: usize) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |text: &str| match text.trim().parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {lo} to {hi}, found `{text}`")),
    }
}

/// A number that is finite and above 0.
pub fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a positive number, found `{text}`")),
    }
}

/// A number that is finite and at least 0.
pub fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a number of at least 0, found `{text}`")),
    }
}

/// A finite number.
pub fn finite(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("expected a finite number, found `{text}`")),
    }
}

/// A number in [0, 1].
pub fn unit(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number in [0, 1], found `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_command_lines_and_round_trip_through_json() {
        let defaults = Config::default();
        assert_eq!((defaults.hidden(), defaults.lr()), (vec![128, 128], 3e-3));
        let paper = Config { preset: Some(Preset::Paper), ..Config::default() };
        assert_eq!((paper.hidden(), paper.lr()), (vec![512, 512], 1e-3));
        assert_eq!(Config::for_algo(Algo::Ppo).lr(), 1e-4);
        // HPO clips each network's gradient at 1; PPO and the paper's preset at the paper's 5.
        assert_eq!((defaults.max_grad_norm(), paper.max_grad_norm()), (1.0, 5.0));
        assert_eq!(Config::for_algo(Algo::Ppo).max_grad_norm(), 5.0);
        assert_eq!(Config::for_algo(Algo::HpoNoCross).max_grad_norm(), 1.0);
        assert_eq!(Config { max_grad_norm: Some(2.0), ..Config::default() }.max_grad_norm(), 2.0);
        // HPO's saturation penalty: 0.1, none for the paper's preset and for PPO.
        assert_eq!((defaults.saturation_penalty(), paper.saturation_penalty()), (0.1, 0.0));
        assert_eq!(Config::for_algo(Algo::Ppo).saturation_penalty(), 0.0);
        assert_eq!(Config::for_algo(Algo::HpoNoCross).saturation_penalty(), 0.1);
        assert_eq!(Config { saturation_penalty: Some(2.0), ..Config::default() }.saturation_penalty(), 2.0);
        assert_eq!((defaults.updates, defaults.batch, defaults.normalize), (1600, 16, true));
        // A run.json that names no setting reads as the defaults; every setting round-trips.
        assert_eq!(serde_json::from_str::<Config>("{}").ok(), Some(defaults.clone()));
        let text = serde_json::to_string(&defaults).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Config>(&text).ok(), Some(defaults));
        // The algorithm is written as on the command line.
        let ppo = Config::for_algo(Algo::HpoNoCross);
        assert!(serde_json::to_string(&ppo).unwrap_or_default().contains("\"algo\":\"hpo-nocross\""));
        // A misspelt setting is refused, not ignored.
        assert!(serde_json::from_str::<Config>("{\"updatez\": 3}").is_err());
    }

    #[test]
    fn the_schedules_run_from_their_start_to_their_end() {
        let linear = Config { updates: 101, ..Config::default() };
        assert!(linear.entropy_weight(0) == 0.5 && (linear.entropy_weight(100) - 0.001).abs() < 1e-15);
        // A half-life does not depend on the length of the run.
        let halving = Config { entropy_half_life: Some(10), ..linear.clone() };
        let long = Config { updates: 5000, ..halving.clone() };
        assert_eq!(halving.entropy_weight(10), long.entropy_weight(10));
        assert!((halving.entropy_weight(10) - (0.001 + 0.499 / 2.0)).abs() < 1e-12);
        assert!((halving.entropy_weight(100) - 0.001).abs() < 1e-3);
        // No decay by default: the learning rate of every update is `lr`.
        assert_eq!((linear.lr_at(0), linear.lr_at(100)), (3e-3, 3e-3));
        let decaying = Config { lr_decay: Some(0.1), ..linear };
        assert!((decaying.lr_at(50) - 3e-3 * 0.55).abs() < 1e-15 && (decaying.lr_at(100) - 3e-4).abs() < 1e-15);
    }

    #[test]
    fn evaluation_gives_a_few_dozen_points_at_most_an_epoch_apart() {
        let with = |updates, batch| Config { updates, batch, ..Config::default() }.eval_every();
        assert_eq!(with(1600, 16), 40);
        assert_eq!(with(100, 16), 2);
        assert_eq!(with(10, 16), 1);
        // 1024 scenarios in batches of 128: an epoch is 8 updates.
        assert_eq!(with(4000, 128), 8);
    }
}
