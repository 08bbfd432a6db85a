//! `hmdpc train`: trains a policy and writes a run folder. The settings are one
//! [`hmdp::train::Config`]; `--config` starts from a run's `run.json` (or a JSON of settings),
//! and the flags given on the command line change it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hmdp::pipeline::Compiled;
use hmdp::train::config::Origin;
use hmdp::train::folder::{self, RecordedModel, RunRecord};
use hmdp::train::run::{Outcome, RunInputs};
use hmdp::train::{Config, TrainError};

use super::{BackendChoice, Kernels, exit};

#[derive(clap::Args)]
pub struct Args {
    /// Model file (`.hmdp`); with `--config RUN/run.json`, the run's own model by default.
    #[arg(value_name = "FILE", required_unless_present = "config_file")]
    file: Option<PathBuf>,
    /// Start from the settings of a run (`RUN/run.json`) or a JSON object of settings; flags
    /// given on the command line change them. `hmdpc train --config RUN/run.json --out NEW`
    /// repeats a run.
    #[arg(long = "config", value_name = "JSON")]
    config_file: Option<PathBuf>,
    /// The run folder to write (default: runs/MODEL-ALGO-sSEED).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace the files of an existing run folder.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue an existing run, exactly where it stopped, until it has `--updates` updates.
    #[arg(long)]
    resume: bool,
    /// The least number of seconds between two writes of the checkpoint a killed run resumes
    /// from (`latest.ckpt`, written at a dev evaluation).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = hmdp::train::config::non_negative)]
    save_every: f64,
    /// Which kernels run the model.
    #[arg(long, value_enum, default_value_t = BackendChoice::Jit)]
    backend: BackendChoice,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// At the end, print how the time per update divides between its parts (rollout, values,
    /// first step, pathwise, minibatches, optimizer).
    #[arg(long)]
    breakdown: bool,
    #[command(flatten)]
    config: Config,
}

pub fn run(args: Args, given: &(dyn Fn(&str) -> bool + Sync)) -> u8 {
    let (mut config, recorded) = match settings(&args, given) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::USAGE;
        }
    };
    let compiled = match (&args.file, &recorded) {
        (Some(file), _) => super::compile_model(file, &config.set),
        (None, Some(recorded)) => recorded.compile(&config.set).map_err(super::fail),
        (None, None) => {
            eprintln!("error: give the model file, or --config RUN/run.json of a run folder");
            return exit::USAGE;
        }
    };
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    // The model's `train` block, under the command line; a `--config` holds a whole run's settings.
    let from_model = if args.config_file.is_none() {
        config.with_model_defaults(&compiled.train, &compiled.module, given)
    } else {
        Vec::new()
    };
    let origin = |key: &str| {
        if given(key) {
            Origin::Flag
        } else if from_model.contains(&key) {
            Origin::Model
        } else if args.config_file.is_some() {
            Origin::Config
        } else {
            Origin::Rule
        }
    };
    if config.batch > config.scenarios {
        eprintln!("error: --batch {} is larger than the training set (--scenarios {})", config.batch, config.scenarios);
        return exit::USAGE;
    }
    if let Err(code) = super::fits(&compiled, hmdp::train::need(&compiled.module, &config), "train") {
        return code;
    }
    let folder = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{}-{}-s{}", compiled.module.name, config.algo.name(), config.seed))
    });
    if folder.exists() && !args.force && !args.resume {
        eprintln!(
            "error: the run folder {} exists; pass --force to replace its files, --resume to continue it, or --out to choose another",
            folder.display()
        );
        return exit::USAGE;
    }
    if args.resume && ![folder::FINAL, folder::LATEST, folder::BEST].iter().any(|name| folder.join(name).exists()) {
        eprintln!("error: --resume: {} holds no checkpoint to continue from", folder.display());
        return exit::USAGE;
    }
    let kernels = match Kernels::load(args.backend, &compiled) {
        Ok(kernels) => kernels,
        Err(code) => return code,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C kills the process at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
    }
    let backend = kernels.backend();
    println!(
        "train {}: {} on backend {}, {} updates of {} scenarios, seed {}, scenario seed {}, run folder {}",
        compiled.source.name,
        config.algo.name(),
        backend.name(),
        config.updates,
        config.batch,
        config.seed,
        config.scenario_seed,
        folder.display()
    );
    let inputs = RunInputs {
        compiled: &compiled,
        backend,
        command: std::env::args().collect(),
        folder: folder.clone(),
        stop,
        progress: !args.quiet,
        resume: args.resume,
        save_every: args.save_every,
        origin: &origin,
    };
    match hmdp::train::run::train(inputs, config) {
        Ok(outcome) => report(&compiled, &folder, outcome, args.breakdown),
        Err(e) => train_error(&compiled, e),
    }
}

/// The settings of the run: the command line's, or those of `--config` changed by the flags
/// given on the command line; with the model a run folder's `--config` names.
fn settings(args: &Args, given: &dyn Fn(&str) -> bool) -> Result<(Config, Option<RecordedModel>), String> {
    let Some(path) = &args.config_file else { return Ok((args.config.clone(), None)) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), hmdp::pipeline::describe_io(&e)))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    // A run folder's `run.json` holds the settings under `config`, beside the model.
    let (base, recorded) = if value.get("config").is_some() {
        let record = RunRecord::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let recorded =
            if args.file.is_none() { Some(RecordedModel::read(folder).map_err(|e| e.to_string())?) } else { None };
        (record.config, recorded)
    } else {
        (serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))?, None)
    };
    let mut merged = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    let flags = serde_json::to_value(&args.config).map_err(|e| e.to_string())?;
    if let (Some(merged), Some(flags)) = (merged.as_object_mut(), flags.as_object()) {
        for (key, value) in flags {
            if given(key) {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    let config = serde_json::from_value(merged).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((config, recorded))
}

/// Prints how training ended and gives the exit code.
fn report(compiled: &Compiled, folder: &Path, outcome: Outcome, breakdown: bool) -> u8 {
    println!(
        "{} {} updates in {:.1} s ({:.1} s in updates, {:.1} ms per update); best dev cost {:.4} at update {}",
        if outcome.error.is_some() {
            "stopped by an error after"
        } else if outcome.interrupted {
            "stopped after"
        } else if outcome.plateau {
            "stopped on a dev plateau after"
        } else {
            "done:"
        },
        outcome.updates,
        outcome.seconds,
        outcome.seconds_in_updates,
        1e3 * outcome.seconds_in_updates / outcome.updates.max(1) as f64,
        outcome.best_dev,
        outcome.best_update
    );
    if breakdown {
        let per_update = |seconds: f64| 1e3 * seconds / outcome.updates.max(1) as f64;
        let parts: Vec<String> = outcome
            .phases
            .parts()
            .iter()
            .map(|(name, seconds)| format!("{name} {:.1}", per_update(*seconds)))
            .collect();
        let rest = outcome.seconds_in_updates - outcome.phases.parts().iter().map(|p| p.1).sum::<f64>();
        println!(
            "ms per update: {}, other {:.1}; median update {:.1} ms",
            parts.join(", "),
            per_update(rest),
            1e3 * outcome.median_update
        );
    }
    println!("run folder: {} (evaluate with `hmdpc eval {}`)", folder.display(), folder.display());
    match outcome.error {
        Some(e) => train_error(compiled, e),
        None => exit::OK,
    }
}

/// Prints why training stopped, located in the model when it has a place there.
fn train_error(compiled: &Compiled, e: TrainError) -> u8 {
    match e.located() {
        Some(located) => super::run_error(compiled, located),
        None => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}
