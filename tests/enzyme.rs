//! The Enzyme backend: every model's emitted crate builds, and its forward step and VJP agree
//! with the interpreter and with finite differences; the build cache is hit the second time and
//! survives concurrent builds; index faults are the interpreter's errors; the emitted code avoids
//! what rustc's autodiff gets silently wrong; a missing toolchain or component says how to get it.
//!
//! Builds are shared through one cache under the target folder, so only the first run of this
//! suite (or one after the emitter changes) pays for them: about 5 s per model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use hmdp::backend::enzyme::{self, Enzyme, Settings, Status};
use hmdp::backend::{self, Backend, Batch, Interp, Kernel, Pointers, RunError, rust};
use hmdp::ir::{BufferKind, Module, ValidModule};
use hmdp::sim::{self, compare};
use rayon::prelude::*;

/// The cache the tests share.
fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("enzyme-cache")
}

/// A new, empty folder under the target folder (each test uses its own name).
fn fresh_folder(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// The compiler's whole pipeline, as `hmdpc` runs it: the module and its source.
fn compile(path: &Path) -> (ValidModule, String) {
    let compiled = common::compiled_file(path, &[]);
    (compiled.module, compiled.source.text)
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).expect("name").to_string()
}

fn load<'m>(module: &'m ValidModule, path: &Path, source: &str, cache: &Path) -> Enzyme<'m> {
    let settings = Settings { toolchain: enzyme::pinned_toolchain(), cache: cache.to_path_buf() };
    let prepared = enzyme::prepare(module, &file_name(path), source, &settings)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    prepared.load().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every shipped model and every model written for gradient tests.
fn all_models() -> Vec<PathBuf> {
    let mut paths = common::models();
    for folder in ["tests/gradients", "tests/enzyme"] {
        for entry in std::fs::read_dir(common::root().join(folder)).expect("folder") {
            paths.push(entry.expect("entry").path());
        }
    }
    paths.retain(|p| p.extension().is_some_and(|x| x == "hmdp") && !p.ends_with("index_fault.hmdp"));
    paths.sort();
    paths
}

#[test]
fn every_model_agrees_with_the_interpreter_and_finite_differences() {
    let compiled: Vec<(PathBuf, ValidModule, String)> = all_models()
        .into_iter()
        .map(|path| {
            let (module, source) = compile(&path);
            (path, module, source)
        })
        .collect();
    let cache = shared_cache();
    // A pool of its own: builds block their threads for seconds, and the global pool is what the
    // other tests' kernels run on.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a thread pool");
    let problems: Vec<String> = pool.install(|| {
        compiled
            .par_iter()
            .flat_map(|(path, module, source)| {
                let started = Instant::now();
                let enzyme = load(module, path, source, &cache);
                let loaded = started.elapsed();
                let instance = sim::instance(module, 1).expect("instance");
                let interp = Interp::new(module);
                let table = compare::compare(module, &instance, &[&interp, &enzyme], 8, 1, 1e-6, 1e-12).expect("runs");
                eprintln!(
                    "{}: {} in {:.1} s; largest difference {:.3e}",
                    path.display(),
                    if enzyme.built() { "built" } else { "cached" },
                    loaded.as_secs_f64(),
                    table.max_error()
                );
                let mut problems = Vec::new();
                let name = path.display();
                // The emitted crate compiles without a warning (the build log stays in the cache).
                let log = enzyme.library().with_file_name("build.log");
                let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
                if log.contains("--> src/lib.rs") {
                    problems.push(format!("{name}: the emitted crate has warnings:\n{log}"));
                }
                for pair in &table.pairs {
                    let fd = pair.right == compare::FINITE_DIFFERENCES;
                    // The step is the same f64 arithmetic in the same order: bit for bit.
                    if let Some(forward) = &pair.forward
                        && forward.max_error != 0.0
                    {
                        problems
                            .push(format!("{name}: forward of {} and {}: {:?}", pair.left, pair.right, forward.worst));
                    }
                    let bound = if fd { 1e-6 } else { 1e-10 };
                    if pair.vjp.max_error > bound {
                        problems.push(format!(
                            "{name}: VJP of {} and {} differ by {:.3e} at {:?}",
                            pair.left, pair.right, pair.vjp.max_error, pair.vjp.worst
                        ));
                    }
                    if fd && pair.checked.is_none_or(|(checked, _)| checked == 0) {
                        problems.push(format!("{name}: no element could be checked against finite differences"));
                    }
                }
                problems
            })
            .collect()
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A backend that is wrong in one way, to show that the comparison notices.
struct Broken<'m> {
    module: &'m ValidModule,
    /// Adds to the first VJP output instead of overwriting it.
    accumulates: bool,
}

impl Backend for Broken<'_> {
    fn name(&self) -> &'static str {
        "broken"
    }

    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError> {
        let module = self.module;
        let state = module.buffers.iter().position(|b| b.kind == BufferKind::State).expect("a state");
        let adjoint = module.buffers.iter().position(|b| b.kind == BufferKind::Adjoint { of: state }).expect("adjoint");
        let len = module.len(adjoint);
        // SAFETY: as for the interpreter; scenario `b` of the adjoint buffer is within the batch.
        let slot = |b: usize| unsafe { &mut *pointers.bases[adjoint].add(b * len) };
        let before: Vec<f64> = (start..end).map(|b| *slot(b)).collect();
        // SAFETY: the caller's guarantee, passed on.
        unsafe { Interp::new(module).run_range(kernel, pointers, start, end) }?;
        if kernel == Kernel::Vjp {
            for (b, old) in (start..end).zip(before) {
                *slot(b) += if self.accumulates { old } else { 1e-3 };
            }
        }
        Ok(())
    }
}

