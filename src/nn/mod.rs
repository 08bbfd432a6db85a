//! TEMPORARY stand-in for the MLP module being written on the `nn` branch: the same interface,
//! naive loops. Replaced when that branch lands.

use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Debug)]
pub struct Mlp {
    pub sizes: Vec<usize>,
    pub params: Vec<f32>,
}

#[derive(Clone, Debug, Default)]
pub struct Tape {
    rows: usize,
    /// Input, then each layer's output (after tanh for hidden layers).
    acts: Vec<Vec<f32>>,
}

impl Mlp {
    pub fn new(sizes: &[usize], head_gain: f32, rng: &mut ChaCha8Rng) -> Mlp {
        let mut params = Vec::new();
        for (l, w) in sizes.windows(2).enumerate() {
            let (i, o) = (w[0], w[1]);
            let last = l + 2 == sizes.len();
            let gain = if last { head_gain } else { std::f32::consts::SQRT_2 };
            let sd = gain / (i as f32).sqrt();
            for _ in 0..i * o {
                let z: f64 = StandardNormal.sample(rng);
                params.push(z as f32 * sd);
            }
            params.extend(std::iter::repeat_n(0.0, o));
        }
        Mlp { sizes: sizes.to_vec(), params }
    }

    pub fn forward<'t>(&self, x: &[f32], rows: usize, tape: &'t mut Tape) -> &'t [f32] {
        tape.rows = rows;
        tape.acts.clear();
        tape.acts.push(x.to_vec());
        let mut at = 0;
        for (l, w) in self.sizes.windows(2).enumerate() {
            let (i, o) = (w[0], w[1]);
            let weights = &self.params[at..at + i * o];
            let bias = &self.params[at + i * o..at + i * o + o];
            at += i * o + o;
            let input = tape.acts.last().map(Vec::as_slice).unwrap_or(&[]);
            let mut out = vec![0.0f32; rows * o];
            for r in 0..rows {
                for k in 0..o {
                    let mut s = bias[k];
                    for j in 0..i {
                        s += input[r * i + j] * weights[j * o + k];
                    }
                    out[r * o + k] = if l + 2 == self.sizes.len() { s } else { s.tanh() };
                }
            }
            tape.acts.push(out);
        }
        tape.acts.last().map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn backward(&self, tape: &Tape, dy: &[f32], grad: &mut [f32], dx: Option<&mut [f32]>) {
        let rows = tape.rows;
        let layers = self.sizes.len() - 1;
        let mut offsets = Vec::new();
        let mut at = 0;
        for w in self.sizes.windows(2) {
            offsets.push(at);
            at += w[0] * w[1] + w[1];
        }
        let mut delta = dy.to_vec();
        for l in (0..layers).rev() {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            if l + 1 < layers {
                let y = &tape.acts[l + 1];
                for (d, y) in delta.iter_mut().zip(y) {
                    *d *= 1.0 - y * y;
                }
            }
            let input = &tape.acts[l];
            let base = offsets[l];
            for r in 0..rows {
                for j in 0..i {
                    let x = input[r * i + j];
                    for k in 0..o {
                        grad[base + j * o + k] += x * delta[r * o + k];
                    }
                }
                for k in 0..o {
                    grad[base + i * o + k] += delta[r * o + k];
                }
            }
            let weights = &self.params[base..base + i * o];
            let mut prev = vec![0.0f32; rows * i];
            for r in 0..rows {
                for j in 0..i {
                    let mut s = 0.0;
                    for k in 0..o {
                        s += weights[j * o + k] * delta[r * o + k];
                    }
                    prev[r * i + j] = s;
                }
            }
            delta = prev;
        }
        if let Some(dx) = dx {
            for (d, v) in dx.iter_mut().zip(&delta) {
                *d += v;
            }
        }
    }
}

pub struct Adam {
    pub lr: f32,
    eps: f32,
    t: i32,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    pub fn new(n: usize, lr: f32, eps: f32) -> Adam {
        Adam { lr, eps, t: 0, m: vec![0.0; n], v: vec![0.0; n] }
    }

    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        self.t += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for k in 0..params.len() {
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * grad[k];
            self.v[k] = b2 * self.v[k] + (1.0 - b2) * grad[k] * grad[k];
            params[k] -= self.lr * (self.m[k] / c1) / ((self.v[k] / c2).sqrt() + self.eps);
        }
    }
}

pub fn clip_grad_norm(grad: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad.iter().map(|g| (*g as f64).powi(2)).sum::<f64>().sqrt() as f32;
    if norm > max_norm && norm > 0.0 {
        let s = max_norm / norm;
        grad.iter_mut().for_each(|g| *g *= s);
    }
    norm
}
