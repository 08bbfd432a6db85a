//! `hmdpc instance`: the parameters drawn for an instance, as JSON.

use std::path::PathBuf;

use hmdp::ir::BufferKind;
use hmdp::train::config::parse_override;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (`.hmdp`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Seed of the instance (`--instance-seed` of `train` and `simulate`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Override a size or a scalar parameter, e.g. `--set items=50` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, f64)>,
}

pub fn run(args: Args) -> u8 {
    let compiled = match super::compile_model(&args.file, &args.overrides) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let module = &compiled.module;
    if let Err(code) = super::fits(&compiled, hmdp::resources::Need::new().model(module), "instance") {
        return code;
    }
    let instance = match hmdp::sim::instance(module, args.seed) {
        Ok(i) => i,
        Err(e) => return super::run_error(&compiled, e),
    };
    let mut params = serde_json::Map::new();
    for (id, b) in module.buffers.iter().enumerate() {
        if b.kind != BufferKind::Param {
            continue;
        }
        let dims: Vec<usize> = b.dims.iter().map(|&d| module.sets[d].len()).collect();
        params.insert(b.name.clone(), nest(&instance.values[id], &dims));
    }
    let sets: serde_json::Map<String, serde_json::Value> =
        module.sets.iter().map(|s| (s.name.clone(), serde_json::json!([s.lo, s.hi]))).collect();
    let out = serde_json::json!({ "model": module.name, "seed": args.seed, "sets": sets, "params": params });
    println!("{out:#}");
    exit::OK
}

/// A row-major array as nested JSON arrays, one level per dimension.
fn nest(values: &[f64], dims: &[usize]) -> serde_json::Value {
    match dims.split_first() {
        None => values.first().copied().map_or(serde_json::Value::Null, serde_json::Value::from),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            serde_json::Value::Array((0..n).map(|i| nest(&values[i * stride..(i + 1) * stride], rest)).collect())
        }
    }
}
