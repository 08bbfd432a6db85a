//! One policy update from one rollout: HPO's mixed gradient, its decentralised variant, and PPO.
//!
//! All three share the PPO machinery of the reference implementation (`hpo-paper.md` §1.3):
//! rewards `−cost` scaled by their standard deviation, GAE advantages against a value network,
//! a clipped score-function loss for the discrete heads with an entropy bonus, a value loss, and
//! `epochs` passes where the first is one full-batch step and the rest are `minibatches` shuffled
//! steps, stopped early when the approximate KL divergence exceeds `target_kl`. Only the samples
//! of the central slice `[b, T − b)` enter the losses.
//!
//! HPO adds, in the first (full-batch) step only, the pathwise gradient of the scaled cost of the
//! slice, with the discrete choices held fixed: backpropagation through time, in which each
//! step's VJP kernel gives the adjoints of its states and continuous actions, the continuous
//! network's backward pass turns the latter into parameter gradients and gradients on its
//! features, and those flow back into the states observed. The cross term is the discrete
//! network's gradient on its features in that same step, added into the same backward pass:
//! how the continuous actions change later discrete choices. `hpo-nocross` leaves it out.

use rand::rngs::ChaCha8Rng;
use std::ops::Range;
use std::time::Instant;

use super::policy::{Choice, Nets, each_choice};
use super::rollout::{Context, Trajectory};
use super::spec::{ContinuousHead, Spec};
use super::{Config, TrainError};
use crate::backend::{self, Kernel};
use crate::ir::BufferKind;
use crate::nn::mlp::{Stack, Tape};
use crate::nn::optim::{Adam, norm};

/// One Adam optimiser per parameter group, each clipped on its own.
pub struct Optimizers {
    pub discrete: Adam,
    pub continuous: Adam,
    pub value: Adam,
    pub log_std: Adam,
}

impl Optimizers {
    /// Sets every group's learning rate to `cfg`'s at update `u`: [`Config::lr_at`], and for
    /// the discrete network [`Config::lr_discrete`] scaled alike.
    pub fn set_lr(&mut self, cfg: &Config, u: usize) {
        let lr = cfg.lr_at(u);
        for adam in [&mut self.continuous, &mut self.value, &mut self.log_std] {
            adam.lr = lr as f32;
        }
        self.discrete.lr = (lr * cfg.lr_discrete() / cfg.lr()) as f32;
    }

    pub fn new(nets: &Nets, cfg: &Config) -> Optimizers {
        let adam = |n: usize| {
            let mut a = Adam::new(n, cfg.lr() as f32);
            a.eps = cfg.adam_eps as f32;
            a
        };
        Optimizers {
            discrete: {
                let mut a = adam(nets.discrete.params().len());
                a.lr = cfg.lr_discrete() as f32;
                a
            },
            continuous: adam(nets.continuous.params().len()),
            value: adam(nets.value.params().len()),
            log_std: adam(nets.log_std.len()),
        }
    }
}

/// What an update did, for the progress line and the learning curve.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub steps: usize,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub entropy: f64,
    /// The mean entropy (nats) of one choice of each discrete action, in the first step.
    pub head_entropy: Vec<f64>,
    /// The norm of each parameter group's gradient before clipping, in the first step (the one
    /// that carries HPO's pathwise gradient), by group name ([`GROUPS`]); groups that do not
    /// step in it are left out.
    pub grad_norms: Vec<(&'static str, f64)>,
    /// The share of the returns' variance that the value network explains on the update's
    /// samples, `1 − Var(return − value) / Var(return)`: 1 for a perfect fit, 0 (or below) for
    /// none, NaN when the returns do not vary.
    pub value_fit: f64,
    pub phases: Phases,
}

/// The parameter groups, each with its own Adam and gradient clip, as the curve names them.
pub const GROUPS: [&str; 4] = ["discrete", "value", "continuous", "log_std"];

/// Wall-clock seconds spent in each part of updates (`hmdpc train --breakdown`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The rollout (timed by the caller).
    pub rollout: f64,
    /// The value network over the whole rollout, rewards and advantages.
    pub values: f64,
    /// The first, full-batch step's losses and their gradients.
    pub first_step: f64,
    /// HPO's mixed gradient: the score function's backward pass and backpropagation through time.
    pub pathwise: f64,
    /// The minibatch steps' losses and gradients.
    pub minibatches: f64,
    /// Gradient norms and Adam.
    pub optimizer: f64,
}

