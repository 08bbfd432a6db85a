//! Training from Python and the run folders it writes: [`train`] calls the library's trainer
//! with the one [`Config`] the command line also parses; [`Run`] opens a folder with the
//! library's [`folder::Run`], evaluates its checkpoints and hands out their policies.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim::{self, Estimate};
use hmdp::subject::{self, Score, Subject, Testbed};
use hmdp::train::folder::{self, Checkpoint, OpenError};
use hmdp::train::policy::Nets;
use hmdp::train::run::RunInputs;
use hmdp::train::spec::Spec;
use hmdp::train::{Config, TrainError};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::{Value, json};

use super::model::{Model, Shared};
use super::{failure, plain_error, run_error, to_python};

/// A training error as the exception a user sees, located in the model when it has a place.
pub fn train_error(shared: &Shared, e: TrainError) -> PyErr {
    Python::attach(|py| match e.located() {
        Some(located) => run_error(py, &shared.compiled.source, located),
        None => plain_error(e),
    })
}

/// The settings from a JSON object of `Config`'s fields (`run.json`'s names), with the model's
/// overrides and instance seed.
fn config(model: &Shared, settings: &str) -> PyResult<Config> {
    let mut value: Value = serde_json::from_str(settings).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let Some(object) = value.as_object_mut() else {
        return Err(PyValueError::new_err("the settings must be a dict"));
    };
    for key in ["set", "instance_seed"] {
        if object.contains_key(key) {
            return Err(PyValueError::new_err(format!(
                "`{key}` comes from the model: pass it to hmdp.compile(path, set=..., instance_seed=...)"
            )));
        }
    }
    object.insert("set".into(), json!(model.overrides));
    object.insert("instance_seed".into(), json!(model.instance_seed));
    serde_json::from_value(value).map_err(|e| PyValueError::new_err(format!("settings: {e}")))
}

