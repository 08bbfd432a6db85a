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

/// `hmdpc` with `HMDP_MEMORY` set to 8 GiB, so the refusals do not depend on the machine.
fn hmdpc_in_8_gib(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmdpc"))
        .args(args)
        .current_dir(common::root())
        .env("HMDP_MEMORY", (8u64 << 30).to_string())
        .output()
        .expect("hmdpc runs")
}

/// A problem whose arrays cannot fit is refused before anything large is allocated: exit code
/// 1, the estimate against the memory, and the declaration that makes it large. Within the
/// memory the same commands run.
#[test]
fn commands_that_cannot_fit_in_memory_are_refused_at_the_declaration_that_makes_them_large() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("limits");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let huge = dir.join("huge.hmdp");
    std::fs::write(
        &huge,
        "model huge\nset N = 1..100\nstate x[N, N, N, N, N] = 0\naction u: real in [-1, 1]\nstep {\n  \
         x'[i, j, k, l, m] = x[i, j, k, l, m] + u\n  cost c = sum(i in N) x[i, i, i, i, i]\n}\nhorizon 3\n",
    )
    .expect("model");
    let long = dir.join("long.hmdp");
    std::fs::write(
        &long,
        "model long\nstate x = 0\nnoise d ~ normal(0, 1)\naction u: real in [-1, 1]\nstep {\n  x' = x + u + d\n  \
         cost c = x^2\n}\nhorizon 1000000000\n",
    )
    .expect("model");
    let (huge, long) = (huge.to_str().expect("utf-8"), long.to_str().expect("utf-8"));
    let cases: [(&[&str], &str, &str); 7] = [
        (&["simulate", huge], "simulate needs at least", "`x` makes it this large"),
        (&["gradcheck", huge], "gradcheck needs at least", "`x` makes it this large"),
        (&["instance", huge], "instance needs at least", "`x` makes it this large"),
        (&["simulate", "models/inventory.hmdp", "--set", "items=100000000"], "simulate needs", "makes it this large"),
        (&["bench", "models/inventory.hmdp", "--batch", "1000000", "--set", "items=1000"], "bench needs", "--set"),
        (
            &["train", "models/inventory.hmdp", "--hidden", "65536,65536", "--out", "/nonexistent/x"],
            "train needs",
            "--hidden",
        ),
        (&["train", long, "--out", "/nonexistent/x"], "train needs", "`d` makes it this large"),
    ];
    for (args, message, place) in cases {
        let out = hmdpc_in_8_gib(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("hmdp::too-large") && stderr.contains(message), "{args:?}: {stderr}");
        assert!(stderr.contains("more than this machine's 8.0 GiB") && stderr.contains(place), "{args:?}: {stderr}");
    }
    let fits = hmdpc_in_8_gib(&["simulate", "models/inventory.hmdp", "--scenarios", "8"]);
    assert_eq!(fits.status.code(), Some(0), "{}", text(&fits.stderr));
}

/// A model file is read to at most 16 MiB: `check /dev/zero` ends at once with a usage error.
#[test]
fn a_model_file_is_read_to_at_most_16_mib() {
    let out = hmdpc(&["check", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /dev/zero: it is larger than 16.0 MiB"), "{}", text(&out.stderr));
}

/// A `choice[SET]`'s labels are the set's elements: the checker keeps the set and never writes
/// them out, so a choice over 10^9 elements (the largest size) checks at once. Writing them out,
/// as it once did, takes tens of gigabytes and minutes (65 s and 5.5 GB at 10^8).
#[test]
fn a_choice_over_a_billion_elements_is_checked_without_writing_its_labels() {
    let source = "model m
set M = 0..1000000000
state x = 0
action a: choice[M]
step {
  x' = x + a
  cost c = if a == 3 then x^2 else match a { 0 => 1, 999999999 => 2, _ => x }
}
horizon 3
";
    let outcome = hmdp::check::check_source(source, &hmdp::check::NoFiles, &hmdp::check::Options::default());
    let model = outcome.model.expect("the model checks");
    let a = model.actions.first().expect("one action");
    assert!(matches!(&a.ty, hmdp::check::ActionType::Discrete { labels, over_set: Some(_) } if labels.is_empty()));
    assert_eq!(model.label_count(a), 1_000_000_000);
    assert_eq!(model.label_position(a, "999999999"), Some(999_999_999));
    assert_eq!(model.label_position(a, "1000000000"), None);
    assert!(hmdp::check::summary(&model).contains("1000000000 choices"));

    // Messages about such a choice list a few of its labels and say how many there are.
    for (wrong, code, tail) in [
        ("match a { 0 => 1, 7 => 2 }", "non-exhaustive", "… and 999999978 more"),
        ("match a { 0 => 1, 1000000000 => 2, _ => x }", "unknown-label", "… (1000000000 in all)"),
    ] {
        let source = source.replace("match a { 0 => 1, 999999999 => 2, _ => x }", wrong);
        let outcome = hmdp::check::check_source(&source, &hmdp::check::NoFiles, &hmdp::check::Options::default());
        let rendered = hmdp::diagnostics::render(&outcome.diagnostics, "model.hmdp", &source, false);
        assert_eq!(outcome.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(), [code], "{rendered}");
        assert!(rendered.contains(tail) && rendered.len() < 2_000, "{rendered}");
    }
}

/// A chain of 64,000 `let`s compiles (check, lowering, validation) and its smoothness analysis,
/// which `hmdpc compile` reports, follows the cost through every one of them, on the stack
/// `hmdpc` gives its command (src/main.rs): the passes recurse through lets. How the time grows
/// with the chain (near-linear, where a quadratic pass once crept in) is a timing, measured by
/// `cargo bench --bench compile_lets`, not here.
#[test]
fn a_chain_of_64000_lets_compiles_and_is_analysed() {
    let mut source = String::from("model m\nstate x = 0\naction a: real in [0, 1]\nstep {\n  let v0 = x + a\n");
    for i in 1..64_000 {
        source.push_str(&format!("  let v{i} = v{} + 1\n", i - 1));
    }
    source.push_str("  x' = v63999\n  cost c = max(v63999, 0)^2\n}\nhorizon 3\n");
    let analysis = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let compiled = common::compiled_text(&source, &common::root(), &[]);
            hmdp::passes::smoothness::analyze(&compiled.module)
        })
        .expect("a thread")
        .join()
        .expect("compiling does not panic");
    // The cost reads the state and the action through the whole chain: `max` of an active value
    // makes it kinked, which the walk finds only by following all 64,000 lets back to `x + a`.
    assert_eq!(analysis.costs.len(), 1);
    assert_eq!(analysis.costs[0].class, hmdp::passes::smoothness::Class::Kink, "{:?}", analysis.costs[0]);
    assert_eq!(analysis.updates.len(), 1);
    assert_eq!(analysis.updates[0].class, hmdp::passes::smoothness::Class::Smooth);
}
