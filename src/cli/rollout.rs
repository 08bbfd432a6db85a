//! `hmdpc rollout`: the trajectories of a policy on the first test scenarios — a run's, or one
//! a model file declares — one CSV row per scenario and period.

use std::path::PathBuf;

use hmdp::subject;

use super::exit;
use super::subjects::{self, InstanceFlags, ModelFlags};

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `hmdpc train` or `hmdpc tune`, or a model file (`.hmdp`).
    #[arg(value_name = "RUN_DIR|FILE")]
    source: PathBuf,
    /// Which policy: of a run folder, its `best` (on dev, the default) or `final` checkpoint, or
    /// `random`; of a model file (required), a policy it declares, or `random`.
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Number of test scenarios to roll out (the first ones of the test set).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    scenarios: u64,
    /// The CSV file to write.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
    /// For a model file: seed of the test scenarios [default: 0].
    #[arg(long)]
    scenario_seed: Option<u64>,
    #[command(flatten)]
    instance: InstanceFlags,
}

pub fn run(args: Args) -> u8 {
    let flags = ModelFlags { instance: args.instance, scenario_seed: args.scenario_seed };
    let opened = match subjects::open(&args.source, args.policy.as_deref(), &flags, "rollout") {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let compiled = &opened.compiled;
    let scenarios = args.scenarios as usize;
    subjects::with_testbed(compiled, opened.instance_seed, opened.scenario_seed, scenarios, "rollout", |testbed| {
        let module = testbed.module;
        let trace = match subject::score(&opened.subject, testbed, Some(scenarios)) {
            Ok((_, Some(trace))) => trace,
            Ok((_, None)) => return exit::INTERNAL,
            Err(e) => return subjects::train_error(compiled, e),
        };
        if let Err(code) = subjects::write(&args.out, &trace.csv()) {
            return code;
        }
        println!(
            "rollout {}: {}, {scenarios} test scenarios × {} periods ({} rows of {} columns) written to {}",
            args.source.display(),
            opened.subject.label(),
            module.horizon,
            trace.rows.len(),
            trace.columns.len(),
            args.out.display()
        );
        exit::OK
    })
}
