//! `hmdpc compare`: several policies on the same test scenarios — each a run folder's
//! checkpoint, a policy a model file declares, or `random` — with each cost term's and the
//! total's mean and 95% confidence interval, and the paired difference to the first policy
//! with its own interval.

use std::path::{Path, PathBuf};

use hmdp::pipeline::Compiled;
use hmdp::sim;
use hmdp::subject::{self, Score, Subject, Testbed};
use hmdp::train::folder::{Run, fingerprint};
use serde_json::json;

use super::exit;
use super::subjects::{self, InstanceFlags, RunPolicy};

#[derive(clap::Args)]
pub struct Args {
    /// The policies, two or more: run folders written by `hmdpc train` or `hmdpc tune`, model
    /// files each followed by `--policy NAME`, or `random`. The first is the one the others are
    /// compared with.
    #[arg(value_name = "POLICY", num_args = 1.., required = true)]
    policies: Vec<String>,
    /// The policy of a model file among the POLICY arguments: a policy it declares (with its
    /// tunables' start values) or `random`. One per model file, in their order.
    #[arg(long = "policy", value_name = "NAME")]
    declared: Vec<String>,
    /// Which checkpoint of every run folder.
    #[arg(long, value_enum, default_value_t = Checkpoint::Best)]
    checkpoint: Checkpoint,
    /// Number of test scenarios (default: the first run's `--scenarios`; 1000 without a run).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: Option<u64>,
    /// Seed of the test scenarios (default: the runs' scenario seed, which must then be the
    /// same; 0 without a run).
    #[arg(long)]
    scenario_seed: Option<u64>,
    #[command(flatten)]
    instance: InstanceFlags,
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

/// The test scenarios when no run folder gives them: `simulate`'s default count.
const SCENARIOS_WITHOUT_RUN: usize = 1000;

/// A policy as the command line names it.
enum Named {
    Random,
    /// A run folder, by its index among the opened runs.
    Run(usize),
    /// A model file, by its index among the compiled files, and the policy it declares.
    Model(usize, String),
}

/// One policy to compare: what it was called on the command line, and the subject.
struct Entry {
    name: String,
    subject: Subject,
}

/// The problem every policy meets: the model, its instance and the test scenarios.
struct Problem<'c> {
    /// The run folder or model file it is taken from.
    from: String,
    compiled: &'c Compiled,
    instance_seed: u64,
    scenario_seed: u64,
    scenarios: usize,
}

