//! The hand-written kernels of `backend::reference`, the yardstick of `hmdpc bench`, compute
//! what the IR says: on random batches that include the kinks' ties, their step equals the
//! interpreter's bit for bit (but for `pow`, see `check_switched_lqr`) and their VJP agrees to
//! 1e-12 relative (bit for bit too, today, but the order of its additions is the reference's to
//! choose), at the shipped sizes and at others; and they serve only the two models they were
//! written for.

mod common;

use std::path::Path;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use hmdp::backend::{self, Batch, Interp, Kernel, is_accumulated, reference};
use hmdp::check::Options;
use hmdp::ir::{BufferKind, Module, ValidModule};
use hmdp::random::unit;
use hmdp::sim;

const SCENARIOS: usize = 37;

/// Scenarios per range for the reference: not a divisor of [`SCENARIOS`], so ranges start
/// mid-batch and the last one is short.
const CHUNK: usize = 5;

/// A shipped model through the compiler's pipeline, with `--set` overrides.
fn compile(file: &str, sizes: &[(&str, f64)]) -> ValidModule {
    let path = common::root().join("models").join(file);
    let overrides = sizes.iter().map(|(name, value)| (name.to_string(), *value)).collect();
    compile_path(&path, &Options { overrides })
}

fn compile_path(path: &Path, options: &Options) -> ValidModule {
    let overrides: Vec<(&str, f64)> = options.overrides.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    common::compile_file(path, &overrides)
}

fn id(module: &Module, name: &str) -> usize {
    module.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("no buffer `{name}`"))
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit(rng)
}

