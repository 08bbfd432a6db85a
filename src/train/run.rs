//! The training loop: rollouts, updates, evaluations on the dev set, the best parameters kept,
//! everything written to a run folder ([`super::folder`]) as it goes. Stopped (Ctrl-C), it
//! evaluates once more and writes its final checkpoint; killed, it resumes from `latest.ckpt`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use super::diagnose::{self, Standing, Watch, Window};
use super::folder::{self, CurveRow, RunRecord, TrainingState, decode_checkpoint, encode_checkpoint};
use super::policy::Nets;
use super::rollout::{Context, Mode, rollout};
use super::scenarios::Scenarios;
use super::update::{Optimizers, Phases, Workspace, update};
use super::{Algo, Config, During, Evaluation, TrainError, defaults, evaluate, spec_with_scales};
use crate::backend::{Backend, Buffers};
use crate::pipeline::Compiled;
use crate::random::{self, ScenarioSet};
use crate::sim;

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
    /// Stopped because the dev cost had not improved for `--patience` updates.
    pub plateau: bool,
    pub error: Option<TrainError>,
}

/// Everything `train` needs besides the settings.
pub struct RunInputs<'a> {
    /// The model, its source and the data files it read (kept in the run folder).
    pub compiled: &'a Compiled,
    pub backend: &'a dyn Backend,
    pub command: Vec<String>,
    pub folder: PathBuf,
    pub stop: Arc<AtomicBool>,
    pub progress: bool,
    /// Continue the run in `folder` up to `Config::updates` updates in all, from its newest
    /// checkpoint with a training state (`latest.ckpt` or `final.ckpt`), exactly as if it had not
    /// stopped; from the newest checkpoint without one when there is none, with Adam's moments and
    /// the order of the train set afresh.
    pub resume: bool,
    /// The least number of seconds between two writes of `latest.ckpt`, at dev evaluations.
    pub save_every: f64,
    /// Where each setting came from, by key (`hidden`, `lr`, …), for the lines `train` prints.
    pub origin: &'a (dyn Fn(&str) -> super::config::Origin + Sync),
}

