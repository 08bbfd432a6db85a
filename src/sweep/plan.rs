//! A sweep file and the runs it asks for. The file (TOML) names a model, the training settings
//! every run shares, the `--set` values every run shares, and the axes; the plan is one run per
//! combination of the axes' values, each a [`Config`]. A *cell* is a combination of every axis
//! but `seed`: the runs of a cell differ only in their training seed, and `hmdpc report`
//! summarises each cell over its seeds.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::train::Config;

/// The name of the sweep file's copy inside a sweep folder.
pub const SWEEP_FILE: &str = "sweep.toml";
/// The folder of the run folders inside a sweep folder.
pub const RUNS: &str = "runs";

/// A sweep file, read and expanded.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The sweep file's text.
    pub text: String,
    /// The model file, resolved against the sweep file's folder.
    pub model: PathBuf,
    /// The model file as the sweep file names it.
    pub model_text: String,
    /// The sweep folder.
    pub folder: PathBuf,
    /// The axes, in the file's order; `seed` is among them when the file sweeps it.
    pub axes: Vec<Axis>,
    pub runs: Vec<Planned>,
    /// The search over training settings, when the file has a `[search]` table.
    pub search: Option<Search>,
    /// The settings every run shares (`[settings]` with `[set]`), as `run.json` names them.
    settings: Value,
}

/// A search over training settings (`[search]`): how many trials, and where each setting is
/// sampled. The trials are runs `trial=K` of the sweep folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    pub trials: usize,
    pub space: Vec<(String, Space)>,
}

/// Where a searched setting is sampled.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// A number in `[low, high]`, on a log scale with `log`; whole numbers when both bounds are.
    Range { low: f64, high: f64, log: bool, integer: bool },
    /// One of the values.
    Choice(Vec<Value>),
}

/// One axis: a training setting (named as in `run.json`'s `config`) or a size/parameter
/// (`set.NAME`), with its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<Value>,
}

impl Axis {
    /// A `--set` axis: the name it sets.
    pub fn set_name(&self) -> Option<&str> {
        self.name.strip_prefix("set.")
    }
}

/// One run of the plan.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Its folder's name under `runs/`: `axis=value,...,seed=k`.
    pub name: String,
    /// The cell: every axis but `seed`, with this run's value, in the axes' order.
    pub cell: Vec<(String, Value)>,
    pub seed: u64,
    pub config: Config,
}

impl Planned {
    /// The cell's name: `axis=value,...` (`all` when only the seed is swept).
    pub fn cell_name(&self) -> String {
        cell_name(&self.cell)
    }

    /// The problem: the `set.` axes of the cell, which fix the instance a run solves.
    pub fn problem(&self) -> Vec<(String, Value)> {
        self.cell.iter().filter(|(k, _)| k.starts_with("set.")).cloned().collect()
    }

    /// The method: the cell's other axes (algorithm, settings).
    pub fn method(&self) -> Vec<(String, Value)> {
        self.cell.iter().filter(|(k, _)| !k.starts_with("set.")).cloned().collect()
    }
}

/// `axis=value,...`, or `all` for none.
pub fn cell_name(cell: &[(String, Value)]) -> String {
    if cell.is_empty() {
        return "all".into();
    }
    cell.iter().map(|(k, v)| format!("{}={}", k.trim_start_matches("set."), show(v))).collect::<Vec<_>>().join(",")
}

/// A value as it appears in a folder name and a table: numbers and strings plainly, a list as
/// its items joined by `x` (`hidden=64x64`).
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join("x"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "none".into(),
        Value::Object(_) => value.to_string(),
    }
}

/// Reads a sweep file. `folder` replaces the file's own `folder` (default: the file's name
/// without `.toml`, beside it).
pub fn read(path: &Path, folder: Option<&Path>) -> Result<Sweep, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), crate::pipeline::describe_io(&e)))?;
    parse(&text, path, folder).map_err(|e| format!("{}: {e}", path.display()))
}

