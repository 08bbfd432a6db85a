//! Thousands of mutated models — tokens deleted, duplicated, swapped or replaced, files
//! truncated, random bytes spliced in — fed to the front end. None may panic, and every
//! rejected input must come with an error that points into the source. A sample of the mutants
//! that pass `check` then goes through every command that runs a model.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use hmdp::check::Options;

/// SplitMix64: a seeded, dependency-free generator, so every run tests the same mutants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Splits text into tokens that keep every byte: words, runs of spaces, single symbols.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last_kind = 0u8;
    for c in text.chars() {
        let kind = if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            1
        } else if c.is_whitespace() {
            2
        } else {
            3
        };
        match out.last_mut() {
            Some(token) if kind == last_kind && kind != 3 => token.push(c),
            _ => out.push(c.to_string()),
        }
        last_kind = kind;
    }
    out
}

fn mutate(source: &str, rng: &mut Rng) -> Vec<u8> {
    let mut toks = tokens(source);
    let n = toks.len();
    if n == 0 {
        return (0..rng.below(64)).map(|_| rng.next() as u8).collect();
    }
    match rng.below(8) {
        0 => {
            let i = rng.below(n);
            toks.remove(i);
        }
        1 => {
            let i = rng.below(n);
            let t = toks[i].clone();
            toks.insert(i, t);
        }
        2 if n > 1 => {
            let i = rng.below(n - 1);
            toks.swap(i, i + 1);
        }
        3 => {
            let (i, j) = (rng.below(n), rng.below(n));
            toks[i] = toks[j].clone();
        }
        4 => {
            let mut bytes = source.as_bytes().to_vec();
            bytes.truncate(rng.below(bytes.len() + 1));
            return bytes;
        }
        5 => {
            let mut bytes = source.as_bytes().to_vec();
            let at = rng.below(bytes.len() + 1);
            let junk: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            bytes.splice(at..at, junk);
            return bytes;
        }
        6 => {
            // Several token edits at once.
            for _ in 0..3 {
                let len = toks.len();
                let (i, j) = (rng.below(len), rng.below(len));
                toks.swap(i, j);
            }
        }
        _ => {
            let inserts = [
                "'",
                "[",
                "]",
                "(",
                ")",
                "{",
                "}",
                "~",
                "=",
                "..",
                "0",
                "-1",
                "1e400",
                "when",
                "sum(i in I)",
                "in",
                ",",
            ];
            let i = rng.below(n + 1);
            toks.insert(i, inserts[rng.below(inserts.len())].to_string());
        }
    }
    toks.concat().into_bytes()
}

/// The models mutated: the shipped ones and the diagnostics examples, with their text.
fn seeds(dirs: &[&str]) -> Vec<(PathBuf, String)> {
    let root = common::root();
    let mut seeds: Vec<(PathBuf, String)> = Vec::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "hmdp"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).expect("readable");
            seeds.push((p, text));
        }
    }
    seeds
}

