//! `hmdpc act`: the decision a policy takes in one state — a run's, or one a model file
//! declares — JSON in, JSON out.

use std::path::PathBuf;

use hmdp::sim;
use hmdp::subject::act::{self, ActError};
use serde_json::json;

use super::exit;
use super::subjects::{self, InstanceFlags, ModelFlags};

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `hmdpc train` or `hmdpc tune`, or a model file (`.hmdp`).
    #[arg(value_name = "RUN_DIR|FILE")]
    source: PathBuf,
    /// The state, as a JSON object of every state by name (and optionally parameters that
    /// replace the instance's), e.g. `{"x": [1.5, -2]}`; `@FILE` reads it from a file.
    #[arg(long, value_name = "JSON")]
    state: String,
    /// Which policy: of a run folder, its `best` (on dev, the default) or `final` checkpoint, or
    /// `random`; of a model file (required), a policy it declares, or `random`.
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Draw the discrete labels from the policy's probabilities with this seed, instead of
    /// taking the most likely (the continuous actions are the network's either way).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    instance: InstanceFlags,
}

pub fn run(args: Args) -> u8 {
    let text = match args.state.strip_prefix('@') {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: cannot read --state {path}: {}", hmdp::pipeline::describe_io(&e));
                return exit::USAGE;
            }
        },
        None => args.state.clone(),
    };
    let flags = ModelFlags { instance: args.instance, scenario_seed: None };
    let opened = match subjects::open(&args.source, args.policy.as_deref(), &flags, "act") {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let compiled = &opened.compiled;
    let module = &compiled.module;
    let state = match act::read_state(module, &text) {
        Ok(state) => state,
        Err(e) => return act_error(compiled, e),
    };
    let instance = match sim::instance(module, opened.instance_seed) {
        Ok(i) => i,
        Err(e) => return super::run_error(compiled, e),
    };
    let interp = hmdp::backend::Interp::new(module);
    let subject = &opened.subject;
    let decision = match act::act(subject, module, &instance, &interp, &state, args.seed) {
        Ok(d) => d,
        Err(e) => return act_error(compiled, e),
    };
    let mut out = decision.to_json();
    out["policy"] = json!(subject.label());
    out["mode"] = json!(match args.seed {
        None => "deterministic".to_string(),
        Some(seed) => format!("sampled (seed {seed})"),
    });
    println!("{out:#}");
    exit::OK
}

fn act_error(compiled: &hmdp::pipeline::Compiled, e: ActError) -> u8 {
    match e {
        ActError::Input(message) => {
            eprintln!("error: {message}");
            exit::USAGE
        }
        ActError::Run(e) => subjects::train_error(compiled, e),
    }
}