impl Phases {
    /// The parts with their names, in the order an update runs them.
    pub fn parts(&self) -> [(&'static str, f64); 6] {
        [
            ("rollout", self.rollout),
            ("values", self.values),
            ("first step", self.first_step),
            ("pathwise", self.pathwise),
            ("minibatches", self.minibatches),
            ("optimizer", self.optimizer),
        ]
    }

    pub fn add(&mut self, other: &Phases) {
        self.rollout += other.rollout;
        self.values += other.values;
        self.first_step += other.first_step;
        self.pathwise += other.pathwise;
        self.minibatches += other.minibatches;
        self.optimizer += other.optimizer;
    }
}

/// `f()`, with its wall-clock time added to `seconds`.
fn timed<T>(seconds: &mut f64, f: impl FnOnce() -> T) -> T {
    let clock = Instant::now();
    let out = f();
    *seconds += clock.elapsed().as_secs_f64();
    out
}

/// The learning samples of a rollout's central slice.
struct Samples {
    features: Vec<f32>,
    chosen: Vec<u32>,
    log_prob_old: Vec<f64>,
    advantages: Vec<f64>,
    returns: Vec<f64>,
    /// PPO: (output, raw draw) per sample and continuous element.
    draws: Vec<(Option<u32>, f32)>,
    /// The (step, row) each sample came from.
    origin: Vec<(usize, usize)>,
    /// The rollout's number of steps.
    horizon: usize,
    /// [`Stats::value_fit`].
    value_fit: f64,
}

/// Period `t` of a horizon of `horizon` periods as the value network reads it: the fraction of
/// the horizon gone, from 0 at the first period to 1 after the last.
fn period_fraction(t: usize, horizon: usize) -> f32 {
    (t as f64 / horizon.max(1) as f64) as f32
}

fn slice(cfg: &Config, module: &crate::ir::Module, horizon: usize) -> std::ops::Range<usize> {
    let b = cfg.buffer_periods(module).min(horizon / 2);
    if horizon > 2 * b { b..horizon - b } else { 0..horizon }
}

/// The variance of `values` (0 for fewer than two).
fn variance(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
}

/// The standard deviation of `values`, or 1 when it is 0 or not finite (a scale to divide by).
fn std_dev(values: &[f64]) -> f64 {
    let var = variance(values);
    if var > 0.0 && var.is_finite() { var.sqrt() } else { 1.0 }
}

/// Rewards, values, GAE; the samples of the slice; the reward scale. Leaves on `tape` the value
/// network's forward pass on the samples, in their order, for the first step's value loss.
fn samples(ctx: &Context, nets: &Nets, traj: &Trajectory, cfg: &Config, tape: &mut Tape) -> (Samples, f64) {
    let (horizon, rows, f) = (traj.steps.len(), traj.rows, ctx.spec.features);
    let terms = ctx.spec.costs.len();
    let rewards: Vec<f64> =
        traj.steps.iter().flat_map(|s| s.costs.chunks(terms.max(1)).map(|c| -c.iter().sum::<f64>())).collect();
    let scale = std_dev(&rewards);
    let mut all = Vec::with_capacity((horizon + 1) * rows * f);
    for s in &traj.steps {
        all.extend_from_slice(&s.features);
    }
    all.extend_from_slice(&traj.final_features);
    let all = nets.value_inputs(&all, (horizon + 1) * rows, |r| period_fraction(r / rows, horizon));
    let values = nets.value.forward(&all, (horizon + 1) * rows, tape);
    let value = |t: usize, b: usize| values[t * rows + b] as f64;
    let mut advantages = vec![0.0; horizon * rows];
    let gamma = cfg.gamma(ctx.module);
    for b in 0..rows {
        let mut gae = 0.0;
        for t in (0..horizon).rev() {
            let delta = rewards[t * rows + b] / scale + gamma * value(t + 1, b) - value(t, b);
            gae = delta + gamma * cfg.lambda * gae;
            advantages[t * rows + b] = gae;
        }
    }
    let range = slice(cfg, ctx.module, horizon);
    let discrete_len: usize = ctx.spec.discrete.iter().map(|d| d.len).sum();
    let continuous_len: usize = ctx.spec.continuous.iter().map(|c| c.len).sum();
    let mut s = Samples {
        features: Vec::new(),
        chosen: Vec::new(),
        log_prob_old: Vec::new(),
        advantages: Vec::new(),
        returns: Vec::new(),
        draws: Vec::new(),
        origin: Vec::new(),
        horizon,
        value_fit: f64::NAN,
    };
    for t in range.clone() {
        let step = &traj.steps[t];
        for b in 0..rows {
            s.features.extend_from_slice(&step.features[b * f..(b + 1) * f]);
            s.chosen.extend_from_slice(&step.chosen[b * discrete_len..(b + 1) * discrete_len]);
            s.log_prob_old.push(step.log_prob[b]);
            let a = advantages[t * rows + b];
            s.advantages.push(a);
            s.returns.push(a + value(t, b));
            s.draws.extend(step.used[b * continuous_len..(b + 1) * continuous_len].iter().map(|u| (u.output, u.raw)));
            s.origin.push((t, b));
        }
    }
    // A return less its value is the advantage.
    let returns_variance = variance(&s.returns);
    if returns_variance > 0.0 {
        s.value_fit = 1.0 - variance(&s.advantages) / returns_variance;
    }
    // The samples are the rows of the steps in the slice, in the order the forward pass saw them.
    tape.keep_rows(range.start * rows, range.len() * rows);
    (s, scale)
}

/// Buffers that the steps of an update, and later updates, reuse: the networks' tapes, their
/// gradients and the stack of backpropagation through time. Grown once, they save allocating,
/// zeroing and page-faulting megabytes at every step.
#[derive(Default)]
pub struct Workspace {
    discrete: Tape,
    continuous: Tape,
    value: Tape,
    grads: Grads,
    stack: Stack,
}

/// The gradients of one step, laid out like each network's parameters.
#[derive(Default)]
struct Grads {
    discrete: Vec<f32>,
    /// Written by PPO's loss, or by [`pathwise`] in HPO's first step; stale otherwise.
    continuous: Vec<f32>,
    value: Vec<f32>,
    log_std: Vec<f32>,
}

/// `buf` as `len` zeros, in the memory it already has.
fn zeroed(buf: &mut Vec<f32>, len: usize) -> &mut Vec<f32> {
    buf.clear();
    buf.resize(len, 0.0);
    buf
}

/// What one PPO-style step on the samples `which` measured; its gradients are in the workspace.
struct Losses {
    /// d loss / d log π(k | s) of each sample in `which`: the clipped surrogate's score weights.
    score: Vec<f64>,
    approx_kl: f64,
    clip_fraction: f64,
    entropy: f64,
    /// The mean entropy of one choice of each discrete action.
    head_entropy: Vec<f64>,
}

/// The clamped log-std of Gaussian output `o`, its σ, and a raw draw standardised by the mean.
fn standardized(nets: &Nets, o: usize, raw: f32, mean: f32) -> (f64, f64, f64) {
    let log_std = nets.log_std[o].clamp(-20.0, 2.0) as f64;
    let sigma = log_std.exp();
    (log_std, sigma, (raw as f64 - mean as f64) / sigma)
}

/// Which of the workspace's tapes already hold a forward pass on exactly the samples of a step,
/// with the current parameters: the first step's, which the rollout (discrete network) and
/// [`samples`] (value network) ran. Reusing them spares two forward passes over the whole slice
/// and changes no number.
#[derive(Clone, Copy, Default)]
struct Recorded {
    discrete: bool,
    value: bool,
}

/// Clipped surrogate, entropy and value losses on the samples `which`, differentiated. With
/// `mixed`, the discrete network's gradient is left to [`mixed_gradient`], which takes the
/// returned score weights and the discrete network's forward pass left in the workspace.
#[allow(clippy::too_many_arguments)]
fn ppo_losses(
    ctx: &Context,
    nets: &Nets,
    s: &Samples,
    which: &[usize],
    cfg: &Config,
    entropy_coef: f64,
    gaussian: bool,
    mixed: bool,
    work: &mut Workspace,
    recorded: Recorded,
) -> Losses {
    let spec = ctx.spec;
    let f = spec.features;
    let n = which.len();
    let discrete_len: usize = spec.discrete.iter().map(|d| d.len).sum();
    let continuous_len: usize = spec.continuous.iter().map(|c| c.len).sum();
    let x: Vec<f32> = which.iter().flat_map(|&i| s.features[i * f..(i + 1) * f].iter().copied()).collect();

    let Workspace { discrete: dtape, continuous: ctape, value: vtape, grads, .. } = work;
    let Grads { discrete: dgrad, continuous: cgrad, value: vgrad, log_std: sgrad } = grads;
    // The value network's loss shares only the inputs with the policy's: the two run side by side.
    let policy = || {
        let logits =
            if recorded.discrete { dtape.output().to_vec() } else { nets.discrete.forward(&x, n, dtape).to_vec() };
        let means =
            if gaussian && spec.outputs > 0 { nets.continuous.forward(&x, n, ctape).to_vec() } else { Vec::new() };

        // New log-probabilities and entropies.
        let mut log_prob = vec![0.0f64; n];
        let mut entropy = vec![0.0f64; n];
        let mut head_entropy = vec![0.0f64; spec.discrete.len()];
        let head_of: Vec<usize> =
            spec.discrete.iter().enumerate().flat_map(|(h, d)| std::iter::repeat_n(h, d.len)).collect();
        let mut lp = Vec::new();
        for (r, &i) in which.iter().enumerate() {
            each_choice(spec, &logits, r, &mut lp, |Choice { e, log_probs: lp, .. }| {
                let label = s.chosen[i * discrete_len + e] as usize;
                log_prob[r] += lp[label];
                let mut h = 0.0;
                for &v in lp {
                    let p = v.exp();
                    if p > 0.0 {
                        h -= p * v;
                    }
                }
                entropy[r] += h;
                head_entropy[head_of[e]] += h;
            });
            if gaussian {
                for &(output, raw) in &s.draws[i * continuous_len..(i + 1) * continuous_len] {
                    if let Some(o) = output {
                        let (log_std, _, z) = standardized(nets, o as usize, raw, means[r * spec.outputs + o as usize]);
                        log_prob[r] += -0.5 * z * z - log_std - 0.5 * (2.0 * std::f64::consts::PI).ln();
                    }
                }
            }
        }

        // Advantages normalised over these samples.
        let adv: Vec<f64> = which.iter().map(|&i| s.advantages[i]).collect();
        let mean = adv.iter().sum::<f64>() / n as f64;
        let sd = (adv.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let adv: Vec<f64> = adv.iter().map(|a| (a - mean) / (sd + 1e-8)).collect();

        let mut score = vec![0.0f64; n];
        let mut dmeans = vec![0.0f32; n * spec.outputs];
        let dlog_std = zeroed(sgrad, spec.outputs);
        let (mut approx_kl, mut clipped) = (0.0, 0usize);
        for (r, &i) in which.iter().enumerate() {
            let diff = (log_prob[r] - s.log_prob_old[i]).clamp(-20.0, 20.0);
            let ratio = diff.exp();
            // KL(old ‖ new) estimated as (ρ − 1) − log ρ: never negative, so a policy that moved
            // does not look unmoved because the changes of different samples cancel (the
            // estimator of the anchors and of common PPO implementations).
            approx_kl += (ratio - 1.0) - diff;
            let outside = (adv[r] > 0.0 && ratio > 1.0 + cfg.clip) || (adv[r] < 0.0 && ratio < 1.0 - cfg.clip);
            if outside {
                clipped += 1;
            }
            // d(−min(ρA, clip(ρ)A))/d log π.
            let dlp = if outside { 0.0 } else { -adv[r] * ratio / n as f64 };
            score[r] = dlp;
            if gaussian {
                for &(output, raw) in &s.draws[i * continuous_len..(i + 1) * continuous_len] {
                    if let Some(o) = output {
                        let o = o as usize;
                        let (_, sigma, z) = standardized(nets, o, raw, means[r * spec.outputs + o]);
                        dmeans[r * spec.outputs + o] += (dlp * z / sigma) as f32;
                        if (-20.0..=2.0).contains(&(nets.log_std[o] as f64)) {
                            dlog_std[o] += (dlp * (z * z - 1.0)) as f32;
                        }
                    }
                }
            }
        }

        if !mixed {
            let discrete = zeroed(dgrad, nets.discrete.params().len());
            if spec.logits > 0 {
                let chosen: Vec<u32> =
                    which.iter().flat_map(|&i| &s.chosen[i * discrete_len..(i + 1) * discrete_len]).copied().collect();
                let mut dlogits = vec![0.0f32; n * spec.logits];
                score_function(spec, &logits, &chosen, &score, entropy_coef, &mut dlogits);
                nets.discrete.backward(dtape, &dlogits, discrete, None);
            }
        }
        // Only PPO's Gaussian loss reaches the continuous network here; HPO's gradient for it
        // comes from `pathwise`.
        if gaussian {
            let continuous = zeroed(cgrad, nets.continuous.params().len());
            if spec.outputs > 0 {
                nets.continuous.backward(ctape, &dmeans, continuous, None);
            }
        }
        for (h, d) in head_entropy.iter_mut().zip(&spec.discrete) {
            *h /= (n * d.len).max(1) as f64;
        }
        (score, approx_kl, clipped, entropy, head_entropy)
    };
    let value = || {
        let values = if recorded.value {
            vtape.output()
        } else {
            let x = nets.value_inputs(&x, n, |r| period_fraction(s.origin[which[r]].0, s.horizon));
            nets.value.forward(&x, n, vtape)
        };
        let dv: Vec<f32> = which
            .iter()
            .enumerate()
            .map(|(r, &i)| (cfg.value_coef * (values[r] as f64 - s.returns[i]) / n as f64) as f32)
            .collect();
        nets.value.backward(vtape, &dv, zeroed(vgrad, nets.value.params().len()), None);
    };
    let ((score, approx_kl, clipped, entropy, head_entropy), ()) = rayon::join(policy, value);
    Losses {
        score,
        approx_kl: approx_kl / n as f64,
        clip_fraction: clipped as f64 / n as f64,
        entropy: entropy.iter().sum::<f64>() / n as f64,
        head_entropy,
    }
}

/// Feature gradients to inject into backpropagation through time, one row per sample, with the
/// (step, row) each sample belongs to.
pub type CrossTerm<'a> = (&'a [f32], &'a [(usize, usize)]);

/// How far from the centre of its squash the raw output `z` of a bounded continuous action goes
/// before the saturation penalty holds it: `σ(6)` is within 0.25% of the interval's end, and a
/// softplus of −6 within 0.25% of a scale of its bound. Beyond, the slope of the squash, and so
/// the pathwise gradient, vanishes exponentially: a policy pushed there by a few large steps
/// stays at the bound for good.
pub const SATURATION_START: f64 = 6.0;

/// The derivative in the raw output `z` of the saturation penalty `½ max(d − 6, 0)²`, where `d`
/// is how far `z` is on the flat side of `head`'s squash: `|z|` on an interval, `−(z + shift)`
/// on a half-line above a bound, `z − shift` below one; no penalty on the whole line.
pub fn saturation_slope(head: &ContinuousHead, z: f64) -> f64 {
    let beyond = |d: f64| (d - SATURATION_START).max(0.0);
    match (head.lower.is_some(), head.upper.is_some()) {
        (true, true) => beyond(z.abs()) * z.signum(),
        (true, false) => -beyond(-(z + head.shift)),
        (false, true) => beyond(z - head.shift),
        (false, false) => 0.0,
    }
}

/// Backpropagation through time of `Σ_t weight(t) · Σ_rows (cost(t) + saturation · penalty(t))`
/// with the discrete labels held fixed (`penalty(t)` is the sum of [`saturation_slope`]'s
/// penalties of the step's continuous elements that act), plus the feature gradients `cross`
/// (per sample, with the (step, row) it belongs to) injected at their steps. Returns the
/// continuous network's gradient.
pub fn pathwise(
    ctx: &Context,
    nets: &Nets,
    traj: &mut Trajectory,
    weight: &dyn Fn(usize) -> f64,
    saturation: f64,
    cross: Option<CrossTerm<'_>>,
) -> Result<Vec<f32>, TrainError> {
    let mut grad = Vec::new();
    pathwise_into(ctx, nets, traj, weight, saturation, cross, &mut Stack::new(), &mut grad)?;
    Ok(grad)
}

/// [`pathwise`] into `grad`, with `stack` as the scratch of the continuous network's passes.
#[allow(clippy::too_many_arguments)]
fn pathwise_into(
    ctx: &Context,
    nets: &Nets,
    traj: &mut Trajectory,
    weight: &dyn Fn(usize) -> f64,
    saturation: f64,
    cross: Option<CrossTerm<'_>>,
    stack: &mut Stack,
    grad: &mut Vec<f32>,
) -> Result<(), TrainError> {
    let (module, spec) = (ctx.module, ctx.spec);
    let (horizon, rows, f) = (traj.steps.len(), traj.rows, spec.features);
    let feature_scale = nets.normalizer.scale();
    let continuous_len: usize = spec.continuous.iter().map(|c| c.len).sum();
    // The cross-term feature gradients by step.
    let mut injected: Vec<Vec<f32>> = vec![Vec::new(); horizon];
    if let Some((dx, origin)) = cross {
        for (sample, &(t, b)) in origin.iter().enumerate() {
            let row = &mut injected[t];
            if row.is_empty() {
                row.resize(rows * f, 0.0);
            }
            for k in 0..f {
                row[b * f + k] += dx[sample * f + k];
            }
        }
    }
    let adjoint_of = |of: usize| module.buffers.iter().position(|b| b.kind == BufferKind::Adjoint { of });
    // The adjoint of every state after the current step, per state buffer.
    let states: Vec<usize> = spec.next.iter().map(|&(_, s)| s).collect();
    let mut state_bar: Vec<Vec<f64>> = states.iter().map(|&s| vec![0.0; rows * module.len(s)]).collect();
    let grad = zeroed(grad, nets.continuous.params().len());
    // The continuous network's passes of all steps, for one parameter-gradient product at the end.
    stack.reset(&nets.continuous, horizon * rows);
    for t in (0..horizon).rev() {
        let step = &mut traj.steps[t];
        let Some(snapshot) = &step.batch else {
            return Err(TrainError::Internal("a rollout without snapshots".into()));
        };
        let mut batch = snapshot.clone();
        for (k, &(next, _)) in spec.next.iter().enumerate() {
            if let Some(a) = adjoint_of(next) {
                batch.values[a].copy_from_slice(&state_bar[k]);
            }
        }
        let w = weight(t);
        for &c in &spec.costs {
            if let Some(a) = adjoint_of(c) {
                batch.values[a].fill(w);
            }
        }
        backend::run(ctx.backend, Kernel::Vjp, &mut batch).map_err(TrainError::Run)?;
        for (k, &s) in states.iter().enumerate() {
            match adjoint_of(s) {
                Some(a) => state_bar[k].copy_from_slice(&batch.values[a]),
                None => state_bar[k].fill(0.0),
            }
        }

        // Continuous actions → raw outputs → the continuous network.
        let mut dx = vec![0.0f32; rows * f];
        if spec.outputs > 0 {
            let mut dz = vec![0.0f32; rows * spec.outputs];
            for b in 0..rows {
                let mut e = 0;
                for head in &spec.continuous {
                    let adjoint = adjoint_of(head.buffer);
                    for k in 0..head.len {
                        let used = step.used[b * continuous_len + e];
                        if let (Some(o), Some(a)) = (used.output, adjoint) {
                            dz[b * spec.outputs + o as usize] += (batch.get(a, b)[k] * used.slope) as f32;
                        }
                        if let Some(o) = used.output.filter(|_| saturation > 0.0) {
                            let slope = saturation_slope(head, used.raw as f64);
                            dz[b * spec.outputs + o as usize] += (w * saturation * slope) as f32;
                        }
                        e += 1;
                    }
                }
            }
            let tape = step.tape.as_ref().ok_or_else(|| TrainError::Internal("a step without its tape".into()))?;
            nets.continuous.backward_stacked(tape, &dz, stack, t * rows, &mut dx);
        }
        if !injected[t].is_empty() {
            for (d, c) in dx.iter_mut().zip(&injected[t]) {
                *d += c;
            }
        }
        // Bounds that read the state, and observed lets of the state, carry the gradient of
        // the actions and of the features into the states.
        if !module.bounds_vjp.body.is_empty() {
            let seeds = Seeds { used: &step.used, features: &dx, scale: &feature_scale };
            through_bounds(ctx, &mut batch, &seeds, &states, &mut state_bar)?;
        }
        // Features → observed states: the state adjoints before this step.
        for (k, &s) in states.iter().enumerate() {
            let len = module.len(s);
            let bar = &mut state_bar[k];
            let mut offset = 0;
            for &(id, n) in &spec.observe {
                if id == s {
                    for b in 0..rows {
                        for j in 0..n.min(len) {
                            bar[b * len + j] += dx[b * f + offset + j] as f64 / feature_scale[offset + j];
                        }
                    }
                }
                offset += n;
            }
        }
    }
    if spec.outputs > 0 {
        nets.continuous.add_stacked_grad(stack, grad);
    }
    Ok(())
}

/// What a step's gradient holds before it reaches the states through the bounds and the
/// observed lets: how each continuous element was squashed, and the gradient of the features.
struct Seeds<'a> {
    used: &'a [super::rollout::Used],
    /// d loss / d (normalised feature), rows × features.
    features: &'a [f32],
    /// Each feature's normalising scale.
    scale: &'a [f64],
}

/// Adds to the adjoints of the states, `state_bar` (per state of `states`), how the continuous
/// actions of a step moved with the states through their bounds, and how the features moved with
/// them through the observed lets: each bound's adjoint is the action's adjoint (which the `vjp`
/// kernel left in `batch`) times the squashing's derivative in that bound, each observed let's
/// the gradient of its features, and the `bounds_vjp` kernel carries those into the states.
fn through_bounds(
    ctx: &Context,
    batch: &mut backend::Batch,
    seeds: &Seeds<'_>,
    states: &[usize],
    state_bar: &mut [Vec<f64>],
) -> Result<(), TrainError> {
    let (module, spec) = (ctx.module, ctx.spec);
    let used = seeds.used;
    let adjoint_of = |of: usize| module.buffers.iter().position(|b| b.kind == BufferKind::Adjoint { of });
    // The `vjp` kernel leaves the step's adjoints of the lets behind; `bounds_vjp` starts from
    // the features' gradient of the observed ones only (a let `bounds` stores for another, not
    // observed, gets its adjoint from that one's).
    for (id, b) in module.buffers.iter().enumerate() {
        if let BufferKind::Adjoint { of } = b.kind
            && matches!(
                module.buffers[of].kind,
                BufferKind::Bound { .. } | BufferKind::PieceBound { .. } | BufferKind::Let
            )
        {
            batch.values[id].fill(0.0);
        }
    }
    let f = spec.features;
    let mut offset = 0;
    for &(id, n) in &spec.observe {
        if module.buffers[id].kind == BufferKind::Let
            && let Some(a) = adjoint_of(id)
        {
            for b in 0..batch.size {
                for (j, bar) in batch.get_mut(a, b).iter_mut().enumerate().take(n) {
                    *bar = seeds.features[b * f + offset + j] as f64 / seeds.scale[offset + j];
                }
            }
        }
        offset += n;
    }
    let continuous_len: usize = spec.continuous.iter().map(|c| c.len).sum();
    for b in 0..batch.size {
        let mut e = 0;
        for head in &spec.continuous {
            let action = adjoint_of(head.buffer);
            let lower = head.lower.and_then(adjoint_of);
            let upper = head.upper.and_then(adjoint_of);
            for k in 0..head.len {
                let u = used[b * continuous_len + e];
                e += 1;
                let (Some(_), Some(a)) = (u.output, action) else { continue };
                let bar = batch.get(a, b)[k];
                for (bound, slope) in [(lower, u.bound_slopes.0), (upper, u.bound_slopes.1)] {
                    if let Some(id) = bound {
                        batch.get_mut(id, b)[k] = bar * slope;
                    }
                }
            }
        }
    }
    backend::run(ctx.backend, Kernel::BoundsVjp, batch).map_err(TrainError::Run)?;
    for (k, &s) in states.iter().enumerate() {
        if let Some(a) = adjoint_of(s) {
            for (total, part) in state_bar[k].iter_mut().zip(&batch.values[a]) {
                *total += part;
            }
        }
    }
    Ok(())
}

/// The score-function gradient on the discrete network's logits, for samples `n = 0..score.len()`
/// whose logits are rows of `logits` and whose chosen labels (one per discrete element) are
/// rows of `chosen`: the gradient of `Σ_n score[n] · log π(k_n | s_n) − entropy · mean_n H_n`,
/// written into `dlogits`. The one softmax gradient of the trainer: PPO's steps and
/// [`mixed_gradient`] both use it.
pub fn score_function(spec: &Spec, logits: &[f32], chosen: &[u32], score: &[f64], entropy: f64, dlogits: &mut [f32]) {
    let n = score.len();
    let discrete_len: usize = spec.discrete.iter().map(|d| d.len).sum();
    let mut lp = Vec::new();
    for (r, &weight) in score.iter().enumerate() {
        each_choice(spec, logits, r, &mut lp, |Choice { head, e, start, log_probs: lp, .. }| {
            let p = |l: usize| lp[l].exp();
            let label = chosen[r * discrete_len + e] as usize;
            let h: f64 = (0..head.labels).map(p).filter(|p| *p > 0.0).map(|p| -p * p.ln()).sum();
            for l in 0..head.labels {
                let p = p(l);
                let onehot = if l == label { 1.0 } else { 0.0 };
                // d log p_label / d logit_l = 1{l = label} − p_l; dH/dlogit_l = −p_l (log p_l + H).
                let dh = if p > 0.0 { -p * (p.ln() + h) } else { 0.0 };
                dlogits[start + l] = (weight * (onehot - p) - entropy * dh / n as f64) as f32;
            }
        });
    }
}

/// How [`mixed_gradient`] weighs a rollout. The samples are the rows of the steps `steps`, step
/// by step, row by row.
pub struct Weights<'a> {
    pub steps: Range<usize>,
    /// d loss / d log π(k_n | s_n) of each sample: the cost to go (less a baseline) in the plain
    /// estimator, the clipped surrogate's weights of normalised advantages in training.
    pub score: &'a [f64],
    /// The entropy bonus: the loss has `− entropy · mean_n H(π(· | s_n))`.
    pub entropy: f64,
    /// d loss / d cost of each step, for the pathwise gradient.
    pub pathwise: &'a dyn Fn(usize) -> f64,
    /// The weight of the saturation penalty ([`saturation_slope`]) against the costs.
    pub saturation: f64,
    /// Whether the score function's gradient on the states flows back into the continuous
    /// network (the cross term: how continuous actions move later discrete choices).
    pub cross: bool,
}

