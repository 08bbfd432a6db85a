//! `hmdpc`, the command line: reads files, runs the front end, renders diagnostics.
//!
//! Exit codes: 0 all models are clean (warnings allowed), 1 a model has errors, 2 usage errors
//! (bad flags, missing files), which clap also uses for its own errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hmdp::check::{self, DataFiles, Options};
use hmdp::diagnostics;

#[derive(Parser)]
#[command(name = "hmdpc", version, about = "Compiler for hybrid discrete-continuous Markov decision processes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check models for errors and print a one-line summary of each clean one.
    Check {
        /// Model files (`.hmdp`).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, f64)>,
        /// How to print diagnostics: `human` (rendered with source) or `json` (one object per line).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Run a policy on scenarios of a model and print the mean of each cost term and of the total,
    /// with a 95% confidence interval, scaled as the model's `report` says.
    Simulate {
        /// Model file (`.hmdp`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The policy to run.
        #[arg(long, value_enum, default_value_t = PolicyChoice::Random)]
        policy: PolicyChoice,
        /// Number of scenarios.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        scenarios: u64,
        /// Seed of the scenarios (initial states, noise) and of the policy's randomness.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Seed of the instance: the parameters drawn once (`param x ~ ...`).
        #[arg(long, default_value_t = 0)]
        instance_seed: u64,
        /// Which fixed scenario set to draw from.
        #[arg(long = "scenario-set", value_enum, default_value_t = SetChoice::Test)]
        scenario_set: SetChoice,
        /// Which kernels run the model's per-period programs (the numbers are the same).
        #[arg(long, value_enum, default_value_t = TrainBackend::Interp)]
        backend: TrainBackend,
        /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, f64)>,
    },
    /// Compile a model: print what it is and how smooth each cost and update is, or write the IR.
    Compile {
        /// Model file (`.hmdp`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// What to print: the smoothness `report`, or the textual `ir` (with its VJP); or write the
        /// Enzyme backend's Rust crate (`rust`, with `-o DIR`).
        #[arg(long, value_enum, default_value_t = Emit::Report)]
        emit: Emit,
        /// The folder `--emit rust` writes the crate into.
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: Option<PathBuf>,
        /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, f64)>,
    },
    /// Measure scenario-steps per second of the step and of step + VJP on every backend, side by
    /// side on the same batch, and print the ratios.
    Bench {
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
    },
    /// Train a policy (HPO, its decentralised variant, or PPO) and write a run folder: the model,
    /// the command and seeds, the best and final checkpoints, the learning curve and its plot.
    Train(Box<TrainArgs>),
    /// Evaluate a run's best policy (or the random policy) on the run's test scenarios: each cost
    /// term and the total with a 95% confidence interval.
    Eval {
        /// A run folder written by `hmdpc train`.
        #[arg(value_name = "RUN_DIR")]
        run: PathBuf,
        /// Which policy: the run's `best` (on dev) or `final` checkpoint, or `random`.
        #[arg(long, value_enum, default_value_t = EvalPolicy::Best)]
        policy: EvalPolicy,
        /// Number of test scenarios (default: as many as the run's sets).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        scenarios: Option<u64>,
    },
    /// Print the parameters drawn for an instance, so that results can be checked with other tools.
    Instance {
        /// Model file (`.hmdp`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Seed of the instance (`--instance-seed` of `train` and `simulate`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print JSON (the only format for now).
        #[arg(long)]
        json: bool,
        /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, f64)>,
    },
    /// Check the step's gradient (VJP) against central finite differences at random states and
    /// actions; print the largest relative error per input and exit 1 above the tolerance.
    Gradcheck {
        /// Model file (`.hmdp`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Which backend's gradient to check.
        #[arg(long, value_enum, default_value_t = Backend::Interp)]
        backend: Backend,
        /// Number of random points.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        points: u64,
        /// Seed of the points.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Largest acceptable relative error.
        #[arg(long, default_value_t = 1e-6, value_parser = parse_tolerance)]
        tolerance: f64,
        /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, f64)>,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Model file (`.hmdp`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The algorithm.
    #[arg(long, value_enum, default_value_t = AlgoChoice::Hpo)]
    algo: AlgoChoice,
    /// The run folder to write (default: runs/MODEL-ALGO-sSEED).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace the files of an existing run folder.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue an existing run, exactly where it stopped, until it has `--updates` updates.
    #[arg(long)]
    resume: bool,
    /// The least number of seconds between two writes of the checkpoint a killed run resumes
    /// from (`latest.ckpt`, written at a dev evaluation).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = parse_non_negative)]
    save_every: f64,
    /// Policy updates in all (one rollout of `--batch` scenarios each).
    #[arg(long, default_value_t = 1600, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    updates: u64,
    /// Scenarios per update.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Adam learning rate (default 1e-3 for HPO, 1e-4 for PPO).
    #[arg(long, value_parser = parse_positive)]
    lr: Option<f64>,
    /// Hidden layer sizes of every network, e.g. `512,512`.
    #[arg(long, default_value = "512,512", value_parser = parse_hidden)]
    hidden: Hidden,
    /// Seed of the scenario sets, the initialisation and the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the instance (the parameters drawn once).
    #[arg(long, default_value_t = 0)]
    instance_seed: u64,
    /// Scenarios in each of the train, dev and test sets.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: u64,
    /// Discount of the GAE advantages (default: the model's `discount` if below 1, else 0.99).
    #[arg(long, value_parser = parse_unit)]
    gamma: Option<f64>,
    /// GAE's lambda.
    #[arg(long, default_value_t = 0.96, value_parser = parse_unit)]
    lambda: f64,
    /// PPO clip range.
    #[arg(long, default_value_t = 0.15, value_parser = parse_positive)]
    clip: f64,
    /// PPO epochs per update (the first is one full-batch step).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    epochs: u64,
    /// Minibatches of the later epochs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000))]
    minibatches: u64,
    /// Weight of the value loss.
    #[arg(long, default_value_t = 0.15, value_parser = parse_nonnegative)]
    value_coef: f64,
    /// Entropy weight at the first update, annealed linearly to `--entropy-end`.
    #[arg(long, default_value_t = 0.5, value_parser = parse_nonnegative)]
    entropy_start: f64,
    #[arg(long, default_value_t = 0.001, value_parser = parse_nonnegative)]
    entropy_end: f64,
    /// Weight of the pathwise loss (HPO).
    #[arg(long, default_value_t = 5.0, value_parser = parse_nonnegative)]
    pathwise_coef: f64,
    /// Gradient-norm clip of each parameter group.
    #[arg(long, default_value_t = 5.0, value_parser = parse_positive)]
    max_grad_norm: f64,
    /// Stop an update's later epochs when the approximate KL divergence exceeds this (0: never).
    #[arg(long, default_value_t = 0.015, value_parser = parse_nonnegative)]
    target_kl: f64,
    /// Steps left out of the losses at each end of the horizon (default: the model's `warmup`).
    #[arg(long)]
    buffer_periods: Option<u64>,
    /// Adam's epsilon.
    #[arg(long, default_value_t = 1e-5, value_parser = parse_positive)]
    adam_eps: f64,
    /// Feed the networks raw features instead of running-normalised ones.
    #[arg(long)]
    no_normalize: bool,
    /// Size of the first actions on a half-line (default: the mean size of the noise).
    #[arg(long, value_parser = parse_positive)]
    action_scale: Option<f64>,
    /// Added to the raw output inside the softplus of a half-line action.
    #[arg(long, default_value_t = 1.0, value_parser = parse_finite, allow_negative_numbers = true)]
    action_shift: f64,
    /// Which kernels run the model.
    #[arg(long, value_enum, default_value_t = TrainBackend::Jit)]
    backend: TrainBackend,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// At the end, print how the time per update divides between its parts (rollout, values,
    /// first step, pathwise, minibatches, optimizer).
    #[arg(long)]
    breakdown: bool,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
}

