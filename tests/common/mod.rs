//! Helpers shared by the integration tests: run the front end on a file the way `hmdpc check`
//! does, and render what a user would see.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hmdp::check::{self, DataFiles, Options};
use hmdp::diagnostics::{self, Diagnostic};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Data files relative to a folder, as the command line reads them.
pub struct Folder(pub PathBuf);

impl DataFiles for Folder {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.0.join(path)).map_err(|_| format!("no file at {path}"))
    }
}

/// Checks model bytes with data files beside `path`; returns the source as shown and the
/// diagnostics.
pub fn check_bytes(bytes: Vec<u8>, folder: &Path, options: &Options) -> (String, Vec<Diagnostic>, bool) {
    let (source, encoding) = hmdp::syntax::decode(bytes);
    if let Some(d) = encoding {
        return (source, vec![d], false);
    }
    let outcome = check::check_source(&source, &Folder(folder.to_path_buf()), options);
    (source, outcome.diagnostics, outcome.model.is_some())
}

/// The diagnostics for a model file, rendered without colour as the user sees them.
pub fn rendered(path: &Path) -> (String, String, Vec<Diagnostic>) {
    let bytes = std::fs::read(path).expect("test model is readable");
    let folder = path.parent().expect("test model has a folder");
    let (source, diagnostics, _) = check_bytes(bytes.clone(), folder, &options_in(&bytes));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model.hmdp");
    let text = diagnostics::render(&diagnostics, name, &source, false);
    (source, text, diagnostics)
}

pub fn models() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("models"))
        .expect("models/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hmdp"))
        .collect();
    paths.sort();
    paths
}

/// Options a golden model asks for in its first line: `// args: --set name=value ...`.
pub fn options_in(bytes: &[u8]) -> Options {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next().unwrap_or("");
    let mut overrides = Vec::new();
    if let Some(args) = first.strip_prefix("// args:") {
        let mut words = args.split_whitespace();
        while let Some(word) = words.next() {
            if word == "--set"
                && let Some((name, value)) = words.next().and_then(|a| a.split_once('='))
            {
                overrides.push((name.to_string(), value.parse().expect("numeric --set in a golden model")));
            }
        }
    }
    Options { overrides }
}

/// The compiler's pipeline on model text, as `hmdpc` runs it ([`hmdp::pipeline::compile`]),
/// with data files beside `folder`.
pub fn compiled_text(source: &str, folder: &Path, overrides: &[(&str, f64)]) -> hmdp::pipeline::Compiled {
    let options = Options { overrides: overrides.iter().map(|(n, v)| (n.to_string(), *v)).collect() };
    let source = hmdp::pipeline::Source::new("model.hmdp", source.as_bytes().to_vec());
    hmdp::pipeline::compile(&source, &Folder(folder.to_path_buf()), &options)
        .unwrap_or_else(|failure| panic!("the model compiles:\n{}", failure.render(false)))
}

/// [`compiled_text`]'s module.
pub fn compile_text(source: &str, folder: &Path, overrides: &[(&str, f64)]) -> hmdp::ir::ValidModule {
    compiled_text(source, folder, overrides).module
}

/// [`compiled_text`] on a model file.
pub fn compiled_file(path: &Path, overrides: &[(&str, f64)]) -> hmdp::pipeline::Compiled {
    let source = std::fs::read_to_string(path).expect("model is readable");
    compiled_text(&source, path.parent().expect("model has a folder"), overrides)
}

/// [`compiled_file`]'s module.
pub fn compile_file(path: &Path, overrides: &[(&str, f64)]) -> hmdp::ir::ValidModule {
    compiled_file(path, overrides).module
}

/// How the trainer's pathwise gradient of a whole rollout's cost, in the continuous network's
/// parameters, compares with finite differences of that cost (central, or one-sided where a
/// step crosses a kink), on `backend`: the largest
/// relative error over the parameters, and the largest derivative (so that a trivial gradient
/// cannot pass). The discrete labels are held fixed, so the cost is a smooth function of the
/// parameters away from kinks; the networks are small with every weight random.
pub fn pathwise_against_finite_differences(
    module: &hmdp::ir::ValidModule,
    backend: &dyn hmdp::backend::Backend,
    seed: u64,
) -> (f64, f64) {
    let (worst, largest, _) = pathwise_with_penalty_against_finite_differences(module, backend, seed, 0.0, 0.0);
    (worst, largest)
}