/// Expands a sweep file's text; `path` is where it was read (relative paths in it are relative
/// to its folder).
pub fn parse(text: &str, path: &Path, folder: Option<&Path>) -> Result<Sweep, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string().trim_end().to_string())?;
    let base = path.parent().unwrap_or(Path::new(""));
    for key in table.keys() {
        if !["model", "folder", "settings", "set", "axes", "search"].contains(&key.as_str()) {
            return Err(format!(
                "unknown key `{key}`: a sweep file has `model`, `folder`, `[settings]`, `[set]`, `[axes]` and `[search]`"
            ));
        }
    }
    let (model, model_text) = match table.get("model") {
        Some(toml::Value::String(m)) => (base.join(m), m.clone()),
        Some(_) => return Err("`model` must be a string: the model file, relative to the sweep file".into()),
        None => return Err("no `model`: name the model file, e.g. `model = \"../models/inventory.hmdp\"`".into()),
    };
    let folder = match (folder, table.get("folder")) {
        (Some(f), _) => f.to_path_buf(),
        (None, Some(toml::Value::String(f))) => base.join(f),
        (None, Some(_)) => return Err("`folder` must be a string: the sweep folder, relative to the sweep file".into()),
        (None, None) => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
            base.join(stem)
        }
    };
    let settings = match table.get("settings") {
        Some(toml::Value::Table(t)) => to_json(&toml::Value::Table(t.clone())),
        Some(_) => return Err("`settings` must be a table of training settings".into()),
        None => Value::Object(Map::new()),
    };
    let mut fixed_set: Vec<(String, f64)> = Vec::new();
    match table.get("set") {
        Some(toml::Value::Table(t)) => {
            for (name, value) in t {
                fixed_set.push((name.clone(), number(value).ok_or_else(|| format!("`set.{name}` must be a number"))?));
            }
        }
        Some(_) => return Err("`set` must be a table of sizes and parameters, e.g. `items = 10`".into()),
        None => {}
    }
    let mut axes = Vec::new();
    match table.get("axes") {
        Some(toml::Value::Table(t)) => {
            for (name, value) in t {
                if name == "set" {
                    let toml::Value::Table(sets) = value else {
                        return Err("`axes.set` must be a table: `set.NAME = [values]`".into());
                    };
                    for (set_name, values) in sets {
                        let values = axis_values(&format!("set.{set_name}"), values)?;
                        if let Some(bad) = values.iter().find(|v| !v.is_number()) {
                            return Err(format!("axis `set.{set_name}`: {bad} is not a number"));
                        }
                        axes.push(Axis { name: format!("set.{set_name}"), values });
                    }
                } else {
                    axes.push(Axis { name: name.clone(), values: axis_values(name, value)? });
                }
            }
        }
        Some(_) => return Err("`axes` must be a table: `NAME = [values]`".into()),
        None => {}
    }
    for axis in &axes {
        if axis.name == "set" || axis.name == "out" {
            return Err(format!("`{}` cannot be an axis", axis.name));
        }
        if let Some(name) = axis.set_name()
            && fixed_set.iter().any(|(n, _)| n == name)
        {
            return Err(format!("`{name}` is both in `[set]` and an axis: keep one"));
        }
        if !axis.name.starts_with("set.") && settings.get(&axis.name).is_some() {
            return Err(format!("`{}` is both in `[settings]` and an axis: keep one", axis.name));
        }
    }
    if settings.get("set").is_some() {
        return Err("put `--set` values in `[set]` (fixed) or `[axes.set]` (swept), not in `[settings]`".into());
    }
    let runs = expand(&settings, &fixed_set, &axes)?;
    let search = match table.get("search") {
        None => None,
        Some(toml::Value::Table(t)) => Some(search(t, &settings, &axes)?),
        Some(_) => return Err("`search` must be a table: `trials = N` and `[search.space]`".into()),
    };
    let mut settings = settings;
    if let Some(object) = settings.as_object_mut() {
        object.insert("set".into(), serde_json::to_value(&fixed_set).map_err(|e| e.to_string())?);
    }
    Ok(Sweep { text: text.to_string(), model, model_text, folder, axes, runs, search, settings })
}

