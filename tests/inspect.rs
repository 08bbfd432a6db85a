//! `eval`, `compare`, `rollout`, `act` and `export` as a user runs them, held to each other:
//! compare's figures are eval's, a run compared with itself differs by exactly zero, a
//! rollout's costs add up to eval's per-scenario figures, `act` is the networks' forward pass
//! computed here by hand, and the numpy loader of `docs/export_loader.py` reproduces `act`.
//! Tiny runs are trained once per model and shared by the tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn hmdpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `hmdpc`, asserts it succeeded, and gives its stdout.
fn ok(args: &[&str]) -> String {
    let out = hmdpc(args);
    assert_eq!(out.status.code(), Some(0), "hmdpc {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Runs `hmdpc`, asserts it failed with `code`, and gives its stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = hmdpc(args);
    assert_eq!(out.status.code(), Some(code), "hmdpc {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stderr)
}

fn json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("hmdpc {args:?} printed no JSON ({e}): {out}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("parent")).expect("scratch folder");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Trains a tiny run of a shipped model once per test binary.
fn trained(cell: &'static OnceLock<PathBuf>, name: &str, model: &str, extra: &[&str]) -> &'static Path {
    cell.get_or_init(|| {
        let out = scratch(name);
        let mut args =
            vec!["train", model, "--out", s(&out), "--hidden", "16,16", "--scenarios", "64", "--batch", "16"];
        args.extend(["--quiet", "--updates", "6"]);
        args.extend(extra);
        ok(&args);
        out
    })
}

fn inventory() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    trained(&RUN, "inventory", "models/inventory.hmdp", &["--set", "items=3"])
}

/// Another policy of the same problem, trained with other seeds (its scenario seed differs too).
fn inventory_other() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    trained(
        &RUN,
        "inventory-other",
        "models/inventory.hmdp",
        &["--set", "items=3", "--seed", "5", "--scenario-seed", "1"],
    )
}

fn lqr() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    trained(&RUN, "lqr", "models/switched_lqr.hmdp", &["--set", "n=2"])
}

fn bulk() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    trained(&RUN, "bulk", "models/bulk_discount.hmdp", &["--set", "items=2"])
}

/// The `costs` of a JSON report as (name, mean, half width).
fn costs(report: &Value) -> Vec<(String, f64, f64)> {
    report["costs"]
        .as_array()
        .expect("costs")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["mean"].as_f64().expect("mean"),
                c["half_width"].as_f64().expect("half width"),
            )
        })
        .collect()
}

/// The rows of a CSV file without quoted fields: the header and the numbers.
fn csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).expect("csv");
    let mut lines = text.lines();
    let header = lines.next().expect("header").split(',').map(str::to_string).collect();
    let rows = lines.map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    (header, rows)
}

/// The fields of a CSV line whose quoted fields hold no quotes.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("a field").push(c),
        }
    }
    out
}

/// The mean and 95% half width of values, as the reports compute them (normal quantile 1.96).
fn estimate(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (variance / n).sqrt())
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn eval_reports_regimes_and_per_scenario_rows_consistent_with_its_figures() {
    let run = inventory();
    let file = scratch("eval-per-scenario.csv");
    let report = json(&["eval", s(run), "--json", "--per-scenario", s(&file)]);
    let text_report = ok(&["eval", s(run)]);
    // The JSON's figures are the text's.
    for (name, mean, half) in costs(&report) {
        let line = format!("{mean:>12.4} ± {half:.4}");
        assert!(
            text_report.lines().any(|l| l.trim_start().starts_with(&name) && l.ends_with(&line)),
            "{name} {line} in {text_report}"
        );
    }
    // One row per test scenario: its index, each term and the total, whose means are the report's.
    let (header, rows) = csv(&file);
    assert_eq!(header, ["scenario", "holding", "shortage", "fixed", "total"]);
    assert_eq!(rows.len(), 64);
    for (k, (name, mean, half)) in costs(&report).into_iter().enumerate() {
        let column: Vec<f64> = rows.iter().map(|r| r[k + 1]).collect();
        let (m, h) = estimate(&column);
        assert!(close(m, mean, 1e-12) && close(h, half, 1e-9), "{name}: {m} ± {h} vs {mean} ± {half}");
    }
    // `q` acts exactly when `order` is `buy` (its `when`), in each element of each period.
    let regimes = &report["regimes"];
    let order = &regimes["discrete"][0];
    assert_eq!(order["action"], "order");
    let (skip, buy) = (order["labels"]["skip"].as_f64().expect("skip"), order["labels"]["buy"].as_f64().expect("buy"));
    assert!(close(skip + buy, 1.0, 1e-12), "{order}");
    let q = &regimes["continuous"][0];
    assert_eq!(q["action"], "q");
    assert!(close(q["acting"].as_f64().expect("acting"), buy, 1e-12), "{q} vs buy {buy}");
    assert!(q["mean_when_acting"].as_f64().expect("mean") > 0.0, "{q}");
    assert!(
        text_report.contains("choices (share of each label") && text_report.contains("  order  skip "),
        "{text_report}"
    );
    assert!(text_report.contains("  q      acts "), "{text_report}");
}

