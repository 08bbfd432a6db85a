//! The data-table benchmark (issue 16): `simulate` on the JIT backend of a model whose parameter
//! is a 1000 × 500 table read from a data file, against the interpreter on the same scenarios.
//!
//! The JIT used to copy every parameter buffer into each scenario at every phase of every
//! period, so a large table made it some 50 times slower than the interpreter (35 s for 16
//! scenarios in the report); it now copies the parameters once per batch. This bench writes the
//! model and its 3 MB table (generated, not shipped) into a folder under the system's temporary
//! folder, times both backends (the median of a few runs each, after one unmeasured run),
//! prints the figures, and fails if the JIT is more than twice as slow per scenario as the
//! interpreter, so the slowdown cannot come back unseen.
//!
//! ```text
//! cargo bench --bench data_table
//! ```
//!
//! The folder it prints also serves a whole-process measurement, as in the issue:
//! `farm-bench -n 5 -- target/release/hmdpc simulate DIR/table.hmdp --scenarios 256 --backend jit`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hmdp::backend::jit::Jit;
use hmdp::random::{ScenarioSet, Seeds};
use hmdp::sim::{self, RandomPolicy};

const ROWS: usize = 1000;
const COLUMNS: usize = 500;
const SCENARIOS: usize = 256;
const RUNS: usize = 5;

/// The model: a policy written as a lookup table, of which the step reads one value.
const MODEL: &str = "// A policy written as a lookup table of 1000 x 500 values, read from a data file.
model table
set S = 0..1000
set A = 0..500
param look[S, A] from \"policy.csv\"
state x = 0
noise d ~ uniform(0, 1)
action u: real in [0, 1]
step {
  x' = x + u - d
  cost c = (x - look[3, 7])^2
}
horizon 50
";

/// Writes the model and its table into `dir`, the table only if it is not there already.
fn write_model(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let table = dir.join("policy.csv");
    if std::fs::metadata(&table).map(|m| m.len()).unwrap_or(0) == 0 {
        let mut text = String::with_capacity(ROWS * COLUMNS * 6);
        for s in 0..ROWS {
            let row: Vec<String> =
                (0..COLUMNS).map(|a| format!("{:.3}", ((s * 31 + a * 17) % 1000) as f64 / 1000.0)).collect();
            text.push_str(&row.join(","));
            text.push('\n');
        }
        std::fs::write(&table, text)?;
    }
    let model = dir.join("table.hmdp");
    std::fs::write(&model, MODEL)?;
    Ok(model)
}

/// The median of `RUNS` timed runs of `f`, after one that is not timed; and `f`'s result.
fn median_seconds<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = f();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let clock = Instant::now();
        out = f();
        times.push(clock.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[RUNS / 2], out)
}

fn main() {
    let dir = std::env::temp_dir().join("hmdp-bench-data-table");
    let model = write_model(&dir).unwrap_or_else(|e| panic!("cannot write {}: {e}", dir.display()));
    let compiled = hmdp::pipeline::compile_file(&model, &Default::default())
        .unwrap_or_else(|e| panic!("the bench model compiles: {}", e.render(false)));
    let module = &compiled.module;
    let instance = sim::instance(module, 0).expect("instance");
    let jit = Jit::compile(module).expect("the JIT compiles the model");
    let seeds = Seeds::same(0);
    let (jit_seconds, on_jit) = median_seconds(|| {
        sim::simulate_on_backend(module, &instance, &jit, &RandomPolicy, seeds, ScenarioSet::Test, SCENARIOS)
            .expect("runs on the JIT")
    });
    let (interp_seconds, on_interp) = median_seconds(|| {
        sim::simulate_on_interpreter(module, &instance, &RandomPolicy, seeds, ScenarioSet::Test, SCENARIOS)
            .expect("runs on the interpreter")
    });
    assert_eq!(on_jit, on_interp, "the JIT and the interpreter agree on every scenario");
    let ratio = jit_seconds / interp_seconds;
    println!(
        "data_table: simulate {SCENARIOS} scenarios of a model with a {ROWS}×{COLUMNS} data table ({}):",
        model.display()
    );
    println!("  jit          {:8.4} s (median of {RUNS})", jit_seconds);
    println!("  interpreter  {:8.4} s (median of {RUNS})", interp_seconds);
    println!("  jit / interpreter {ratio:.3}");
    assert!(ratio < 2.0, "the JIT is {ratio:.1} times as slow as the interpreter on a model with a large data table");
}
