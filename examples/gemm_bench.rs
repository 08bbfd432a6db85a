//! GFLOP/s of each GEMM kernel at the shapes the trainer multiplies, on one thread.
//!
//! Run with `cargo run --release --example gemm_bench [runs]`. Each cell is the median over
//! `runs` (default 31) timings, each repeating the product for at least 5 ms after a warm-up;
//! the best timing is shown too. Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) on Linux, so that other processes sharing the two cores slow the wall clock but not the figure;
//! elsewhere it is wall-clock time. `NN` is a forward layer `X·W`, `NT` the input gradient `dY·Wᵀ`, `TN` the weight
//! gradient `Xᵀ·dY` (accumulated, β = 1), all with row-major buffers and transposes as views.

use hmdp::nn::aligned::AlignedVec;
use hmdp::nn::gemm::{Kernel, MatMut, MatRef, gemm_with};
use hmdp::nn::mlp::{Mlp, Tape};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use std::time::{Duration, Instant};

/// Length of one timing; short, so that a timing often falls between two preemptions.
const WINDOW_MS: u64 = 5;

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

/// `struct timespec` on 64-bit Linux.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[repr(C)]
struct Timespec {
    seconds: i64,
    nanoseconds: i64,
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
unsafe extern "C" {
    fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
}

/// Seconds of CPU time this thread has used, exact to the nanosecond (unlike
/// `/proc/thread-self/schedstat`, which is updated only at scheduler ticks).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn cpu_seconds() -> Option<f64> {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut time = Timespec { seconds: 0, nanoseconds: 0 };
    // SAFETY: glibc's clock_gettime writes one timespec through a valid pointer.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    (status == 0).then_some(time.seconds as f64 + time.nanoseconds as f64 * 1e-9)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn cpu_seconds() -> Option<f64> {
    None
}

/// Seconds spent in `f`: CPU time if available, else wall-clock time.
fn seconds(f: impl FnOnce()) -> f64 {
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    f();
    let wall = wall.elapsed().as_secs_f64();
    match (cpu, cpu_seconds()) {
        (Some(start), Some(end)) if end > start => end - start,
        _ => wall,
    }
}

fn gflops(kernel: Kernel, form: Form, shape: (usize, usize, usize), runs: usize) -> (f64, f64) {
    let (m, k, n) = shape;
    // Cache-line aligned, as the network's parameters and tapes are.
    let values =
        |len: usize, prime: usize| -> Vec<f32> { (0..len).map(|i| ((i * prime) % 1000) as f32 * 1e-3 - 0.5).collect() };
    let a = AlignedVec::from_slice(&values(m * k, 7919));
    let b = AlignedVec::from_slice(&values(k * n, 104_729));
    let mut c = AlignedVec::zeros(m * n);
    let flop = 2.0 * (m * k * n) as f64;
    // Warm up, and size each timing to at least WINDOW_MS.
    let start = Instant::now();
    let mut reps = 0usize;
    while start.elapsed() < Duration::from_millis(WINDOW_MS) {
        run(kernel, form, shape, &a, &b, &mut c);
        reps += 1;
    }
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let time = seconds(|| {
                for _ in 0..reps {
                    run(kernel, form, shape, &a, &b, &mut c);
                }
            });
            flop * reps as f64 / time / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    std::hint::black_box(&c);
    (rates[rates.len() / 2], rates[rates.len() - 1])
}

/// Median and best GFLOP/s of one forward and backward pass (with the input gradient) of a
/// network with these sizes on `rows` rows, with the preferred kernel; the FLOPs are the GEMMs'.
fn mlp_gflops(sizes: &[usize], rows: usize, runs: usize) -> (f64, f64) {
    let mlp = Mlp::new(sizes, 0.01, &mut ChaCha8Rng::seed_from_u64(1));
    let x: Vec<f32> = (0..rows * sizes[0]).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let dy = vec![0.01f32; rows * mlp.outputs()];
    let (mut tape, mut grad, mut dx) = (Tape::new(), mlp.zero_grad(), vec![0.0f32; x.len()]);
    let weights: usize = sizes.windows(2).map(|w| w[0] * w[1]).sum();
    let flop = 6.0 * (rows * weights) as f64;
    let mut pass = || {
        mlp.forward(&x, rows, &mut tape);
        mlp.backward(&mut tape, &dy, &mut grad, Some(&mut dx));
    };
    let start = Instant::now();
    let mut reps = 0usize;
    while start.elapsed() < Duration::from_millis(WINDOW_MS) {
        pass();
        reps += 1;
    }
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let time = seconds(|| (0..reps).for_each(|_| pass()));
            flop * reps as f64 / time / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[rates.len() - 1])
}

fn main() {
    let runs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(31);
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
        ("NN  640x512x2 (a 2-output head)", Form::Nn, (640, 512, 2)),
        ("TN  512x640x2", Form::Tn, (512, 640, 2)),
    ];
    let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.is_available()).collect();
    print!("{:<42}", "shape (m x k x n), GFLOP/s, 1 thread");
    for kernel in &kernels {
        print!("{:>22}", format!("{} med/best", kernel.name()));
    }
    println!();
    for (name, form, shape) in cases {
        print!("{name:<42}");
        for &kernel in &kernels {
            let (median, best) = gflops(kernel, form, shape, runs);
            print!("{:>16.1} /{:>5.0}", median, best);
        }
        println!();
    }
    println!();
    let sizes = [jrp_inputs, 512, 512, 100];
    println!("Mlp {sizes:?}, forward + backward with dx, preferred kernel ({}):", Kernel::preferred().name());
    // The network splits large products over the rayon pool, whose other threads' time the
    // calling thread's CPU time would not count: one thread, like the rows above.
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a thread pool");
    for rows in [16, 128, 960] {
        let (median, best) = one_thread.install(|| mlp_gflops(&sizes, rows, runs));
        println!("  {rows:>4} rows: {median:6.1} GFLOP/s median, {best:4.0} best");
    }
}