/// HPO's mixed gradient of one rollout: the discrete network's score-function gradient, and the
/// continuous network's pathwise gradient with the discrete labels held fixed, plus, with
/// `weights.cross`, the score function's gradient through the states. `tape` holds the discrete
/// network's forward pass on the samples (the rollout's, concatenated, or a fresh one). The
/// trainer runs it in the first step of every HPO update; `tests/train.rs` proves it unbiased
/// with the plain weights. The gradients are written into `discrete` and `continuous`.
#[allow(clippy::too_many_arguments)]
pub fn mixed_gradient(
    ctx: &Context,
    nets: &Nets,
    traj: &mut Trajectory,
    tape: &mut Tape,
    weights: &Weights,
    stack: &mut Stack,
    discrete: &mut Vec<f32>,
    continuous: &mut Vec<f32>,
) -> Result<(), TrainError> {
    let spec = ctx.spec;
    let rows = traj.rows;
    let n = weights.steps.len() * rows;
    if weights.score.len() != n || weights.steps.end > traj.steps.len() || (spec.logits > 0 && tape.rows() != n) {
        return Err(TrainError::Internal("mixed gradient: samples, weights and tape disagree".into()));
    }
    let discrete = zeroed(discrete, nets.discrete.params().len());
    let mut dx = weights.cross.then(|| vec![0.0f32; n * spec.features]);
    if spec.logits > 0 {
        let steps = &traj.steps[weights.steps.clone()];
        let chosen: Vec<u32> = steps.iter().flat_map(|s| &s.chosen).copied().collect();
        let mut dlogits = vec![0.0f32; n * spec.logits];
        score_function(spec, tape.output(), &chosen, weights.score, weights.entropy, &mut dlogits);
        nets.discrete.backward(tape, &dlogits, discrete, dx.as_deref_mut());
    }
    let origin: Vec<(usize, usize)> = weights.steps.clone().flat_map(|t| (0..rows).map(move |b| (t, b))).collect();
    let cross = dx.as_deref().map(|dx| (dx, origin.as_slice()));
    pathwise_into(ctx, nets, traj, weights.pathwise, weights.saturation, cross, stack, continuous)
}

