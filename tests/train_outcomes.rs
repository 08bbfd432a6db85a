//! Training reaches known optima of small problems with a discrete choice, for each algorithm
//! (`hpo`, `hpo-nocross`, `ppo`): a two-mode switched LQR against its exact optimum (every mode
//! sequence enumerated, each with its Riccati recursion), and a one-item inventory with a fixed
//! ordering cost against value iteration on the integer inventory levels. Each optimum is
//! computed here and cross-checked by simulating the optimal policy through the compiled model;
//! each algorithm must land within the gap its test states, on the run's test scenarios.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use hmdp::backend::Buffers;
use hmdp::backend::jit::Jit;
use hmdp::backend::{self, Batch, Kernel};
use hmdp::ir::Module;
use hmdp::random::ScenarioSet;
use hmdp::sim;
use hmdp::train::folder::{Checkpoint, Run};
use hmdp::train::riccati;
use hmdp::train::rollout::Context;
use hmdp::train::scenarios::Scenarios;

const LQR_MODEL: &str = "tests/models/switched_lqr_2modes.hmdp";
const INVENTORY_MODEL: &str = "tests/models/inventory_one_item.hmdp";

/// Trains `model` with `algo` and the settings `extra` through `hmdpc train`; the run folder.
fn train(model: &str, algo: &str, extra: &[&str]) -> PathBuf {
    let name = format!("{}-{algo}", Path::new(model).file_stem().and_then(|s| s.to_str()).expect("name"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("train-outcomes").join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.parent().expect("parent")).expect("scratch folder");
    let mut args = vec!["train", model, "--algo", algo, "--quiet", "--out", out.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let run = Command::new(env!("CARGO_BIN_EXE_hmdpc")).args(&args).current_dir(common::root()).output().expect("runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(run.status.code(), Some(0), "{}{}", text(&run.stdout), text(&run.stderr));
    out
}

/// A run's model, instance and test scenarios (as `hmdpc eval` draws them), and the total cost
/// of its best policy on each test scenario, in report units.
struct Tested {
    run: Run,
    jit: Jit,
    instance: Buffers,
    test: Scenarios,
    totals: Vec<f64>,
}

fn tested(folder: &Path) -> Tested {
    let run = Run::open(folder).expect("run folder");
    let module = &run.compiled.module;
    let cfg = run.config();
    let jit = Jit::compile(module).expect("jit");
    let instance = sim::instance(module, cfg.instance_seed).expect("instance");
    let test =
        Scenarios::draw(module, &instance, cfg.scenario_seed, ScenarioSet::Test, cfg.scenarios).expect("test set");
    let (nets, spec) = run.policy(Checkpoint::Best).expect("best checkpoint");
    let ctx = Context { module, spec: &spec, backend: &jit, instance: &instance };
    let evaluation = hmdp::train::evaluate(&ctx, &nets, &test).expect("evaluation");
    let totals = evaluation.per_scenario.iter().map(|r| r.iter().sum()).collect();
    Tested { run, jit, instance, test, totals }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn buffer(module: &Module, name: &str) -> usize {
    module.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("no buffer {name}"))
}

/// The initial values of state `name` in every scenario of `set`, scenario-major.
fn initial<'a>(module: &Module, set: &'a Scenarios, name: &str) -> &'a [f64] {
    let id = buffer(module, name);
    &set.init.iter().find(|(b, _)| *b == id).expect("initial state").1
}

// ---------------------------------------------------------------------------------------------
// The switched LQR

/// The switched LQR's matrices. It has no noise, so its optimum from `x₀` is that of the best
/// open-loop mode sequence: `min over sequences of x₀ᵀ P₀ x₀`, where each sequence's `P₀` comes
/// from the Riccati recursion along it.
struct Switched {
    n: usize,
    horizon: usize,
    a: Vec<f64>,
    /// Per mode, the diagonal gain matrix.
    b: Vec<Vec<f64>>,
    q: Vec<f64>,
    r: Vec<f64>,
}

impl Switched {
    /// The matrices of `switched_lqr_2modes.hmdp`, read from its instance.
    fn of(module: &Module, instance: &Buffers) -> Switched {
        let (a, b) = (&instance.values[buffer(module, "A")], &instance.values[buffer(module, "B")]);
        let n = module.len(buffer(module, "x"));
        let modes = b.len() / n;
        let diagonal = |m: usize| {
            let mut d = vec![0.0; n * n];
            for i in 0..n {
                d[i * n + i] = b[m * n + i];
            }
            d
        };
        let q: Vec<f64> = (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let r = q.iter().map(|v| 0.1 * v).collect();
        Switched { n, horizon: module.horizon as usize, a: a.clone(), b: (0..modes).map(diagonal).collect(), q, r }
    }

    /// Every mode sequence (first period first) with its `P₀`, built backwards from the last
    /// period.
    fn sequences(&self) -> Vec<(Vec<usize>, Vec<f64>)> {
        let mut paths = vec![(Vec::new(), vec![0.0; self.n * self.n])];
        for _ in 0..self.horizon {
            let mut before = Vec::with_capacity(paths.len() * self.b.len());
            for (modes, p) in &paths {
                for (m, b) in self.b.iter().enumerate() {
                    let (p0, _) = riccati::step(&self.a, b, &self.q, &self.r, p, self.n).expect("regular");
                    let mut seq = vec![m];
                    seq.extend_from_slice(modes);
                    before.push((seq, p0));
                }
            }
            paths = before;
        }
        paths
    }

    /// The gains of the Riccati recursion along `modes`, first period first.
    fn gains(&self, modes: &[usize]) -> Vec<Vec<f64>> {
        let mut p = vec![0.0; self.n * self.n];
        let mut gains = vec![Vec::new(); modes.len()];
        for (t, &m) in modes.iter().enumerate().rev() {
            let (before, k) = riccati::step(&self.a, &self.b[m], &self.q, &self.r, &p, self.n).expect("regular");
            p = before;
            gains[t] = k;
        }
        gains
    }
}

fn quadratic(p: &[f64], x: &[f64]) -> f64 {
    let n = x.len();
    (0..n).map(|i| x[i] * (0..n).map(|j| p[i * n + j] * x[j]).sum::<f64>()).sum()
}

/// Per test scenario, the exact optimum and its mode sequence; checks the optimum by
/// simulating its sequence with its Riccati feedback through the compiled model, and that the
/// discrete choice matters (no single mode comes close).
fn lqr_optimum(t: &Tested) -> Vec<f64> {
    let module = &t.run.compiled.module;
    let lqr = Switched::of(module, &t.instance);
    let sequences = lqr.sequences();
    assert_eq!(sequences.len(), 1 << lqr.horizon);
    let x0 = initial(module, &t.test, "x");
    let mut optimum = Vec::new();
    let mut single_mode = Vec::new();
    for (s, x) in x0.chunks(lqr.n).enumerate() {
        let (best, cost) = sequences
            .iter()
            .map(|(modes, p)| (modes, quadratic(p, x)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("sequences");
        let constant = sequences.iter().filter(|(m, _)| m.iter().all(|&k| k == m[0])).map(|(_, p)| quadratic(p, x));
        single_mode.push(constant.fold(f64::INFINITY, f64::min));
        // The best sequence, played with its feedback gains by the compiled model, costs the
        // optimum claimed (a few scenarios suffice).
        if s < 8 {
            let simulated = simulate_lqr(module, t, &lqr, best, x);
            assert!((simulated - cost).abs() <= 1e-9 * cost, "scenario {s}: simulated {simulated}, enumerated {cost}");
        }
        optimum.push(cost);
    }
    let (best, single) = (mean(&optimum), mean(&single_mode));
    assert!(best < 0.95 * single, "switching should matter: optimum {best}, best single mode {single}");
    optimum
}

fn simulate_lqr(module: &Module, t: &Tested, lqr: &Switched, modes: &[usize], x0: &[f64]) -> f64 {
    let (x, u, mode, next) = (buffer(module, "x"), buffer(module, "u"), buffer(module, "mode"), buffer(module, "x'"));
    let cost = module.costs().next().expect("cost").0;
    let mut batch = Batch::new(module, &t.instance, 1);
    batch.get_mut(x, 0).copy_from_slice(x0);
    let mut total = 0.0;
    for (k, &m) in lqr.gains(modes).iter().zip(modes) {
        let state = batch.get(x, 0).to_vec();
        let n = lqr.n;
        let control: Vec<f64> = (0..n).map(|i| -(0..n).map(|j| k[i * n + j] * state[j]).sum::<f64>()).collect();
        batch.get_mut(u, 0).copy_from_slice(&control);
        batch.get_mut(mode, 0)[0] = m as f64;
        backend::run(&t.jit, Kernel::Step, &mut batch).expect("step");
        total += batch.get(cost, 0)[0];
        let after = batch.get(next, 0).to_vec();
        batch.get_mut(x, 0).copy_from_slice(&after);
    }
    total
}

/// Trains `algo` on the switched LQR and returns its gap to the optimum, in percent.
fn lqr_gap(algo: &str, extra: &[&str]) -> f64 {
    let t = tested(&train(LQR_MODEL, algo, extra));
    let scale = sim::report_scale(&t.run.compiled.module);
    let optimum = mean(&lqr_optimum(&t)) / scale;
    let trained = mean(&t.totals);
    let gap = 100.0 * (trained - optimum) / optimum;
    eprintln!("switched LQR, {algo}: {trained:.4} against the optimum {optimum:.4}, gap {gap:.2}%");
    gap
}

// ---------------------------------------------------------------------------------------------
// The inventory

/// Value iteration for `inventory_one_item.hmdp` on the integer inventory levels `low..=high`
/// (orders, demands and the start are integers, and the costs are piecewise linear with kinks at
/// integers, so integer levels lose nothing). Per period: the optimal policy as an order-up-to
/// level for each level (`None`: skip), and the expected cost to go from each level.
struct Inventory {
    low: i64,
    high: i64,
    /// Per period and level, the level to order up to, if any.
    order_up_to: Vec<Vec<Option<i64>>>,
    /// Per period and level, the expected cost from then on.
    value: Vec<Vec<f64>>,
}

impl Inventory {
    fn solve(mu: f64, h: f64, p: f64, k: f64, horizon: usize) -> Inventory {
        let (low, high) = (-150i64, 150i64);
        let levels = (high - low + 1) as usize;
        // Poisson probabilities up to where the tail is negligible.
        let mut pmf = vec![(-mu).exp()];
        while pmf.len() < 60 {
            let d = pmf.len() as f64;
            pmf.push(pmf[pmf.len() - 1] * mu / d);
        }
        assert!(1.0 - pmf.iter().sum::<f64>() < 1e-12);
        let index = |x: i64| (x.clamp(low, high) - low) as usize;
        let mut value = vec![vec![0.0; levels]; horizon + 1];
        let mut order_up_to = vec![vec![None; levels]; horizon];
        for t in (0..horizon).rev() {
            // The expected cost of period t and after, from the level `y` after ordering.
            let after: Vec<f64> = (low..=high)
                .map(|y| {
                    pmf.iter()
                        .enumerate()
                        .map(|(d, pr)| {
                            let post = y - d as i64;
                            let stage = h * post.max(0) as f64 + p * (-post).max(0) as f64;
                            pr * (stage + value[t + 1][index(post)])
                        })
                        .sum()
                })
                .collect();
            // From the top down: the best level to order up to among those at or above x.
            let mut best: Option<(i64, f64)> = None;
            for x in (low..=high).rev() {
                let here = after[index(x)];
                if best.is_none_or(|(_, c)| here < c) {
                    best = Some((x, here));
                }
                let (target, ordered) = best.expect("set");
                let i = index(x);
                if target > x && k + ordered < here {
                    value[t][i] = k + ordered;
                    order_up_to[t][i] = Some(target);
                } else {
                    value[t][i] = here;
                }
            }
        }
        Inventory { low, high, order_up_to, value }
    }

    fn policy(&self, t: usize, x: f64) -> Option<i64> {
        let level = x.round() as i64;
        assert!(level == x as i64 && (self.low..=self.high).contains(&level), "level {x} off the grid");
        self.order_up_to[t][(level - self.low) as usize]
    }
}

/// The value-iteration policy's total cost on each test scenario, simulated through the
/// compiled model; checked against the expected cost value iteration predicts, and its policy
/// checked to be of the (s, S) form that a fixed cost makes optimal.
fn inventory_optimum(t: &Tested) -> Vec<f64> {
    let module = &t.run.compiled.module;
    let param = |name: &str| t.instance.values[buffer(module, name)][0];
    let horizon = module.horizon as usize;
    let vi = Inventory::solve(param("mu"), param("h"), param("p"), param("K"), horizon);
    // (s, S): each period orders, when it does, up to one level, from every level below a
    // threshold.
    for (period, row) in vi.order_up_to.iter().enumerate() {
        let ordering: Vec<(i64, i64)> =
            row.iter().enumerate().filter_map(|(i, o)| o.map(|s| (vi.low + i as i64, s))).collect();
        if let Some(&(_, up_to)) = ordering.first() {
            let below = ordering.last().expect("some").0;
            assert!(ordering.iter().all(|&(_, s)| s == up_to), "period {period}: several order-up-to levels");
            assert_eq!(ordering.len() as i64, below - vi.low + 1, "period {period}: not a threshold policy");
        }
    }
    let (onhand, order, q) = (buffer(module, "onhand"), buffer(module, "order"), buffer(module, "q"));
    let count = t.test.count;
    let mut batch = Batch::new(module, &t.instance, count);
    for (id, values) in &t.test.init {
        batch.values[*id].copy_from_slice(values);
    }
    let start = batch.values[onhand].clone();
    let mut totals = vec![0.0; count];
    for period in 0..horizon {
        for (id, values) in &t.test.noise[period] {
            batch.values[*id].copy_from_slice(values);
        }
        for s in 0..count {
            let level = batch.get(onhand, s)[0];
            let buy = vi.policy(period, level);
            batch.get_mut(order, s)[0] = buy.is_some() as u8 as f64;
            batch.get_mut(q, s)[0] = buy.map_or(0.0, |up_to| up_to as f64 - level);
        }
        backend::run(&t.jit, Kernel::Step, &mut batch).expect("step");
        for (c, _) in module.costs() {
            for (s, total) in totals.iter_mut().enumerate() {
                *total += batch.get(c, s)[0];
            }
        }
        // Next states become the states.
        for (id, b) in module.buffers.iter().enumerate() {
            if let Some(state) = b.name.strip_suffix('\'') {
                let values = batch.values[id].clone();
                batch.values[buffer(module, state)].copy_from_slice(&values);
            }
        }
    }
    // The simulated mean agrees with the expectation value iteration computed.
    let expected = mean(&start.iter().map(|&x| vi.value[0][(x as i64 - vi.low) as usize]).collect::<Vec<_>>());
    let simulated = mean(&totals);
    let sd = (totals.iter().map(|c| (c - simulated).powi(2)).sum::<f64>() / (count - 1) as f64).sqrt();
    let se = sd / (count as f64).sqrt();
    assert!((simulated - expected).abs() < 4.0 * se, "simulated {simulated} ± {se}, value iteration {expected}");
    totals
}

/// Trains `algo` on the inventory and returns its gap to the optimum, in percent.
fn inventory_gap(algo: &str, extra: &[&str]) -> f64 {
    let t = tested(&train(INVENTORY_MODEL, algo, extra));
    let scale = sim::report_scale(&t.run.compiled.module);
    let optimum = mean(&inventory_optimum(&t)) / scale;
    let trained = mean(&t.totals);
    let gap = 100.0 * (trained - optimum) / optimum;
    eprintln!("inventory, {algo}: {trained:.4} against the optimum {optimum:.4}, gap {gap:.2}%");
    gap
}

// Settings: small networks and a few hundred updates keep this file near a minute in the test
// profile. Gaps measured when the tests were written (same seeds): switched LQR hpo 1.35%,
// hpo-nocross 1.03%, ppo 12.7%; inventory hpo 1.63%, hpo-nocross 1.63%, ppo 2.47%. With every
// default instead (512-unit layers, batches of 16, 1,600 updates, 1,024 scenarios; minutes in a
// release build): switched LQR hpo 0.86%, hpo-nocross 1.22%, ppo 9.77%; inventory hpo 1.36%,
// hpo-nocross 1.47%, ppo 2.10%. Since the action scales come from the model (the LQR's control
// scaled by the size of its state) and HPO's default learning rate is 3e-3, these settings give:
// switched LQR hpo 0.73%, hpo-nocross 0.84%, ppo 6.41%; inventory hpo 2.02%, hpo-nocross 1.72%,
// ppo 2.47%.

/// HPO on the LQR with the learning rate of `train_cli`'s Riccati test, now the default (the
/// paper's 1e-3 reached only about 6% in this budget).
const LQR_HPO: [&str; 10] =
    ["--hidden", "128,128", "--scenarios", "256", "--batch", "128", "--updates", "300", "--lr", "0.003"];
const LQR_PPO: [&str; 8] = ["--hidden", "64,64", "--scenarios", "256", "--batch", "64", "--updates", "600"];
const INVENTORY: [&str; 8] = ["--hidden", "64,64", "--scenarios", "256", "--batch", "64", "--updates", "200"];

#[test]
fn hpo_reaches_the_switched_lqr_optimum() {
    let gap = lqr_gap("hpo", &LQR_HPO);
    assert!(gap < 4.0, "gap {gap:.2}% above 4%");
}

#[test]
fn hpo_nocross_reaches_the_switched_lqr_optimum() {
    let gap = lqr_gap("hpo-nocross", &LQR_HPO);
    assert!(gap < 4.0, "gap {gap:.2}% above 4%");
}

#[test]
fn ppo_approaches_the_switched_lqr_optimum() {
    let gap = lqr_gap("ppo", &LQR_PPO);
    assert!(gap < 25.0, "gap {gap:.2}% above 25%");
}

#[test]
fn hpo_reaches_the_inventory_optimum() {
    let gap = inventory_gap("hpo", &INVENTORY);
    assert!(gap < 3.0, "gap {gap:.2}% above 3%");
}

#[test]
fn hpo_nocross_reaches_the_inventory_optimum() {
    let gap = inventory_gap("hpo-nocross", &INVENTORY);
    assert!(gap < 3.0, "gap {gap:.2}% above 3%");
}

#[test]
fn ppo_approaches_the_inventory_optimum() {
    let gap = inventory_gap("ppo", &INVENTORY);
    assert!(gap < 5.0, "gap {gap:.2}% above 5%");
}