/// Reads `[search]`: `trials` and `[search.space]`, each setting a range `{ low, high, log }` or
/// an array of values to choose from.
fn search(table: &toml::Table, settings: &Value, axes: &[Axis]) -> Result<Search, String> {
    if !axes.is_empty() {
        return Err("a sweep file with `[search]` has no `[axes]`: the search tunes the settings of one problem".into());
    }
    for key in table.keys() {
        if key != "trials" && key != "space" {
            return Err(format!("unknown key `search.{key}`: `[search]` has `trials` and `[search.space]`"));
        }
    }
    let trials = match table.get("trials") {
        Some(toml::Value::Integer(n)) if *n >= 1 => *n as usize,
        _ => return Err("`search.trials` must be a whole number of at least 1".into()),
    };
    let Some(toml::Value::Table(space_table)) = table.get("space") else {
        return Err("`[search.space]` is missing: name each setting to search, e.g. `lr = { low = 1e-4, high = 1e-2, log = true }`".into());
    };
    let mut space = Vec::new();
    for (name, value) in space_table {
        if settings.get(name).is_some() {
            return Err(format!("`{name}` is both in `[settings]` and searched: keep one"));
        }
        let (samples, entry) = match value {
            toml::Value::Array(_) => {
                let values = axis_values(&format!("search.space.{name}"), value)?;
                (values.clone(), Space::Choice(values))
            }
            toml::Value::Table(range) => {
                let bound = |key: &str| range.get(key).and_then(number);
                let (Some(low), Some(high)) = (bound("low"), bound("high")) else {
                    return Err(format!("`search.space.{name}` must have numbers `low` and `high`"));
                };
                let log = matches!(range.get("log"), Some(toml::Value::Boolean(true)));
                if low.partial_cmp(&high).is_none_or(|o| o.is_gt()) || (log && low <= 0.0) {
                    return Err(format!(
                        "`search.space.{name}`: need low ≤ high{}",
                        if log { " and low > 0 on a log scale" } else { "" }
                    ));
                }
                let integer = matches!(range.get("low"), Some(toml::Value::Integer(_)))
                    && matches!(range.get("high"), Some(toml::Value::Integer(_)));
                let sample = |v: f64| if integer { Value::from(v as i64) } else { Value::from(v) };
                (vec![sample(low), sample(high)], Space::Range { low, high, log, integer })
            }
            _ => return Err(format!("`search.space.{name}` must be a range `{{ low, high }}` or an array of values")),
        };
        for sample in samples {
            let mut one = Map::new();
            one.insert(name.clone(), sample);
            serde_json::from_value::<Config>(Value::Object(one))
                .map_err(|e| format!("search setting `{name}`: {e}"))?;
        }
        space.push((name.clone(), entry));
    }
    Ok(Search { trials, space })
}

/// The values of an axis: a non-empty array without repeats.
fn axis_values(name: &str, value: &toml::Value) -> Result<Vec<Value>, String> {
    let toml::Value::Array(items) = value else {
        return Err(format!("axis `{name}` must be an array of values, e.g. `{name} = [1, 2]`"));
    };
    if items.is_empty() {
        return Err(format!("axis `{name}` has no values"));
    }
    let values: Vec<Value> = items.iter().map(to_json).collect();
    for (k, v) in values.iter().enumerate() {
        if values[..k].contains(v) {
            return Err(format!("axis `{name}` repeats the value {v}"));
        }
    }
    Ok(values)
}

