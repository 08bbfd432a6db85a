//! A run folder on disk: its layout, atomic writes, checkpoints, the learning curve, and opening
//! a run again for `eval` and `--resume`. The training loop ([`super::run`]) and every command
//! that reads a run go through here; nothing else knows a file name of a run folder.
//!
//! A run folder holds `model.hmdp` (the source trained on) with `model.hash`, `data.json` (the
//! text of every data file the model read, when it read any), `run.json` (the exact command,
//! the settings — a [`Config`] — and seeds, crate versions), `best.ckpt`, `latest.ckpt` (while the
//! run goes on) and `final.ckpt`, `curve.csv` (update, wall time, train cost, dev cost per term)
//! and `curve.svg`. Every file is written to a temporary name and renamed into place, so a crash
//! or a kill leaves each file either as it was or complete; a checkpoint is never half written.
//! `latest.ckpt` and `final.ckpt` also hold the training state, so `--resume` goes on exactly as
//! the run would have.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::policy::Nets;
use super::spec::Spec;
use super::update::Optimizers;
use super::{Config, spec_with_scales, spec_with_squash};
use crate::ir::Module;
use crate::nn::optim::Adam;
use crate::pipeline::{self, Compiled, Failure, Snapshot, describe_io};

/// The files of a run folder.
pub const MODEL: &str = "model.hmdp";
pub const MODEL_HASH: &str = "model.hash";
pub const DATA: &str = "data.json";
pub const RUN: &str = "run.json";
pub const BEST: &str = "best.ckpt";
pub const LATEST: &str = "latest.ckpt";
pub const FINAL: &str = "final.ckpt";
pub const CURVE: &str = "curve.csv";
pub const PLOT: &str = "curve.svg";

/// What `run.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The command line of the run's latest segment.
    #[serde(default)]
    pub command: Vec<String>,
    /// The command lines of the segments a resumed run continued, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_commands: Vec<serde_json::Value>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub model_hash: String,
    #[serde(default)]
    pub backend: String,
    /// The settings, with everything left to the model resolved.
    pub config: Config,
    #[serde(default)]
    pub versions: serde_json::Value,
    /// A run of `hmdpc tune`: the declared policy and its tuned parameters, in place of networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<TunedPolicy>,
}

/// A declared policy with the values `hmdpc tune` chose for its tunable parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TunedPolicy {
    pub policy: String,
    /// Each tunable parameter's value, by name.
    pub values: std::collections::BTreeMap<String, f64>,
}

impl RunRecord {
    /// Reads `run.json`. Runs written before the scenario sets had their own seed drew them
    /// from the training seed, and runs from before the action shift existed squashed without
    /// one: both read as what they did.
    pub fn parse(text: &str) -> Result<RunRecord, String> {
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(config) = value.get_mut("config").and_then(|c| c.as_object_mut()) {
            if !config.contains_key("scenario_seed")
                && let Some(seed) = config.get("seed").cloned()
            {
                config.insert("scenario_seed".into(), seed);
            }
            config.entry("action_shift").or_insert(0.0.into());
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// Why a run folder cannot be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The folder is not a run folder (a file is missing or unreadable): a usage error.
    NotARun(String),
    /// A file of the run is damaged, or the model no longer matches its hash.
    Damaged(String),
    /// The recorded model does not compile.
    Compile(Failure),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NotARun(m) | OpenError::Damaged(m) => write!(f, "{m}"),
            OpenError::Compile(failure) => write!(f, "{}", failure.render(false).trim_end()),
        }
    }
}

/// Which checkpoint of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// The best on the dev set.
    Best,
    /// The last, written when the run ended or was stopped.
    Final,
}

impl Checkpoint {
    pub fn file(self) -> &'static str {
        match self {
            Checkpoint::Best => BEST,
            Checkpoint::Final => FINAL,
        }
    }
}

/// The file whose OS lock a training process holds for the life of its run.
pub const LOCK: &str = ".lock";

/// A run folder held by this process: no other `hmdpc train` writes into it until this is
/// dropped (the OS lock ends with the process, however it ends).
pub struct Lock {
    _file: std::fs::File,
}

