//! Policies declared in a model: scored exactly as the model is written (the compiler's
//! rewritten choices derived from the user's values), the same on every backend, through
//! `simulate --policy`, and tuned by `hmdpc tune` into a run folder that `eval` scores.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use hmdp::backend::jit::Jit;
use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim::{self, policy::DeclaredPolicy};

fn hmdpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs")
}

const SEEDS: Seeds = Seeds { scenarios: 3, policy: 0 };
const SCENARIOS: usize = 24;

/// Per scenario, each cost term of the declared policy `name`, on the interpreter and on the
/// JIT (which must agree bit for bit).
fn with_policy(source: &str, name: &str) -> Vec<Vec<f64>> {
    let compiled = common::compiled_text(source, &common::root(), &[]);
    let module = &compiled.module;
    let program = compiled.policy(name).expect("the model declares the policy");
    let policy = DeclaredPolicy::new(module, program, None).expect("the policy runs on the module");
    let instance = sim::instance(module, 1).expect("instance");
    let interp = sim::simulate_on_interpreter(module, &instance, &policy, SEEDS, ScenarioSet::Test, SCENARIOS)
        .expect("simulates");
    let jit = Jit::compile(module).expect("compiles");
    let batched = sim::simulate_on_backend(module, &instance, &jit, &policy, SEEDS, ScenarioSet::Test, SCENARIOS)
        .expect("simulates");
    assert_eq!(interp, batched, "the JIT's batches give the interpreter's figures");
    interp
}

/// The same for a model without actions (the rule written into its step).
fn written(source: &str) -> Vec<Vec<f64>> {
    let module = common::compile_text(source, &common::root(), &[]);
    let instance = sim::instance(&module, 1).expect("instance");
    sim::simulate_on_interpreter(&module, &instance, &sim::RandomPolicy, SEEDS, ScenarioSet::Test, SCENARIOS)
        .expect("simulates")
}

fn assert_same(policy: &[Vec<f64>], written: &[Vec<f64>]) {
    assert_eq!(policy.len(), written.len());
    for (s, (a, b)) in policy.iter().zip(written).enumerate() {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "scenario {s}, term {k}: policy {x}, written {y}");
        }
    }
}

/// A shipped model with its action declaration replaced by the rule, written in the step.
fn rule_in_step(model: &str, action_line: &str, rule: &str) -> String {
    let text = std::fs::read_to_string(common::root().join("models").join(model)).expect("model");
    let text = text.split("\npolicy ").next().expect("text").to_string();
    let line = text.lines().find(|l| l.starts_with(action_line)).expect("the action's line").to_string();
    text.replace(&line, "").replace("step {", &format!("step {{\n  let {rule}"))
}

fn add_policy(model: &str, policy: &str) -> String {
    let text = std::fs::read_to_string(common::root().join("models").join(model)).expect("model");
    format!("{}\n{policy}\n", text.split("\npolicy ").next().expect("text"))
}

#[test]
fn price_breaks_and_a_fixed_cost_are_charged_as_written() {
    // Every item orders exactly at a price break (100, 500), or above the upper bound (clamped
    // to 1000), or nothing: the compiler's `q.piece` {zero, 0..100, 100..500, 500..1000} must
    // follow from the quantity, at the thresholds themselves too.
    let rule = "if stock[i] > 150 then 0 else (if i % 3 == 0 then 100 else (if i % 3 == 1 then 500 else 1200))";
    let policy = add_policy("bulk_discount.hmdp", &format!("policy fixed {{\n  q[i] = {rule}\n}}"));
    let step = rule_in_step("bulk_discount.hmdp", "action q", &format!("q[i] = min({rule}, 1000)"));
    let scored = with_policy(&policy, "fixed");
    assert_same(&scored, &written(&step));
    // The purchase cost saw every price: 100 at 4.5, 500 at 4 and 1000 at 4, and the fixed cost.
    assert!(scored.iter().all(|s| s[0] > 0.0));
}

#[test]
fn a_shared_order_decision_follows_from_the_quantities() {
    // `K * (sum(i in I) q[i] > 0)` becomes a `q.order` choice that the policy never names.
    let rule = "if onhand[i] + pipe[i, 0] < 10 then 30 - onhand[i] - pipe[i, 0] else 0";
    let policy = add_policy("inventory_fixed_cost.hmdp", &format!("policy up_to {{\n  q[i] = {rule}\n}}"));
    let step = rule_in_step("inventory_fixed_cost.hmdp", "action q", &format!("q[i] = max({rule}, 0)"));
    assert_same(&with_policy(&policy, "up_to"), &written(&step));
}

