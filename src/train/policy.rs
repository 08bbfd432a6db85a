//! The policy: a discrete network (one softmax per discrete action element, zero-initialised so
//! it starts uniform), a continuous network (one raw output per continuous action element and
//! regime, squashed into the action's bounds), a value network, and the running normalisation of
//! the features they read.

use rand::rngs::ChaCha8Rng;

use super::spec::{DiscreteHead, Spec};
use crate::nn::mlp::Mlp;

/// The centre and scale of each feature, fixed before training from the train set's initial
/// observations, so that the function the networks learn never shifts under them. A feature
/// that does not vary at the start (an inventory that starts empty, a parameter) is not centred
/// and is scaled by the model's typical size instead (the mean |noise|), so that what it later
/// grows to stays in the range where `tanh` is not saturated, and a constant stays what it is
/// relative to the others: the reference feeds its parameters to the networks as they are, and
/// centring them to 0 left every hidden unit exactly 0 in the first state, which slowed the
/// start of training (measured on the inventory model).
#[derive(Clone, Debug)]
pub struct Normalizer {
    pub enabled: bool,
    /// 0 before the statistics are set.
    pub count: f64,
    pub mean: Vec<f64>,
    /// The variance of each feature (stored as `m2` in checkpoints).
    pub m2: Vec<f64>,
}

impl Normalizer {
    pub fn new(features: usize, enabled: bool) -> Normalizer {
        Normalizer { enabled, count: 0.0, mean: vec![0.0; features], m2: vec![0.0; features] }
    }

    /// The divisor of each feature: its standard deviation, or 1 while unknown or constant.
    pub fn scale(&self) -> Vec<f64> {
        if !self.enabled || self.count == 0.0 {
            return vec![1.0; self.mean.len()];
        }
        self.m2.iter().map(|v| v.sqrt()).map(|s| if s > 1e-8 { s } else { 1.0 }).collect()
    }

    pub fn center(&self) -> Vec<f64> {
        if !self.enabled || self.count == 0.0 { vec![0.0; self.mean.len()] } else { self.mean.clone() }
    }

    /// Sets the statistics from rows of raw features; `typical` scales features that do not vary.
    pub fn fit(&mut self, rows: &[f64], features: usize, typical: f64) {
        if !self.enabled || features == 0 || features != self.mean.len() || rows.len() < features {
            return;
        }
        let n = (rows.len() / features) as f64;
        for k in 0..features {
            let mean = rows.iter().skip(k).step_by(features).sum::<f64>() / n;
            let var = rows.iter().skip(k).step_by(features).map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            let varies = var > 1e-12 * mean.abs().max(1.0).powi(2);
            self.mean[k] = if varies { mean } else { 0.0 };
            self.m2[k] = if varies { var } else { typical * typical };
        }
        self.count = n;
    }
}

/// Everything that is learned.
#[derive(Clone)]
pub struct Nets {
    pub discrete: Mlp,
    pub continuous: Mlp,
    pub value: Mlp,
    /// PPO's state-independent log standard deviation, one per continuous output.
    pub log_std: Vec<f32>,
    pub normalizer: Normalizer,
}

impl Nets {
    pub fn new(spec: &Spec, hidden: &[usize], normalize: bool, rng: &mut ChaCha8Rng) -> Nets {
        let sizes = |out: usize| {
            let mut s = vec![spec.features.max(1)];
            s.extend_from_slice(hidden);
            s.push(out.max(1));
            s
        };
        Nets {
            // Zero head: every label equally likely at first.
            discrete: Mlp::new(&sizes(spec.logits), 0.0, rng),
            continuous: Mlp::new(&sizes(spec.outputs), 0.01, rng),
            // The value of a state depends on the periods left, which the policy's features need
            // not say: the value network reads the period too (`value_reads_time`).
            value: Mlp::new(&{ [&[spec.features.max(1) + 1][..], hidden, &[1]].concat() }, 1.0, rng),
            log_std: vec![0.0; spec.outputs],
            normalizer: Normalizer::new(spec.features, normalize),
        }
    }

    /// Whether the value network reads, after the features, the period as a fraction of the
    /// horizon. Networks from before it did (a checkpoint of an older run) read the features
    /// alone.
    pub fn value_reads_time(&self) -> bool {
        self.value.inputs() == self.discrete.inputs() + 1
    }

    /// The value network's inputs for `rows` rows of `features`: each row, followed, when it
    /// reads it, by the row's period as a fraction of the horizon, `time(row)`.
    pub fn value_inputs(&self, features: &[f32], rows: usize, time: impl Fn(usize) -> f32) -> Vec<f32> {
        if !self.value_reads_time() || rows == 0 {
            return features.to_vec();
        }
        let f = features.len() / rows;
        let mut out = Vec::with_capacity(rows * (f + 1));
        for row in 0..rows {
            out.extend_from_slice(&features[row * f..(row + 1) * f]);
            out.push(time(row));
        }
        out
    }

    /// A value network of this one's layers that reads the features alone, as a checkpoint
    /// written before it read the period holds it (zeros, for its weights to be read there).
    pub fn value_without_time(&self) -> Mlp {
        let mut sizes = self.value.sizes().to_vec();
        sizes[0] = self.discrete.inputs();
        Mlp::zeros(&sizes)
    }
}

/// One discrete choice of a row of the discrete network's output: its head, its element `k` in
/// the head, its position `e` among the row's choices, where its logits start in the output,
/// and their log-softmax.
pub struct Choice<'a> {
    pub head: &'a DiscreteHead,
    pub k: usize,
    pub e: usize,
    pub start: usize,
    pub log_probs: &'a [f64],
}

/// Calls `f` on every discrete choice of row `row` of `logits`, in order; `scratch` holds the
/// log-probabilities between calls.
pub fn each_choice(spec: &Spec, logits: &[f32], row: usize, scratch: &mut Vec<f64>, mut f: impl FnMut(Choice<'_>)) {
    let mut e = 0;
    for head in &spec.discrete {
        scratch.resize(head.labels, 0.0);
        for k in 0..head.len {
            let start = row * spec.logits + head.offset + k * head.labels;
            log_softmax(&logits[start..start + head.labels], scratch);
            f(Choice { head, k, e, start, log_probs: scratch });
            e += 1;
        }
    }
}

/// `log softmax(logits)` of one categorical.
pub fn log_softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_sum = sum.ln() + max;
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = x as f64 - log_sum;
    }
}
