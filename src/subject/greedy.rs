//! A trained policy deciding for a batch is the trainer's own decider,
//! [`crate::train::rollout::Networks`]: greedily (`Mode::Greedy`: each discrete element's most
//! likely label, the networks' continuous actions squashed into their bounds), or, given a
//! generator, drawing the labels from their softmax (`Mode::Sample`, for `act --seed`). So a
//! subject's figures are bit for bit the trainer's evaluations; `tests/inspect.rs` holds them to
//! it. What a trajectory reads besides (the probability of every label) is kept by
//! [`Networks::explained`].

use rand::rngs::ChaCha8Rng;

use super::Explained;
use crate::sim::protocol::Batched;
use crate::train::policy::Nets;
use crate::train::rollout::{Context, Mode, Networks};

/// The networks of a checkpoint deciding for a batch, keeping the probabilities of their
/// labels: greedily, or with `sample`, drawing the labels from it.
pub fn decider<'a, 'r>(
    ctx: &'a Context<'a>,
    nets: &'a Nets,
    sample: bool,
    rng: &'r mut ChaCha8Rng,
) -> Networks<'a, 'r> {
    Networks::new(ctx, nets, if sample { Mode::Sample } else { Mode::Greedy }, rng).explained()
}

impl Explained<Batched<'_>> for Networks<'_, '_> {
    /// The softmax of each discrete element's logits.
    fn probabilities(&self, _world: &Batched<'_>, row: usize, out: &mut Vec<f64>) {
        out.extend(self.label_log_probs(row).iter().map(|lp| lp.exp()));
    }
}
