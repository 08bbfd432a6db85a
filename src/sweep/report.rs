//! `hmdpc report`: what a sweep's finished runs say, cell by cell. For every cell (a
//! combination of the axes but the seed): the test cost's mean, standard deviation and median
//! over its finished seeds, per term and in total; the number of seeds done; and, per run, the
//! updates it needed to come within 10% of the best dev cost any run of its problem reached.
//! The tables are laid out as the HPO paper's (a row per problem — the `set.` axes — and a
//! column per method — the other axes), in Markdown, CSV and JSON; the plots are in
//! [`super::plots`].

use serde_json::{Value, json};

use super::plan::{Planned, Sweep, cell_name, show};
use super::run::{Status, TestFigures, status};
use crate::train::folder::{self, CurveRow};

/// How close to the best dev cost of its problem a run must come for [`CellReport::reached`].
pub const WITHIN: f64 = 0.10;

/// Mean, sample standard deviation and median of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub median: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let n = values.len();
        if n == 0 {
            return Stats { n, mean: f64::NAN, std: f64::NAN, median: f64::NAN };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std =
            if n > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
        Stats { n, mean, std, median }
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "mean": finite(self.mean), "std": finite(self.std), "median": finite(self.median)})
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

/// One finished run of a cell.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub name: String,
    pub seed: u64,
    pub test: TestFigures,
    pub curve: Vec<CurveRow>,
    /// The updates the run was planned to make.
    pub planned_updates: usize,
    /// The run's settings.
    pub config: crate::train::Config,
    /// The first update whose dev cost is within [`WITHIN`] of the best of the problem; `None`
    /// when no evaluation came that close.
    pub reached: Option<usize>,
}

/// A cell: its runs and what they say together.
#[derive(Clone, Debug)]
pub struct CellReport {
    pub name: String,
    pub problem: Vec<(String, Value)>,
    pub method: Vec<(String, Value)>,
    pub planned: usize,
    pub started: usize,
    pub runs: Vec<RunReport>,
    /// The total and each term over the finished runs.
    pub total: Stats,
    pub terms: Vec<(String, Stats)>,
    /// The continuous action dimension of the cell's problem (values of all continuous actions).
    /// Known once a run of the problem has finished (it is read from that run's model).
    pub action_dim: Option<usize>,
}

impl CellReport {
    /// The problem's name (`items=10`), `all` when no size is swept.
    pub fn problem_name(&self) -> String {
        cell_name(&self.problem)
    }

    /// The method's name (`algo=hpo`), `all` when only sizes are swept.
    pub fn method_name(&self) -> String {
        cell_name(&self.method)
    }
}

/// A whole sweep's report.
#[derive(Clone, Debug)]
pub struct Report {
    pub sweep: Sweep,
    pub unit: String,
    pub cells: Vec<CellReport>,
}

