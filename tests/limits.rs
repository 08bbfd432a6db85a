//! The front end's documented limits, as `hmdpc` applies them (docs/language.md, "Limits"):
//! integer literals up to 2^53, expressions nested up to 200 levels (a chain of one operator is
//! one level) and at most 2,000 operations in a chain, names up to 255 characters. Inside the
//! limits every stage works; past them `check` gives a located diagnostic that says which limit,
//! and no later stage ever sees the input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn hmdpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(args).current_dir(common::root()).output().expect("hmdpc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A model whose cost is `cost`, written under the target folder.
fn model(name: &str, cost: &str) -> PathBuf {
    model_named(name, "c", cost)
}

fn model_named(name: &str, cost_name: &str, cost: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("limits");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    let source = format!(
        "model m\nstate x = 1\naction u: real in [0, 1]\nstep {{\n  x' = x + u\n  cost {cost_name} = {cost}\n}}\nhorizon 3\n"
    );
    std::fs::write(&path, source).expect("model");
    path
}

/// `hmdpc check` on a model: (exit code, stderr).
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = hmdpc(&["check", path.to_str().expect("utf-8")]);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn integer_literals_are_at_most_2_to_the_53() {
    assert_eq!(check(&model("int_max.hmdp", "9007199254740992 * 0 + x")).0, Some(0));
    // As a float, 2^53 + 1 rounds to 2^53: it used to be accepted and silently changed.
    let (code, stderr) = check(&model("int_over.hmdp", "9007199254740993 * 0 + x"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the number `9007199254740993` is too large"), "{stderr}");
    assert!(stderr.contains("int_over.hmdp:6:12]"), "{stderr}");
    // Reals are not exact anyway, and stay allowed.
    assert_eq!(check(&model("real_big.hmdp", "9007199254740993.0 * 0 + x")).0, Some(0));
}

#[test]
fn nesting_is_counted_in_levels_a_reader_sees() {
    // 150 nested parentheses are within the 200 levels (80 used to be refused).
    let nested = format!("{}x{}", "(".repeat(150), ")".repeat(150));
    let (code, stderr) = check(&model("parens_150.hmdp", &nested));
    assert_eq!(code, Some(0), "{stderr}");

    let nested = format!("{}x{}", "(".repeat(300), ")".repeat(300));
    let (code, stderr) = check(&model("parens_300.hmdp", &nested));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("expression nested more than 200 levels deep"), "{stderr}");

    // A flat sum is one level, however many terms it has (201 used to be "nested too deeply").
    for terms in [201, 2_001] {
        let sum = vec!["x"; terms].join(" + ");
        let (code, stderr) = check(&model(&format!("sum_{terms}.hmdp"), &sum));
        assert_eq!(code, Some(0), "{terms} terms: {stderr}");
    }
}

/// A chain of 2,000 operations is allowed and goes through every stage; one more is refused
/// with a message about its length, not its nesting.
#[test]
fn chains_are_at_most_2_000_operations_and_every_stage_takes_the_longest() {
    // 1,999 additions and a product on the way down to `x` or `u`: 2,000 operations.
    let longest = model("chain_2000.hmdp", &vec!["x * u"; 2_000].join(" + "));
    let longest = longest.to_str().expect("utf-8");
    for args in [
        &["check", longest][..],
        &["compile", longest],
        &["simulate", longest, "--scenarios", "4"],
        &["gradcheck", longest, "--points", "1"],
    ] {
        let out = hmdpc(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
    }

    let (code, stderr) = check(&model("chain_2001.hmdp", &vec!["x"; 2_002].join(" + ")));
    // (2,001 additions.)
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("expression with more than 2000 operations in a chain"), "{stderr}");
    assert!(!stderr.contains("nested"), "{stderr}");
}

/// Names longer than 65,535 characters used to pass `check` and crash `compile`, `simulate`,
/// `eval` and `--emit rust` (a column width past what `format!` takes). Names are at most 255
/// characters; a 255-character name goes through every report.
#[test]
fn names_are_at_most_255_characters() {
    let longest = "c".repeat(255);
    let path = model_named("name_255.hmdp", &longest, "x^2 + u");
    let path = path.to_str().expect("utf-8");
    let crate_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("limits").join("name_255_crate");
    let _ = std::fs::remove_dir_all(&crate_dir);
    for args in [
        &["check", path][..],
        &["compile", path],
        &["simulate", path, "--scenarios", "4"],
        &["compile", path, "--emit", "rust", "-o", crate_dir.to_str().expect("utf-8")],
    ] {
        let out = hmdpc(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
    }

    for length in [256, 70_000] {
        let path = model_named(&format!("name_{length}.hmdp"), &"c".repeat(length), "x^2 + u");
        for command in ["check", "compile", "simulate"] {
            let out = hmdpc(&[command, path.to_str().expect("utf-8")]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {length}: {stderr}");
            assert!(stderr.contains(&format!("is {length} characters long, more than 255")), "{stderr}");
            assert!(stderr.contains(&format!("name_{length}.hmdp:6:8]")), "{stderr}");
        }
    }
}
