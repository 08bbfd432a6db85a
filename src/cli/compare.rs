//! `hmdpc compare`: several policies on the same test scenarios — each a run folder's
//! checkpoint or `random` — with each cost term's and the total's mean and 95% confidence
//! interval, and the paired difference to the first policy with its own interval.

use std::path::PathBuf;

use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim;
use hmdp::subject::{self, Score, Subject, Testbed};
use hmdp::train::folder::{Run, fingerprint};
use serde_json::json;

use super::exit;
use super::subjects::{self, RunPolicy};

#[derive(clap::Args)]
pub struct Args {
    /// The policies, two or more: run folders written by `hmdpc train`, or `random`. The first
    /// is the one the others are compared with.
    #[arg(value_name = "POLICY", num_args = 2.., required = true)]
    policies: Vec<String>,
    /// Which checkpoint of every run folder.
    #[arg(long, value_enum, default_value_t = Checkpoint::Best)]
    checkpoint: Checkpoint,
    /// Number of test scenarios (default: the first run's `--scenarios`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: Option<u64>,
    /// Seed of the test scenarios (default: the runs' scenario seed, which must then be the same).
    #[arg(long)]
    scenario_seed: Option<u64>,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write one row per test scenario (each policy's cost terms and total) to this CSV file.
    #[arg(long, value_name = "FILE")]
    per_scenario: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
enum Checkpoint {
    Best,
    Final,
}

/// One policy to compare: what it was called on the command line, and the subject.
struct Entry {
    name: String,
    subject: Subject,
}

pub fn run(args: Args) -> u8 {
    let mut runs: Vec<Run> = Vec::new();
    let mut entries: Vec<(String, Option<usize>)> = Vec::new();
    for name in &args.policies {
        if name == "random" {
            entries.push((name.clone(), None));
            continue;
        }
        match subjects::open_run(&PathBuf::from(name)) {
            Ok(run) => {
                runs.push(run);
                entries.push((name.clone(), Some(runs.len() - 1)));
            }
            Err(code) => return code,
        }
    }
    let Some(first) = runs.first() else {
        eprintln!("error: compare needs at least one run folder: `random` alone names no model to run it on");
        return exit::USAGE;
    };
    let reference = first.config();
    let model_of = |run: &Run| fingerprint(&run.compiled.source.text, &run.compiled.data_files);
    let (first_name, _) = entries.iter().find(|(_, r)| *r == Some(0)).cloned().unwrap_or_default();
    for (name, index) in &entries {
        let Some(run) = index.map(|i| &runs[i]) else { continue };
        let cfg = run.config();
        let differs = if model_of(run) != model_of(first) {
            Some("were trained on different models (model.hmdp or its data files differ)".to_string())
        } else if cfg.set != reference.set {
            Some(format!("set the model differently (--set {:?} and {:?})", reference.set, cfg.set))
        } else if cfg.instance_seed != reference.instance_seed {
            Some(format!(
                "drew different instances (instance seeds {} and {})",
                reference.instance_seed, cfg.instance_seed
            ))
        } else if args.scenario_seed.is_none() && cfg.scenario_seed != reference.scenario_seed {
            return refuse(&format!(
                "{first_name} and {name} have different scenario seeds ({} and {}): choose the test scenarios with --scenario-seed",
                reference.scenario_seed, cfg.scenario_seed
            ));
        } else {
            None
        };
        if let Some(why) = differs {
            return refuse(&format!(
                "{first_name} and {name} {why}, so their policies cannot be compared on the same scenarios"
            ));
        }
    }
    let compiled = &first.compiled;
    let module = &compiled.module;
    let scenarios = args.scenarios.map_or(reference.scenarios, |n| n as usize);
    let scenario_seed = args.scenario_seed.unwrap_or(reference.scenario_seed);
    let need = hmdp::resources::Need::new().model(module).stored_scenarios(module, "test", scenarios, module.horizon);
    if let Err(code) = super::fits(compiled, need, "compare") {
        return code;
    }
    let instance = match sim::instance(module, reference.instance_seed) {
        Ok(i) => i,
        Err(e) => return super::run_error(compiled, e),
    };
    let jit = match super::compile_jit(module) {
        Ok(jit) => jit,
        Err(code) => return code,
    };
    let seeds = Seeds::same(scenario_seed);
    let testbed = match Testbed::draw(module, instance, &jit, seeds, ScenarioSet::Test, scenarios) {
        Ok(t) => t,
        Err(e) => return super::run_error(compiled, e),
    };
    let policy = match args.checkpoint {
        Checkpoint::Best => RunPolicy::Best,
        Checkpoint::Final => RunPolicy::Final,
    };
    let mut loaded = Vec::new();
    for (name, run) in entries {
        let subject = match run {
            Some(i) => match subjects::subject(&runs[i], policy) {
                Ok(s) => s,
                Err(code) => return code,
            },
            None => Subject::Random,
        };
        loaded.push(Entry { name, subject });
    }
    let mut scores: Vec<Score> = Vec::new();
    for entry in &loaded {
        match subject::score(&entry.subject, &testbed, None) {
            Ok((score, _)) => scores.push(score),
            Err(e) => {
                eprintln!("error: while running {}:", entry.name);
                return subjects::train_error(compiled, e);
            }
        }
    }
    if let Some(path) = &args.per_scenario {
        let prefixes: Vec<String> = (1..=scores.len()).map(|k| format!("{k}:")).collect();
        let results: Vec<subject::Figures> = prefixes
            .iter()
            .zip(&scores)
            .map(|(prefix, s)| subject::Figures { prefix, terms: &s.terms, per_scenario: &s.per_scenario })
            .collect();
        if let Err(code) = subjects::write(path, &subject::per_scenario_csv(&results)) {
            return code;
        }
    }
    let differences: Vec<Option<Vec<(String, sim::Estimate)>>> =
        scores.iter().enumerate().map(|(k, s)| if k == 0 { None } else { scores[0].paired_difference(s) }).collect();
    if args.json {
        let policies: Vec<serde_json::Value> = loaded
            .iter()
            .zip(&scores)
            .zip(&differences)
            .map(|((entry, score), difference)| {
                json!({
                    "name": entry.name,
                    "policy": entry.subject.label(),
                    "costs": subjects::estimates_json(&score.estimates()),
                    "difference_to_first": difference.as_ref().map(|d| subjects::estimates_json(d)),
                    "regimes": subjects::regimes_json(&score.regimes),
                })
            })
            .collect();
        let out = json!({
            "scenarios": scenarios,
            "scenario_seed": scenario_seed,
            "instance_seed": reference.instance_seed,
            "unit": sim::report_unit(module),
            "policies": policies,
        });
        println!("{out:#}");
        return exit::OK;
    }
    println!(
        "compare {} policies on the same {scenarios} test scenarios (scenario seed {scenario_seed}, instance seed {}):",
        loaded.len(),
        reference.instance_seed
    );
    for (k, entry) in loaded.iter().enumerate() {
        println!("  [{}] {}: {}", k + 1, entry.name, entry.subject.label());
    }
    println!(
        "cost {} (mean ± 95% confidence interval; paired difference to [1] ± 95% confidence interval):",
        sim::report_unit(module)
    );
    let estimates: Vec<Vec<(String, sim::Estimate)>> = scores.iter().map(Score::estimates).collect();
    for (row, (term, _)) in estimates[0].iter().enumerate() {
        println!("  {term}");
        for (k, e) in estimates.iter().enumerate() {
            let (_, e) = &e[row];
            let difference = differences[k].as_ref().map_or(String::new(), |d| {
                let (_, d) = &d[row];
                format!("   vs [1]: {:+.4} ± {:.4}", d.mean, d.half_width)
            });
            println!("    [{}] {:>12.4} ± {:.4}{difference}", k + 1, e.mean, e.half_width);
        }
    }
    exit::OK
}

/// Prints why the policies cannot be compared: a usage error.
fn refuse(why: &str) -> u8 {
    eprintln!("error: {why}");
    exit::USAGE
}
