//! Automatic reformulation of jumps in continuous actions into hybrid form.
//!
//! A fixed cost written as `K * (sum(i in I) q[i] > 0)` or `if q[i] > 0 then K else 0` is a jump
//! in the order quantities: the pathwise gradient cannot see it, so a policy trained on it never
//! learns to stop ordering. This pass rewrites such a comparison into a discrete choice: a new
//! discrete action `q.regime` with the labels `{zero, positive}`, the comparison replaced by
//! `q.regime == positive`, and `q` acting only in the `positive` regime (in `zero` it is 0, its
//! lower bound). The score-function gradient then handles the choice and the pathwise gradient
//! the quantity, which is exactly the hand-written `choice {skip, buy}` form.
//!
//! What is recognised, for an action `q` whose lower bound is the constant 0 (`real >= 0`, or
//! `real in [0, hi]`):
//! - `q[...] > 0`, `q[...] != 0`, `q[...] == 0` and the mirrored forms: one regime per element
//!   of `q` (the new action `q.regime` has `q`'s dimensions, indexed as the comparison indexes `q`);
//! - `sum(i in I) q[i] > 0` over all of a one-dimensional `q`: one regime shared by all elements
//!   (`q.order`).
//!
//! Not yet rewritten, and reported as jumps: comparisons with another threshold (a bulk discount
//! at `q > 100`, which needs regimes with their own bounds), a lower bound other than 0, and
//! jumps in the state, which no choice of the policy can remove.

use crate::diagnostics::Span;
use crate::ir::*;

/// One rewrite, for the compile report.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    pub span: Span,
    /// The new discrete action.
    pub action: BufferId,
    pub description: String,
}

const LABELS: [&str; 2] = ["zero", "positive"];

/// Rewrites every recognised jump in a validated module (before differentiation).
pub fn reformulate(module: &mut Module) -> Vec<Rewrite> {
    let mut rewrites = Vec::new();
    let handles: Vec<Handle<Expr>> = reachable_from_step(module);
    // From the highest handle down: a splice renumbers only the nodes after it.
    for h in handles.into_iter().rev() {
        let Some((target, op, shared)) = recognise(module, h) else { continue };
        let span = module.exprs.span(h);
        let action = regime_action(module, target.buffer, shared, &mut rewrites, span);
        // The comparison becomes "the regime is `positive`" (or `zero` for `==`).
        let index: Vec<Handle<Expr>> = if shared { Vec::new() } else { target.index.clone() };
        let label = if op == BinaryOp::Eq { 0.0 } else { 1.0 };
        splice(module, h, Expr::Load { buffer: action, index }, Expr::Const(label));
    }
    rewrites
}

struct Target {
    buffer: BufferId,
    index: Vec<Handle<Expr>>,
}

/// The nodes of the step, children before parents (arena order).
fn reachable_from_step(module: &Module) -> Vec<Handle<Expr>> {
    let mut seen = vec![false; module.exprs.len()];
    let mut stack: Vec<Handle<Expr>> = Vec::new();
    fn roots(stmts: &[Stmt], out: &mut Vec<Handle<Expr>>) {
        for s in stmts {
            match s {
                Stmt::For { body, .. } => roots(body, out),
                Stmt::Store { value, .. } => out.push(*value),
                Stmt::If { cond, then, otherwise } => {
                    out.push(*cond);
                    roots(then, out);
                    roots(otherwise, out);
                }
                Stmt::Accumulate { index, value, .. } => {
                    out.extend(index.iter().copied());
                    out.push(*value);
                }
            }
        }
    }
    roots(&module.step.body, &mut stack);
    while let Some(h) = stack.pop() {
        if std::mem::replace(&mut seen[h.index()], true) {
            continue;
        }
        stack.extend(module.exprs[h].children());
    }
    (0..module.exprs.len()).filter(|&i| seen[i]).map(Handle::new).collect()
}

/// The constant value of an expression made only of numbers.
fn constant(module: &Module, h: Handle<Expr>) -> Option<f64> {
    match &module.exprs[h] {
        Expr::Const(v) => Some(*v),
        Expr::Unary { op: UnaryOp::Neg, arg } => constant(module, *arg).map(|v| -v),
        _ => None,
    }
}

/// The action's lower bound, when it is a constant (its `bounds` store is a number).
fn constant_lower_bound(module: &Module, action: BufferId) -> Option<f64> {
    let bound = module.buffers.iter().position(|b| b.kind == BufferKind::Bound { action, upper: false })?;
    fn find(stmts: &[Stmt], bound: BufferId) -> Option<Handle<Expr>> {
        stmts.iter().find_map(|s| match s {
            Stmt::For { body, .. } => find(body, bound),
            Stmt::Store { buffer, value, .. } if *buffer == bound => Some(*value),
            _ => None,
        })
    }
    constant(module, find(&module.bounds.body, bound)?)
}