pub fn run(args: Args) -> u8 {
    if args.policies.len() < 2 {
        return refuse("compare needs two or more policies: the first, and those compared with it");
    }
    let mut declared = args.declared.iter();
    let mut runs: Vec<Run> = Vec::new();
    let mut files: Vec<&str> = Vec::new();
    let mut named: Vec<(String, Named)> = Vec::new();
    for name in &args.policies {
        if name == "random" {
            named.push((name.clone(), Named::Random));
        } else if subjects::is_model_file(Path::new(name)) {
            let Some(policy) = declared.next() else {
                return refuse(&format!(
                    "{name} is a model file: name its policy with --policy NAME after it (one --policy per model file, in their order)"
                ));
            };
            files.push(name);
            named.push((format!("{name} --policy {policy}"), Named::Model(files.len() - 1, policy.clone())));
        } else {
            match subjects::open_run(&PathBuf::from(name)) {
                Ok(run) => {
                    runs.push(run);
                    named.push((name.clone(), Named::Run(runs.len() - 1)));
                }
                Err(code) => return code,
            }
        }
    }
    if let Some(extra) = declared.next() {
        return refuse(&format!(
            "--policy {extra} names the policy of no model file: give one --policy after each model file (a run folder's checkpoint is chosen by --checkpoint)"
        ));
    }
    if let Some(first) = runs.first() {
        if let Some(flag) =
            [(args.instance.instance_seed.is_some(), "--instance-seed"), (!args.instance.overrides.is_empty(), "--set")]
                .into_iter()
                .find_map(|(given, flag)| given.then_some(flag))
        {
            return refuse(&format!(
                "{flag} is for model files compared without a run folder: the run folder {} fixes its instance seed and --set values (run.json), and the model files are run with them",
                first.folder.display()
            ));
        }
        if let Err(code) = same_runs(&args, &runs, &named) {
            return code;
        }
    }
    // Model files are compiled with the first run's `--set` values, else with `--set`.
    let overrides = runs.first().map_or(args.instance.overrides.clone(), |r| r.config().set.clone());
    let mut compiled_files: Vec<Compiled> = Vec::new();
    for file in &files {
        match super::compile_model(Path::new(file), &overrides) {
            Ok(compiled) => compiled_files.push(compiled),
            Err(code) => return code,
        }
    }
    let name_of = |wanted: &dyn Fn(&Named) -> bool| {
        named.iter().find(|(_, n)| wanted(n)).map_or(String::new(), |(name, _)| name.clone())
    };
    let problem = match (runs.first(), compiled_files.first()) {
        (Some(run), _) => {
            let cfg = run.config();
            Problem {
                from: name_of(&|n| matches!(n, Named::Run(0))),
                compiled: &run.compiled,
                instance_seed: cfg.instance_seed,
                scenario_seed: args.scenario_seed.unwrap_or(cfg.scenario_seed),
                scenarios: args.scenarios.map_or(cfg.scenarios, |n| n as usize),
            }
        }
        (None, Some(compiled)) => Problem {
            from: name_of(&|n| matches!(n, Named::Model(0, _))),
            compiled,
            instance_seed: args.instance.instance_seed.unwrap_or(0),
            scenario_seed: args.scenario_seed.unwrap_or(0),
            scenarios: args.scenarios.map_or(SCENARIOS_WITHOUT_RUN, |n| n as usize),
        },
        (None, None) => {
            return refuse(
                "compare needs at least one run folder or model file: `random` alone names no model to run it on",
            );
        }
    };
    for (name, n) in &named {
        if let Named::Model(k, _) = n
            && *compiled_files[*k].module != *problem.compiled.module
        {
            return refuse(&format!(
                "{} and {name} are different models (the model file, its data files or the --set values differ), so their policies cannot be compared on the same scenarios",
                problem.from
            ));
        }
    }
    let checkpoint = match args.checkpoint {
        Checkpoint::Best => RunPolicy::Best,
        Checkpoint::Final => RunPolicy::Final,
    };
    let mut loaded = Vec::new();
    for (name, n) in named {
        let subject = match n {
            Named::Random => Ok(Subject::Random),
            Named::Run(i) => subjects::subject(&runs[i], checkpoint),
            Named::Model(k, policy) => subjects::model_subject(&compiled_files[k], &policy),
        };
        match subject {
            Ok(subject) => loaded.push(Entry { name, subject }),
            Err(code) => return code,
        }
    }
    let (instance_seed, scenario_seed, scenarios) = (problem.instance_seed, problem.scenario_seed, problem.scenarios);
    subjects::with_testbed(problem.compiled, instance_seed, scenario_seed, scenarios, "compare", |testbed| {
        report(&args, problem.compiled, &loaded, testbed, &problem)
    })
}

/// Refuses run folders that are not of the same problem as the first (model, `--set` values,
/// instance), or of different scenario seeds when `--scenario-seed` does not choose.
fn same_runs(args: &Args, runs: &[Run], named: &[(String, Named)]) -> Result<(), u8> {
    let Some(first) = runs.first() else { return Ok(()) };
    let reference = first.config();
    let model_of = |run: &Run| fingerprint(&run.compiled.source.text, &run.compiled.data_files);
    let name_of = |i: usize| {
        named.iter().find(|(_, n)| matches!(n, Named::Run(k) if *k == i)).map(|(name, _)| name.as_str()).unwrap_or("")
    };
    let first_name = name_of(0);
    for (i, run) in runs.iter().enumerate() {
        let name = name_of(i);
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
            return Err(refuse(&format!(
                "{first_name} and {name} have different scenario seeds ({} and {}): choose the test scenarios with --scenario-seed",
                reference.scenario_seed, cfg.scenario_seed
            )));
        } else {
            None
        };
        if let Some(why) = differs {
            return Err(refuse(&format!(
                "{first_name} and {name} {why}, so their policies cannot be compared on the same scenarios"
            )));
        }
    }
    Ok(())
}

/// Scores every policy on the testbed and prints the figures and the paired differences.
fn report(args: &Args, compiled: &Compiled, loaded: &[Entry], testbed: &Testbed, problem: &Problem) -> u8 {
    let module = testbed.module;
    let (scenarios, scenario_seed) = (problem.scenarios, problem.scenario_seed);
    let mut scores: Vec<Score> = Vec::new();
    for entry in loaded {
        match subject::score(&entry.subject, testbed, None) {
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
            "instance_seed": problem.instance_seed,
            "unit": sim::report_unit(module),
            "policies": policies,
        });
        println!("{out:#}");
        return exit::OK;
    }
    println!(
        "compare {} policies on the same {scenarios} test scenarios (scenario seed {scenario_seed}, instance seed {}):",
        loaded.len(),
        problem.instance_seed
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
