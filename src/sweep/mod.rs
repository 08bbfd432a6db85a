//! Studies across sizes, algorithms, settings and seeds. A sweep file ([`plan`]) expands into
//! one run per combination of its axes, each a run folder under `SWEEP/runs/`; [`run`] trains
//! and tests one of them (resuming a killed one, skipping a finished one); [`report`] and
//! [`plots`] summarise the finished runs. `hmdpc sweep` runs the plan on this machine, a few
//! runs at a time, each in a child process; the Python package runs the same runs as Ray tasks.
//!
//! A sweep folder holds `sweep.toml` (the sweep file it was started from: running another file
//! into it is refused), `runs/NAME/` (run folders, each with `test.json` once finished),
//! `logs/NAME.log` (a run's output under `hmdpc sweep --jobs`), and what `hmdpc report` writes:
//! `report.md`, `report.csv`, `report.json` and the SVG plots.

pub mod plan;
pub mod plots;
pub mod report;
pub mod run;

use std::path::Path;

pub use plan::{Planned, Sweep};

use crate::train::folder;

/// Makes `sweep.folder` the sweep's folder: creates it with the sweep file's copy, or checks
/// that the copy it holds is this sweep file.
pub fn prepare(sweep: &Sweep) -> Result<(), String> {
    let copy = sweep.folder.join(plan::SWEEP_FILE);
    match std::fs::read_to_string(&copy) {
        Ok(text) if text == sweep.text => Ok(()),
        Ok(_) => Err(format!(
            "the sweep folder {} holds another sweep ({} differs from this sweep file); give the sweep another \
             `folder` (or `--folder`), or remove the old one",
            sweep.folder.display(),
            copy.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(sweep.folder.join(plan::RUNS)).map_err(|e| {
                format!("cannot create {}: {}", sweep.folder.display(), crate::pipeline::describe_io(&e))
            })?;
            folder::write_atomic(&copy, sweep.text.as_bytes())
                .map_err(|e| format!("cannot write {}: {}", copy.display(), crate::pipeline::describe_io(&e)))
        }
        Err(e) => Err(format!("cannot read {}: {}", copy.display(), crate::pipeline::describe_io(&e))),
    }
}

/// Opens a sweep folder for reporting: the plan of the sweep file it holds.
pub fn open(folder: &Path) -> Result<Sweep, String> {
    let copy = folder.join(plan::SWEEP_FILE);
    if !copy.is_file() {
        return Err(format!("{} is not a sweep folder: it has no {}", folder.display(), plan::SWEEP_FILE));
    }
    let mut sweep = plan::read(&copy, Some(folder))?;
    // A search's trials are the runs it started.
    if sweep.search.is_some() {
        sweep.runs = sweep.trials_on_disk();
    }
    Ok(sweep)
}

/// The continuous action dimension of a planned run's problem, from the model its first
/// finished run of that problem recorded; `None` until one has finished.
pub fn action_dimension(sweep: &Sweep, planned: &Planned) -> Result<Option<usize>, String> {
    let problem = planned.problem();
    for run in sweep.runs.iter().filter(|r| r.problem() == problem) {
        let folder = sweep.run_folder(run);
        if run::status(&folder) != run::Status::Done {
            continue;
        }
        let recorded = folder::RecordedModel::read(&folder).map_err(|e| e.to_string())?;
        let compiled = recorded.compile(&run.config.set).map_err(|f| f.render(false))?;
        let spec = crate::train::spec::Spec::of(&compiled.module);
        return Ok(Some(spec.continuous.iter().map(|h| h.len).sum()));
    }
    Ok(None)
}

/// Writes `report.md`, `report.csv`, `report.json` and the plots (`cost.svg`,
/// `curves-PROBLEM.svg`, `reach.svg`) into `out`; returns the files written.
pub fn write_report(report: &report::Report, out: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create {}: {}", out.display(), crate::pipeline::describe_io(&e)))?;
    let mut files = vec![
        ("report.md".to_string(), report::markdown(report)),
        ("report.csv".to_string(), report::csv(report)),
        ("report.json".to_string(), serde_json::to_string_pretty(&report::to_json(report)).map_err(|e| e.to_string())?),
    ];
    if report.cells.iter().any(|c| !c.runs.is_empty()) {
        if let Some(svg) = plots::cost(report)? {
            files.push(("cost.svg".into(), svg));
        }
        for problem in report.problems() {
            if report.cells.iter().any(|c| c.problem_name() == problem && !c.runs.is_empty()) {
                files.push((format!("curves-{problem}.svg"), plots::curves(report, &problem)?));
            }
        }
        files.push(("reach.svg".into(), plots::reach(report)?));
    }
    let mut written = Vec::new();
    for (name, text) in files {
        let path = out.join(&name);
        folder::write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {}", path.display(), crate::pipeline::describe_io(&e)))?;
        written.push(path);
    }
    Ok(written)
}