#[test]
fn compare_gives_evals_figures_and_zero_against_itself() {
    let run = inventory();
    let report = json(&["compare", s(run), s(run), "random", "--json"]);
    let policies = report["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 3);
    // Each policy's figures are eval's, on the same scenarios.
    assert_eq!(costs(&policies[0]), costs(&json(&["eval", s(run), "--json"])));
    assert_eq!(costs(&policies[2]), costs(&json(&["eval", s(run), "--policy", "random", "--json"])));
    assert!(policies[0]["difference_to_first"].is_null());
    // The run against itself: every paired difference is 0 with a zero-width interval.
    for (name, mean, half) in costs(&serde_json::json!({ "costs": policies[1]["difference_to_first"] })) {
        assert!(mean == 0.0 && half == 0.0, "{name}: {mean} ± {half}");
    }
    // Against the random policy, the paired difference is the mean difference of the two.
    let random = costs(&serde_json::json!({ "costs": policies[2]["difference_to_first"] }));
    for ((first, random_fig), difference) in costs(&policies[0]).iter().zip(costs(&policies[2])).zip(&random) {
        assert!(close(difference.1, random_fig.1 - first.1, 1e-9), "{difference:?} vs {random_fig:?} - {first:?}");
    }
}

#[test]
fn compare_pairs_scenarios_and_refuses_different_problems() {
    let (a, b) = (inventory(), inventory_other());
    // The runs were trained on different scenario seeds: compare asks which test scenarios.
    let refused = fails(&["compare", s(a), s(b)], 2);
    assert!(refused.contains("different scenario seeds (0 and 1)") && refused.contains("--scenario-seed"), "{refused}");
    let file = scratch("compare-per-scenario.csv");
    let report = json(&[
        "compare",
        s(a),
        s(b),
        "--scenario-seed",
        "0",
        "--scenarios",
        "40",
        "--json",
        "--per-scenario",
        s(&file),
    ]);
    // The paired interval is that of the per-scenario differences, which the file holds.
    let (header, rows) = csv(&file);
    assert_eq!(header[1..5], ["1:holding", "1:shortage", "1:fixed", "1:total"]);
    assert_eq!(header[5..], ["2:holding", "2:shortage", "2:fixed", "2:total"]);
    assert_eq!(rows.len(), 40);
    let difference = costs(&serde_json::json!({ "costs": report["policies"][1]["difference_to_first"] }));
    for (k, (name, mean, half)) in difference.into_iter().enumerate() {
        let paired: Vec<f64> = rows.iter().map(|r| r[k + 5] - r[k + 1]).collect();
        let (m, h) = estimate(&paired);
        assert!(close(m, mean, 1e-9) && close(h, half, 1e-9), "{name}: {m} ± {h} vs {mean} ± {half}");
        assert!(half > 0.0, "two different policies differ from scenario to scenario");
    }
    // A run of another model, or `random` alone, cannot be compared.
    let other = fails(&["compare", s(a), s(lqr())], 2);
    assert!(other.contains("were trained on different models"), "{other}");
    let alone = fails(&["compare", "random", "random"], 2);
    assert!(alone.contains("needs at least one run folder"), "{alone}");
    let missing = fails(&["compare", s(a), "no/such/run"], 2);
    assert!(missing.contains("is not a run folder"), "{missing}");
}

#[test]
fn a_rollout_has_a_row_per_scenario_and_period_that_add_up_to_eval() {
    let run = lqr();
    let file = scratch("lqr-rollout.csv");
    let printed = ok(&["rollout", s(run), "--scenarios", "3", "-o", s(&file)]);
    assert!(printed.contains("3 test scenarios × 20 periods (60 rows of 10 columns)"), "{printed}");
    let (header, rows) = csv(&file);
    let columns = ["scenario", "period", "x[0]", "x[1]", "P(mode=0)", "P(mode=1)", "mode", "u[0]", "u[1]", "quad"];
    assert_eq!(header, columns);
    assert_eq!(rows.len(), 60);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!((row[0], row[1]), ((k / 20) as f64, (k % 20) as f64));
        assert!(close(row[4] + row[5], 1.0, 1e-12), "probabilities of row {k}: {row:?}");
    }
    // Each scenario's cost over the horizon is eval's figure for it (the model reports totals).
    let per_scenario = scratch("lqr-eval.csv");
    ok(&["eval", s(run), "--per-scenario", s(&per_scenario)]);
    let (_, eval_rows) = csv(&per_scenario);
    let labels: Vec<String> = std::fs::read_to_string(&file)
        .expect("rollout")
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(6).expect("mode").to_string())
        .collect();
    for (scenario, eval_row) in eval_rows.iter().enumerate().take(3) {
        let quad: f64 = rows.iter().filter(|r| r[0] == scenario as f64).map(|r| r[9]).sum();
        assert!(close(quad, eval_row[1], 1e-12), "scenario {scenario}: {quad} vs {}", eval_row[1]);
    }
    // The chosen label is the most likely one.
    for (row, label) in rows.iter().zip(&labels) {
        let most_likely = if row[5] > row[4] { "1" } else { "0" };
        assert_eq!(label, most_likely, "{row:?}");
    }
    let unwritable = fails(&["rollout", s(run), "-o", "no/such/folder/out.csv"], 2);
    assert!(unwritable.contains("cannot write"), "{unwritable}");
}

