//! Batched rollouts of the policy through the compiled kernels, recording what the updates need.
//!
//! One step of a rollout is a period of the protocol of `sim::protocol`: noise from the scenario
//! set, the `bounds` kernel, the features and the discrete choice, the `regimes` kernel, the
//! continuous actions (squashed into the bounds or the chosen piece's bounds; 0 outside their
//! regime), then the `step` kernel. A recording rollout keeps, per step, the batch as the step
//! saw it (for the VJP), the continuous network's tape (for backpropagation through time), the
//! chosen labels and their log-probabilities.

use rand::rngs::ChaCha8Rng;

use super::TrainError;
use super::policy::{Choice, Nets, each_choice};
use super::scenarios::Scenarios;
use super::spec::{RegimeSource, Spec, squash, squash_bounds_slopes};
use crate::backend::{Backend, Batch, Buffers, Kernel, RunError};
use crate::ir::{BufferKind, Module};
use crate::nn::mlp::Tape;
use crate::random::{standard_normal, unit};
use crate::sim::finite;
use crate::sim::protocol::{self, Batched, Decide, World};

/// How actions are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    /// HPO training: discrete labels sampled, continuous actions deterministic.
    Sample,
    /// PPO training: discrete labels sampled, raw continuous outputs drawn from a Gaussian.
    Gaussian,
    /// Evaluation: the most likely label, deterministic continuous actions.
    Greedy,
    /// Given labels (per step, row and discrete element), deterministic continuous actions: for
    /// computing expectations exactly by enumerating the discrete paths.
    Forced(&'a [u32]),
}

/// What the compiled model runs on: the module, its kernels and the instance.
pub struct Context<'a> {
    pub module: &'a Module,
    pub spec: &'a Spec,
    pub backend: &'a dyn Backend,
    pub instance: &'a Buffers,
}

/// One continuous action element's raw output as used in a step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Used {
    /// The output of the continuous network it came from, if the element acts.
    pub output: Option<u32>,
    /// d(action)/d(raw output).
    pub slope: f64,
    /// d(action)/d(lower bound) and d(action)/d(upper bound) of the bounds it was squashed into.
    pub bound_slopes: (f64, f64),
    /// The raw value squashed (the network's output, or PPO's Gaussian draw).
    pub raw: f32,
    /// The action's value.
    pub value: f64,
    /// Whether the value sits at one of its bounds (within a thousandth of its range, or of
    /// its scale on a half-line) while they leave room: what [`super::diagnose`] counts as
    /// piled up at a bound.
    pub pinned: bool,
}

pub struct Step {
    /// The batch after the step: inputs as the step read them, outputs as it wrote them.
    pub batch: Option<Batch>,
    /// Normalised features, rows × features.
    pub features: Vec<f32>,
    pub tape: Option<Tape>,
    /// The discrete network's tape, for the first step of the update, which starts from the
    /// same parameters.
    pub discrete_tape: Option<Tape>,
    /// Chosen label per row and discrete element.
    pub chosen: Vec<u32>,
    /// Log-probability of the chosen actions per row (discrete; plus Gaussian for PPO).
    pub log_prob: Vec<f64>,
    /// Per row and continuous element.
    pub used: Vec<Used>,
    /// Per row and cost term.
    pub costs: Vec<f64>,
}

pub struct Trajectory {
    pub rows: usize,
    pub steps: Vec<Step>,
    /// Features after the last step, for the value bootstrap.
    pub final_features: Vec<f32>,
}

impl Trajectory {
    /// Per row and cost term: the sum over steps from `from` on.
    pub fn totals(&self, terms: usize, from: usize) -> Vec<f64> {
        let mut totals = vec![0.0; self.rows * terms];
        for step in self.steps.iter().skip(from) {
            for (t, c) in totals.iter_mut().zip(&step.costs) {
                *t += c;
            }
        }
        totals
    }

