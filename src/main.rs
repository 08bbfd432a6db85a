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

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// States, actions, and the smoothness of each cost and update.
    Report,
    /// The IR in its textual form.
    Ir,
    /// A Rust crate whose step's VJP comes from rustc's autodiff (Enzyme), into `-o DIR`.
    Rust,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The IR interpreter, the reference.
    Interp,
    /// Kernels compiled from Rust with rustc's autodiff (Enzyme); built once per model and cached.
    Enzyme,
    /// Every backend against each other and against finite differences.
    All,
}

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
    let worker = std::thread::Builder::new().stack_size(256 << 20).spawn(move || run(cli));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => ExitCode::from(code),
        _ => {
            eprintln!("error: hmdpc failed unexpectedly; please report this with the model that caused it");
            ExitCode::from(3)
        }
    }
}

fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Check { files, overrides, message_format } => check_files(&files, overrides, message_format),
        Command::Simulate { file, policy, scenarios, seed, instance_seed, scenario_set, overrides } => {
            simulate(&file, policy, scenarios, seed, instance_seed, scenario_set, overrides)
        }
        Command::Compile { file, emit, output, overrides } => compile(&file, emit, output.as_deref(), overrides),
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
fn load(path: &Path, options: &Options) -> Result<check::CheckedModel, u8> {
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
    let outcome = check::check(&ast, &folder, options);
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
    compile_with_rewrites(path, options).map(|(module, source, _)| (module, source))
}

/// The pipeline, also returning what the reformulation rewrote.
fn compile_with_rewrites(
    path: &Path,
    options: &Options,
) -> Result<(hmdp::ir::Module, String, Vec<hmdp::passes::reformulate::Rewrite>), u8> {
    let model = load(path, options)?;
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
    let (module, source, rewrites) = match compile_with_rewrites(path, &Options { overrides }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    match emit {
        Emit::Rust => return write_crate(path, &module, &source, output.unwrap_or(Path::new("."))),
        Emit::Ir => print!("{}", hmdp::ir::text::print(&module)),
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
    let enzyme = match backend {
        Backend::Interp => None,
        Backend::Enzyme | Backend::All => match load_enzyme(&module, path, &source) {
            Ok(enzyme) => Some(enzyme),
            Err(code) => return code,
        },
    };
    let chosen: &dyn hmdp::backend::Backend = match &enzyme {
        Some(enzyme) if matches!(backend, Backend::Enzyme) => enzyme,
        _ => &interp,
    };
    if let Backend::All = backend {
        // The backends `--backend all` compares; a new backend is one more line here.
        let mut all: Vec<&dyn hmdp::backend::Backend> = vec![&interp];
        all.extend(enzyme.as_ref().map(|e| e as &dyn hmdp::backend::Backend));
        let table = match hmdp::backend::compare::compare(&module, &instance, &all, points as usize, seed, tolerance) {
            Ok(table) => table,
            Err(e) => return fail(e),
        };
        print!("{}", table.render(&name));
        let failures = table.failures();
        for pair in &failures {
            let worst = pair.forward.iter().chain([&pair.vjp]).filter(|d| d.max_error > tolerance);
            for d in worst {
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
            eprintln!("error: largest relative difference {worst:.3e} is above the tolerance {tolerance:e}");
            return 1;
        }
        println!("ok: largest relative difference {worst:.3e} (tolerance {tolerance:e})");
        return 0;
    }
    let report = match hmdp::sim::gradcheck::check_backend(chosen, &module, &instance, seed, points as usize) {
        Ok(report) => report,
        Err(e) => return fail(e),
    };
    println!("gradcheck {name}: backend {} against central finite differences, {points} random points", chosen.name());
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

fn simulate(
    path: &Path,
    policy: PolicyChoice,
    scenarios: u64,
    seed: u64,
    instance_seed: u64,
    set: SetChoice,
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
    let summary = match hmdp::sim::simulate(&module, &instance, &hmdp::sim::RandomPolicy, seed, set, scenarios as usize)
    {
        Ok(summary) => summary,
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