/// The decision `act` prints for a state of the two-dimensional switched LQR, and the same
/// computed here from the checkpoint's networks: features normalised, the discrete network's
/// softmax, and the continuous output of the chosen mode scaled (the action is unbounded).
#[test]
fn act_is_the_networks_forward_pass() {
    let run_dir = lqr();
    let run = hmdp::train::folder::Run::open(run_dir).expect("run");
    let (nets, spec) = run.policy(hmdp::train::folder::Checkpoint::Best).expect("policy");
    for x in [[1.5, -2.0], [0.0, 0.0], [-7.25, 3.5]] {
        let state = format!("{{\"x\": [{}, {}]}}", x[0], x[1]);
        let decision = json(&["act", s(run_dir), "--state", &state]);
        let (center, scale) = (nets.normalizer.center(), nets.normalizer.scale());
        let features: Vec<f32> = (0..2).map(|k| ((x[k] - center[k]) / scale[k]) as f32).collect();
        let mut tape = hmdp::nn::mlp::Tape::default();
        let logits: Vec<f64> = nets.discrete.forward(&features, 1, &mut tape).iter().map(|&v| v as f64).collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - top).exp()).sum();
        let probabilities: Vec<f64> = logits.iter().map(|l| (l - top).exp() / sum).collect();
        let mode = if probabilities[1] > probabilities[0] { 1 } else { 0 };
        let z = nets.continuous.forward(&features, 1, &mut tape).to_vec();
        let head = &spec.continuous[0];
        assert_eq!(decision["discrete"]["mode"]["chosen"], mode.to_string());
        for (label, p) in probabilities.iter().enumerate() {
            let printed =
                decision["discrete"]["mode"]["probabilities"][label.to_string()].as_f64().expect("probability");
            assert!(close(printed, *p, 1e-12), "P(mode={label}): {printed} vs {p}");
        }
        for k in 0..2 {
            let expected = head.scale * z[k * 2 + mode] as f64;
            let printed = decision["continuous"]["u"][k].as_f64().expect("u");
            assert!(close(printed, expected, 1e-12), "u[{k}] at {x:?}: {printed} vs {expected}");
        }
        assert_eq!(decision["mode"], "deterministic");
    }
    // Sampled labels are a draw: over seeds, both modes come up where neither is near certain.
    let state = r#"{"x": [0, 0]}"#;
    let chosen: std::collections::BTreeSet<String> = (0..40)
        .map(|seed| {
            json(&["act", s(run_dir), "--state", state, "--seed", &seed.to_string()])["discrete"]["mode"]["chosen"]
                .as_str()
                .expect("label")
                .to_string()
        })
        .collect();
    let p = json(&["act", s(run_dir), "--state", state])["discrete"]["mode"]["probabilities"]["0"].as_f64().expect("p");
    if (0.1..0.9).contains(&p) {
        assert_eq!(chosen.len(), 2, "P(mode=0) = {p}, but 40 draws gave only {chosen:?}");
    }
}

