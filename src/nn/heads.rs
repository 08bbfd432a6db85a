//! What turns network outputs into actions: a categorical distribution over discrete choices, a
//! diagonal Gaussian over raw continuous outputs, and the squashes that put a raw output inside
//! an action's bounds. Each comes with its derivatives, written out and tested against finite
//! differences, so the trainer can form score-function and pathwise gradients without autodiff.
//!
//! The functions work on one row (one scenario's outputs). Gradient functions **add**
//! `scale · gradient` into their output slices: the trainer weights several loss terms (policy,
//! entropy bonus) into one `dL/dlogits` and hands that to [`super::mlp::Mlp::backward`].
//! Log-probabilities and entropies are summed in f64 and returned as f64, because PPO's ratio
//! `exp(log π − log π_old)` amplifies their rounding error.

/// The log-probabilities of a categorical distribution with these logits (a stable
/// log-softmax), written into `log_probs`. A logit of −∞ masks its choice out: its
/// probability is 0 and the others are renormalised. If every choice is masked, the
/// log-probabilities are NaN.
///
/// Panics if the slices differ in length.
pub fn log_softmax(logits: &[f32], log_probs: &mut [f32]) {
    assert_eq!(logits.len(), log_probs.len(), "log_softmax: logits and log_probs differ in length");
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    if max == f64::NEG_INFINITY {
        log_probs.fill(f32::NAN);
        return;
    }
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    for (lp, &l) in log_probs.iter_mut().zip(logits) {
        *lp = (l as f64 - log_sum) as f32;
    }
}

/// The choice whose cumulative probability first exceeds `u`, for `u` uniform on `[0, 1)`:
/// a sample by inversion, so a fixed `u` gives a reproducible choice. Rounding can leave the
/// total probability a little under 1; a `u` past it picks the last possible choice.
/// Returns 0 for an empty row.
pub fn categorical_sample(log_probs: &[f32], u: f64) -> usize {
    let mut cumulative = 0.0;
    let mut last_possible = 0;
    for (i, &lp) in log_probs.iter().enumerate() {
        let p = (lp as f64).exp();
        if p > 0.0 {
            cumulative += p;
            last_possible = i;
            if u < cumulative {
                return i;
            }
        }
    }
    last_possible
}

/// The most probable choice (the first one on ties): the greedy action at evaluation.
pub fn categorical_mode(log_probs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &lp) in log_probs.iter().enumerate() {
        if lp > log_probs[best] {
            best = i;
        }
    }
    best
}

/// The entropy `−Σ p log p`; masked choices contribute 0.
pub fn categorical_entropy(log_probs: &[f32]) -> f64 {
    log_probs
        .iter()
        .map(|&lp| {
            let lp = lp as f64;
            let p = lp.exp();
            if p > 0.0 { -p * lp } else { 0.0 }
        })
        .sum()
}

/// Adds `scale · ∂ log p(choice) / ∂ logits` into `dlogits`; that gradient is `onehot − p`.
///
/// Panics if the slices differ in length or `choice` is out of range.
pub fn categorical_log_prob_grad(log_probs: &[f32], choice: usize, scale: f32, dlogits: &mut [f32]) {
    assert_eq!(log_probs.len(), dlogits.len(), "categorical_log_prob_grad: slices differ in length");
    assert!(choice < log_probs.len(), "categorical_log_prob_grad: choice {choice} of {}", log_probs.len());
    for (i, (d, &lp)) in dlogits.iter_mut().zip(log_probs).enumerate() {
        let onehot = if i == choice { 1.0 } else { 0.0 };
        *d += scale * (onehot - (lp as f64).exp()) as f32;
    }
}

