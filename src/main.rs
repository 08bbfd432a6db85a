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

/// `--set` naming nothing in the model is a usage error: exit 2 with the closest name.
fn unknown_overrides(ast: &hmdp::syntax::ast::Model, options: &Options, file: &str) -> Option<u8> {
    let names = check::overridable_names(ast);
    for (name, _) in &options.overrides {
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