/// A batch of one instance whose per-scenario buffers all start as NaN, so that an output a
/// kernel forgets to write shows; `fill` then writes the inputs of each scenario.
fn random_batch(module: &Module, mut fill: impl FnMut(&mut Batch, usize, &mut ChaCha8Rng)) -> Batch {
    let instance = sim::instance(module, 7).expect("instance");
    let mut batch = Batch::new(module, &instance, SCENARIOS);
    for (values, shared) in batch.values.iter_mut().zip(&batch.shared) {
        if !shared {
            values.fill(f64::NAN);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for b in 0..SCENARIOS {
        fill(&mut batch, b, &mut rng);
    }
    batch
}

/// `kernel` run on copies of `batch` by the interpreter and by the reference.
fn run_both(module: &ValidModule, kernel: Kernel, batch: &Batch) -> (Batch, Batch) {
    let reference = reference::for_module(module).expect("the reference recognises the model");
    assert_eq!(reference.name(), "reference");
    let (mut by_interp, mut by_reference) = (batch.clone(), batch.clone());
    backend::run(&Interp::new(module), kernel, &mut by_interp).expect("the interpreter runs");
    backend::run_chunked(reference.as_ref(), kernel, &mut by_reference, CHUNK, true).expect("the reference runs");
    (by_interp, by_reference)
}

/// Every per-scenario element agrees: identical bits, or within `tolerance(name)` relative.
/// Also checks that the interpreter wrote finite values everywhere `kernel` writes, so that
/// agreement is not two untouched NaNs.
fn assert_agree(module: &Module, kernel: Kernel, interp: &Batch, reference: &Batch, tolerance: impl Fn(&str) -> f64) {
    for (id, buffer) in module.buffers.iter().enumerate() {
        if interp.shared[id] {
            continue;
        }
        let written = matches!(buffer.kind, BufferKind::Let | BufferKind::Next { .. } | BufferKind::Cost)
            || (kernel == Kernel::Vjp && is_accumulated(module, buffer.kind));
        let tol = tolerance(&buffer.name);
        for b in 0..interp.size {
            for (k, (&a, &r)) in interp.get(id, b).iter().zip(reference.get(id, b)).enumerate() {
                assert!(
                    !written || a.is_finite(),
                    "{}: `{}`[{k}] of scenario {b} is not written by the interpreter",
                    kernel.name(),
                    buffer.name
                );
                assert!(
                    a.to_bits() == r.to_bits() || (a - r).abs() <= tol * a.abs().max(r.abs()),
                    "{}: `{}`[{k}] of scenario {b}: interpreter {a:e}, reference {r:e}",
                    kernel.name(),
                    buffer.name
                );
            }
        }
    }
}

/// Random inventories, a quarter of them with demand equal to what is on hand (post == 0,
/// where both cost kinks pass the adjoint on), buying or skipping at random; `q` is random
/// even when skipping, which the step must ignore.
fn inventory_batch(module: &Module) -> Batch {
    let [onhand, pipe, demand, order, q] = ["onhand", "pipe", "demand", "order", "q"].map(|n| id(module, n));
    let [onhand_next_bar, pipe_next_bar] = ["onhand'.adj", "pipe'.adj"].map(|n| id(module, n));
    let costs_bar = ["holding.adj", "shortage.adj", "fixed.adj"].map(|n| id(module, n));
    random_batch(module, |batch, b, rng| {
        for i in 0..batch.lens[onhand] {
            let d = (25.0 * unit(rng)).floor();
            batch.get_mut(demand, b)[i] = d;
            batch.get_mut(onhand, b)[i] = if unit(rng) < 0.25 { d } else { uniform(rng, -20.0, 40.0) };
            batch.get_mut(q, b)[i] = uniform(rng, 0.0, 40.0);
        }
        batch.get_mut(pipe, b).iter_mut().for_each(|v| *v = uniform(rng, 0.0, 30.0));
        batch.get_mut(order, b)[0] = f64::from(u8::from(unit(rng) < 0.5));
        for bar in [onhand_next_bar, pipe_next_bar] {
            batch.get_mut(bar, b).iter_mut().for_each(|v| *v = uniform(rng, -1.0, 1.0));
        }
        for bar in costs_bar {
            batch.get_mut(bar, b)[0] = uniform(rng, 0.5, 2.0);
        }
    })
}

/// The step and the VJP of `joint_replenishment` at these sizes, with ties at post == 0.
fn check_inventory(sizes: &[(&str, f64)]) {
    let module = compile("inventory.hmdp", sizes);
    let batch = inventory_batch(&module);
    let (interp, reference) = run_both(&module, Kernel::Step, &batch);
    let post = id(&module, "post");
    let ties = (0..SCENARIOS).flat_map(|b| interp.get(post, b).to_vec()).filter(|&v| v == 0.0).count();
    assert!(ties > 0, "the batch has no post == 0");
    let order = id(&module, "order");
    let buying = (0..SCENARIOS).filter(|&b| batch.get(order, b)[0] == 1.0).count();
    assert!(buying > 0 && buying < SCENARIOS, "the batch buys in {buying} of {SCENARIOS} scenarios");
    assert_agree(&module, Kernel::Step, &interp, &reference, |_| 0.0);
    let (interp, reference) = run_both(&module, Kernel::Vjp, &batch);
    assert_agree(&module, Kernel::Vjp, &interp, &reference, |_| 1e-12);
}

/// Random states, controls and modes, a quarter of the states beyond the clamp, and in some
/// scenarios one control chosen so that the value before the clamp is exactly ±100, where the
/// clamp still passes the adjoint on. Returns the batch and how many such ties it holds.
fn switched_lqr_batch(module: &Module) -> (Batch, usize) {
    let [x, u, mode, x_next_bar, quad_bar] = ["x", "u", "mode", "x'.adj", "quad.adj"].map(|n| id(module, n));
    let (a, gains) = (id(module, "A"), id(module, "B"));
    let n = module.len(x);
    let modes = module.buffers[mode].labels.len();
    let mut ties = 0;
    let batch = random_batch(module, |batch, b, rng| {
        batch.get_mut(x, b).iter_mut().for_each(|v| *v = uniform(rng, -120.0, 120.0));
        batch.get_mut(u, b).iter_mut().for_each(|v| *v = uniform(rng, -20.0, 20.0));
        let m = ((modes as f64) * unit(rng)).floor();
        batch.get_mut(mode, b)[0] = m;
        batch.get_mut(x_next_bar, b).iter_mut().for_each(|v| *v = uniform(rng, -1.0, 1.0));
        batch.get_mut(quad_bar, b)[0] = uniform(rng, 0.5, 2.0);
        if b % 3 == 0 {
            let i = b % n;
            let target = if b % 2 == 0 { 100.0 } else { -100.0 };
            let row = &batch.get(a, 0)[i * n..(i + 1) * n];
            let ax = row.iter().zip(batch.get(x, b)).fold(0.0, |s, (aij, xj)| s + aij * xj);
            let gain = batch.get(gains, 0)[m as usize * n + i];
            // Near the exact solution, look for a control that rounds onto the clamp's end.
            let (mut up, mut down) = ((target - ax) / gain, (target - ax) / gain);
            for _ in 0..64 {
                if let Some(c) = [up, down].into_iter().find(|c| ax + gain * c == target) {
                    batch.get_mut(u, b)[i] = c;
                    ties += 1;
                    break;
                }
                (up, down) = (up.next_up(), down.next_down());
            }
        }
    });
    (batch, ties)
}

/// The step and the VJP of `switched_lqr` at these sizes, with ties at the clamp's ends.
///
/// The step differs from the interpreter's only in `quad`: the IR squares with `pow`, which the
/// C library rounds to within 0.52 ulp rather than exactly (about one square in 1 200 differs
/// from `x * x` by an ulp), so `quad` is checked to 1e-14 relative and the rest bit for bit.
fn check_switched_lqr(sizes: &[(&str, f64)]) {
    let module = compile("switched_lqr.hmdp", sizes);
    let (batch, ties) = switched_lqr_batch(&module);
    assert!(ties > 0, "no control put the state exactly on the clamp's end");
    let (interp, reference) = run_both(&module, Kernel::Step, &batch);
    let x_next = id(&module, "x'");
    let clamped = (0..SCENARIOS).flat_map(|b| interp.get(x_next, b).to_vec()).filter(|v| v.abs() == 100.0).count();
    assert!(clamped > ties, "the batch has too few states beyond the clamp");
    assert_agree(&module, Kernel::Step, &interp, &reference, |name| if name == "quad" { 1e-14 } else { 0.0 });
    let (interp, reference) = run_both(&module, Kernel::Vjp, &batch);
    assert_agree(&module, Kernel::Vjp, &interp, &reference, |_| 1e-12);
}

#[test]
fn inventory_step_and_vjp_agree_with_the_interpreter() {
    check_inventory(&[]);
}

#[test]
fn switched_lqr_step_and_vjp_agree_with_the_interpreter() {
    check_switched_lqr(&[]);
}

#[test]
fn sizes_other_than_the_defaults_agree_too() {
    check_inventory(&[("items", 50.0)]);
    check_inventory(&[("items", 3.0), ("lead", 2.0)]);
    check_inventory(&[("items", 7.0), ("lead", 5.0)]);
    check_switched_lqr(&[("n", 48.0)]);
    check_switched_lqr(&[("n", 5.0), ("modes", 3.0)]);
}

#[test]
fn only_the_two_models_with_their_exact_interface_are_recognised() {
    for path in common::models() {
        let module = compile_path(&path, &Options::default());
        let expected = matches!(module.name.as_str(), "joint_replenishment" | "switched_lqr");
        assert_eq!(reference::for_module(&module).is_some(), expected, "{}", path.display());
    }
    // The reference takes only valid modules: a changed module is validated again first.
    let valid = |m: Module| ValidModule::new(m).expect("the changed module is still valid");
    let inventory = compile("inventory.hmdp", &[]);
    let mut renamed = (*inventory).clone();
    renamed.buffers[id(&inventory, "post")].name = "leftover".into();
    assert!(reference::for_module(&valid(renamed)).is_none(), "a renamed let");
    let mut retyped = (*inventory).clone();
    retyped.buffers[id(&inventory, "q")].kind = BufferKind::Noise;
    let problems = ValidModule::new(retyped).expect_err("an action that became noise is refused before any backend");
    assert!(problems.iter().any(|p| p.contains("`q`")), "{problems:?}");
    let mut other_name = (*inventory).clone();
    other_name.name = "switched_lqr".into();
    assert!(reference::for_module(&valid(other_name)).is_none(), "another model's name");
    let source = std::fs::read_to_string(common::root().join("models/switched_lqr.hmdp")).expect("model");
    let model = hmdp::check::check_source(&source, &hmdp::check::NoFiles, &Options::default()).model.expect("checks");
    let undifferentiated = valid(hmdp::ir::lower::lower(&model));
    assert!(reference::for_module(&undifferentiated).is_none(), "a module without adjoints");
}

#[test]
fn kernels_other_than_step_and_vjp_are_refused() {
    let module = compile("inventory.hmdp", &[]);
    let reference = reference::for_module(&module).expect("recognised");
    let mut batch = inventory_batch(&module);
    for kernel in [Kernel::Bounds, Kernel::Regimes] {
        let error = backend::run(reference.as_ref(), kernel, &mut batch).expect_err("refused");
        assert!(error.message.contains("only the `step` and `vjp` kernels"), "{}", error.message);
    }
}

#[test]
fn a_mode_outside_its_set_is_the_interpreters_error() {
    let module = compile("switched_lqr.hmdp", &[]);
    let reference = reference::for_module(&module).expect("recognised");
    let (mut batch, _) = switched_lqr_batch(&module);
    batch.get_mut(id(&module, "mode"), 4)[0] = 2.0;
    for kernel in [Kernel::Step, Kernel::Vjp] {
        let by_interp = backend::run(&Interp::new(&module), kernel, &mut batch.clone()).expect_err("interp");
        let by_reference = backend::run(reference.as_ref(), kernel, &mut batch.clone()).expect_err("reference");
        assert_eq!(by_reference.message, by_interp.message);
    }
}
