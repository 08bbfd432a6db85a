//! Tuning a declared policy's parameters (`hmdpc tune`): Nelder–Mead, from `argmin`, on the mean
//! total cost over the train scenarios — the same scenarios at every evaluation (common random
//! numbers), so two points are compared on equal terms. Every point that improves the train
//! cost is scored on the dev scenarios, and the best on dev is kept, as `train` keeps its best
//! checkpoint. The run folder is a run folder like `train`'s ([`crate::train::folder`]): the
//! model, its data, `run.json` with the tuned values (`tuned`) and the settings, and the curve;
//! `hmdpc eval` scores it on the test scenarios.
//!
//! The search runs in the unit cube: each tunable is `lo + u (hi - lo)` with `u` clamped into
//! `[0, 1]`, so the simplex's first steps are a quarter of each range whatever its units.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use argmin::core::{CostFunction, Executor};
use argmin::solver::neldermead::NelderMead;

use crate::backend::{Backend, Buffers, RunError};
use crate::ir::{Module, PolicyProgram};
use crate::pipeline::Compiled;
use crate::random::{ScenarioSet, Seeds};
use crate::sim::policy::{DeclaredPolicy, score};
use crate::train::Config;
use crate::train::folder::{self, CurveRow, RunRecord, TunedPolicy};

/// What a tuning run needs besides the model.
pub struct Inputs<'a> {
    pub compiled: &'a Compiled,
    pub backend: &'a dyn Backend,
    /// The declared policy to tune.
    pub policy: String,
    /// The most evaluations of the train cost.
    pub evaluations: usize,
    /// The run's settings: the scenario sets (`scenarios`, `scenario_seed`), the instance and
    /// the `--set` overrides; the rest keep their defaults.
    pub config: Config,
    pub folder: PathBuf,
    pub command: Vec<String>,
    /// Set by Ctrl-C: stop after the current evaluation, keeping the best so far.
    pub stop: Arc<AtomicBool>,
    pub progress: bool,
}

/// How a tuning run ended.
#[derive(Debug)]
pub struct Outcome {
    pub evaluations: usize,
    pub seconds: f64,
    /// The tunables' names with their start values and their tuned values.
    pub start: Vec<(String, f64)>,
    pub best: Vec<(String, f64)>,
    /// Mean total dev cost at the start and at the best point.
    pub start_dev: f64,
    pub best_dev: f64,
    /// The evaluation that found the best point (0: the start).
    pub best_evaluation: usize,
    pub interrupted: bool,
}

/// Why tuning could not run or stopped.
#[derive(Debug)]
pub enum TuneError {
    /// The model failed while running (located).
    Run(RunError),
    /// The policy is unknown or cannot run on this module.
    Policy(String),
    /// The run folder cannot be written.
    Io(String),
}

impl std::fmt::Display for TuneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TuneError::Run(e) => write!(f, "{}", e.message),
            TuneError::Policy(m) | TuneError::Io(m) => write!(f, "{m}"),
        }
    }
}

/// The tunables' values at a point of the unit cube.
fn values_at(program: &PolicyProgram, u: &[f64]) -> Vec<f64> {
    program.tunables.iter().zip(u).map(|(t, u)| t.lo + u.clamp(0.0, 1.0) * (t.hi - t.lo)).collect()
}

/// Per scenario, each cost term's reported figure for the policy at `values`.
fn per_scenario(ctx: &Scoring<'_>, values: &[f64], set: ScenarioSet) -> Result<Vec<Vec<f64>>, TuneError> {
    let policy = DeclaredPolicy::new(ctx.module, ctx.program, Some(values)).map_err(TuneError::Policy)?;
    score(ctx.module, ctx.instance, Some(ctx.backend), &policy, ctx.seeds, set, ctx.scenarios).map_err(TuneError::Run)
}

fn mean_terms(per_scenario: &[Vec<f64>]) -> Vec<f64> {
    let n = per_scenario.len().max(1) as f64;
    let terms = per_scenario.first().map_or(0, Vec::len);
    (0..terms).map(|k| per_scenario.iter().map(|r| r[k]).sum::<f64>() / n).collect()
}

