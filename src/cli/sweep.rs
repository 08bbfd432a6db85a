//! `hmdpc sweep`: runs a sweep file's plan on this machine, `--jobs` runs at a time, each in a
//! child process (`hmdpc sweep FILE --run NAME`, the same command a Ray task or a batch job
//! runs). Finished runs are skipped and killed ones resumed when the sweep is run again; the
//! trainer's lock keeps two processes out of one run folder.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hmdp::sweep::run::{Ended, Status};
use hmdp::sweep::{self, Planned, Sweep};
use hmdp::train::folder;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file (TOML; see docs/sweeps.md).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Runs at once on this machine; each gets an equal share of the cores.
    #[arg(long, default_value_t = 1, value_parser = hmdp::train::config::count(1, 1024))]
    jobs: usize,
    /// The sweep folder [default: the file's `folder`, else the file's name without `.toml`,
    /// beside it].
    #[arg(long, value_name = "DIR")]
    folder: Option<PathBuf>,
    /// List the runs and where each stands; run nothing.
    #[arg(long, conflicts_with = "run")]
    dry_run: bool,
    /// Run one run of the plan in this process (what each job runs).
    #[arg(long, value_name = "NAME")]
    run: Option<String>,
    /// With `--run`: no progress line.
    #[arg(long, requires = "run")]
    quiet: bool,
}

