//! What the networks see and produce for a module: the feature vector built from `observe`, the
//! discrete heads (one categorical per element of each discrete action), and the continuous head
//! (one raw output per element of each continuous action and per regime it is chosen in),
//! squashed into the action's bounds.

use crate::ir::{BufferId, BufferKind, Module};

/// A discrete action: `len` independent categoricals over `labels` labels each.
#[derive(Clone, Debug)]
pub struct DiscreteHead {
    pub buffer: BufferId,
    pub len: usize,
    pub labels: usize,
    /// The first logit of this action in the discrete network's output.
    pub offset: usize,
}

/// Where the regime of a continuous action comes from: its raw output is chosen by the label of
/// a discrete action, either one shared by all elements or one per element.
#[derive(Clone, Copy, Debug)]
pub enum RegimeSource {
    /// One output per element: the action acts in one regime, or in all alike.
    None,
    /// A shared (scalar) discrete action: one output per element and label.
    Shared { buffer: BufferId, labels: usize },
    /// A discrete action with the same elements (e.g. `q.piece`): one output per element and label.
    Elementwise { buffer: BufferId, labels: usize },
}

impl RegimeSource {
    pub fn labels(self) -> usize {
        match self {
            RegimeSource::None => 1,
            RegimeSource::Shared { labels, .. } | RegimeSource::Elementwise { labels, .. } => labels,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ContinuousHead {
    pub buffer: BufferId,
    pub len: usize,
    pub regime: RegimeSource,
    /// The bounds the action is squashed into: piece bounds when the action has them, else its
    /// bounds; `None` for no bound on that side.
    pub lower: Option<BufferId>,
    pub upper: Option<BufferId>,
    /// Where the action acts (its `when`), if not everywhere.
    pub mask: Option<BufferId>,
    /// The first raw output of this action in the continuous network's output.
    pub offset: usize,
    /// Multiplies a softplus on a half-line and the raw output on the whole line, so that the
    /// first actions have a sensible size (unused on an interval).
    pub scale: f64,
    /// Added to the raw output inside a softplus on a half-line (0 for other actions).
    pub shift: f64,
}

#[derive(Clone, Debug)]
pub struct Spec {
    /// Observed buffers and their element counts, in feature order.
    pub observe: Vec<(BufferId, usize)>,
    pub features: usize,
    pub discrete: Vec<DiscreteHead>,
    pub logits: usize,
    pub continuous: Vec<ContinuousHead>,
    pub outputs: usize,
    pub costs: Vec<BufferId>,
    /// (next state, state) pairs.
    pub next: Vec<(BufferId, BufferId)>,
    pub noise: Vec<BufferId>,
}

impl Spec {
    pub fn of(module: &Module) -> Spec {
        let observe: Vec<(BufferId, usize)> = module.observe.iter().map(|&id| (id, module.len(id))).collect();
        let features = observe.iter().map(|(_, n)| n).sum();
        let mut discrete = Vec::new();
        let mut logits = 0;
        for (id, b) in module.buffers.iter().enumerate() {
            if b.kind == BufferKind::Discrete {
                let (len, labels) = (module.len(id), b.labels.len().max(1));
                discrete.push(DiscreteHead { buffer: id, len, labels, offset: logits });
                logits += len * labels;
            }
        }
        let find = |kind: BufferKind| module.buffers.iter().position(|b| b.kind == kind);
        let shared: Vec<&DiscreteHead> = discrete.iter().filter(|d| d.len == 1).collect();
        let mut continuous = Vec::new();
        let mut outputs = 0;
        for (id, b) in module.buffers.iter().enumerate() {
            if b.kind != BufferKind::Continuous {
                continue;
            }
            let piece_lo = find(BufferKind::PieceBound { action: id, upper: false });
            let piece_hi = find(BufferKind::PieceBound { action: id, upper: true });
            let mask = find(BufferKind::Regime { action: id });
            let piece_action = module
                .buffers
                .iter()
                .position(|d| d.kind == BufferKind::Discrete && d.name == format!("{}.piece", b.name));
            let regime = match (piece_action, shared.as_slice()) {
                (Some(p), _) => RegimeSource::Elementwise { buffer: p, labels: module.buffers[p].labels.len() },
                (None, [only]) if mask.is_none() && discrete.len() == 1 => {
                    RegimeSource::Shared { buffer: only.buffer, labels: only.labels }
                }
                _ => RegimeSource::None,
            };
            let (lower, upper) = if piece_lo.is_some() || piece_hi.is_some() {
                (piece_lo, piece_hi)
            } else {
                (
                    find(BufferKind::Bound { action: id, upper: false }),
                    find(BufferKind::Bound { action: id, upper: true }),
                )
            };
            let len = module.len(id);
            continuous.push(ContinuousHead {
                buffer: id,
                len,
                regime,
                lower,
                upper,
                mask,
                offset: outputs,
                scale: 1.0,
                shift: 0.0,
            });
            outputs += len * regime.labels();
        }
        let costs = module.costs().map(|(id, _)| id).collect();
        let next = module.next_states();
        let noise = module.buffers_of(|k| *k == BufferKind::Noise).map(|(id, _)| id).collect();
        Spec { observe, features, discrete, logits, continuous, outputs, costs, next, noise }
    }
}

/// Puts a raw output `z` into `[lo, hi]`: a sigmoid on a finite interval, a scaled and shifted
/// softplus on a half-line, the scaled raw output on the whole line. Returns the value and its
/// derivative in `z`.
pub fn squash(z: f64, lo: f64, hi: f64, scale: f64, shift: f64) -> (f64, f64) {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    match (lo.is_finite(), hi.is_finite()) {
        (true, true) => {
            let s = sigmoid(z);
            (lo + (hi - lo) * s, (hi - lo) * s * (1.0 - s))
        }
        (true, false) => (lo + scale * softplus(z + shift), scale * sigmoid(z + shift)),
        (false, true) => (hi - scale * softplus(shift - z), scale * sigmoid(shift - z)),
        (false, false) => (scale * z, scale),
    }
}

/// The derivatives of [`squash`]'s value in its bounds, `(d/d lo, d/d hi)`: how a continuous
/// action moves when a bound that reads the state moves (0 for an infinite bound).
pub fn squash_bounds_slopes(z: f64, lo: f64, hi: f64) -> (f64, f64) {
    match (lo.is_finite(), hi.is_finite()) {
        (true, true) => {
            let s = 1.0 / (1.0 + (-z).exp());
            (1.0 - s, s)
        }
        (true, false) => (1.0, 0.0),
        (false, true) => (0.0, 1.0),
        (false, false) => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::{squash, squash_bounds_slopes};

    #[test]
    fn bound_slopes_match_finite_differences() {
        let inf = f64::INFINITY;
        for (lo, hi) in [(0.0, 10.0), (2.0, inf), (-inf, 5.0), (-inf, inf), (-3.0, 0.5)] {
            for z in [-8.0, -0.3, 0.0, 1.1, 6.0] {
                let (dlo, dhi) = squash_bounds_slopes(z, lo, hi);
                let h = 1e-6;
                let value = |lo: f64, hi: f64| squash(z, lo, hi, 7.0, 1.0).0;
                let fd_lo = if lo.is_finite() { (value(lo + h, hi) - value(lo - h, hi)) / (2.0 * h) } else { 0.0 };
                let fd_hi = if hi.is_finite() { (value(lo, hi + h) - value(lo, hi - h)) / (2.0 * h) } else { 0.0 };
                assert!((fd_lo - dlo).abs() < 1e-6 && (fd_hi - dhi).abs() < 1e-6, "z {z} [{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn squash_derivatives_match_finite_differences() {
        let inf = f64::INFINITY;
        for (lo, hi) in [(0.0, 10.0), (0.0, inf), (-inf, 5.0), (-inf, inf), (100.0, 500.0)] {
            for z in [-30.0, -2.0, -0.1, 0.0, 0.7, 3.0, 25.0] {
                let (v, d) = squash(z, lo, hi, 7.0, 1.0);
                assert!(v >= lo && v <= hi, "{v} outside [{lo}, {hi}]");
                let h = 1e-6;
                let fd = (squash(z + h, lo, hi, 7.0, 1.0).0 - squash(z - h, lo, hi, 7.0, 1.0).0) / (2.0 * h);
                assert!((fd - d).abs() <= 1e-6 * d.abs().max(1.0), "z {z} [{lo}, {hi}]: {d} vs {fd}");
            }
        }
    }

    /// On a half-line the first actions (raw output 0) are `softplus(shift)` scales from the
    /// bound: 1.31 with the default shift, on either side.
    #[test]
    fn the_shift_moves_the_first_actions_away_from_the_bound() {
        let first = |lo, hi| squash(0.0, lo, hi, 10.0, 1.0).0;
        assert!((first(2.0, f64::INFINITY) - (2.0 + 10.0 * 1.0f64.exp().ln_1p())).abs() < 1e-12);
        assert!((first(f64::NEG_INFINITY, 2.0) - (2.0 - 10.0 * 1.0f64.exp().ln_1p())).abs() < 1e-12);
        assert_eq!(squash(0.3, 0.0, 4.0, 10.0, 1.0), squash(0.3, 0.0, 4.0, 10.0, 0.0), "an interval is not shifted");
    }
}
