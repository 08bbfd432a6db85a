//! Gradients are proven, not assumed: the VJP of every shipped model and of models written to
//! exercise every operation agrees with central finite differences, a hand-derived gradient is
//! reproduced exactly, and a corrupted VJP is caught.

mod common;

use std::path::Path;

use hmdp::ir::{Expr, Module, ValidModule};
use hmdp::sim;

/// A model file compiled as every command compiles it (reformulated and differentiated).
fn compile(path: &Path) -> ValidModule {
    common::compile_file(path, &[])
}

/// The check of a module the test changed, which must still be valid.
fn gradcheck_changed(module: Module, points: usize) -> sim::gradcheck::Report {
    gradcheck(&ValidModule::new(module).expect("the changed module is still valid"), points)
}

fn gradcheck(module: &ValidModule, points: usize) -> sim::gradcheck::Report {
    let instance = sim::instance(module, 1).expect("instance");
    sim::gradcheck::check(module, &instance, 1, points).expect("gradcheck runs")
}

#[test]
fn vjp_matches_finite_differences_on_every_model() {
    let mut paths = common::models();
    for entry in std::fs::read_dir(common::root().join("tests/gradients")).expect("folder") {
        paths.push(entry.expect("entry").path());
    }
    for path in paths.iter().filter(|p| p.extension().is_some_and(|x| x == "hmdp")) {
        let module = compile(path);
        let report = gradcheck(&module, 6);
        let checked: usize = report.inputs.iter().map(|i| i.checked).sum();
        assert!(checked > 0, "{}: no element could be checked", path.display());
        for input in &report.inputs {
            assert!(
                input.max_error <= 1e-6,
                "{}: gradient of `{}` off by {:.3e} (point, element, vjp, fd) = {:?}",
                path.display(),
                input.name,
                input.max_error,
                input.worst
            );
        }
    }
}

#[test]
fn vjp_reproduces_a_hand_derived_gradient() {
    // x' = a x + u, cost = x² + u²: x̄ = a x̄' + 2 x c̄ and ū = x̄' + 2 u c̄.
    let source = "model lin\nparam a = 0.7\nstate x = 0\naction u: real\nstep {\n  x' = a * x + u\n  cost c = x^2 + u^2\n}\nhorizon 1\n";
    let module = common::compile_text(source, &common::root(), &[]);
    let find = |name: &str| module.buffers.iter().position(|b| b.name == name).expect(name);
    let mut buffers = sim::instance(&module, 0).expect("instance");
    let (x, u) = (1.3, -0.4);
    let (next_bar, cost_bar) = (0.25, 2.0);
    buffers.values[find("x")][0] = x;
    buffers.values[find("u")][0] = u;
    buffers.values[find("x'.adj")][0] = next_bar;
    buffers.values[find("c.adj")][0] = cost_bar;
    hmdp::backend::Machine::new(&module, &mut buffers, None).run(&module.vjp).expect("vjp runs");
    assert_eq!(buffers.values[find("x.adj")][0], 0.7 * next_bar + 2.0 * x * cost_bar);
    assert_eq!(buffers.values[find("u.adj")][0], next_bar + 2.0 * u * cost_bar);
}

#[test]
fn a_wrong_gradient_is_caught() {
    let module = compile(&common::root().join("models/switched_lqr.hmdp"));
    assert!(gradcheck(&module, 2).max_error() <= 1e-6);
    // Perturb, one at a time, the constants that only the VJP uses (nodes created by
    // differentiation): at least one of them must change the gradient, and be caught.
    let vjp_constants: Vec<usize> = {
        let step_nodes = max_handle_in_step(&module);
        (step_nodes..module.exprs.len())
            .filter(|&i| matches!(module.exprs[hmdp::ir::Handle::new(i)], Expr::Const(_)))
            .collect()
    };
    assert!(!vjp_constants.is_empty());
    let mut caught = 0;
    for i in vjp_constants {
        let h = hmdp::ir::Handle::<Expr>::new(i);
        if let Expr::Const(c) = module.exprs[h] {
            let broken = replace_const(module.clone().into_inner(), i, c * 1.01 + 0.01);
            if gradcheck_changed(broken, 2).max_error() > 1e-6 {
                caught += 1;
            }
        }
    }
    assert!(caught > 0, "no perturbed VJP constant was detected");
    let mut empty = module.into_inner();
    empty.vjp.body.clear();
    assert!(gradcheck_changed(empty, 2).max_error() > 1e-6, "an empty VJP must fail the check");
}

fn max_handle_in_step(module: &Module) -> usize {
    // Lowering creates the step's nodes before differentiation adds the VJP's.
    let mut max = 0;
    fn visit(stmts: &[hmdp::ir::Stmt], max: &mut usize) {
        for s in stmts {
            match s {
                hmdp::ir::Stmt::For { body, .. } => visit(body, max),
                hmdp::ir::Stmt::Store { value, .. } => *max = (*max).max(value.index() + 1),
                _ => {}
            }
        }
    }
    visit(&module.step.body, &mut max);
    max
}

fn replace_const(module: Module, index: usize, value: f64) -> Module {
    // Rebuild the arena with one constant changed (the arena has no mutable access by design).
    let mut exprs = hmdp::ir::Arena::default();
    for (h, e) in module.exprs.iter() {
        let e = if h.index() == index { Expr::Const(value) } else { e.clone() };
        exprs.push(e, module.exprs.span(h));
    }
    Module { exprs, ..module }
}

/// Where bounds read the state, the check covers their derivative too (`bounds_vjp`, added to
/// the step's): a `bounds_vjp` missing any one of its statements is caught.
#[test]
fn a_derivative_that_ignores_a_bound_is_caught() {
    let module = compile(&common::root().join("models/energy_storage.hmdp"));
    assert!(gradcheck(&module, 16).max_error() <= 1e-6);
    let statements = module.bounds_vjp.body.len();
    assert!(statements >= 2, "both actions' upper bounds read the state");
    for k in 0..statements {
        let mut broken = module.clone().into_inner();
        broken.bounds_vjp.body.remove(k);
        assert!(gradcheck_changed(broken, 16).max_error() > 1e-6, "statement {k} of bounds_vjp left out unnoticed");
    }
}
