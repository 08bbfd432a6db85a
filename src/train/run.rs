//! A training run on disk: the loop that trains, evaluates on the dev set and keeps the best
//! parameters, and the run folder it writes.
//!
//! A run folder holds `model.hmdp` (the source trained on) with `model.hash`, `data.json` (the
//! text of every data file the model read, when it read any), `run.json` (the
//! exact command, the settings and seeds, crate versions), `best.ckpt`, `latest.ckpt` (while the
//! run goes on) and `final.ckpt`, `curve.csv` (update, wall time, train cost, dev cost per term)
//! and `curve.svg`. Every file is written to a temporary name and renamed into place, so a crash
//! or a kill leaves each file either as it was or complete; a checkpoint is never half written.
//! `latest.ckpt` and `final.ckpt` also hold the training state, so `--resume` goes on exactly as
//! the run would have.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use super::policy::Nets;
use super::rollout::{Context, Mode, rollout};
use super::scenarios::Scenarios;
use super::update::{Optimizers, Phases, Workspace, update};
use super::{Algo, Config, Evaluation, TrainError, evaluate, spec_with_squash};
use crate::backend::Backend;
use crate::ir::Module;
use crate::nn::optim::Adam;
use crate::sim::{self, Buffers, ScenarioSet};

const CHECKPOINT_MAGIC: &[u8; 8] = b"HMDPCKPT";

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Removes the file at `path`; a file that is not there is already removed.
fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A 64-bit FNV-1a hash, printed in hex: identifies a model's source in a run folder.
/// What `model.hash` holds: the hash of the model's source, and of the text of every data file
/// it read when there are any.
pub fn fingerprint(source: &str, data_files: &[(String, String)]) -> String {
    if data_files.is_empty() {
        return hash(source.as_bytes());
    }
    let mut bytes = source.as_bytes().to_vec();
    for (path, text) in data_files {
        for part in [path.as_bytes(), text.as_bytes()] {
            bytes.push(0);
            bytes.extend_from_slice(part);
        }
    }
    hash(&bytes)
}

/// The `data.json` of a run folder: every data file the model read, by the path it names.
pub fn data_json(data_files: &[(String, String)]) -> String {
    let files: Vec<serde_json::Value> =
        data_files.iter().map(|(path, text)| serde_json::json!({ "path": path, "text": text })).collect();
    format!("{:#}\n", serde_json::json!({ "files": files }))
}

/// The data files recorded in a `data.json`, or why it cannot be read.
pub fn read_data_json(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let files = value.get("files").and_then(|f| f.as_array()).ok_or("no `files` list")?;
    files
        .iter()
        .map(|f| match (f.get("path").and_then(|p| p.as_str()), f.get("text").and_then(|t| t.as_str())) {
            (Some(path), Some(text)) => Ok((path.to_string(), text.to_string())),
            _ => Err("a file without its `path` or `text`".to_string()),
        })
        .collect()
}

pub fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What a run needs besides the networks to go on exactly as if it had not stopped: Adam's
/// moments, the generator that shuffles the train set and the minibatches, the order of the
/// train set, and the running train cost of the progress line and the curve.
pub struct TrainingState<'a> {
    pub opt: &'a Optimizers,
    pub rng: &'a ChaCha8Rng,
    pub order: &'a [usize],
    pub running_train: f64,
}

/// The part of a [`TrainingState`] a checkpoint gives back besides Adam's moments.
#[derive(Debug, PartialEq)]
pub struct Continuation {
    pub rng: ChaCha8Rng,
    pub order: Vec<usize>,
    pub running_train: f64,
}

/// The four optimisers in the order a checkpoint stores them; [`adams_mut`] must keep it.
fn adams(opt: &Optimizers) -> [&Adam; 4] {
    [&opt.discrete, &opt.continuous, &opt.value, &opt.log_std]
}

/// [`adams`], to restore.
fn adams_mut(opt: &mut Optimizers) -> [&mut Adam; 4] {
    [&mut opt.discrete, &mut opt.continuous, &mut opt.value, &mut opt.log_std]
}