impl Report {
    /// The problems in plan order.
    pub fn problems(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for cell in &self.cells {
            let name = cell.problem_name();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The methods in plan order.
    pub fn methods(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for cell in &self.cells {
            let name = cell.method_name();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    pub fn cell(&self, problem: &str, method: &str) -> Option<&CellReport> {
        self.cells.iter().find(|c| c.problem_name() == problem && c.method_name() == method)
    }

    /// The term names, total first.
    pub fn term_names(&self) -> Vec<String> {
        let mut names = vec!["total".to_string()];
        for cell in &self.cells {
            for (name, _) in &cell.terms {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }
}

/// Reads what the sweep's runs have written. `dimension` gives a problem's continuous action
/// dimension from a finished run of its problem (it compiles that run's model), or `None`.
pub fn collect(sweep: &Sweep, dimension: &dyn Fn(&Planned) -> Result<Option<usize>, String>) -> Result<Report, String> {
    let mut cells = Vec::new();
    let mut unit = String::new();
    for (name, planned) in sweep.cells() {
        let first = planned[0];
        let mut runs = Vec::new();
        let mut started = 0;
        for run in &planned {
            let folder = sweep.run_folder(run);
            match status(&folder) {
                Status::Done => {
                    let test = TestFigures::read(&folder)?;
                    let curve = std::fs::read_to_string(folder.join(folder::CURVE))
                        .map(|t| folder::read_curve(&t))
                        .unwrap_or_default();
                    unit = test.unit.clone();
                    runs.push(RunReport {
                        name: run.name.clone(),
                        seed: run.seed,
                        test,
                        curve,
                        planned_updates: run.config.updates,
                        config: run.config.clone(),
                        reached: None,
                    });
                }
                Status::Started => started += 1,
                Status::Absent => {}
            }
        }
        let total = Stats::of(&runs.iter().map(|r| r.test.total.mean).collect::<Vec<_>>());
        let mut terms: Vec<(String, Stats)> = Vec::new();
        if let Some(first_run) = runs.first() {
            for (k, term) in first_run.test.terms.iter().enumerate() {
                let values: Vec<f64> = runs.iter().filter_map(|r| r.test.terms.get(k).map(|t| t.mean)).collect();
                terms.push((term.name.clone(), Stats::of(&values)));
            }
        }
        let action_dim = dimension(first)?;
        cells.push(CellReport {
            name,
            problem: first.problem(),
            method: first.method(),
            planned: planned.len(),
            started,
            runs,
            total,
            terms,
            action_dim,
        });
    }
    // Updates to come within 10% of the best dev cost of the problem, over every method.
    let problems: Vec<String> = cells.iter().map(|c| c.problem_name()).collect();
    for problem in &problems {
        let best = cells
            .iter()
            .filter(|c| c.problem_name() == *problem)
            .flat_map(|c| c.runs.iter().flat_map(|r| r.curve.iter().map(folder::dev_total)))
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        if !best.is_finite() {
            continue;
        }
        let target = best + WITHIN * best.abs();
        for cell in cells.iter_mut().filter(|c| c.problem_name() == *problem) {
            for run in &mut cell.runs {
                run.reached = run.curve.iter().find(|row| folder::dev_total(row) <= target).map(|row| row.update);
            }
        }
    }
    Ok(Report { sweep: sweep.clone(), unit, cells })
}

/// One table cell: `mean ± std (median) n/N`, the three with the mean's decimals, as the paper
/// prints them (`43.47 ± 2.19 (42.77)`).
fn entry(stats: &Stats, planned: usize) -> String {
    if stats.n == 0 {
        return format!("— 0/{planned}");
    }
    let digits = decimals(stats.mean);
    let fixed = |v: f64| if v.is_finite() { format!("{v:.digits$}") } else { "—".into() };
    format!("{} ± {} ({}) {}/{planned}", fixed(stats.mean), fixed(stats.std), fixed(stats.median), stats.n)
}

/// A figure with four significant digits.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let digits = decimals(v);
    format!("{v:.digits$}")
}

/// The decimals that give `v` four significant digits (none for large figures).
fn decimals(v: f64) -> usize {
    if v == 0.0 || !v.is_finite() { 0 } else { (3 - v.abs().log10().floor() as i32).max(0) as usize }
}

/// The stats of `term` in a cell.
fn term_stats<'c>(cell: &'c CellReport, term: &str) -> Option<&'c Stats> {
    if term == "total" { Some(&cell.total) } else { cell.terms.iter().find(|(n, _)| n == term).map(|(_, s)| s) }
}

/// The report as Markdown: for the total and each term, a table with a row per problem and a
/// column per method; then the updates each method needed to come within 10% of the best run.
pub fn markdown(report: &Report) -> String {
    let problems = report.problems();
    let methods = report.methods();
    let mut out = format!(
        "# Sweep {}\n\nModel `{}`; test cost {}, mean ± standard deviation (median) over the training seeds, \
         and seeds finished / planned.\n",
        report.sweep.folder.display(),
        report.sweep.model_text,
        if report.unit.is_empty() { "(no run finished yet)" } else { report.unit.as_str() }
    );
    for term in report.term_names() {
        out.push_str(&format!(
            "\n## {term}\n\n| problem | {} |\n|---|{}\n",
            methods.join(" | "),
            "---|".repeat(methods.len())
        ));
        for problem in &problems {
            let row: Vec<String> = methods
                .iter()
                .map(|m| match report.cell(problem, m) {
                    Some(cell) => term_stats(cell, &term).map_or("—".into(), |s| entry(s, cell.planned)),
                    None => "".into(),
                })
                .collect();
            out.push_str(&format!("| {problem} | {} |\n", row.join(" | ")));
        }
    }
    if let Some(search) = &report.sweep.search {
        let names: Vec<&str> = search.space.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&format!(
            "\n## Search trials\n\nEach trial's searched settings, its best dev cost and its test cost (a trial stopped \
             early was pruned on its dev cost).\n\n| trial | {} | best dev | test cost | stopped early |\n|---|{}---|---|---|\n",
            names.join(" | "),
            "---|".repeat(names.len())
        ));
        for cell in &report.cells {
            for run in &cell.runs {
                let config = serde_json::to_value(&run.config).unwrap_or_default();
                let values: Vec<String> = names.iter().map(|n| config.get(*n).map_or("—".into(), show)).collect();
                let best =
                    run.curve.iter().map(folder::dev_total).filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    cell.method_name().trim_start_matches("trial="),
                    values.join(" | "),
                    number(best),
                    number(run.test.total.mean),
                    if run.test.stopped_early { "yes" } else { "no" }
                ));
            }
        }
    }
    out.push_str(&format!(
        "\n## Updates to come within {:.0}% of the best run's dev cost\n\nPer problem the best dev cost of any run; \
         per cell the median over seeds of the first update within {:.0}% of it (runs that never came that close \
         count at their last update, shown as ≥).\n\n| problem | action dim | {} |\n|---|---|{}\n",
        100.0 * WITHIN,
        100.0 * WITHIN,
        methods.join(" | "),
        "---|".repeat(methods.len())
    ));
    for problem in &problems {
        let dim = report
            .cells
            .iter()
            .find(|c| c.problem_name() == *problem)
            .and_then(|c| c.action_dim)
            .map_or("—".to_string(), |d| d.to_string());
        let row: Vec<String> = methods
            .iter()
            .map(|m| match report.cell(problem, m) {
                Some(cell) if !cell.runs.is_empty() => {
                    let (values, never) = updates_to_reach(cell);
                    let median = Stats::of(&values).median;
                    let never = if never > 0 { format!(" ({never} never)") } else { String::new() };
                    format!("{}{median:.0}{never}", if never.is_empty() { "" } else { "≥" })
                }
                _ => "—".into(),
            })
            .collect();
        out.push_str(&format!("| {problem} | {dim} | {} |\n", row.join(" | ")));
    }
    out
}