#[test]
fn act_refuses_bad_input_with_a_clear_error() {
    let run = inventory();
    let cases = [
        (r#"{"onhand": [0, 0, 0]"#, "--state is not valid JSON"),
        ("[1, 2]", "--state must be a JSON object"),
        (r#"{"onhnd": [0, 0, 0], "pipe": [0, 0, 0]}"#, "no state or parameter `onhnd` (did you mean `onhand`?)"),
        (r#"{"onhand": [0, 0], "pipe": [0, 0, 0]}"#, "`onhand` has 3 elements, but 2 values are given"),
        (r#"{"onhand": [0, "a", 0], "pipe": [0, 0, 0]}"#, "`onhand` holds a string; give numbers"),
        (r#"{"onhand": [0, 0, 0]}"#, "--state gives no value for `pipe`"),
        (r#"{"onhand": [0, 0, 0], "pipe": [0, 0, 0], "q": [1, 1, 1]}"#, "`q` is an action"),
        (r#"{"onhand": [0, 0, 0], "pipe": [0, 0, 0], "demand": [1, 1, 1]}"#, "`demand` is noise"),
    ];
    for (state, message) in cases {
        let stderr = fails(&["act", s(run), "--state", state], 2);
        assert!(stderr.contains(message), "--state {state}: expected `{message}` in {stderr}");
    }
    let missing = fails(&["act", s(run), "--state", "@no/such/state.json"], 2);
    assert!(missing.contains("cannot read --state no/such/state.json"), "{missing}");
}

/// A choice state is given to `act` by its label (or its position), and a `choice[SET]` state by
/// the element of its set, as the policy reads it; anything else is refused with the labels.
#[test]
fn act_reads_a_choice_state_by_its_label_and_a_set_choice_by_its_element() {
    let dir = scratch("choice-state");
    std::fs::create_dir_all(&dir).expect("scratch");
    let model = dir.join("probe.hmdp");
    let source = std::fs::read_to_string("tests/gradients/switching_cost.hmdp").expect("model")
        + "policy probe {\n  mode = if gear[0] > 2 then high else if last == low then low else off\n  \
           shift[z] = 1\n  trim[z] = 0\n}\n";
    std::fs::write(&model, source).expect("write");
    let chosen = |state: &str| {
        let decision = json(&["act", s(&model), "--policy", "probe", "--state", state]);
        decision["discrete"]["mode"]["chosen"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(chosen(r#"{"temp": [15, 15], "last": "off", "gear": [3, 1]}"#), "high");
    assert_eq!(chosen(r#"{"temp": [15, 15], "last": "off", "gear": [2, 1]}"#), "off");
    assert_eq!(chosen(r#"{"temp": [15, 15], "last": "low", "gear": [2.0, 1]}"#), "low");
    // A label's position, and an element written as text, read the same.
    assert_eq!(chosen(r#"{"temp": [15, 15], "last": 1, "gear": ["2", 1]}"#), "low");
    for (state, message) in [
        (
            r#"{"temp": [15, 15], "last": "hot", "gear": [1, 1]}"#,
            "`last` holds `hot`, which is not one of its labels; give its labels (`off`, `low`, `high`)",
        ),
        (
            r#"{"temp": [15, 15], "last": "off", "gear": [4, 1]}"#,
            "`gear` holds 4, which is not an element of its set; give elements of its set (`1`, `2`, `3`)",
        ),
        (r#"{"temp": [15, 15], "last": "off", "gear": [1, true]}"#, "`gear` holds a boolean"),
    ] {
        let stderr = fails(&["act", s(&model), "--policy", "probe", "--state", state], 2);
        assert!(stderr.contains(message), "--state {state}: expected `{message}` in {stderr}");
    }
}

/// `docs/export_loader.py`, run by the project's Python, against `act` on several states of three
/// models: a shared choice gating an action on a half-line (inventory), a mode choosing the
/// output of an unbounded action (switched LQR), and the pieces of a price break (bulk discount).
#[test]
fn the_numpy_loader_reproduces_act() {
    let cases: [(&Path, &str, Vec<&str>); 3] = [
        (
            inventory(),
            "inventory",
            vec![
                r#"{"onhand": [0, 0, 0], "pipe": [[0], [0], [0]]}"#,
                r#"{"onhand": [30, -12.5, 4], "pipe": [[1], [0], [50]]}"#,
                r#"{"onhand": [500, 500, 500], "pipe": [0, 0, 0]}"#,
            ],
        ),
        (lqr(), "lqr", vec![r#"{"x": [1.5, -2]}"#, r#"{"x": [0, 0]}"#, r#"{"x": [-9, 4.25]}"#]),
        (bulk(), "bulk", vec![r#"{"stock": [0, 0]}"#, r#"{"stock": [-150, 80]}"#, r#"{"stock": [900, -600]}"#]),
    ];
    for (run, name, states) in cases {
        let folder = scratch(&format!("export-{name}"));
        let wrote = ok(&["export", s(run), "-o", s(&folder)]);
        assert!(wrote.contains("policy.safetensors") && wrote.contains("policy.json"), "{wrote}");
        for state in states {
            let act = json(&["act", s(run), "--state", state]);
            let loaded = loader(&folder, &[state]);
            assert_same(&act["discrete"], &loaded["discrete"], &format!("{name} {state} discrete"));
            assert_same(&act["continuous"], &loaded["continuous"], &format!("{name} {state} continuous"));
        }
    }
}

/// The answer of `docs/export_loader.py`, run by the project's Python on the exported folder
/// `folder` with `args` (a state, then the bounds if any).
fn loader(folder: &Path, args: &[&str]) -> Value {
    let python = common::root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: create the project's virtual environment as the README says \
         (python3 -m venv .venv && .venv/bin/pip install -r python/requirements-dev.txt)",
        python.display()
    );
    let out = Command::new(&python)
        .arg("docs/export_loader.py")
        .arg(folder)
        .args(args)
        .current_dir(common::root())
        .output()
        .expect("python runs");
    assert!(out.status.success(), "loader on {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("loader JSON")
}

/// Two JSON values equal, numbers to 1e-6 relative to their size (at least 1).
fn assert_same(a: &Value, b: &Value, what: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().expect("number"), y.as_f64().expect("number"));
            assert!(close(x, y, 1e-6), "{what}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{what}: {a} vs {b}");
            x.iter().zip(y).for_each(|(x, y)| assert_same(x, y, what));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{what}: {a} vs {b}");
            x.iter().for_each(|(k, v)| assert_same(v, &y[k], &format!("{what}.{k}")));
        }
        _ => assert_eq!(a, b, "{what}"),
    }
}

#[test]
fn simulate_prints_json_and_per_scenario_rows() {
    let file = scratch("simulate-per-scenario.csv");
    let args = ["simulate", "models/switched_lqr.hmdp", "--set", "n=2", "--scenarios", "50"];
    let report = json(&[&args[..], &["--json", "--per-scenario", s(&file)]].concat());
    let printed = ok(&args);
    let (header, rows) = csv(&file);
    assert_eq!(header, ["scenario", "quad", "total"]);
    assert_eq!(rows.len(), 50);
    for (k, (name, mean, half)) in costs(&report).into_iter().enumerate() {
        let (m, h) = estimate(&rows.iter().map(|r| r[k + 1]).collect::<Vec<f64>>());
        assert!(close(m, mean, 1e-12) && close(h, half, 1e-9), "{name}: {m} ± {h} vs {mean} ± {half}");
        assert!(printed.contains(&format!("{mean:>12.4} ± {half:.4}")), "{printed}");
    }
    assert_eq!(report["policy"], "random policy");
}

/// A policy the model file declares (`FILE --policy NAME`) is a subject like a run's: `compare`
/// gives it `simulate --policy`'s figures, differs from itself by exactly 0, runs it on a run's
/// problem beside the run's policy, and `rollout` and `act` take it too.
#[test]
fn a_declared_policy_is_compared_rolled_out_and_asked_from_its_model_file() {
    let model = "models/inventory.hmdp";
    let on_items = ["--set", "items=3", "--scenarios", "40"];
    let mut args = vec!["compare", model, "--policy", "can_order", model, "--policy", "can_order", "random", "--json"];
    args.extend(on_items);
    let report = json(&args);
    let policies = report["policies"].as_array().expect("policies");
    assert_eq!(policies[0]["name"], "models/inventory.hmdp --policy can_order");
    assert_eq!(policies[0]["policy"], "policy `can_order`");
    let simulated = |policy: &str| {
        let mut args = vec!["simulate", model, "--policy", policy, "--json"];
        args.extend(on_items);
        json(&args)
    };
    assert_eq!(costs(&policies[0]), costs(&simulated("can_order")));
    assert_eq!(costs(&policies[2]), costs(&simulated("random")));
    for (name, mean, half) in costs(&serde_json::json!({ "costs": policies[1]["difference_to_first"] })) {
        assert!(mean == 0.0 && half == 0.0, "{name}: {mean} ± {half}");
    }

    // Beside a run folder, the run fixes the problem (its --set values, seeds and scenarios).
    let run = inventory();
    let report = json(&["compare", s(run), model, "--policy", "can_order", "--json"]);
    let declared = &report["policies"][1];
    let mut args = vec!["simulate", model, "--policy", "can_order", "--set", "items=3", "--scenarios", "64", "--json"];
    assert_eq!(costs(declared), costs(&json(&args)));
    assert_eq!(costs(&report["policies"][0]), costs(&json(&["eval", s(run), "--json"])));

    // rollout: each scenario's costs add up to simulate's per-scenario figures.
    let trajectories = scratch("can-order-rollout.csv");
    let printed = ok(&[
        "rollout",
        model,
        "--policy",
        "can_order",
        "--set",
        "items=3",
        "--scenarios",
        "3",
        "-o",
        s(&trajectories),
    ]);
    assert!(printed.contains("policy `can_order`, 3 test scenarios × 100 periods"), "{printed}");
    // Its header quotes `"pipe[0,0]"`: the columns are read with the quotes.
    let text = std::fs::read_to_string(&trajectories).expect("rollout");
    let header = fields(text.lines().next().expect("header"));
    let rows: Vec<Vec<f64>> =
        text.lines().skip(1).map(|l| fields(l).iter().map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    let per_scenario = scratch("can-order-simulate.csv");
    args.truncate(6);
    args.extend(["--scenarios", "3", "--per-scenario", s(&per_scenario)]);
    ok(&args);
    let (_, simulated_rows) = csv(&per_scenario);
    // The model reports per period from period 16 on and per item: 84 × 3.
    let terms = ["holding", "shortage", "fixed"];
    for (scenario, simulated) in simulated_rows.iter().enumerate() {
        for (k, term) in terms.iter().enumerate() {
            let column = header.iter().position(|c| c == term).expect("cost column");
            let reported = rows.iter().filter(|r| r[0] == scenario as f64 && r[1] >= 16.0).map(|r| r[column]);
            let figure = reported.sum::<f64>() / 252.0;
            assert!(close(figure, simulated[k + 1], 1e-12), "scenario {scenario}, {term}: {figure} vs {simulated:?}");
        }
    }
    // A deterministic rule gives the label it chose probability 1.
    let skip = header.iter().position(|c| c == "P(order=skip)").expect("P(order=skip)");
    for row in &rows {
        assert!(row[skip] == 0.0 || row[skip] == 1.0, "{row:?}");
    }

    // act: the rule's decision in a state, JSON out.
    let state = r#"{"onhand": [0, 0, 0], "pipe": [[0], [0], [0]]}"#;
    let decision = json(&["act", model, "--policy", "can_order", "--set", "items=3", "--state", state]);
    assert_eq!(decision["policy"], "policy `can_order`");
    assert_eq!(decision["discrete"]["order"]["chosen"], "buy", "{decision}");
    assert_eq!(decision["discrete"]["order"]["probabilities"]["buy"], 1.0);

    // What is refused, with exit code 2.
    let refusals: [(&[&str], &str); 6] = [
        (&["compare", model, s(run)], "is a model file: name its policy with --policy NAME"),
        (
            &["compare", s(run), "random", "--policy", "can_order"],
            "--policy can_order names the policy of no model file",
        ),
        (
            &["compare", s(run), model, "--policy", "can_order", "--set", "items=4"],
            "--set is for model files compared without a run folder",
        ),
        (&["compare", s(bulk()), model, "--policy", "can_order"], "are different models"),
        (&["rollout", model, "-o", "out.csv"], "is a model file: name the policy to run with --policy NAME"),
        (
            &["act", s(run), "--policy", "can_order", "--state", state],
            "a run folder's --policy is best, final or random, not `can_order`",
        ),
    ];
    for (args, message) in refusals {
        let stderr = fails(args, 2);
        assert!(stderr.contains(message), "hmdpc {args:?}: expected `{message}` in {stderr}");
    }
    let instance = fails(&["rollout", s(run), "--instance-seed", "3", "-o", "out.csv"], 2);
    assert!(instance.contains("--instance-seed is for a model file"), "{instance}");
}

/// A bound that reads the state is exported as the model's expression for it, which a caller
/// evaluates in the state and hands to the loader; with it the loader reproduces `act`.
#[test]
fn an_exported_bound_that_reads_the_state_says_how_to_compute_it() {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    let run = trained(&RUN, "lost-sales", "models/lost_sales.hmdp", &["--set", "items=2"]);
    let folder = scratch("export-lost-sales");
    ok(&["export", s(run), "-o", s(&folder)]);
    let description: Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("policy.json")).expect("policy.json")).expect("json");
    let upper = &description["continuous"][0]["upper"];
    assert_eq!(upper["given"], "state", "{upper}");
    assert_eq!(upper["expression"], "cap[i] - onhand[i]", "{upper}");
    assert_eq!(upper["line"], 24);
    assert_eq!(upper["reads"], serde_json::json!({ "states": ["onhand"], "parameters": ["cap"] }));
    assert!(upper["pass"].as_str().is_some_and(|p| p.contains("bounds={\"q\"")), "{upper}");
    // The lower bound reads no state: its values are written.
    assert_eq!(description["continuous"][0]["lower"], serde_json::json!({ "values": [0.0, 0.0] }));

    let cap = 40.0;
    for onhand in [[5.0, 30.0], [0.0, 40.0], [17.5, 2.0]] {
        let state = format!("{{\"onhand\": [{}, {}]}}", onhand[0], onhand[1]);
        let bounds = format!("{{\"q\": [[0, 0], [{}, {}]]}}", cap - onhand[0], cap - onhand[1]);
        let act = json(&["act", s(run), "--state", &state]);
        let loaded = loader(&folder, &[&state, &bounds]);
        assert_same(&act["continuous"], &loaded["continuous"], &format!("lost_sales {state}"));
    }
}