/// [`pathwise_against_finite_differences`] with the continuous network's raw outputs moved by
/// `push` towards the flat side of their squashes (up on an interval), and the trainer's
/// saturation penalty of weight `saturation` added
/// to every step's cost (computed here from its definition: `½ max(d − 6, 0)²`, `d` how far the
/// raw output is on the flat side of its squash). Also returns how many raw outputs of the
/// rollout are beyond 6 on that side, where the penalty acts.
pub fn pathwise_with_penalty_against_finite_differences(
    module: &hmdp::ir::ValidModule,
    backend: &dyn hmdp::backend::Backend,
    seed: u64,
    push: f32,
    saturation: f64,
) -> (f64, f64, usize) {
    use hmdp::random::ScenarioSet;
    use hmdp::train::policy::Nets;
    use hmdp::train::rollout::{Context, Mode, rollout};
    use hmdp::train::scenarios::Scenarios;
    use hmdp::train::spec::Spec;
    use hmdp::train::update::pathwise;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    let spec = Spec::of(module);
    let instance = hmdp::sim::instance(module, 0).expect("instance");
    let set = Scenarios::draw(module, &instance, 0, ScenarioSet::Train, 3).expect("scenarios");
    let mut nets = Nets::new(&spec, &[6], false, &mut ChaCha8Rng::seed_from_u64(seed));
    // Drawn from a generator of their own, so that the weights do not change with the shape of
    // the value network.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for net in [&mut nets.discrete, &mut nets.continuous] {
        for p in net.params_mut() {
            let z: f64 = StandardNormal.sample(&mut rng);
            *p = 0.3 * z as f32;
        }
    }
    // The last layer's biases are the last parameters.
    let outputs = nets.continuous.outputs();
    let first_bias = nets.continuous.params().len() - outputs;
    for head in &spec.continuous {
        let side = match (head.lower.is_some(), head.upper.is_some()) {
            (true, false) => -1.0,
            (false, false) => 0.0,
            _ => 1.0,
        };
        for k in 0..head.len {
            nets.continuous.params_mut()[first_bias + head.offset + k] += side * push;
        }
    }
    let ctx = Context { module, spec: &spec, backend, instance: &instance };
    let horizon = module.horizon as usize;
    let discrete_len: usize = spec.discrete.iter().map(|d| d.len).sum();
    let labels: Vec<u32> = (0..horizon * 3 * discrete_len).map(|i| (i % 3 % 2) as u32 + (i % 5 == 0) as u32).collect();
    // Each acting raw output's distance beyond 6 on the flat side of its squash.
    let per_row: usize = spec.continuous.iter().map(|c| c.len).sum();
    let beyond = |traj: &hmdp::train::rollout::Trajectory| -> Vec<f64> {
        let mut out = Vec::new();
        for step in &traj.steps {
            for b in 0..traj.rows {
                let mut e = 0;
                for head in &spec.continuous {
                    for _ in 0..head.len {
                        let used = step.used[b * per_row + e];
                        e += 1;
                        if used.output.is_none() {
                            continue;
                        }
                        let z = used.raw as f64;
                        let flat = match (head.lower.is_some(), head.upper.is_some()) {
                            (true, true) => z.abs(),
                            (true, false) => -(z + head.shift),
                            (false, true) => z - head.shift,
                            (false, false) => f64::NEG_INFINITY,
                        };
                        out.push((flat - 6.0).max(0.0));
                    }
                }
            }
        }
        out
    };
    let cost = |nets: &Nets| {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let traj = rollout(&ctx, nets, &set, &[0, 1, 2], Mode::Forced(&labels), true, &mut rng).expect("rollout");
        let total: f64 = traj.steps.iter().flat_map(|st| st.costs.iter()).sum::<f64>() / 3.0;
        let penalty: f64 = beyond(&traj).iter().map(|d| 0.5 * d * d).sum::<f64>() / 3.0;
        (total + saturation * penalty, traj)
    };
    let (at, mut traj) = cost(&nets);
    let active = beyond(&traj).iter().filter(|d| **d > 0.0).count();
    let weight = |_: usize| 1.0 / 3.0;
    let grad = pathwise(&ctx, &nets, &mut traj, &weight, saturation, None).expect("pathwise");
    // The central difference, and the one-sided ones: the cost is smooth only between the kinks
    // of the model (`max`, `min`), and a step that crosses one leaves the central difference
    // between the derivatives of the two sides, while one of the one-sided differences stays on
    // the side the gradient is taken on.
    let pairs: Vec<(f64, [f64; 3])> = grad
        .iter()
        .enumerate()
        .map(|(k, &ad)| {
            let h = 1e-3f32;
            let (mut plus, mut minus) = (nets.clone(), nets.clone());
            plus.continuous.params_mut()[k] += h;
            minus.continuous.params_mut()[k] -= h;
            let up = (plus.continuous.params()[k] - nets.continuous.params()[k]) as f64;
            let down = (nets.continuous.params()[k] - minus.continuous.params()[k]) as f64;
            let (p, m) = (cost(&plus).0, cost(&minus).0);
            (ad as f64, [(p - m) / (up + down), (p - at) / up, (at - m) / down])
        })
        .collect();
    let largest = pairs.iter().map(|(_, fd)| fd[0].abs()).fold(0.0, f64::max);
    // Relative to the element, or to 1% of the largest element for the small ones: the networks
    // run in f32, so a difference quotient of a large total cost carries an absolute error.
    let floor = (0.01 * largest).max(1.0);
    let mut worst = 0.0f64;
    for (k, &(ad, fds)) in pairs.iter().enumerate() {
        let error =
            fds.iter().map(|fd| (fd - ad).abs() / fd.abs().max(ad.abs()).max(floor)).fold(f64::INFINITY, f64::min);
        if std::env::var("HMDP_DEBUG_PATHWISE").is_ok() {
            eprintln!("{} {k}: ad {ad} fd {fds:?} error {error}", backend.name());
        }
        worst = worst.max(error);
    }
    (worst, largest, active)
}