/// Per finished run of a cell, the updates to come within 10% of the best (a run that never did
/// at its last update), and how many never did.
pub fn updates_to_reach(cell: &CellReport) -> (Vec<f64>, usize) {
    let mut never = 0;
    let values = cell
        .runs
        .iter()
        .map(|r| match r.reached {
            Some(u) => u as f64,
            None => {
                never += 1;
                r.curve.last().map_or(r.planned_updates, |row| row.update) as f64
            }
        })
        .collect();
    (values, never)
}

/// The report as CSV: one line per cell and term.
pub fn csv(report: &Report) -> String {
    let axes: Vec<String> = report.sweep.axes.iter().filter(|a| a.name != "seed").map(|a| a.name.clone()).collect();
    let mut out = String::new();
    for axis in &axes {
        out.push_str(&format!("{},", quote(axis)));
    }
    out.push_str("term,seeds_done,seeds_planned,mean,std,median\n");
    for cell in &report.cells {
        let values: Vec<String> = axes
            .iter()
            .map(|axis| {
                cell.problem.iter().chain(&cell.method).find(|(k, _)| k == axis).map_or(String::new(), |(_, v)| show(v))
            })
            .collect();
        for term in report.term_names() {
            let Some(stats) = term_stats(cell, &term) else { continue };
            for v in &values {
                out.push_str(&format!("{},", quote(v)));
            }
            let f = |v: f64| if v.is_finite() { format!("{v}") } else { String::new() };
            out.push_str(&format!(
                "{},{},{},{},{},{}\n",
                quote(&term),
                stats.n,
                cell.planned,
                f(stats.mean),
                f(stats.std),
                f(stats.median)
            ));
        }
    }
    out
}

