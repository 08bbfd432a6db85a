//! Adam and gradient-norm clipping over flat parameter slices.
//!
//! The trainer keeps one [`Adam`] per network. Before a step it takes every network's gradient
//! [`norm`] (a non-finite one stops training before any network moves), then steps each with
//! [`Adam::step_clipped_by`], which clips the gradient to a norm of at most 5 inside the Adam pass
//! (the HPO reference clips per parameter group at norm 5, `hpo-paper.md` §3.3). Both follow
//! PyTorch's definitions ([`clip_grad_norm`] is the separate clipping, kept as the definition the
//! folded one is tested against), so hyper-parameters carry over.

use rayon::prelude::*;

/// Adam with bias correction (Kingma & Ba), as `torch.optim.Adam` and `optax.adam` define it:
/// `p ← p − lr · m̂ / (√v̂ + eps)`.
#[derive(Clone, Debug)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// 1e-5 by default, the HPO reference's value (PyTorch's default is 1e-8).
    pub eps: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    steps: u32,
}

impl Adam {
    /// An optimiser for `len` parameters with β = (0.9, 0.999) and eps = 1e-5.
    pub fn new(len: usize, lr: f32) -> Adam {
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-5, m: vec![0.0; len], v: vec![0.0; len], steps: 0 }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The first and second moment estimates, for a checkpoint to keep.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Puts back the state a checkpoint kept: the moments and the number of steps taken, so the
    /// next step is the one an uninterrupted run would take. Refuses moments of another length.
    pub fn restore(&mut self, m: &[f32], v: &[f32], steps: u32) -> Result<(), String> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(format!("Adam over {} parameters was given {} and {} moments", self.m.len(), m.len(), v.len()));
        }
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        self.steps = steps;
        Ok(())
    }

    /// One step of `params` against `grad` (the gradient of the loss to minimise).
    ///
    /// Panics if the slices are not as long as the optimiser's state.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        self.step_scaled(params, grad, None);
    }

    /// [`clip_grad_norm`] followed by [`Adam::step`], in one pass over the gradient instead of
    /// two, with the same result; `grad` is left unscaled. Returns the norm before clipping.
    pub fn step_clipped(&mut self, params: &mut [f32], grad: &[f32], max_norm: f32) -> f32 {
        let norm = norm(grad);
        self.step_clipped_by(params, grad, norm, max_norm);
        norm
    }

    /// [`Adam::step_clipped`] with the gradient's norm already known (from [`norm`]), for a
    /// caller that looks at the norms of several gradients before stepping any of them.
    pub fn step_clipped_by(&mut self, params: &mut [f32], grad: &[f32], norm: f32, max_norm: f32) {
        let coef = max_norm / (norm + 1e-6);
        self.step_scaled(params, grad, (norm.is_finite() && coef < 1.0).then_some(coef));
    }

    /// One step against `grad`, each element multiplied by `scale` first when there is one.
    fn step_scaled(&mut self, params: &mut [f32], grad: &[f32], scale: Option<f32>) {
        assert!(
            params.len() == self.m.len() && grad.len() == self.m.len(),
            "Adam over {} parameters was given {} parameters and {} gradients",
            self.m.len(),
            params.len(),
            grad.len()
        );
        self.steps = self.steps.saturating_add(1);
        let t = self.steps as i32;
        // The corrections are computed in f64: 1 − 0.999ᵗ loses digits in f32 for small t.
        let correction1 = 1.0 - (self.beta1 as f64).powi(t);
        let correction2 = 1.0 - (self.beta2 as f64).powi(t);
        let step_size = (self.lr as f64 / correction1) as f32;
        let inv_sqrt_correction2 = (1.0 / correction2.sqrt()) as f32;
        let rule = Rule {
            b1: self.beta1,
            b2: self.beta2,
            eps: self.eps,
            step_size,
            inv_sqrt_correction2,
            // Multiplying by 1 is exact, so an unscaled step is the same as before clipping existed.
            scale: scale.unwrap_or(1.0),
        };
        // Element by element, so the result does not depend on how the chunks are shared out.
        params
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .for_each(|(((params, grad), m), v)| rule.apply(params, grad, m, v));
    }
}

/// One Adam step's constants.
#[derive(Clone, Copy)]
struct Rule {
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    inv_sqrt_correction2: f32,
    scale: f32,
}

impl Rule {
    /// The step on one chunk, vectorised for AVX-512 when the CPU has it. The arithmetic of each
    /// element is the same on both paths (no fused multiply-adds), so results do not depend on
    /// the CPU.
    fn apply(self, params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present.
            unsafe { self.apply_avx512(params, grad, m, v) };
            return;
        }
        self.apply_portable(params, grad, m, v);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn apply_avx512(self, params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_portable(params, grad, m, v);
    }

