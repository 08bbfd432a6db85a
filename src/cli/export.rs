//! `hmdpc export`: a run's networks as safetensors with a JSON description, so the policy runs
//! without hmdp (`docs/export_loader.py` is a numpy loader).

use std::path::PathBuf;

use clap::ValueEnum;
use hmdp::sim;
use hmdp::subject::export;

use super::exit;
use super::subjects::{self, RunPolicy};

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `hmdpc train`.
    #[arg(value_name = "RUN_DIR")]
    run: PathBuf,
    /// Which checkpoint.
    #[arg(long, value_enum, default_value_t = Which::Best)]
    policy: Which,
    /// The folder to write `policy.safetensors` and `policy.json` into (created if need be).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Best,
    Final,
}

pub fn run(args: Args) -> u8 {
    let run = match subjects::open_run(&args.run) {
        Ok(run) => run,
        Err(code) => return code,
    };
    let compiled = &run.compiled;
    let module = &compiled.module;
    let instance = match sim::instance(module, run.config().instance_seed) {
        Ok(i) => i,
        Err(e) => return super::run_error(compiled, e),
    };
    let policy = match args.policy {
        Which::Best => RunPolicy::Best,
        Which::Final => RunPolicy::Final,
    };
    let subject = match subjects::subject(&run, policy) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match export::export(&subject, module, &instance, &compiled.source.text, &args.out) {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}