/// The networks and normalisation as bytes: a magic, a JSON header, then the arrays; with a
/// training state, its scalars in the header and Adam's moments after the networks.
pub fn encode_checkpoint(
    nets: &Nets,
    update: usize,
    header_extra: serde_json::Value,
    state: Option<TrainingState<'_>>,
) -> Vec<u8> {
    let mut header = serde_json::json!({
        "update": update,
        "discrete": nets.discrete.params().len(),
        "continuous": nets.continuous.params().len(),
        "value": nets.value.params().len(),
        "log_std": nets.log_std.len(),
        "features": nets.normalizer.mean.len(),
        "normalize": nets.normalizer.enabled,
        "count": nets.normalizer.count,
        "run": header_extra,
    });
    if let Some(state) = &state {
        let rng: String = state.rng.serialize_state().iter().map(|b| format!("{b:02x}")).collect();
        header["state"] = serde_json::json!({
            "rng": rng,
            "order": state.order,
            // NaN (no update yet) is written as null.
            "running_train": state.running_train,
            "adam_steps": adams(state.opt).map(|a| a.steps()),
        });
    }
    let header = header.to_string();
    let mut out = Vec::new();
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for array in [nets.discrete.params(), nets.continuous.params(), nets.value.params(), &nets.log_std] {
        for v in array.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for array in [&nets.normalizer.mean, &nets.normalizer.m2] {
        for v in array {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some(state) = &state {
        for adam in adams(state.opt) {
            let (m, v) = adam.moments();
            for v in m.iter().chain(v) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// A checkpoint's header: the update it was written at, and whether it holds a training state.
fn checkpoint_header(bytes: &[u8]) -> Option<(usize, bool)> {
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(16..16usize.checked_add(len)?)?).ok()?;
    (bytes.get(..8)? == CHECKPOINT_MAGIC)
        .then_some((header.get("update")?.as_u64()? as usize, header.get("state").is_some()))
}

/// Reads a checkpoint into networks of the right shapes and returns the update it was written
/// at. With `opt`, also reads the training state when the checkpoint holds one: Adam's moments
/// into `opt`, the rest returned.
pub fn decode_checkpoint(
    bytes: &[u8],
    nets: &mut Nets,
    opt: Option<&mut Optimizers>,
) -> Result<(usize, Option<Continuation>), String> {
    let bad = |what: &str| format!("not a valid checkpoint: {what}");
    if bytes.len() < 16 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(bad("it does not start with the checkpoint marker"));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[8..16]);
    let header_len = u64::from_le_bytes(len8) as usize;
    let header_end = 16usize.checked_add(header_len).filter(|e| *e <= bytes.len()).ok_or_else(|| bad("truncated"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[16..header_end]).map_err(|e| bad(&format!("header: {e}")))?;
    let size = |key: &str| header.get(key).and_then(|v| v.as_u64()).map(|v| v as usize);
    let expect = [
        ("discrete", nets.discrete.params().len()),
        ("continuous", nets.continuous.params().len()),
        ("value", nets.value.params().len()),
        ("log_std", nets.log_std.len()),
        ("features", nets.normalizer.mean.len()),
    ];
    for (key, n) in expect {
        if size(key) != Some(n) {
            return Err(bad(&format!("`{key}` has {:?} values, the model needs {n}", size(key))));
        }
    }
    let mut at = header_end;
    let mut take = |n: usize, width: usize| -> Result<&[u8], String> {
        let end = at.checked_add(n * width).filter(|e| *e <= bytes.len()).ok_or_else(|| bad("truncated"))?;
        let slice = &bytes[at..end];
        at = end;
        Ok(slice)
    };
    for array in [nets.discrete.params_mut(), nets.continuous.params_mut(), nets.value.params_mut(), &mut nets.log_std]
    {
        let raw = take(array.len(), 4)?;
        for (v, chunk) in array.iter_mut().zip(raw.as_chunks::<4>().0) {
            *v = f32::from_le_bytes(*chunk);
        }
    }
    for array in [&mut nets.normalizer.mean, &mut nets.normalizer.m2] {
        let raw = take(array.len(), 8)?;
        for (v, chunk) in array.iter_mut().zip(raw.as_chunks::<8>().0) {
            *v = f64::from_le_bytes(*chunk);
        }
    }
    nets.normalizer.enabled = header.get("normalize").and_then(|v| v.as_bool()).unwrap_or(true);
    nets.normalizer.count = header.get("count").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let update = size("update").unwrap_or(0);
    let (Some(opt), Some(state)) = (opt, header.get("state")) else {
        return Ok((update, None));
    };
    let rng: Vec<u8> = state
        .get("rng")
        .and_then(|v| v.as_str())
        .filter(|hex| hex.len() == 98 && hex.is_ascii())
        .and_then(|hex| (0..49).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect())
        .ok_or_else(|| bad("the training state's generator"))?;
    let order: Vec<usize> = state
        .get("order")
        .and_then(|v| v.as_array())
        .and_then(|list| list.iter().map(|i| i.as_u64().map(|i| i as usize)).collect())
        .ok_or_else(|| bad("the training state's order of the train set"))?;
    let steps: Vec<u32> = state
        .get("adam_steps")
        .and_then(|v| v.as_array())
        .and_then(|list| list.iter().map(|s| s.as_u64().and_then(|s| u32::try_from(s).ok())).collect())
        .filter(|steps: &Vec<u32>| steps.len() == 4)
        .ok_or_else(|| bad("the training state's Adam steps"))?;
    for (adam, steps) in adams_mut(opt).into_iter().zip(steps) {
        let n = adam.moments().0.len();
        let read = |raw: &[u8]| -> Vec<f32> { raw.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect() };
        let m = read(take(n, 4)?);
        let v = read(take(n, 4)?);
        adam.restore(&m, &v, steps).map_err(|e| bad(&e))?;
    }
    let rng = ChaCha8Rng::deserialize_state(rng.as_slice().try_into().map_err(|_| bad("the generator"))?);
    let running_train = state.get("running_train").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    Ok((update, Some(Continuation { rng, order, running_train })))
}

/// Versions of the crates that decide a run's numbers, read from the lock file built in.
pub fn crate_versions() -> serde_json::Value {
    let lock = include_str!("../../Cargo.lock");
    let wanted = ["rand", "rand_distr", "chacha20", "cranelift-codegen", "matrixmultiply", "rayon"];
    let mut map = serde_json::Map::new();
    map.insert("hmdp".into(), env!("CARGO_PKG_VERSION").into());
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name)
            && wanted.contains(&n.as_str())
        {
            map.insert(n.clone(), v.trim_matches('"').into());
        }
    }
    serde_json::Value::Object(map)
}

/// The settings of a run as JSON, enough to rebuild its networks and sets.
pub fn config_json(cfg: &Config, overrides: &[(String, f64)]) -> serde_json::Value {
    serde_json::json!({
        "algo": cfg.algo.name(),
        "updates": cfg.updates,
        "batch": cfg.batch,
        "lr": cfg.lr,
        "hidden": cfg.hidden,
        "gamma": cfg.gamma,
        "lambda": cfg.lambda,
        "clip": cfg.clip,
        "epochs": cfg.epochs,
        "minibatches": cfg.minibatches,
        "value_coef": cfg.value_coef,
        "entropy_start": cfg.entropy_start,
        "entropy_end": cfg.entropy_end,
        "pathwise_coef": cfg.pathwise_coef,
        "max_grad_norm": cfg.max_grad_norm,
        "target_kl": cfg.target_kl,
        "buffer_periods": cfg.buffer_periods,
        "adam_eps": cfg.adam_eps,
        "normalize": cfg.normalize,
        "scenarios": cfg.scenarios,
        "seed": cfg.seed,
        "instance_seed": cfg.instance_seed,
        "action_scale": cfg.action_scale,
        "action_shift": cfg.action_shift,
        "set": overrides.iter().map(|(n, v)| serde_json::json!([n, v])).collect::<Vec<_>>(),
    })
}

/// The settings that define the problem, its scenario sets and the policy's parametrisation,
/// where a resumed run's (`new`) differ from the run's (`old`), as `name was A, now B`.
/// The others (the learning rate, the schedule, the number of updates) may change on a resume.
fn problem_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    // `--set` in name order, whatever the order on the command line.
    let sets = |config: &serde_json::Value| {
        let mut list = config.get("set").and_then(|s| s.as_array()).cloned().unwrap_or_default();
        list.sort_by_key(|pair| pair.get(0).and_then(|n| n.as_str()).unwrap_or_default().to_string());
        serde_json::Value::Array(list)
    };
    let keys = ["set", "instance_seed", "seed", "scenarios", "hidden", "normalize", "action_scale", "action_shift"];
    keys.iter()
        .filter_map(|&key| {
            let (was, now) = if key == "set" {
                (sets(old), sets(new))
            } else {
                (old.get(key).cloned().unwrap_or_default(), new.get(key).cloned().unwrap_or_default())
            };
            // A run from before a setting was recorded is not refused for it.
            (!old.get(key).is_none_or(|v| v.is_null()) && was != now).then(|| format!("{key} was {was}, now {now}"))
        })
        .collect()
}

fn total(row: &CurveRow) -> f64 {
    let t: f64 = row.dev_terms.iter().sum();
    if t.is_nan() { f64::INFINITY } else { t }
}

/// One row of the learning curve.
#[derive(Clone, Debug)]
pub struct CurveRow {
    pub update: usize,
    pub seconds: f64,
    pub train: f64,
    pub dev_terms: Vec<f64>,
}

fn curve_csv(names: &[String], rows: &[CurveRow]) -> String {
    let mut out = String::from("update,seconds,train_cost");
    for n in names {
        out.push_str(&format!(",dev_{n}"));
    }
    out.push_str(",dev_total\n");
    for r in rows {
        out.push_str(&format!("{},{:.3},{:.6}", r.update, r.seconds, r.train));
        for t in &r.dev_terms {
            out.push_str(&format!(",{t:.6}"));
        }
        out.push_str(&format!(",{:.6}\n", r.dev_terms.iter().sum::<f64>()));
    }
    out
}

/// The learning curve as an SVG line plot: train cost and dev total against updates.
pub fn curve_svg(title: &str, rows: &[CurveRow]) -> String {
    let (w, h, pad) = (640.0, 400.0, 60.0);
    let points: Vec<(f64, f64, f64)> =
        rows.iter().map(|r| (r.update as f64, r.train, r.dev_terms.iter().sum::<f64>())).collect();
    let finite = points.iter().flat_map(|p| [p.1, p.2]).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
    // A first, poor policy can cost a thousand times more than a trained one: a logarithmic
    // axis keeps the end of the curve visible.
    let log = lo > 0.0 && hi / lo > 20.0;
    let scale = |v: f64| if log { v.ln() } else { v };
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let x = |u: f64| pad + (w - 2.0 * pad) * u / max_x;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (scale(v) - scale(lo)) / (scale(hi) - scale(lo));
    let line = |pick: &dyn Fn(&(f64, f64, f64)) -> f64| {
        points
            .iter()
            .filter(|p| pick(p).is_finite())
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"24\" font-size=\"14\">{}</text>\n\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{r}\" y=\"{lb}\" text-anchor=\"end\">updates ({max_x}){}</text>\n\
         <text x=\"4\" y=\"{t}\">{hi:.4}</text><text x=\"4\" y=\"{b}\">{lo:.4}</text>\n",
        title.replace('&', "&amp;").replace('<', "&lt;"),
        if log { "; cost on a log scale" } else { "" },
        b = h - pad,
        r = w - pad,
        lb = h - pad + 30.0,
        t = pad + 4.0,
    );
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#999\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        line(&|p| p.1)
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#c33\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(&|p| p.2)
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" fill=\"#999\">train (rollout)</text><text x=\"{}\" y=\"{}\" fill=\"#c33\">dev (greedy)</text>\n</svg>\n",
        w - 250.0,
        pad - 10.0,
        w - 140.0,
        pad - 10.0
    ));
    svg
}

