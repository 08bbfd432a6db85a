//! What `eval`, `compare`, `rollout`, `act` and `export` share: opening a run folder, loading
//! the subject a flag names, drawing the testbed, turning the library's errors into messages
//! and exit codes, writing result files, and the figures as text or JSON.

use std::path::Path;

use clap::ValueEnum;
use hmdp::pipeline::Compiled;
use hmdp::sim::Estimate;
use hmdp::subject::{Regimes, Subject};
use hmdp::train::TrainError;
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
    // A run of `hmdpc tune`: its declared policy with the tuned values (it has no checkpoint).
    if let Some(tuned) = &run.record.tuned {
        return match hmdp::tune::tuned_policy(&run.compiled, tuned) {
            Ok(policy) => Ok(Subject::Declared { policy: Box::new(policy), tuned: true }),
            Err(e) => {
                eprintln!("error: {e}");
                Err(exit::FAILED)
            }
        };
    }
    match run.policy(checkpoint) {
        Ok((nets, spec)) => Ok(Subject::Trained { nets: Box::new(nets), spec, checkpoint }),
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::FAILED)
        }
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