#[test]
fn a_backend_that_disagrees_is_caught() {
    let (module, _) = compile(&common::root().join("models/switched_lqr.hmdp"));
    let instance = sim::instance(&module, 1).expect("instance");
    let interp = Interp::new(&module);
    for accumulates in [false, true] {
        let broken = Broken { module: &module, accumulates };
        let table = compare::compare(&module, &instance, &[&interp, &broken], 3, 1, 1e-6, 1e-12).expect("runs");
        let failures: Vec<(String, String)> =
            table.failures().iter().map(|p| (p.left.clone(), p.right.clone())).collect();
        assert!(failures.contains(&("interp".into(), "broken".into())), "accumulates {accumulates}: {failures:?}");
        assert!(failures.contains(&("broken".into(), compare::FINITE_DIFFERENCES.into())), "{failures:?}");
        assert!(!failures.contains(&("interp".into(), compare::FINITE_DIFFERENCES.into())), "{failures:?}");
    }
}

#[test]
fn the_cache_is_hit_the_second_time_and_concurrent_builds_share_it() {
    let cache = fresh_folder("enzyme-cache-hit");
    let path = common::root().join("tests/enzyme/ties.hmdp");
    let (module, source) = compile(&path);
    // A build killed long ago left its folder behind: it must not matter, and it is cleaned up.
    let stale = cache.join("enzyme").join("tmp-killed-1-1");
    std::fs::create_dir_all(stale.join("crate")).expect("stale folder");
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::open(&stale).and_then(|f| f.set_modified(long_ago)).expect("backdate");

    let started = Instant::now();
    let barrier = std::sync::Barrier::new(2);
    let built: Vec<bool> = std::thread::scope(|s| {
        let builds: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let enzyme = load(&module, &path, &source, &cache);
                    run_step_like_the_interpreter(&module, &enzyme);
                    enzyme.built()
                })
            })
            .collect();
        builds.into_iter().map(|b| b.join().expect("build thread")).collect()
    });
    let cold = started.elapsed();
    assert!(built.iter().any(|&b| b), "a fresh cache must build");

    let started = Instant::now();
    let warm = load(&module, &path, &source, &cache);
    let warm_time = started.elapsed();
    assert!(!warm.built(), "the second load must come from the cache");
    run_step_like_the_interpreter(&module, &warm);
    eprintln!("two concurrent cold builds: {:.1} s; warm load: {:.3} s", cold.as_secs_f64(), warm_time.as_secs_f64());
    assert!(warm_time.as_secs_f64() < 5.0, "a cache hit took {warm_time:?}");

    let names: Vec<String> = std::fs::read_dir(cache.join("enzyme"))
        .expect("cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one entry and nothing else (no tmp folders): {names:?}");
    assert!(names[0].starts_with("ties-"), "{names:?}");
}

/// Runs the step on a few scenarios with both backends and requires identical outputs.
fn run_step_like_the_interpreter(module: &ValidModule, enzyme: &Enzyme) {
    let instance = sim::instance(module, 0).expect("instance");
    let mut a = Batch::new(module, &instance, 3);
    for (id, b) in module.buffers.iter().enumerate() {
        if matches!(b.kind, BufferKind::State | BufferKind::Continuous) {
            for (k, v) in a.values[id].iter_mut().enumerate() {
                *v = (k as f64 * 0.37).sin();
            }
        }
    }
    let mut b = a.clone();
    backend::run(&Interp::new(module), Kernel::Step, &mut a).expect("interp");
    backend::run(enzyme, Kernel::Step, &mut b).expect("enzyme");
    assert_eq!(a.values, b.values);
}

#[test]
fn an_index_outside_its_set_is_the_interpreters_located_error() {
    let path = common::root().join("tests/enzyme/index_fault.hmdp");
    let (module, source) = compile(&path);
    let enzyme = load(&module, &path, &source, &shared_cache());
    let instance = sim::instance(&module, 0).expect("instance");
    for kernel in [Kernel::Step, Kernel::Vjp] {
        let batch = Batch::new(&module, &instance, 70);
        let expected = backend::run(&Interp::new(&module), kernel, &mut batch.clone()).expect_err("interp fails");
        let got = backend::run(&enzyme, kernel, &mut batch.clone()).expect_err("enzyme fails");
        assert_eq!(got, expected);
        assert!(got.message.contains("index 3 of `c` (dimension 1) is outside `I` = 0..3"), "{}", got.message);
        assert_eq!(&source[got.span.start..got.span.end], "c[i + 1]");
    }
}

