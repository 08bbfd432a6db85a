//! One run of a sweep, from start to its test figures: it trains into its run folder (a fresh
//! one, or resuming the checkpoint a killed run left), then evaluates the best checkpoint on
//! the test scenarios and writes `test.json`, the mark of a finished run. `hmdpc sweep` runs it
//! in a child process per run; the Python package runs it as a Ray task. The run folder's lock
//! (taken by the trainer) keeps two processes from writing one run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::plan::{Planned, Sweep};
use crate::backend::jit::Jit;
use crate::check::Options;
use crate::diagnostics::Diagnostic;
use crate::pipeline::{self, Compiled};
use crate::random::ScenarioSet;
use crate::sim::{self, Estimate};
use crate::train::config::Origin;
use crate::train::folder::{self, Checkpoint, Run};
use crate::train::run::{RunInputs, train};
use crate::train::scenarios::Scenarios;

/// The file a finished run holds: its test figures.
pub const TEST: &str = "test.json";

/// Where a planned run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Trained and evaluated: `test.json` is there.
    Done,
    /// Started: a checkpoint is there, but no test figures (killed, or training now).
    Started,
    /// Not started.
    Absent,
}

/// Where the run in `folder` stands.
pub fn status(folder: &Path) -> Status {
    if folder.join(TEST).is_file() {
        Status::Done
    } else if [folder::FINAL, folder::LATEST, folder::BEST].iter().any(|f| folder.join(f).is_file()) {
        Status::Started
    } else {
        Status::Absent
    }
}

/// A finished run's test figures (`test.json`): each cost term and the total over the test
/// scenarios, scaled as the model's `report` says, with the per-scenario totals for paired
/// comparisons.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestFigures {
    pub unit: String,
    pub scenarios: usize,
    pub scenario_seed: u64,
    pub terms: Vec<TermFigure>,
    pub total: TermFigure,
    pub per_scenario_total: Vec<f64>,
    /// The updates the run made and the one whose policy was kept (best on dev).
    pub updates: usize,
    pub best_update: usize,
    /// Stopped before its planned updates (a search trial pruned on its dev cost).
    #[serde(default)]
    pub stopped_early: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TermFigure {
    pub name: String,
    pub mean: f64,
    pub half_width: f64,
}

impl TestFigures {
    pub fn read(folder: &Path) -> Result<TestFigures, String> {
        let path = folder.join(TEST);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {}", path.display(), pipeline::describe_io(&e)))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", path.display()))
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// It had finished before: nothing was done.
    Skipped,
    /// Trained (or resumed) and evaluated now.
    Finished(TestFigures),
    /// Stopped by the stop flag (Ctrl-C); its checkpoints are kept, and running it again
    /// resumes it.
    Interrupted,
}

/// Why a run failed: a message ready to print (a diagnostic located in the model when the cause
/// has a place there).
#[derive(Debug)]
pub struct Failed {
    pub run: String,
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {}: {}", self.run, self.message)
    }
}

/// Compiles the model of a planned run with its `--set` values.
pub fn compile(sweep: &Sweep, run: &Planned) -> Result<Compiled, pipeline::Failure> {
    pipeline::compile_file(&sweep.model, &Options { overrides: run.config.set.clone() })
}

/// Trains a planned run to its end (resuming what a killed run left) and writes its test
/// figures; a run already done is skipped. `stop` stops it cleanly, keeping its checkpoints.
pub fn run_one(sweep: &Sweep, run: &Planned, stop: Arc<AtomicBool>, progress: bool) -> Result<Ended, Failed> {
    let folder = sweep.run_folder(run);
    let failed = |message: String| Failed { run: run.name.clone(), message };
    let resume = match status(&folder) {
        Status::Done => return Ok(Ended::Skipped),
        Status::Started => true,
        Status::Absent => false,
    };
    let compiled = compile(sweep, run).map_err(|f| failed(f.render(false)))?;
    if let Some(memory) = crate::resources::machine_memory() {
        crate::train::need(&compiled.module, &run.config)
            .fits(memory, "train")
            .map_err(|refused| failed(pipeline::too_large(&compiled, refused).render(false)))?;
    }
    let jit = Jit::compile(&compiled.module).map_err(|e| failed(format!("internal error: {e}")))?;
    // A run killed after training, before its test, needs only the test.
    let trained = std::fs::read(folder.join(folder::FINAL))
        .ok()
        .and_then(|bytes| folder::checkpoint_header(&bytes))
        .is_some_and(|header| header.update >= run.config.updates);
    // The trainer locks the folder while it trains; the test alone locks it here.
    let _lock = if trained {
        Some(folder::lock(&folder).map_err(failed)?)
    } else {
        train_run(sweep, run, &compiled, &jit, stop.clone(), progress, resume).map_err(failed)?;
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(Ended::Interrupted);
        }
        folder::lock(&folder).ok()
    };
    record_test(&folder, &jit, false).map(Ended::Finished).map_err(failed)
}

