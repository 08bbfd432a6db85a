//! `hmdpc tune`: fits a declared policy's tunable parameters on the train scenarios, keeps the
//! best on dev, and writes a run folder that `hmdpc eval` reads like a trained one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hmdp::train::Config;
use hmdp::train::config::parse_override;
use hmdp::tune::{Inputs, TuneError};

use super::{BackendChoice, Kernels, exit};

#[derive(clap::Args)]
pub struct Args {
    /// Model file (`.hmdp`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The declared policy to tune (`policy NAME { ... }` in the model).
    #[arg(long, value_name = "NAME")]
    policy: String,
    /// Start values that replace the declared ones, e.g. `--start s=12,S=40` (within the declared
    /// bounds).
    #[arg(long, value_name = "NAME=VALUE,...", value_delimiter = ',', value_parser = parse_override)]
    start: Vec<(String, f64)>,
    /// The run folder [default: runs/MODEL-tune-POLICY].
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace the files of an existing run folder.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue a stopped or killed run in the run folder, with the command line it was started
    /// with (`--evaluations` may be raised): its logged evaluations are replayed, then the search
    /// goes on as if it had not stopped.
    #[arg(long)]
    resume: bool,
    /// The most evaluations of the train cost (one evaluation scores every train scenario).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    evaluations: u64,
    /// Scenarios in each of the train, dev and test sets (as `train --scenarios`).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: u64,
    /// Seed of the train, dev and test scenario sets (as `train --scenario-seed`).
    #[arg(long, default_value_t = 0)]
    scenario_seed: u64,
    /// Seed of the instance (the parameters drawn once).
    #[arg(long, default_value_t = 0)]
    instance_seed: u64,
    /// Which kernels run the model's per-period programs (the numbers are the same).
    #[arg(long, value_enum, default_value_t = BackendChoice::Jit)]
    backend: BackendChoice,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
}

pub fn run(args: Args) -> u8 {
    let compiled = match super::compile_model(&args.file, &args.overrides) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let module = &compiled.module;
    let folder =
        args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-tune-{}", module.name, args.policy)));
    if folder.exists() && !args.force && !args.resume {
        eprintln!(
            "error: the run folder {} exists; pass --force to replace its files, --resume to continue it, or --out to choose another",
            folder.display()
        );
        return exit::USAGE;
    }
    if args.resume && !folder.join(hmdp::tune::EVALUATIONS).exists() {
        eprintln!(
            "error: --resume: {} holds no {} to continue from: it is not a run of `hmdpc tune`, or it was never started",
            folder.display(),
            hmdp::tune::EVALUATIONS
        );
        return exit::USAGE;
    }
    if let Err(code) = super::declared_policy(&compiled, &args.policy, None).and_then(|p| {
        p.map(|_| ()).ok_or_else(|| {
            eprintln!("error: `random` has nothing to tune; name a policy the model declares");
            exit::USAGE
        })
    }) {
        return code;
    }
    if let Some(program) = compiled.policy(&args.policy)
        && let Err(message) = hmdp::tune::start_values(program, &args.start)
    {
        eprintln!("error: {message}");
        return exit::USAGE;
    }
    let n = args.scenarios as usize;
    let need = hmdp::resources::Need::new().model(module).scenarios_at_once(module, n.min(1024));
    if let Err(code) = super::fits(&compiled, need, "tune") {
        return code;
    }
    let kernels = match Kernels::load(args.backend, &compiled) {
        Ok(kernels) => kernels,
        Err(code) => return code,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C kills the process at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
    }
    let config = Config {
        scenarios: n,
        scenario_seed: args.scenario_seed,
        instance_seed: args.instance_seed,
        set: args.overrides.clone(),
        ..Config::default()
    };
    println!(
        "tune {}: policy `{}` by Nelder–Mead on backend {}, at most {} evaluations on {} train scenarios, scenario seed {}, run folder {}",
        compiled.source.name,
        args.policy,
        kernels.backend().name(),
        args.evaluations,
        n,
        args.scenario_seed,
        folder.display()
    );
    let inputs = Inputs {
        compiled: &compiled,
        backend: kernels.backend(),
        policy: args.policy.clone(),
        start: args.start.clone(),
        evaluations: args.evaluations as usize,
        config,
        folder: folder.clone(),
        command: std::env::args().collect(),
        stop,
        progress: !args.quiet,
        resume: args.resume,
    };
    let outcome = match hmdp::tune::tune(&inputs) {
        Ok(outcome) => outcome,
        Err(TuneError::Run(e)) => return super::run_error(&compiled, e),
        Err(e @ TuneError::Resume(_)) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    println!(
        "{} {} evaluations in {:.1} s; dev cost {:.4} at the start, best {:.4} at evaluation {}",
        if outcome.interrupted { "stopped after" } else { "done:" },
        outcome.evaluations,
        outcome.seconds,
        outcome.start_dev,
        outcome.best_dev,
        outcome.best_evaluation
    );
    let width = outcome.best.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for ((name, best), (_, start)) in outcome.best.iter().zip(&outcome.start) {
        println!("  {name:<width$}  {best:>12.4}  (start {start})");
    }
    println!("run folder: {} (evaluate with `hmdpc eval {}`)", folder.display(), folder.display());
    exit::OK
}
