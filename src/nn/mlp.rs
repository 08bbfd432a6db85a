//! A multilayer perceptron with tanh hidden layers and a linear head, its parameters in one flat
//! vector, and a hand-written backward pass that takes the gradient on the outputs from outside.
//!
//! The trainer differentiates through the simulator and the policy step by step, so the network
//! must accept any `dL/dy` and return `dL/dx` (`rust-notes.md` §3). A [`Tape`] records the
//! activations of one [`Mlp::forward`] for the matching [`Mlp::backward`]; keep one tape per
//! work item and reuse it, since it only grows. Layer `l` computes `h_{l+1} = act(h_l·W_l + b_l)`
//! with `W_l` stored `fan_in × fan_out` row-major, so a batch is a row-major `rows × width`
//! matrix and the backward products are transposed views of the same buffers.

use super::aligned::AlignedVec;
use super::gemm::{MatMut, MatRef, gemm_parallel};

/// Products with at least twice this many rows of output are split in halves over the rayon
/// pool. The split depends only on the shapes, never on the number of threads, so results are
/// the same on any machine.
const PARALLEL_ROWS: usize = 64;

fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    gemm_parallel(alpha, a, b, beta, c, PARALLEL_ROWS);
}
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// The gain of the orthogonal initialisation of hidden layers, as for tanh networks in the HPO
/// reference (`hpo-paper.md` §3.1).
pub const HIDDEN_GAIN: f32 = std::f32::consts::SQRT_2;

/// Layer sizes, from the input width to the output width, and the parameters.
///
/// `params` holds, layer after layer, the weights (`fan_in × fan_out`, row-major) and then the
/// bias (`fan_out`), so Adam and gradient clipping act on one slice. It starts on a cache line,
/// and so does every weight matrix and row when the widths are multiples of 16 (as 512 and
/// 252 + 512 are), which the GEMM reads fastest ([`super::aligned`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    sizes: Vec<usize>,
    /// Where each layer's weights start in `params`; one more entry marks the end.
    offsets: Vec<usize>,
    params: AlignedVec,
}

/// The activations of one forward pass, kept for the backward pass, and the backward pass's
/// scratch. Reusing a tape for batches no larger than before allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    rows: usize,
    /// `acts[0]` is the input, `acts[l + 1]` the output of layer `l` after its activation.
    acts: Vec<AlignedVec>,
    /// The gradient on the current layer's output, and on its input.
    delta: AlignedVec,
    delta_in: AlignedVec,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// Rows of the last forward pass.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The outputs of the last forward pass, `rows × outputs` row-major (empty before any).
    pub fn output(&self) -> &[f32] {
        self.acts.last().map_or(&[], |v| &v[..])
    }

    /// The records of several forward passes of one network, one after the other, as if one
    /// forward pass had seen all their rows. Panics if they are of networks of other sizes.
    pub fn concatenate<'a>(&mut self, parts: impl IntoIterator<Item = &'a Tape> + Clone) {
        let rows: usize = parts.clone().into_iter().map(|t| t.rows).sum();
        let Some(first) = parts.clone().into_iter().next() else {
            self.rows = 0;
            self.acts.clear();
            return;
        };
        let widths: Vec<usize> = first.acts.iter().map(|a| a.len() / first.rows.max(1)).collect();
        self.acts.resize_with(widths.len(), AlignedVec::default);
        for (act, &width) in self.acts.iter_mut().zip(&widths) {
            act.resize(rows * width);
        }
        let mut at = 0;
        for part in parts {
            assert!(
                part.acts.len() == widths.len()
                    && part.acts.iter().zip(&widths).all(|(a, &w)| a.len() == part.rows * w),
                "concatenate: tapes of networks of different sizes"
            );
            for ((act, from), &width) in self.acts.iter_mut().zip(&part.acts).zip(&widths) {
                act[at * width..(at + part.rows) * width].copy_from_slice(from);
            }
            at += part.rows;
        }
        self.rows = rows;
    }

    /// Keeps the record of rows `first..first + count` only, as if the forward pass had seen
    /// just those rows, so that a backward pass can use part of a larger forward pass.
    /// Panics if the rows are not all in the record.
    pub fn keep_rows(&mut self, first: usize, count: usize) {
        assert!(first + count <= self.rows, "rows {first}..{} of a tape of {}", first + count, self.rows);
        let rows = self.rows;
        for act in &mut self.acts {
            let width = act.len() / rows.max(1);
            act.copy_within(first * width..(first + count) * width, 0);
            act.resize(count * width);
        }
        self.rows = count;
    }
}

