//! `hmdpc sweep` and `hmdpc report` as a user runs them: a grid of sizes × algorithms × seeds
//! run two at a time, finished runs skipped and started ones resumed when the sweep runs again,
//! Ctrl-C that keeps every run's checkpoints, a run folder in use left alone, mistakes in the
//! sweep file named, and the report's tables and plots.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn hmdpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Output with runs of spaces as one space (the dry run's columns are padded).
fn words(bytes: &[u8]) -> String {
    text(bytes).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A fresh folder holding `sweep.toml` with `body` after a `model` line naming the shipped LQR.
fn sweep_file(name: &str, body: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let model = common::root().join("models/switched_lqr.hmdp");
    let path = dir.join("study.toml");
    std::fs::write(&path, format!("model = {:?}\n{body}", model.display().to_string())).expect("sweep file");
    path
}

const GRID: &str = r#"
[settings]
updates = 6
batch = 8
scenarios = 32
[set]
modes = 1
[axes]
set.n = [1, 2]
algo = ["hpo", "ppo"]
seed = [0, 1]
"#;

fn run_names(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder.join("runs"))
        .expect("runs folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_grid_runs_two_at_a_time_skips_what_finished_resumes_what_started_and_reports() {
    let file = sweep_file("grid", GRID);
    let folder = file.with_file_name("study");
    let file = file.to_str().expect("path");
    let out = hmdpc(&["sweep", file, "--jobs", "2"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("8 runs in 4 cells"), "{stdout}");
    assert!(stdout.contains("8 of 8 runs finished"), "{stdout}");
    let names = run_names(&folder);
    assert_eq!(names.len(), 8);
    assert!(names.contains(&"n=2,algo=ppo,seed=1".to_string()), "{names:?}");
    for name in &names {
        let run = folder.join("runs").join(name);
        for file in ["test.json", "run.json", "best.ckpt", "final.ckpt", "curve.csv"] {
            assert!(run.join(file).is_file(), "{name} has no {file}");
        }
        // A run of a sweep is an ordinary run folder: `eval` reads it and agrees with test.json.
        let test: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).expect("test.json")).expect("json");
        let eval = hmdpc(&["eval", run.to_str().expect("path")]);
        assert!(eval.status.success(), "{}", text(&eval.stderr));
        let total = test["total"]["mean"].as_f64().expect("total");
        assert!(text(&eval.stdout).contains(&format!("{total:.4}")), "{name}: {total} not in {}", text(&eval.stdout));
    }
    // Runs that differ only in their seed train on the same scenarios, from different weights.
    let a = std::fs::read_to_string(folder.join("runs/n=2,algo=hpo,seed=0/test.json")).expect("a");
    let b = std::fs::read_to_string(folder.join("runs/n=2,algo=hpo,seed=1/test.json")).expect("b");
    assert_ne!(a, b);

    // Again: everything is skipped.
    let again = hmdpc(&["sweep", file, "--jobs", "2"]);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("8 finished, 0 started, 0 to start"), "{}", text(&again.stdout));
    assert!(!text(&again.stdout).contains("started n="), "{}", text(&again.stdout));

    // A run whose test figures are missing is resumed (its training is complete) and tested
    // again, with the same figures.
    let resumed = folder.join("runs/n=1,algo=ppo,seed=0");
    let before = std::fs::read_to_string(resumed.join("test.json")).expect("test.json");
    std::fs::remove_file(resumed.join("test.json")).expect("remove");
    let dry = hmdpc(&["sweep", file, "--dry-run"]);
    assert!(words(&dry.stdout).contains("started (resumes) n=1,algo=ppo,seed=0"), "{}", text(&dry.stdout));
    let third = hmdpc(&["sweep", file]);
    assert!(third.status.success(), "{}{}", text(&third.stdout), text(&third.stderr));
    assert!(text(&third.stdout).contains("7 finished, 1 started, 0 to start"), "{}", text(&third.stdout));
    assert_eq!(std::fs::read_to_string(resumed.join("test.json")).expect("test.json"), before);

    // The report: a row per size, a column per algorithm, two seeds each.
    let report = hmdpc(&["report", folder.to_str().expect("path")]);
    assert!(report.status.success(), "{}", text(&report.stderr));
    let printed = text(&report.stdout);
    assert!(printed.contains("| problem | algo=hpo | algo=ppo |"), "{printed}");
    assert!(printed.contains("| n=1 |") && printed.contains("| n=2 |"), "{printed}");
    assert_eq!(printed.matches(" 2/2 |").count() % 4, 0, "{printed}");
    assert!(printed.contains("| problem | action dim | algo=hpo | algo=ppo |"), "{printed}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("report.json")).expect("report.json")).expect("json");
    let cells = json["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4);
    for cell in cells {
        assert_eq!(cell["seeds_done"], 2);
        let runs = cell["runs"].as_array().expect("runs");
        let totals: Vec<f64> = runs.iter().map(|r| r["test_total"].as_f64().expect("total")).collect();
        let mean = totals.iter().sum::<f64>() / 2.0;
        assert!((cell["total"]["mean"].as_f64().expect("mean") - mean).abs() < 1e-9 * mean.abs().max(1.0));
        let dim = cell["action_dim"].as_u64().expect("dim");
        assert_eq!(dim, cell["problem"]["set.n"].as_u64().expect("n"));
    }
    let csv = std::fs::read_to_string(folder.join("report.csv")).expect("report.csv");
    assert!(csv.starts_with("set.n,algo,term,seeds_done,seeds_planned,mean,std,median\n"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 4 * 2, "{csv}");
    for plot in ["cost.svg", "curves-n=1.svg", "curves-n=2.svg", "reach.svg"] {
        let svg = std::fs::read_to_string(folder.join(plot)).expect(plot);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{plot}");
        assert!(svg.contains("algo=hpo") && svg.contains("algo=ppo"), "{plot} has no legend");
    }
    assert!(std::fs::read_to_string(folder.join("reach.svg")).expect("reach").contains("continuous action dimension"));
}

#[test]
fn ctrl_c_stops_every_run_keeping_its_checkpoints_and_a_run_in_use_is_left_alone() {
    let body = GRID.replace("updates = 6", "updates = 100000").replace("set.n = [1, 2]", "set.n = [2]");
    let file = sweep_file("interrupted", &body);
    let folder = file.with_file_name("study");
    let file = file.to_str().expect("path");
    // Another process trains `n=2,algo=hpo,seed=1`: the sweep must leave it alone.
    let busy = folder.join("runs/n=2,algo=hpo,seed=1");
    std::fs::create_dir_all(&busy).expect("folder");
    let lock = hmdp::train::folder::lock(&busy).expect("lock");
    let child = Command::new(env!("CARGO_BIN_EXE_hmdpc"))
        .args(["sweep", file, "--jobs", "2"])
        .current_dir(common::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let first = folder.join("runs/n=2,algo=hpo,seed=0");
    let started = Instant::now();
    while !first.join("best.ckpt").is_file() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(first.join("best.ckpt").is_file(), "the first run wrote no checkpoint in two minutes");
    // SIGINT to the sweep alone (not its process group): it passes it on to its runs.
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("waits");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stopped by Ctrl-C"), "{stdout}");
    assert!(stdout.contains("skipped n=2,algo=hpo,seed=1") && stdout.contains("is in use"), "{stdout}");
    assert!(!first.join("test.json").exists());
    assert!(hmdpc(&["eval", first.to_str().expect("path")]).status.success());
    drop(lock);
    let dry = hmdpc(&["sweep", file, "--dry-run"]);
    assert!(words(&dry.stdout).contains("started (resumes) n=2,algo=hpo,seed=0"), "{}", text(&dry.stdout));
    // Nothing has finished: the report counts the started runs, and the action dimension, read
    // from a finished run's model, is not known yet (not 0).
    let report = hmdpc(&["report", folder.to_str().expect("path")]);
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert!(words(&report.stdout).contains("| n=2 | — |"), "{}", text(&report.stdout));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("report.json")).expect("report.json")).expect("json");
    assert!(json["cells"].as_array().expect("cells").iter().all(|c| c["action_dim"].is_null()), "{json}");
}

#[test]
fn mistakes_are_named_and_change_nothing() {
    let check = |body: &str, args: &[&str], code: i32, expected: &str| {
        let file = sweep_file("mistakes", body);
        let mut all = vec!["sweep", file.to_str().expect("path")];
        all.extend(args);
        let out = hmdpc(&all);
        assert_eq!(out.status.code(), Some(code), "{body}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expected), "{body}: {}", text(&out.stderr));
    };
    check("[axes]\nlearning_rate = [0.1]", &[], 2, "setting `learning_rate`: unknown field");
    check("[axes]\nseed = []", &[], 2, "axis `seed` has no values");
    check("[set]\nmodes = 1\n[axes]\nset.nope = [1]", &[], 2, "nope");
    check("[set]\nmodes = 1", &["--run", "nothing"], 2, "the sweep has no run `nothing`");
    let missing = hmdpc(&["sweep", "no/such/sweep.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read no/such/sweep.toml"), "{}", text(&missing.stderr));
    // Another sweep file into the same folder is refused.
    let file = sweep_file("other", "[set]\nmodes = 1\n[settings]\nupdates = 2\nbatch = 4\nscenarios = 8");
    assert!(hmdpc(&["sweep", file.to_str().expect("path")]).status.success());
    std::fs::write(&file, std::fs::read_to_string(&file).expect("file").replace("updates = 2", "updates = 3"))
        .expect("edit");
    let refused = hmdpc(&["sweep", file.to_str().expect("path")]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("holds another sweep"), "{}", text(&refused.stderr));
    let report = hmdpc(&["report", file.parent().expect("dir").to_str().expect("path")]);
    assert_eq!(report.status.code(), Some(2));
    assert!(text(&report.stderr).contains("is not a sweep folder"), "{}", text(&report.stderr));
}
