//! Sweeps from Python: the plan of a sweep file and one run of it, through the library's
//! [`hmdp::sweep`], so that a Ray task (`hmdp.sweep.run_on_ray`) trains and tests a run exactly as
//! `hmdpc sweep FILE --run NAME` does, into the same folder layout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmdp::sweep::run::{Ended, Status};
use pyo3::prelude::*;
use serde_json::json;

use super::{plain_error, to_python};

fn read(file: &PathBuf, folder: Option<PathBuf>) -> PyResult<hmdp::sweep::Sweep> {
    hmdp::sweep::plan::read(file, folder.as_deref()).map_err(plain_error)
}

/// The runs of a sweep file: a list of dicts with each run's `name`, `cell` (axis → value),
/// `seed`, `folder` and `status` (`"done"`, `"started"` or `"absent"`). Creates the sweep folder
/// (or checks that it holds this sweep file), as `hmdpc sweep` does.
#[pyfunction]
#[pyo3(signature = (file, folder = None))]
pub fn sweep_plan<'py>(py: Python<'py>, file: PathBuf, folder: Option<PathBuf>) -> PyResult<Bound<'py, PyAny>> {
    let sweep = read(&file, folder)?;
    hmdp::sweep::prepare(&sweep).map_err(plain_error)?;
    let runs: Vec<serde_json::Value> = sweep
        .runs
        .iter()
        .map(|run| {
            let folder = sweep.run_folder(run);
            let status = match hmdp::sweep::run::status(&folder) {
                Status::Done => "done",
                Status::Started => "started",
                Status::Absent => "absent",
            };
            let cell: serde_json::Map<String, serde_json::Value> = run.cell.iter().cloned().collect();
            json!({"name": run.name, "cell": cell, "seed": run.seed, "folder": folder.display().to_string(), "status": status})
        })
        .collect();
    to_python(py, &json!({"folder": sweep.folder.display().to_string(), "runs": runs}))
}

/// Trains and tests one run of a sweep (resuming a started one, skipping a finished one), as
/// `hmdpc sweep FILE --run NAME` does; returns a dict with `name`, `ended` (`"finished"`,
/// `"skipped"` or `"interrupted"`) and, when it finished now, its `test` figures. The GIL is
/// released while it trains; Ctrl-C (KeyboardInterrupt) stops it cleanly.
#[pyfunction]
#[pyo3(signature = (file, name, folder = None, progress = false))]
pub fn sweep_run<'py>(
    py: Python<'py>,
    file: PathBuf,
    name: String,
    folder: Option<PathBuf>,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let sweep = read(&file, folder)?;
    hmdp::sweep::prepare(&sweep).map_err(plain_error)?;
    let Some(run) = sweep.run(&name) else {
        return Err(plain_error(format!("the sweep has no run `{name}`")));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let result = py.detach(|| {
        std::thread::scope(|scope| {
            let running = scope.spawn(|| hmdp::sweep::run::run_one(&sweep, run, stop.clone(), progress));
            while !running.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                if Python::attach(|py| py.check_signals().is_err()) {
                    stop.store(true, Ordering::SeqCst);
                }
            }
            running.join()
        })
    });
    let ended = match result {
        Ok(Ok(ended)) => ended,
        Ok(Err(failed)) => return Err(plain_error(failed)),
        Err(_) => return Err(plain_error("internal error: the run panicked; please report this with the model")),
    };
    let report = match ended {
        Ended::Skipped => json!({"name": name, "ended": "skipped"}),
        Ended::Interrupted => json!({"name": name, "ended": "interrupted"}),
        Ended::Finished(test) => json!({"name": name, "ended": "finished", "test": test}),
    };
    to_python(py, &report)
}