/// `cmp(A, c)` where the comparison flips from false to true exactly when `A` leaves its lower
/// bound: returns the action element (or the whole action, `shared`) and the operator.
fn recognise(module: &Module, h: Handle<Expr>) -> Option<(Target, BinaryOp, bool)> {
    let Expr::Binary { op, lhs, rhs } = module.exprs[h].clone() else { return None };
    // Normalise to `A op c`.
    let (a, c, op) = match (constant(module, lhs), constant(module, rhs)) {
        (None, Some(c)) => (lhs, c, op),
        (Some(c), None) => (
            rhs,
            c,
            match op {
                BinaryOp::Lt => BinaryOp::Gt,
                BinaryOp::Le => BinaryOp::Ge,
                BinaryOp::Gt => BinaryOp::Lt,
                BinaryOp::Ge => BinaryOp::Le,
                other => other,
            },
        ),
        _ => return None,
    };
    // Only the comparisons that separate "at the lower bound" from "above it".
    if !matches!(op, BinaryOp::Gt | BinaryOp::Ne | BinaryOp::Eq) {
        return None;
    }
    match module.exprs[a].clone() {
        // The `zero` regime confines the action to its lower bound by not letting it act, and an
        // action that does not act is 0: so the bound must be 0.
        Expr::Load { buffer, index } if module.buffers[buffer].kind == BufferKind::Continuous => {
            (constant_lower_bound(module, buffer)? == 0.0 && c == 0.0).then_some((Target { buffer, index }, op, false))
        }
        Expr::Reduce { op: ReduceOp::Sum, var, set, body } => {
            let Expr::Load { buffer, index } = module.exprs[body].clone() else { return None };
            let b = &module.buffers[buffer];
            // The sum must run over the whole (one-dimensional) action, and be at its bound only
            // when every element is: a lower bound of 0, so the sum is 0 exactly then.
            let whole = b.kind == BufferKind::Continuous
                && b.dims == [set]
                && matches!(index.as_slice(), [i] if module.exprs[*i] == Expr::Var(var));
            (whole && constant_lower_bound(module, buffer)? == 0.0 && c == 0.0).then_some((
                Target { buffer, index: Vec::new() },
                op,
                true,
            ))
        }
        _ => None,
    }
}

/// The regime action of `action` (shared or per element), created on first use.
fn regime_action(
    module: &mut Module,
    action: BufferId,
    shared: bool,
    rewrites: &mut Vec<Rewrite>,
    span: Span,
) -> BufferId {
    let name = format!("{}.{}", module.buffers[action].name, if shared { "order" } else { "regime" });
    if let Some(existing) = module.buffers.iter().position(|b| b.name == name) {
        return existing;
    }
    let dims = if shared { Vec::new() } else { module.buffers[action].dims.clone() };
    module.buffers.push(Buffer {
        name: name.clone(),
        kind: BufferKind::Discrete,
        dims,
        elem: ElemType::Int,
        labels: LABELS.iter().map(|l| l.to_string()).collect(),
        data: None,
    });
    let regime = module.buffers.len() - 1;
    confine(module, action, regime, shared);
    let q = module.buffers[action].name.clone();
    rewrites.push(Rewrite {
        span,
        action: regime,
        description: format!(
            "a jump in `{q}` at its lower bound: new discrete action `{name}` {{zero, positive}}; `{q}` acts only when `{name}` is positive{}",
            if shared { " (one choice for all elements)" } else { " (one choice per element)" }
        ),
    });
    regime
}