impl Mlp {
    /// A network with orthogonally initialised weights: gain [`HIDDEN_GAIN`] on hidden layers,
    /// `head_gain` on the last one (0.01 for a policy head, 0 for a discrete head that starts
    /// uniform, 1 for a value head), and zero biases.
    ///
    /// Panics unless there are at least two sizes and all are positive.
    pub fn new<R: Rng + ?Sized>(sizes: &[usize], head_gain: f32, rng: &mut R) -> Mlp {
        let mut mlp = Mlp::zeros(sizes);
        let layers = mlp.layers();
        for l in 0..layers {
            let gain = if l + 1 == layers { head_gain } else { HIDDEN_GAIN };
            let w = orthogonal(sizes[l], sizes[l + 1], gain, rng);
            mlp.weights_mut(l).copy_from_slice(&w);
        }
        mlp
    }

    /// A network whose parameters are all zero.
    ///
    /// Panics unless there are at least two sizes and all are positive.
    pub fn zeros(sizes: &[usize]) -> Mlp {
        assert!(
            sizes.len() >= 2 && sizes.iter().all(|&s| s > 0),
            "an MLP needs two or more positive sizes, got {sizes:?}"
        );
        let mut offsets = vec![0];
        for pair in sizes.windows(2) {
            let end = offsets[offsets.len() - 1] + pair[0] * pair[1] + pair[1];
            offsets.push(end);
        }
        let params = AlignedVec::zeros(offsets[offsets.len() - 1]);
        Mlp { sizes: sizes.to_vec(), offsets, params }
    }

    /// The layer sizes, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }

    pub fn outputs(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// Number of weight layers (one less than the number of sizes).
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    pub fn params(&self) -> &[f32] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// A zero gradient laid out like the parameters, aligned like them for the GEMM.
    pub fn zero_grad(&self) -> AlignedVec {
        AlignedVec::zeros(self.params.len())
    }

    /// The weights of layer `l`, `fan_in × fan_out` row-major.
    pub fn weights(&self, l: usize) -> &[f32] {
        &self.params[self.offsets[l]..self.offsets[l] + self.sizes[l] * self.sizes[l + 1]]
    }

    pub fn weights_mut(&mut self, l: usize) -> &mut [f32] {
        let start = self.offsets[l];
        &mut self.params[start..start + self.sizes[l] * self.sizes[l + 1]]
    }

    /// The bias of layer `l`.
    pub fn bias(&self, l: usize) -> &[f32] {
        &self.params[self.offsets[l] + self.sizes[l] * self.sizes[l + 1]..self.offsets[l + 1]]
    }

    /// The outputs for a batch `x` of `rows × inputs` (row-major), recorded on `tape`.
    ///
    /// Panics if `x` does not hold `rows × inputs` values.
    pub fn forward<'t>(&self, x: &[f32], rows: usize, tape: &'t mut Tape) -> &'t [f32] {
        assert_eq!(x.len(), rows * self.inputs(), "forward: {rows} rows of {} inputs expected", self.inputs());
        let layers = self.layers();
        tape.rows = rows;
        tape.acts.resize_with(layers + 1, AlignedVec::default);
        tape.acts[0].resize(x.len());
        tape.acts[0].copy_from_slice(x);
        for l in 0..layers {
            let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
            let (done, rest) = tape.acts.split_at_mut(l + 1);
            let out = &mut rest[0];
            out.resize(rows * fan_out);
            // The bias goes in first and the product is added to it: one pass over the output.
            let bias = self.bias(l);
            for row in out.chunks_exact_mut(fan_out) {
                row.copy_from_slice(bias);
            }
            gemm(
                1.0,
                MatRef::row_major(&done[l], rows, fan_in),
                MatRef::row_major(self.weights(l), fan_in, fan_out),
                1.0,
                MatMut::row_major(out, rows, fan_out),
            );
            if l + 1 < layers {
                tanh_in_place(out);
            }
        }
        &tape.acts[layers]
    }

    /// Panics unless `tape` holds a forward pass of a network of these sizes.
    fn check_tape(&self, tape: &Tape) {
        assert!(
            tape.acts.len() == self.layers() + 1
                && tape.acts.iter().zip(&self.sizes).all(|(a, &width)| a.len() == tape.rows * width),
            "backward: the tape was not recorded by a network of sizes {:?}",
            self.sizes
        );
    }

    /// Back-propagates `dy` (`rows × outputs`, the gradient of a loss on the outputs of the
    /// forward pass recorded on `tape`): **adds** the parameter gradient into `grad` (laid out
    /// like [`Mlp::params`]) and, if given, **writes** the gradient on the inputs into `dx`.
    ///
    /// `tape` is mutable only for its scratch; its record is unchanged, so several gradients
    /// can be pulled back through one forward pass. Panics if the tape is from a network of
    /// other sizes or a slice has the wrong length.
    pub fn backward(&self, tape: &mut Tape, dy: &[f32], grad: &mut [f32], dx: Option<&mut [f32]>) {
        let rows = tape.rows;
        let layers = self.layers();
        self.check_tape(tape);
        assert_eq!(dy.len(), rows * self.outputs(), "backward: dy must hold rows × outputs values");
        assert_eq!(grad.len(), self.params.len(), "backward: grad must be as long as the parameters");
        if let Some(dx) = &dx {
            assert_eq!(dx.len(), rows * self.inputs(), "backward: dx must hold rows × inputs values");
        }
        let Tape { acts, delta, delta_in, .. } = tape;
        delta.resize(dy.len());
        delta.copy_from_slice(dy);
        let mut dx = dx;
        for l in (0..layers).rev() {
            let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
            let (weight_grad, bias_grad) = grad[self.offsets[l]..self.offsets[l + 1]].split_at_mut(fan_in * fan_out);
            let d_out = MatRef::row_major(delta, rows, fan_out);
            // dW += h_lᵀ · δ
            gemm(
                1.0,
                MatRef::row_major(&acts[l], rows, fan_in).t(),
                d_out,
                1.0,
                MatMut::row_major(weight_grad, fan_in, fan_out),
            );
            add_column_sums(delta, bias_grad);
            let w_t = MatRef::row_major(self.weights(l), fan_in, fan_out).t();
            if l > 0 {
                // δ_in = (δ · Wᵀ) ⊙ tanh'(pre-activation), and tanh' = 1 − h².
                delta_in.resize(rows * fan_in);
                gemm(1.0, d_out, w_t, 0.0, MatMut::row_major(delta_in, rows, fan_in));
                for (d, h) in delta_in.iter_mut().zip(acts[l].iter()) {
                    *d *= 1.0 - h * h;
                }
                std::mem::swap(delta, delta_in);
            } else if let Some(dx) = dx.as_deref_mut() {
                gemm(1.0, d_out, w_t, 0.0, MatMut::row_major(dx, rows, fan_in));
            }
        }
    }
}

/// The layer inputs and output gradients of many backward passes through one network, stacked
/// row block after row block, so that the parameter gradient of all of them is one product per
/// layer ([`Mlp::add_stacked_grad`]) instead of one per pass.
///
/// Backpropagation through time pulls a gradient back through the policy at every step of a
/// rollout, each on a handful of rows: accumulating `dW += hᵀ·δ` there reads and writes every
/// weight gradient once per step for a product only as deep as the batch, which is bound by
/// memory, not arithmetic. Stacked, the same sums become one deep product.
#[derive(Clone, Debug, Default)]
pub struct Stack {
    rows: usize,
    /// Per layer: its input (`rows × fan_in`) and the gradient on its pre-activation output
    /// (`rows × fan_out`).
    inputs: Vec<AlignedVec>,
    deltas: Vec<AlignedVec>,
}

impl Stack {
    pub fn new() -> Stack {
        Stack::default()
    }

