//! Golden tests of rendered diagnostics: each `tests/diagnostics/*.hmdp` is a broken model, and
//! its snapshot holds the model text and exactly what `hmdpc check` shows for it.

mod common;

use std::collections::BTreeSet;

#[test]
fn golden_diagnostics() {
    insta::glob!("diagnostics/*.hmdp", |path| {
        let (source, rendered, diagnostics) = common::rendered(path);
        assert!(
            diagnostics.iter().any(|d| d.is_error()),
            "{} is a broken model, but the checker accepted it",
            path.display()
        );
        insta::assert_snapshot!(format!("{source}\n──────── hmdpc check ────────\n{rendered}"));
    });
}

/// Every diagnostic code the front end can emit is shown by at least one golden test.
#[test]
fn every_diagnostic_code_has_a_golden_test() {
    let root = common::root();
    let mut emitted = BTreeSet::new();
    let mut files: Vec<std::path::PathBuf> =
        ["src/syntax/parse.rs", "src/syntax/mod.rs"].iter().map(|f| root.join(f)).collect();
    for entry in std::fs::read_dir(root.join("src/check")).expect("the checker's folder") {
        files.push(entry.expect("entry").path());
    }
    for file in files {
        let text = std::fs::read_to_string(file).expect("source is readable");
        for opener in ["Diagnostic::error(", "Diagnostic::warning("] {
            for (at, _) in text.match_indices(opener) {
                let rest = text[at + opener.len()..].trim_start();
                if let Some(code) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    emitted.insert(code.to_string());
                }
            }
        }
    }
    emitted.insert("duplicate".to_string());
    // Decoding is exercised on raw bytes in tests/cli.rs and tests/mutations.rs.
    emitted.remove("encoding");

    let mut covered = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("tests/diagnostics")).expect("golden folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "hmdp") {
            let (_, _, diagnostics) = common::rendered(&path);
            covered.extend(diagnostics.iter().map(|d| d.code.to_string()));
        }
    }
    let missing: Vec<_> = emitted.difference(&covered).collect();
    assert!(missing.is_empty(), "diagnostic codes without a golden test: {missing:?}");
    assert!(emitted.len() > 40, "the scan found only {} codes; has the source layout changed?", emitted.len());
}

/// Several independent errors are all reported in one run.
#[test]
fn independent_errors_are_all_reported() {
    let path = common::root().join("tests/diagnostics/several_errors.hmdp");
    let (_, _, diagnostics) = common::rendered(&path);
    let codes: BTreeSet<&str> = diagnostics.iter().map(|d| d.code).collect();
    for code in ["bad-size", "distribution-parameter", "unknown-name", "unknown-label"] {
        assert!(codes.contains(code), "missing {code} in {codes:?}");
    }
}

fn accepts(source: &str, files: &[(&str, &str)]) {
    struct Memory(Vec<(String, String)>);
    impl hmdp::check::DataFiles for Memory {
        fn read(&self, path: &str) -> Result<String, String> {
            self.0.iter().find(|(p, _)| p == path).map(|(_, t)| t.clone()).ok_or_else(|| "missing".into())
        }
    }
    let files = Memory(files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect());
    let outcome = hmdp::check::check_source(source, &files, &hmdp::check::Options::default());
    let rendered = hmdp::diagnostics::render(&outcome.diagnostics, "model.hmdp", source, false);
    assert!(outcome.model.is_some() && outcome.diagnostics.is_empty(), "should check clean:\n{source}\n{rendered}");
}