fn number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// Every combination of the axes' values (the first axis varies slowest), each as a run.
fn expand(settings: &Value, fixed_set: &[(String, f64)], axes: &[Axis]) -> Result<Vec<Planned>, String> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                axis.values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push((axis.name.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    let mut runs = Vec::with_capacity(combos.len());
    for combo in combos {
        let mut config = settings.as_object().cloned().unwrap_or_default();
        let mut set: Vec<(String, f64)> = fixed_set.to_vec();
        for (name, value) in &combo {
            match name.strip_prefix("set.") {
                Some(size) => set.push((size.to_string(), value.as_f64().unwrap_or(f64::NAN))),
                None => {
                    config.insert(name.clone(), value.clone());
                }
            }
        }
        // Each setting alone first, so that a mistake is reported with its name.
        for (key, value) in &config {
            let mut one = Map::new();
            one.insert(key.clone(), value.clone());
            serde_json::from_value::<Config>(Value::Object(one)).map_err(|e| {
                format!(
                    "setting `{key}`: {e} (settings are named as in a run folder's run.json `config`, e.g. \
                     `updates`, `lr`, `hidden`)"
                )
            })?;
        }
        config.insert("set".into(), serde_json::to_value(&set).map_err(|e| e.to_string())?);
        let config: Config = serde_json::from_value(Value::Object(config)).map_err(|e| e.to_string())?;
        let seed = config.seed;
        let cell: Vec<(String, Value)> = combo.iter().filter(|(k, _)| k != "seed").cloned().collect();
        let name = if cell.is_empty() { format!("seed={seed}") } else { format!("{},seed={seed}", cell_name(&cell)) };
        if name.contains('/') || name.len() > 200 {
            return Err(format!("the run name `{name}` is not a usable folder name: shorten the axes' values"));
        }
        runs.push(Planned { name, cell, seed, config });
    }
    Ok(runs)
}

impl Sweep {
    /// Whether the sweep file gives training setting `key` (in `[settings]`, as an axis, or as
    /// a searched setting): a model's `train { … }` block fills in only the others.
    pub fn gives(&self, key: &str) -> bool {
        self.settings.get(key).is_some()
            || self.axes.iter().any(|a| a.name == key)
            || self.search.as_ref().is_some_and(|s| s.space.iter().any(|(name, _)| name == key))
    }

    /// Trial `number` of the search with the sampled `settings` (a JSON object of `run.json`'s
    /// names): the shared settings changed by them.
    pub fn trial(&self, number: usize, settings: &Value) -> Result<Planned, String> {
        let Some(search) = &self.search else { return Err("the sweep file has no `[search]`".into()) };
        let mut config = self.settings.as_object().cloned().unwrap_or_default();
        for (key, value) in settings.as_object().ok_or("the trial's settings must be an object")? {
            if !search.space.iter().any(|(name, _)| name == key) {
                return Err(format!("`{key}` is not a searched setting"));
            }
            config.insert(key.clone(), value.clone());
        }
        let config: Config = serde_json::from_value(Value::Object(config)).map_err(|e| e.to_string())?;
        let cell = vec![("trial".to_string(), Value::from(number))];
        Ok(Planned { name: format!("trial={number}"), cell, seed: config.seed, config })
    }

    /// The trials of the search that have a run folder, as planned runs (their settings read
    /// back from `run.json`), in trial order.
    pub fn trials_on_disk(&self) -> Vec<Planned> {
        let Ok(entries) = std::fs::read_dir(self.folder.join(RUNS)) else { return Vec::new() };
        let mut trials: Vec<Planned> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let number: usize = name.strip_prefix("trial=")?.parse().ok()?;
                let record = crate::train::folder::read_record(&entry.path()).ok()?;
                let cell = vec![("trial".to_string(), Value::from(number))];
                Some(Planned { name, cell, seed: record.config.seed, config: record.config })
            })
            .collect();
        trials.sort_by_key(|t| t.cell[0].1.as_u64());
        trials
    }

    /// The folder of a planned run.
    pub fn run_folder(&self, run: &Planned) -> PathBuf {
        self.folder.join(RUNS).join(&run.name)
    }

    /// A planned run by its name.
    pub fn run(&self, name: &str) -> Option<&Planned> {
        self.runs.iter().find(|r| r.name == name)
    }

    /// The cells in plan order, each with its runs.
    pub fn cells(&self) -> Vec<(String, Vec<&Planned>)> {
        let mut cells: Vec<(String, Vec<&Planned>)> = Vec::new();
        for run in &self.runs {
            let name = run.cell_name();
            match cells.iter_mut().find(|(n, _)| *n == name) {
                Some((_, runs)) => runs.push(run),
                None => cells.push((name, vec![run])),
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
model = "../models/inventory.hmdp"
[settings]
updates = 20
batch = 8
[set]
lead = 2
[axes]
set.items = [1, 10]
algo = ["hpo", "ppo"]
seed = [0, 1, 2]
"#;

    #[test]
    fn a_grid_expands_into_one_run_per_combination_and_seed() {
        let sweep = parse(FILE, Path::new("sweeps/jrp.toml"), None).unwrap();
        assert_eq!(sweep.runs.len(), 12);
        assert_eq!(sweep.model, Path::new("sweeps/../models/inventory.hmdp"));
        assert_eq!(sweep.folder, Path::new("sweeps/jrp"));
        let first = &sweep.runs[0];
        assert_eq!(first.name, "items=1,algo=hpo,seed=0");
        assert_eq!(first.config.updates, 20);
        assert_eq!(first.config.set, vec![("lead".to_string(), 2.0), ("items".to_string(), 1.0)]);
        let last = sweep.runs.last().unwrap();
        assert_eq!(last.name, "items=10,algo=ppo,seed=2");
        assert_eq!(last.config.algo, crate::train::Algo::Ppo);
        assert_eq!(last.seed, 2);
        assert_eq!(sweep.cells().len(), 4);
        assert!(sweep.cells().iter().all(|(_, runs)| runs.len() == 3));
        assert_eq!(last.problem(), vec![("set.items".to_string(), Value::from(10))]);
        assert_eq!(last.method(), vec![("algo".to_string(), Value::from("ppo"))]);
    }

    #[test]
    fn mistakes_in_a_sweep_file_are_named() {
        let cases = [
            ("", "no `model`"),
            ("model = \"m.hmdp\"\nfoo = 1", "unknown key `foo`"),
            ("model = \"m.hmdp\"\n[axes]\nlr = []", "axis `lr` has no values"),
            ("model = \"m.hmdp\"\n[axes]\nlr = 0.1", "must be an array"),
            ("model = \"m.hmdp\"\n[axes]\nseed = [1, 1]", "repeats the value 1"),
            ("model = \"m.hmdp\"\n[axes]\nlearning_rate = [0.1]", "unknown field `learning_rate`"),
            ("model = \"m.hmdp\"\n[axes]\nset.items = [\"ten\"]", "is not a number"),
            ("model = \"m.hmdp\"\n[set]\nitems = 1\n[axes]\nset.items = [2]", "both in `[set]` and an axis"),
            ("model = \"m.hmdp\"\n[settings]\nlr = 0.1\n[axes]\nlr = [0.2]", "both in `[settings]` and an axis"),
            ("model = \"m.hmdp\"\n[settings]\nupdates = -3", "setting `updates`: invalid value"),
            ("model = [", "unclosed array"),
        ];
        for (text, expected) in cases {
            let error = parse(text, Path::new("s.toml"), None).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_sweep_of_seeds_only_has_one_cell() {
        let sweep = parse("model = \"m.hmdp\"\n[axes]\nseed = [3, 4]", Path::new("s.toml"), None).unwrap();
        assert_eq!(sweep.runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["seed=3", "seed=4"]);
        assert_eq!(sweep.cells()[0].0, "all");
        let single = parse("model = \"m.hmdp\"", Path::new("s.toml"), None).unwrap();
        assert_eq!(single.runs.len(), 1);
    }
}