pub fn run(args: Args) -> u8 {
    let sweep = match sweep::plan::read(&args.file, args.folder.as_deref()) {
        Ok(sweep) => sweep,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if !sweep.model.is_file() {
        eprintln!("error: {}: the model {} does not exist", args.file.display(), sweep.model.display());
        return exit::USAGE;
    }
    if sweep.search.is_some() {
        eprintln!(
            "error: {} is a search (`[search]`): run it from Python with `hmdp.sweep.search(\"{}\")` (Optuna); \
             `hmdpc report` summarises its trials",
            args.file.display(),
            args.file.display()
        );
        return exit::USAGE;
    }
    if let Err(e) = sweep::prepare(&sweep) {
        eprintln!("error: {e}");
        return exit::USAGE;
    }
    match &args.run {
        Some(name) => run_single(&sweep, name, args.quiet),
        None => run_all(&sweep, &args),
    }
}

/// `--run NAME`: one run, in this process.
fn run_single(sweep: &Sweep, name: &str, quiet: bool) -> u8 {
    let Some(run) = sweep.run(name) else {
        eprintln!("error: the sweep has no run `{name}`; `hmdpc sweep FILE --dry-run` lists them");
        return exit::USAGE;
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
    }
    match sweep::run::run_one(sweep, run, stop, !quiet) {
        Ok(Ended::Skipped) => {
            println!("{name}: finished before; nothing to do");
            exit::OK
        }
        Ok(Ended::Finished(test)) => {
            println!(
                "{name}: test cost {:.4} ± {:.4} ({}), best at update {} of {}",
                test.total.mean, test.total.half_width, test.unit, test.best_update, test.updates
            );
            exit::OK
        }
        Ok(Ended::Interrupted) => {
            println!("{name}: stopped; run the sweep again to resume it");
            exit::INTERRUPTED
        }
        Err(failed) => {
            eprintln!("error: {failed}");
            exit::FAILED
        }
    }
}

/// Where each run of the plan stands, as printed by `--dry-run` and before a sweep.
fn statuses(sweep: &Sweep) -> Vec<(&Planned, Status)> {
    sweep.runs.iter().map(|r| (r, sweep::run::status(&sweep.run_folder(r)))).collect()
}

fn run_all(sweep: &Sweep, args: &Args) -> u8 {
    let all = statuses(sweep);
    let count = |s: Status| all.iter().filter(|(_, x)| *x == s).count();
    println!(
        "sweep {}: {} runs in {} cells, model {}; {} finished, {} started, {} to start; folder {}",
        args.file.display(),
        sweep.runs.len(),
        sweep.cells().len(),
        sweep.model.display(),
        count(Status::Done),
        count(Status::Started),
        count(Status::Absent),
        sweep.folder.display()
    );
    if args.dry_run {
        for (run, status) in &all {
            let status = match status {
                Status::Done => "finished",
                Status::Started => "started (resumes)",
                Status::Absent => "to start",
            };
            println!("  {:<18} {}", status, run.name);
        }
        return exit::OK;
    }
    // Each distinct problem compiles before anything runs, so a mistake shows at once.
    let mut checked: Vec<Vec<(String, f64)>> = Vec::new();
    for (run, _) in &all {
        let mut set = run.config.set.clone();
        set.sort_by(|a, b| a.0.cmp(&b.0));
        if checked.contains(&set) {
            continue;
        }
        if let Err(failure) = sweep::run::compile(sweep, run) {
            let code = super::fail(failure);
            eprintln!("error: run {} does not compile (its --set: {})", run.name, show_set(&run.config.set));
            return code;
        }
        checked.push(set);
    }
    let pending: VecDeque<&Planned> = all.iter().filter(|(_, s)| *s != Status::Done).map(|(r, _)| *r).collect();
    let logs = sweep.folder.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("error: cannot create {}: {}", logs.display(), hmdp::pipeline::describe_io(&e));
        return exit::USAGE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.jobs).max(1);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find hmdpc itself to start the runs: {e}");
            return exit::INTERNAL;
        }
    };
    let total = sweep.runs.len();
    let mut done = count(Status::Done);
    let mut failed: Vec<String> = Vec::new();
    let mut busy: Vec<String> = Vec::new();
    let mut queue = pending;
    let mut running: Vec<(Child, &Planned, Instant)> = Vec::new();
    let mut last_status = Instant::now();
    let started = Instant::now();
    loop {
        while running.len() < args.jobs && !stop.load(Ordering::SeqCst) {
            let Some(run) = queue.pop_front() else { break };
            let folder = sweep.run_folder(run);
            // A run another process trains now is left to it.
            if let Err(e) = folder::lock(&folder) {
                println!("[{done}/{total}] skipped {}: {e}", run.name);
                busy.push(run.name.clone());
                continue;
            }
            let log_path = logs.join(format!("{}.log", run.name));
            let child = std::fs::File::create(&log_path).and_then(|log| {
                let err = log.try_clone()?;
                Command::new(&exe)
                    .arg("sweep")
                    .arg(&args.file)
                    .arg("--folder")
                    .arg(&sweep.folder)
                    .args(["--run", &run.name, "--quiet"])
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err)
                    .spawn()
            });
            match child {
                Ok(child) => {
                    println!("[{done}/{total}] started {} (log {})", run.name, log_path.display());
                    running.push((child, run, Instant::now()));
                }
                Err(e) => {
                    eprintln!("error: cannot start run {}: {e}", run.name);
                    failed.push(run.name.clone());
                }
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if stop.load(Ordering::SeqCst) {
            // A Ctrl-C at a terminal reaches the children too; a signal to this process alone is
            // passed on, so that each stops cleanly and keeps its checkpoints.
            for (child, _, _) in &running {
                // SAFETY: kill(2) with a child's pid; no memory is involved.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            }
        }
        let mut k = 0;
        while k < running.len() {
            match running[k].0.try_wait() {
                Ok(None) => k += 1,
                Ok(Some(status)) => {
                    let (_, run, since) = running.swap_remove(k);
                    let seconds = since.elapsed().as_secs_f64();
                    let log = logs.join(format!("{}.log", run.name));
                    match status.code() {
                        Some(0) => {
                            done += 1;
                            let figure = sweep::run::TestFigures::read(&sweep.run_folder(run))
                                .map(|t| format!("test cost {:.4} ± {:.4}", t.total.mean, t.total.half_width))
                                .unwrap_or_default();
                            println!("[{done}/{total}] finished {} in {seconds:.0} s: {figure}", run.name);
                        }
                        Some(code) if code == i32::from(exit::INTERRUPTED) => {
                            println!("[{done}/{total}] stopped {}; it resumes when the sweep runs again", run.name);
                        }
                        _ => {
                            failed.push(run.name.clone());
                            println!(
                                "[{done}/{total}] FAILED {} after {seconds:.0} s; its log {}:",
                                run.name,
                                log.display()
                            );
                            for line in tail(&log, 6) {
                                println!("    {line}");
                            }
                        }
                    }
                }
                Err(e) => {
                    eprintln!("error: cannot wait for run {}: {e}", running[k].1.name);
                    k += 1;
                }
            }
        }
        if last_status.elapsed() > Duration::from_secs(30) && !running.is_empty() {
            last_status = Instant::now();
            let now: Vec<String> = running.iter().map(|(_, r, _)| progress(sweep, r)).collect();
            println!("[{done}/{total}] {:.0} s; running: {}", started.elapsed().as_secs_f64(), now.join("; "));
        }
    }
    let interrupted = stop.load(Ordering::SeqCst);
    println!(
        "sweep {}: {done} of {total} runs finished{}{}{}; `hmdpc report {}` summarises them",
        sweep.folder.display(),
        if failed.is_empty() { String::new() } else { format!(", {} failed ({})", failed.len(), failed.join(", ")) },
        if busy.is_empty() { String::new() } else { format!(", {} in use by another process", busy.len()) },
        if interrupted { ", stopped by Ctrl-C (run the sweep again to resume)" } else { "" },
        sweep.folder.display()
    );
    if interrupted {
        exit::INTERRUPTED
    } else if failed.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    }
}

/// A running run's latest evaluated update, from its curve.
fn progress(sweep: &Sweep, run: &Planned) -> String {
    let curve = std::fs::read_to_string(sweep.run_folder(run).join(folder::CURVE)).map(|t| folder::read_curve(&t));
    match curve.ok().and_then(|rows| rows.last().cloned()) {
        Some(row) => format!("{} at update {}/{}", run.name, row.update, run.config.updates),
        None => format!("{} starting", run.name),
    }
}

fn show_set(set: &[(String, f64)]) -> String {
    if set.is_empty() {
        return "none".into();
    }
    set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
