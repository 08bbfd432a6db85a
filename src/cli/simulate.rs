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
    /// The policy to run: `random` (uniform random actions within the bounds), or the name of a
    /// policy the model declares, run with its tunables' start values.
    #[arg(long, value_name = "NAME", default_value = "random")]
    policy: String,
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
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write one row per scenario (each cost term and the total) to this CSV file.
    #[arg(long, value_name = "FILE")]
    per_scenario: Option<PathBuf>,
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
    let policy = match super::declared_policy(&compiled, &args.policy, None) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let (policy, policy_name): (&dyn sim::Policy, String) = match &policy {
        Some(declared) => (declared, format!("policy `{}`", declared.name)),
        None => (&sim::RandomPolicy, "random policy".to_string()),
    };
    let seeds = Seeds { scenarios: args.scenario_seed.unwrap_or(args.seed), policy: args.seed };
    let costs = match args.backend {
        BackendChoice::Interp => sim::costs_on_interpreter(module, &instance, policy, seeds, set, n),
        choice => {
            let kernels = match Kernels::load(choice, &compiled) {
                Ok(kernels) => kernels,
                Err(code) => return code,
            };
            sim::costs_on_backend(module, &instance, kernels.backend(), policy, seeds, set, n)
        }
    };
    let (per_scenario, discounted) = match costs {
        Ok(c) => (c.per_scenario, c.discounted),
        Err(e) => return super::run_error(&compiled, e),
    };
    let summary = sim::summarise(module, &per_scenario, n);
    if let Some(path) = &args.per_scenario {
        let terms: Vec<String> = summary.terms.iter().map(|(name, _)| name.clone()).collect();
        let figures = hmdp::subject::Figures { prefix: "", terms: &terms, per_scenario: &per_scenario };
        let csv = hmdp::subject::per_scenario_csv(&[figures]);
        if let Err(code) = super::subjects::write(path, &csv) {
            return code;
        }
    }
    if args.json {
        let costs: Vec<(String, sim::Estimate)> =
            summary.terms.iter().cloned().chain([("total".to_string(), summary.total)]).collect();
        let mut out = serde_json::json!({
            "model": module.name,
            "policy": policy_name,
            "scenarios": summary.scenarios,
            "seed": seeds.policy,
            "scenario_seed": seeds.scenarios,
            "instance_seed": args.instance_seed,
            "scenario_set": set.name(),
            "unit": summary.unit,
            "costs": super::subjects::estimates_json(&costs),
        });
        if module.discount < 1.0 {
            out["discounted"] = super::subjects::estimate_json(&sim::Estimate::of(&discounted));
        }
        println!("{out:#}");
        return exit::OK;
    }
    println!(
        "model {}: {policy_name}, {} scenarios, seed {}, scenario seed {}, instance seed {}",
        module.name, summary.scenarios, seeds.policy, seeds.scenarios, args.instance_seed
    );
    println!("cost {} (mean ± 95% confidence interval):", summary.unit);
    let rows: Vec<(&str, sim::Estimate)> =
        summary.terms.iter().map(|(n, e)| (n.as_str(), *e)).chain([("total", summary.total)]).collect();
    super::print_estimates(&rows);
    if let Some(line) = sim::discounted(module, &discounted) {
        println!("{line}");
    }
    exit::OK
}