#[test]
fn a_fixed_cost_per_element_follows_from_each_quantity() {
    let model = |action: &str, rule: &str| {
        format!(
            "model per_item
size items = 3
set I = 0..items
param mu[I] ~ uniform(4, 8)
state x[I] = 0
noise d[i in I] ~ poisson(mu[i])
{action}
step {{
  {rule}
  x'[i] = x[i] + q[i] - d[i]
  cost ordering = sum(i in I) (3 * (q[i] > 0) + q[i])
  cost holding = sum(i in I) (max(x[i], 0) + 4 * max(-x[i], 0))
}}
horizon 30
"
        )
    };
    let rule = "if x[i] < 5 then 12 - x[i] else 0";
    let declared = format!("{}policy up_to {{\n  q[i] = {rule}\n}}\n", model("action q[I]: real in [0, 50]", ""));
    let compiled = common::compiled_text(&declared, &common::root(), &[]);
    assert!(compiled.module.buffers.iter().any(|b| b.name == "q.regime"), "the fixed cost is rewritten per element");
    let step = model("", &format!("let q[i] = clamp({rule}, 0, 50)"));
    assert_same(&with_policy(&declared, "up_to"), &written(&step));
}

#[test]
fn a_discrete_rule_and_an_action_outside_its_regime() {
    // `q` acts only when `order == buy`; the policy's value for it otherwise is dropped.
    let rule_order = "min(i in I) (onhand[i] + pipe[i, 0] - 2 * mu[i]) < 0";
    let rule_q = "max(6 * mu[i] - onhand[i] - pipe[i, 0], 0)";
    let policy = add_policy(
        "inventory.hmdp",
        &format!("policy up_to {{\n  order = if {rule_order} then buy else skip\n  q[i] = {rule_q}\n}}"),
    );
    let step = rule_in_step("inventory.hmdp", "action q", &format!("q[i] = {rule_q}"))
        .replace("action order: choice { skip, buy }", "")
        .replace("step {\n", &format!("step {{\n  let buying = {rule_order}\n"))
        .replace("order == buy", "buying");
    assert_same(&with_policy(&policy, "up_to"), &written(&step));
}