/// What a finished (or stopped) run reports.
pub struct Outcome {
    pub updates: usize,
    pub best_update: usize,
    pub best_dev: f64,
    pub seconds: f64,
    pub seconds_in_updates: f64,
    /// How `seconds_in_updates` divides between the parts of an update.
    pub phases: Phases,
    /// The median time of one update, which a slow first update (buffers growing) or a
    /// preempted one does not move as it moves the mean; NaN without updates.
    pub median_update: f64,
    pub interrupted: bool,
    pub error: Option<TrainError>,
}

/// Everything `train` needs besides the settings.
pub struct RunInputs<'a> {
    pub module: &'a Module,
    pub backend: &'a dyn Backend,
    pub source: &'a str,
    pub overrides: &'a [(String, f64)],
    pub command: Vec<String>,
    pub folder: PathBuf,
    /// The data files the model read (`from "file"`), as (path as written, text), kept in the
    /// run folder's `data.json` so that `eval` compiles the model with exactly these values.
    pub data_files: &'a [(String, String)],
    pub stop: Arc<AtomicBool>,
    pub progress: bool,
    /// Continue the run in `folder` up to `Config::updates` updates in all, from its newest
    /// checkpoint with a training state (`latest.ckpt` or `final.ckpt`), exactly as if it had not
    /// stopped; from the newest checkpoint without one when there is none, with Adam's moments and
    /// the order of the train set afresh.
    pub resume: bool,
    /// The least number of seconds between two writes of `latest.ckpt`, at dev evaluations.
    pub save_every: f64,
}