#[derive(Clone, Debug)]
struct Hidden(Vec<usize>);

fn parse_hidden(text: &str) -> Result<Hidden, String> {
    let sizes: Result<Vec<usize>, _> = text.split(',').map(|p| p.trim().parse::<usize>()).collect();
    match sizes {
        Ok(s) if !s.is_empty() && s.iter().all(|n| (1..=65536).contains(n)) => Ok(Hidden(s)),
        _ => Err(format!("expected layer sizes such as `512,512` (each 1 to 65536), found `{text}`")),
    }
}

fn parse_positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a positive number, found `{text}`")),
    }
}

fn parse_non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a number of at least 0, found `{text}`")),
    }
}

fn parse_finite(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("expected a finite number, found `{text}`")),
    }
}

fn parse_nonnegative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a number >= 0, found `{text}`")),
    }
}

fn parse_unit(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number in [0, 1], found `{text}`")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgoChoice {
    /// Hybrid Policy Optimization: pathwise + score-function gradients with the cross term.
    Hpo,
    /// HPO without the cross term (decentralised).
    HpoNocross,
    /// PPO with Gaussian continuous actions, no gradient through the simulator.
    Ppo,
}

#[derive(Clone, Copy, ValueEnum)]
enum TrainBackend {
    /// The IR interpreter (slow; for checking).
    Interp,
    /// Kernels compiled by Cranelift at run time.
    Jit,
    /// Kernels compiled from Rust with rustc's autodiff (Enzyme); built once per model and cached.
    Enzyme,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum EvalPolicy {
    Best,
    Final,
    Random,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// States, actions, and the smoothness of each cost and update.
    Report,
    /// The IR in its textual form.
    Ir,
    /// The Cranelift IR of the JIT's kernels (bounds, regimes, step, vjp).
    Clif,
    /// A Rust crate whose step's VJP comes from rustc's autodiff (Enzyme), into `-o DIR`.
    Rust,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The IR interpreter, the reference.
    Interp,
    /// Kernels compiled by Cranelift at run time.
    Jit,
    /// Kernels compiled from Rust with rustc's autodiff (Enzyme); built once per model and cached.
    Enzyme,
    /// Every backend against each other and against finite differences.
    All,
}

/// How closely a compiled backend must reproduce the interpreter: to rounding.
const AGREEMENT: f64 = 1e-12;

#[derive(Clone, Copy, ValueEnum)]
enum PolicyChoice {
    /// Uniform random actions within the bounds.
    Random,
}

#[derive(Clone, Copy, ValueEnum)]
enum SetChoice {
    Train,
    Dev,
    Test,
}

#[derive(Clone, Copy, ValueEnum)]
enum MessageFormat {
    Human,
    Json,
}

fn parse_override(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, found `{text}`"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{name}` is not a name"));
    }
    let value: f64 = value.trim().parse().map_err(|_| format!("`{}` is not a number", value.trim()))?;
    if !value.is_finite() {
        return Err(format!("`{value}` is not a finite number"));
    }
    Ok((name.to_string(), value))
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("expected a number of seconds in (0, 3600], found `{text}`")),
    }
}

fn parse_tolerance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

/// Data files are read relative to the model file's folder.
struct Folder(PathBuf);

