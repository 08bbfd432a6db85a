//! `hmdpc check`: the front end on each file, with a one-line summary of each clean model.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use hmdp::check::Options;
use hmdp::pipeline::{self, Failure, Folder, Source};
use hmdp::train::config::parse_override;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Model files (`.hmdp`).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
    /// How to print diagnostics: `human` (rendered with source) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
    message_format: MessageFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum MessageFormat {
    Human,
    Json,
}

pub fn run(args: Args) -> u8 {
    // Every file is read before any is checked: a missing one is a usage error, whatever the
    // others hold.
    let mut sources = Vec::new();
    for path in &args.files {
        match Source::read(path) {
            Ok(source) => sources.push((path, source)),
            Err(failure) => return super::fail(failure),
        }
    }
    let options = Options { overrides: args.overrides };
    let color = super::color();
    let mut stdout = std::io::stdout().lock();
    let mut failed = false;
    for (path, source) in sources {
        let (summary, diagnostics) = match pipeline::check(&source, &Folder::beside(path), &options) {
            Ok(checked) => (Some(hmdp::check::summary(&checked.model)), checked.warnings),
            Err(Failure::Model { diagnostics, .. }) => (None, diagnostics),
            Err(other) => return super::fail(other),
        };
        match args.message_format {
            MessageFormat::Human => eprint!("{}", source.render(&diagnostics, color)),
            MessageFormat::Json => {
                for d in &diagnostics {
                    let _ = writeln!(stdout, "{}", hmdp::diagnostics::to_json(d, &source.name, &source.text));
                }
            }
        }
        match summary {
            Some(summary) => {
                if let MessageFormat::Human = args.message_format {
                    let _ = writeln!(stdout, "ok {}: {summary}", source.name);
                }
            }
            None => {
                failed = true;
                if let MessageFormat::Human = args.message_format {
                    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                    let count = if errors == 1 { "1 error".to_string() } else { format!("{errors} errors") };
                    eprintln!("error: {}: {count} found", source.name);
                }
            }
        }
    }
    if failed { exit::FAILED } else { exit::OK }
}
