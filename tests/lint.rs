//! Formatting and lints are part of the test suite, so `cargo test` is the single gate.
//! Clippy runs in its own target folder so it never waits on the build lock of this test run.

use std::process::Command;

fn cargo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("cargo runs")
}

#[test]
fn code_is_formatted() {
    let out = cargo(&["fmt", "--check"]);
    assert!(out.status.success(), "run `cargo fmt`:\n{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn clippy_is_clean() {
    let target = concat!(env!("CARGO_TARGET_TMPDIR"), "/clippy");
    let out = cargo(&["clippy", "--all-targets", "--locked", "--target-dir", target, "--", "-D", "warnings"]);
    assert!(out.status.success(), "clippy found problems:\n{}", String::from_utf8_lossy(&out.stderr));
}
