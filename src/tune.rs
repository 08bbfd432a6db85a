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
//!
//! `evaluations.csv` logs every evaluation of the train cost (its point and cost) once it is
//! done. The objective is deterministic (common random numbers), so Nelder–Mead from the same
//! start asks for the same points in the same order: `--resume` replays the search, answering
//! the logged points from the log, and goes on evaluating where the log ends. So a resumed run
//! is the run that was not stopped, without keeping `argmin`'s solver state.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::io::Write as _;
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
    /// Start values that replace the declared ones, by tunable (`--start`; see [`start_values`]).
    pub start: Vec<(String, f64)>,
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
    /// Continue the run in `folder` (started with the same model, policy, start and settings).
    pub resume: bool,
}

/// The log of every evaluation of the train cost, which `--resume` replays.
pub const EVALUATIONS: &str = "evaluations.csv";

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
    /// `--resume` cannot continue the run folder (the message says why).
    Resume(String),
    /// The run folder cannot be written.
    Io(String),
}

impl std::fmt::Display for TuneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TuneError::Run(e) => write!(f, "{}", e.message),
            TuneError::Policy(m) | TuneError::Resume(m) | TuneError::Io(m) => write!(f, "{m}"),
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
    /// The logged evaluations still to replay (`--resume`), in order: point and train cost.
    replay: RefCell<VecDeque<(Vec<f64>, f64)>>,
    log: RefCell<std::fs::File>,
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

    /// Appends a done evaluation to the log.
    fn log_evaluation(&self, evaluation: usize, u: &[f64], train: f64) -> Result<(), TuneError> {
        let line = log_line(evaluation, u, train);
        let path = self.inputs.folder.join(EVALUATIONS);
        self.log.borrow_mut().write_all(line.as_bytes()).map_err(|e| {
            TuneError::Io(format!("cannot write {}: {}", path.display(), crate::pipeline::describe_io(&e)))
        })
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
        let logged = self.replay.borrow_mut().pop_front();
        if let Some((point, train)) = logged {
            let mut track = self.track.borrow_mut();
            if point != *u {
                track.error = Some(TuneError::Resume(format!(
                    "--resume: evaluation {} of the search is not the one {EVALUATIONS} logged; the run cannot be continued (start it afresh with --force)",
                    track.evaluations
                )));
                track.over = true;
                return Ok(f64::INFINITY);
            }
            if train < track.best_train {
                track.best_train = train;
            }
            return Ok(if train.is_nan() { f64::INFINITY } else { train });
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
        if let Err(e) = self.log_evaluation(evaluation, u, train) {
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

/// The start of the search: each tunable's declared start value, or the value `given` names it
/// (`--start s=12,S=40`). A name the policy does not tune, a name given twice or a value outside
/// the declared bounds is refused, with what to write instead.
pub fn start_values(program: &PolicyProgram, given: &[(String, f64)]) -> Result<Vec<f64>, String> {
    for (k, (name, value)) in given.iter().enumerate() {
        if given[..k].iter().any(|(earlier, _)| earlier == name) {
            return Err(format!("--start gives `{name}` twice"));
        }
        let Some(tunable) = program.tunables.iter().find(|t| t.name == *name) else {
            let names: Vec<&str> = program.tunables.iter().map(|t| t.name.as_str()).collect();
            return Err(if names.is_empty() {
                format!("--start: policy `{}` has no tunable parameters", program.name)
            } else {
                let hint = crate::check::did_you_mean(name, names.iter().copied())
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                format!(
                    "--start: policy `{}` has no tunable `{name}`{hint}; its tunables are: {}",
                    program.name,
                    names.join(", ")
                )
            });
        };
        if !(tunable.lo..=tunable.hi).contains(value) {
            return Err(format!(
                "--start {name}={value}: outside the bounds of `{name}`, [{}, {}], that policy `{}` declares (`tune {name} in [{}, {}] = {}`)",
                tunable.lo, tunable.hi, program.name, tunable.lo, tunable.hi, tunable.start
            ));
        }
    }
    Ok(program
        .tunables
        .iter()
        .map(|t| given.iter().find(|(name, _)| *name == t.name).map_or(t.start, |(_, v)| *v))
        .collect())
}

/// The first line of [`EVALUATIONS`]: the evaluation, its train cost, its point in the unit cube.
fn log_header(program: &PolicyProgram) -> String {
    let mut line = "evaluation,train".to_string();
    for t in &program.tunables {
        line.push_str(&format!(",u:{}", t.name));
    }
    line.push('\n');
    line
}

/// A line of [`EVALUATIONS`]; numbers as Rust writes them, which read back bit for bit.
fn log_line(evaluation: usize, u: &[f64], train: f64) -> String {
    let mut line = format!("{evaluation},{train}");
    for v in u {
        line.push_str(&format!(",{v}"));
    }
    line.push('\n');
    line
}

/// What a resumed run continues from.
struct Resumed {
    /// Every logged evaluation, in order: its point and train cost.
    logged: VecDeque<(Vec<f64>, f64)>,
    /// The curve up to the last logged evaluation.
    curve: Vec<CurveRow>,
    best_dev: f64,
    best: Vec<f64>,
    best_evaluation: usize,
    earlier_commands: Vec<serde_json::Value>,
}

/// Reads a tune run folder for `--resume`: refuses one of another model, policy, start or
/// settings, and keeps the evaluations logged (a line cut short by a kill ends the log) and the
/// curve up to the last of them.
fn resumed(
    inputs: &Inputs<'_>,
    program: &PolicyProgram,
    record: &RunRecord,
    unit: &[f64],
) -> Result<Resumed, TuneError> {
    let dir = &inputs.folder;
    let refuse = |why: String| TuneError::Resume(format!("--resume: {why}"));
    let old = folder::read_record(dir).map_err(|e| refuse(e.to_string()))?;
    let Some(old_tuned) = &old.tuned else {
        return Err(refuse(format!("{} is not a run of `hmdpc tune`", dir.display())));
    };
    let (was, now) = (&old.config, &record.config);
    let mut changed = Vec::new();
    if old.model_hash != record.model_hash {
        changed.push("the model (model.hmdp or its data files)".to_string());
    }
    if old_tuned.policy != program.name {
        changed.push(format!("the policy (`{}`)", old_tuned.policy));
    }
    if was.scenarios != now.scenarios {
        changed.push(format!("--scenarios {}", was.scenarios));
    }
    if was.scenario_seed != now.scenario_seed {
        changed.push(format!("--scenario-seed {}", was.scenario_seed));
    }
    if was.instance_seed != now.instance_seed {
        changed.push(format!("--instance-seed {}", was.instance_seed));
    }
    if was.set != now.set {
        changed.push(format!("--set {:?}", was.set));
    }
    if !changed.is_empty() {
        return Err(refuse(format!(
            "{} tuned another problem or policy: {}; resume with the settings it was started with ({})",
            dir.display(),
            changed.join(", "),
            folder::RUN
        )));
    }
    let path = dir.join(EVALUATIONS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| refuse(format!("cannot read {}: {}", path.display(), crate::pipeline::describe_io(&e))))?;
    let mut logged = VecDeque::new();
    // A line is whole once its newline is written: a kill while writing leaves it without.
    for line in text.split_inclusive('\n').skip(1) {
        let Some(line) = line.strip_suffix('\n') else { break };
        let numbers: Result<Vec<f64>, _> = line.split(',').map(str::parse::<f64>).collect();
        match numbers {
            Ok(numbers) if numbers.len() == 2 + unit.len() && numbers[0] == (logged.len() + 1) as f64 => {
                logged.push_back((numbers[2..].to_vec(), numbers[1]));
            }
            _ => break,
        }
    }
    match logged.front() {
        None => return Err(refuse(format!("{} logs no evaluation to continue from", path.display()))),
        Some((first, _)) if first.as_slice() != unit => {
            return Err(refuse(format!(
                "{} started from other values; give the --start it was started with",
                dir.display()
            )));
        }
        Some(_) => {}
    }
    let curve_text = std::fs::read_to_string(dir.join(folder::CURVE)).unwrap_or_default();
    let curve: Vec<CurveRow> =
        folder::read_curve(&curve_text).into_iter().filter(|r| r.update >= 1 && r.update <= logged.len()).collect();
    let mut best: Option<&CurveRow> = None;
    for row in &curve {
        if best.is_none_or(|b| folder::dev_total(row) < folder::dev_total(b)) {
            best = Some(row);
        }
    }
    let (best_dev, best_evaluation) = best.map_or((f64::INFINITY, 0), |b| (folder::dev_total(b), b.update));
    let best = match best_evaluation.checked_sub(1).and_then(|k| logged.get(k)) {
        Some((u, _)) => values_at(program, u),
        None => values_at(program, unit),
    };
    let mut earlier_commands = old.earlier_commands.clone();
    earlier_commands.push(old.command.clone().into());
    Ok(Resumed { logged, curve, best_dev, best, best_evaluation, earlier_commands })
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
    let start = start_values(program, &inputs.start).map_err(TuneError::Policy)?;
    let unit: Vec<f64> = program.tunables.iter().zip(&start).map(|(t, v)| (v - t.lo) / (t.hi - t.lo)).collect();
    let mut record = RunRecord {
        command: inputs.command.clone(),
        earlier_commands: Vec::new(),
        model: module.name.clone(),
        model_hash: folder::fingerprint(&inputs.compiled.source.text, &inputs.compiled.data_files),
        backend: inputs.backend.name().to_string(),
        config: cfg.clone(),
        versions: folder::crate_versions(),
        tuned: Some(tuned(program, &start)),
    };
    let resumed = if inputs.resume { Some(resumed(inputs, program, &record, &unit)?) } else { None };
    if let Some(resumed) = &resumed {
        record.earlier_commands.clone_from(&resumed.earlier_commands);
        record.tuned = Some(tuned(program, &resumed.best));
    }
    folder::start(&inputs.folder, inputs.resume, &inputs.compiled.source.text, &inputs.compiled.data_files, &record)
        .map_err(|e| TuneError::Io(e.to_string()))?;
    for stale in [folder::BEST, folder::LATEST, folder::FINAL] {
        folder::remove_if_present(&inputs.folder.join(stale)).map_err(|e| TuneError::Io(e.to_string()))?;
    }
    // The log holds the evaluations to replay; a fresh run starts it empty.
    let log_path = inputs.folder.join(EVALUATIONS);
    let mut log_text = log_header(program);
    for (k, (u, train)) in resumed.iter().flat_map(|r| &r.logged).enumerate() {
        log_text.push_str(&log_line(k + 1, u, *train));
    }
    folder::write_atomic(&log_path, log_text.as_bytes()).map_err(|e| TuneError::Io(e.to_string()))?;
    let log = std::fs::OpenOptions::new().append(true).open(&log_path).map_err(|e| {
        TuneError::Io(format!("cannot write {}: {}", log_path.display(), crate::pipeline::describe_io(&e)))
    })?;
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
            best_dev: resumed.as_ref().map_or(f64::INFINITY, |r| r.best_dev),
            best: resumed.as_ref().map_or(start.clone(), |r| r.best.clone()),
            best_evaluation: resumed.as_ref().map_or(0, |r| r.best_evaluation),
            curve: resumed.as_ref().map_or(Vec::new(), |r| r.curve.clone()),
            error: None,
            out_of_budget: false,
            over: false,
            last_print: Instant::now(),
        }),
        replay: RefCell::new(resumed.map_or(VecDeque::new(), |r| r.logged)),
        log: RefCell::new(log),
    };
    // The start is evaluated first, so its dev cost is the baseline whatever the search does.
    let _ = objective.cost(&unit);
    if let Some(e) = objective.track.borrow_mut().error.take() {
        return Err(e);
    }
    // The start is evaluation 1, which improves on nothing: the curve's first row (unless its
    // train cost is NaN).
    let start_dev =
        objective.track.borrow().curve.first().filter(|r| r.update == 1).map_or(f64::INFINITY, folder::dev_total);
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
