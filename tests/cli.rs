//! `hmdpc` as a user runs it: exit codes, summaries, rendered and JSON diagnostics, and hostile
//! input (bad bytes, huge files, deep nesting) that must give a diagnostic, never a crash.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hmdpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch file under the target folder, unique per test.
fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("scratch file");
    path
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn checks_every_shipped_model() {
    let models: Vec<String> = common::models().iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["check"];
    args.extend(models.iter().map(String::as_str));
    let out = hmdpc(&args);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), models.len(), "{stdout}");
    assert!(out.stderr.is_empty(), "clean models print no diagnostics: {}", text(&out.stderr));
}

#[test]
fn broken_model_exits_1_with_located_messages() {
    let out = hmdpc(&["check", "tests/diagnostics/several_errors.hmdp"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[tests/diagnostics/several_errors.hmdp:2:10]"), "{stderr}");
    assert!(stderr.contains("unknown name `onhnad`"), "{stderr}");
    assert!(stderr.contains("4 errors found"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn json_diagnostics_have_locations() {
    let out = hmdpc(&["check", "--message-format", "json", "tests/diagnostics/several_errors.hmdp"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let objects: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(objects.len(), 4);
    for o in &objects {
        assert_eq!(o["file"], "tests/diagnostics/several_errors.hmdp");
        assert_eq!(o["severity"], "error");
        assert!(o["line"].as_u64().is_some_and(|l| l >= 1) && o["column"].as_u64().is_some_and(|c| c >= 1), "{o}");
        assert!(o["code"].as_str().is_some_and(|c| c.starts_with("hmdp::")));
        assert!(o["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let first = &objects[0];
    assert_eq!((first["line"].as_u64(), first["column"].as_u64()), (Some(2), Some(10)), "{first}");
}

#[test]
fn usage_errors_exit_2() {
    let missing = hmdpc(&["check", "models/no_such_model.hmdp"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read models/no_such_model.hmdp: no such file"));

    let directory = hmdpc(&["check", "models"]);
    assert_eq!(directory.status.code(), Some(2), "{}", text(&directory.stderr));

    let bad_flag = hmdpc(&["check", "--frobnicate", "models/inventory.hmdp"]);
    assert_eq!(bad_flag.status.code(), Some(2));

    let no_files = hmdpc(&["check"]);
    assert_eq!(no_files.status.code(), Some(2));

    let bad_set = hmdpc(&["check", "--set", "items", "models/inventory.hmdp"]);
    assert_eq!(bad_set.status.code(), Some(2));
    assert!(text(&bad_set.stderr).contains("NAME=VALUE"));

    let unknown_set = hmdpc(&["check", "--set", "itmes=5", "models/inventory.hmdp"]);
    assert_eq!(unknown_set.status.code(), Some(2));
    assert!(text(&unknown_set.stderr).contains("did you mean `items`?"), "{}", text(&unknown_set.stderr));
}

#[test]
fn set_overrides_sizes() {
    let out = hmdpc(&["check", "--set", "items=50", "models/inventory.hmdp"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("(100 values)"), "50 items × 2 state slots: {}", text(&out.stdout));

    let negative = hmdpc(&["check", "--set", "items=-1", "models/inventory.hmdp"]);
    assert_eq!(negative.status.code(), Some(1));
    assert!(text(&negative.stderr).contains("`--set items=-1`"), "{}", text(&negative.stderr));

    // No items is a size, but the model reports its cost per item.
    let zero = hmdpc(&["check", "--set", "items=0", "models/inventory.hmdp"]);
    assert_eq!(zero.status.code(), Some(1));
    assert!(text(&zero.stderr).contains("cannot report per `items`: it is 0"), "{}", text(&zero.stderr));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["check", "--help"],
        &["help", "check"],
        &["simulate", "--help"],
        &["compile", "--help"],
        &["gradcheck", "--help"],
    ] {
        let out = hmdpc(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
    assert!(text(&hmdpc(&["--help"]).stdout).contains("check"));
}

#[test]
fn invalid_utf8_is_a_located_diagnostic() {
    let path = scratch("latin1.hmdp", b"model m\n// caf\xe9\nstate x = 0\n");
    let out = hmdpc(&["check", path_str(&path)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not valid UTF-8") && stderr.contains(":2:7]"), "{stderr}");
}

#[test]
fn hostile_input_gives_diagnostics_not_crashes() {
    // 10 MB of random bytes.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let garbage: Vec<u8> = (0..10_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let deep_parens = format!("model m\nstate x = {}1{}\n", "(".repeat(100_000), ")".repeat(100_000));
    let long_chain = format!("model m\nstate x = 1{}\n", " + 1".repeat(200_000));
    let deep_power = format!("model m\nstate x = 2{}\n", "^2".repeat(100_000));
    let deep_negation = format!("model m\nstate x = {}1\n", "-".repeat(1_000_000));
    let deep_if = format!("model m\nstate x = {}1{}\n", "if true then ".repeat(50_000), " else 0".repeat(50_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.hmdp", garbage),
        ("empty.hmdp", Vec::new()),
        ("nul.hmdp", b"model m\0\0\0".to_vec()),
        ("deep_parens.hmdp", deep_parens.into_bytes()),
        ("long_chain.hmdp", long_chain.into_bytes()),
        ("deep_power.hmdp", deep_power.into_bytes()),
        ("deep_negation.hmdp", deep_negation.into_bytes()),
        ("deep_if.hmdp", deep_if.into_bytes()),
    ];
    for (name, bytes) in cases {
        let path = scratch(name, &bytes);
        let out = hmdpc(&["check", "--message-format", "json", path_str(&path)]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        let first =
            text(&out.stdout).lines().next().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"));
        let first = first.unwrap_or_else(|| panic!("{name}: no diagnostic"));
        assert!(first["line"].as_u64().is_some(), "{name}: {first}");
    }
}

#[test]
fn simulate_prints_each_cost_term_with_a_confidence_interval() {
    let out = hmdpc(&["simulate", "models/inventory.hmdp", "--scenarios", "50", "--seed", "3", "--set", "items=5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("cost per period per items"), "{stdout}");
    for term in ["holding", "shortage", "fixed", "total"] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(term)).unwrap_or_else(|| panic!("{term}: {stdout}"));
        assert!(line.contains(" ± "), "{line}");
    }
    // The same seed gives the same figures.
    let again = hmdpc(&["simulate", "models/inventory.hmdp", "--scenarios", "50", "--seed", "3", "--set", "items=5"]);
    assert_eq!(out.stdout, again.stdout);

    let broken = hmdpc(&["simulate", "tests/diagnostics/several_errors.hmdp"]);
    assert_eq!(broken.status.code(), Some(1));
    let zero = hmdpc(&["simulate", "models/inventory.hmdp", "--scenarios", "0"]);
    assert_eq!(zero.status.code(), Some(2));
}

#[test]
fn compile_reports_and_emits_ir_and_gradcheck_passes() {
    let report = hmdpc(&["compile", "models/inventory_fixed_cost.hmdp"]);
    assert_eq!(report.status.code(), Some(0), "{}", text(&report.stderr));
    let stdout = text(&report.stdout);
    assert!(stdout.contains("fixed     set by the regime of q.order"), "{stdout}");
    assert!(stdout.contains("reformulated at models/inventory_fixed_cost.hmdp:34:24"), "{stdout}");

    let ir = hmdpc(&["compile", "models/inventory.hmdp", "--emit", "ir", "--set", "items=3"]);
    assert_eq!(ir.status.code(), Some(0));
    let ir_text = text(&ir.stdout);
    assert!(ir_text.starts_with("module joint_replenishment") && ir_text.contains("vjp {"), "{ir_text}");
    let parsed = hmdp::ir::text::parse(&ir_text).expect("the emitted IR parses");
    hmdp::ir::validate(&parsed).expect("and is valid");

    let check = hmdpc(&["gradcheck", "models/switched_lqr.hmdp", "--points", "2"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("ok: largest relative error"));
    assert_eq!(hmdpc(&["gradcheck", "models/switched_lqr.hmdp", "--tolerance", "-1"]).status.code(), Some(2));
    assert_eq!(hmdpc(&["gradcheck", "tests/diagnostics/several_errors.hmdp"]).status.code(), Some(1));
}

#[test]
fn run_time_errors_point_at_the_model() {
    // The bound reads the state, which grows past the upper bound after two steps.
    let path = scratch(
        "empty_bound.hmdp",
        b"model m\nstate x = 0\naction u: real in [x, 1]\nstep {\n  x' = x + 1\n  cost c = u\n}\nhorizon 5\n",
    );
    let out = hmdpc(&["simulate", path_str(&path), "--scenarios", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the bounds of `u` (element 0) are empty here: 2 > 1"), "{stderr}");
    assert!(stderr.contains("empty_bound.hmdp:3:20]"), "{stderr}");
}

/// `simulate` of `model` on the interpreter and the JIT: both exit 1 with the same message and
/// print no figures; the diagnostic is returned.
fn simulate_fails_alike(name: &str, model: &str, scenarios: &str) -> String {
    let path = scratch(name, model.as_bytes());
    let mut messages = Vec::new();
    for backend in ["interp", "jit"] {
        let out = hmdpc(&["simulate", path_str(&path), "--scenarios", scenarios, "--backend", backend]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert!(out.stdout.is_empty(), "{backend}: no figures: {}", text(&out.stdout));
        assert!(stderr.contains("hmdp::run"), "{stderr}");
        messages.push(stderr);
    }
    assert_eq!(messages[0], messages[1], "the backends name the same place");
    // The message as one line, as a terminal of any width shows it.
    messages[0].replace("\n  │ ", " ")
}

#[test]
fn a_nan_or_infinite_value_stops_simulate_at_its_place() {
    // `log` of a `let` that reaches 0 at the third step: the place is the `log` in the `let`.
    let stderr = simulate_fails_alike(
        "log_zero.hmdp",
        "model m\nstate x = 3\naction u: real in [0, 1]\nstep {\n  let d = x - 1\n  let l = log(d) * 2\n  x' = max(x - 1, 0)\n  cost wall = l + u\n}\nhorizon 5\n",
        "20",
    );
    assert!(
        stderr.contains("cost `wall` is -inf at step 2 of scenario 0 of the test set: `log` of 0 is -inf"),
        "{stderr}"
    );
    assert!(stderr.contains("log_zero.hmdp:6:11]"), "{stderr}");

    // `sqrt` of a negative draw: the first step at which a scenario fails, and the first such
    // scenario, on both backends (the JIT runs 1024 scenarios at a time, the interpreter one).
    let stderr = simulate_fails_alike(
        "sqrt_negative.hmdp",
        "model m\nstate x = 0\nnoise d ~ uniform(0, 1)\naction u: real in [0, 1]\nstep {\n  x' = x + u\n  cost c = sqrt(d - 0.0001) + u\n}\nhorizon 20\n",
        "3000",
    );
    assert!(stderr.contains("cost `c` is NaN at step "), "{stderr}");
    assert!(stderr.contains(" of the test set: `sqrt` of -"), "{stderr}");
    assert!(stderr.contains("sqrt_negative.hmdp:7:12]"), "{stderr}");

    // A division by zero in an update, element by element.
    let stderr = simulate_fails_alike(
        "divide_by_zero.hmdp",
        "model m\nset I = 1..3\nstate x[i in I] = i - 2\naction u: real in [0, 1]\nstep {\n  x'[i] = 1 / x[i] + u\n  cost c = u\n}\nhorizon 5\n",
        "5",
    );
    assert!(
        stderr.contains("next state `x'[2]` is inf at step 0 of scenario 0 of the test set: 1 / 0 is inf"),
        "{stderr}"
    );
    assert!(stderr.contains("divide_by_zero.hmdp:6:11]"), "{stderr}");
}

/// Output into a pipe whose reader has gone: a quiet stop with exit code 141, no panic message.
#[test]
fn a_closed_pipe_exits_141_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hmdpc"))
        .args(["instance", "models/inventory.hmdp", "--set", "items=2000"])
        .current_dir(common::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hmdpc runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// The first diagnostic of `check --message-format json`: (line, column).
fn json_location(path: &Path) -> (u64, u64) {
    let out = hmdpc(&["check", "--message-format", "json", path_str(path)]);
    let first = text(&out.stdout).lines().next().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"));
    let first = first.unwrap_or_else(|| panic!("{}: no diagnostic", path.display()));
    (first["line"].as_u64().expect("line"), first["column"].as_u64().expect("column"))
}

/// A label past column 65,535 used to crash miette's layout (issue 18). A long line is drawn as
/// a window around the label, under a header with the true line and column (those of the JSON
/// output, in characters).
#[test]
fn diagnostics_on_very_long_lines_show_a_window_of_the_line() {
    let cases = [
        ("long_spaces.hmdp", format!("model m\n{}@\n", " ".repeat(65_536)), Some((2, 65_537))),
        ("long_unclosed.hmdp", format!("model m\nstate x = {}\n", "(".repeat(100_000)), None),
        ("long_minus.hmdp", format!("model m\nstate x = {}\n", "-".repeat(100_000)), None),
        ("long_tabs.hmdp", format!("model m\n{}@\n", "\t".repeat(20_000)), Some((2, 20_001))),
        ("long_wide.hmdp", format!("model m\n/* {} */ @\n", "漢".repeat(70_000)), Some((2, 70_008))),
    ];
    for (name, model, expected) in cases {
        let path = scratch(name, model.as_bytes());
        let (line, column) = json_location(&path);
        if let Some(expected) = expected {
            assert_eq!((line, column), expected, "{name}");
        }
        let out = hmdpc(&["check", path_str(&path)]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(&format!("{name}:{line}:{column}]")), "{name}: {stderr}");
        // The window: a line of the model, cut short and marked, with the label under it.
        let longest = stderr.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(longest < 500, "{name}: a line of {longest} characters:\n{stderr}");
        assert!(stderr.contains('…'), "{name}: no line cut short:\n{stderr}");
        // (An error at the end of the file has no character to draw its label under.)
        assert!(expected.is_none() || stderr.contains("╰──"), "{name}: no label drawn:\n{stderr}");
    }
}

/// `simulate --scenario-seed` draws the scenarios, `--seed` the policy's randomness: a cost that
/// the actions do not touch is the same for any `--seed` and changes with `--scenario-seed`, and
/// the header says both.
#[test]
fn simulate_draws_scenarios_and_the_policy_from_their_own_seeds() {
    let model = scratch(
        "seeds.hmdp",
        b"model seeds\nstate x ~ normal(0, 1)\nstate y = 0\nnoise e ~ normal(0, 1)\naction u: real in [0, 1]\n\
          step {\n  x' = x + e\n  y' = y + u\n  cost world = x^2\n  cost acted = y\n}\nhorizon 4\n",
    );
    // (header, the `world` line, the `acted` line)
    let run = |seeds: &[&str]| -> (String, String, String) {
        let mut args = vec!["simulate", path_str(&model), "--scenarios", "50"];
        args.extend(seeds);
        let out = hmdpc(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let line = |name: &str| stdout.lines().find(|l| l.trim_start().starts_with(name)).expect(name).to_string();
        (stdout.lines().next().expect("header").to_string(), line("world"), line("acted"))
    };
    let (header, world, acted) = run(&["--seed", "1", "--scenario-seed", "5"]);
    assert!(header.contains("seed 1, scenario seed 5,"), "{header}");
    let (_, world_2, acted_2) = run(&["--seed", "2", "--scenario-seed", "5"]);
    assert_eq!(world, world_2, "the scenarios depend on the policy's seed");
    assert_ne!(acted, acted_2, "the policy's seed changes nothing");
    let (_, world_6, _) = run(&["--seed", "1", "--scenario-seed", "6"]);
    assert_ne!(world, world_6, "the scenario seed changes nothing");
    // Without --scenario-seed, --seed draws both, as before the option existed.
    let (header, world_5, _) = run(&["--seed", "5"]);
    assert!(header.contains("seed 5, scenario seed 5,"), "{header}");
    assert_eq!(world_5, world);
}