struct Scoring<'a> {
    module: &'a Module,
    program: &'a PolicyProgram,
    instance: &'a Buffers,
    backend: &'a dyn Backend,
    seeds: Seeds,
    scenarios: usize,
}

/// What the search has seen so far.
struct Track {
    evaluations: usize,
    best_train: f64,
    best_dev: f64,
    best: Vec<f64>,
    best_evaluation: usize,
    curve: Vec<CurveRow>,
    error: Option<TuneError>,
    out_of_budget: bool,
    /// No more evaluations will be made: the search is to end.
    over: bool,
    last_print: Instant,
}

struct Objective<'a> {
    ctx: Scoring<'a>,
    inputs: &'a Inputs<'a>,
    record: RunRecord,
    names: Vec<String>,
    started: Instant,
    track: RefCell<Track>,
}

impl Objective<'_> {
    /// Scores `values` on dev and, when they are the best there, writes them to the run folder.
    fn on_dev(&self, values: &[f64], train: f64, evaluation: usize) -> Result<(), TuneError> {
        let dev = mean_terms(&per_scenario(&self.ctx, values, ScenarioSet::Dev)?);
        let row = CurveRow::new(evaluation, self.started.elapsed().as_secs_f64(), train, dev);
        let mut track = self.track.borrow_mut();
        let improved = folder::dev_total(&row) < track.best_dev;
        let total = row.dev_total;
        track.curve.push(row);
        if improved {
            track.best_dev = total;
            track.best = values.to_vec();
            track.best_evaluation = evaluation;
            let mut record = self.record.clone();
            record.tuned = Some(tuned(self.ctx.program, values));
            let json = serde_json::to_string_pretty(&record).map_err(|e| TuneError::Io(e.to_string()))?;
            folder::write_atomic(&self.inputs.folder.join(folder::RUN), format!("{json}\n").as_bytes())
                .map_err(|e| TuneError::Io(e.to_string()))?;
        }
        folder::write_curve(&self.inputs.folder, &self.names, &track.curve).map_err(|e| TuneError::Io(e.to_string()))
    }

    fn progress(&self) {
        let mut track = self.track.borrow_mut();
        let done = track.evaluations;
        let last = self.inputs.evaluations;
        if !self.inputs.progress || (track.last_print.elapsed().as_secs_f64() < 0.5 && done < last) {
            return;
        }
        track.last_print = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "{done}/{last} evaluations, {rate:.2} evaluations/s, train {:.4}, dev {:.4}",
            track.best_train, track.best_dev
        );
        if std::io::stderr().is_terminal() {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    /// Never an error: `argmin`'s Nelder–Mead unwraps the costs of its first simplex. Once the
    /// search is over (Ctrl-C, the budget spent, the model failed) every point costs infinity
    /// at once, and [`Stoppable`] ends the search at the end of the iteration.
    fn cost(&self, u: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        {
            let mut track = self.track.borrow_mut();
            if self.inputs.stop.load(Ordering::SeqCst) || track.error.is_some() {
                track.over = true;
                return Ok(f64::INFINITY);
            }
            if track.evaluations >= self.inputs.evaluations {
                track.out_of_budget = true;
                track.over = true;
                return Ok(f64::INFINITY);
            }
            track.evaluations += 1;
        }
        let values = values_at(self.ctx.program, u);
        let train = match per_scenario(&self.ctx, &values, ScenarioSet::Train) {
            Ok(p) => mean_terms(&p).iter().sum::<f64>(),
            Err(e) => {
                self.track.borrow_mut().error = Some(e);
                return Ok(f64::INFINITY);
            }
        };
        let (improved, evaluation) = {
            let mut track = self.track.borrow_mut();
            let improved = train < track.best_train;
            if improved {
                track.best_train = train;
            }
            (improved, track.evaluations)
        };
        if improved && let Err(e) = self.on_dev(&values, train, evaluation) {
            self.track.borrow_mut().error = Some(e);
            return Ok(f64::INFINITY);
        }
        self.progress();
        // A NaN cost would stall the simplex; a policy that costs NaN is the worst there is.
        Ok(if train.is_nan() { f64::INFINITY } else { train })
    }
}

