//! What `eval`, `compare`, `rollout`, `act` and `export` share: opening a run folder or a model
//! file with a declared policy ([`open`]), loading the subject a flag names, drawing the testbed
//! ([`with_testbed`]), turning the library's errors into messages and exit codes, writing result
//! files, and the figures as text or JSON.

use std::path::Path;

use clap::ValueEnum;
use hmdp::pipeline::Compiled;
use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim::{self, Estimate};
use hmdp::subject::{Regimes, Subject, Testbed};
use hmdp::train::TrainError;
use hmdp::train::config::parse_override;
use hmdp::train::folder::{Checkpoint, OpenError, Run, write_atomic};
use serde_json::{Value, json};

use super::exit;

/// Which policy of a run.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RunPolicy {
    /// The checkpoint with the lowest dev cost.
    Best,
    /// The checkpoint written when the run ended.
    Final,
    /// The random policy, on the run's scenarios.
    Random,
}

/// Opens a run folder, or prints why not and gives the exit code.
pub fn open_run(folder: &Path) -> Result<Run, u8> {
    match Run::open(folder) {
        Ok(run) => Ok(run),
        Err(OpenError::Compile(failure)) => Err(super::fail(failure)),
        Err(e @ OpenError::NotARun(_)) => {
            eprintln!("error: {e}");
            Err(exit::USAGE)
        }
        Err(e @ OpenError::Damaged(_)) => {
            eprintln!("error: {e}");
            Err(exit::FAILED)
        }
    }
}

/// The subject a run and a policy choice name: a checkpoint's networks, or the random policy.
pub fn subject(run: &Run, policy: RunPolicy) -> Result<Subject, u8> {
    let checkpoint = match policy {
        RunPolicy::Best => Checkpoint::Best,
        RunPolicy::Final => Checkpoint::Final,
        RunPolicy::Random => return Ok(Subject::Random),
    };
    hmdp::subject::of_run(&run.folder, &run.compiled, &run.record, checkpoint).map_err(|e| {
        eprintln!("error: {e}");
        exit::FAILED
    })
}

/// The instance of a model file, which a run folder fixes in its `run.json`: the
/// `--instance-seed` and `--set` flags of `compare`, `rollout` and `act`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct InstanceFlags {
    /// For a model file: seed of the instance [default: 0] (a run folder fixes its own).
    #[arg(long)]
    pub instance_seed: Option<u64>,
    /// For a model file: override a size or a scalar parameter, e.g. `--set items=50`
    /// (repeatable; a run folder fixes its own).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    pub overrides: Vec<(String, f64)>,
}

/// What a model file is run on, where a run folder would give it from its `run.json`: its
/// instance, and `rollout`'s `--scenario-seed`.
#[derive(Clone, Debug, Default)]
pub struct ModelFlags {
    pub instance: InstanceFlags,
    pub scenario_seed: Option<u64>,
}

impl ModelFlags {
    /// The first flag given, as written on the command line.
    fn first_given(&self) -> Option<&'static str> {
        if self.instance.instance_seed.is_some() {
            Some("--instance-seed")
        } else if self.scenario_seed.is_some() {
            Some("--scenario-seed")
        } else if !self.instance.overrides.is_empty() {
            Some("--set")
        } else {
            None
        }
    }

    /// Refuses the flags for a run folder, which fixes what they choose: a usage error.
    pub fn refuse_for_run(&self, folder: &Path) -> Result<(), u8> {
        match self.first_given() {
            None => Ok(()),
            Some(flag) => {
                eprintln!(
                    "error: {flag} is for a model file: the run folder {} fixes its instance seed, scenario seed and --set values (run.json)",
                    folder.display()
                );
                Err(exit::USAGE)
            }
        }
    }
}

/// A subject named on the command line, the model it runs on and the seeds of its problem.
pub struct Opened {
    pub compiled: Compiled,
    pub subject: Subject,
    pub instance_seed: u64,
    pub scenario_seed: u64,
}

/// Whether a command-line argument names a model file rather than a run folder.
pub fn is_model_file(path: &Path) -> bool {
    path.is_file()
}

/// Opens `RUN_DIR [--policy best|final|random]` or `FILE --policy NAME|random` (a policy the
/// model declares, with its tunables' start values; a tuned one is the run folder `tune`
/// wrote). `command` names the command in messages.
pub fn open(path: &Path, policy: Option<&str>, flags: &ModelFlags, command: &str) -> Result<Opened, u8> {
    if is_model_file(path) {
        let Some(name) = policy else {
            eprintln!(
                "error: {} is a model file: name the policy to run with --policy NAME (a policy it declares, or random)",
                path.display()
            );
            return Err(exit::USAGE);
        };
        let compiled = super::compile_model(path, &flags.instance.overrides)?;
        let subject = model_subject(&compiled, name)?;
        return Ok(Opened {
            compiled,
            subject,
            instance_seed: flags.instance.instance_seed.unwrap_or(0),
            scenario_seed: flags.scenario_seed.unwrap_or(0),
        });
    }
    flags.refuse_for_run(path)?;
    let which = run_policy(policy, command)?;
    let run = open_run(path)?;
    let subject = subject(&run, which)?;
    let (instance_seed, scenario_seed) = (run.config().instance_seed, run.config().scenario_seed);
    Ok(Opened { compiled: run.compiled, subject, instance_seed, scenario_seed })
}