/// Reads the rows of a `curve.csv` written by [`train`].
fn read_curve(text: &str) -> Vec<CurveRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<f64> = line.split(',').map(|c| c.parse::<f64>().unwrap_or(f64::NAN)).collect();
            let (&update, rest) = cols.split_first()?;
            let (&seconds, rest) = rest.split_first()?;
            let (&train, rest) = rest.split_first()?;
            let (_total, terms) = rest.split_last()?;
            Some(CurveRow { update: update as usize, seconds, train, dev_terms: terms.to_vec() })
        })
        .collect()
}

/// Trains, writing the run folder as it goes. Errors that stop training (a NaN cost, say) are
/// returned inside the outcome after the best checkpoint and the curve are safely written.
pub fn train(inputs: RunInputs<'_>, mut cfg: Config) -> Result<Outcome, TrainError> {
    let io = |e: std::io::Error| TrainError::RunFolder(format!("cannot write the run folder: {e}"));
    let module = inputs.module;
    let instance: Buffers = sim::instance(module, cfg.instance_seed).map_err(TrainError::Run)?;
    let spec0 = super::spec::Spec::of(module);
    if spec0.logits == 0 && spec0.outputs == 0 {
        return Err(TrainError::NoActions);
    }
    let started = Instant::now();
    let train_set =
        Scenarios::draw(module, &instance, cfg.seed, ScenarioSet::Train, cfg.scenarios).map_err(TrainError::Run)?;
    let dev_set =
        Scenarios::draw(module, &instance, cfg.seed, ScenarioSet::Dev, cfg.scenarios).map_err(TrainError::Run)?;
    let scale = *cfg.action_scale.get_or_insert_with(|| train_set.noise_scale());
    let spec = spec_with_squash(module, scale, cfg.action_shift);
    let ctx = Context { module, spec: &spec, backend: inputs.backend, instance: &instance };

    let folder = &inputs.folder;
    let mut resumed: Option<(Vec<u8>, Vec<CurveRow>)> = None;
    // The commands of the segments a resumed run continues, oldest first.
    let mut earlier_commands: Vec<serde_json::Value> = Vec::new();
    if inputs.resume {
        let recorded = std::fs::read_to_string(folder.join("model.hash")).unwrap_or_default();
        if recorded.trim() != fingerprint(inputs.source, inputs.data_files) {
            return Err(TrainError::RunFolder(format!(
                "--resume: the model or its data files differ from those {} was trained on (model.hash)",
                folder.display()
            )));
        }
        // The newest checkpoint that holds a training state, so the run goes on exactly as if it
        // had not stopped: `latest.ckpt` after a kill, `final.ckpt` after a run that ended or was
        // stopped with Ctrl-C. Failing that (a folder written before checkpoints held the
        // state, or a run killed before its first `latest.ckpt`), the newest checkpoint.
        let mut chosen: Option<(Vec<u8>, &str, (usize, bool))> = None;
        let mut unreadable = None;
        for name in ["final.ckpt", "latest.ckpt", "best.ckpt"] {
            match std::fs::read(folder.join(name)) {
                Ok(b) => {
                    let header = checkpoint_header(&b).unwrap_or((0, false));
                    if chosen.as_ref().is_none_or(|(_, _, (u, s))| (header.1, header.0) > (*s, *u)) {
                        chosen = Some((b, name, header));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => unreadable = Some(e),
            }
        }
        let (bytes, name, (from, exact)) = chosen.ok_or_else(|| {
            TrainError::RunFolder(match unreadable {
                Some(e) => format!("--resume: cannot read a checkpoint: {e}"),
                None => format!("--resume: {} holds no checkpoint to continue from", folder.display()),
            })
        })?;
        if from >= cfg.updates {
            return Err(TrainError::RunFolder(format!(
                "--resume: {} has done {from} updates, and --updates {} asks for no more; pass the number of \
                 updates the run should have in all",
                folder.display(),
                cfg.updates
            )));
        }
        let how = if exact {
            "exactly where it stopped"
        } else {
            "with Adam's moments and the order of the train set afresh (the checkpoint holds no training state)"
        };
        println!("resuming from {name} at update {from}, {how}");
        // Points past the checkpoint belong to updates that are about to be redone.
        let mut curve = read_curve(&std::fs::read_to_string(folder.join("curve.csv")).unwrap_or_default());
        curve.retain(|row| row.update <= from);
        let old = std::fs::read_to_string(folder.join("run.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        if let Some(old_config) = old.as_ref().and_then(|old| old.get("config")) {
            let changed = problem_changes(old_config, &config_json(&cfg, inputs.overrides));
            if !changed.is_empty() {
                return Err(TrainError::RunFolder(format!(
                    "--resume: {} trained another problem or policy: {}; resume with the settings it was \
                     trained with (run.json)",
                    folder.display(),
                    changed.join(", ")
                )));
            }
        }
        earlier_commands = old
            .map(|old| {
                let mut list = old.get("earlier_commands").and_then(|c| c.as_array()).cloned().unwrap_or_default();
                list.extend(old.get("command").cloned());
                list
            })
            .unwrap_or_default();
        resumed = Some((bytes, curve));
    }
    std::fs::create_dir_all(folder).map_err(io)?;
    if !inputs.resume {
        // A `--force` over an earlier run: its final checkpoint and curve would otherwise sit
        // beside this run's files until this run writes its own, and a kill in between would
        // leave a folder that mixes the two (and that `--resume` would continue from the old one).
        for stale in ["final.ckpt", "latest.ckpt", "curve.csv", "curve.svg"] {
            remove_if_present(&folder.join(stale)).map_err(io)?;
        }
    }
    write_atomic(&folder.join("model.hmdp"), inputs.source.as_bytes()).map_err(io)?;
    let model_hash = fingerprint(inputs.source, inputs.data_files);
    if !inputs.data_files.is_empty() {
        write_atomic(&folder.join("data.json"), data_json(inputs.data_files).as_bytes()).map_err(io)?;
    } else {
        // A `--force` over a run of a model that read data files.
        remove_if_present(&folder.join("data.json")).map_err(io)?;
    }
    write_atomic(&folder.join("model.hash"), format!("{model_hash}\n").as_bytes()).map_err(io)?;
    let mut run_json = serde_json::json!({
        "command": inputs.command,
        "model": module.name,
        "model_hash": model_hash,
        "backend": inputs.backend.name(),
        "config": config_json(&cfg, inputs.overrides),
        "versions": crate_versions(),
    });
    if !earlier_commands.is_empty() {
        run_json["earlier_commands"] = serde_json::Value::Array(earlier_commands);
    }
    write_atomic(&folder.join("run.json"), format!("{run_json:#}\n").as_bytes()).map_err(io)?;

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6e65_7473);
    let mut nets = Nets::new(&spec, &cfg.hidden, cfg.normalize, &mut rng);
    let mut opt = Optimizers::new(&nets, &cfg);
    let mut work = Workspace::default();
    let mut first_update = 0;
    let mut curve: Vec<CurveRow> = Vec::new();
    let mut order: Vec<usize> = (0..train_set.count).collect();
    let mut running_train = f64::NAN;
    match &resumed {
        Some((bytes, rows)) => {
            let resume_error = |e: String| TrainError::RunFolder(format!("--resume: {e} (were the settings changed?)"));
            let (from, continuation) = decode_checkpoint(bytes, &mut nets, Some(&mut opt)).map_err(resume_error)?;
            if let Some(c) = continuation {
                let mut sorted = c.order.clone();
                sorted.sort_unstable();
                if !sorted.iter().copied().eq(0..train_set.count) {
                    return Err(resume_error(
                        "the checkpoint's order of the train set is not one of this train set".into(),
                    ));
                }
                (rng, order, running_train) = (c.rng, c.order, c.running_train);
            }
            first_update = from;
            curve = rows.clone();
        }
        None => {
            let start = super::rollout::initial_features(&ctx, &train_set).map_err(TrainError::Run)?;
            nets.normalizer.fit(&start, spec.features, scale);
        }
    }
    let names: Vec<String> = spec.costs.iter().map(|&c| module.buffers[c].name.clone()).collect();
    let terms = names.len();
    let per_epoch = (train_set.count / cfg.batch.max(1)).max(1);
    let scale_report = sim::report_scale(module);
    let header = config_json(&cfg, inputs.overrides);

    let mut in_updates = 0.0;
    let mut phases = Phases::default();
    let mut update_seconds = Vec::with_capacity(cfg.updates.min(1 << 20));
    let mut error = None;
    let mode = if cfg.algo == Algo::Ppo { Mode::Gaussian } else { Mode::Sample };
    let mut last_print = Instant::now();
    let save = |nets: &Nets, name: &str, update: usize, state: Option<TrainingState<'_>>| {
        write_atomic(&folder.join(name), &encode_checkpoint(nets, update, header.clone(), state)).map_err(io)
    };
    let mut last_save = Instant::now();
    let evaluate_dev = |nets: &Nets| -> Result<Evaluation, TrainError> { evaluate(&ctx, nets, &dev_set) };

    // The policy before any update is the first point of the curve and the first best; a
    // resumed run's best is the best of its curve so far.
    let mut best = match curve.iter().min_by(|a, b| total(a).total_cmp(&total(b))) {
        Some(row) if resumed.is_some() => (total(row), row.update),
        _ => {
            let first = evaluate_dev(&nets)?;
            curve.push(CurveRow {
                update: first_update,
                seconds: started.elapsed().as_secs_f64(),
                train: f64::NAN,
                dev_terms: first.terms.clone(),
            });
            save(&nets, "best.ckpt", first_update, None)?;
            (first.total(), first_update)
        }
    };
    let mut done = first_update;
    let offset = curve.last().map_or(0.0, |r| r.seconds);

    for u in first_update..cfg.updates {
        if inputs.stop.load(Ordering::Relaxed) {
            break;
        }
        let position = u % per_epoch;
        if position == 0 {
            for i in (1..order.len()).rev() {
                let j = (crate::sim::eval::unit(&mut rng) * (i + 1) as f64) as usize;
                order.swap(i, j.min(i));
            }
        }
        let indices = &order[position * cfg.batch..((position + 1) * cfg.batch).min(order.len())];
        let entropy =
            cfg.entropy_start + (cfg.entropy_end - cfg.entropy_start) * (u as f64 / (cfg.updates.max(2) - 1) as f64);
        let t0 = Instant::now();
        let step = (|| -> Result<f64, TrainError> {
            let mut policy_rng = sim::policy_stream(cfg.seed, ScenarioSet::Train, u as u64);
            let clock = Instant::now();
            let mut traj = rollout(&ctx, &nets, &train_set, indices, mode, cfg.algo != Algo::Ppo, &mut policy_rng)?;
            phases.rollout += clock.elapsed().as_secs_f64();
            let stats = update(&ctx, &mut nets, &mut opt, &mut work, &mut traj, &cfg, entropy, &mut rng)?;
            phases.add(&stats.phases);
            let totals = traj.totals(terms, module.warmup as usize);
            Ok(totals.iter().sum::<f64>() / traj.rows as f64 / scale_report)
        })();
        let seconds = t0.elapsed().as_secs_f64();
        in_updates += seconds;
        update_seconds.push(seconds);
        match step {
            Ok(cost) => {
                running_train = if running_train.is_nan() { cost } else { 0.9 * running_train + 0.1 * cost };
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        done = u + 1;
        let last = cfg.updates;
        if done % per_epoch == 0 || done == last {
            match evaluate_dev(&nets) {
                Ok(dev) => {
                    curve.push(CurveRow {
                        update: done,
                        seconds: offset + started.elapsed().as_secs_f64(),
                        train: running_train,
                        dev_terms: dev.terms.clone(),
                    });
                    if dev.total() < best.0 {
                        best = (dev.total(), done);
                        save(&nets, "best.ckpt", done, None)?;
                    }
                    write_atomic(&folder.join("curve.csv"), curve_csv(&names, &curve).as_bytes()).map_err(io)?;
                    // Where a killed run resumes from. It is written after the curve, so a kill
                    // between the two leaves a curve that `--resume` cuts back to it.
                    if done < last && last_save.elapsed().as_secs_f64() >= inputs.save_every {
                        let state = TrainingState { opt: &opt, rng: &rng, order: &order, running_train };
                        save(&nets, "latest.ckpt", done, Some(state))?;
                        last_save = Instant::now();
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if inputs.progress && (last_print.elapsed().as_secs_f64() > 0.5 || done == last) {
            last_print = Instant::now();
            let rate = (done - first_update) as f64 / in_updates.max(1e-9);
            let dev = curve.last().map_or(f64::NAN, |r| r.dev_terms.iter().sum::<f64>());
            let width = 24;
            let filled = width * done / cfg.updates.max(1);
            let bar: String = (0..width).map(|i| if i < filled { '#' } else { '-' }).collect();
            let line =
                format!("[{bar}] {done}/{last} updates, {rate:.1} updates/s, train {running_train:.4}, dev {dev:.4}");
            if std::io::stderr().is_terminal() {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    if inputs.progress && std::io::stderr().is_terminal() {
        eprintln!();
    }
    let state = TrainingState { opt: &opt, rng: &rng, order: &order, running_train };
    save(&nets, "final.ckpt", done, Some(state))?;
    // The final checkpoint holds all that `latest.ckpt` held, and is newer.
    remove_if_present(&folder.join("latest.ckpt")).map_err(io)?;
    write_atomic(&folder.join("curve.csv"), curve_csv(&names, &curve).as_bytes()).map_err(io)?;
    let title = format!("{} — {} (dev cost, {})", module.name, cfg.algo.name(), sim::report_unit(module));
    write_atomic(&folder.join("curve.svg"), curve_svg(&title, &curve).as_bytes()).map_err(io)?;
    let (best_dev, best_update) = best;
    Ok(Outcome {
        updates: done - first_update,
        best_update,
        best_dev,
        seconds: started.elapsed().as_secs_f64(),
        seconds_in_updates: in_updates,
        median_update: median(&mut update_seconds),
        phases,
        interrupted: inputs.stop.load(Ordering::Relaxed),
        error,
    })
}

/// The median of `values` (sorted in place); NaN if there are none.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The settings a run folder was trained with.
pub fn read_config(run: &serde_json::Value, module: &Module) -> Result<(Config, Vec<(String, f64)>), String> {
    let c = run.get("config").ok_or("run.json has no `config`")?;
    let algo = match c.get("algo").and_then(|v| v.as_str()) {
        Some("hpo") => Algo::Hpo,
        Some("hpo-nocross") => Algo::HpoNoCross,
        Some("ppo") => Algo::Ppo,
        other => return Err(format!("unknown algorithm {other:?} in run.json")),
    };
    let mut cfg = Config::defaults(algo, module);
    let num = |k: &str| c.get(k).and_then(|v| v.as_f64());
    let int = |k: &str| c.get(k).and_then(|v| v.as_u64());
    cfg.hidden = c
        .get("hidden")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect())
        .ok_or("run.json has no `hidden`")?;
    cfg.normalize = c.get("normalize").and_then(|v| v.as_bool()).unwrap_or(true);
    cfg.scenarios = int("scenarios").ok_or("run.json has no `scenarios`")? as usize;
    cfg.seed = int("seed").ok_or("run.json has no `seed`")?;
    cfg.instance_seed = int("instance_seed").ok_or("run.json has no `instance_seed`")?;
    cfg.action_scale = num("action_scale");
    // Runs from before the shift existed squashed without one.
    cfg.action_shift = num("action_shift").unwrap_or(0.0);
    let overrides = c
        .get("set")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter().filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_f64()?))).collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok((cfg, overrides))
}

/// Networks shaped for a module and settings, parameters from a checkpoint.
pub fn load_nets(module: &Module, cfg: &Config, bytes: &[u8]) -> Result<(Nets, super::spec::Spec), String> {
    let spec = spec_with_squash(module, cfg.action_scale.unwrap_or(1.0), cfg.action_shift);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut nets = Nets::new(&spec, &cfg.hidden, cfg.normalize, &mut rng);
    decode_checkpoint(bytes, &mut nets, None)?;
    Ok((nets, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(update: usize, dev: f64) -> CurveRow {
        CurveRow { update, seconds: update as f64, train: dev * 1.1, dev_terms: vec![dev] }
    }

    #[test]
    fn curves_spanning_orders_of_magnitude_are_drawn_on_a_log_scale() {
        let wide = curve_svg("lqr", &[row(0, 13000.0), row(8, 500.0), row(16, 37.0)]);
        assert!(wide.contains("log scale"), "{wide}");
        let narrow = curve_svg("lqr", &[row(0, 40.0), row(8, 38.0), row(16, 37.0)]);
        assert!(!narrow.contains("log scale"));
        // The last point sits at the bottom either way, and every point is inside the plot.
        for svg in [&wide, &narrow] {
            assert!(svg.contains("340.0"), "{svg}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        use rand::SeedableRng;
        let module = crate::ir::Module {
            name: "m".into(),
            sets: vec![],
            buffers: vec![],
            exprs: Default::default(),
            instance: Default::default(),
            init: Default::default(),
            noise: Default::default(),
            bounds: Default::default(),
            regimes: Default::default(),
            step: Default::default(),
            vjp: Default::default(),
            observe: vec![],
            horizon: 1,
            warmup: 0,
            discount: 1.0,
            report: crate::ir::Report { per_period: false, per_size: vec![] },
        };
        let mut spec = super::super::spec::Spec::of(&module);
        spec.features = 1;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut nets = Nets::new(&spec, &[4], true, &mut rng);
        nets.normalizer.fit(&[1.0, 2.0, 4.0], 1, 1.0);
        let bytes = encode_checkpoint(&nets, 7, serde_json::json!({}), None);
        let mut back = Nets::new(&spec, &[4], true, &mut ChaCha8Rng::seed_from_u64(2));
        assert_eq!(decode_checkpoint(&bytes, &mut back, None), Ok((7, None)));
        assert_eq!(back.continuous.params(), nets.continuous.params());
        assert_eq!(back.normalizer.mean, nets.normalizer.mean);
        assert!(decode_checkpoint(&bytes[..bytes.len() - 3], &mut back, None).is_err());
        assert!(decode_checkpoint(b"not a checkpoint", &mut back, None).is_err());

        // With a training state: Adam's moments and steps, the generator part-way through a
        // block, the order and the running cost all come back.
        let cfg = Config::defaults(Algo::Hpo, &module);
        let mut opt = Optimizers::new(&nets, &cfg);
        let grad: Vec<f32> = (0..nets.value.params().len()).map(|i| i as f32 - 3.0).collect();
        let mut params = nets.value.params().to_vec();
        opt.value.step(&mut params, &grad);
        opt.value.step(&mut params, &grad);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let _ = crate::sim::eval::unit(&mut rng);
        let state = TrainingState { opt: &opt, rng: &rng, order: &[2, 0, 1], running_train: 4.5 };
        let bytes = encode_checkpoint(&nets, 9, serde_json::json!({}), Some(state));
        let mut opt_back = Optimizers::new(&nets, &cfg);
        let (update, continuation) = decode_checkpoint(&bytes, &mut back, Some(&mut opt_back)).unwrap();
        assert_eq!(
            (update, continuation),
            (
                9,
                Some(Continuation {
                    rng: ChaCha8Rng::deserialize_state(&rng.serialize_state()),
                    order: vec![2, 0, 1],
                    running_train: 4.5
                })
            )
        );
        let mut rng_back = decode_checkpoint(&bytes, &mut back, Some(&mut opt_back)).unwrap().1.unwrap().rng;
        assert_eq!(crate::sim::eval::unit(&mut rng_back), crate::sim::eval::unit(&mut rng));
        assert_eq!(opt_back.value.moments(), opt.value.moments());
        assert_eq!(opt_back.value.steps(), 2);
        // Read without an optimiser (as `eval` reads it), the state is skipped.
        assert_eq!(decode_checkpoint(&bytes, &mut back, None), Ok((9, None)));
        assert!(decode_checkpoint(&bytes[..bytes.len() - 3], &mut back, Some(&mut opt_back)).is_err());
    }
}