    /// Makes room for `rows` stacked rows of `mlp`; keeps the buffers it already has.
    pub fn reset(&mut self, mlp: &Mlp, rows: usize) {
        let layers = mlp.layers();
        self.rows = rows;
        self.inputs.resize_with(layers, AlignedVec::default);
        self.deltas.resize_with(layers, AlignedVec::default);
        for l in 0..layers {
            self.inputs[l].resize(rows * mlp.sizes[l]);
            self.deltas[l].resize(rows * mlp.sizes[l + 1]);
        }
    }
}

impl Mlp {
    /// [`Mlp::backward`] without the parameter gradient: writes the gradient on the inputs into
    /// `dx`, and records the pass's layer inputs and output gradients in `stack` at rows
    /// `at..at + tape.rows()`, for [`Mlp::add_stacked_grad`] to turn into the parameter
    /// gradient later. Panics as `backward` does, or if the rows do not fit in the stack.
    pub fn backward_stacked(&self, tape: &Tape, dy: &[f32], stack: &mut Stack, at: usize, dx: &mut [f32]) {
        let rows = tape.rows;
        let layers = self.layers();
        self.check_tape(tape);
        assert!(
            stack.inputs.len() == layers && at + rows <= stack.rows,
            "backward: rows {at}..{} do not fit a stack of {} rows for this network",
            at + rows,
            stack.rows
        );
        assert_eq!(dy.len(), rows * self.outputs(), "backward: dy must hold rows × outputs values");
        assert_eq!(dx.len(), rows * self.inputs(), "backward: dx must hold rows × inputs values");
        // Rows `at..at + rows` of a stacked buffer `width` wide.
        let block = |width: usize| at * width..(at + rows) * width;
        stack.deltas[layers - 1][block(self.outputs())].copy_from_slice(dy);
        for l in (0..layers).rev() {
            let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
            stack.inputs[l][block(fan_in)].copy_from_slice(&tape.acts[l]);
            let (below, from) = stack.deltas.split_at_mut(l);
            let d_out = MatRef::row_major(&from[0][block(fan_out)], rows, fan_out);
            let w_t = MatRef::row_major(self.weights(l), fan_in, fan_out).t();
            if l > 0 {
                // δ_in = (δ · Wᵀ) ⊙ tanh'(pre-activation), and tanh' = 1 − h².
                let d_in = &mut below[l - 1][block(fan_in)];
                gemm(1.0, d_out, w_t, 0.0, MatMut::row_major(d_in, rows, fan_in));
                for (d, h) in d_in.iter_mut().zip(tape.acts[l].iter()) {
                    *d *= 1.0 - h * h;
                }
            } else {
                gemm(1.0, d_out, w_t, 0.0, MatMut::row_major(dx, rows, fan_in));
            }
        }
    }

    /// **Adds** into `grad` the parameter gradient of every pass recorded in `stack`: per layer,
    /// `dW += Hᵀ·Δ` over all stacked rows, and the column sums of `Δ` for the bias.
    pub fn add_stacked_grad(&self, stack: &Stack, grad: &mut [f32]) {
        let layers = self.layers();
        assert!(stack.inputs.len() == layers, "a stack of another network");
        assert_eq!(grad.len(), self.params.len(), "backward: grad must be as long as the parameters");
        let rows = stack.rows;
        for l in 0..layers {
            let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
            let (weight_grad, bias_grad) = grad[self.offsets[l]..self.offsets[l + 1]].split_at_mut(fan_in * fan_out);
            let deltas = &stack.deltas[l][..rows * fan_out];
            gemm(
                1.0,
                MatRef::row_major(&stack.inputs[l][..rows * fan_in], rows, fan_in).t(),
                MatRef::row_major(deltas, rows, fan_out),
                1.0,
                MatMut::row_major(weight_grad, fan_in, fan_out),
            );
            add_column_sums(deltas, bias_grad);
        }
    }
}