/// The functions of an emitted crate that Enzyme differentiates: `step` and what it calls.
fn active_path(lib: &str) -> String {
    let mut text = function(lib, "pub fn step(").expect("a step function");
    for helper in ["max", "min", "abs", "sigmoid", "softplus", "at"] {
        if text.contains(&format!("{helper}(")) {
            text.push_str(&function(lib, &format!("fn {helper}(")).expect("helper defined"));
        }
    }
    text
}

/// The text of a top-level function, from the line that starts with `head` to its closing brace.
fn function(lib: &str, head: &str) -> Option<String> {
    let start = lib.lines().position(|l| l.starts_with(head))?;
    let lines: Vec<&str> = lib.lines().skip(start).collect();
    let end = lines.iter().position(|l| *l == "}")?;
    Some(lines[..=end].join("\n") + "\n")
}

/// Each model's emitted crate: (model path, module, `src/lib.rs`, the differentiated code with
/// comments removed).
fn emitted_crates() -> Vec<(String, ValidModule, String, String)> {
    all_models()
        .into_iter()
        .map(|path| {
            let (module, source) = compile(&path);
            let krate = rust::emit(&module, &rust::Origin { file: "m.hmdp", source: &source, toolchain: "t" });
            let cargo = krate.file("Cargo.toml").expect("Cargo.toml");
            assert!(!cargo.contains("[dependencies]"), "{}: the crate must have no dependencies", path.display());
            let lib = krate.file("src/lib.rs").expect("lib.rs").to_string();
            let active = active_path(&lib);
            let code: Vec<&str> = active.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
            (path.display().to_string(), module, lib, code.join("\n"))
        })
        .collect()
}

fn words(code: &str) -> Vec<&str> {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect()
}

// rust-notes §0.3 and §2.4 (t8): a function pointer passed as Const gives a silently wrong
// derivative, as Duplicated a run-time abort; `dyn` is unsupported, and closures calling
// differentiated code fail (#143516).
#[test]
fn no_function_pointers_dyn_or_closures_on_the_differentiated_path() {
    for (name, _, _, code) in emitted_crates() {
        assert!(!code.contains("fn("), "{name}: a function pointer type:\n{code}");
        for banned in ["dyn", "impl", "Fn", "FnMut", "FnOnce", "Box", "move", "extern", "unsafe"] {
            assert!(!words(&code).contains(&banned), "{name}: `{banned}` on the differentiated path:\n{code}");
        }
        // A closure is `|args|`; `||` is the only use of `|` allowed.
        assert!(!code.replace("||", "").contains('|'), "{name}: a closure on the differentiated path:\n{code}");
    }
}

// rust-notes §2.4 (t3, t4): pushing into a Vec of active values, or allocating active data
// inside a struct with integer fields, fails to compile or aborts rustc.
#[test]
fn no_allocation_on_the_differentiated_path() {
    for (name, _, _, code) in emitted_crates() {
        for banned in ["Vec", "vec", "push", "Box", "String", "with_capacity", "collect"] {
            assert!(!words(&code).contains(&banned), "{name}: `{banned}` on the differentiated path:\n{code}");
        }
    }
}

// rust-notes §2.4 (t6): `lgamma` has no derivative rule (Enzyme UNREACHABLE, a compiler abort).
// Every call on the differentiated path is std math that Enzyme has a rule for, or the crate's
// own helpers; not `f64::max`, `min` or `abs`, whose Enzyme rules break hmdp's conventions at
// ties and at 0 (`tests/enzyme/ties.hmdp` checks the helpers' derivatives there).
#[test]
fn only_math_with_enzyme_rules_on_the_differentiated_path() {
    const METHODS: [&str; 14] = [
        "exp",
        "ln",
        "sqrt",
        "tanh",
        "sin",
        "cos",
        "floor",
        "ceil",
        "round",
        "powf",
        "ln_1p",
        "is_nan",
        "fract",
        "is_finite",
    ];
    const FUNCTIONS: [&str; 8] = ["step", "max", "min", "abs", "sigmoid", "softplus", "at", "f64::from"];
    for (name, _, _, code) in emitted_crates() {
        assert!(!words(&code).iter().any(|w| w.contains("gamma")), "{name}: a gamma function:\n{code}");
        for (k, _) in code.match_indices('(') {
            let before = &code[..k];
            let callee: String =
                before.chars().rev().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let callee: String = callee.chars().rev().collect();
            if callee.is_empty() {
                continue;
            }
            let is_method = before[..before.len() - callee.len()].ends_with('.');
            let allowed =
                if is_method { METHODS.contains(&callee.as_str()) } else { FUNCTIONS.contains(&callee.as_str()) };
            assert!(allowed, "{name}: call of `{callee}` on the differentiated path:\n{code}");
        }
    }
}