/// Tests the best checkpoint of the run in `folder` and writes `test.json`, the mark of a
/// finished run; `stopped_early` for a run stopped on purpose before its planned updates (a
/// pruned search trial), which is finished as it stands.
pub fn record_test(folder: &Path, jit: &Jit, stopped_early: bool) -> Result<TestFigures, String> {
    let mut figures = evaluate(folder, jit)?;
    figures.stopped_early = stopped_early;
    let text = serde_json::to_string_pretty(&figures).map_err(|e| e.to_string())?;
    folder::write_atomic(&folder.join(TEST), text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", folder.join(TEST).display()))?;
    Ok(figures)
}

/// [`record_test`] for a run stopped early, compiling its recorded model.
pub fn finish_stopped(folder: &Path) -> Result<TestFigures, String> {
    let run = Run::open(folder).map_err(|e| e.to_string())?;
    let jit = Jit::compile(&run.compiled.module).map_err(|e| format!("internal error: {e}"))?;
    let _lock = folder::lock(folder)?;
    record_test(folder, &jit, true)
}

/// Trains a planned run into its folder (resuming it with `resume`); a message when it fails.
fn train_run(
    sweep: &Sweep,
    run: &Planned,
    compiled: &Compiled,
    jit: &Jit,
    stop: Arc<AtomicBool>,
    progress: bool,
    resume: bool,
) -> Result<(), String> {
    let located = |e: crate::backend::RunError| {
        let d = Diagnostic::error("run", e.message, e.span, "while evaluating this");
        compiled.source.render(&[d], false)
    };
    // The model's `train` block under the sweep file's settings, as under `train`'s flags.
    let mut config = run.config.clone();
    let given = |key: &str| sweep.gives(key);
    let from_model = config.with_model_defaults(&compiled.train, &compiled.module, &given);
    let origin = |key: &str| {
        if sweep.gives(key) {
            Origin::Config
        } else if from_model.contains(&key) {
            Origin::Model
        } else {
            Origin::Rule
        }
    };
    let mut command: Vec<String> = vec!["hmdpc".into(), "sweep".into()];
    command.push(sweep.folder.join(super::plan::SWEEP_FILE).display().to_string());
    command.extend(["--run".into(), run.name.clone()]);
    let inputs = RunInputs {
        compiled,
        backend: jit,
        command,
        folder: sweep.run_folder(run),
        stop,
        progress,
        resume,
        save_every: 30.0,
        origin: &origin,
    };
    let outcome = train(inputs, config).map_err(|e| match e.located() {
        Some(e) => located(e),
        None => e.to_string(),
    })?;
    match outcome.error {
        Some(e) => Err(match e.located() {
            Some(e) => located(e),
            None => e.to_string(),
        }),
        None => Ok(()),
    }
}

/// The best checkpoint of a finished run on the run's test scenarios.
fn evaluate(folder: &Path, jit: &Jit) -> Result<TestFigures, String> {
    let run = Run::open(folder).map_err(|e| e.to_string())?;
    let module = &run.compiled.module;
    let cfg = run.config();
    let instance = sim::instance(module, cfg.instance_seed).map_err(|e| e.message)?;
    let test = Scenarios::draw(module, &instance, cfg.scenario_seed, ScenarioSet::Test, cfg.scenarios)
        .map_err(|e| e.message)?;
    let (nets, spec) = run.policy(Checkpoint::Best)?;
    let ctx = crate::train::rollout::Context { module, spec: &spec, backend: jit, instance: &instance };
    let evaluation = crate::train::evaluate(&ctx, &nets, &test).map_err(|e| e.to_string())?;
    let summary = sim::summarise(module, &evaluation.per_scenario, evaluation.per_scenario.len());
    let figure =
        |name: &str, e: Estimate| TermFigure { name: name.to_string(), mean: e.mean, half_width: e.half_width };
    let curve = std::fs::read_to_string(folder.join(folder::CURVE)).map(|t| folder::read_curve(&t)).unwrap_or_default();
    let updates = curve.last().map_or(0, |row| row.update);
    let best_update = curve
        .iter()
        .filter(|row| folder::dev_total(row).is_finite())
        .min_by(|a, b| folder::dev_total(a).total_cmp(&folder::dev_total(b)))
        .map_or(0, |row| row.update);
    Ok(TestFigures {
        unit: summary.unit,
        scenarios: summary.scenarios,
        scenario_seed: cfg.scenario_seed,
        terms: summary.terms.iter().map(|(name, e)| figure(name, *e)).collect(),
        total: figure("total", summary.total),
        per_scenario_total: evaluation.per_scenario.iter().map(|r| r.iter().sum()).collect(),
        updates,
        best_update,
        stopped_early: false,
    })
}