/// A run folder's `--policy`: `best` (the default), `final` or `random`; a usage error else.
fn run_policy(policy: Option<&str>, command: &str) -> Result<RunPolicy, u8> {
    let Some(text) = policy else { return Ok(RunPolicy::Best) };
    <RunPolicy as ValueEnum>::from_str(text, false).map_err(|_| {
        eprintln!(
            "error: a run folder's --policy is best, final or random, not `{text}`; a policy the model declares runs from the model file: `hmdpc {command} FILE --policy {text}`"
        );
        exit::USAGE
    })
}

/// The subject a model file's `--policy` names: a declared policy with its start values, or
/// the random policy.
pub fn model_subject(compiled: &Compiled, name: &str) -> Result<Subject, u8> {
    Ok(match super::declared_policy(compiled, name, None)? {
        Some(policy) => Subject::Declared { policy: Box::new(policy), tuned: false },
        None => Subject::Random,
    })
}

/// What `eval`, `rollout` and `compare` score their subjects on: checks that the scenarios fit
/// in memory, draws the instance of `instance_seed`, compiles the JIT kernels, draws the first
/// `scenarios` test scenarios of `scenario_seed`, and hands the testbed to `run`.
pub fn with_testbed(
    compiled: &Compiled,
    instance_seed: u64,
    scenario_seed: u64,
    scenarios: usize,
    command: &str,
    run: impl FnOnce(&Testbed) -> u8,
) -> u8 {
    let module = &compiled.module;
    let need = hmdp::resources::Need::new().model(module).stored_scenarios(module, "test", scenarios, module.horizon);
    if let Err(code) = super::fits(compiled, need, command) {
        return code;
    }
    let instance = match sim::instance(module, instance_seed) {
        Ok(i) => i,
        Err(e) => return super::run_error(compiled, e),
    };
    let jit = match super::compile_jit(module) {
        Ok(jit) => jit,
        Err(code) => return code,
    };
    // The random policy draws on the scenario seed's policy streams: the baseline is the same
    // for every training seed.
    let seeds = Seeds::same(scenario_seed);
    match Testbed::draw(module, instance, &jit, seeds, ScenarioSet::Test, scenarios) {
        Ok(testbed) => run(&testbed),
        Err(e) => super::run_error(compiled, e),
    }
}

/// Prints an error of a subject's run on the model (located when it has a place) and gives
/// its exit code.
pub fn train_error(compiled: &Compiled, e: TrainError) -> u8 {
    match e.located() {
        Some(located) => super::run_error(compiled, located),
        None => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

/// Writes a result file atomically, or prints why not (a usage error: the folder is missing
/// or not writable).
pub fn write(path: &Path, text: &str) -> Result<(), u8> {
    write_atomic(path, text.as_bytes()).map_err(|e| {
        eprintln!("error: cannot write {e}");
        exit::USAGE
    })
}

/// An estimate as JSON.
pub fn estimate_json(e: &Estimate) -> Value {
    json!({ "mean": e.mean, "half_width": e.half_width })
}

/// Rows of estimates as JSON: `[{"name": ..., "mean": ..., "half_width": ...}]`.
pub fn estimates_json(rows: &[(String, Estimate)]) -> Value {
    Value::Array(
        rows.iter().map(|(name, e)| json!({ "name": name, "mean": e.mean, "half_width": e.half_width })).collect(),
    )
}

/// What a subject chose, as JSON: per discrete action the share of each label, per continuous
/// action the share of elements and periods it acted in and its mean value there.
pub fn regimes_json(regimes: &Regimes) -> Value {
    let discrete: Vec<Value> = regimes
        .discrete
        .iter()
        .map(|d| {
            let shares: serde_json::Map<String, Value> =
                d.labels.iter().cloned().zip(d.frequencies().into_iter().map(Value::from)).collect();
            json!({ "action": d.action, "labels": shares })
        })
        .collect();
    let continuous: Vec<Value> = regimes
        .continuous
        .iter()
        .map(|c| json!({ "action": c.action, "acting": c.share(), "mean_when_acting": c.mean() }))
        .collect();
    json!({ "discrete": discrete, "continuous": continuous })
}

/// Prints what a subject chose: each discrete action's share of each label, each continuous
/// action's share acting and mean value there.
pub fn print_regimes(regimes: &Regimes) {
    let names = regimes.discrete.iter().map(|d| &d.action).chain(regimes.continuous.iter().map(|c| &c.action));
    let width = names.map(|n| n.chars().count()).max().unwrap_or(0);
    let pad = |name: &str| " ".repeat(width - name.chars().count());
    if !regimes.discrete.is_empty() {
        println!("choices (share of each label over the reported periods and elements):");
        for d in &regimes.discrete {
            let shares: Vec<String> =
                d.labels.iter().zip(d.frequencies()).map(|(l, f)| format!("{l} {:.1}%", 100.0 * f)).collect();
            println!("  {}{}  {}", d.action, pad(&d.action), shares.join("  "));
        }
    }
    if !regimes.continuous.is_empty() {
        println!("continuous actions (share of the reported periods and elements they act in; mean value there):");
        for c in &regimes.continuous {
            let mean = c.mean().map_or("never acts".to_string(), |m| format!("mean {m:.4}"));
            println!("  {}{}  acts {:.1}%  {mean}", c.action, pad(&c.action), 100.0 * c.share());
        }
    }
}