/// One update from one rollout, by `cfg.algo`: HPO (with or without the cross term) or PPO.
#[allow(clippy::too_many_arguments)]
pub fn update(
    ctx: &Context,
    nets: &mut Nets,
    opt: &mut Optimizers,
    work: &mut Workspace,
    traj: &mut Trajectory,
    cfg: &Config,
    entropy_coef: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Stats, TrainError> {
    let gaussian = cfg.algo == super::Algo::Ppo;
    let cross = cfg.algo == super::Algo::Hpo;
    let mut stats = Stats::default();
    let (s, scale) = timed(&mut stats.phases.values, || samples(ctx, nets, traj, cfg, &mut work.value));
    stats.value_fit = s.value_fit;
    let steps = &traj.steps[slice(cfg, ctx.module, traj.steps.len())];
    let discrete_tapes: Option<Vec<&Tape>> = steps.iter().map(|s| s.discrete_tape.as_ref()).collect();
    let first_recorded = Recorded {
        discrete: match discrete_tapes {
            Some(tapes) if ctx.spec.logits > 0 => {
                timed(&mut stats.phases.first_step, || work.discrete.concatenate(tapes.iter().copied()));
                true
            }
            _ => false,
        },
        value: true,
    };
    let n = s.origin.len();
    let all: Vec<usize> = (0..n).collect();
    for epoch in 0..cfg.epochs {
        let batches: Vec<Vec<usize>> = if epoch == 0 {
            vec![all.clone()]
        } else {
            let mut order = all.clone();
            crate::random::shuffle(&mut order, rng);
            let per = n.div_ceil(cfg.minibatches.max(1));
            order.chunks(per.max(1)).map(<[usize]>::to_vec).collect()
        };
        for which in batches {
            let first = epoch == 0;
            let phase = if first { &mut stats.phases.first_step } else { &mut stats.phases.minibatches };
            // HPO's first step: the mixed gradient, on the discrete network's pass of this step.
            let mixed = first && !gaussian;
            let l = timed(phase, || {
                ppo_losses(
                    ctx,
                    nets,
                    &s,
                    &which,
                    cfg,
                    entropy_coef,
                    gaussian,
                    mixed,
                    work,
                    if first { first_recorded } else { Recorded::default() },
                )
            });
            if !first && l.approx_kl > cfg.target_kl && cfg.target_kl > 0.0 {
                return Ok(stats);
            }
            stats.steps += 1;
            stats.approx_kl = l.approx_kl;
            if first {
                stats.clip_fraction = l.clip_fraction;
                stats.entropy = l.entropy;
                stats.head_entropy = l.head_entropy.clone();
            }
            if mixed {
                let range = slice(cfg, ctx.module, traj.steps.len());
                let w = cfg.pathwise_coef / (scale * (range.len() * traj.rows) as f64);
                let weight = |t: usize| if range.contains(&t) { w } else { 0.0 };
                let weights = Weights {
                    steps: range.clone(),
                    score: &l.score,
                    entropy: entropy_coef,
                    pathwise: &weight,
                    saturation: cfg.saturation_penalty(),
                    cross,
                };
                let Workspace { discrete: tape, stack, grads, .. } = work;
                let (discrete, continuous) = (&mut grads.discrete, &mut grads.continuous);
                timed(&mut stats.phases.pathwise, || {
                    mixed_gradient(ctx, nets, traj, tape, &weights, stack, discrete, continuous)
                })?;
            }
            // The gradients that step, with their norms; a norm is finite only if its gradient is,
            // so no network moves when any gradient is NaN or infinite.
            let clock = Instant::now();
            let continuous = gaussian || first;
            let groups = [
                (&mut opt.discrete, nets.discrete.params_mut(), &work.grads.discrete, true),
                (&mut opt.value, nets.value.params_mut(), &work.grads.value, true),
                (&mut opt.continuous, nets.continuous.params_mut(), &work.grads.continuous, continuous),
                (&mut opt.log_std, &mut nets.log_std[..], &work.grads.log_std, gaussian),
            ];
            let groups: Vec<_> = groups
                .into_iter()
                .zip(GROUPS)
                .filter(|(g, _)| g.3)
                .map(|((a, p, g, _), name)| (a, p, g, norm(g), name))
                .collect();
            if groups.iter().any(|g| !g.3.is_finite()) {
                return Err(TrainError::NotFiniteGradient);
            }
            if first {
                stats.grad_norms = groups.iter().map(|g| (g.4, g.3 as f64)).collect();
            }
            for (adam, params, grad, norm, _) in groups {
                adam.step_clipped_by(params, grad, norm, cfg.max_grad_norm() as f32);
            }
            stats.phases.optimizer += clock.elapsed().as_secs_f64();
        }
    }
    Ok(stats)
}