/// Adds `scale · ∂H / ∂ logits` into `dlogits`, where `∂H/∂logit_j = −p_j (log p_j + H)`.
///
/// Panics if the slices differ in length.
pub fn categorical_entropy_grad(log_probs: &[f32], scale: f32, dlogits: &mut [f32]) {
    assert_eq!(log_probs.len(), dlogits.len(), "categorical_entropy_grad: slices differ in length");
    let entropy = categorical_entropy(log_probs);
    for (d, &lp) in dlogits.iter_mut().zip(log_probs) {
        let lp = lp as f64;
        let p = lp.exp();
        // A masked choice (p = 0, log p = −∞) has no gradient, not 0 · ∞.
        if p > 0.0 {
            *d += scale * (-p * (lp + entropy)) as f32;
        }
    }
}

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// `log N(z | mean, diag(exp(log_std))²)`, summed over the dimensions. The standard deviation
/// is a separate parameter vector, not a network output (the HPO reference's state-independent
/// log-std; clamp it to `[−20, 2]` before calling, as the reference does).
///
/// Panics if the slices differ in length.
pub fn gaussian_log_prob(z: &[f32], mean: &[f32], log_std: &[f32]) -> f64 {
    assert!(z.len() == mean.len() && z.len() == log_std.len(), "gaussian_log_prob: slices differ in length");
    z.iter()
        .zip(mean)
        .zip(log_std)
        .map(|((&z, &mean), &log_std)| {
            let u = (z as f64 - mean as f64) / (log_std as f64).exp();
            -0.5 * u * u - log_std as f64 - HALF_LN_2PI
        })
        .sum()
}

/// Adds `scale ·` the gradients of [`gaussian_log_prob`] into `dmean` and `dlog_std`:
/// `∂/∂mean = (z − mean)/σ²` and `∂/∂log σ = ((z − mean)/σ)² − 1`.
///
/// Panics if the slices differ in length.
pub fn gaussian_log_prob_grad(
    z: &[f32],
    mean: &[f32],
    log_std: &[f32],
    scale: f32,
    dmean: &mut [f32],
    dlog_std: &mut [f32],
) {
    let n = z.len();
    assert!(
        mean.len() == n && log_std.len() == n && dmean.len() == n && dlog_std.len() == n,
        "gaussian_log_prob_grad: slices differ in length"
    );
    for ((((&z, &mean), &log_std), dmean), dlog_std) in z.iter().zip(mean).zip(log_std).zip(dmean).zip(dlog_std) {
        let sigma = (log_std as f64).exp();
        let u = (z as f64 - mean as f64) / sigma;
        *dmean += scale * (u / sigma) as f32;
        *dlog_std += scale * (u * u - 1.0) as f32;
    }
}

/// The entropy of the diagonal Gaussian, `Σ (log σ + ½ log 2πe)`; its gradient with respect to
/// each `log σ` is 1.
pub fn gaussian_entropy(log_std: &[f32]) -> f64 {
    log_std.iter().map(|&s| s as f64 + HALF_LN_2PI + 0.5).sum()
}

/// `z = mean + σ·noise` for standard normal `noise`, the reparameterised sample.
///
/// Panics if the slices differ in length.
pub fn gaussian_sample(mean: &[f32], log_std: &[f32], noise: &[f32], z: &mut [f32]) {
    let n = z.len();
    assert!(mean.len() == n && log_std.len() == n && noise.len() == n, "gaussian_sample: slices differ in length");
    for (((z, &mean), &log_std), &noise) in z.iter_mut().zip(mean).zip(log_std).zip(noise) {
        *z = mean + log_std.exp() * noise;
    }
}

/// Puts a raw output `z` inside the bounds `[lo, hi]` and returns the value and `d value / dz`:
/// `lo + (hi − lo)·sigmoid(z)` when both bounds are finite, `lo + softplus(z)` when only `lo`
/// is, `hi − softplus(−z)` when only `hi` is, and `z` itself when the action is unbounded
/// (`lo = −∞`, `hi = +∞`). Every branch is increasing and smooth, so the pathwise gradient
/// flows through it; the derivative is computed without cancellation, so it decays smoothly
/// instead of dropping to 0 far from the bounds. Expects `lo ≤ hi`.
pub fn squash(z: f64, lo: f64, hi: f64) -> (f64, f64) {
    match (lo == f64::NEG_INFINITY, hi == f64::INFINITY) {
        (false, false) => {
            let width = hi - lo;
            (lo + width * sigmoid(z), width * sigmoid(z) * sigmoid(-z))
        }
        (false, true) => (lo + softplus(z), sigmoid(z)),
        (true, false) => (hi - softplus(-z), sigmoid(-z)),
        (true, true) => (z, 1.0),
    }
}

