//! `hmdpc gradcheck`: the step's gradient (VJP) against central finite differences, and a
//! compiled backend against the interpreter.

use std::path::PathBuf;

use hmdp::backend::{Backend, Interp};
use hmdp::train::config::parse_override;

use super::{BackendChoice, Kernels, exit};

/// How closely a compiled backend must reproduce the interpreter: to rounding.
const AGREEMENT: f64 = 1e-12;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (`.hmdp`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Which backend's gradient to check (`interp`, `jit`, `enzyme`), or `all` to compare every
    /// backend with each other and with finite differences.
    #[arg(long, default_value = "interp", value_parser = parse_backends)]
    backend: Backends,
    /// Number of random points.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    points: u64,
    /// Seed of the points.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest acceptable relative error.
    #[arg(long, default_value_t = 1e-6, value_parser = hmdp::train::config::positive)]
    tolerance: f64,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
}

/// The backends a gradient check compares: one, or all of them.
#[derive(Clone, Debug)]
struct Backends(Vec<BackendChoice>);

fn parse_backends(text: &str) -> Result<Backends, String> {
    use clap::ValueEnum;
    if text == "all" {
        return Ok(Backends(BackendChoice::value_variants().to_vec()));
    }
    BackendChoice::from_str(text, false)
        .map(|one| Backends(vec![one]))
        .map_err(|_| format!("expected interp, jit, enzyme or all, found `{text}`"))
}

pub fn run(args: Args) -> u8 {
    let compiled = match super::compile_model(&args.file, &args.overrides) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let module = &compiled.module;
    let name = &compiled.source.name;
    let (points, seed, tolerance) = (args.points as usize, args.seed, args.tolerance);
    // The instance, a point and its perturbed copies.
    let need = hmdp::resources::Need::new().model(module).scenarios_at_once(module, 3);
    if let Err(code) = super::fits(&compiled, need, "gradcheck") {
        return code;
    }
    let instance = match hmdp::sim::instance(module, seed) {
        Ok(instance) => instance,
        Err(e) => return super::run_error(&compiled, e),
    };
    let interp = Interp::new(module);
    if args.backend.0 == [BackendChoice::Interp] {
        return against_differences(&compiled, &interp, &instance, points, seed, tolerance);
    }
    // A compiled backend is compared with the interpreter (to rounding) and, like it, with
    // finite differences.
    let mut loaded = Vec::new();
    for &choice in args.backend.0.iter().filter(|&&c| c != BackendChoice::Interp) {
        match Kernels::load(choice, &compiled) {
            Ok(kernels) => loaded.push(kernels),
            Err(code) => return code,
        }
    }
    let mut all: Vec<&dyn Backend> = vec![&interp];
    all.extend(loaded.iter().map(Kernels::backend));
    let table = match hmdp::sim::compare::compare(module, &instance, &all, points, seed, tolerance, AGREEMENT) {
        Ok(table) => table,
        Err(e) => return super::run_error(&compiled, e),
    };
    print!("{}", table.render(name));
    let failures = table.failures();
    for pair in &failures {
        let limit = table.limit(pair);
        for d in pair.forward.iter().chain([&pair.vjp]).filter(|d| d.max_error > limit) {
            if let Some((buffer, point, element, left, right)) = &d.worst {
                eprintln!(
                    "error: {} and {} differ at `{buffer}` (element {element} at point {point}): {left:e} and {right:e}",
                    pair.left, pair.right
                );
            }
        }
    }
    let worst = table.max_error();
    if !failures.is_empty() {
        eprintln!(
            "error: a difference is above its tolerance ({AGREEMENT:e} between backends, {tolerance:e} against finite differences)"
        );
        return exit::FAILED;
    }
    println!(
        "ok: largest relative difference {worst:.3e} (tolerance {AGREEMENT:e} between backends, {tolerance:e} against finite differences)"
    );
    exit::OK
}

/// The interpreter's VJP against finite differences, input by input.
fn against_differences(
    compiled: &hmdp::pipeline::Compiled,
    interp: &Interp,
    instance: &hmdp::backend::Buffers,
    points: usize,
    seed: u64,
    tolerance: f64,
) -> u8 {
    let report = match hmdp::sim::gradcheck::check_backend(interp, &compiled.module, instance, seed, points) {
        Ok(report) => report,
        Err(e) => return super::run_error(compiled, e),
    };
    println!(
        "gradcheck {}: backend interp against central finite differences, {points} random points",
        compiled.source.name
    );
    let width = report.inputs.iter().map(|i| i.name.chars().count()).max().unwrap_or(0).max(16);
    let pad = |text: &str| format!("{text}{}", " ".repeat(width - text.chars().count()));
    println!("  {} {:>8} {:>9}  {:>14}", pad("input"), "checked", "at kinks", "max rel. error");
    for input in &report.inputs {
        println!("  {} {:>8} {:>9}  {:>14.3e}", pad(&input.name), input.checked, input.at_kinks, input.max_error);
    }
    let worst = report.max_error();
    if worst > tolerance {
        if let Some(input) = report.inputs.iter().find(|i| i.max_error == worst)
            && let Some((point, element, ad, fd)) = input.worst
        {
            eprintln!(
                "error: the gradient of `{}` (element {element} at point {point}) is {ad:e}, finite differences give {fd:e}",
                input.name
            );
        }
        eprintln!("error: largest relative error {worst:.3e} is above the tolerance {tolerance:e}");
        return exit::FAILED;
    }
    println!("ok: largest relative error {worst:.3e} (tolerance {tolerance:e})");
    exit::OK
}
