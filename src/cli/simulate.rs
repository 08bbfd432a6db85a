//! `hmdpc simulate`: a policy on seeded scenarios of a model, each cost term and the total with
//! a 95% confidence interval.

use std::path::PathBuf;

use clap::ValueEnum;
use hmdp::random::{ScenarioSet, Seeds};
use hmdp::resources::Need;
use hmdp::sim;
use hmdp::train::config::parse_override;

use super::{BackendChoice, Kernels, exit};

#[derive(clap::Args)]
pub struct Args {
    /// Model file (`.hmdp`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The policy to run.
    #[arg(long, value_enum, default_value_t = PolicyChoice::Random)]
    policy: PolicyChoice,
    /// Number of scenarios.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: u64,
    /// Seed of the policy's randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the scenarios: initial states and noise (`train` and `eval` draw theirs the same
    /// way, so `--scenario-seed S --scenario-set test` is the test set of a run with scenario
    /// seed S). Defaults to `--seed`.
    #[arg(long)]
    scenario_seed: Option<u64>,
    /// Seed of the instance: the parameters drawn once (`param x ~ ...`).
    #[arg(long, default_value_t = 0)]
    instance_seed: u64,
    /// Which fixed scenario set to draw from.
    #[arg(long = "scenario-set", value_enum, default_value_t = SetChoice::Test)]
    scenario_set: SetChoice,
    /// Which kernels run the model's per-period programs (the numbers are the same).
    #[arg(long, value_enum, default_value_t = BackendChoice::Interp)]
    backend: BackendChoice,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
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

pub fn run(args: Args) -> u8 {
    let compiled = match super::compile_model(&args.file, &args.overrides) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let module = &compiled.module;
    let n = args.scenarios as usize;
    let at_once = match args.backend {
        BackendChoice::Interp => rayon::current_num_threads(),
        _ => n.min(1024),
    };
    let need = Need::new().model(module).scenarios_at_once(module, at_once);
    if let Err(code) = super::fits(&compiled, need, "simulate") {
        return code;
    }
    let instance = match sim::instance(module, args.instance_seed) {
        Ok(instance) => instance,
        Err(e) => return super::run_error(&compiled, e),
    };
    let set = match args.scenario_set {
        SetChoice::Train => ScenarioSet::Train,
        SetChoice::Dev => ScenarioSet::Dev,
        SetChoice::Test => ScenarioSet::Test,
    };
    let policy_name = match args.policy {
        PolicyChoice::Random => "random",
    };
    let policy = sim::RandomPolicy;
    let seeds = Seeds { scenarios: args.scenario_seed.unwrap_or(args.seed), policy: args.seed };
    let costs = match args.backend {
        BackendChoice::Interp => sim::costs_on_interpreter(module, &instance, &policy, seeds, set, n),
        choice => {
            let kernels = match Kernels::load(choice, &compiled) {
                Ok(kernels) => kernels,
                Err(code) => return code,
            };
            sim::costs_on_backend(module, &instance, kernels.backend(), &policy, seeds, set, n)
        }
    };
    let (summary, discounted) = match costs {
        Ok(c) => (sim::summarise(module, &c.per_scenario, n), sim::discounted(module, &c.discounted)),
        Err(e) => return super::run_error(&compiled, e),
    };
    println!(
        "model {}: {policy_name} policy, {} scenarios, seed {}, scenario seed {}, instance seed {}",
        module.name, summary.scenarios, seeds.policy, seeds.scenarios, args.instance_seed
    );
    println!("cost {} (mean ± 95% confidence interval):", summary.unit);
    let rows: Vec<(&str, sim::Estimate)> =
        summary.terms.iter().map(|(n, e)| (n.as_str(), *e)).chain([("total", summary.total)]).collect();
    super::print_estimates(&rows);
    if let Some(line) = discounted {
        println!("{line}");
    }
    exit::OK
}