#[test]
fn simulate_runs_a_declared_policy_and_refuses_an_unknown_one() {
    let out = hmdpc(&["simulate", "models/inventory.hmdp", "--policy", "can_order", "--scenarios", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("policy `can_order`, 20 scenarios"), "{stdout}");
    // The same figures as the library's, on the interpreter and the JIT.
    let jit =
        hmdpc(&["simulate", "models/inventory.hmdp", "--policy", "can_order", "--scenarios", "20", "--backend", "jit"]);
    assert_eq!(out.stdout, jit.stdout);

    let out = hmdpc(&["simulate", "models/inventory.hmdp", "--policy", "can_ordr"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("declares no policy `can_ordr`; the policies are: can_order, random"), "{stderr}");
}

/// The dev cost at the start and at the best point, from `tune`'s summary line.
fn dev_costs(stdout: &str) -> (f64, f64) {
    let line = stdout.lines().find(|l| l.contains("at the start, best")).expect("summary line");
    let numbers: Vec<f64> =
        line.split(|c: char| c.is_whitespace() || c == ',' || c == ';').filter_map(|w| w.parse().ok()).collect();
    // `done: N evaluations in T s; dev cost START at the start, best BEST at evaluation K`
    (numbers[2], numbers[3])
}

/// `hmdpc tune` of `lost_sales`' declared `base_stock` on two items, quietly, into `folder`,
/// with `extra` flags.
fn tune_base_stock(folder: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["tune", "models/lost_sales.hmdp", "--policy", "base_stock", "--set", "items=2", "--quiet"];
    args.extend_from_slice(extra);
    args.extend(["-o", folder.to_str().expect("path")]);
    hmdpc(&args)
}

#[test]
fn tune_improves_on_the_start_and_its_run_folder_evaluates() {
    let dir = std::env::temp_dir().join(format!("hmdp-tune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.join("run");
    let folder_text = folder.to_str().expect("path");
    let args = ["--scenarios", "32", "--evaluations", "12"];
    let out = tune_base_stock(&folder, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let (start, best) = dev_costs(&stdout);
    assert!(best < 0.99 * start, "tuning improves the dev cost by more than 1%: {start} -> {best}\n{stdout}");

    let record = std::fs::read_to_string(folder.join("run.json")).expect("run.json");
    let record: serde_json::Value = serde_json::from_str(&record).expect("json");
    assert_eq!(record["tuned"]["policy"], "base_stock");
    assert!(record["tuned"]["values"]["S"].as_f64().is_some_and(|s| (0.0..=5.0).contains(&s)));
    assert_eq!(record["config"]["set"][0][0], "items");
    assert!(folder.join("curve.csv").exists() && folder.join("curve.svg").exists());

    let out = hmdpc(&["eval", folder_text]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tuned policy `base_stock`, 32 test scenarios"), "{stdout}");
    // The test set is `simulate`'s, so the same policy scores the same there.
    let s = record["tuned"]["values"]["S"].as_f64().expect("S");
    let model = std::fs::read_to_string(common::root().join("models/lost_sales.hmdp")).expect("model");
    let fixed = model.replace("tune S in [0, 5] = 3", &format!("tune S in [0, 5] = {s:?}"));
    let file = dir.join("fixed.hmdp");
    std::fs::write(&file, fixed).expect("write");
    let sim = hmdpc(&[
        "simulate",
        file.to_str().expect("path"),
        "--policy",
        "base_stock",
        "--set",
        "items=2",
        "--scenarios",
        "32",
    ]);
    let total = |text: &[u8]| {
        String::from_utf8_lossy(text).lines().find(|l| l.trim_start().starts_with("total")).map(str::to_string)
    };
    assert_eq!(total(&out.stdout), total(&sim.stdout));

    // A second run into the same folder is refused without --force.
    let again = tune_base_stock(&folder, &args);
    assert_eq!(again.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_stops_tune_after_the_current_evaluation_and_keeps_the_best() {
    let dir = std::env::temp_dir().join(format!("hmdp-tune-int-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_hmdpc"))
        .args(["tune", "models/switched_lqr.hmdp", "--policy", "fixed_mode", "--set", "n=2", "--scenarios", "64"])
        .args(["--evaluations", "1000000", "--quiet", "-o", folder.to_str().expect("path")])
        .current_dir(common::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hmdpc starts");
    // The curve exists once the start is scored, after the Ctrl-C handler is installed.
    let begun = std::time::Instant::now();
    while !folder.join("curve.csv").exists() {
        assert!(begun.elapsed().as_secs() < 120, "the start was not scored in time");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(sent.success());
    let out = child.wait_with_output().expect("waits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stopped after"), "{stdout}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("run.json")).expect("run.json")).expect("json");
    assert_eq!(record["tuned"]["policy"], "fixed_mode");
    let eval = hmdpc(&["eval", folder.to_str().expect("path"), "--scenarios", "8"]);
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_budget_spent_within_the_first_simplex_ends_the_search() {
    let dir = std::env::temp_dir().join(format!("hmdp-tune-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.join("run");
    let out = hmdpc(&[
        "tune",
        "models/switched_lqr.hmdp",
        "--policy",
        "fixed_mode",
        "--set",
        "n=2",
        "--scenarios",
        "8",
        "--evaluations",
        "2",
        "--quiet",
        "-o",
        folder.to_str().expect("path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("done: 2 evaluations"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tune_starts_where_told_and_refuses_a_start_outside_the_bounds() {
    let dir = std::env::temp_dir().join(format!("hmdp-tune-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.join("run");
    let tune = |start: &str| tune_base_stock(&folder, &["--scenarios", "8", "--evaluations", "1", "--start", start]);
    // One evaluation: the start alone, which is then the best point.
    let out = tune("S=4.5");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4.5000  (start 4.5)"), "{stdout}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("run.json")).expect("run.json")).expect("json");
    assert_eq!(record["tuned"]["values"]["S"], 4.5);
    let _ = std::fs::remove_dir_all(&dir);

    for (start, message) in [
        ("S=9", "--start S=9: outside the bounds of `S`, [0, 5], that policy `base_stock` declares"),
        ("s=1", "--start: policy `base_stock` has no tunable `s`"),
        ("S=1,S=2", "--start gives `S` twice"),
    ] {
        let out = tune(start);
        assert_eq!(out.status.code(), Some(2), "--start {start}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "--start {start}: expected `{message}` in {stderr}");
        assert!(!folder.exists(), "a refused start writes no run folder");
    }
}

/// `curve.csv` without its `seconds` column, and `evaluations.csv`, of a tune run folder.
fn tune_logs(folder: &std::path::Path) -> (Vec<String>, String) {
    let curve = std::fs::read_to_string(folder.join("curve.csv")).expect("curve.csv");
    let rows = curve
        .lines()
        .map(|l| l.split(',').enumerate().filter(|(k, _)| *k != 1).map(|(_, v)| v).collect::<Vec<_>>().join(","))
        .collect();
    (rows, std::fs::read_to_string(folder.join("evaluations.csv")).expect("evaluations.csv"))
}

#[test]
fn a_resumed_tune_is_the_run_that_was_not_stopped() {
    let dir = std::env::temp_dir().join(format!("hmdp-tune-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tune = |folder: &str, evaluations: &str, extra: &[&str]| {
        let mut args = vec!["tune", "models/switched_lqr.hmdp", "--policy", "fixed_mode", "--set", "n=2"];
        args.extend(["--scenarios", "16", "--quiet", "--evaluations", evaluations, "-o", folder]);
        args.extend(extra);
        hmdpc(&args)
    };
    let whole = dir.join("whole");
    let stopped = dir.join("stopped");
    let (whole_text, stopped_text) = (whole.to_str().expect("path"), stopped.to_str().expect("path"));
    let out = tune(whole_text, "14", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tune(stopped_text, "6", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A kill in the middle of writing a line leaves it cut short: the log ends before it.
    let log = stopped.join("evaluations.csv");
    let text = std::fs::read_to_string(&log).expect("log");
    std::fs::write(&log, &text[..text.len() - 7]).expect("cut the log");
    let resumed = tune(stopped_text, "14", &["--resume"]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{stdout}{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(stdout.contains("done: 14 evaluations"), "{stdout}");
    assert_eq!(tune_logs(&whole), tune_logs(&stopped), "the resumed run retraces the whole one");
    let tuned = |folder: &std::path::Path| {
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("run.json")).expect("run.json")).expect("json");
        (record["tuned"].clone(), record["earlier_commands"].as_array().map_or(0, Vec::len))
    };
    assert_eq!(tuned(&whole).0, tuned(&stopped).0);
    assert_eq!(tuned(&stopped).1, 1, "run.json keeps the command of the first segment");

    // Another problem, or another start, cannot be continued; nor can a folder tune did not write.
    let other = tune(stopped_text, "14", &["--resume", "--scenario-seed", "3"]);
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("tuned another problem or policy: --scenario-seed 0"));
    let start = tune(stopped_text, "14", &["--resume", "--start", "k_on=2"]);
    assert_eq!(start.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&start.stderr).contains("started from other values"));
    let never = tune(dir.join("never").to_str().expect("path"), "14", &["--resume"]);
    assert_eq!(never.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&never.stderr).contains("holds no evaluations.csv"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The two all-discrete models with optima from value iteration (`docs/optima`, cited by
/// `docs/training.md`) stay true: `optima.py` computes their optima, and each model's declared
/// policy (value iteration's, but for the last periods) scores within 1% of it on 1024 scenarios.
#[test]
fn the_declared_policies_of_docs_optima_come_within_one_percent_of_value_iteration() {
    let python = common::root().join(".venv/bin/python");
    let out =
        Command::new(&python).arg("docs/optima/optima.py").current_dir(common::root()).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let optimum = |model: &str| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with(model)).unwrap_or_else(|| panic!("{model}: {stdout}"));
        line.split_whitespace().last().and_then(|v| v.parse().ok()).expect("a number")
    };
    for (model, policy) in [("replacement.hmdp", "threshold"), ("batch_orders.hmdp", "reorder")] {
        let file = format!("docs/optima/{model}");
        let out = hmdpc(&["simulate", &file, "--policy", policy, "--scenarios", "1024"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let total: f64 = text
            .lines()
            .find(|l| l.trim_start().starts_with("total"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        let best = optimum(model);
        assert!(total >= 0.99 * best && total <= 1.01 * best, "{model}: {total} against the optimum {best}");
    }
}
