//! `hmdpc eval`: a run's policy (or the random policy) on the run's test scenarios, each cost
//! term and the total with a 95% confidence interval, the gap to the exact optimum where one is
//! known, and how often each regime is chosen; as text or JSON, and per scenario to a file.

use std::path::PathBuf;

use hmdp::pipeline::Compiled;
use hmdp::sim::{self, Estimate};
use hmdp::subject::{self, Subject, Testbed};
use hmdp::train::Config;
use serde_json::json;

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
    /// Number of test scenarios (default: as many as the run's sets).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: Option<u64>,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write one row per test scenario (each cost term and the total) to this CSV file.
    #[arg(long, value_name = "FILE")]
    per_scenario: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let run = match subjects::open_run(&args.run) {
        Ok(run) => run,
        Err(code) => return code,
    };
    let compiled = &run.compiled;
    let cfg = run.config();
    let scenarios = args.scenarios.map_or(cfg.scenarios, |n| n as usize);
    let subject = match subjects::subject(&run, args.policy) {
        Ok(s) => s,
        Err(code) => return code,
    };
    subjects::with_testbed(compiled, cfg.instance_seed, cfg.scenario_seed, scenarios, "eval", |testbed| {
        report(&args, compiled, cfg, &subject, testbed)
    })
}

/// Scores the subject on the testbed and prints its figures.
fn report(args: &Args, compiled: &Compiled, cfg: &Config, subject: &Subject, testbed: &Testbed) -> u8 {
    let module = testbed.module;
    let score = match subject::score(subject, testbed, None) {
        Ok((score, _)) => score,
        Err(e) => return subjects::train_error(compiled, e),
    };
    if let Some(path) = &args.per_scenario
        && let Err(code) = subjects::write(path, &score.per_scenario_csv())
    {
        return code;
    }
    let estimates = score.estimates();
    let totals = score.totals();
    // Where the exact optimum is known, the gap to it on the same scenarios.
    let optimum = hmdp::train::riccati::of_module(module, &testbed.instance, testbed.backend).and_then(|riccati| {
        let (_, x0) = testbed.set.init.first()?;
        let n = riccati.n;
        let optimum: Vec<f64> = x0.chunks(n).map(|x| riccati.cost(x) / sim::report_scale(module)).collect();
        let best = optimum.iter().sum::<f64>() / optimum.len().max(1) as f64;
        let gaps: Vec<f64> = totals.iter().zip(&optimum).map(|(t, o)| t - o).collect();
        Some((best, Estimate::of(&gaps)))
    });
    if args.json {
        let mut out = json!({
            "run": args.run.display().to_string(),
            "policy": subject.label(),
            "scenarios": score.per_scenario.len(),
            "seed": cfg.seed,
            "scenario_seed": cfg.scenario_seed,
            "instance_seed": cfg.instance_seed,
            "unit": sim::report_unit(module),
            "costs": subjects::estimates_json(&estimates),
            "regimes": subjects::regimes_json(&score.regimes),
        });
        if module.discount < 1.0 {
            out["discounted"] = subjects::estimate_json(&Estimate::of(&score.discounted));
        }
        if let Some((best, gap)) = optimum {
            out["optimum"] =
                json!({ "mean": best, "gap": subjects::estimate_json(&gap), "gap_percent": 100.0 * gap.mean / best });
        }
        println!("{out:#}");
        return exit::OK;
    }
    println!(
        "eval {}: {}, {} test scenarios (seed {}, scenario seed {}, instance seed {})",
        args.run.display(),
        subject.label(),
        score.per_scenario.len(),
        cfg.seed,
        cfg.scenario_seed,
        cfg.instance_seed
    );
    println!("cost {} (mean ± 95% confidence interval):", sim::report_unit(module));
    let rows: Vec<(&str, Estimate)> = estimates.iter().map(|(n, e)| (n.as_str(), *e)).collect();
    super::print_estimates(&rows);
    if let Some(line) = sim::discounted(module, &score.discounted) {
        println!("{line}");
    }
    if let Some((best, gap)) = optimum {
        println!(
            "  optimum (finite-horizon Riccati, same scenarios): {best:.4}; gap {:+.4} ± {:.4} ({:+.2}%)",
            gap.mean,
            gap.half_width,
            100.0 * gap.mean / best
        );
    }
    subjects::print_regimes(&score.regimes);
    exit::OK
}