// rust-notes §2.5 rule 1: integer metadata is Const; and only what the derivative flows through
// is Duplicated.
#[test]
fn integer_data_and_constants_are_const_in_the_autodiff_attribute() {
    for (name, module, lib, _) in emitted_crates() {
        check_activities(&module, &lib, &name);
    }
}

/// The activity of each argument of `step`: Duplicated exactly for what the derivative flows
/// through; parameters, noise, discrete actions, masks and the integer fault flag Const. Where
/// bounds read the state, the same for `bounds` and `regimes`: Duplicated exactly for the states
/// and the bounds and the (observed) lets that have an adjoint.
fn check_activities(module: &Module, lib: &str, name: &str) {
    let has_adjoint = |id: usize| module.buffers.iter().any(|a| a.kind == BufferKind::Adjoint { of: id });
    // A choice state (a state with labels) and its next state are Const, like discrete actions.
    let choice = |id: usize| match module.buffers[id].kind {
        BufferKind::Next { of } => !module.buffers[of].labels.is_empty(),
        _ => !module.buffers[id].labels.is_empty(),
    };
    let step_active = |kind: BufferKind, id: usize| {
        matches!(
            kind,
            BufferKind::State | BufferKind::Continuous | BufferKind::Let | BufferKind::Next { .. } | BufferKind::Cost
        ) && !choice(id)
    };
    let bounds_active = |kind: BufferKind, id: usize| {
        (kind == BufferKind::State && !choice(id))
            || (matches!(kind, BufferKind::Bound { .. } | BufferKind::PieceBound { .. } | BufferKind::Let)
                && has_adjoint(id))
    };
    type Active<'a> = &'a dyn Fn(BufferKind, usize) -> bool;
    let derived: [(&str, Active); 3] =
        [("step", &step_active), ("bounds", &bounds_active), ("regimes", &bounds_active)];
    for (function_name, active) in derived {
        let head = format!("pub fn {function_name}(");
        let Some(before) = lib.split(&head).next().filter(|_| lib.contains(&head)) else { continue };
        // The attribute right above the function, if it has one.
        let Some(attribute) = before
            .rsplit("#[autodiff_reverse(")
            .next()
            .filter(|rest| before.contains("#[autodiff_reverse(") && !rest.contains("\n}\n"))
            .and_then(|rest| rest.split(")]").next())
        else {
            assert_ne!(function_name, "step", "{name}: `step` is differentiated");
            continue;
        };
        let activities: Vec<&str> =
            attribute.lines().filter_map(|l| l.trim().split(',').next()).filter(|a| !a.is_empty()).collect();
        let function = function(lib, &head).expect("function");
        let params: Vec<&str> = function.lines().skip(1).take_while(|l| !l.starts_with(')')).collect();
        assert_eq!(activities.first().copied(), Some(format!("d_{function_name}").as_str()), "{name}");
        assert_eq!(activities.len() - 1, params.len(), "{name}: one activity per argument:\n{attribute}\n{function}");
        for (activity, param) in activities[1..].iter().zip(&params) {
            let original = param.split('`').nth(1);
            let is_active = original
                .and_then(|o| module.buffers.iter().position(|b| b.name == o))
                .is_some_and(|id| active(module.buffers[id].kind, id));
            let expected = if is_active { "Duplicated" } else { "Const" };
            assert_eq!(*activity, expected, "{name}: {function_name}: {param}");
            if param.contains("u32") {
                assert_eq!(*activity, "Const", "{name}: integer data must be Const: {param}");
            }
        }
    }
}

#[test]
fn the_emitted_crate_of_inventory_reads_as_expected() {
    let path = common::root().join("models/inventory.hmdp");
    let (module, source) = compile(&path);
    let toolchain = enzyme::pinned_toolchain();
    let krate = rust::emit(&module, &rust::Origin { file: "inventory.hmdp", source: &source, toolchain: &toolchain });
    let text: String = krate.files.iter().map(|(path, text)| format!("==> {path} <==\n{text}\n")).collect();
    insta::assert_snapshot!("crate_inventory", text);
}