#[test]
fn valid_corner_cases_are_accepted() {
    let base = "model m\nsize n = 3\nset I = 0..n\nset K = 0..1\nset S = -1..2\nstate x[I] = 0\naction a: choice[S]\n";
    // A single CSV column fits a matrix whose other dimension has one element.
    accepts(
        &format!(
            "{base}param w[I, K] from \"w.csv\"\nstep {{\n  x'[i] = x[i] + w[i, 0]\n  cost c = sum(i in I) x[i]\n}}\nhorizon 2\n"
        ),
        &[("w.csv", "1\n2\n3\n")],
    );
    // Negative elements of a `choice[SET]` are matched by number; `if` and `match` are operands.
    accepts(
        &format!(
            "{base}step {{\n  x'[i] = x[i] + 2 * match a {{ -1 => 5, 0 => 1, _ => 0 }}\n  cost c = 1 + if a > 0 then 1 else 0\n}}\nhorizon 2\n"
        ),
        &[],
    );
}

/// One kind of name a model can give, as a declaration or a statement of the step.
struct Kind {
    what: &'static str,
    /// Where the name goes: a declaration, or a statement of the step.
    in_step: bool,
    /// The text naming `wear`; `@` marks where the name stands.
    text: &'static str,
}

const KINDS: &[Kind] = &[
    Kind { what: "size", in_step: false, text: "size @ = 2" },
    Kind { what: "set", in_step: false, text: "set @ = 0..2" },
    Kind { what: "parameter", in_step: false, text: "param @ = 1" },
    Kind { what: "data parameter", in_step: false, text: "param @[I] from \"wear.csv\"" },
    Kind { what: "state", in_step: false, text: "state @ = 0" },
    Kind { what: "noise", in_step: false, text: "noise @ ~ normal(0, 1)" },
    Kind { what: "discrete action", in_step: false, text: "action @: choice { off, on }" },
    Kind { what: "continuous action", in_step: false, text: "action @: real >= 0" },
    Kind { what: "let", in_step: true, text: "let @ = 1" },
    Kind { what: "cost", in_step: true, text: "cost @ = 1" },
];

/// A model that gives the name `wear` twice, to `first` and then to `second`, and the byte
/// offsets of the two names. A declaration after a step statement goes below the step.
fn named_twice(first: &Kind, second: &Kind) -> (String, [usize; 2]) {
    let mut text = String::from("model pairs\nset I = 0..3\nstate x = 0\naction q: real >= 0\n");
    let mut at = [0; 2];
    let mut step_written = false;
    let write_step = |text: &mut String, at: &mut [usize; 2]| {
        text.push_str("step {\n  x' = x + q\n");
        for (k, kind) in [first, second].into_iter().enumerate() {
            if kind.in_step {
                text.push_str("  ");
                at[k] = text.len() + kind.text.find('@').unwrap_or(0);
                text.push_str(&kind.text.replace('@', "wear"));
                text.push('\n');
            }
        }
        if [first, second].iter().any(|k| k.what == "state") {
            text.push_str("  wear' = wear\n");
        }
        text.push_str("  cost base = x * x\n}\n");
    };
    for (k, kind) in [first, second].into_iter().enumerate() {
        if kind.in_step {
            if !step_written {
                write_step(&mut text, &mut at);
                step_written = true;
            }
        } else {
            at[k] = text.len() + kind.text.find('@').unwrap_or(0);
            text.push_str(&kind.text.replace('@', "wear"));
            text.push('\n');
        }
    }
    if !step_written {
        write_step(&mut text, &mut at);
    }
    text.push_str("horizon 5\n");
    (text, at)
}