/// Takes the run folder for this process, creating it if need be, and removes the temporary
/// files an earlier process left when it was killed or its disk was full: under the lock, no
/// one else is writing any. Refused, naming the holder's process id, when another process
/// trains into the folder.
pub fn lock(folder: &Path) -> Result<Lock, String> {
    let path = folder.join(LOCK);
    let cannot = |e: std::io::Error| format!("cannot lock the run folder {}: {}", path.display(), describe_io(&e));
    std::fs::create_dir_all(folder).map_err(cannot)?;
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("process {pid}"),
            };
            return Err(format!(
                "the run folder {} is in use: {holder} is training into it; wait for it to end, or choose another with --out",
                folder.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cannot(e)),
    }
    file.set_len(0).map_err(cannot)?;
    writeln!(file, "{}", std::process::id()).map_err(cannot)?;
    remove_stale_temporaries(folder).map_err(|e| format!("cannot clean the run folder {}: {e}", folder.display()))?;
    Ok(Lock { _file: file })
}

/// Removes the `.NAME.tmp-PID` files [`write_atomic`] leaves when it is stopped half way.
fn remove_stale_temporaries(folder: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && entry.file_type()?.is_file() {
            remove_if_present(&entry.path()).map_err(|e| named(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Reads a run folder's `run.json`.
pub fn read_record(folder: &Path) -> Result<RunRecord, OpenError> {
    let bytes = std::fs::read(folder.join(RUN)).map_err(|e| {
        OpenError::NotARun(format!("{} is not a run folder: cannot read {RUN}: {}", folder.display(), describe_io(&e)))
    })?;
    RunRecord::parse(&String::from_utf8_lossy(&bytes))
        .map_err(|e| OpenError::Damaged(format!("{}/{RUN}: {e}", folder.display())))
}

/// The model a run folder was trained on: its source and the data files it read, checked
/// against `model.hash`.
pub struct RecordedModel {
    pub folder: PathBuf,
    pub source: pipeline::Source,
    /// `None` for a run folder written before `data.json` existed: its model reads its data
    /// files from the folder, as it did then.
    pub data_files: Option<Vec<(String, String)>>,
}

impl RecordedModel {
    pub fn read(folder: &Path) -> Result<RecordedModel, OpenError> {
        let bytes = std::fs::read(folder.join(MODEL)).map_err(|e| {
            OpenError::NotARun(format!(
                "{} is not a run folder: cannot read {MODEL}: {}",
                folder.display(),
                describe_io(&e)
            ))
        })?;
        let data_files = match std::fs::read_to_string(folder.join(DATA)) {
            Ok(text) => Some(
                read_data_json(&text).map_err(|e| OpenError::Damaged(format!("{}/{DATA}: {e}", folder.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(OpenError::NotARun(format!(
                    "cannot read {}/{DATA}: {}",
                    folder.display(),
                    describe_io(&e)
                )));
            }
        };
        let source = pipeline::Source::new(folder.join(MODEL).display().to_string(), bytes);
        let recorded = std::fs::read_to_string(folder.join(MODEL_HASH)).unwrap_or_default();
        if recorded.trim() != fingerprint(&source.text, data_files.as_deref().unwrap_or_default()) {
            return Err(OpenError::Damaged(format!(
                "{}/{MODEL} or its {DATA} does not match {MODEL_HASH}: the model was changed after training, so its \
                 checkpoints may not fit it",
                folder.display()
            )));
        }
        Ok(RecordedModel { folder: folder.to_path_buf(), source, data_files })
    }

    /// Compiles the model with these overrides and exactly the data it was trained on.
    pub fn compile(&self, overrides: &[(String, f64)]) -> Result<Compiled, Failure> {
        let options = crate::check::Options { overrides: overrides.to_vec() };
        match &self.data_files {
            Some(files) => pipeline::compile(&self.source, &Snapshot(files.clone()), &options),
            None => pipeline::compile(&self.source, &pipeline::Folder(self.folder.clone()), &options),
        }
    }
}

/// A run folder opened to be read: its model compiled with the overrides and data files it
/// was trained with, and its settings.
pub struct Run {
    pub folder: PathBuf,
    pub compiled: Compiled,
    pub record: RunRecord,
}

impl Run {
    /// Opens a run folder written by `hmdpc train`, checking that its model is the one its
    /// checkpoints were trained on.
    pub fn open(folder: &Path) -> Result<Run, OpenError> {
        let record = read_record(folder)?;
        let recorded = RecordedModel::read(folder)?;
        let compiled = recorded.compile(&record.config.set).map_err(OpenError::Compile)?;
        Ok(Run { folder: folder.to_path_buf(), compiled, record })
    }

    pub fn config(&self) -> &Config {
        &self.record.config
    }

    /// The policy of one checkpoint, in networks shaped for the model and the settings.
    pub fn policy(&self, which: Checkpoint) -> Result<(Nets, Spec), String> {
        load_checkpoint(&self.folder, &self.compiled.module, self.config(), which)
    }
}

/// The policy of one checkpoint of the run folder `folder` (trained on `module` with `config`),
/// in networks shaped for the model and the settings; the error says what to do about it.
pub fn load_checkpoint(
    folder: &Path,
    module: &Module,
    config: &Config,
    which: Checkpoint,
) -> Result<(Nets, Spec), String> {
    let path = folder.join(which.file());
    let bytes = std::fs::read(&path).map_err(|e| {
        let mut message = format!("cannot read {}: {}", path.display(), describe_io(&e));
        if which == Checkpoint::Final && e.kind() == std::io::ErrorKind::NotFound {
            message.push_str(
                "\n  the run has not ended: it was killed, or is still training; `--policy best` evaluates its \
                 best checkpoint, and `hmdpc train ... --resume` finishes it",
            );
        }
        message
    })?;
    load_nets(module, config, &bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a run folder gives a resumed run: the checkpoint to continue from (its bytes, its name,
/// the update it was written at and whether it holds the training state), the curve up to it,
/// the best so far and the command lines of the run so far.
pub struct Resumption {
    pub checkpoint: Vec<u8>,
    pub name: &'static str,
    pub update: usize,
    pub exact: bool,
    pub curve: Vec<CurveRow>,
    pub best: Best,
    pub earlier_commands: Vec<serde_json::Value>,
}

/// The best policy of a run so far, as `--resume` finds it.
#[derive(Clone, Debug, PartialEq)]
pub enum Best {
    /// `best.ckpt`'s dev cost and update, from its header, or from the curve for a checkpoint
    /// written before headers held the cost.
    Known { dev: f64, update: usize },
    /// `best.ckpt` holds a policy whose dev cost neither its header nor the curve gives (an
    /// old checkpoint and a missing or damaged curve): it is evaluated again.
    Unscored { checkpoint: Vec<u8>, update: usize },
    /// No readable `best.ckpt`.
    Missing,
}

/// Reads what `--resume` continues from in `folder`, refusing a run of another model or
/// problem, or one that has done `updates` already.
pub fn resumption(
    folder: &Path,
    source: &str,
    data_files: &[(String, String)],
    config: &Config,
) -> Result<Resumption, String> {
    let recorded = std::fs::read_to_string(folder.join(MODEL_HASH)).unwrap_or_default();
    if recorded.trim() != fingerprint(source, data_files) {
        return Err(format!(
            "--resume: the model or its data files differ from those {} was trained on ({MODEL_HASH})",
            folder.display()
        ));
    }
    // The newest checkpoint that holds a training state, so the run goes on exactly as if it
    // had not stopped: `latest.ckpt` after a kill, `final.ckpt` after a run that ended or was
    // stopped with Ctrl-C. Failing that (a folder written before checkpoints held the state, or
    // a run killed before its first `latest.ckpt`), the newest checkpoint.
    let mut chosen: Option<(Vec<u8>, &'static str, Header)> = None;
    let mut unreadable = None;
    for name in [FINAL, LATEST, BEST] {
        match std::fs::read(folder.join(name)) {
            Ok(b) => {
                let header = checkpoint_header(&b).unwrap_or_default();
                if chosen.as_ref().is_none_or(|(_, _, h)| (header.exact, header.update) > (h.exact, h.update)) {
                    chosen = Some((b, name, header));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => unreadable = Some(e),
        }
    }
    let (checkpoint, name, Header { update, exact, .. }) = chosen.ok_or_else(|| match unreadable {
        Some(e) => format!("--resume: cannot read a checkpoint: {e}"),
        None => format!("--resume: {} holds no checkpoint to continue from", folder.display()),
    })?;
    if update >= config.updates {
        return Err(format!(
            "--resume: {} has done {update} updates, and --updates {} asks for no more; pass the number of updates \
             the run should have in all",
            folder.display(),
            config.updates
        ));
    }
    // Points past the checkpoint belong to updates that are about to be redone.
    let mut curve = read_curve(&std::fs::read_to_string(folder.join(CURVE)).unwrap_or_default());
    curve.retain(|row| row.update <= update);
    // The best checkpoint's own header says how good it is: a curve that is missing or damaged
    // must not demote it.
    let best = match std::fs::read(folder.join(BEST)).ok().and_then(|b| checkpoint_header(&b).map(|h| (b, h))) {
        Some((_, Header { dev: Some(dev), update, .. })) => Best::Known { dev, update },
        Some((checkpoint, Header { update, .. })) => match curve.iter().find(|row| row.update == update) {
            Some(row) => Best::Known { dev: dev_total(row), update },
            None => Best::Unscored { checkpoint, update },
        },
        None => Best::Missing,
    };
    let old = std::fs::read_to_string(folder.join(RUN)).ok().and_then(|text| RunRecord::parse(&text).ok());
    if let Some(old) = &old {
        let changed = super::config::problem_changes(&old.config, config);
        if !changed.is_empty() {
            return Err(format!(
                "--resume: {} trained another problem or policy: {}; resume with the settings it was trained with \
                 ({RUN})",
                folder.display(),
                changed.join(", ")
            ));
        }
    }
    let earlier_commands = old
        .map(|old| {
            let mut list = old.earlier_commands;
            list.push(old.command.into());
            list
        })
        .unwrap_or_default();
    Ok(Resumption { checkpoint, name, update, exact, curve, best, earlier_commands })
}

/// Starts a run folder: creates it, removes what a replaced run (`--force`) left that this run
/// would otherwise sit beside until it writes its own, and writes the model, its data files,
/// its hash and `run.json`.
pub fn start(
    folder: &Path,
    resume: bool,
    source: &str,
    data_files: &[(String, String)],
    record: &RunRecord,
) -> std::io::Result<()> {
    std::fs::create_dir_all(folder).map_err(|e| named(folder, e))?;
    if !resume {
        // A kill between the two would leave a folder that mixes the runs (and that `--resume`
        // would continue from the old one).
        for stale in [FINAL, LATEST, CURVE, PLOT] {
            let path = folder.join(stale);
            remove_if_present(&path).map_err(|e| named(&path, e))?;
        }
    }
    write_atomic(&folder.join(MODEL), source.as_bytes())?;
    if !data_files.is_empty() {
        write_atomic(&folder.join(DATA), data_json(data_files).as_bytes())?;
    } else {
        // A `--force` over a run of a model that read data files.
        let path = folder.join(DATA);
        remove_if_present(&path).map_err(|e| named(&path, e))?;
    }
    write_atomic(&folder.join(MODEL_HASH), format!("{}\n", fingerprint(source, data_files)).as_bytes())?;
    let json = serde_json::to_string_pretty(record).map_err(std::io::Error::other)?;
    write_atomic(&folder.join(RUN), format!("{json}\n").as_bytes())
}

/// Writes the learning curve as `curve.csv`.
pub fn write_curve(folder: &Path, names: &[String], rows: &[CurveRow]) -> std::io::Result<()> {
    write_atomic(&folder.join(CURVE), curve_csv(names, rows).as_bytes())
}

/// Writes the learning curve's plot as `curve.svg`.
pub fn write_plot(folder: &Path, title: &str, rows: &[CurveRow]) -> std::io::Result<()> {
    write_atomic(&folder.join(PLOT), curve_svg(title, rows).as_bytes())
}

/// The total dev cost of a curve row; a NaN total is no candidate for the best.
pub fn dev_total(row: &CurveRow) -> f64 {
    if row.dev_total.is_nan() { f64::INFINITY } else { row.dev_total }
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"HMDPCKPT";

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, renamed.
/// An error names `path`, and the temporary file is removed (a kill can still leave it:
/// [`lock`] removes it the next time).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        named(path, e)
    })
}

/// `e`, its message prefixed with the file it is about.
fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {}", path.display(), describe_io(&e)))
}

/// Removes the file at `path`; a file that is not there is already removed.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
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
/// training state, its scalars in the header and Adam's moments after the networks. `dev` is
/// the policy's dev cost when it was evaluated (the best checkpoint's decides the best of a
/// resumed run).
pub fn encode_checkpoint(
    nets: &Nets,
    update: usize,
    dev: Option<f64>,
    header_extra: serde_json::Value,
    state: Option<TrainingState<'_>>,
) -> Vec<u8> {
    let mut header = serde_json::json!({
        "update": update,
        "dev": dev,
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

/// What a checkpoint's header says about it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Header {
    /// The update it was written at.
    pub update: usize,
    /// Whether it holds a training state.
    pub exact: bool,
    /// The policy's dev cost, when it was recorded.
    pub dev: Option<f64>,
}

/// A checkpoint's header, or `None` when the bytes are no checkpoint.
pub fn checkpoint_header(bytes: &[u8]) -> Option<Header> {
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(16..16usize.checked_add(len)?)?).ok()?;
    (bytes.get(..8)? == CHECKPOINT_MAGIC).then_some(Header {
        update: header.get("update")?.as_u64()? as usize,
        exact: header.get("state").is_some(),
        dev: header.get("dev").and_then(|d| d.as_f64()),
    })
}

/// Reads a checkpoint into networks of the right shapes and returns the update it was written
/// at. With `opt`, also reads the training state when the checkpoint holds one: Adam's moments
/// into `opt`, the rest returned.
pub fn decode_checkpoint(
    bytes: &[u8],
    nets: &mut Nets,
    mut opt: Option<&mut Optimizers>,
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
    // A run from before the value network read the period: its value network reads the
    // features alone, and goes on doing so.
    if nets.value_reads_time() && size("value") != Some(nets.value.params().len()) {
        let older = nets.value_without_time();
        if size("value") == Some(older.params().len()) {
            nets.value = older;
            if let Some(opt) = opt.as_mut() {
                let (lr, eps) = (opt.value.lr, opt.value.eps);
                opt.value = Adam::new(nets.value.params().len(), lr);
                opt.value.eps = eps;
            }
        }
    }
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

/// One row of the learning curve.
#[derive(Clone, Debug)]
pub struct CurveRow {
    pub update: usize,
    pub seconds: f64,
    pub train: f64,
    pub dev_terms: Vec<f64>,
    /// The sum of `dev_terms` as evaluated, or as read back from `curve.csv` (not the sum of
    /// the rounded terms there), so that a resumed run writes its earlier rows unchanged.
    pub dev_total: f64,
    /// The quantities that explain training ([`super::diagnose::columns`]), by column name;
    /// none in curves written before they existed.
    pub diagnostics: Vec<(String, f64)>,
}

impl CurveRow {
    pub fn new(update: usize, seconds: f64, train: f64, dev_terms: Vec<f64>) -> CurveRow {
        let dev_total = dev_terms.iter().sum();
        CurveRow { update, seconds, train, dev_terms, dev_total, diagnostics: Vec::new() }
    }

    pub fn with_diagnostics(self, diagnostics: Vec<(String, f64)>) -> CurveRow {
        CurveRow { diagnostics, ..self }
    }
}

/// The curve as CSV: `update, seconds, train_cost`, the dev cost of each term, the diagnostic
/// columns, and `dev_total` last, where readers that predate the diagnostics look for it (they
/// take the columns between `train_cost` and the last for the terms, so the terms come first).
fn curve_csv(names: &[String], rows: &[CurveRow]) -> String {
    let mut out = String::from("update,seconds,train_cost");
    for n in names {
        out.push_str(&format!(",dev_{n}"));
    }
    let mut diagnostics: Vec<&str> = Vec::new();
    for (name, _) in rows.iter().flat_map(|r| &r.diagnostics) {
        if !diagnostics.contains(&name.as_str()) {
            diagnostics.push(name);
        }
    }
    for name in &diagnostics {
        out.push_str(&format!(",{name}"));
    }
    out.push_str(",dev_total\n");
    for r in rows {
        out.push_str(&format!("{},{:.3},{:.6}", r.update, r.seconds, r.train));
        for t in &r.dev_terms {
            out.push_str(&format!(",{t:.6}"));
        }
        for name in &diagnostics {
            let value = r.diagnostics.iter().find(|(n, _)| n == name).map_or(f64::NAN, |d| d.1);
            out.push_str(&format!(",{value:.6}"));
        }
        out.push_str(&format!(",{:.6}\n", r.dev_total));
    }
    out
}

/// The learning curve as an SVG line plot: train cost and dev total against updates.
pub fn curve_svg(title: &str, rows: &[CurveRow]) -> String {
    let (w, h, pad) = (640.0, 400.0, 60.0);
    let points: Vec<(f64, f64, f64)> = rows.iter().map(|r| (r.update as f64, r.train, r.dev_total)).collect();
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

/// Reads the rows of a `curve.csv` written by [`super::run::train`], by this version or an
/// earlier one: the columns between `train_cost` and the last, `dev_total`, are the dev cost of
/// a term when named `dev_…`, and a diagnostic otherwise.
pub fn read_curve(text: &str) -> Vec<CurveRow> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines
        .filter_map(|line| {
            let cols: Vec<f64> = line.split(',').map(|c| c.parse::<f64>().unwrap_or(f64::NAN)).collect();
            let (&update, rest) = cols.split_first()?;
            let (&seconds, rest) = rest.split_first()?;
            let (&train, rest) = rest.split_first()?;
            let (&dev_total, middle) = rest.split_last()?;
            let mut row = CurveRow {
                update: update as usize,
                seconds,
                train,
                dev_terms: Vec::new(),
                dev_total,
                diagnostics: Vec::new(),
            };
            for (k, &value) in middle.iter().enumerate() {
                match header.get(3 + k) {
                    Some(name) if !name.starts_with("dev_") => row.diagnostics.push((name.to_string(), value)),
                    _ => row.dev_terms.push(value),
                }
            }
            Some(row)
        })
        .collect()
}

/// Networks shaped for a module and settings, parameters from a checkpoint.
pub fn load_nets(module: &Module, cfg: &Config, bytes: &[u8]) -> Result<(Nets, Spec), String> {
    // A run recorded before the per-action scales scaled its half-lines by `action_scale` alone.
    let spec = if cfg.action_scales.is_empty() {
        spec_with_squash(module, cfg.action_scale.unwrap_or(1.0), cfg.action_shift)
    } else {
        spec_with_scales(module, &cfg.action_scales, cfg.action_shift)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut nets = Nets::new(&spec, &cfg.hidden(), cfg.normalize, &mut rng);
    decode_checkpoint(bytes, &mut nets, None)?;
    Ok((nets, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(update: usize, dev: f64) -> CurveRow {
        CurveRow::new(update, update as f64, dev * 1.1, vec![dev])
    }

    #[test]
    fn a_curve_with_diagnostics_reads_back_and_an_older_curve_still_reads() {
        let names = ["holding".to_string(), "fixed".to_string()];
        let rows = vec![
            CurveRow::new(0, 0.5, f64::NAN, vec![3.0, 1.0]).with_diagnostics(vec![("kl".into(), f64::NAN)]),
            CurveRow::new(4, 1.5, 3.5, vec![2.0, 1.0]).with_diagnostics(vec![("kl".into(), 0.25)]),
        ];
        let text = curve_csv(&names, &rows);
        assert!(text.starts_with("update,seconds,train_cost,dev_holding,dev_fixed,kl,dev_total\n"), "{text}");
        let back = read_curve(&text);
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].dev_terms.clone(), back[1].dev_total), (vec![2.0, 1.0], 3.0));
        assert_eq!(back[1].diagnostics, vec![("kl".to_string(), 0.25)]);
        assert!(back[0].diagnostics[0].1.is_nan());
        // Written again, it is the same text (a resumed run rewrites its earlier rows unchanged).
        assert_eq!(curve_csv(&names, &back), text);
        // A reader that predates the diagnostics finds the update, the train cost, the terms
        // first and the total last.
        let last = text.lines().nth(2).unwrap_or_default();
        let cols: Vec<&str> = last.split(',').collect();
        assert_eq!((cols[0], cols[2], cols[3], cols[cols.len() - 1]), ("4", "3.500000", "2.000000", "3.000000"));
        // A curve written before the diagnostics reads as it did.
        let old = read_curve("update,seconds,train_cost,dev_holding,dev_total\n0,0.1,NaN,2.5,2.5\n");
        assert_eq!((old[0].dev_terms.clone(), old[0].diagnostics.len()), (vec![2.5], 0));
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

    fn empty_module() -> crate::ir::Module {
        crate::ir::Module {
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
            bounds_vjp: Default::default(),
            observe: vec![],
            horizon: 1,
            warmup: 0,
            discount: 1.0,
            report: crate::ir::Report { per_period: false, per_size: vec![] },
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        use rand::SeedableRng;
        let module = empty_module();
        let mut spec = super::super::spec::Spec::of(&module);
        spec.features = 1;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut nets = Nets::new(&spec, &[4], true, &mut rng);
        nets.normalizer.fit(&[1.0, 2.0, 4.0], 1, 1.0);
        let bytes = encode_checkpoint(&nets, 7, Some(1.5), serde_json::json!({}), None);
        let mut back = Nets::new(&spec, &[4], true, &mut ChaCha8Rng::seed_from_u64(2));
        assert_eq!(decode_checkpoint(&bytes, &mut back, None), Ok((7, None)));
        assert_eq!(back.continuous.params(), nets.continuous.params());
        assert_eq!(back.normalizer.mean, nets.normalizer.mean);
        assert!(decode_checkpoint(&bytes[..bytes.len() - 3], &mut back, None).is_err());
        assert!(decode_checkpoint(b"not a checkpoint", &mut back, None).is_err());

        // With a training state: Adam's moments and steps, the generator part-way through a
        // block, the order and the running cost all come back.
        let cfg = Config::default();
        let mut opt = Optimizers::new(&nets, &cfg);
        let grad: Vec<f32> = (0..nets.value.params().len()).map(|i| i as f32 - 3.0).collect();
        let mut params = nets.value.params().to_vec();
        opt.value.step(&mut params, &grad);
        opt.value.step(&mut params, &grad);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let _ = crate::random::unit(&mut rng);
        // A cost whose shortest decimal form a fast parser reads one unit in the last place off.
        let running_train = 907.3038322028689;
        let state = TrainingState { opt: &opt, rng: &rng, order: &[2, 0, 1], running_train };
        let bytes = encode_checkpoint(&nets, 9, None, serde_json::json!({}), Some(state));
        let mut opt_back = Optimizers::new(&nets, &cfg);
        let (update, continuation) = decode_checkpoint(&bytes, &mut back, Some(&mut opt_back)).unwrap();
        assert_eq!(
            (update, continuation),
            (
                9,
                Some(Continuation {
                    rng: ChaCha8Rng::deserialize_state(&rng.serialize_state()),
                    order: vec![2, 0, 1],
                    running_train
                })
            )
        );
        let mut rng_back = decode_checkpoint(&bytes, &mut back, Some(&mut opt_back)).unwrap().1.unwrap().rng;
        assert_eq!(crate::random::unit(&mut rng_back), crate::random::unit(&mut rng));
        assert_eq!(opt_back.value.moments(), opt.value.moments());
        assert_eq!(opt_back.value.steps(), 2);
        // Read without an optimiser (as `eval` reads it), the state is skipped.
        assert_eq!(decode_checkpoint(&bytes, &mut back, None), Ok((9, None)));
        assert!(decode_checkpoint(&bytes[..bytes.len() - 3], &mut back, Some(&mut opt_back)).is_err());
    }

    /// A checkpoint from before the value network read the period (its value network reads the
    /// features alone) loads, with its training state, into networks that keep its shape: an old
    /// run resumes and evaluates as it was.
    #[test]
    fn a_checkpoint_whose_value_network_reads_no_time_keeps_that_shape() {
        use rand::SeedableRng;
        let module = empty_module();
        let mut spec = super::super::spec::Spec::of(&module);
        spec.features = 3;
        let cfg = Config::default();
        let mut old = Nets::new(&spec, &[5, 4], true, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(old.value_reads_time() && old.value.inputs() == 4);
        old.value = old.value_without_time();
        assert!(!old.value_reads_time() && old.value.inputs() == 3);
        let mut old_opt = Optimizers::new(&old, &cfg);
        let grad: Vec<f32> = (0..old.value.params().len()).map(|i| i as f32 * 0.1).collect();
        let mut params: Vec<f32> = (0..old.value.params().len()).map(|i| i as f32 * 0.01).collect();
        old_opt.value.step(&mut params, &grad);
        old.value.params_mut().copy_from_slice(&params);
        let rng = ChaCha8Rng::seed_from_u64(3);
        let state = TrainingState { opt: &old_opt, rng: &rng, order: &[0], running_train: 1.0 };
        let bytes = encode_checkpoint(&old, 4, None, serde_json::json!({}), Some(state));

        let mut back = Nets::new(&spec, &[5, 4], true, &mut ChaCha8Rng::seed_from_u64(2));
        let mut opt = Optimizers::new(&back, &cfg);
        assert_ne!(opt.value.moments().0.len(), old_opt.value.moments().0.len());
        let (update, continuation) = decode_checkpoint(&bytes, &mut back, Some(&mut opt)).expect("loads");
        assert_eq!(update, 4);
        assert!(continuation.is_some());
        assert!(!back.value_reads_time());
        assert_eq!(back.value.params(), old.value.params());
        assert_eq!(opt.value.moments(), old_opt.value.moments());
        assert_eq!(opt.value.steps(), 1);
        // Its value inputs are the features, without the period.
        assert_eq!(back.value_inputs(&[1.0, 2.0, 3.0], 1, |_| 0.5), vec![1.0, 2.0, 3.0]);

        // A checkpoint of today's networks keeps the period, which goes after each row.
        let now = Nets::new(&spec, &[5, 4], true, &mut ChaCha8Rng::seed_from_u64(4));
        let bytes = encode_checkpoint(&now, 1, None, serde_json::json!({}), None);
        let mut back = Nets::new(&spec, &[5, 4], true, &mut ChaCha8Rng::seed_from_u64(5));
        decode_checkpoint(&bytes, &mut back, None).expect("loads");
        assert!(back.value_reads_time());
        assert_eq!(back.value.params(), now.value.params());
        let rows = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(back.value_inputs(&rows, 2, |r| r as f32 / 4.0), vec![1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.25]);
        // A value network of any other shape is refused, as before.
        let mut other = Nets::new(&spec, &[6, 4], true, &mut ChaCha8Rng::seed_from_u64(6));
        assert!(decode_checkpoint(&bytes, &mut other, None).is_err());
    }

    #[test]
    fn a_checkpoint_header_gives_the_update_the_state_and_the_dev_cost() {
        let nets_of = |seed| {
            let mut spec = super::super::spec::Spec::of(&empty_module());
            spec.features = 1;
            Nets::new(&spec, &[4], true, &mut ChaCha8Rng::seed_from_u64(seed))
        };
        let dev = 8562.43;
        let bytes = encode_checkpoint(&nets_of(1), 32, Some(dev), serde_json::json!({}), None);
        assert_eq!(checkpoint_header(&bytes), Some(Header { update: 32, exact: false, dev: Some(dev) }));
        let bytes = encode_checkpoint(&nets_of(1), 3, Some(f64::NAN), serde_json::json!({}), None);
        assert_eq!(checkpoint_header(&bytes), Some(Header { update: 3, exact: false, dev: None }));
        assert_eq!(checkpoint_header(b"HMDPCKPT"), None);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hmdp-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    }

    #[test]
    fn a_failed_write_names_its_file_and_leaves_no_temporary() {
        let dir = scratch("write");
        // A folder where the file should go: the rename fails after the temporary is written.
        std::fs::create_dir(dir.join("best.ckpt")).expect("folder");
        std::fs::write(dir.join("best.ckpt").join("inside"), b"x").expect("file");
        let e = write_atomic(&dir.join("best.ckpt"), b"bytes").expect_err("a folder is in the way");
        assert!(e.to_string().contains(&dir.join("best.ckpt").display().to_string()), "{e}");
        let left: Vec<_> = std::fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("best.ckpt")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_locked_folder_is_refused_with_the_holder_and_its_stale_temporaries_are_removed() {
        let dir = scratch("lock");
        std::fs::write(dir.join(".latest.ckpt.tmp-4242"), b"half").expect("temporary");
        std::fs::write(dir.join("curve.csv"), b"kept").expect("curve");
        let held = lock(&dir).expect("a free folder");
        assert!(!dir.join(".latest.ckpt.tmp-4242").exists());
        assert!(dir.join("curve.csv").exists());
        let refused = lock(&dir).err().expect("the folder is held");
        assert!(refused.contains(&format!("process {}", std::process::id())), "{refused}");
        drop(held);
        assert!(lock(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