fn quote(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

/// The report as JSON.
pub fn to_json(report: &Report) -> Value {
    let object = |pairs: &[(String, Value)]| Value::Object(pairs.iter().cloned().collect());
    let cells: Vec<Value> = report
        .cells
        .iter()
        .map(|cell| {
            let terms: serde_json::Map<String, Value> = cell.terms.iter().map(|(n, s)| (n.clone(), s.json())).collect();
            let runs: Vec<Value> = cell
                .runs
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "seed": r.seed,
                        "test_total": finite(r.test.total.mean),
                        "test_half_width": finite(r.test.total.half_width),
                        "updates": r.test.updates,
                        "best_update": r.test.best_update,
                        "updates_to_within_10pct": r.reached,
                    })
                })
                .collect();
            json!({
                "cell": cell.name,
                "problem": object(&cell.problem),
                "method": object(&cell.method),
                "seeds_planned": cell.planned,
                "seeds_done": cell.runs.len(),
                "seeds_started": cell.started,
                "action_dim": cell.action_dim,
                "total": cell.total.json(),
                "terms": terms,
                "runs": runs,
            })
        })
        .collect();
    json!({
        "sweep": report.sweep.folder.display().to_string(),
        "model": report.sweep.model_text,
        "unit": report.unit,
        "within": WITHIN,
        "cells": cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_the_sample_mean_std_and_median() {
        let s = Stats::of(&[1.0, 2.0, 4.0]);
        assert_eq!((s.n, s.mean, s.median), (3, 7.0 / 3.0, 2.0));
        assert!(
            (s.std
                - (((1.0f64 - 7.0 / 3.0).powi(2) + (2.0f64 - 7.0 / 3.0).powi(2) + (4.0f64 - 7.0 / 3.0).powi(2)) / 2.0)
                    .sqrt())
            .abs()
                < 1e-12
        );
        assert_eq!(Stats::of(&[3.0, 1.0]).median, 2.0);
        assert_eq!(Stats::of(&[5.0]).std, 0.0);
        assert!(Stats::of(&[]).mean.is_nan());
    }

    #[test]
    fn figures_keep_four_significant_digits() {
        assert_eq!(number(1.23456), "1.235");
        assert_eq!(number(123.456), "123.5");
        assert_eq!(number(12345.6), "12346");
        assert_eq!(number(0.0012344), "0.001234");
        assert_eq!(number(f64::NAN), "—");
        assert_eq!(entry(&Stats::of(&[]), 3), "— 0/3");
    }

    #[test]
    fn a_cell_prints_its_spread_with_the_decimals_of_its_mean() {
        assert_eq!(entry(&Stats::of(&[40.04, 40.06, 40.05]), 3), "40.05 ± 0.01 (40.05) 3/3");
        assert_eq!(entry(&Stats::of(&[16.0, 16.0004]), 3), "16.00 ± 0.00 (16.00) 2/3");
        assert_eq!(entry(&Stats::of(&[1234.4]), 1), "1234 ± 0 (1234) 1/1");
    }
}
