//! `hmdpc eval`: a run's policy (or the random policy) on the run's test scenarios, each cost
//! term and the total with a 95% confidence interval, and the gap to the exact optimum where
//! one is known.

use std::path::PathBuf;

use clap::ValueEnum;
use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim::{self, Estimate};
use hmdp::train::folder::{Checkpoint, OpenError, Run};
use hmdp::train::scenarios::Scenarios;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `hmdpc train`.
    #[arg(value_name = "RUN_DIR")]
    run: PathBuf,
    /// Which policy: the run's `best` (on dev) or `final` checkpoint, or `random`.
    #[arg(long, value_enum, default_value_t = EvalPolicy::Best)]
    policy: EvalPolicy,
    /// Number of test scenarios (default: as many as the run's sets).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scenarios: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum EvalPolicy {
    Best,
    Final,
    Random,
}

pub fn run(args: Args) -> u8 {
    let run = match Run::open(&args.run) {
        Ok(run) => run,
        Err(OpenError::Compile(failure)) => return super::fail(failure),
        Err(e @ OpenError::NotARun(_)) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
        Err(e @ OpenError::Damaged(_)) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let compiled = &run.compiled;
    let module = &compiled.module;
    let cfg = run.config();
    let scenarios = args.scenarios.map_or(cfg.scenarios, |n| n as usize);
    let need = hmdp::resources::Need::new().model(module).stored_scenarios(module, "test", scenarios, module.horizon);
    if let Err(code) = super::fits(compiled, need, "eval") {
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
    let test = match Scenarios::draw(module, &instance, cfg.scenario_seed, ScenarioSet::Test, scenarios) {
        Ok(t) => t,
        Err(e) => return super::run_error(compiled, e),
    };
    let checkpoint = match args.policy {
        EvalPolicy::Best => Some(Checkpoint::Best),
        EvalPolicy::Final => Some(Checkpoint::Final),
        EvalPolicy::Random => None,
    };
    let (label, per_scenario, term_names, discounted) = match checkpoint {
        None => {
            let costs = match sim::costs_on_interpreter(
                module,
                &instance,
                &sim::RandomPolicy,
                // The baseline is the same for every training seed.
                Seeds::same(cfg.scenario_seed),
                ScenarioSet::Test,
                scenarios,
            ) {
                Ok(s) => s,
                Err(e) => return super::run_error(compiled, e),
            };
            let names = module.costs().map(|(_, b)| b.name.clone()).collect::<Vec<_>>();
            ("random policy".to_string(), costs.per_scenario, names, costs.discounted)
        }
        Some(which) => {
            let (nets, spec) = match run.policy(which) {
                Ok(policy) => policy,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::FAILED;
                }
            };
            let ctx = hmdp::train::rollout::Context { module, spec: &spec, backend: &jit, instance: &instance };
            let evaluation = match hmdp::train::evaluate(&ctx, &nets, &test) {
                Ok(e) => e,
                Err(e) => match e.located() {
                    Some(located) => return super::run_error(compiled, located),
                    None => {
                        eprintln!("error: {e}");
                        return exit::FAILED;
                    }
                },
            };
            let names = spec.costs.iter().map(|&c| module.buffers[c].name.clone()).collect();
            let label = format!("{} checkpoint", which.file().trim_end_matches(".ckpt"));
            (label, evaluation.per_scenario, names, evaluation.discounted)
        }
    };
    println!(
        "eval {}: {label}, {} test scenarios (seed {}, scenario seed {}, instance seed {})",
        args.run.display(),
        per_scenario.len(),
        cfg.seed,
        cfg.scenario_seed,
        cfg.instance_seed
    );
    println!("cost {} (mean ± 95% confidence interval):", sim::report_unit(module));
    let totals: Vec<f64> = per_scenario.iter().map(|r| r.iter().sum()).collect();
    let mut rows: Vec<(&str, Estimate)> = term_names
        .iter()
        .enumerate()
        .map(|(k, term)| (term.as_str(), Estimate::of(&per_scenario.iter().map(|r| r[k]).collect::<Vec<f64>>())))
        .collect();
    rows.push(("total", Estimate::of(&totals)));
    super::print_estimates(&rows);
    if let Some(line) = sim::discounted(module, &discounted) {
        println!("{line}");
    }
    // Where the exact optimum is known, the gap to it on the same scenarios.
    if let Some(riccati) = hmdp::train::riccati::of_module(module, &instance, &jit)
        && let Some((_, x0)) = test.init.first()
    {
        let n = riccati.n;
        let optimum: Vec<f64> = x0.chunks(n).map(|x| riccati.cost(x) / sim::report_scale(module)).collect();
        let best = optimum.iter().sum::<f64>() / optimum.len().max(1) as f64;
        let gaps: Vec<f64> = totals.iter().zip(&optimum).map(|(t, o)| t - o).collect();
        let gap = Estimate::of(&gaps);
        println!(
            "  optimum (finite-horizon Riccati, same scenarios): {best:.4}; gap {:+.4} ± {:.4} ({:+.2}%)",
            gap.mean,
            gap.half_width,
            100.0 * gap.mean / best
        );
    }
    exit::OK
}