/// `1 / (1 + e^−z)`, without overflow for large `|z|`.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + e^z)`, without overflow for large `z` or loss of digits for very negative `z`.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central difference of `f` at `x[i]` for f32 inputs, dividing by the step actually taken.
    fn central(x: &[f32], i: usize, h: f32, f: impl Fn(&[f32]) -> f64) -> f64 {
        let (mut plus, mut minus) = (x.to_vec(), x.to_vec());
        plus[i] += h;
        minus[i] -= h;
        (f(&plus) - f(&minus)) / (plus[i] as f64 - minus[i] as f64)
    }

    fn assert_close(got: f64, want: f64, tolerance: f64, what: &str) {
        assert!((got - want).abs() <= tolerance * (1.0 + want.abs()), "{what}: {got} vs {want}");
    }

    fn log_probs(logits: &[f32]) -> Vec<f32> {
        let mut lp = vec![0.0; logits.len()];
        log_softmax(logits, &mut lp);
        lp
    }

    const LOGITS: [f32; 4] = [0.3, -1.2, 2.0, 0.5];

    #[test]
    fn log_softmax_is_normalised_stable_and_masks_minus_infinity() {
        let p: f64 = log_probs(&LOGITS).iter().map(|&lp| (lp as f64).exp()).sum();
        assert_close(p, 1.0, 1e-6, "total probability");
        let wide = log_probs(&[1000.0, 0.0, -1000.0]);
        assert_eq!(wide, [0.0, -1000.0, -2000.0]);
        let masked = log_probs(&[f32::NEG_INFINITY, 1.0, 1.0]);
        assert_eq!(masked[0], f32::NEG_INFINITY);
        assert_close(masked[1] as f64, -(2.0f64.ln()), 1e-7, "masked renormalisation");
        assert!(log_probs(&[f32::NEG_INFINITY; 2]).iter().all(|lp| lp.is_nan()));
    }

    #[test]
    fn sampling_inverts_the_cumulative_distribution() {
        let lp: Vec<f32> = [0.2f32, 0.5, 0.3].iter().map(|p| p.ln()).collect();
        let picks: Vec<usize> =
            [0.0, 0.19, 0.21, 0.69, 0.71, 0.999_999_9].iter().map(|&u| categorical_sample(&lp, u)).collect();
        assert_eq!(picks, [0, 0, 1, 1, 2, 2]);
        let masked = log_probs(&[f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]);
        assert!([0.0, 0.5, 0.999_999].iter().all(|&u| categorical_sample(&masked, u) == 1));
        assert_eq!(categorical_mode(&lp), 1);
    }

    #[test]
    fn entropy_of_a_uniform_distribution_is_log_k() {
        assert_close(categorical_entropy(&log_probs(&[0.7; 5])), 5f64.ln(), 1e-7, "entropy");
        let masked = log_probs(&[f32::NEG_INFINITY, 0.7, 0.7]);
        assert_close(categorical_entropy(&masked), 2f64.ln(), 1e-7, "masked entropy");
    }

    #[test]
    fn categorical_gradients_match_finite_differences() {
        for choice in 0..LOGITS.len() {
            let mut grad = vec![0.0; LOGITS.len()];
            categorical_log_prob_grad(&log_probs(&LOGITS), choice, 1.0, &mut grad);
            for (j, &g) in grad.iter().enumerate() {
                let fd = central(&LOGITS, j, 1e-3, |l| log_probs(l)[choice] as f64);
                assert_close(g as f64, fd, 1e-3, &format!("d log p({choice}) / d logit {j}"));
            }
        }
        // Adds, scaled: start from ones, scale by −2.
        let mut grad = vec![1.0; LOGITS.len()];
        categorical_entropy_grad(&log_probs(&LOGITS), -2.0, &mut grad);
        for (j, &g) in grad.iter().enumerate() {
            let fd = central(&LOGITS, j, 1e-3, |l| categorical_entropy(&log_probs(l)));
            assert_close(g as f64, 1.0 - 2.0 * fd, 1e-3, &format!("dH / d logit {j}"));
        }
    }

    #[test]
    fn masked_choices_get_no_gradient() {
        let lp = log_probs(&[f32::NEG_INFINITY, 0.3, -0.4]);
        let mut grad = vec![0.0; 3];
        categorical_entropy_grad(&lp, 1.0, &mut grad);
        categorical_log_prob_grad(&lp, 1, 1.0, &mut grad);
        assert_eq!(grad[0], 0.0);
        assert!(grad.iter().all(|g| g.is_finite()));
    }

    const Z: [f32; 3] = [0.4, -1.3, 2.2];
    const MEAN: [f32; 3] = [0.1, -0.2, 1.0];
    const LOG_STD: [f32; 3] = [0.0, -0.7, 0.5];

    #[test]
    fn gaussian_log_prob_matches_the_density() {
        let want: f64 = (0..3)
            .map(|i| {
                let sigma = (LOG_STD[i] as f64).exp();
                let u = (Z[i] - MEAN[i]) as f64 / sigma;
                (-0.5 * u * u).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
            })
            .map(f64::ln)
            .sum();
        assert_close(gaussian_log_prob(&Z, &MEAN, &LOG_STD), want, 1e-6, "log density");
        let entropy: f64 =
            LOG_STD.iter().map(|&s| 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + s as f64).sum();
        assert_close(gaussian_entropy(&LOG_STD), entropy, 1e-12, "entropy");
        let mut z = [0.0; 3];
        gaussian_sample(&MEAN, &LOG_STD, &[1.0, 0.0, -2.0], &mut z);
        assert_eq!(z, [MEAN[0] + 1.0, MEAN[1], MEAN[2] - 2.0 * LOG_STD[2].exp()]);
    }

    #[test]
    fn gaussian_gradients_match_finite_differences() {
        let (mut dmean, mut dlog_std) = (vec![0.5; 3], vec![0.5; 3]);
        gaussian_log_prob_grad(&Z, &MEAN, &LOG_STD, 3.0, &mut dmean, &mut dlog_std);
        for i in 0..3 {
            let fd_mean = central(&MEAN, i, 1e-3, |m| gaussian_log_prob(&Z, m, &LOG_STD));
            let fd_log_std = central(&LOG_STD, i, 1e-3, |s| gaussian_log_prob(&Z, &MEAN, s));
            assert_close(dmean[i] as f64, 0.5 + 3.0 * fd_mean, 1e-4, &format!("d/d mean {i}"));
            assert_close(dlog_std[i] as f64, 0.5 + 3.0 * fd_log_std, 1e-4, &format!("d/d log std {i}"));
        }
    }

    #[test]
    fn squash_derivatives_match_finite_differences_for_every_kind_of_bound() {
        let inf = f64::INFINITY;
        for (lo, hi) in [(0.0, 1.0), (-3.0, 5.0), (2.0, inf), (-inf, -1.0), (-inf, inf), (4.0, 4.0)] {
            for z in [-30.0, -4.0, -0.7, 0.0, 0.3, 2.5, 30.0] {
                let (value, slope) = squash(z, lo, hi);
                let h = 1e-6;
                let fd = (squash(z + h, lo, hi).0 - squash(z - h, lo, hi).0) / (2.0 * h);
                assert!((slope - fd).abs() <= 1e-6 * (1.0 + fd.abs()), "[{lo}, {hi}] at {z}: slope {slope}, fd {fd}");
                assert!(lo <= value && value <= hi, "[{lo}, {hi}] at {z}: {value} out of bounds");
            }
        }
    }

    #[test]
    fn squash_is_the_named_function_and_finite_far_out() {
        let (v, d) = squash(0.0, 2.0, 6.0);
        assert_eq!((v, d), (4.0, 1.0));
        let (v, d) = squash(0.0, 1.0, f64::INFINITY);
        assert_close(v, 1.0 + 2f64.ln(), 1e-15, "softplus(0)");
        assert_eq!(d, 0.5);
        assert_eq!(squash(-1.5, f64::NEG_INFINITY, f64::INFINITY), (-1.5, 1.0));
        for z in [-800.0, 800.0] {
            for (lo, hi) in [(0.0, 1.0), (0.0, f64::INFINITY), (f64::NEG_INFINITY, 0.0)] {
                let (v, d) = squash(z, lo, hi);
                assert!(v.is_finite() && d.is_finite() && d >= 0.0, "[{lo}, {hi}] at {z}: ({v}, {d})");
            }
        }
        // Far below a lower bound the value approaches it but the slope stays positive.
        assert!(squash(-30.0, 0.0, f64::INFINITY).1 > 0.0);
    }
}