/// `sums[j] += Σ_r m[r][j]` for a row-major matrix `m` with `sums.len()` columns.
fn add_column_sums(m: &[f32], sums: &mut [f32]) {
    for row in m.chunks_exact(sums.len()) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

/// A `fan_in × fan_out` row-major matrix with orthonormal columns (if `fan_in ≥ fan_out`) or
/// rows (otherwise), times `gain`: the orthogonal initialisation of Saxe et al., as PyTorch's
/// `orthogonal_` draws it (the Q of a Gaussian matrix's QR factorisation, signs fixed so that
/// R has a positive diagonal). Gram–Schmidt runs twice per column in f64, which keeps the
/// columns orthogonal to rounding error.
fn orthogonal<R: Rng + ?Sized>(fan_in: usize, fan_out: usize, gain: f32, rng: &mut R) -> Vec<f32> {
    let (tall, wide) = (fan_in.max(fan_out), fan_in.min(fan_out));
    let mut q: Vec<Vec<f64>> = (0..wide).map(|_| (0..tall).map(|_| StandardNormal.sample(rng)).collect()).collect();
    for j in 0..wide {
        let (done, rest) = q.split_at_mut(j);
        let col = &mut rest[0];
        for _ in 0..2 {
            for prev in done.iter() {
                let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
                for (c, p) in col.iter_mut().zip(prev) {
                    *c -= dot * p;
                }
            }
        }
        let norm = col.iter().map(|c| c * c).sum::<f64>().sqrt();
        for c in col.iter_mut() {
            *c /= norm;
        }
    }
    let mut w = vec![0.0; fan_in * fan_out];
    for r in 0..fan_in {
        for c in 0..fan_out {
            let v = if fan_in >= fan_out { q[c][r] } else { q[r][c] };
            w[r * fan_out + c] = gain * v as f32;
        }
    }
    w
}

/// `tanh` of every element, with the fast version vectorised for AVX-512 when the CPU has it.
pub fn tanh_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present.
        unsafe { tanh_avx512(x) };
        return;
    }
    tanh_slice(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tanh_avx512(x: &mut [f32]) {
    tanh_slice(x);
}

#[inline(always)]
fn tanh_slice(x: &mut [f32]) {
    for v in x {
        *v = tanh(*v);
    }
}

/// `tanh` as Eigen and XLA compute it in f32: a 13/6 rational approximation on `[−c, c]`, where
/// `c` is where the approximation reaches exactly ±1. Its error is below 4e-7 (at worst 3.3
/// units in the last place, near ±1; tested). Unlike std's `tanh`, a libm call, it vectorises,
/// which matters: a 960 × 512 layer has half a million of them per pass. NaN stays NaN.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Eigen's coefficients, verbatim
pub fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.90531110763549805;
    let z = x.clamp(-CLAMP, CLAMP);
    let z2 = z * z;
    let mut p = -2.76076847742355e-16_f32;
    p = p * z2 + 2.00018790482477e-13;
    p = p * z2 + -8.60467152213735e-11;
    p = p * z2 + 5.12229709037114e-08;
    p = p * z2 + 1.48572235717979e-05;
    p = p * z2 + 6.37261928875436e-04;
    p = p * z2 + 4.89352455891786e-03;
    let mut q = 1.19825839466702e-06_f32;
    q = q * z2 + 1.18534705686654e-04;
    q = q * z2 + 2.26843463243900e-03;
    q = q * z2 + 4.89352518554385e-03;
    // Below 4e-4, tanh(x) rounds to x, and the ratio would lose x's low bits.
    if x.abs() < 4e-4 { x } else { z * p / q }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};

    fn uniform(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// An independent forward pass in f64 with the exact tanh, straight from the definition.
    fn forward_f64(mlp: &Mlp, params: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
        let mut h = x.to_vec();
        for l in 0..mlp.layers() {
            let (fan_in, fan_out, at) = (mlp.sizes[l], mlp.sizes[l + 1], mlp.offsets[l]);
            let mut out = vec![0.0; rows * fan_out];
            for r in 0..rows {
                for j in 0..fan_out {
                    let mut z = params[at + fan_in * fan_out + j];
                    for i in 0..fan_in {
                        z += h[r * fan_in + i] * params[at + i * fan_out + j];
                    }
                    out[r * fan_out + j] = if l + 1 < mlp.layers() { z.tanh() } else { z };
                }
            }
            h = out;
        }
        h
    }

    /// A network with every parameter, biases included, random, so that no gradient is trivially 0.
    fn random_mlp(sizes: &[usize], seed: u64) -> Mlp {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut mlp = Mlp::zeros(sizes);
        let n = mlp.params.len();
        mlp.params_mut().copy_from_slice(&uniform(n, &mut rng));
        mlp
    }

    /// The largest error of `got` against `want`, relative to the largest entry of `want`.
    fn relative_error(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(1e-12f64, |m, w| m.max(w.abs()));
        got.iter().zip(want).map(|(&g, w)| (g as f64 - w).abs() / scale).fold(0.0, f64::max)
    }

    /// Parameter and input gradients of `L = Σ dy ⊙ mlp(x)` by central differences of the f64
    /// forward pass, for the parameters in `which`.
    fn finite_differences(mlp: &Mlp, x: &[f32], rows: usize, dy: &[f32], which: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let params: Vec<f64> = mlp.params.iter().map(|&p| p as f64).collect();
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let loss = |params: &[f64], x: &[f64]| -> f64 {
            forward_f64(mlp, params, x, rows).iter().zip(dy).map(|(y, &d)| y * d as f64).sum()
        };
        let h = 1e-6;
        let mut dparams = Vec::new();
        for &i in which {
            let (mut plus, mut minus) = (params.clone(), params.clone());
            plus[i] += h;
            minus[i] -= h;
            dparams.push((loss(&plus, &x) - loss(&minus, &x)) / (2.0 * h));
        }
        let mut dx = Vec::new();
        for i in 0..x.len() {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[i] += h;
            minus[i] -= h;
            dx.push((loss(&params, &plus) - loss(&params, &minus)) / (2.0 * h));
        }
        (dparams, dx)
    }

    /// Runs backward on a random network and batch and compares with finite differences;
    /// returns the relative errors of the parameter and input gradients.
    fn backward_errors(sizes: &[usize], rows: usize, which: Option<Vec<usize>>, corrupt: bool) -> (f64, f64) {
        let mlp = random_mlp(sizes, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x = uniform(rows * mlp.inputs(), &mut rng);
        let dy = uniform(rows * mlp.outputs(), &mut rng);
        let mut tape = Tape::new();
        mlp.forward(&x, rows, &mut tape);
        // Start from a non-zero gradient: backward must add to it.
        let start = uniform(mlp.params.len(), &mut rng);
        let mut grad = start.clone();
        let mut dx = vec![f32::NAN; x.len()];
        mlp.backward(&mut tape, &dy, &mut grad, Some(&mut dx));
        if corrupt {
            grad[mlp.offsets[1] - 1] += 0.01;
            dx[0] += 0.01;
        }
        let which = which.unwrap_or_else(|| (0..mlp.params.len()).collect());
        let (fd_params, fd_dx) = finite_differences(&mlp, &x, rows, &dy, &which);
        let added: Vec<f32> = which.iter().map(|&i| grad[i] - start[i]).collect();
        (relative_error(&added, &fd_params), relative_error(&dx, &fd_dx))
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (params, inputs) = backward_errors(&[3, 5, 4, 2], 3, None, false);
        assert!(params < 1e-5 && inputs < 1e-5, "relative errors: parameters {params:.2e}, inputs {inputs:.2e}");
    }

    #[test]
    fn backward_matches_finite_differences_at_kernel_sized_layers() {
        // Wide enough for the AVX-512 kernel's packed, transposed and edge-tile paths.
        let which: Vec<usize> = (0..40).map(|i| i * 71).collect();
        let (params, inputs) = backward_errors(&[21, 50, 33, 3], 37, Some(which), false);
        assert!(params < 1e-4 && inputs < 1e-4, "relative errors: parameters {params:.2e}, inputs {inputs:.2e}");
    }

    #[test]
    fn the_finite_difference_check_catches_a_one_percent_error() {
        let (params, inputs) = backward_errors(&[3, 5, 4, 2], 3, None, true);
        assert!(params > 1e-3 && inputs > 1e-3, "relative errors: parameters {params:.2e}, inputs {inputs:.2e}");
    }

    /// Several passes recorded on a stack give the input gradients of `backward` bit for bit,
    /// and the sum of their parameter gradients to rounding.
    #[test]
    fn stacked_passes_give_the_gradients_of_separate_ones() {
        let mlp = random_mlp(&[21, 50, 33, 3], 9);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (passes, rows) = (5, 7);
        let mut stack = Stack::new();
        stack.reset(&mlp, passes * rows);
        let start = uniform(mlp.params.len(), &mut rng);
        let (mut separate, mut stacked) = (start.clone(), start.clone());
        let mut tape = Tape::new();
        // In reverse, as backpropagation through time fills it.
        for pass in (0..passes).rev() {
            let x = uniform(rows * mlp.inputs(), &mut rng);
            let dy = uniform(rows * mlp.outputs(), &mut rng);
            mlp.forward(&x, rows, &mut tape);
            let (mut dx_separate, mut dx_stacked) = (vec![0.0; x.len()], vec![f32::NAN; x.len()]);
            mlp.backward(&mut tape, &dy, &mut separate, Some(&mut dx_separate));
            mlp.backward_stacked(&tape, &dy, &mut stack, pass * rows, &mut dx_stacked);
            assert_eq!(dx_separate, dx_stacked, "pass {pass}");
        }
        assert!(stacked == start);
        mlp.add_stacked_grad(&stack, &mut stacked);
        let scale = separate.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        for (i, (a, b)) in separate.iter().zip(&stacked).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "parameter {i}: {a} separately, {b} stacked");
        }
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn a_pass_past_the_end_of_its_stack_is_refused() {
        let mlp = random_mlp(&[2, 3, 1], 1);
        let mut tape = Tape::new();
        mlp.forward(&[0.0; 4], 2, &mut tape);
        let mut stack = Stack::new();
        stack.reset(&mlp, 3);
        mlp.backward_stacked(&tape, &[1.0, 1.0], &mut stack, 2, &mut [0.0; 4]);
    }

    #[test]
    fn forward_matches_the_f64_definition() {
        let mlp = random_mlp(&[6, 40, 20, 3], 3);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x = uniform(19 * 6, &mut rng);
        let mut tape = Tape::new();
        let y = mlp.forward(&x, 19, &mut tape).to_vec();
        let params: Vec<f64> = mlp.params.iter().map(|&p| p as f64).collect();
        let want = forward_f64(&mlp, &params, &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), 19);
        assert!(relative_error(&y, &want) < 1e-5, "forward differs from the definition");
        assert_eq!(tape.output(), y.as_slice());
    }

    /// Concatenated records of separate passes are the record of one pass on all their rows.
    #[test]
    fn concatenated_tapes_are_the_record_of_one_pass() {
        let mlp = random_mlp(&[5, 24, 7, 3], 4);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = uniform(11 * 5, &mut rng);
        let (mut a, mut b, mut whole, mut joined) = (Tape::new(), Tape::new(), Tape::new(), Tape::new());
        mlp.forward(&x[..4 * 5], 4, &mut a);
        mlp.forward(&x[4 * 5..], 7, &mut b);
        mlp.forward(&x, 11, &mut whole);
        joined.concatenate([&a, &b]);
        assert_eq!(joined.rows(), 11);
        for (j, w) in joined.acts.iter().zip(&whole.acts) {
            let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            assert!(j.iter().zip(w.iter()).all(|(p, q)| (p - q).abs() <= 1e-6 * scale));
        }
    }

    /// Part of a forward pass's record serves a backward pass as a forward pass on that part does.
    #[test]
    fn a_tape_cut_to_some_rows_is_the_record_of_those_rows() {
        let mlp = random_mlp(&[5, 24, 7, 3], 4);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let x = uniform(30 * 5, &mut rng);
        let dy = uniform(12 * 3, &mut rng);
        let mut cut = Tape::new();
        mlp.forward(&x, 30, &mut cut);
        cut.keep_rows(9, 12);
        let mut part = Tape::new();
        let want = mlp.forward(&x[9 * 5..21 * 5], 12, &mut part).to_vec();
        assert_eq!(cut.rows(), 12);
        assert_eq!(cut.output(), want.as_slice());
        let (mut g_cut, mut g_part) = (mlp.zero_grad(), mlp.zero_grad());
        let (mut dx_cut, mut dx_part) = (vec![0.0; 12 * 5], vec![0.0; 12 * 5]);
        mlp.backward(&mut cut, &dy, &mut g_cut, Some(&mut dx_cut));
        mlp.backward(&mut part, &dy, &mut g_part, Some(&mut dx_part));
        assert_eq!((&g_cut[..], dx_cut), (&g_part[..], dx_part));
    }

    #[test]
    fn a_reused_tape_does_not_reallocate_for_smaller_batches() {
        let mlp = random_mlp(&[4, 8, 2], 1);
        let mut tape = Tape::new();
        let big = vec![0.5; 10 * 4];
        let first = mlp.forward(&big, 10, &mut tape).as_ptr();
        mlp.forward(&big[..3 * 4], 3, &mut tape);
        assert_eq!(tape.rows(), 3);
        assert_eq!(tape.output().len(), 3 * 2);
        let again = mlp.forward(&big, 10, &mut tape).as_ptr();
        assert_eq!(first, again, "the output buffer moved");
    }

    #[test]
    fn init_is_orthogonal_with_the_requested_gains() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let sizes = [30, 64, 64, 5];
        let mlp = Mlp::new(&sizes, 0.01, &mut rng);
        for l in 0..3 {
            let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
            let gain = if l == 2 { 0.01 } else { HIDDEN_GAIN } as f64;
            let w = mlp.weights(l);
            // Gram matrix of the shorter side: columns if fan_in ≥ fan_out, rows otherwise.
            let by_columns = fan_in >= fan_out;
            let (n, len) = if by_columns { (fan_out, fan_in) } else { (fan_in, fan_out) };
            let at = |v: usize, e: usize| if by_columns { w[e * fan_out + v] } else { w[v * fan_out + e] } as f64;
            for a in 0..n {
                for b in 0..n {
                    let dot: f64 = (0..len).map(|e| at(a, e) * at(b, e)).sum();
                    let want = if a == b { gain * gain } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5 * gain * gain, "layer {l}: Gram[{a},{b}] = {dot}, want {want}");
                }
            }
            assert!(mlp.bias(l).iter().all(|&b| b == 0.0), "layer {l}: bias not zero");
        }
        let again = Mlp::new(&sizes, 0.01, &mut ChaCha8Rng::seed_from_u64(42));
        assert_eq!(mlp, again, "the same seed must give the same network");
        let zero_head = Mlp::new(&sizes, 0.0, &mut rng);
        assert!(zero_head.weights(2).iter().all(|&w| w == 0.0));
        assert!(zero_head.weights(1).iter().any(|&w| w != 0.0));
    }

    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_the_exact_one() {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-5).collect();
        xs.extend([1e-30, -1e-30, 3.9e-4, 4.1e-4, 7.9, 8.0, 20.0, -20.0, 1e30, f32::INFINITY, f32::NEG_INFINITY]);
        let mut fast = xs.clone();
        tanh_in_place(&mut fast);
        let (mut worst_abs, mut worst_ulp) = (0.0f64, 0.0f64);
        for (&x, &t) in xs.iter().zip(&fast) {
            assert_eq!(t.to_bits(), tanh(x).to_bits(), "the vectorised tanh differs from the scalar one at {x}");
            let exact = (x as f64).tanh();
            let ulp = (exact.abs() as f32).max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64;
            worst_abs = worst_abs.max((t as f64 - exact).abs());
            worst_ulp = worst_ulp.max((t as f64 - exact).abs() / ulp);
            assert!(t.abs() <= 1.0);
        }
        // Measured: 3.9e-7 and 3.3, both near ±1 where the approximation is clamped.
        assert!(worst_abs < 4e-7 && worst_ulp < 4.0, "worst error {worst_abs:e}, {worst_ulp} ulp");
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    #[should_panic(expected = "not recorded by a network")]
    fn backward_refuses_a_tape_from_another_network() {
        let (small, big) = (random_mlp(&[2, 3, 1], 1), random_mlp(&[2, 4, 1], 1));
        let mut tape = Tape::new();
        small.forward(&[0.0, 0.0], 1, &mut tape);
        let mut grad = vec![0.0; big.params().len()];
        big.backward(&mut tape, &[1.0], &mut grad, None);
    }
}
