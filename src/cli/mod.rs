//! The commands of `hmdpc`, one file each with its arguments and its `run`. A command parses
//! its flags, calls the library ([`hmdp::pipeline`] to compile, [`hmdp::sim`], [`hmdp::train`])
//! and prints; it owns no part of the pipeline.

mod act;
mod bench;
mod check;
mod compare;
mod compile;
mod eval;
pub mod exit;
mod export;
mod gradcheck;
mod instance;
mod report;
mod rollout;
mod simulate;
mod subjects;
mod sweep;
mod train;
mod tune;

use std::path::Path;

use clap::{Parser, Subcommand, ValueEnum};
use hmdp::backend::{Backend, Interp, jit::Jit};
use hmdp::check::Options;
use hmdp::diagnostics::Diagnostic;
use hmdp::ir::ValidModule;
use hmdp::pipeline::{self, Compiled, Failure};

#[derive(Parser)]
#[command(name = "hmdpc", version, about = "Compiler for hybrid discrete-continuous Markov decision processes")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check models for errors and print a one-line summary of each clean one.
    Check(check::Args),
    /// Run a policy on scenarios of a model and print the mean of each cost term and of the total,
    /// with a 95% confidence interval, scaled as the model's `report` says.
    Simulate(simulate::Args),
    /// Compile a model: print what it is and how smooth each cost and update is, or write the IR.
    Compile(compile::Args),
    /// Measure scenario-steps per second of the step and of step + VJP on every backend, side by
    /// side on the same batch, and print the ratios.
    Bench(bench::Args),
    /// Train a policy (HPO, its decentralised variant, or PPO) and write a run folder: the model,
    /// the command and seeds, the best and final checkpoints, the learning curve and its plot.
    Train(Box<train::Args>),
    /// Tune a policy the model declares: fit its tunable parameters on the train scenarios by
    /// Nelder–Mead, keep the best on dev, and write a run folder that `eval` reads.
    Tune(tune::Args),
    /// Evaluate a run's best policy (or the random policy) on the run's test scenarios: each cost
    /// term and the total with a 95% confidence interval, and how often each regime is chosen.
    Eval(eval::Args),
    /// Print the parameters drawn for an instance as JSON, so that results can be checked with
    /// other tools.
    Instance(instance::Args),
    /// Check the step's gradient (VJP) against central finite differences at random states and
    /// actions; print the largest relative error per input and exit 1 above the tolerance.
    Gradcheck(gradcheck::Args),
    /// Run several policies (run folders, or `random`) on the same test scenarios and print each
    /// cost term and the total, with 95% confidence intervals, and the paired difference to the
    /// first.
    Compare(compare::Args),
    /// Write the trajectories of a run's policy on test scenarios to CSV: one row per scenario
    /// and period with the states, the choices and their probabilities, the actions and the costs.
    Rollout(rollout::Args),
    /// Print, as JSON, the action a run's policy takes in a state given as JSON.
    Act(act::Args),
    /// Write a run's networks as safetensors with a JSON description, to run the policy without hmdp.
    Export(export::Args),
    /// Run a sweep file: one training run per combination of its axes (sizes, algorithms,
    /// settings, seeds), `--jobs` at a time, each tested on the test scenarios when it ends;
    /// finished runs are skipped and killed ones resumed when run again.
    Sweep(sweep::Args),
    /// Summarise a sweep's finished runs: per cell, the test cost's mean ± std and median over
    /// seeds, as tables (Markdown, CSV, JSON) and SVG plots.
    Report(report::Args),
}

/// Parses the command line; the matches say which flags were given (for `train --config`).
pub fn parse() -> Result<(Cli, clap::ArgMatches), clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// Runs one command; returns its exit code.
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> u8 {
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => {
            let train = matches.subcommand_matches("train");
            let given =
                |id: &str| train.is_some_and(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine));
            train::run(*args, &given)
        }
        Command::Tune(args) => tune::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Instance(args) => instance::run(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Act(args) => act::run(args),
        Command::Export(args) => export::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Report(args) => report::run(args),
    }
}

/// Whether a panic is `println!` failing because the reader of our output went away.
pub fn is_broken_pipe(message: &str) -> bool {
    message.contains("failed printing to stdout") && message.contains("Broken pipe")
}

/// Which kernels run a model's per-period programs. Every backend gives the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The IR interpreter, the reference (slow).
    Interp,
    /// Kernels compiled by Cranelift at run time.
    Jit,
    /// Kernels compiled from Rust with rustc's autodiff (Enzyme); built once per model and cached.
    Enzyme,
}

/// Whether diagnostics on stderr are coloured.
fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Compiles a model file for a command: prints the checker's warnings, or the failure and
/// returns its exit code.
fn compile_model(path: &Path, overrides: &[(String, f64)]) -> Result<Compiled, u8> {
    let compiled = pipeline::compile_file(path, &Options { overrides: overrides.to_vec() }).map_err(fail)?;
    if !compiled.warnings.is_empty() {
        eprint!("{}", compiled.source.render(&compiled.warnings, color()));
    }
    Ok(compiled)
}