    /// Per row, the total cost of the steps from the module's `warmup` on, step `warmup + k`
    /// weighed by `discount^k`.
    pub fn discounted(&self, terms: usize, module: &Module) -> Vec<f64> {
        let mut totals = vec![0.0; self.rows];
        let mut weight = 1.0;
        for step in self.steps.iter().skip(module.warmup as usize) {
            for (total, c) in totals.iter_mut().zip(step.costs.chunks(terms.max(1))) {
                *total += weight * c.iter().sum::<f64>();
            }
            weight *= module.discount;
        }
        totals
    }
}

fn features(ctx: &Context, batch: &Batch, center: &[f64], scale: &[f64], mut raw: Option<&mut Vec<f64>>) -> Vec<f32> {
    let f = ctx.spec.features;
    let mut out = vec![0.0f32; batch.size * f];
    for b in 0..batch.size {
        let mut k = 0;
        for &(id, len) in &ctx.spec.observe {
            for (j, &v) in batch.get(id, b).iter().enumerate().take(len) {
                if let Some(raw) = raw.as_deref_mut() {
                    raw.push(v);
                }
                out[b * f + k + j] = ((v - center[k + j]) / scale[k + j]) as f32;
            }
            k += len;
        }
    }
    out
}

/// The raw features every scenario of a set shows at its first step (states from `init`, the
/// first step's noise, bounds), rows × features.
pub fn initial_features(ctx: &Context, set: &Scenarios) -> Result<Vec<f64>, RunError> {
    let rows: Vec<usize> = (0..set.count).collect();
    let mut world = Batched::drawn(ctx.module, ctx.instance, ctx.backend, set.set, &set.init, &set.noise, &rows);
    world.noise(0)?;
    world.run(Kernel::Bounds)?;
    let features = ctx.spec.features;
    let (center, scale) = (vec![0.0; features], vec![1.0; features]);
    let mut raw = Vec::with_capacity(set.count * features);
    self::features(ctx, &world.batch, &center, &scale, Some(&mut raw));
    Ok(raw)
}

/// The networks deciding for a whole batch, and what they record of the period they decide:
/// the one decider of a trained policy, for training, evaluation, and what [`crate::subject`]
/// scores, rolls out and asks (`eval`, `rollout`, `act`).
pub struct Networks<'a, 'r> {
    ctx: &'a Context<'a>,
    nets: &'a Nets,
    mode: Mode<'a>,
    rng: &'r mut ChaCha8Rng,
    center: Vec<f64>,
    scale: Vec<f64>,
    /// This period's features, continuous outputs and tapes, and what the policy chose.
    features: Vec<f32>,
    outputs: Option<Vec<f32>>,
    tape: Tape,
    discrete_tape: Tape,
    chosen: Vec<u32>,
    log_prob: Vec<f64>,
    used: Vec<Used>,
    /// When kept ([`Networks::explained`]), this period's log-probability of every label of
    /// every discrete element, rows × logits.
    label_log_probs: Option<Vec<f64>>,
}

impl<'a, 'r> Networks<'a, 'r> {
    /// The networks deciding as `mode` says, drawing from `rng` where it draws.
    pub fn new(ctx: &'a Context<'a>, nets: &'a Nets, mode: Mode<'a>, rng: &'r mut ChaCha8Rng) -> Networks<'a, 'r> {
        Networks {
            ctx,
            nets,
            mode,
            rng,
            center: nets.normalizer.center(),
            scale: nets.normalizer.scale(),
            features: Vec::new(),
            outputs: None,
            tape: Tape::default(),
            discrete_tape: Tape::default(),
            chosen: Vec::new(),
            log_prob: Vec::new(),
            used: Vec::new(),
            label_log_probs: None,
        }
    }

    /// Also keeps, each period, the log-probability of every label ([`Networks::label_log_probs`]).
    pub fn explained(mut self) -> Networks<'a, 'r> {
        self.label_log_probs = Some(Vec::new());
        self
    }

    /// Row `row`'s log-probability of every label of every discrete element this period, in the
    /// order of the discrete heads (empty unless [`Networks::explained`]).
    pub fn label_log_probs(&self, row: usize) -> &[f64] {
        let logits = self.ctx.spec.logits;
        self.label_log_probs.as_deref().and_then(|lp| lp.get(row * logits..(row + 1) * logits)).unwrap_or(&[])
    }
}