/// Nelder–Mead that ends when the objective says the search is over.
struct Stoppable<'o, 'a> {
    inner: NelderMead<Vec<f64>, f64>,
    objective: &'o Objective<'a>,
}

type NelderMeadState = argmin::core::IterState<Vec<f64>, (), (), (), (), f64>;

impl<'o, 'a> argmin::core::Solver<Lent<'o, 'a>, NelderMeadState> for Stoppable<'o, 'a> {
    fn name(&self) -> &str {
        "Nelder-Mead"
    }

    fn init(
        &mut self,
        problem: &mut argmin::core::Problem<Lent<'o, 'a>>,
        state: NelderMeadState,
    ) -> Result<(NelderMeadState, Option<argmin::core::KV>), argmin::core::Error> {
        self.inner.init(problem, state)
    }

    fn next_iter(
        &mut self,
        problem: &mut argmin::core::Problem<Lent<'o, 'a>>,
        state: NelderMeadState,
    ) -> Result<(NelderMeadState, Option<argmin::core::KV>), argmin::core::Error> {
        self.inner.next_iter(problem, state)
    }

    fn terminate(&mut self, state: &NelderMeadState) -> argmin::core::TerminationStatus {
        if self.objective.track.borrow().over {
            return argmin::core::TerminationStatus::Terminated(argmin::core::TerminationReason::SolverExit(
                "over".into(),
            ));
        }
        <NelderMead<Vec<f64>, f64> as argmin::core::Solver<Lent<'o, 'a>, NelderMeadState>>::terminate(
            &mut self.inner,
            state,
        )
    }
}

/// The objective lent to the executor, which owns its problem, so the track stays readable here.
struct Lent<'o, 'a>(&'o Objective<'a>);

impl CostFunction for Lent<'_, '_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, u: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        self.0.cost(u)
    }
}

fn tuned(program: &PolicyProgram, values: &[f64]) -> TunedPolicy {
    TunedPolicy {
        policy: program.name.clone(),
        values: program.tunables.iter().zip(values).map(|(t, v)| (t.name.clone(), *v)).collect::<BTreeMap<_, _>>(),
    }
}

/// The declared policy of a tuned run, with its tuned values.
pub fn tuned_policy(compiled: &Compiled, tuned: &TunedPolicy) -> Result<DeclaredPolicy, String> {
    let program = compiled
        .policy(&tuned.policy)
        .ok_or_else(|| format!("the run's model declares no policy `{}`", tuned.policy))?;
    let values = program
        .tunables
        .iter()
        .map(|t| tuned.values.get(&t.name).copied().ok_or_else(|| format!("run.json gives no value for `{}`", t.name)))
        .collect::<Result<Vec<f64>, String>>()?;
    DeclaredPolicy::new(&compiled.module, program, Some(&values))
}

