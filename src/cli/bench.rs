//! `hmdpc bench`: scenario-steps per second of the step and of step + VJP on every backend,
//! side by side on the same batch, with the ratios.

use std::path::PathBuf;

use hmdp::bench::{Row, measure, measure_interpreter, random_batch};
use hmdp::train::config::parse_override;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (`.hmdp`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Scenarios per batch.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Seconds spent on each row, over its rounds (the median is reported).
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("expected a number of seconds in (0, 3600], found `{text}`")),
    }
}

const BENCH_ROUNDS: usize = 3;

pub fn run(args: Args) -> u8 {
    let (batch, seconds, overrides) = (args.batch as usize, args.seconds, &args.overrides);
    let compiled = match super::compile_model(&args.file, overrides) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let (module, name) = (&compiled.module, &compiled.source.name);
    let fail = |e: hmdp::backend::RunError| super::run_error(&compiled, e);
    // The batch, and the copy each measured backend works on.
    let need = hmdp::resources::Need::new().model(module).scenarios_at_once(module, batch.saturating_mul(2));
    if let Err(code) = super::fits(&compiled, need, "bench") {
        return code;
    }
    let started = std::time::Instant::now();
    let jit = match super::compile_jit(module) {
        Ok(jit) => jit,
        Err(code) => return code,
    };
    let compile_time = started.elapsed();
    let instance = match hmdp::sim::instance(module, 0) {
        Ok(instance) => instance,
        Err(e) => return fail(e),
    };
    let work = match random_batch(module, &instance, 0, batch) {
        Ok(work) => work,
        Err(e) => return fail(e),
    };
    let threads = rayon::current_num_threads();
    let budget = std::time::Duration::from_secs_f64(seconds);
    let sizes: Vec<String> = overrides.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!(
        "bench {name}{}: batch {batch}, {threads} threads, JIT compiled in {:.1} ms",
        if sizes.is_empty() { String::new() } else { format!(" ({})", sizes.join(", ")) },
        compile_time.as_secs_f64() * 1e3
    );
    // The Enzyme kernels, when the toolchain can build them (it says why not otherwise).
    let enzyme = super::load_enzyme(&compiled).ok();
    let reference = hmdp::backend::reference::for_module(module);
    // Every row is measured in each of a few rounds, one after another, and keeps its median
    // over the rounds: a machine that slows down for a while slows every row, not just one.
    let per_round = budget / BENCH_ROUNDS as u32;
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for _ in 0..BENCH_ROUNDS {
        let mut measured = vec![measure_interpreter(module, &work, threads, per_round)];
        measured.push(measure(&jit, &work, threads, per_round));
        if threads > 1 {
            measured.push(measure(&jit, &work, 1, per_round));
        }
        if let Some(enzyme) = &enzyme {
            measured.push(measure(enzyme, &work, threads, per_round));
        }
        if let Some(reference) = &reference {
            measured.push(measure(reference.as_ref(), &work, threads, per_round));
        }
        match measured.into_iter().collect::<Result<Vec<Row>, _>>() {
            Ok(round) => rounds.push(round),
            Err(e) => return fail(e),
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rows: Vec<Row> = (0..rounds[0].len())
        .map(|k| Row {
            forward: median(rounds.iter().map(|r| r[k].forward).collect()),
            forward_vjp: median(rounds.iter().map(|r| r[k].forward_vjp).collect()),
            ..rounds[0][k].clone()
        })
        .collect();
    println!("  {:<10} {:>7}  {:>18}  {:>18}", "backend", "threads", "step (steps/s)", "step+vjp (steps/s)");
    for r in &rows {
        println!("  {:<10} {:>7}  {:>18.4e}  {:>18.4e}", r.backend, r.threads, r.forward, r.forward_vjp);
    }
    let find = |backend: &str, t: usize| rows.iter().find(|r| r.backend == backend && r.threads == t);
    let ratio = |a: Option<&Row>, b: Option<&Row>, what: &str| {
        if let (Some(a), Some(b)) = (a, b) {
            println!("  {what}: step {:.2}x, step+vjp {:.2}x", a.forward / b.forward, a.forward_vjp / b.forward_vjp);
        }
    };
    ratio(find("jit", threads), find("interp", threads), "jit / interp");
    ratio(find("jit", threads), find("reference", threads), "jit / reference (hand-written Rust)");
    ratio(find("enzyme", threads), find("reference", threads), "enzyme / reference (hand-written Rust)");
    ratio(find("jit", threads), find("enzyme", threads), "jit / enzyme");
    if threads > 1 {
        ratio(find("jit", threads), find("jit", 1), &format!("jit {threads} threads / 1 thread"));
    }
    if reference.is_none() {
        println!("  (no hand-written reference for this model: only inventory and switched_lqr have one)");
    }
    exit::OK
}