#[test]
fn mutated_models_never_panic_and_rejections_are_located() {
    let seeds = seeds(&["models", "tests/diagnostics"]);
    let per_seed = 20_000 / seeds.len() + 1;
    let mut rng = Rng(20261123);
    let (mut accepted, mut rejected) = (0, 0);
    for (path, source) in &seeds {
        let folder = path.parent().expect("folder").to_path_buf();
        for _ in 0..per_seed {
            let bytes = mutate(source, &mut rng);
            let shown = String::from_utf8_lossy(&bytes).into_owned();
            let result = catch_unwind(AssertUnwindSafe(|| {
                let (text, diagnostics, ok) = common::check_bytes(bytes.clone(), &folder, &Options::default());
                let rendered = hmdp::diagnostics::render(&diagnostics, "mutant.hmdp", &text, false);
                for d in &diagnostics {
                    let _ = hmdp::diagnostics::to_json(d, "mutant.hmdp", &text);
                }
                (text, diagnostics, ok, rendered)
            }));
            let Ok((text, diagnostics, ok, rendered)) = result else {
                panic!("the front end panicked on a mutant of {}:\n{shown}", path.display());
            };
            let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
            if ok {
                accepted += 1;
                assert!(errors.is_empty(), "accepted with errors:\n{shown}\n{rendered}");
            } else {
                rejected += 1;
                assert!(!errors.is_empty(), "rejected without an error:\n{shown}");
            }
            for d in &diagnostics {
                for label in std::iter::once(&d.primary).chain(&d.secondary) {
                    assert!(
                        label.span.start <= label.span.end && label.span.end <= text.len().max(1),
                        "span {:?} outside the source ({} bytes) for `{}`:\n{shown}",
                        label.span,
                        text.len(),
                        d.message
                    );
                }
                assert!(!d.message.is_empty() && !d.primary.text.is_empty(), "empty message:\n{shown}");
                let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace() && *c != '│').collect::<String>();
                assert!(squash(&rendered).contains(&squash(&d.message)), "a diagnostic was not rendered:\n{rendered}");
            }
        }
    }
    assert!(accepted + rejected >= 20_000);
    // Mutants that still check are fine (a swapped `+` and `-`), but most must be rejected.
    assert!(rejected > accepted, "{rejected} rejected vs {accepted} accepted: are mutations effective?");
}

/// Mutants of the shipped models that pass `check`, a few of each, go through `compile`,
/// `simulate`, `gradcheck` and a two-update `train` as a user runs them: each ends with exit
/// code 0, 1 (a run-time error of the model, a gradient check that fails at a kink, a NaN in
/// training) or 2, never a panic (3) or a signal.
#[test]
fn mutants_that_check_run_through_every_command_without_a_panic() {
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mutants");
    let _ = std::fs::remove_dir_all(&scratch);
    // The shipped models' data files, where the mutants' `from "data/..."` finds them.
    copy_folder(&common::root().join("models/data"), &scratch.join("data"));
    let mut rng = Rng(20261206);
    let mut tried = 0;
    for (path, source) in seeds(&["models"]) {
        let folder = path.parent().expect("folder").to_path_buf();
        let mut taken = 0;
        for _ in 0..400 {
            if taken == 5 {
                break;
            }
            let bytes = mutate(source.as_str(), &mut rng);
            if bytes == source.as_bytes() || !common::check_bytes(bytes.clone(), &folder, &Options::default()).2 {
                continue;
            }
            taken += 1;
            tried += 1;
            let mutant = scratch.join(format!("mutant-{tried}.hmdp"));
            std::fs::write(&mutant, &bytes).expect("mutant");
            let shown = String::from_utf8_lossy(&bytes).into_owned();
            let (file, out) = (mutant.to_str().expect("utf-8"), scratch.join(format!("run-{tried}")));
            let runs: [Vec<&str>; 4] = [
                vec!["compile", file],
                vec!["simulate", file, "--scenarios", "3"],
                vec!["gradcheck", file, "--points", "2"],
                vec![
                    "train",
                    file,
                    "--updates",
                    "2",
                    "--hidden",
                    "4",
                    "--scenarios",
                    "4",
                    "--batch",
                    "2",
                    "--quiet",
                    "--out",
                    out.to_str().expect("utf-8"),
                ],
            ];
            for args in runs {
                let run = Command::new(env!("CARGO_BIN_EXE_hmdpc"))
                    .args(&args)
                    .current_dir(common::root())
                    .output()
                    .expect("hmdpc runs");
                let code = run.status.code();
                assert!(
                    matches!(code, Some(0..=2)),
                    "`hmdpc {}` ended with {code:?} on a mutant of {}:\n{shown}\n{}",
                    args.join(" "),
                    path.display(),
                    String::from_utf8_lossy(&run.stderr)
                );
            }
        }
    }
    assert!(tried >= 25, "only {tried} mutants passed check: are the mutations too strong?");
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("folder");
    for entry in std::fs::read_dir(from).expect("folder") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}