/// The search space of a sweep file's `[search]`: `{"trials": N, "space": {name: {"low", "high",
/// "log", "integer"} or {"choices": [...]}}}`, or `None` without `[search]`.
#[pyfunction]
pub fn sweep_search_space<'py>(py: Python<'py>, file: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    use hmdp::sweep::plan::Space;
    let sweep = read(&file, None)?;
    let Some(search) = &sweep.search else { return to_python(py, &serde_json::Value::Null) };
    let space: serde_json::Map<String, serde_json::Value> = search
        .space
        .iter()
        .map(|(name, space)| {
            let entry = match space {
                Space::Range { low, high, log, integer } => {
                    json!({"low": low, "high": high, "log": log, "integer": integer})
                }
                Space::Choice(values) => json!({"choices": values}),
            };
            (name.clone(), entry)
        })
        .collect();
    to_python(py, &json!({"trials": search.trials, "space": space}))
}

/// Trains and tests trial `number` of a search with the sampled `settings` (a JSON object),
/// into the run folder `trial=NUMBER` of the sweep folder. `report(update, dev_cost)` is called
/// with each new dev evaluation of the curve; when it returns true the trial stops there (it is
/// pruned) and is tested as it stands. Returns `{"name", "ended", "test", "best_dev"}`.
#[pyfunction]
#[pyo3(signature = (file, number, settings, report, folder = None))]
pub fn sweep_trial<'py>(
    py: Python<'py>,
    file: PathBuf,
    number: usize,
    settings: &str,
    report: Bound<'py, PyAny>,
    folder: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    use hmdp::train::folder;
    let report = report.unbind();
    let sweep = read(&file, folder)?;
    hmdp::sweep::prepare(&sweep).map_err(plain_error)?;
    let settings: serde_json::Value = serde_json::from_str(settings).map_err(plain_error)?;
    let trial = sweep.trial(number, &settings).map_err(plain_error)?;
    let run_folder = sweep.run_folder(&trial);
    let curve_path = run_folder.join(folder::CURVE);
    let stop = Arc::new(AtomicBool::new(false));
    let mut seen = 0;
    let mut best = f64::INFINITY;
    let mut pruned = false;
    let mut callback_error: Option<PyErr> = None;
    let result = py.detach(|| {
        std::thread::scope(|scope| {
            let running = scope.spawn(|| hmdp::sweep::run::run_one(&sweep, &trial, stop.clone(), false));
            while !running.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                let rows = std::fs::read_to_string(&curve_path).map(|t| folder::read_curve(&t)).unwrap_or_default();
                for row in rows.iter().skip(seen) {
                    let dev = folder::dev_total(row);
                    best = best.min(dev);
                    let verdict = Python::attach(|py| -> PyResult<bool> {
                        py.check_signals()?;
                        report.bind(py).call1((row.update, dev))?.is_truthy()
                    });
                    match verdict {
                        Ok(true) => {
                            pruned = true;
                            stop.store(true, Ordering::SeqCst);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            callback_error.get_or_insert(e);
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                }
                seen = seen.max(rows.len());
            }
            running.join()
        })
    });
    if let Some(e) = callback_error {
        return Err(e);
    }
    let ended = match result {
        Ok(Ok(ended)) => ended,
        Ok(Err(failed)) => return Err(plain_error(failed)),
        Err(_) => return Err(plain_error("internal error: the trial panicked; please report this with the model")),
    };
    let (ended, test) = match ended {
        Ended::Finished(test) => ("finished", test),
        Ended::Skipped => ("skipped", hmdp::sweep::run::TestFigures::read(&run_folder).map_err(plain_error)?),
        Ended::Interrupted if pruned => {
            let test = py.detach(|| hmdp::sweep::run::finish_stopped(&run_folder)).map_err(plain_error)?;
            ("pruned", test)
        }
        Ended::Interrupted => return to_python(py, &json!({"name": trial.name, "ended": "interrupted"})),
    };
    // The best dev cost as the curve holds it (rows written after the last one seen count too).
    let rows = std::fs::read_to_string(&curve_path).map(|t| folder::read_curve(&t)).unwrap_or_default();
    let best = rows.iter().map(folder::dev_total).filter(|v| v.is_finite()).fold(best, f64::min);
    to_python(py, &json!({"name": trial.name, "ended": ended, "test": test, "best_dev": best}))
}