impl Decide<Batched<'_>> for Networks<'_, '_> {
    type Error = TrainError;

    /// Runs both networks on the features (side by side: they read only the features; the
    /// continuous outputs wait until the labels and regimes are known) and chooses the labels.
    fn discrete(&mut self, world: &mut Batched<'_>, t: usize) -> Result<(), TrainError> {
        let (spec, nets, batch) = (self.ctx.spec, self.nets, &mut world.batch);
        let rows = batch.size;
        self.features = features(self.ctx, batch, &self.center, &self.scale, None);
        let x = &self.features;
        let (mut tape, mut discrete_tape) = (Tape::default(), Tape::default());
        let (logits, z) = rayon::join(
            || (spec.logits > 0).then(|| nets.discrete.forward(x, rows, &mut discrete_tape).to_vec()),
            || (spec.outputs > 0).then(|| nets.continuous.forward(x, rows, &mut tape).to_vec()),
        );
        (self.tape, self.discrete_tape, self.outputs) = (tape, discrete_tape, z);
        let discrete_len: usize = spec.discrete.iter().map(|d| d.len).sum();
        self.chosen = vec![0u32; rows * discrete_len];
        self.log_prob = vec![0.0f64; rows];
        if let Some(kept) = self.label_log_probs.as_mut() {
            *kept = vec![0.0; rows * spec.logits];
        }
        let Some(logits) = logits else { return Ok(()) };
        let mut lp = Vec::new();
        for b in 0..rows {
            each_choice(spec, &logits, b, &mut lp, |Choice { head, k, e, start, log_probs: lp, .. }| {
                let label = match self.mode {
                    Mode::Greedy => (0..head.labels).fold(0, |best, l| if lp[l] > lp[best] { l } else { best }),
                    Mode::Forced(labels) => {
                        let at = (t * rows + b) * discrete_len + e;
                        (labels.get(at).copied().unwrap_or(0) as usize).min(head.labels - 1)
                    }
                    Mode::Sample | Mode::Gaussian => {
                        let mut u = unit(self.rng);
                        let mut pick = head.labels - 1;
                        for (l, &p) in lp.iter().enumerate() {
                            u -= p.exp();
                            if u < 0.0 {
                                pick = l;
                                break;
                            }
                        }
                        pick
                    }
                };
                if let Some(kept) = self.label_log_probs.as_mut() {
                    kept[start..start + head.labels].copy_from_slice(&lp[..head.labels]);
                }
                self.chosen[b * discrete_len + e] = label as u32;
                self.log_prob[b] += lp[label];
                batch.get_mut(head.buffer, b)[k] = label as f64;
            });
        }
        Ok(())
    }

    /// Puts the continuous outputs (or PPO's Gaussian draws around them) into the bounds or the
    /// chosen piece's bounds; an element outside its regime is left to the protocol, which sets
    /// it to 0.
    fn continuous(&mut self, world: &mut Batched<'_>, t: usize) -> Result<(), TrainError> {
        let (module, spec, batch) = (self.ctx.module, self.ctx.spec, &mut world.batch);
        let rows = batch.size;
        let continuous_len: usize = spec.continuous.iter().map(|c| c.len).sum();
        self.used = vec![Used::default(); rows * continuous_len];
        let Some(z) = &self.outputs else { return Ok(()) };
        for b in 0..rows {
            let mut e = 0;
            for head in &spec.continuous {
                for k in 0..head.len {
                    let active = head.mask.is_none_or(|m| batch.get(m, b)[k] != 0.0);
                    let value = if active {
                        let regime = match head.regime {
                            RegimeSource::None => 0,
                            RegimeSource::Shared { buffer, .. } => batch.get(buffer, b)[0] as usize,
                            RegimeSource::Elementwise { buffer, .. } => batch.get(buffer, b)[k] as usize,
                        };
                        let output = head.offset + k * head.regime.labels() + regime;
                        let mean = z[b * spec.outputs + output];
                        let raw = match self.mode {
                            Mode::Gaussian => {
                                let sigma = self.nets.log_std[output].clamp(-20.0, 2.0).exp();
                                let eps = standard_normal(self.rng);
                                let draw = mean + sigma * eps as f32;
                                self.log_prob[b] += -0.5 * eps * eps
                                    - self.nets.log_std[output].clamp(-20.0, 2.0) as f64
                                    - 0.5 * (2.0 * std::f64::consts::PI).ln();
                                draw
                            }
                            Mode::Sample | Mode::Greedy | Mode::Forced(_) => mean,
                        };
                        let lo = head.lower.map_or(f64::NEG_INFINITY, |l| batch.get(l, b)[k]);
                        let hi = head.upper.map_or(f64::INFINITY, |h| batch.get(h, b)[k]);
                        if lo > hi {
                            return Err(TrainError::EmptyBounds {
                                action: module.buffers[head.buffer].name.clone(),
                                element: k,
                                step: t,
                                lo,
                                hi,
                            });
                        }
                        let (v, slope) = squash(raw as f64, lo, hi, head.scale, head.shift);
                        let bound_slopes = squash_bounds_slopes(raw as f64, lo, hi);
                        let near = 1e-3 * if hi > lo && (hi - lo).is_finite() { hi - lo } else { head.scale.abs() };
                        let pinned = hi > lo && (v <= lo + near || v >= hi - near);
                        self.used[b * continuous_len + e] =
                            Used { output: Some(output as u32), slope, bound_slopes, raw, value: v, pinned };
                        v
                    } else {
                        0.0
                    };
                    batch.get_mut(head.buffer, b)[k] = value;
                    e += 1;
                }
            }
        }
        Ok(())
    }
}