/// Makes `action` act only where its regime is `positive`, on top of its own `when`.
fn confine(module: &mut Module, action: BufferId, regime: BufferId, shared: bool) {
    let dims = module.buffers[action].dims.clone();
    let mask = match module.buffers.iter().position(|b| b.kind == BufferKind::Regime { action }) {
        Some(mask) => mask,
        None => {
            module.buffers.push(Buffer {
                name: format!("{}.active", module.buffers[action].name),
                kind: BufferKind::Regime { action },
                dims: dims.clone(),
                elem: ElemType::Bool,
                labels: Vec::new(),
                data: None,
            });
            let mask = module.buffers.len() - 1;
            let one = module.exprs.push(Expr::Const(1.0), Span::default());
            let store = store_over(module, mask, &dims, one);
            module.regimes.body.push(store);
            mask
        }
    };
    // Rewrite the mask's store: `mask[v] = old and regime[v or nothing] == positive`.
    fn rewrite(stmts: &mut [Stmt], mask: BufferId, regime: BufferId, shared: bool, exprs: &mut Arena<Expr>) {
        for s in stmts {
            match s {
                Stmt::For { body, .. } => rewrite(body, mask, regime, shared, exprs),
                Stmt::Store { buffer, index, value } if *buffer == mask => {
                    let position: Vec<Handle<Expr>> = if shared {
                        Vec::new()
                    } else {
                        index.iter().map(|v| exprs.push(Expr::Var(*v), Span::default())).collect()
                    };
                    let chosen = exprs.push(Expr::Load { buffer: regime, index: position }, Span::default());
                    let positive = exprs.push(Expr::Const(1.0), Span::default());
                    let acts =
                        exprs.push(Expr::Binary { op: BinaryOp::Eq, lhs: chosen, rhs: positive }, Span::default());
                    *value = exprs.push(Expr::Binary { op: BinaryOp::And, lhs: *value, rhs: acts }, Span::default());
                }
                _ => {}
            }
        }
    }
    rewrite(&mut module.regimes.body, mask, regime, shared, &mut module.exprs);
}

/// `buffer[v...] = value` inside one fresh loop per dimension.
fn store_over(module: &mut Module, buffer: BufferId, dims: &[SetId], value: Handle<Expr>) -> Stmt {
    let first = next_var(module);
    let vars: Vec<Var> = (0..dims.len() as u32).map(|k| Var(first + k)).collect();
    let mut stmt = Stmt::Store { buffer, index: vars.clone(), value };
    for (var, set) in vars.into_iter().zip(dims).rev() {
        stmt = Stmt::For { var, set: *set, body: vec![stmt] };
    }
    stmt
}

fn next_var(module: &Module) -> u32 {
    let mut max = 0;
    for (_, e) in module.exprs.iter() {
        if let Expr::Var(v) | Expr::Reduce { var: v, .. } = e {
            max = max.max(v.0 + 1);
        }
    }
    fn stmts(list: &[Stmt], max: &mut u32) {
        for s in list {
            match s {
                Stmt::For { var, body, .. } => {
                    *max = (*max).max(var.0 + 1);
                    stmts(body, max);
                }
                Stmt::If { then, otherwise, .. } => {
                    stmts(then, max);
                    stmts(otherwise, max);
                }
                Stmt::Store { index, .. } => index.iter().for_each(|v| *max = (*max).max(v.0 + 1)),
                Stmt::Accumulate { .. } => {}
            }
        }
    }
    for p in [&module.instance, &module.init, &module.noise, &module.bounds, &module.regimes, &module.step, &module.vjp]
    {
        stmts(&p.body, &mut max);
    }
    max
}

/// Replaces node `h` by `chosen == label`, keeping the arena's children-before-parents order:
/// the two operands are inserted just before `h`'s position and every later handle moves up by
/// two. `chosen` may refer only to nodes before `h`.
fn splice(module: &mut Module, h: Handle<Expr>, chosen: Expr, label: Expr) {
    let at = h.index();
    let remap = |x: Handle<Expr>| if x.index() < at { x } else { Handle::new(x.index() + 2) };
    let span = module.exprs.span(h);
    let mut rebuilt = Arena::default();
    for (handle, e) in module.exprs.iter() {
        if handle.index() == at {
            let lhs = rebuilt.push(chosen.clone(), span);
            let rhs = rebuilt.push(label.clone(), span);
            rebuilt.push(Expr::Binary { op: BinaryOp::Eq, lhs, rhs }, span);
            continue;
        }
        let mut e = e.clone();
        for child in e.children_mut() {
            *child = remap(*child);
        }
        rebuilt.push(e, module.exprs.span(handle));
    }
    module.exprs = rebuilt;
    fn stmts(list: &mut [Stmt], remap: &dyn Fn(Handle<Expr>) -> Handle<Expr>) {
        for s in list {
            match s {
                Stmt::For { body, .. } => stmts(body, remap),
                Stmt::Store { value, .. } => *value = remap(*value),
                Stmt::If { cond, then, otherwise } => {
                    *cond = remap(*cond);
                    stmts(then, remap);
                    stmts(otherwise, remap);
                }
                Stmt::Accumulate { index, value, .. } => {
                    index.iter_mut().for_each(|x| *x = remap(*x));
                    *value = remap(*value);
                }
            }
        }
    }
    for program in [
        &mut module.instance,
        &mut module.init,
        &mut module.noise,
        &mut module.bounds,
        &mut module.regimes,
        &mut module.step,
        &mut module.vjp,
    ] {
        stmts(&mut program.body, &remap);
    }
}