    /// Written over one index on slices cut to one length, which is what lets LLVM vectorise it.
    #[inline(always)]
    fn apply_portable(self, params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let n = params.len();
        let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let g = grad[i] * self.scale;
            let mi = self.b1 * m[i] + (1.0 - self.b1) * g;
            let vi = self.b2 * v[i] + (1.0 - self.b2) * g * g;
            m[i] = mi;
            v[i] = vi;
            params[i] -= self.step_size * mi / (vi.sqrt() * self.inv_sqrt_correction2 + self.eps);
        }
    }
}

/// Scales `grad` so that its Euclidean norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does, and returns the norm before clipping.
///
/// A non-finite norm is returned as it is and the gradient is left alone, so the caller can
/// tell a diverged step from a large one.
pub fn clip_grad_norm(grad: &mut [f32], max_norm: f32) -> f32 {
    let norm = norm(grad);
    // PyTorch's 1e-6 keeps the clipped norm just under max_norm.
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        grad.par_chunks_mut(CHUNK).for_each(|chunk| chunk.iter_mut().for_each(|g| *g *= coef));
    }
    norm
}

/// The Euclidean norm, from partial sums per chunk added in chunk order: the same on any number
/// of threads. The squares are summed in f64, where no f32 value's square overflows, so the norm
/// is finite when every element is, unless it is beyond f32's range (3.4e38).
pub fn norm(grad: &[f32]) -> f32 {
    let partial: Vec<f64> = grad.par_chunks(CHUNK).map(sum_of_squares).collect();
    partial.iter().sum::<f64>().sqrt() as f32
}

/// Elements per parallel task: large enough that the task costs more than handing it out.
const CHUNK: usize = 1 << 14;

/// `Σ g²` in f64, over 8 interleaved accumulators so the adds do not wait on each other.
fn sum_of_squares(chunk: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (eights, rest) = chunk.as_chunks::<8>();
    for eight in eights {
        for (a, &g) in acc.iter_mut().zip(eight) {
            *a += g as f64 * g as f64;
        }
    }
    for (a, &g) in acc.iter_mut().zip(rest) {
        *a += g as f64 * g as f64;
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_takes_the_hand_computed_steps() {
        // lr 0.1, β (0.9, 0.999), eps 1e-5, from p = (1, −2).
        // Step 1, g = (0.5, −1): m = (0.05, −0.1), v = (2.5e-4, 1e-3), m̂ = g, √v̂ = |g|, so
        //   p = (1 − 0.1·0.5/0.50001, −2 + 0.1·1/1.00001) = (0.90000200, −1.90000100).
        // Step 2, g = (0.1, 0.2): m = (0.055, −0.07), v = (2.5975e-4, 1.039e-3),
        //   m̂ = m/0.19, v̂ = v/0.001999, p −= 0.1·m̂/(√v̂ + 1e-5) = (0.81970013, −1.84889910).
        let mut adam = Adam::new(2, 0.1);
        let mut p = [1.0f32, -2.0];
        adam.step(&mut p, &[0.5, -1.0]);
        assert!((p[0] - 0.900_002).abs() < 1e-6 && (p[1] + 1.900_001).abs() < 1e-6, "after step 1: {p:?}");
        adam.step(&mut p, &[0.1, 0.2]);
        assert!((p[0] - 0.819_700_1).abs() < 1e-6 && (p[1] + 1.848_899_1).abs() < 1e-6, "after step 2: {p:?}");
        assert_eq!(adam.steps(), 2);
    }

    #[test]
    fn a_clipped_step_is_clipping_then_a_step() {
        let grad: Vec<f32> = (0..40_000).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.4).collect();
        for max_norm in [1.0, 1e6] {
            let (mut a, mut b) = (Adam::new(grad.len(), 1e-3), Adam::new(grad.len(), 1e-3));
            let (mut p, mut q) = (vec![0.5f32; grad.len()], vec![0.5f32; grad.len()]);
            for _ in 0..3 {
                let mut clipped = grad.clone();
                let n1 = clip_grad_norm(&mut clipped, max_norm);
                a.step(&mut p, &clipped);
                let n2 = b.step_clipped(&mut q, &grad, max_norm);
                assert_eq!(n1, n2);
            }
            assert_eq!(p, q, "max norm {max_norm}");
        }
    }

    #[test]
    fn clipping_scales_down_only_gradients_over_the_limit() {
        let mut g = [3.0f32, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6, "{g:?}");
        let mut small = [0.3f32, 0.4];
        assert!((clip_grad_norm(&mut small, 1.0) - 0.5).abs() < 1e-7);
        assert_eq!(small, [0.3, 0.4]);
        let mut diverged = [f32::NAN, 1.0];
        assert!(clip_grad_norm(&mut diverged, 1.0).is_nan());
        assert_eq!(diverged[1], 1.0);
    }
}