/// Trains, writing the run folder as it goes. Errors that stop training (a NaN cost, say) are
/// returned inside the outcome after the best checkpoint and the curve are safely written.
pub fn train(inputs: RunInputs<'_>, cfg: Config) -> Result<Outcome, TrainError> {
    let io = |e: std::io::Error| TrainError::RunFolder(format!("cannot write the run folder: {e}"));
    let module = &inputs.compiled.module;
    let source = inputs.compiled.source.text.as_str();
    let data_files = inputs.compiled.data_files.as_slice();
    let instance: Buffers = sim::instance(module, cfg.instance_seed).map_err(TrainError::Run)?;
    let spec0 = super::spec::Spec::of(module);
    if spec0.logits == 0 && spec0.outputs == 0 {
        return Err(TrainError::NoActions);
    }
    let started = Instant::now();
    let train_set = Scenarios::draw(module, &instance, cfg.scenario_seed, ScenarioSet::Train, cfg.scenarios)
        .map_err(TrainError::Run)?;
    let dev_set = Scenarios::draw(module, &instance, cfg.scenario_seed, ScenarioSet::Dev, cfg.scenarios)
        .map_err(TrainError::Run)?;
    let asked = cfg;
    let mut cfg = asked.resolved(module);
    let derived = defaults::action_scales(module, &instance, inputs.backend, &train_set).map_err(TrainError::Run)?;
    let named_by = (inputs.origin)("action_scale").why("action-scale");
    let (scales, scale_lines) =
        defaults::resolve(asked.action_scale, &asked.action_scales, &derived, named_by.as_deref());
    cfg.action_scales = scales;
    if inputs.progress {
        asked.explain(&cfg, module, inputs.origin).iter().chain(&scale_lines).for_each(|line| println!("{line}"));
    }
    // Features that do not vary at the start are divided by the model's typical size.
    let typical = cfg.action_scale.unwrap_or_else(|| train_set.noise_scale());
    let spec = spec_with_scales(module, &cfg.action_scales, cfg.action_shift);
    let ctx = Context { module, spec: &spec, backend: inputs.backend, instance: &instance };

    let folder = &inputs.folder;
    // Held until training returns: no other run writes into this folder meanwhile.
    let _lock = folder::lock(folder).map_err(TrainError::RunFolder)?;
    let resumed = if inputs.resume {
        let resumption = folder::resumption(folder, source, data_files, &cfg).map_err(TrainError::RunFolder)?;
        let how = if resumption.exact {
            "exactly where it stopped"
        } else {
            "with Adam's moments and the order of the train set afresh (the checkpoint holds no training state)"
        };
        println!("resuming from {} at update {}, {how}", resumption.name, resumption.update);
        Some(resumption)
    } else {
        None
    };
    let record = RunRecord {
        command: inputs.command.clone(),
        earlier_commands: resumed.as_ref().map(|r| r.earlier_commands.clone()).unwrap_or_default(),
        model: module.name.clone(),
        model_hash: folder::fingerprint(source, data_files),
        backend: inputs.backend.name().to_string(),
        config: cfg.clone(),
        versions: folder::crate_versions(),
        tuned: None,
    };
    folder::start(folder, inputs.resume, source, data_files, &record).map_err(io)?;

    // The training randomness: initial weights, sampling, the order of the train set.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6e65_7473);
    let mut nets = Nets::new(&spec, &cfg.hidden(), cfg.normalize, &mut rng);
    let mut opt = Optimizers::new(&nets, &cfg);
    let mut work = Workspace::default();
    let mut first_update = 0;
    let mut curve: Vec<CurveRow> = Vec::new();
    let mut order: Vec<usize> = (0..train_set.count).collect();
    let mut running_train = f64::NAN;
    match &resumed {
        Some(r) => {
            let resume_error = |e: String| TrainError::RunFolder(format!("--resume: {e} (were the settings changed?)"));
            let (from, continuation) =
                decode_checkpoint(&r.checkpoint, &mut nets, Some(&mut opt)).map_err(resume_error)?;
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
            curve = r.curve.clone();
        }
        None => {
            let start = super::rollout::initial_features(&ctx, &train_set).map_err(TrainError::Run)?;
            nets.normalizer.fit(&start, spec.features, typical);
        }
    }
    let names: Vec<String> = spec.costs.iter().map(|&c| module.buffers[c].name.clone()).collect();
    let terms = names.len();
    let per_epoch = (train_set.count / cfg.batch.max(1)).max(1);
    let eval_every = cfg.eval_every();
    let scale_report = sim::report_scale(module);
    let header = serde_json::to_value(&cfg).unwrap_or_default();

    let mut in_updates = 0.0;
    let mut phases = Phases::default();
    let mut update_seconds = Vec::with_capacity(cfg.updates.min(1 << 20));
    let mut error = None;
    let mode = if cfg.algo == Algo::Ppo { Mode::Gaussian } else { Mode::Sample };
    let mut last_print = Instant::now();
    let save = |nets: &Nets, name: &str, update: usize, dev: Option<f64>, state: Option<TrainingState<'_>>| {
        folder::write_atomic(&folder.join(name), &encode_checkpoint(nets, update, dev, header.clone(), state))
            .map_err(io)
    };
    let mut last_save = Instant::now();
    // `after`: the number of updates the evaluated policy has had.
    let evaluate_dev = |nets: &Nets, after: usize| -> Result<Evaluation, TrainError> {
        evaluate(&ctx, nets, &dev_set).map_err(|e| e.during(During::Evaluation(after)))
    };

    // The policy before any update is the first point of the curve and the first best; a
    // resumed run's best is the one its best checkpoint holds.
    let mut best = match resumed.as_ref().map(|r| &r.best) {
        Some(folder::Best::Known { dev, update }) => (*dev, *update),
        Some(folder::Best::Unscored { checkpoint, update }) => {
            let mut held = nets.clone();
            decode_checkpoint(checkpoint, &mut held, None).map_err(|e| {
                TrainError::RunFolder(format!("--resume: {}: {e}", folder.join(folder::BEST).display()))
            })?;
            (evaluate_dev(&held, *update)?.total(), *update)
        }
        Some(folder::Best::Missing) | None => {
            let first = evaluate_dev(&nets, first_update)?;
            if resumed.is_none() {
                let diagnostics =
                    diagnose::columns(module, &spec, cfg.algo, &Window::default(), &first.behaviour, &first.terms);
                let row = CurveRow::new(first_update, started.elapsed().as_secs_f64(), f64::NAN, first.terms.clone());
                curve.push(row.with_diagnostics(diagnostics));
            }
            save(&nets, folder::BEST, first_update, Some(first.total()), None)?;
            (first.total(), first_update)
        }
    };
    let mut done = first_update;
    let offset = curve.last().map_or(0.0, |r| r.seconds);
    let mut window = Window::default();
    let mut watch = Watch::default();
    let mut plateau = false;
    // The diagnostics of the last dev evaluation, for the next progress line.
    let mut fresh: Option<String> = None;

    for u in first_update..cfg.updates {
        if inputs.stop.load(Ordering::Relaxed) {
            break;
        }
        let position = u % per_epoch;
        if position == 0 {
            random::shuffle(&mut order, &mut rng);
        }
        let indices = &order[position * cfg.batch..((position + 1) * cfg.batch).min(order.len())];
        let entropy = cfg.entropy_weight(u);
        opt.set_lr(&cfg, u);
        let t0 = Instant::now();
        let step = (|| -> Result<(f64, super::update::Stats), TrainError> {
            let mut policy_rng = random::policy_stream(cfg.seed, ScenarioSet::Train, u as u64);
            let clock = Instant::now();
            let mut traj = rollout(&ctx, &nets, &train_set, indices, mode, cfg.algo != Algo::Ppo, &mut policy_rng)?;
            phases.rollout += clock.elapsed().as_secs_f64();
            let stats = update(&ctx, &mut nets, &mut opt, &mut work, &mut traj, &cfg, entropy, &mut rng)?;
            phases.add(&stats.phases);
            let totals = traj.totals(terms, module.warmup as usize);
            Ok((totals.iter().sum::<f64>() / traj.rows as f64 / scale_report, stats))
        })()
        .map_err(|e| e.during(During::Update(u + 1)));
        let seconds = t0.elapsed().as_secs_f64();
        in_updates += seconds;
        update_seconds.push(seconds);
        match step {
            Ok((cost, stats)) => {
                running_train = if running_train.is_nan() { cost } else { 0.9 * running_train + 0.1 * cost };
                window.add(&stats);
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        done = u + 1;
        let last = cfg.updates;
        // A run stopped with Ctrl-C is evaluated where it stopped, so its curve and its best
        // checkpoint include the updates it made.
        let stopping = inputs.stop.load(Ordering::Relaxed);
        if done % eval_every == 0 || done == last || stopping {
            match evaluate_dev(&nets, done) {
                Ok(dev) => {
                    let diagnostics = diagnose::columns(module, &spec, cfg.algo, &window, &dev.behaviour, &dev.terms);
                    if inputs.progress {
                        fresh = Some(diagnose::summary(&diagnostics));
                    }
                    let row =
                        CurveRow::new(done, offset + started.elapsed().as_secs_f64(), running_train, dev.terms.clone());
                    curve.push(row.with_diagnostics(diagnostics));
                    if dev.total() < best.0 {
                        best = (dev.total(), done);
                        save(&nets, folder::BEST, done, Some(dev.total()), None)?;
                    }
                    let standing = Standing {
                        update: done,
                        dev: dev.total(),
                        best: best.0,
                        best_update: best.1,
                        eval_every,
                        updates: last,
                    };
                    for warning in watch.check(module, &spec, &window, &dev.behaviour, &standing) {
                        if inputs.progress && std::io::stderr().is_terminal() {
                            eprintln!();
                        }
                        eprintln!("warning: {warning}");
                    }
                    window = Window::default();
                    plateau = cfg.patience.is_some_and(|p| done - best.1 >= p) && done < last;
                    folder::write_curve(folder, &names, &curve).map_err(io)?;
                    // Where a killed run resumes from. It is written after the curve, so a kill
                    // between the two leaves a curve that `--resume` cuts back to it.
                    if done < last && !stopping && last_save.elapsed().as_secs_f64() >= inputs.save_every {
                        let state = TrainingState { opt: &opt, rng: &rng, order: &order, running_train };
                        save(&nets, folder::LATEST, done, None, Some(state))?;
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
            let dev = curve.last().map_or(f64::NAN, |r| r.dev_total);
            let width = 24;
            let filled = width * done / cfg.updates.max(1);
            let bar: String = (0..width).map(|i| if i < filled { '#' } else { '-' }).collect();
            let mut line =
                format!("[{bar}] {done}/{last} updates, {rate:.1} updates/s, train {running_train:.4}, dev {dev:.4}");
            if let Some(shares) = curve.last().map(|r| diagnose::cost_shares(module, &spec, &r.dev_terms))
                && !shares.is_empty()
            {
                line.push_str(&format!(" ({shares})"));
            }
            if let Some(fresh) = fresh.take() {
                line.push_str(&format!("\n  {fresh}"));
            }
            if std::io::stderr().is_terminal() {
                eprint!("\r{line}");
                if line.contains('\n') {
                    eprintln!();
                }
            } else {
                eprintln!("{line}");
            }
        }
        if plateau {
            if inputs.progress && std::io::stderr().is_terminal() {
                eprintln!();
            }
            let (dev, at) = best;
            eprintln!(
                "stopping: the dev cost has not improved for {} updates (--patience {}; best {dev:.4} at update {at})",
                done - at,
                cfg.patience.unwrap_or_default()
            );
            break;
        }
    }
    if inputs.progress && std::io::stderr().is_terminal() {
        eprintln!();
    }
    let state = TrainingState { opt: &opt, rng: &rng, order: &order, running_train };
    save(&nets, folder::FINAL, done, None, Some(state))?;
    // The final checkpoint holds all that `latest.ckpt` held, and is newer.
    folder::remove_if_present(&folder.join(folder::LATEST)).map_err(io)?;
    folder::write_curve(folder, &names, &curve).map_err(io)?;
    let title = format!("{} — {} (dev cost, {})", module.name, cfg.algo.name(), sim::report_unit(module));
    folder::write_plot(folder, &title, &curve).map_err(io)?;
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
        plateau,
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