/// Tunes the policy and writes the run folder; the folder is locked for the run.
pub fn tune(inputs: &Inputs<'_>) -> Result<Outcome, TuneError> {
    let module: &Module = &inputs.compiled.module;
    let program = inputs.compiled.policy(&inputs.policy).ok_or_else(|| {
        let names: Vec<&str> = inputs.compiled.policies.iter().map(|p| p.name.as_str()).collect();
        TuneError::Policy(if names.is_empty() {
            format!("model {} declares no policy; add `policy NAME {{ ... }}` (docs/language.md)", module.name)
        } else {
            format!(
                "model {} declares no policy `{}`; its policies are: {}",
                module.name,
                inputs.policy,
                names.join(", ")
            )
        })
    })?;
    let cfg = &inputs.config;
    let instance = crate::sim::instance(module, cfg.instance_seed).map_err(TuneError::Run)?;
    let _lock = folder::lock(&inputs.folder).map_err(TuneError::Io)?;
    let start: Vec<f64> = program.tunables.iter().map(|t| t.start).collect();
    let record = RunRecord {
        command: inputs.command.clone(),
        earlier_commands: Vec::new(),
        model: module.name.clone(),
        model_hash: folder::fingerprint(&inputs.compiled.source.text, &inputs.compiled.data_files),
        backend: inputs.backend.name().to_string(),
        config: cfg.clone(),
        versions: folder::crate_versions(),
        tuned: Some(tuned(program, &start)),
    };
    folder::start(&inputs.folder, false, &inputs.compiled.source.text, &inputs.compiled.data_files, &record)
        .map_err(|e| TuneError::Io(e.to_string()))?;
    for stale in [folder::BEST, folder::LATEST, folder::FINAL] {
        folder::remove_if_present(&inputs.folder.join(stale)).map_err(|e| TuneError::Io(e.to_string()))?;
    }
    let ctx = Scoring {
        module,
        program,
        instance: &instance,
        backend: inputs.backend,
        // A declared policy draws no random numbers: only the scenarios' seed matters.
        seeds: Seeds { scenarios: cfg.scenario_seed, policy: cfg.seed },
        scenarios: cfg.scenarios,
    };
    let started = Instant::now();
    let objective = Objective {
        ctx,
        inputs,
        record,
        names: module.costs().map(|(_, b)| b.name.clone()).collect(),
        started,
        track: RefCell::new(Track {
            evaluations: 0,
            best_train: f64::INFINITY,
            best_dev: f64::INFINITY,
            best: start.clone(),
            best_evaluation: 0,
            curve: Vec::new(),
            error: None,
            out_of_budget: false,
            over: false,
            last_print: Instant::now(),
        }),
    };
    let unit: Vec<f64> = program.tunables.iter().map(|t| (t.start - t.lo) / (t.hi - t.lo)).collect();
    // The start is evaluated first, so its dev cost is the baseline whatever the search does.
    let _ = objective.cost(&unit);
    if let Some(e) = objective.track.borrow_mut().error.take() {
        return Err(e);
    }
    let start_dev = objective.track.borrow().best_dev;
    if !unit.is_empty() && inputs.evaluations > 1 {
        // The first simplex: the start, and one step of a quarter of each range towards the
        // middle of that range.
        let mut simplex = vec![unit.clone()];
        for k in 0..unit.len() {
            let mut vertex = unit.clone();
            vertex[k] += if unit[k] <= 0.5 { 0.25 } else { -0.25 };
            simplex.push(vertex);
        }
        let solver = NelderMead::new(simplex)
            .with_sd_tolerance(1e-9)
            .map_err(|e| TuneError::Policy(format!("cannot start Nelder–Mead: {e}")))?;
        // An error from the objective is ours (stopped, out of budget, the model failed) and
        // is in the track; the best point is the track's, judged on dev.
        let solver = Stoppable { inner: solver, objective: &objective };
        let _ =
            Executor::new(Lent(&objective), solver).configure(|state| state.max_iters(inputs.evaluations as u64)).run();
    }
    if inputs.progress && std::io::stderr().is_terminal() {
        eprintln!();
    }
    let track = objective.track.into_inner();
    if let Some(e) = track.error {
        return Err(e);
    }
    let names: Vec<String> = program.tunables.iter().map(|t| t.name.clone()).collect();
    folder::write_plot(&inputs.folder, &format!("{} — tune {}", module.name, program.name), &track.curve)
        .map_err(|e| TuneError::Io(e.to_string()))?;
    Ok(Outcome {
        evaluations: track.evaluations,
        seconds: started.elapsed().as_secs_f64(),
        start: names.iter().cloned().zip(start).collect(),
        best: names.into_iter().zip(track.best).collect(),
        start_dev,
        best_dev: track.best_dev,
        best_evaluation: track.best_evaluation,
        interrupted: inputs.stop.load(Ordering::SeqCst) && !track.out_of_budget,
    })
}