/// Trains a policy on a compiled model into the run folder `out`, exactly as `hmdpc train` does
/// with the same settings (`settings`: a JSON object of `run.json`'s `config` fields). The GIL is
/// released while it trains; Ctrl-C (KeyboardInterrupt) stops it cleanly, as in the command
/// line: it evaluates once more and writes its final checkpoint. Returns how it ended.
#[pyfunction]
#[pyo3(signature = (model, out, settings = "{}", backend = "jit", force = false, resume = false, save_every = 30.0, progress = false))]
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    model: &Model,
    out: PathBuf,
    settings: &str,
    backend: &str,
    force: bool,
    resume: bool,
    save_every: f64,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let shared = model.shared.clone();
    let mut cfg = config(&shared, settings)?;
    // The model's `train` block under the settings given, as under `hmdpc train`'s flags.
    let given_keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(settings)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let given = |key: &str| given_keys.iter().any(|k| k == key);
    let from_model = cfg.with_model_defaults(&shared.compiled.train, &shared.compiled.module, &given);
    let origin = |key: &str| {
        if given(key) {
            hmdp::train::config::Origin::Flag
        } else if from_model.contains(&key) {
            hmdp::train::config::Origin::Model
        } else {
            hmdp::train::config::Origin::Rule
        }
    };
    if cfg.batch > cfg.scenarios {
        return Err(PyValueError::new_err(format!(
            "batch {} is larger than the training set (scenarios {})",
            cfg.batch, cfg.scenarios
        )));
    }
    if force && resume {
        return Err(PyValueError::new_err("force and resume exclude each other"));
    }
    if out.exists() && !force && !resume {
        return Err(plain_error(format!(
            "the run folder {} exists; pass force=True to replace its files, resume=True to continue it, or another folder",
            out.display()
        )));
    }
    if resume && ![folder::FINAL, folder::LATEST, folder::BEST].iter().any(|name| out.join(name).exists()) {
        return Err(plain_error(format!("resume: {} holds no checkpoint to continue from", out.display())));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let command = vec!["hmdp.train".to_string(), shared.compiled.source.name.clone(), settings.to_string()];
    let result = shared.with_backend(backend, |kernels| {
        let inputs = RunInputs {
            compiled: &shared.compiled,
            backend: kernels,
            command,
            folder: out.clone(),
            stop: stop.clone(),
            progress,
            resume,
            save_every,
            origin: &origin,
        };
        // Training runs on its own thread; this one watches for Ctrl-C, which Python sees only
        // on the main thread and only when it is asked.
        py.detach(|| {
            std::thread::scope(|scope| {
                let training = scope.spawn(|| hmdp::train::run::train(inputs, cfg));
                while !training.is_finished() {
                    std::thread::sleep(Duration::from_millis(50));
                    if Python::attach(|py| py.check_signals().is_err()) {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
                training.join()
            })
        })
    })?;
    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Err(train_error(&shared, e)),
        Err(_) => return Err(plain_error("internal error: the trainer panicked; please report this with the model")),
    };
    if let Some(e) = outcome.error {
        return Err(train_error(&shared, e));
    }
    let report = json!({
        "folder": out.display().to_string(),
        "updates": outcome.updates,
        "best_update": outcome.best_update,
        "best_dev": outcome.best_dev,
        "seconds": outcome.seconds,
        "seconds_in_updates": outcome.seconds_in_updates,
        "interrupted": outcome.interrupted,
    });
    to_python(py, &report)
}

/// A run folder written by `hmdpc train` or `hmdp.train`, opened to be read.
#[pyclass(frozen, module = "hmdp")]
pub struct Run {
    folder: PathBuf,
    record: folder::RunRecord,
    shared: Arc<Shared>,
}

/// Opens a run folder: its model compiled with the overrides and data files it was trained
/// with, its instance drawn from its instance seed.
#[pyfunction]
pub fn open_run(py: Python<'_>, folder: PathBuf) -> PyResult<Run> {
    let run = py.detach(|| folder::Run::open(&folder)).map_err(|e| match e {
        OpenError::Compile(f) => failure(py, f),
        e @ (OpenError::NotARun(_) | OpenError::Damaged(_)) => plain_error(e),
    })?;
    let folder::Run { folder, compiled, record } = run;
    let overrides = record.config.set.clone();
    let shared = Arc::new(Shared::new(py, compiled, overrides, record.config.instance_seed)?);
    Ok(Run { folder, record, shared })
}

impl Run {
    fn cfg(&self) -> &Config {
        &self.record.config
    }

    /// The networks of a checkpoint, shaped for the model and the settings.
    fn nets(&self, which: Checkpoint) -> PyResult<(Nets, Spec)> {
        folder::load_checkpoint(&self.folder, self.shared.module(), self.cfg(), which).map_err(plain_error)
    }
}

fn checkpoint(which: &str) -> PyResult<Option<Checkpoint>> {
    match which {
        "best" => Ok(Some(Checkpoint::Best)),
        "final" => Ok(Some(Checkpoint::Final)),
        "random" => Ok(None),
        other => Err(PyValueError::new_err(format!("policy must be \"best\", \"final\" or \"random\", not {other:?}"))),
    }
}

fn estimate(e: Estimate) -> Value {
    json!({ "mean": e.mean, "half_width": e.half_width, "low": e.mean - e.half_width, "high": e.mean + e.half_width })
}

#[pymethods]
impl Run {
    /// The run folder.
    #[getter]
    fn folder(&self) -> PathBuf {
        self.folder.clone()
    }

    /// The settings of the run (`run.json`'s `config`), everything left to the model resolved.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &serde_json::to_value(self.cfg()).map_err(|e| PyValueError::new_err(e.to_string()))?)
    }

    /// The model of the run, compiled as it was trained.
    #[getter]
    fn model(&self) -> Model {
        Model { shared: self.shared.clone() }
    }

    /// The learning curve (`curve.csv`) as columns: `update`, `seconds`, `train`, `dev_total`
    /// and one `dev_<term>` per cost term; `pandas.DataFrame(run.curve())` reads it.
    fn curve<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let path = self.folder.join(folder::CURVE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| plain_error(format!("cannot read {}: {}", path.display(), hmdp::pipeline::describe_io(&e))))?;
        let rows = folder::read_curve(&text);
        let column = |f: &dyn Fn(&folder::CurveRow) -> f64| -> Vec<f64> { rows.iter().map(f).collect() };
        let mut out = serde_json::Map::new();
        out.insert("update".into(), json!(rows.iter().map(|r| r.update).collect::<Vec<_>>()));
        out.insert("seconds".into(), json!(column(&|r| r.seconds)));
        out.insert("train".into(), json!(column(&|r| r.train)));
        for (k, (_, b)) in self.shared.module().costs().enumerate() {
            out.insert(format!("dev_{}", b.name), json!(column(&|r| r.dev_terms.get(k).copied().unwrap_or(f64::NAN))));
        }
        out.insert("dev_total".into(), json!(column(&|r| r.dev_total)));
        // NaN (the train column's first row) travels as null; None reads back as NaN in pandas.
        to_python(py, &Value::Object(out))
    }

    /// Evaluates the `"best"` or `"final"` checkpoint (or the `"random"` policy; a `tune` run's
    /// tuned policy for either checkpoint) on the run's test scenarios, with the library's
    /// scoring that `hmdpc eval` calls: each cost term's and the total's mean with the
    /// half-width of its 95% confidence interval (`terms`, `total`), the same as `records`
    /// (one dict per row, for `pandas.DataFrame`), and `per_scenario`, an array (scenarios,
    /// terms) of reported costs.
    #[pyo3(signature = (policy = "best", scenarios = None))]
    fn evaluate<'py>(&self, py: Python<'py>, policy: &str, scenarios: Option<usize>) -> PyResult<Bound<'py, PyAny>> {
        let which = checkpoint(policy)?;
        let cfg = self.cfg();
        let shared = &self.shared;
        let module = shared.module();
        let n = scenarios.unwrap_or(cfg.scenarios);
        if n == 0 {
            return Err(PyValueError::new_err("scenarios must be at least 1"));
        }
        let subject = match which {
            None => Subject::Random,
            Some(which) => subject::of_run(&self.folder, &shared.compiled, &self.record, which).map_err(plain_error)?,
        };
        let jit = shared.jit()?;
        // The scoring of `hmdpc eval`: the run's instance, its first `n` test scenarios.
        let scored = py.detach(|| {
            let testbed = Testbed::draw(
                module,
                shared.instance.clone(),
                jit,
                Seeds::same(cfg.scenario_seed),
                ScenarioSet::Test,
                n,
            )?;
            subject::score(&subject, &testbed, None)
        });
        let Score { terms: names, per_scenario, .. } = scored.map_err(|e| train_error(shared, e))?.0;
        let column = |k: usize| per_scenario.iter().map(|r| r[k]).collect::<Vec<f64>>();
        let totals: Vec<f64> = per_scenario.iter().map(|r| r.iter().sum()).collect();
        let mut terms = serde_json::Map::new();
        let mut records = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let e = Estimate::of(&column(k));
            terms.insert(name.clone(), estimate(e));
            let mut record = estimate(e);
            record["term"] = name.clone().into();
            records.push(record);
        }
        let total = Estimate::of(&totals);
        let mut record = estimate(total);
        record["term"] = "total".into();
        records.push(record);
        let result = json!({
            "policy": policy,
            "scenarios": per_scenario.len(),
            "unit": sim::report_unit(module),
            "terms": terms,
            "total": estimate(total),
            "records": records,
        });
        let result = to_python(py, &result)?;
        let flat: Vec<f64> = per_scenario.iter().flatten().copied().collect();
        let array = PyArray1::from_vec(py, flat).reshape([per_scenario.len(), names.len()])?;
        result.set_item("per_scenario", array)?;
        Ok(result)
    }

    /// The policy of the `"best"` or `"final"` checkpoint.
    #[pyo3(signature = (which = "best"))]
    fn policy(&self, which: &str) -> PyResult<Policy> {
        let Some(which) = checkpoint(which)? else {
            return Err(PyValueError::new_err("the random policy has no networks: use env.random_actions()"));
        };
        let (nets, spec) = self.nets(which)?;
        Ok(Policy { shared: self.shared.clone(), nets, spec })
    }

    fn __repr__(&self) -> String {
        format!("<hmdp.Run {} ({} on {})>", self.folder.display(), self.cfg().algo.name(), self.record.model)
    }
}

/// A trained policy: its networks and how they read the model. It decides from the observation
/// and from the bounds and regimes the model computes in the current state, so it is called on
/// an environment's batch (`hmdp.env`'s `policy.act(env)`).
#[pyclass(frozen, module = "hmdp")]
pub struct Policy {
    shared: Arc<Shared>,
    pub nets: Nets,
    pub spec: Spec,
}

impl Policy {
    /// The model the policy was trained on.
    pub fn model(&self) -> &Shared {
        &self.shared
    }
}
