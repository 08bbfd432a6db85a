//! GFLOP/s of each GEMM kernel at the shapes the trainer multiplies, on one thread.
//!
//! Run with `cargo run --release --example gemm_bench [runs]`. Each cell is the median over
//! `runs` (default 15) timings, each timing repeating the product for at least 20 ms after a
//! warm-up. `NN` is a forward layer `X·W`, `NT` the input gradient `dY·Wᵀ`, `TN` the weight
//! gradient `Xᵀ·dY` (accumulated, β = 1), all with row-major buffers and transposes as views.

use hmdp::nn::gemm::{Kernel, MatMut, MatRef, gemm_with};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Form {
    /// `C(m×n) = A(m×k) · B(k×n)`.
    Nn,
    /// `C(m×n) = A(m×k) · Bᵀ` with `B` stored `n×k`.
    Nt,
    /// `C(m×n) += Aᵀ · B` with `A` stored `k×m`.
    Tn,
}

fn run(kernel: Kernel, form: Form, (m, k, n): (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
    let (a, b, beta) = match form {
        Form::Nn => (MatRef::row_major(a, m, k), MatRef::row_major(b, k, n), 0.0),
        Form::Nt => (MatRef::row_major(a, m, k), MatRef::row_major(b, n, k).t(), 0.0),
        Form::Tn => (MatRef::row_major(a, k, m).t(), MatRef::row_major(b, k, n), 1.0),
    };
    gemm_with(kernel, 1.0, a, b, beta, MatMut::row_major(c, m, n));
}

fn gflops(kernel: Kernel, form: Form, shape: (usize, usize, usize), runs: usize) -> f64 {
    let (m, k, n) = shape;
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 * 1e-3 - 0.5).collect();
    let mut c = vec![0.0f32; m * n];
    let flop = 2.0 * (m * k * n) as f64;
    // Warm up, and size each timing to at least 20 ms.
    let start = Instant::now();
    let mut reps = 0usize;
    while start.elapsed() < Duration::from_millis(20) {
        run(kernel, form, shape, &a, &b, &mut c);
        reps += 1;
    }
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                run(kernel, form, shape, &a, &b, &mut c);
            }
            flop * reps as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    std::hint::black_box(&c);
    rates[rates.len() / 2]
}

fn main() {
    let runs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    let jrp_inputs = 5 * 50 + 2;
    let cases: Vec<(&str, Form, (usize, usize, usize))> = vec![
        ("NN  16x512x512 (rollout layer)", Form::Nn, (16, 512, 512)),
        ("NN  128x512x512", Form::Nn, (128, 512, 512)),
        ("NN  960x512x512", Form::Nn, (960, 512, 512)),
        ("NN  960x252x512 (JRP n=50 input layer)", Form::Nn, (960, jrp_inputs, 512)),
        ("NN  16x252x512", Form::Nn, (16, jrp_inputs, 512)),
        ("NT  16x512x512 (dX = dY·Wᵀ)", Form::Nt, (16, 512, 512)),
        ("NT  128x512x512", Form::Nt, (128, 512, 512)),
        ("NT  960x512x512", Form::Nt, (960, 512, 512)),
        ("NT  960x512x252", Form::Nt, (960, 512, jrp_inputs)),
        ("TN  512x16x512 (dW += Xᵀ·dY)", Form::Tn, (512, 16, 512)),
        ("TN  512x128x512", Form::Tn, (512, 128, 512)),
        ("TN  512x960x512", Form::Tn, (512, 960, 512)),
        ("TN  252x960x512", Form::Tn, (jrp_inputs, 960, 512)),
    ];
    let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.is_available()).collect();
    print!("{:<42}", "shape (m x k x n), GFLOP/s, 1 thread");
    for kernel in &kernels {
        print!("{:>16}", kernel.name());
    }
    println!();
    for (name, form, shape) in cases {
        print!("{name:<42}");
        for &kernel in &kernels {
            print!("{:>16.1}", gflops(kernel, form, shape, runs));
        }
        println!();
    }
}