impl DataFiles for Folder {
    fn read(&self, path: &str) -> Result<String, String> {
        let full = self.0.join(path);
        std::fs::read_to_string(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("no file at {}", full.display()),
            std::io::ErrorKind::InvalidData => format!("{} is not UTF-8 text", full.display()),
            _ => format!("{}: {e}", full.display()),
        })
    }
}

/// Data files read through another reader, remembered with their text (what `train` keeps in
/// the run folder's `data.json`).
struct Recording<'a> {
    inner: &'a dyn DataFiles,
    seen: std::cell::RefCell<Vec<(String, String)>>,
}

impl DataFiles for Recording<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        let text = self.inner.read(path)?;
        let mut seen = self.seen.borrow_mut();
        if !seen.iter().any(|(p, _)| p == path) {
            seen.push((path.to_string(), text.clone()));
        }
        Ok(text)
    }
}

/// The data files a run folder's `data.json` recorded: the model is compiled with exactly the
/// values it was trained on, wherever the files are now.
struct Snapshot(Vec<(String, String)>);

impl DataFiles for Snapshot {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, text)| text.clone())
            .ok_or_else(|| format!("the run folder's data.json holds no file `{path}`"))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    // The front end recurses over expressions (bounded by the parser's depth limit); a large
    // stack keeps that bound far from the edge on every platform.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().downcast_ref::<String>().is_some_and(|m| is_broken_pipe(m)) {
            default_hook(info);
        }
    }));
    let worker = std::thread::Builder::new().stack_size(256 << 20).spawn(move || run(cli));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => ExitCode::from(code),
        // Output piped into a program that stopped reading (`hmdpc ... | head`): stop quietly,
        // as Unix tools do.
        Ok(Err(payload)) if payload.downcast_ref::<String>().is_some_and(|m| is_broken_pipe(m)) => ExitCode::from(141),
        _ => {
            eprintln!("error: hmdpc failed unexpectedly; please report this with the model that caused it");
            ExitCode::from(3)
        }
    }
}

/// Whether a panic is `println!` failing because the reader of our output went away.
fn is_broken_pipe(message: &str) -> bool {
    message.contains("failed printing to stdout") && message.contains("Broken pipe")
}

fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Check { files, overrides, message_format } => check_files(&files, overrides, message_format),
        Command::Simulate { file, policy, scenarios, seed, instance_seed, scenario_set, backend, overrides } => {
            simulate(&file, policy, scenarios, seed, instance_seed, scenario_set, backend, overrides)
        }
        Command::Compile { file, emit, output, overrides } => compile(&file, emit, output.as_deref(), overrides),
        Command::Bench { file, batch, seconds, overrides } => bench(&file, batch as usize, seconds, overrides),
        Command::Train(args) => train(*args),
        Command::Eval { run, policy, scenarios } => eval(&run, policy, scenarios),
        Command::Instance { file, seed, json: _, overrides } => instance(&file, seed, overrides),
        Command::Gradcheck { file, backend, points, seed, tolerance, overrides } => {
            gradcheck(&file, backend, points, seed, tolerance, overrides)
        }
    }
}

fn check_files(files: &[PathBuf], overrides: Vec<(String, f64)>, format: MessageFormat) -> u8 {
    let mut sources = Vec::new();
    for path in files {
        match std::fs::read(path) {
            Ok(bytes) => sources.push((path, bytes)),
            Err(e) => {
                eprintln!("error: cannot read {}: {}", path.display(), describe_io(&e));
                return 2;
            }
        }
    }
    let options = Options { overrides };
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut stdout = std::io::stdout().lock();
    let mut failed = false;
    for (path, bytes) in sources {
        let name = path.display().to_string();
        let (source, encoding_error) = hmdp::syntax::decode(bytes);
        let (model, diagnostics) = match encoding_error {
            Some(d) => (None, vec![d]),
            None => {
                let folder = Folder(path.parent().map(Path::to_path_buf).unwrap_or_default());
                match hmdp::syntax::parse(&source) {
                    Err(diagnostics) => (None, diagnostics),
                    Ok(ast) => {
                        if let Some(code) = unknown_overrides(&ast, &options, &name) {
                            return code;
                        }
                        let outcome = check::check(&ast, &folder, &options);
                        (outcome.model, outcome.diagnostics)
                    }
                }
            }
        };
        match format {
            MessageFormat::Human => {
                let rendered = diagnostics::render(&diagnostics, &name, &source, color);
                eprint!("{rendered}");
            }
            MessageFormat::Json => {
                for d in &diagnostics {
                    let _ = writeln!(stdout, "{}", diagnostics::to_json(d, &name, &source));
                }
            }
        }
        match model {
            Some(model) => {
                if let MessageFormat::Human = format {
                    let _ = writeln!(stdout, "ok {name}: {}", check::summary(&model));
                }
            }
            None => {
                failed = true;
                if let MessageFormat::Human = format {
                    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                    eprintln!(
                        "error: {name}: {} found",
                        if errors == 1 { "1 error".to_string() } else { format!("{errors} errors") }
                    );
                }
            }
        }
    }
    u8::from(failed)
}