/// Every two things a model can name (declarations, `let`s and costs, which all become named
/// values of the compiled model) cannot share a name: `check` says so at both names, and the
/// commands that compile the model refuse it the same way (exit code 1), never with an internal
/// error (exit code 3).
#[test]
fn every_two_kinds_of_name_collide_with_a_located_error() {
    let folder = std::env::temp_dir().join(format!("hmdp-name-pairs-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("scratch folder");
    std::fs::write(folder.join("wear.csv"), "1\n2\n3\n").expect("data file");
    let hmdpc = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).output().expect("hmdpc runs")
    };
    let mut failures = Vec::new();
    for first in KINDS {
        for second in KINDS {
            let (text, at) = named_twice(first, second);
            let pair = format!("{} then {}", first.what, second.what);
            let path = folder.join(format!("{}-{}.hmdp", first.what, second.what).replace(' ', "_"));
            std::fs::write(&path, &text).expect("model is written");
            let path = path.to_str().expect("scratch paths are UTF-8");

            let check = hmdpc(&["check", "--message-format", "json", path]);
            let json = String::from_utf8_lossy(&check.stdout);
            let located = json.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|d| {
                let offset = |v: &serde_json::Value| v["offset"].as_u64().map(|o| o as usize);
                let related: Vec<usize> = d["related"].as_array().into_iter().flatten().filter_map(offset).collect();
                d["code"] == "hmdp::duplicate"
                    && d["help"].is_string()
                    && at.iter().any(|&a| offset(&d) == Some(a))
                    && at.iter().all(|&a| offset(&d) == Some(a) || related.contains(&a))
            });
            if check.status.code() != Some(1) || !located {
                failures.push(format!("{pair}: `check` exits {:?} with\n{json}\nfor\n{text}", check.status.code()));
            }
            for command in [&["compile", path][..], &["simulate", "--scenarios", "2", path]] {
                let run = hmdpc(command);
                let stderr = String::from_utf8_lossy(&run.stderr);
                if run.status.code() != Some(1)
                    || !stderr.contains("hmdp::duplicate")
                    || stderr.contains("internal error")
                {
                    failures.push(format!("{pair}: `{}` exits {:?} with\n{stderr}", command[0], run.status.code()));
                }
            }
        }
    }
    std::fs::remove_dir_all(&folder).ok();
    assert!(
        failures.is_empty(),
        "{} problems in {} pairs:\n\n{}",
        failures.len(),
        KINDS.len().pow(2),
        failures.join("\n\n")
    );
}

/// A refused size is reported once: what only follows from it (the sets over it, the arrays over
/// those sets, the indices inferred from them) stays quiet.
#[test]
fn a_refused_size_is_the_only_error() {
    let path = common::root().join("models/inventory.hmdp");
    let source = std::fs::read_to_string(&path).expect("models/inventory.hmdp is readable");
    for items in [-1.0, -3.0, 2.5] {
        let options = hmdp::check::Options { overrides: vec![("items".to_string(), items)] };
        let outcome = hmdp::check::check_source(&source, &hmdp::check::NoFiles, &options);
        let codes: Vec<&str> = outcome.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["bad-size"], "--set items={items}");
    }
    // 0 items is a size (every set over it is empty), but the cost per item has no value, and
    // the shipped can-order policy's `max` over the items has none either.
    let options = hmdp::check::Options { overrides: vec![("items".to_string(), 0.0)] };
    let outcome = hmdp::check::check_source(&source, &hmdp::check::NoFiles, &options);
    let codes: Vec<&str> = outcome.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["report", "empty-set"], "--set items=0");
}

/// A parameter known only once its instance is drawn is checked then: an infinite or NaN value
/// is a located run-time error that names it, not a `null` in `instance` or NaN in `simulate`.
#[test]
fn a_drawn_parameter_that_is_not_finite_stops_the_instance() {
    let source = "model shop
param mu ~ uniform(0, 1)
param scale = log(mu - 2)
param fine = mu + 1
state stock = 0
action order: real >= 0
step {
  stock' = stock + order - 5
  cost holding = scale * stock^2 + fine
}
horizon 10
";
    let module = common::compile_text(source, &common::root(), &[]);
    let error = hmdp::sim::instance(&module, 0).expect_err("`scale` is NaN in every instance");
    assert!(error.message.contains("parameter `scale`"), "{}", error.message);
    assert!(error.message.contains("NaN"), "{}", error.message);
    assert_eq!(&source[error.span.start..error.span.end], "log(mu - 2)");

    let fine = source.replace("log(mu - 2)", "log(mu + 2)");
    let module = common::compile_text(&fine, &common::root(), &[]);
    let instance = hmdp::sim::instance(&module, 0).expect("every parameter is finite");
    assert!(instance.values.iter().flatten().all(|v| v.is_finite()));
}