/// Refuses a command whose memory need is above this machine's memory, at the declaration
/// that makes it large; returns the exit code.
fn fits(compiled: &Compiled, need: hmdp::resources::Need, command: &str) -> Result<(), u8> {
    let Some(memory) = hmdp::resources::machine_memory() else {
        return Ok(());
    };
    need.fits(memory, command).map_err(|refused| fail(pipeline::too_large(compiled, refused)))
}

/// Prints a compile failure and gives its exit code.
fn fail(failure: Failure) -> u8 {
    eprint!("{}", failure.render(color()));
    match failure {
        Failure::Model { .. } => exit::FAILED,
        Failure::Read(_) | Failure::Override(_) => exit::USAGE,
        Failure::Internal { .. } => exit::INTERNAL,
    }
}

/// Prints a located run-time error of a model and returns its exit code.
fn run_error(compiled: &Compiled, e: hmdp::backend::RunError) -> u8 {
    let d = Diagnostic::error("run", e.message, e.span, "while evaluating this");
    eprint!("{}", compiled.source.render(&[d], false));
    exit::FAILED
}

/// The model's JIT kernels; a JIT failure is our bug.
/// The policy `name` declares in the compiled model, with its tunables at `values` (their start
/// values when `None`); `None` for `random`. An unknown name is refused with the names there are.
fn declared_policy(
    compiled: &Compiled,
    name: &str,
    values: Option<&[f64]>,
) -> Result<Option<hmdp::sim::policy::DeclaredPolicy>, u8> {
    if name == "random" && compiled.policy(name).is_none() {
        return Ok(None);
    }
    let Some(program) = compiled.policy(name) else {
        let mut names: Vec<&str> = compiled.policies.iter().map(|p| p.name.as_str()).collect();
        names.push("random");
        eprintln!(
            "error: model {} declares no policy `{name}`; the policies are: {}",
            compiled.module.name,
            names.join(", ")
        );
        return Err(exit::USAGE);
    };
    hmdp::sim::policy::DeclaredPolicy::new(&compiled.module, program, values).map(Some).map_err(|message| {
        eprintln!("error: {message}");
        exit::FAILED
    })
}

fn compile_jit(module: &ValidModule) -> Result<Jit, u8> {
    Jit::compile(module).map_err(|e| {
        eprintln!("error: internal error: {e}; please report this with the model");
        exit::INTERNAL
    })
}

/// Builds (once per model version, then cached) and loads the Enzyme kernels of a model; says so
/// on stderr when it builds. A missing toolchain or cache folder is a usage error; the compiler
/// failing on the emitted crate is our bug.
fn load_enzyme(compiled: &Compiled) -> Result<hmdp::backend::enzyme::Enzyme<'_>, u8> {
    use hmdp::backend::enzyme::{self, Error};
    let report = |e: Error| {
        eprintln!("error: {e}");
        if matches!(e, Error::Build { .. } | Error::Load { .. }) { exit::INTERNAL } else { exit::USAGE }
    };
    let settings = enzyme::Settings::from_env().map_err(report)?;
    let path = Path::new(&compiled.source.name);
    let file = path.file_name().map_or_else(|| compiled.source.name.clone(), |n| n.to_string_lossy().into_owned());
    let prepared = enzyme::prepare(&compiled.module, &file, &compiled.source.text, &settings).map_err(report)?;
    let started = std::time::Instant::now();
    let building = !prepared.is_cached();
    if let enzyme::Status::Rejected(reason) = prepared.status() {
        eprintln!(
            "the cached Enzyme kernels in {} are not used: {reason}; building them again",
            prepared.entry().display()
        );
    }
    if building {
        eprintln!(
            "building the Enzyme kernels of {} with {} (once per version of the model; cached in {})",
            compiled.source.name,
            settings.toolchain,
            prepared.entry().display()
        );
    }
    let backend = prepared.load().map_err(report)?;
    if building {
        eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(backend)
}

/// The kernels a command runs on, held for as long as it runs.
enum Kernels<'m> {
    Interp(Interp<'m>),
    Jit(Box<Jit>),
    Enzyme(hmdp::backend::enzyme::Enzyme<'m>),
}

impl<'m> Kernels<'m> {
    /// Compiles or loads the chosen backend for a compiled model.
    fn load(choice: BackendChoice, compiled: &'m Compiled) -> Result<Kernels<'m>, u8> {
        Ok(match choice {
            BackendChoice::Interp => Kernels::Interp(Interp::new(&compiled.module)),
            BackendChoice::Jit => Kernels::Jit(Box::new(compile_jit(&compiled.module)?)),
            BackendChoice::Enzyme => Kernels::Enzyme(load_enzyme(compiled)?),
        })
    }

    fn backend(&self) -> &dyn Backend {
        match self {
            Kernels::Interp(k) => k,
            Kernels::Jit(k) => k.as_ref(),
            Kernels::Enzyme(k) => k,
        }
    }
}

/// Prints a table of estimates: one line per cost term and the total, names padded to one
/// width (names of any length).
fn print_estimates(rows: &[(&str, hmdp::sim::Estimate)]) {
    let width = rows.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(5).max(5);
    for (name, e) in rows {
        let pad = " ".repeat(width - name.chars().count());
        println!("  {name}{pad}  {:>12.4} ± {:.4}", e.mean, e.half_width);
    }
}