/// Reads and checks one model for the commands that go on to use it; diagnostics are rendered
/// on stderr. `Err` holds the exit code.
fn load(path: &Path, options: &Options, files: Option<&dyn DataFiles>) -> Result<check::CheckedModel, u8> {
    let bytes = std::fs::read(path).map_err(|e| {
        eprintln!("error: cannot read {}: {}", path.display(), describe_io(&e));
        2u8
    })?;
    let name = path.display().to_string();
    let (source, encoding_error) = hmdp::syntax::decode(bytes);
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fail = |diagnostics: &[hmdp::diagnostics::Diagnostic]| {
        eprint!("{}", diagnostics::render(diagnostics, &name, &source, color));
        1u8
    };
    if let Some(d) = encoding_error {
        return Err(fail(&[d]));
    }
    let ast = hmdp::syntax::parse(&source).map_err(|d| fail(&d))?;
    if let Some(code) = unknown_overrides(&ast, options, &name) {
        return Err(code);
    }
    let folder = Folder(path.parent().map(Path::to_path_buf).unwrap_or_default());
    let outcome = check::check(&ast, files.unwrap_or(&folder), options);
    match outcome.model {
        Some(model) => {
            if !outcome.diagnostics.is_empty() {
                eprint!("{}", diagnostics::render(&outcome.diagnostics, &name, &source, color));
            }
            Ok(model)
        }
        None => Err(fail(&outcome.diagnostics)),
    }
}

/// Checks, lowers, validates and differentiates a model: the compiler's whole pipeline.
fn compile_module(path: &Path, options: &Options) -> Result<(hmdp::ir::Module, String), u8> {
    compile_with_rewrites(path, options, None).map(|(module, source, _)| (module, source))
}

/// [`compile_module`] reading data files through `files` instead of from the model's folder.
fn compile_module_with(
    path: &Path,
    options: &Options,
    files: &dyn DataFiles,
) -> Result<(hmdp::ir::Module, String), u8> {
    compile_with_rewrites(path, options, Some(files)).map(|(module, source, _)| (module, source))
}

/// The pipeline, also returning what the reformulation rewrote.
fn compile_with_rewrites(
    path: &Path,
    options: &Options,
    files: Option<&dyn DataFiles>,
) -> Result<(hmdp::ir::Module, String, Vec<hmdp::passes::reformulate::Rewrite>), u8> {
    let model = load(path, options, files)?;
    let mut module = hmdp::ir::lower::lower(&model);
    let rewrites = hmdp::passes::reformulate::reformulate(&mut module);
    hmdp::passes::ad::differentiate(&mut module);
    if let Err(problems) = hmdp::ir::validate(&module) {
        eprintln!("error: internal error: the compiled model is invalid; please report this with the model:");
        for p in problems {
            eprintln!("  {p}");
        }
        return Err(3);
    }
    Ok((module, std::fs::read_to_string(path).unwrap_or_default(), rewrites))
}

fn compile(path: &Path, emit: Emit, output: Option<&Path>, overrides: Vec<(String, f64)>) -> u8 {
    match (emit, output) {
        (Emit::Rust, None) => {
            eprintln!("error: --emit rust writes a crate: give its folder with -o DIR");
            return 2;
        }
        (Emit::Report | Emit::Ir, Some(_)) => {
            eprintln!("error: -o is for --emit rust; the report and the IR are printed");
            return 2;
        }
        _ => {}
    }
    let (module, source, rewrites) = match compile_with_rewrites(path, &Options { overrides }, None) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    match emit {
        Emit::Rust => return write_crate(path, &module, &source, output.unwrap_or(Path::new("."))),
        Emit::Ir => print!("{}", hmdp::ir::text::print(&module)),
        Emit::Clif => match hmdp::backend::jit::Jit::clif(&module) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("error: internal error: {e}; please report this with the model");
                return 3;
            }
        },
        Emit::Report => {
            let analysis = hmdp::passes::smoothness::analyze(&module);
            let name = path.display().to_string();
            print!("{}", hmdp::passes::smoothness::render(&module, &analysis, &rewrites, &name, &source));
        }
    }
    0
}

/// `--emit rust -o DIR`: writes the crate, into a new or empty folder or over a crate hmdpc wrote.
fn write_crate(path: &Path, module: &hmdp::ir::Module, source: &str, dir: &Path) -> u8 {
    use hmdp::backend::{enzyme, rust};
    let file = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let toolchain = enzyme::toolchain_from_env();
    let krate = rust::emit(module, &rust::Origin { file: &file, source, toolchain: &toolchain });
    let is_empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
    let ours = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains(rust::MARKER));
    if dir.exists() && !dir.is_dir() {
        eprintln!("error: {} is not a folder", dir.display());
        return 2;
    }
    if !is_empty && !ours {
        eprintln!(
            "error: {} is not empty and holds no crate written by hmdpc; give a new or empty folder",
            dir.display()
        );
        return 2;
    }
    for (name, text) in &krate.files {
        let target = dir.join(name);
        let written =
            target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&target, text));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {}", target.display(), describe_io(&e));
            return 2;
        }
    }
    println!(
        "wrote the crate {} to {}: its step is src/lib.rs; build it with `cargo build --release` there",
        krate.package,
        dir.display()
    );
    0
}

