//! `hmdpc compile`: what the compiler made of a model (the smoothness report), its IR, the
//! JIT's Cranelift code, or the Enzyme backend's Rust crate.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use hmdp::pipeline::{Compiled, describe_io};
use hmdp::train::config::parse_override;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
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

pub fn run(args: Args) -> u8 {
    let output = match (args.emit, args.output) {
        (Emit::Rust, None) => {
            eprintln!("error: --emit rust writes a crate: give its folder with -o DIR");
            return exit::USAGE;
        }
        (Emit::Report | Emit::Ir, Some(_)) => {
            eprintln!("error: -o is for --emit rust; the report and the IR are printed");
            return exit::USAGE;
        }
        (_, output) => output,
    };
    let compiled = match super::compile_model(&args.file, &args.overrides) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let module = &compiled.module;
    match args.emit {
        Emit::Rust => return write_crate(&compiled, output.as_deref().unwrap_or(Path::new("."))),
        Emit::Ir => print!("{}", hmdp::ir::text::print(module)),
        Emit::Clif => match hmdp::backend::jit::Jit::clif(module) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("error: internal error: {e}; please report this with the model");
                return exit::INTERNAL;
            }
        },
        Emit::Report => {
            let analysis = hmdp::passes::smoothness::analyze(module);
            let source = &compiled.source;
            print!(
                "{}",
                hmdp::passes::smoothness::render(module, &analysis, &compiled.rewrites, &source.name, &source.text)
            );
        }
    }
    exit::OK
}

/// `--emit rust -o DIR`: writes the crate, into a new or empty folder or over a crate hmdpc wrote.
fn write_crate(compiled: &Compiled, dir: &Path) -> u8 {
    use hmdp::backend::{enzyme, rust};
    let path = Path::new(&compiled.source.name);
    let file = path.file_name().map_or_else(|| compiled.source.name.clone(), |n| n.to_string_lossy().into_owned());
    let toolchain = enzyme::toolchain_from_env();
    let origin = rust::Origin { file: &file, source: &compiled.source.text, toolchain: &toolchain };
    let krate = rust::emit(&compiled.module, &origin);
    let is_empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
    let ours = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains(rust::MARKER));
    if dir.exists() && !dir.is_dir() {
        eprintln!("error: {} is not a folder", dir.display());
        return exit::USAGE;
    }
    if !is_empty && !ours {
        eprintln!(
            "error: {} is not empty and holds no crate written by hmdpc; give a new or empty folder",
            dir.display()
        );
        return exit::USAGE;
    }
    for (name, text) in &krate.files {
        let target = dir.join(name);
        let written =
            target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&target, text));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {}", target.display(), describe_io(&e));
            return exit::USAGE;
        }
    }
    println!(
        "wrote the crate {} to {}: its step is src/lib.rs; build it with `cargo build --release` there",
        krate.package,
        dir.display()
    );
    exit::OK
}
