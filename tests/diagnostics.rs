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
    for file in ["src/syntax/parse.rs", "src/syntax/mod.rs", "src/check/expr.rs", "src/check/mod.rs"] {
        let text = std::fs::read_to_string(root.join(file)).expect("source is readable");
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
