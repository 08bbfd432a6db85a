//! `hmdpc rollout`: the trajectories of a run's policy on its first test scenarios, one CSV row
//! per scenario and period.

use std::path::PathBuf;

use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim;
use hmdp::subject::{self, Testbed};

use super::exit;
use super::subjects::{self, RunPolicy};

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `hmdpc train`.
    #[arg(value_name = "RUN_DIR")]
    run: PathBuf,
    /// Which policy: the run's `best` (on dev) or `final` checkpoint, or `random`.
    #[arg(long, value_enum, default_value_t = RunPolicy::Best)]
    policy: RunPolicy,
    /// Number of test scenarios to roll out (the first ones of the run's test set).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    scenarios: u64,
    /// The CSV file to write.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: Args) -> u8 {
    let run = match subjects::open_run(&args.run) {
        Ok(run) => run,
        Err(code) => return code,
    };
    let compiled = &run.compiled;
    let module = &compiled.module;
    let cfg = run.config();
    let scenarios = args.scenarios as usize;
    let need = hmdp::resources::Need::new().model(module).stored_scenarios(module, "test", scenarios, module.horizon);
    if let Err(code) = super::fits(compiled, need, "rollout") {
        return code;
    }
    let instance = match sim::instance(module, cfg.instance_seed) {
        Ok(i) => i,
        Err(e) => return super::run_error(compiled, e),
    };
    let jit = match super::compile_jit(module) {
        Ok(jit) => jit,
        Err(code) => return code,
    };
    let seeds = Seeds::same(cfg.scenario_seed);
    let testbed = match Testbed::draw(module, instance, &jit, seeds, ScenarioSet::Test, scenarios) {
        Ok(t) => t,
        Err(e) => return super::run_error(compiled, e),
    };
    let subject = match subjects::subject(&run, args.policy) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let trace = match subject::score(&subject, &testbed, Some(scenarios)) {
        Ok((_, Some(trace))) => trace,
        Ok((_, None)) => return exit::INTERNAL,
        Err(e) => return subjects::train_error(compiled, e),
    };
    if let Err(code) = subjects::write(&args.out, &trace.csv()) {
        return code;
    }
    println!(
        "rollout {}: {}, {scenarios} test scenarios × {} periods ({} rows of {} columns) written to {}",
        args.run.display(),
        subject.label(),
        module.horizon,
        trace.rows.len(),
        trace.columns.len(),
        args.out.display()
    );
    exit::OK
}