/// Builds (once per model version, then cached) and loads the Enzyme kernels of a model; says so
/// on stderr when it builds. `Err` holds the exit code: 2 for a missing toolchain or cache
/// folder, 3 when the compiler fails on the emitted crate.
fn load_enzyme<'m>(
    module: &'m hmdp::ir::Module,
    path: &Path,
    source: &str,
) -> Result<hmdp::backend::enzyme::Enzyme<'m>, u8> {
    use hmdp::backend::enzyme::{self, Error};
    let code = |e: &Error| if matches!(e, Error::Build { .. } | Error::Load { .. }) { 3 } else { 2 };
    let report = |e: Error| {
        eprintln!("error: {e}");
        code(&e)
    };
    let settings = enzyme::Settings::from_env().map_err(report)?;
    let file = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let prepared = enzyme::prepare(module, &file, source, &settings).map_err(report)?;
    let started = std::time::Instant::now();
    let building = !prepared.is_cached();
    if building {
        eprintln!(
            "building the Enzyme kernels of {} with {} (once per version of the model; cached in {})",
            path.display(),
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

fn gradcheck(
    path: &Path,
    backend: Backend,
    points: u64,
    seed: u64,
    tolerance: f64,
    overrides: Vec<(String, f64)>,
) -> u8 {
    let (module, source) = match compile_module(path, &Options { overrides }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let name = path.display().to_string();
    let fail = |e: hmdp::sim::RunError| {
        let d = hmdp::diagnostics::Diagnostic::error("run", e.message, e.span, "while evaluating this");
        eprint!("{}", diagnostics::render(&[d], &name, &source, false));
        1u8
    };
    let instance = match hmdp::sim::instance(&module, seed) {
        Ok(instance) => instance,
        Err(e) => return fail(e),
    };
    let interp = hmdp::backend::Interp { module: &module };
    let jit = match backend {
        Backend::Jit | Backend::All => match compile_jit(&module) {
            Ok(compiled) => Some(compiled),
            Err(code) => return code,
        },
        Backend::Interp | Backend::Enzyme => None,
    };
    let enzyme = match backend {
        Backend::Enzyme | Backend::All => match load_enzyme(&module, path, &source) {
            Ok(enzyme) => Some(enzyme),
            Err(code) => return code,
        },
        Backend::Interp | Backend::Jit => None,
    };
    if !matches!(backend, Backend::Interp) {
        // A compiled backend is compared with the interpreter (to rounding) and, like it, with
        // finite differences; a new backend is one more line here.
        let mut all: Vec<&dyn hmdp::backend::Backend> = vec![&interp];
        all.extend(jit.as_ref().map(|j| j as &dyn hmdp::backend::Backend));
        all.extend(enzyme.as_ref().map(|e| e as &dyn hmdp::backend::Backend));
        let compared =
            hmdp::backend::compare::compare(&module, &instance, &all, points as usize, seed, tolerance, AGREEMENT);
        let table = match compared {
            Ok(table) => table,
            Err(e) => return fail(e),
        };
        print!("{}", table.render(&name));
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
            return 1;
        }
        println!(
            "ok: largest relative difference {worst:.3e} (tolerance {AGREEMENT:e} between backends, {tolerance:e} against finite differences)"
        );
        return 0;
    }
    let report = match hmdp::sim::gradcheck::check_backend(&interp, &module, &instance, seed, points as usize) {
        Ok(report) => report,
        Err(e) => return fail(e),
    };
    println!("gradcheck {name}: backend interp against central finite differences, {points} random points");
    println!("  {:<16} {:>8} {:>9}  {:>14}", "input", "checked", "at kinks", "max rel. error");
    for input in &report.inputs {
        println!("  {:<16} {:>8} {:>9}  {:>14.3e}", input.name, input.checked, input.at_kinks, input.max_error);
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
        return 1;
    }
    println!("ok: largest relative error {worst:.3e} (tolerance {tolerance:e})");
    0
}

/// Rounds of `hmdpc bench`: each row is measured once per round.
const BENCH_ROUNDS: usize = 3;

fn bench(path: &Path, batch: usize, seconds: f64, overrides: Vec<(String, f64)>) -> u8 {
    use hmdp::bench::{Row, measure, measure_interpreter, random_batch};
    let (module, source) = match compile_module(path, &Options { overrides: overrides.clone() }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let name = path.display().to_string();
    let fail = |e: hmdp::sim::RunError| {
        let d = hmdp::diagnostics::Diagnostic::error("run", e.message, e.span, "while evaluating this");
        eprint!("{}", diagnostics::render(&[d], &name, &source, false));
        1u8
    };
    let started = std::time::Instant::now();
    let jit = match compile_jit(&module) {
        Ok(jit) => jit,
        Err(code) => return code,
    };
    let compile_time = started.elapsed();
    let instance = match hmdp::sim::instance(&module, 0) {
        Ok(instance) => instance,
        Err(e) => return fail(e),
    };
    let work = match random_batch(&module, &instance, 0, batch) {
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
    let enzyme = load_enzyme(&module, path, &source).ok();
    let reference = hmdp::backend::reference::for_module(&module);
    // Every row is measured in each of a few rounds, one after another, and keeps its median
    // over the rounds: a machine that slows down for a while slows every row, not just one.
    let per_round = budget / BENCH_ROUNDS as u32;
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for _ in 0..BENCH_ROUNDS {
        let mut measured = vec![measure_interpreter(&module, &work, threads, per_round)];
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
    0
}

/// The model's JIT kernels; `Err` holds exit code 3 after saying so (a JIT failure is our bug).
fn compile_jit(module: &hmdp::ir::Module) -> Result<hmdp::backend::jit::Jit, u8> {
    hmdp::backend::jit::Jit::compile(module).map_err(|e| {
        eprintln!("error: internal error: {e}; please report this with the model");
        3
    })
}

/// Prints a located run-time error of a model and returns exit code 1.
fn run_error(name: &str, source: &str, e: hmdp::sim::RunError) -> u8 {
    let d = hmdp::diagnostics::Diagnostic::error("run", e.message, e.span, "while evaluating this");
    eprint!("{}", diagnostics::render(&[d], name, source, false));
    1
}

fn train(args: TrainArgs) -> u8 {
    use hmdp::train::{Algo, Config, TrainError, run};
    let folder_of_model = Folder(args.file.parent().map(Path::to_path_buf).unwrap_or_default());
    let recording = Recording { inner: &folder_of_model, seen: Default::default() };
    let options = Options { overrides: args.overrides.clone() };
    let (module, source) = match compile_module_with(&args.file, &options, &recording) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let data_files = recording.seen.into_inner();
    let name = args.file.display().to_string();
    let algo = match args.algo {
        AlgoChoice::Hpo => Algo::Hpo,
        AlgoChoice::HpoNocross => Algo::HpoNoCross,
        AlgoChoice::Ppo => Algo::Ppo,
    };
    let mut cfg = Config::defaults(algo, &module);
    cfg.updates = args.updates as usize;
    cfg.batch = args.batch as usize;
    if let Some(lr) = args.lr {
        cfg.lr = lr;
    }
    cfg.hidden = args.hidden.0.clone();
    cfg.seed = args.seed;
    cfg.instance_seed = args.instance_seed;
    cfg.scenarios = args.scenarios as usize;
    if let Some(g) = args.gamma {
        cfg.gamma = g;
    }
    cfg.lambda = args.lambda;
    cfg.clip = args.clip;
    cfg.epochs = args.epochs as usize;
    cfg.minibatches = args.minibatches as usize;
    cfg.value_coef = args.value_coef;
    cfg.entropy_start = args.entropy_start;
    cfg.entropy_end = args.entropy_end;
    cfg.pathwise_coef = args.pathwise_coef;
    cfg.max_grad_norm = args.max_grad_norm;
    cfg.target_kl = args.target_kl;
    if let Some(b) = args.buffer_periods {
        cfg.buffer_periods = b as usize;
    }
    cfg.adam_eps = args.adam_eps;
    cfg.normalize = !args.no_normalize;
    cfg.action_scale = args.action_scale;
    cfg.action_shift = args.action_shift;
    if cfg.batch > cfg.scenarios {
        eprintln!("error: --batch {} is larger than the training set (--scenarios {})", cfg.batch, cfg.scenarios);
        return 2;
    }
    let folder = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}-s{}", module.name, algo.name(), args.seed)));
    if folder.exists() && !args.force && !args.resume {
        eprintln!(
            "error: the run folder {} exists; pass --force to replace its files, --resume to continue it, or --out to choose another",
            folder.display()
        );
        return 2;
    }
    if args.resume && !["final.ckpt", "latest.ckpt", "best.ckpt"].iter().any(|name| folder.join(name).exists()) {
        eprintln!("error: --resume: {} holds no checkpoint to continue from", folder.display());
        return 2;
    }
    let interp = hmdp::backend::Interp { module: &module };
    let (jit, enzyme);
    let backend: &dyn hmdp::backend::Backend = match args.backend {
        TrainBackend::Interp => &interp,
        TrainBackend::Jit => match compile_jit(&module) {
            Ok(compiled) => {
                jit = compiled;
                &jit
            }
            Err(code) => return code,
        },
        TrainBackend::Enzyme => match load_enzyme(&module, &args.file, &source) {
            Ok(loaded) => {
                enzyme = loaded;
                &enzyme
            }
            Err(code) => return code,
        },
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C kills the process at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let inputs = run::RunInputs {
        module: &module,
        backend,
        source: &source,
        overrides: &args.overrides,
        command: std::env::args().collect(),
        folder: folder.clone(),
        data_files: &data_files,
        stop,
        progress: !args.quiet,
        resume: args.resume,
        save_every: args.save_every,
    };
    println!(
        "train {name}: {} on backend {}, {} updates of {} scenarios, seed {}, run folder {}",
        algo.name(),
        backend.name(),
        cfg.updates,
        cfg.batch,
        cfg.seed,
        folder.display()
    );
    let outcome = match run::train(inputs, cfg) {
        Ok(outcome) => outcome,
        Err(TrainError::Run(e)) => return run_error(&name, &source, e),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    println!(
        "{} {} updates in {:.1} s ({:.1} s in updates, {:.1} ms per update); best dev cost {:.4} at update {}",
        if outcome.error.is_some() {
            "stopped by an error after"
        } else if outcome.interrupted {
            "stopped after"
        } else {
            "done:"
        },
        outcome.updates,
        outcome.seconds,
        outcome.seconds_in_updates,
        1e3 * outcome.seconds_in_updates / outcome.updates.max(1) as f64,
        outcome.best_dev,
        outcome.best_update
    );
    if args.breakdown {
        let per_update = |seconds: f64| 1e3 * seconds / outcome.updates.max(1) as f64;
        let parts: Vec<String> = outcome
            .phases
            .parts()
            .iter()
            .map(|(name, seconds)| format!("{name} {:.1}", per_update(*seconds)))
            .collect();
        let rest = outcome.seconds_in_updates - outcome.phases.parts().iter().map(|p| p.1).sum::<f64>();
        println!(
            "ms per update: {}, other {:.1}; median update {:.1} ms",
            parts.join(", "),
            per_update(rest),
            1e3 * outcome.median_update
        );
    }
    println!("run folder: {} (evaluate with `hmdpc eval {}`)", folder.display(), folder.display());
    match outcome.error {
        Some(TrainError::Run(e)) => run_error(&name, &source, e),
        Some(e) => {
            eprintln!("error: {e}");
            1
        }
        None => 0,
    }
}

fn eval(folder: &Path, policy: EvalPolicy, scenarios: Option<u64>) -> u8 {
    use hmdp::train::{run, scenarios::Scenarios};
    let read = |file: &str| std::fs::read(folder.join(file)).map_err(|e| (file.to_string(), describe_io(&e)));
    let (source, run_json) = match (read("model.hmdp"), read("run.json")) {
        (Ok(s), Ok(r)) => (s, r),
        (Err((f, e)), _) | (_, Err((f, e))) => {
            eprintln!("error: {} is not a run folder: cannot read {f}: {e}", folder.display());
            return 2;
        }
    };
    let run_json: serde_json::Value = match serde_json::from_slice(&run_json) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {}/run.json is not valid JSON: {e}", folder.display());
            return 1;
        }
    };
    let overrides: Vec<(String, f64)> = run_json
        .pointer("/config/set")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_f64()?))).collect())
        .unwrap_or_default();
    // The data files the model read in training, if it read any. A run folder written before
    // `data.json` existed has none: its model reads them from the folder, as it did then.
    let data_files = match std::fs::read_to_string(folder.join("data.json")) {
        Ok(text) => match run::read_data_json(&text) {
            Ok(files) => Some(files),
            Err(e) => {
                eprintln!("error: {}/data.json: {e}", folder.display());
                return 1;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("error: cannot read {}/data.json: {}", folder.display(), describe_io(&e));
            return 2;
        }
    };
    let recorded = std::fs::read_to_string(folder.join("model.hash")).unwrap_or_default();
    let source = String::from_utf8_lossy(&source);
    if recorded.trim() != run::fingerprint(&source, data_files.as_deref().unwrap_or_default()) {
        eprintln!(
            "error: {}/model.hmdp or its data.json does not match model.hash: the model was changed after training, so its checkpoints may not fit it",
            folder.display()
        );
        return 1;
    }
    let model_path = folder.join("model.hmdp");
    let compiled = match data_files {
        Some(files) => compile_module_with(&model_path, &Options { overrides }, &Snapshot(files)),
        None => compile_module(&model_path, &Options { overrides }),
    };
    let (module, source_text) = match compiled {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let (mut cfg, _) = match run::read_config(&run_json, &module) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}/run.json: {e}", folder.display());
            return 1;
        }
    };
    if let Some(n) = scenarios {
        cfg.scenarios = n as usize;
    }
    let name = model_path.display().to_string();
    let instance = match hmdp::sim::instance(&module, cfg.instance_seed) {
        Ok(i) => i,
        Err(e) => return run_error(&name, &source_text, e),
    };
    let jit = match compile_jit(&module) {
        Ok(jit) => jit,
        Err(code) => return code,
    };
    let mut test_set = None;
    let (label, per_scenario, term_names) = if policy == EvalPolicy::Random {
        let summary = match hmdp::sim::simulate_per_scenario(
            &module,
            &instance,
            &hmdp::sim::RandomPolicy,
            cfg.seed,
            hmdp::sim::ScenarioSet::Test,
            cfg.scenarios,
        ) {
            Ok(s) => s,
            Err(e) => return run_error(&name, &source_text, e),
        };
        ("random policy".to_string(), summary, module.costs().map(|(_, b)| b.name.clone()).collect::<Vec<_>>())
    } else {
        let file = if policy == EvalPolicy::Best { "best.ckpt" } else { "final.ckpt" };
        let bytes = match std::fs::read(folder.join(file)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {}", folder.join(file).display(), describe_io(&e));
                if policy == EvalPolicy::Final && e.kind() == std::io::ErrorKind::NotFound {
                    eprintln!(
                        "  the run has not ended: it was killed, or is still training; `--policy best` evaluates its \
                         best checkpoint, and `hmdpc train ... --resume` finishes it"
                    );
                }
                return 1;
            }
        };
        let (nets, spec) = match run::load_nets(&module, &cfg, &bytes) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: {}: {e}", folder.join(file).display());
                return 1;
            }
        };
        let test = match Scenarios::draw(&module, &instance, cfg.seed, hmdp::sim::ScenarioSet::Test, cfg.scenarios) {
            Ok(t) => t,
            Err(e) => return run_error(&name, &source_text, e),
        };
        test_set = Some(test);
        let Some(test) = &test_set else { return 3 };
        let ctx = hmdp::train::rollout::Context { module: &module, spec: &spec, backend: &jit, instance: &instance };
        let evaluation = match hmdp::train::evaluate(&ctx, &nets, test) {
            Ok(e) => e,
            Err(hmdp::train::TrainError::Run(e)) => return run_error(&name, &source_text, e),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let names = spec.costs.iter().map(|&c| module.buffers[c].name.clone()).collect();
        (format!("{} checkpoint", file.trim_end_matches(".ckpt")), evaluation.per_scenario, names)
    };
    let scale_unit = hmdp::sim::report_unit(&module);
    println!(
        "eval {}: {label}, {} test scenarios (seed {}, instance seed {})",
        folder.display(),
        per_scenario.len(),
        cfg.seed,
        cfg.instance_seed
    );
    println!("cost {scale_unit} (mean ± 95% confidence interval):");
    let width = term_names.iter().map(|n| n.len()).max().unwrap_or(5).max(5);
    for (k, term) in term_names.iter().enumerate() {
        let values: Vec<f64> = per_scenario.iter().map(|r| r[k]).collect();
        let e = hmdp::sim::Estimate::of(&values);
        println!("  {term:<width$}  {:>12.4} ± {:.4}", e.mean, e.half_width);
    }
    let totals: Vec<f64> = per_scenario.iter().map(|r| r.iter().sum()).collect();
    let e = hmdp::sim::Estimate::of(&totals);
    println!("  {:<width$}  {:>12.4} ± {:.4}", "total", e.mean, e.half_width);
    // Where the exact optimum is known, the gap to it on the same scenarios.
    if let Some(riccati) = hmdp::train::riccati::of_module(&module, &instance, &jit)
        && let Some(test) = test_set.or_else(|| {
            Scenarios::draw(&module, &instance, cfg.seed, hmdp::sim::ScenarioSet::Test, per_scenario.len()).ok()
        })
        && let Some((_, x0)) = test.init.first()
    {
        let n = riccati.n;
        let optimum: Vec<f64> = x0.chunks(n).map(|x| riccati.cost(x) / hmdp::sim::report_scale(&module)).collect();
        let best = optimum.iter().sum::<f64>() / optimum.len().max(1) as f64;
        let gaps: Vec<f64> = totals.iter().zip(&optimum).map(|(t, o)| t - o).collect();
        let gap = hmdp::sim::Estimate::of(&gaps);
        println!(
            "  optimum (finite-horizon Riccati, same scenarios): {best:.4}; gap {:+.4} ± {:.4} ({:+.2}%)",
            gap.mean,
            gap.half_width,
            100.0 * gap.mean / best
        );
    }
    0
}

