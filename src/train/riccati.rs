//! The exact optimum of the one-mode switched LQR (`models/switched_lqr.hmdp` with `modes = 1`):
//! finite-horizon Riccati recursion, so that `eval` can print a trained policy's optimality gap.
//! Its one step ([`step`]) also serves the switched optimum of `tests/train_outcomes.rs`, which
//! enumerates mode sequences.
//!
//! The model is recognised by its shape: a state `x[D]`, an action `u[D]`, parameters `A[D, D]`
//! and `B[M, D]` with one mode, and the cost `sum x² + 0.1 sum u²` of the shipped model (checked
//! by evaluating the step on unit vectors, so an edited cost is not mistaken for it). The clamp at
//! ±100 is ignored; the optimal trajectories stay far inside it.

use crate::backend::Buffers;
use crate::backend::{self, Backend, Batch, Kernel};
use crate::ir::{BufferKind, Module};

/// `x₀ᵀ P₀ x₀` and the feedback gains `u_t = −K_t x_t`, per step.
pub struct Riccati {
    pub n: usize,
    pub p0: Vec<f64>,
    pub gains: Vec<Vec<f64>>,
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

/// Solves `s X = rhs` (Gauss–Jordan with partial pivoting); `None` when `s` is singular.
fn solve(s: &[f64], rhs: &[f64], n: usize) -> Option<Vec<f64>> {
    let (mut a, mut x) = (s.to_vec(), rhs.to_vec());
    for col in 0..n {
        let pivot = (col..n).max_by(|&p, &q| a[p * n + col].abs().total_cmp(&a[q * n + col].abs()))?;
        if a[pivot * n + col].abs() < 1e-300 {
            return None;
        }
        for j in 0..n {
            a.swap(col * n + j, pivot * n + j);
            x.swap(col * n + j, pivot * n + j);
        }
        let d = a[col * n + col];
        for j in 0..n {
            a[col * n + j] /= d;
            x[col * n + j] /= d;
        }
        for r in 0..n {
            if r != col {
                let f = a[r * n + col];
                for j in 0..n {
                    a[r * n + j] -= f * a[col * n + j];
                    x[r * n + j] -= f * x[col * n + j];
                }
            }
        }
    }
    Some(x)
}

/// One step of the recursion for `x' = A x + B u` with stage cost `xᵀQx + uᵀRu`: from the cost
/// to go `xᵀPx` after the step, the cost to go before it and the optimal gain `u = −K x`.
/// Matrices are row-major `n × n`; `None` when `R + BᵀPB` is singular. A switched LQR's
/// optimum for a given mode sequence chains these steps with each period's `B`.
pub fn step(a: &[f64], b: &[f64], q: &[f64], r: &[f64], p: &[f64], n: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let (at, bt) = (transpose(a, n), transpose(b, n));
    let pb = matmul(p, b, n);
    let s: Vec<f64> = matmul(&bt, &pb, n).iter().zip(r).map(|(x, y)| x + y).collect();
    let k = solve(&s, &matmul(&bt, &matmul(p, a, n), n), n)?;
    let apa = matmul(&at, &matmul(p, a, n), n);
    let apbk = matmul(&at, &matmul(&pb, &k, n), n);
    Some(((0..n * n).map(|i| q[i] + apa[i] - apbk[i]).collect(), k))
}

/// The recursion for `x' = A x + B u` with stage cost `xᵀQx + uᵀRu` over `horizon` steps, no
/// terminal cost. Matrices are row-major `n × n`.
pub fn recursion(a: &[f64], b: &[f64], q: &[f64], r: &[f64], n: usize, horizon: usize) -> Option<Riccati> {
    let mut p = vec![0.0; n * n];
    let mut gains = vec![Vec::new(); horizon];
    for t in (0..horizon).rev() {
        let (before, k) = step(a, b, q, r, &p, n)?;
        p = before;
        gains[t] = k;
    }
    Some(Riccati { n, p0: p, gains })
}

impl Riccati {
    pub fn cost(&self, x0: &[f64]) -> f64 {
        let n = self.n;
        (0..n).map(|i| x0[i] * (0..n).map(|j| self.p0[i * n + j] * x0[j]).sum::<f64>()).sum()
    }
}

/// The Riccati solution of a one-mode switched LQR module, if `module` is one.
pub fn of_module(module: &Module, instance: &Buffers, kernels: &dyn Backend) -> Option<Riccati> {
    let find = |name: &str, kind: BufferKind| module.buffers.iter().position(|b| b.name == name && b.kind == kind);
    let (a, b) = (find("A", BufferKind::Param)?, find("B", BufferKind::Param)?);
    let (x, u) = (find("x", BufferKind::State)?, find("u", BufferKind::Continuous)?);
    let n = module.len(x);
    if module.len(u) != n
        || module.len(a) != n * n
        || module.len(b) != n
        || module.costs().count() != 1
        || module.warmup != 0
        || module.discount != 1.0
    {
        return None;
    }
    let mut bm = vec![0.0; n * n];
    for i in 0..n {
        bm[i * n + i] = instance.values[b][i];
    }
    let am = instance.values[a].clone();
    // The stage cost must be xᵀx + 0.1 uᵀu: check it on unit vectors and a mixed point.
    let (cost, _) = module.costs().next()?;
    let mut batch = Batch::new(module, instance, 2 * n + 1);
    for i in 0..n {
        batch.get_mut(x, i)[i] = 1.0;
        batch.get_mut(u, n + i)[i] = 1.0;
    }
    batch.get_mut(x, 2 * n).fill(0.5);
    batch.get_mut(u, 2 * n).fill(-0.5);
    backend::run(kernels, Kernel::Step, &mut batch).ok()?;
    for i in 0..n {
        if (batch.get(cost, i)[0] - 1.0).abs() > 1e-12 || (batch.get(cost, n + i)[0] - 0.1).abs() > 1e-12 {
            return None;
        }
    }
    if (batch.get(cost, 2 * n)[0] - 0.275 * n as f64).abs() > 1e-9 {
        return None;
    }
    let q: Vec<f64> = (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
    let r: Vec<f64> = q.iter().map(|v| 0.1 * v).collect();
    recursion(&am, &bm, &q, &r, n, module.horizon as usize)
}
