//! A trained policy deciding for a batch, as the trainer evaluates it: the features normalised
//! and rounded to `f32`, both networks run on them, each discrete element's most likely label
//! (or, given a generator, a label drawn from its softmax), and each continuous element's raw
//! output for its regime squashed into its bounds or its chosen piece's bounds ([`squash`]).
//! The same arithmetic in the same order as `train::rollout` in `Mode::Greedy`, so the figures
//! are bit for bit the trainer's; `tests/inspect.rs` holds them to it.

use rand::rngs::ChaCha8Rng;

use super::Explained;
use crate::backend::Batch;
use crate::ir::Module;
use crate::nn::mlp::Tape;
use crate::random::unit;
use crate::sim::protocol::{Batched, Decide};
use crate::train::TrainError;
use crate::train::policy::{Choice, Nets, each_choice};
use crate::train::spec::{RegimeSource, Spec, squash};

/// The networks of a checkpoint deciding for a batch.
pub struct Greedy<'a> {
    module: &'a Module,
    spec: &'a Spec,
    nets: &'a Nets,
    center: Vec<f64>,
    scale: Vec<f64>,
    /// Draws labels from the softmax instead of taking the most likely one.
    sample: Option<ChaCha8Rng>,
    /// This period's log-probabilities of every label, rows × logits, and continuous outputs.
    log_probs: Vec<f64>,
    outputs: Vec<f32>,
}

impl<'a> Greedy<'a> {
    pub fn new(module: &'a Module, spec: &'a Spec, nets: &'a Nets, sample: Option<ChaCha8Rng>) -> Greedy<'a> {
        let (center, scale) = (nets.normalizer.center(), nets.normalizer.scale());
        Greedy { module, spec, nets, center, scale, sample, log_probs: Vec::new(), outputs: Vec::new() }
    }

    /// The normalised features of every row, rows × features, as the networks read them.
    fn features(&self, batch: &Batch) -> Vec<f32> {
        let f = self.spec.features;
        let mut out = vec![0.0f32; batch.size * f];
        for b in 0..batch.size {
            let mut k = 0;
            for &(id, len) in &self.spec.observe {
                for (j, &v) in batch.get(id, b).iter().enumerate().take(len) {
                    out[b * f + k + j] = ((v - self.center[k + j]) / self.scale[k + j]) as f32;
                }
                k += len;
            }
        }
        out
    }
}

impl Decide<Batched<'_>> for Greedy<'_> {
    type Error = TrainError;

    fn discrete(&mut self, world: &mut Batched<'_>, _period: usize) -> Result<(), TrainError> {
        let (spec, nets) = (self.spec, self.nets);
        let batch = &mut world.batch;
        let rows = batch.size;
        let x = self.features(batch);
        let mut tape = Tape::default();
        self.outputs =
            if spec.outputs > 0 { nets.continuous.forward(&x, rows, &mut tape).to_vec() } else { Vec::new() };
        self.log_probs = vec![0.0; rows * spec.logits];
        if spec.logits == 0 {
            return Ok(());
        }
        let logits = nets.discrete.forward(&x, rows, &mut tape).to_vec();
        let mut lp = Vec::new();
        for b in 0..rows {
            each_choice(spec, &logits, b, &mut lp, |Choice { head, k, start, log_probs: lp, .. }| {
                let label = match self.sample.as_mut() {
                    None => (0..head.labels).fold(0, |best, l| if lp[l] > lp[best] { l } else { best }),
                    Some(rng) => {
                        let mut u = unit(rng);
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
                self.log_probs[start..start + head.labels].copy_from_slice(&lp[..head.labels]);
                batch.get_mut(head.buffer, b)[k] = label as f64;
            });
        }
        Ok(())
    }

    fn continuous(&mut self, world: &mut Batched<'_>, t: usize) -> Result<(), TrainError> {
        let (module, spec, batch) = (self.module, self.spec, &mut world.batch);
        if spec.outputs == 0 {
            return Ok(());
        }
        for b in 0..batch.size {
            for head in &spec.continuous {
                for k in 0..head.len {
                    let active = head.mask.is_none_or(|m| batch.get(m, b)[k] != 0.0);
                    let value = if active {
                        let regime = match head.regime {
                            RegimeSource::None => 0,
                            RegimeSource::Shared { buffer, .. } => batch.get(buffer, b)[0] as usize,
                            RegimeSource::Elementwise { buffer, .. } => batch.get(buffer, b)[k] as usize,
                        };
                        let raw = self.outputs[b * spec.outputs + head.offset + k * head.regime.labels() + regime];
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
                        squash(raw as f64, lo, hi, head.scale, head.shift).0
                    } else {
                        0.0
                    };
                    batch.get_mut(head.buffer, b)[k] = value;
                }
            }
        }
        Ok(())
    }
}

impl Explained<Batched<'_>> for Greedy<'_> {
    /// The softmax of each discrete element's logits.
    fn probabilities(&self, _world: &Batched<'_>, row: usize, out: &mut Vec<f64>) {
        let logits = self.spec.logits;
        out.extend(self.log_probs[row * logits..(row + 1) * logits].iter().map(|lp| lp.exp()));
    }
}