fn instance(path: &Path, seed: u64, overrides: Vec<(String, f64)>) -> u8 {
    let (module, source) = match compile_module(path, &Options { overrides }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let name = path.display().to_string();
    let instance = match hmdp::sim::instance(&module, seed) {
        Ok(i) => i,
        Err(e) => return run_error(&name, &source, e),
    };
    let mut params = serde_json::Map::new();
    for (id, b) in module.buffers.iter().enumerate() {
        if b.kind != hmdp::ir::BufferKind::Param {
            continue;
        }
        let dims: Vec<usize> = b.dims.iter().map(|&d| module.sets[d].len()).collect();
        let values = &instance.values[id];
        params.insert(b.name.clone(), nest(values, &dims));
    }
    let sets: serde_json::Map<String, serde_json::Value> =
        module.sets.iter().map(|s| (s.name.clone(), serde_json::json!([s.lo, s.hi]))).collect();
    let out = serde_json::json!({ "model": module.name, "seed": seed, "sets": sets, "params": params });
    println!("{out:#}");
    0
}

/// A row-major array as nested JSON arrays, one level per dimension.
fn nest(values: &[f64], dims: &[usize]) -> serde_json::Value {
    match dims.split_first() {
        None => values.first().copied().map_or(serde_json::Value::Null, serde_json::Value::from),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            serde_json::Value::Array((0..n).map(|i| nest(&values[i * stride..(i + 1) * stride], rest)).collect())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    path: &Path,
    policy: PolicyChoice,
    scenarios: u64,
    seed: u64,
    instance_seed: u64,
    set: SetChoice,
    backend: TrainBackend,
    overrides: Vec<(String, f64)>,
) -> u8 {
    let (module, source) = match compile_module(path, &Options { overrides }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let name = path.display().to_string();
    let report = |e: hmdp::sim::RunError| {
        let d = hmdp::diagnostics::Diagnostic::error("run", e.message, e.span, "while evaluating this");
        eprint!("{}", diagnostics::render(&[d], &name, &source, false));
        1u8
    };
    let instance = match hmdp::sim::instance(&module, instance_seed) {
        Ok(instance) => instance,
        Err(e) => return report(e),
    };
    let set = match set {
        SetChoice::Train => hmdp::sim::ScenarioSet::Train,
        SetChoice::Dev => hmdp::sim::ScenarioSet::Dev,
        SetChoice::Test => hmdp::sim::ScenarioSet::Test,
    };
    let policy_name = match policy {
        PolicyChoice::Random => "random",
    };
    let (jit, enzyme);
    let kernels: Option<&dyn hmdp::backend::Backend> = match backend {
        TrainBackend::Interp => None,
        TrainBackend::Jit => match compile_jit(&module) {
            Ok(compiled) => {
                jit = compiled;
                Some(&jit)
            }
            Err(code) => return code,
        },
        TrainBackend::Enzyme => match load_enzyme(&module, path, &source) {
            Ok(loaded) => {
                enzyme = loaded;
                Some(&enzyme)
            }
            Err(code) => return code,
        },
    };
    let n = scenarios as usize;
    let policy_impl = hmdp::sim::RandomPolicy;
    let per_scenario = match kernels {
        None => hmdp::sim::simulate_per_scenario(&module, &instance, &policy_impl, seed, set, n),
        Some(k) => hmdp::sim::simulate_batched(&module, &instance, k, &policy_impl, seed, set, n),
    };
    let summary = match per_scenario {
        Ok(p) => hmdp::sim::summarise(&module, &p, n),
        Err(e) => return report(e),
    };
    println!(
        "model {}: {policy_name} policy, {} scenarios, seed {seed}, instance seed {instance_seed}",
        module.name, summary.scenarios
    );
    println!("cost {} (mean ± 95% confidence interval):", summary.unit);
    let width = summary.terms.iter().map(|(n, _)| n.len()).max().unwrap_or(5).max(5);
    for (term, e) in summary.terms.iter().map(|(n, e)| (n.as_str(), e)).chain([("total", &summary.total)]) {
        println!("  {term:<width$}  {:>12.4} ± {:.4}", e.mean, e.half_width);
    }
    0
}

/// `--set` naming nothing in the model is a usage error: exit 2 with the closest name.
fn unknown_overrides(ast: &hmdp::syntax::ast::Model, options: &Options, file: &str) -> Option<u8> {
    let names = check::overridable_names(ast);
    for (name, _) in &options.overrides {
        let is_array = ast.items.iter().any(
            |item| matches!(item, hmdp::syntax::ast::Item::Param(p) if p.name.name == *name && !p.dims.is_empty()),
        );
        if is_array {
            eprintln!(
                "error: --set {name}=...: `{name}` in {file} is an array parameter; --set changes sizes and scalar parameters"
            );
            return Some(2);
        }
        if !names.contains(name) {
            let hint = check::did_you_mean(name, names.iter().map(String::as_str))
                .map(|hint| format!(" ({hint})"))
                .unwrap_or_default();
            eprintln!("error: --set {name}=...: {file} has no size or scalar parameter `{name}`{hint}");
            return Some(2);
        }
    }
    None
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