/// The greedy policy's decision (the one evaluations make) in a world whose period has begun
/// ([`protocol::observe`]): the actions are left in the world's batch, for a front end that steps
/// the world itself (the Python module's environment).
pub fn act_greedy(ctx: &Context, nets: &Nets, world: &mut Batched<'_>, period: usize) -> Result<(), TrainError> {
    // Greedy decisions draw nothing.
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut networks = Networks::new(ctx, nets, Mode::Greedy, &mut rng);
    protocol::act(world, &mut networks, period)
}

/// Runs the policy on scenarios `indices` of a set for the whole horizon, period by period in
/// the protocol of [`crate::sim::protocol`].
pub fn rollout(
    ctx: &Context,
    nets: &Nets,
    scenarios: &Scenarios,
    indices: &[usize],
    mode: Mode<'_>,
    record: bool,
    rng: &mut ChaCha8Rng,
) -> Result<Trajectory, TrainError> {
    let (module, spec) = (ctx.module, ctx.spec);
    let rows = indices.len();
    let mut world =
        Batched::drawn(module, ctx.instance, ctx.backend, scenarios.set, &scenarios.init, &scenarios.noise, indices);
    let mut networks = Networks::new(ctx, nets, mode, rng);
    let terms = spec.costs.len();
    let periods = (module.horizon as usize).min(scenarios.noise.len());
    let mut steps = Vec::with_capacity(periods);
    for t in 0..periods {
        protocol::period(&mut world, &mut networks, t)?;
        finite::check(module, &world, t)?;
        let batch = &world.batch;
        let mut costs = vec![0.0; rows * terms];
        for b in 0..rows {
            for (j, &id) in spec.costs.iter().enumerate() {
                costs[b * terms + j] = batch.get(id, b)[0];
            }
        }
        let n = &mut networks;
        steps.push(Step {
            batch: record.then(|| batch.clone()),
            features: std::mem::take(&mut n.features),
            tape: record.then(|| std::mem::take(&mut n.tape)),
            discrete_tape: (record && spec.logits > 0).then(|| std::mem::take(&mut n.discrete_tape)),
            chosen: std::mem::take(&mut n.chosen),
            log_prob: std::mem::take(&mut n.log_prob),
            used: std::mem::take(&mut n.used),
            costs,
        });
        world.advance();
    }
    // An observed `let` holds the last step's value; it is computed afresh from the final states.
    if ctx.module.observe.iter().any(|&id| ctx.module.buffers[id].kind == BufferKind::Let) {
        world.run(Kernel::Bounds)?;
    }
    let final_features = features(ctx, &world.batch, &networks.center, &networks.scale, None);
    Ok(Trajectory { rows, steps, final_features })
}