fn hmdpc(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hmdpc"));
    command.args(args).current_dir(common::root());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("hmdpc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn gradcheck_all_and_enzyme_on_the_command_line() {
    let cache = shared_cache();
    let env = [(enzyme::CACHE_ENV, cache.as_path())];
    let out = hmdpc(&["gradcheck", "models/inventory.hmdp", "--backend", "all"], &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("backends interp, jit, enzyme and finite differences, 8 random points"), "{stdout}");
    for row in ["interp vs enzyme", "jit vs enzyme", "interp vs finite differences", "enzyme vs finite differences"] {
        assert!(stdout.contains(row), "{stdout}");
    }
    assert!(stdout.contains("ok: largest relative difference"), "{stdout}");

    let out = hmdpc(&["gradcheck", "models/switched_lqr.hmdp", "--backend", "enzyme", "--points", "3"], &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("backends interp, enzyme and finite differences, 3 random points"), "{stdout}");
    assert!(stdout.contains("interp vs enzyme"), "{stdout}");
}

#[test]
fn a_missing_toolchain_says_how_to_install_it() {
    let cache = fresh_folder("enzyme-no-toolchain");
    let out = hmdpc(
        &["gradcheck", "models/inventory.hmdp", "--backend", "enzyme"],
        &[(enzyme::CACHE_ENV, &cache), (enzyme::TOOLCHAIN_ENV, Path::new("nightly-1999-01-01"))],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "error: the Enzyme backend builds with the toolchain `nightly-1999-01-01`, which is not installed; run \
         `rustup toolchain install` in the hmdp repository (or `rustup toolchain install nightly-1999-01-01 \
         --component enzyme`)\n"
    );
    assert!(out.stdout.is_empty());
}

/// A toolchain folder whose `rustc` answers `--print sysroot`, and whose `cargo` always fails;
/// `with_enzyme` puts an Enzyme library in its sysroot.
#[cfg(unix)]
fn fake_toolchain(name: &str, with_enzyme: bool) -> PathBuf {
    let cargo = "#!/bin/sh\necho '   Compiling fake v0.1.0'\nfor i in 1 2 3 4 5 6 7 8 9; do echo 'note: noise'; done\n\
                 echo 'error[E0999]: the fake compiler fails' >&2\necho 'error: could not compile `fake`' >&2\nexit 101\n";
    fake_toolchain_with(name, with_enzyme, cargo)
}

/// A toolchain folder whose `rustc` answers `--print sysroot`, and whose `cargo` is `cargo`.
#[cfg(unix)]
fn fake_toolchain_with(name: &str, with_enzyme: bool, cargo: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = fresh_folder(name);
    let lib = root.join("lib/rustlib/x86_64-unknown-linux-gnu/lib");
    std::fs::create_dir_all(&lib).expect("sysroot");
    if with_enzyme {
        std::fs::write(lib.join("libEnzyme-23.so"), b"").expect("enzyme");
    }
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let rustc = format!(
        "#!/bin/sh\nif [ \"$1\" = \"--print\" ]; then echo '{}'; else echo 'rustc 0.0.0-fake'; fi\n",
        root.display()
    );
    for (file, script) in [("rustc", rustc.as_str()), ("cargo", cargo)] {
        std::fs::write(bin.join(file), script).expect("script");
        std::fs::set_permissions(bin.join(file), std::fs::Permissions::from_mode(0o755)).expect("executable");
    }
    root
}

#[test]
#[cfg(unix)]
fn a_toolchain_without_enzyme_says_how_to_add_it() {
    let toolchain = fake_toolchain("enzyme-fake-no-enzyme", false);
    let cache = fresh_folder("enzyme-no-component");
    let out = hmdpc(
        &["gradcheck", "models/inventory.hmdp", "--backend", "all"],
        &[(enzyme::CACHE_ENV, &cache), (enzyme::TOOLCHAIN_ENV, &toolchain)],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "error: the toolchain `{t}` has no `enzyme` component, which the Enzyme backend needs; run `rustup component \
         add enzyme --toolchain {t}`\n",
        t = toolchain.display()
    );
    assert_eq!(stderr, expected);
}

#[test]
#[cfg(unix)]
fn a_compiler_failure_is_one_line_and_the_path_of_its_log() {
    let toolchain = fake_toolchain("enzyme-fake-failing", true);
    let cache = fresh_folder("enzyme-failing");
    let out = hmdpc(
        &["gradcheck", "models/inventory.hmdp", "--backend", "enzyme"],
        &[(enzyme::CACHE_ENV, &cache), (enzyme::TOOLCHAIN_ENV, &toolchain)],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "a line saying it builds, then the error:\n{stderr}");
    assert!(lines[0].starts_with("building the Enzyme kernels of models/inventory.hmdp"), "{stderr}");
    let error = lines[1];
    assert!(
        error.starts_with(
            "error: the Rust compiler failed to build the Enzyme kernels (error[E0999]: the fake compiler fails); the \
             full log is "
        ),
        "{error}"
    );
    let log = PathBuf::from(error.rsplit(" is ").next().expect("path"));
    let logged = std::fs::read_to_string(&log).expect("the log exists");
    assert!(logged.contains("note: noise") && logged.contains("could not compile"), "{logged}");
    // No entry was stored: the next run builds again.
    let entries: Vec<String> = std::fs::read_dir(cache.join("enzyme"))
        .expect("cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.iter().all(|e| e.starts_with("failed-")), "{entries:?}");
}

#[test]
fn emit_rust_writes_a_crate_and_never_overwrites_other_files() {
    let dir = fresh_folder("emit-rust");
    let out_dir = dir.join("kernels");
    let target = out_dir.to_str().expect("utf-8");
    let out = hmdpc(&["compile", "models/inventory.hmdp", "--emit", "rust", "-o", target], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for file in ["Cargo.toml", "rust-toolchain.toml", ".cargo/config.toml", "src/lib.rs"] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let lib = std::fs::read_to_string(out_dir.join("src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("// inventory.hmdp:30: onhand'[i]  = post[i] + (if lead == 1"), "{lib}");
    // Writing again over its own crate is fine.
    let again = hmdpc(&["compile", "models/inventory.hmdp", "--emit", "rust", "-o", target], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));

    let foreign = dir.join("foreign");
    std::fs::create_dir_all(&foreign).expect("folder");
    std::fs::write(foreign.join("notes.txt"), "mine").expect("file");
    let refused =
        hmdpc(&["compile", "models/inventory.hmdp", "--emit", "rust", "-o", foreign.to_str().expect("utf-8")], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("is not empty and holds no crate written by hmdpc"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read_dir(&foreign).expect("folder").count(), 1, "nothing written");

    let missing = hmdpc(&["compile", "models/inventory.hmdp", "--emit", "rust"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(text(&missing.stderr), "error: --emit rust writes a crate: give its folder with -o DIR\n");
}

#[test]
fn simulate_gives_the_same_figures_on_every_backend() {
    let cache = shared_cache();
    let env = [(enzyme::CACHE_ENV, cache.as_path())];
    for model in ["models/bulk_discount.hmdp", "models/machine_modes.hmdp", "models/switched_lqr.hmdp"] {
        let run = |backend: &str| {
            let out = hmdpc(&["simulate", model, "--scenarios", "40", "--seed", "3", "--backend", backend], &env);
            assert_eq!(out.status.code(), Some(0), "{model} {backend}: {}", text(&out.stderr));
            text(&out.stdout)
        };
        let interp = run("interp");
        assert!(interp.contains("total"), "{interp}");
        assert_eq!(run("jit"), interp, "{model}");
        assert_eq!(run("enzyme"), interp, "{model}");
    }
}

/// Training on the Enzyme kernels follows the JIT's run exactly: same dev costs at every
/// evaluation, because both backends compute the same step and the same gradient.
#[test]
fn training_on_enzyme_matches_training_on_the_jit() {
    let cache = shared_cache();
    let env = [(enzyme::CACHE_ENV, cache.as_path())];
    let curve = |backend: &str| {
        let out = fresh_folder(&format!("train-{backend}"));
        let _ = std::fs::remove_dir_all(&out);
        let path = out.to_str().expect("utf-8").to_string();
        let args = [
            "train",
            "models/switched_lqr.hmdp",
            "--set",
            "n=3",
            "--backend",
            backend,
            "--batch",
            "32",
            "--scenarios",
            "64",
            "--hidden",
            "16,16",
            "--updates",
            "8",
            "--eval-every",
            "2",
            "--quiet",
            "--out",
            &path,
        ];
        let run = hmdpc(&args, &env);
        assert_eq!(run.status.code(), Some(0), "{backend}: {}", text(&run.stderr));
        let text = std::fs::read_to_string(out.join("curve.csv")).expect("curve");
        // Every column but the wall time.
        text.lines()
            .map(|l| l.split(',').enumerate().filter(|(k, _)| *k != 1).map(|(_, c)| c).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    let jit = curve("jit");
    // The header, update 0, then every second update.
    assert_eq!(jit.len(), 1 + 1 + 4, "{jit:?}");
    assert_eq!(curve("enzyme"), jit);
}

/// `ties.hmdp` with its `top` cost 140 higher: the same buffers, so the library of either runs
/// on the other's batches, and only the cache's integrity record tells them apart.
fn shifted_ties() -> (PathBuf, ValidModule, String) {
    let source = std::fs::read_to_string(common::root().join("tests/enzyme/ties.hmdp")).expect("model");
    let source = source.replace("cost top = ", "cost top = 140 + ");
    let folder = fresh_folder("enzyme-shifted-model");
    let path = folder.join("shifted.hmdp");
    std::fs::write(&path, &source).expect("model");
    let (module, source) = compile(&path);
    (path, module, source)
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("folder");
    for entry in std::fs::read_dir(from).expect("folder") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            copy_folder(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// Replaces a file by a new one (a new inode: a library still mapped somewhere is not touched).
fn replace_file(path: &Path, bytes: &[u8]) {
    std::fs::remove_file(path).expect("remove");
    std::fs::write(path, bytes).expect("write");
}

/// Issue 18: a truncated library crashed hmdpc with SIGBUS, and another model's library with the
/// same buffers computed that model's costs. Only an entry whose integrity record names this
/// model, this crate and these library bytes is loaded; anything else is rebuilt. Two builds.
#[test]
fn only_a_library_built_for_this_model_is_loaded() {
    let ties = common::root().join("tests/enzyme/ties.hmdp");
    let (ties_module, ties_source) = compile(&ties);
    let foreign_entry = {
        let foreign = load(&ties_module, &ties, &ties_source, &shared_cache());
        foreign.library().parent().expect("entry").to_path_buf()
    };
    let foreign_library = std::fs::read(foreign_entry.join("kernels.so")).expect("library");

    let (path, module, source) = shifted_ties();
    let cache = fresh_folder("enzyme-integrity");
    let settings = Settings { toolchain: enzyme::pinned_toolchain(), cache: cache.clone() };
    let prepare = || enzyme::prepare(&module, &file_name(&path), &source, &settings).expect("prepares");

    // What a killed build left: its process is gone, so the next use of the cache removes it.
    let mut gone = Command::new("true").spawn().expect("a process");
    gone.wait().expect("it ends");
    let stale = cache.join("enzyme").join(format!("tmp-shifted-0-{}-1", gone.id()));
    std::fs::create_dir_all(stale.join("crate")).expect("stale folder");

    // Another model's whole entry under this model's key.
    let entry = prepare().entry();
    assert!(!stale.exists(), "the folder of a build whose process is gone is removed");
    copy_folder(&foreign_entry, &entry);
    assert_eq!(prepare().status(), Status::Rejected("it was built from another model or crate".into()));
    let enzyme = prepare().load().expect("rebuilds");
    assert!(enzyme.built());
    run_step_like_the_interpreter(&module, &enzyme);
    drop(enzyme);
    assert_eq!(prepare().status(), Status::Verified);
    let own_library = std::fs::read(entry.join("kernels.so")).expect("library");

    // Only the library swapped for the other model's, under this entry's own record.
    replace_file(&entry.join("kernels.so"), &foreign_library);
    let replaced = Status::Rejected("its library is not the one built for it (damaged or replaced)".into());
    assert_eq!(prepare().status(), replaced);

    // A truncated library is never opened: it is built again.
    replace_file(&entry.join("kernels.so"), &own_library[..own_library.len() / 2]);
    assert_eq!(prepare().status(), replaced);
    let enzyme = prepare().load().expect("rebuilds");
    assert!(enzyme.built());
    run_step_like_the_interpreter(&module, &enzyme);
}

/// Issue 18: with a cache folder others could write to, another user planted a library that
/// hmdpc then ran. Such a folder is refused before anything is built or loaded.
#[test]
#[cfg(unix)]
fn a_cache_folder_other_users_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let open = fresh_folder("enzyme-cache-open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let foreign = fresh_folder("enzyme-cache-foreign");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown (the tests run as root)");
    let cases = [
        (&open, "other users may write to it (mode 777)".to_string()),
        (&foreign, format!("it belongs to the user with id 65534, not to you (id {})", current_uid())),
    ];
    for (cache, reason) in cases {
        let out = hmdpc(&["gradcheck", "models/inventory.hmdp", "--backend", "enzyme"], &[(enzyme::CACHE_ENV, cache)]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(&format!("error: the Enzyme kernel cache {} is not private: {reason}", cache.display())),
            "{stderr}"
        );
        assert!(stderr.contains("set HMDP_CACHE to a folder of your own"), "{stderr}");
        assert_eq!(std::fs::read_dir(cache).expect("folder").count(), 0, "nothing written in {}", cache.display());
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let probe = fresh_folder("enzyme-uid-probe");
    std::fs::metadata(probe).expect("metadata").uid()
}

/// Whether a process has ended (a zombie has).
fn has_ended(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// Issue 18: stopping hmdpc during a build left cargo and rustc running, and their `tmp-*`
/// folder behind. The build's process group ends with hmdpc, and the next use of the cache
/// removes the folder.
#[test]
#[cfg(unix)]
fn stopping_hmdpc_mid_build_ends_the_build_and_the_next_run_cleans_up() {
    use std::os::unix::process::ExitStatusExt;
    // A "compiler" that starts a child of its own and waits, writing both ids beside its target.
    let cargo = "#!/bin/sh\nprev=''\nfor a in \"$@\"; do [ \"$prev\" = --target-dir ] && t=\"$a\"; prev=\"$a\"; done\n\
                 sleep 300 &\necho \"$$ $!\" > \"$(dirname \"$t\")/pids.tmp\"\nmv \"$(dirname \"$t\")/pids.tmp\" \"$(dirname \"$t\")/pids\"\nwait\n";
    let toolchain = fake_toolchain_with("enzyme-fake-slow", true, cargo);
    let cache = fresh_folder("enzyme-stopped");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hmdpc"))
        .args(["gradcheck", "models/inventory.hmdp", "--backend", "enzyme"])
        .current_dir(common::root())
        .env(enzyme::CACHE_ENV, &cache)
        .env(enzyme::TOOLCHAIN_ENV, &toolchain)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hmdpc starts");
    let started = Instant::now();
    let pids = loop {
        let found = std::fs::read_dir(cache.join("enzyme")).ok().and_then(|entries| {
            entries.filter_map(Result::ok).find_map(|e| std::fs::read_to_string(e.path().join("pids")).ok())
        });
        if let Some(pids) = found {
            break pids;
        }
        assert!(started.elapsed().as_secs() < 60, "the build never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let status = child.wait().expect("hmdpc ends");
    assert_eq!(status.signal(), Some(15), "hmdpc ends as SIGTERM ends a program: {status:?}");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let ended = Instant::now();
    while !pids.iter().all(|p| has_ended(p)) {
        assert!(ended.elapsed().as_secs() < 10, "the build outlived hmdpc: {pids:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left: Vec<String> = std::fs::read_dir(cache.join("enzyme"))
        .expect("cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|e| e.starts_with("tmp-")), "only the killed build's folder may be left: {left:?}");
    // Whether its folder is left is a race: the thread waiting on the build sees it killed and
    // removes the folder, unless the raised SIGTERM ends hmdpc first. A folder as a killed build
    // leaves it (named after hmdpc's process, which has ended) makes the clean-up below certain.
    if left.is_empty() {
        let killed = cache.join("enzyme").join(format!("tmp-killed-{}-0", child.id()));
        std::fs::create_dir_all(killed.join("crate")).expect("a killed build's folder");
    }

    // The next run (here with a compiler that fails at once) removes the killed build's folder.
    let failing = fake_toolchain("enzyme-fake-failing-after-stop", true);
    let out = hmdpc(
        &["gradcheck", "models/inventory.hmdp", "--backend", "enzyme"],
        &[(enzyme::CACHE_ENV, &cache), (enzyme::TOOLCHAIN_ENV, &failing)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let left: Vec<String> = std::fs::read_dir(cache.join("enzyme"))
        .expect("cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|e| e.starts_with("failed-")), "{left:?}");
}

/// The trainer's pathwise gradient on the Enzyme backend, through bounds that read the state
/// (`d_bounds`, which Enzyme derives from the emitted `bounds`), agrees with finite differences
/// of a whole rollout's cost, as on the interpreter and the JIT (`train.rs`).
#[test]
fn the_pathwise_gradient_through_state_bounds_matches_finite_differences() {
    let path = common::root().join("models/energy_storage.hmdp");
    let (module, source) = compile(&path);
    let enzyme = load(&module, &path, &source, &shared_cache());
    let lib = rust::emit(&module, &rust::Origin { file: "energy_storage.hmdp", source: &source, toolchain: "nightly" });
    let lib = lib.file("src/lib.rs").expect("lib.rs");
    assert!(lib.contains("d_bounds,") && lib.contains("d_bounds("), "Enzyme derives the bounds' derivative");
    let (worst, largest) = common::pathwise_against_finite_differences(&module, &enzyme, 3);
    assert!(largest > 0.1, "the gradient is trivial ({largest})");
    assert!(worst < 2e-2, "largest relative error {worst}");
}

/// A state that holds a choice is Const for Enzyme, like the discrete actions it is given, and
/// the trainer's pathwise gradient on the Enzyme backend, whose policy observes the choice states,
/// agrees with finite differences of a whole rollout's cost (issue 19, item 10).
#[test]
fn the_pathwise_gradient_with_a_choice_state_matches_finite_differences() {
    let path = common::root().join("tests/gradients/switching_cost.hmdp");
    let (module, source) = compile(&path);
    let lib = rust::emit(&module, &rust::Origin { file: "switching_cost.hmdp", source: &source, toolchain: "nightly" });
    let lib = lib.file("src/lib.rs").expect("lib.rs");
    check_activities(&module, lib, "switching_cost.hmdp");
    let enzyme = load(&module, &path, &source, &shared_cache());
    let (worst, largest) = common::pathwise_against_finite_differences(&module, &enzyme, 3);
    assert!(largest > 0.1, "the gradient is trivial ({largest})");
    assert!(worst < 2e-2, "largest relative error {worst}");
}

/// The same through a bound on the sum of an action that reads the state (issue 19, item 4) and
/// through a `let` the policy observes (item 13): Enzyme derives both from the emitted `bounds`.
#[test]
fn the_pathwise_gradient_through_a_joint_bound_and_an_observed_let_matches_finite_differences() {
    for model in ["tests/gradients/joint_bound.hmdp", "tests/gradients/observed_let.hmdp"] {
        let path = common::root().join(model);
        let (module, source) = compile(&path);
        let enzyme = load(&module, &path, &source, &shared_cache());
        let (worst, largest) = common::pathwise_against_finite_differences(&module, &enzyme, 3);
        assert!(largest > 0.1, "{model}: the gradient is trivial ({largest})");
        assert!(worst < 2e-2, "{model}: largest relative error {worst}");
    }
}
