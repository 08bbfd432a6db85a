//! How compiling scales with the number of `let`s: check, lowering, validation and the
//! smoothness analysis of `hmdpc compile`'s report, on a chain of 4,000 lets and one of 64,000.
//!
//! A near-linear compile takes about 16–20 times as long for 16 times the lets (measured: 20).
//! A pass that searches a list per buffer or per node (as the validator's name checks and the
//! smoothness walk once did) takes far longer: with only the smoothness walk left quadratic, 8
//! times the lets took 24 times as long, so 16 times take about 100, and a wholly quadratic pass
//! 256. The bench prints the best of three runs of each size and their ratio, and fails above 64
//! times, so a quadratic pass cannot come back unseen. It is a timing, so it is a bench and not a
//! test: on a shared, loaded machine the ratio has reached 66.
//!
//! ```text
//! cargo bench --bench compile_lets
//! ```

use std::time::Instant;

use hmdp::check::{DataFiles, Options};

/// No data files: the model reads none.
struct NoFiles;

impl DataFiles for NoFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        Err(format!("no file at {path}"))
    }
}

/// A model whose step is a chain of `lets` lets, each reading the one before.
fn chain(lets: usize) -> String {
    let mut source = String::from("model m\nstate x = 0\naction a: real in [0, 1]\nstep {\n  let v0 = x + a\n");
    for i in 1..lets {
        source.push_str(&format!("  let v{i} = v{} + 1\n", i - 1));
    }
    let last = lets - 1;
    source.push_str(&format!("  x' = v{last}\n  cost c = max(v{last}, 0)^2\n}}\nhorizon 3\n"));
    source
}

/// The best of three compiles (with the smoothness analysis) of `source`, in seconds.
fn best_of_three(source: &str) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let text = hmdp::pipeline::Source::new("model.hmdp", source.as_bytes().to_vec());
        let compiled =
            hmdp::pipeline::compile(&text, &NoFiles, &Options::default()).map_err(|failure| failure.render(false))?;
        let analysis = hmdp::passes::smoothness::analyze(&compiled.module);
        best = best.min(started.elapsed().as_secs_f64());
        if analysis.costs.len() != 1 {
            return Err(format!("the analysis found {} costs, not 1", analysis.costs.len()));
        }
    }
    Ok(best)
}

fn main() {
    // On the stack `hmdpc` gives its command (src/main.rs): the passes recurse through lets.
    let measured = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| Ok::<_, String>((best_of_three(&chain(4_000))?, best_of_three(&chain(64_000))?)))
        .map_err(|e| e.to_string())
        .and_then(|t| t.join().map_err(|_| "compiling panicked".to_string()))
        .and_then(|r| r);
    let (short, long) = match measured {
        Ok(times) => times,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let ratio = long / short.max(1e-3);
    println!(
        "compile of 4,000 lets: {short:.3} s; of 64,000 lets: {long:.3} s; {ratio:.1} times for 16 times the lets"
    );
    if ratio >= 64.0 {
        eprintln!("error: compiling is far from linear in the number of lets (a quadratic pass gives 256 times)");
        std::process::exit(1);
    }
}
