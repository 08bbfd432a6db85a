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
//! What is recognised, for an action `q` whose lower bound is 0 (`real >= 0`, or
//! `real in [0, hi]`; a bound or threshold may be a constant parameter, which `--set` changes):
//! - `q[...] > 0`, `q[...] != 0`, `q[...] == 0` and the mirrored forms: one regime per element
//!   of `q` (the new action `q.regime` has `q`'s dimensions, indexed as the comparison indexes `q`);
//! - `sum(i in I) q[i] > 0` over all of a one-dimensional `q`: one regime shared by all elements
//!   (`q.order`);
//! - a comparison of `q[...]` with a number strictly inside its constant bounds: pieces of the
//!   domain chosen by `q.piece` (any lower bound). With a shared order too, `q.order` decides
//!   whether `q` acts and `q.piece` where each element lies when it does.
//!
//! An operand may be a `let` (`let total = sum(i in I) q[i]`, `total > 0`): `let`s are followed
//! to their values, an indexed one when it is read at plain index names.
//!
//! Every rewrite records its [`Choice`]: how the new discrete action follows from values of the
//! user's action, so a declared policy that sets `q` can be scored on the rewritten model
//! ([`Rewrite::choose`], [`choose_all`]).
//!
//! - a comparison of the whole sum of a one-dimensional `q` (`real >= 0`, no upper bound, no
//!   `when`, no element compared on its own) with a number above 0, a capacity on the total: `q`
//!   is split into `q.total` and shares `q.share`, `q = q.total * softmax(q.share)` computed
//!   first in the step, and the total's domain is cut into pieces (`q.total.piece`).
//!
//! - an action declared with a joint bound on its sum (`real >= 0, sum <= stock`, a
//!   [`BufferKind::SumBound`]) is always split the same way, and the bound becomes the upper
//!   bound of `q.total`: the total is drawn within `[0, bound]`, so the sum never exceeds it.
//!
//! Not yet rewritten, and reported as jumps with the reason ([`why_kept`]): a fixed cost at a
//! lower bound other than 0, a threshold that is not known at compile time, and jumps in the
//! state, which no choice of the policy can remove.

use crate::diagnostics::Span;
use crate::ir::*;

/// One rewrite, for the compile report.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    pub span: Span,
    /// The new discrete action.
    pub action: BufferId,
    pub description: String,
    /// How the new action's value follows from the value of the user's action.
    pub choice: Choice,
}

/// What a new discrete action says about the user's action, so that values of the user's
/// actions (set by a declared policy, or read from a run) map to the rewritten model's choices.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    /// `zero` (0) where the continuous action `of` is 0 — for `shared`, where all of it is —
    /// else `positive` (1).
    Regime { of: BufferId, shared: bool },
    /// The piece of the domain of `of` each element lies in: the piece `zero` at 0 when `zero`,
    /// else the last piece whose start the value reaches (a value at a cut belongs to the piece
    /// above it). `starts` has one start per label.
    Pieces { of: BufferId, starts: Vec<f64>, zero: bool },
    /// `of` (now computed in the step) is `total * softmax(shares)`: `total` is the sum of `of`,
    /// and `shares` the logarithms of its elements (0 for all when the sum is 0).
    Total { of: BufferId, total: BufferId, shares: BufferId },
}

impl Rewrite {
    /// Writes the new discrete action from the user's action, both in `values` (one vector per
    /// buffer of the module, as a scenario's buffers hold them): the choice under which the
    /// rewritten step computes what the original step computes for those values.
    pub fn choose(&self, values: &mut [Vec<f64>]) {
        let Some(user) = values.get(self.of()).cloned() else { return };
        if let Choice::Total { total, shares, .. } = &self.choice {
            let sum: f64 = user.iter().sum();
            if let Some(t) = values.get_mut(*total) {
                t.iter_mut().for_each(|t| *t = sum);
            }
            if let Some(s) = values.get_mut(*shares) {
                for (s, v) in s.iter_mut().zip(&user) {
                    *s = if sum > 0.0 { v.ln() } else { 0.0 };
                }
            }
            return;
        }
        let Some(chosen) = values.get_mut(self.action) else { return };
        match &self.choice {
            Choice::Regime { shared: true, .. } => {
                let positive = user.iter().any(|v| *v != 0.0);
                chosen.iter_mut().for_each(|c| *c = f64::from(u8::from(positive)));
            }
            Choice::Regime { shared: false, .. } => {
                for (c, v) in chosen.iter_mut().zip(&user) {
                    *c = f64::from(u8::from(*v != 0.0));
                }
            }
            Choice::Total { .. } => {}
            Choice::Pieces { starts, zero, .. } => {
                let first = usize::from(*zero);
                for (c, v) in chosen.iter_mut().zip(&user) {
                    let piece = if *zero && *v == 0.0 {
                        0
                    } else {
                        (first..starts.len()).rev().find(|&k| *v >= starts[k]).unwrap_or(first)
                    };
                    *c = piece as f64;
                }
            }
        }
    }

    /// The user's action this rewrite is about.
    pub fn of(&self) -> BufferId {
        match self.choice {
            Choice::Regime { of, .. } | Choice::Pieces { of, .. } | Choice::Total { of, .. } => of,
        }
    }
}

/// Writes every action the reformulation added from the user's continuous actions in `values`
/// (see [`Rewrite::choose`]), in the order of `rewrites`: a split total comes before the pieces
/// of that total, which read it.
pub fn choose_all(rewrites: &[Rewrite], values: &mut [Vec<f64>]) {
    for r in rewrites {
        r.choose(values);
    }
}

const LABELS: [&str; 2] = ["zero", "positive"];

/// Rewrites every recognised jump in a validated module (before differentiation).
pub fn reformulate(module: &mut Module) -> Vec<Rewrite> {
    let mut rewrites = Vec::new();
    split_totals(module, &mut rewrites);
    let handles: Vec<Handle<Expr>> = reachable_from_step(module);
    let plan = plan_pieces(module, &handles);
    // A shared order decision comes first: the piece and regime comparisons of its action read
    // it, since an action that does not order is 0 whatever piece was chosen for it.
    let mut orders: Vec<(BufferId, BufferId)> = Vec::new();
    for &(action, span) in &plan.shared {
        orders.push((action, regime_action(module, action, true, &mut rewrites, span)));
    }
    let mut piece_actions: Vec<(BufferId, BufferId, Vec<f64>)> = Vec::new();
    for (action, pieces) in &plan.pieces {
        let piece = piece_action(module, *action, pieces, &mut rewrites, pieces.span);
        piece_actions.push((*action, piece, pieces.starts.clone()));
    }
    let order_of = |action: BufferId| orders.iter().find(|(a, _)| *a == action).map(|(_, o)| *o);
    // From the highest handle down: a splice renumbers only the nodes after it.
    for h in handles.into_iter().rev() {
        if let Some((target, op, c)) = interior(module, h)
            && let Some((_, piece, starts)) = piece_actions.iter().find(|(a, _, _)| *a == target.buffer)
        {
            // `q > c` holds exactly in the pieces from the one that starts at `c` on; at the
            // lower bound (an action that does not order) it holds for `<` and `<=` only.
            let first_above = starts.iter().position(|s| *s == c).unwrap_or(starts.len()) as f64;
            let (op, label, idle) = match op {
                BinaryOp::Gt | BinaryOp::Ge => (BinaryOp::Ge, first_above, 0.0),
                _ => (BinaryOp::Lt, first_above, 1.0),
            };
            let chosen = Expr::Load { buffer: *piece, index: target.index };
            compare_chosen(module, h, chosen, op, label, order_of(target.buffer).map(|o| (o, idle)));
            continue;
        }
        let Some((target, op, shared)) = recognise(module, h) else { continue };
        // At 0, `q == 0` holds and `q > 0`, `q != 0` do not.
        let idle = if op == BinaryOp::Eq { 1.0 } else { 0.0 };
        if let Some((_, piece, _)) = piece_actions.iter().find(|(a, _, _)| *a == target.buffer).filter(|_| !shared) {
            // The action is cut into pieces whose first is `zero`.
            let op = if op == BinaryOp::Eq { BinaryOp::Eq } else { BinaryOp::Ne };
            let chosen = Expr::Load { buffer: *piece, index: target.index };
            compare_chosen(module, h, chosen, op, 0.0, order_of(target.buffer).map(|o| (o, idle)));
            continue;
        }
        let span = module.exprs.span(h);
        let action = regime_action(module, target.buffer, shared, &mut rewrites, span);
        // The comparison becomes "the regime is `positive`" (or `zero` for `==`).
        let index: Vec<Handle<Expr>> = if shared { Vec::new() } else { target.index.clone() };
        let label = if op == BinaryOp::Eq { 0.0 } else { 1.0 };
        let order = order_of(target.buffer).filter(|_| !shared).map(|o| (o, idle));
        compare_chosen(module, h, Expr::Load { buffer: action, index }, BinaryOp::Eq, label, order);
    }
    rewrites.sort_by_key(|r| r.span.start);
    rewrites
}

/// Replaces the comparison `h` by `chosen op label`; when the action also has a shared order
/// decision `order`, by `if order is positive then chosen op label else idle`, `idle` being the
/// comparison's value at the lower bound 0, where an action that does not order stays.
fn compare_chosen(
    module: &mut Module,
    h: Handle<Expr>,
    chosen: Expr,
    op: BinaryOp,
    label: f64,
    order: Option<(BufferId, f64)>,
) {
    replace(module, h, |arena, span| {
        let lhs = arena.push(chosen, span);
        let rhs = arena.push(Expr::Const(label), span);
        let compare = arena.push(Expr::Binary { op, lhs, rhs }, span);
        if let Some((order, idle)) = order {
            let chosen = arena.push(Expr::Load { buffer: order, index: Vec::new() }, span);
            let positive = arena.push(Expr::Const(1.0), span);
            let cond = arena.push(Expr::Binary { op: BinaryOp::Eq, lhs: chosen, rhs: positive }, span);
            let otherwise = arena.push(Expr::Const(idle), span);
            arena.push(Expr::Select { cond, then: compare, otherwise }, span);
        }
    });
}

/// `sum(i in I) q[i] op c` with `c` a number above 0 and `q` one-dimensional with the lower
/// bound 0 and no upper bound: `q` itself, the whole of it, compared with `c`.
fn sum_threshold(module: &Module, h: Handle<Expr>) -> Option<(BufferId, BinaryOp, f64)> {
    let (a, op, c) = against_constant(module, h)?;
    // Before following `let`s: every `x + 1` is a binary node with a number too, and following
    // each one's chain would make compiling a long chain of lets quadratic.
    if !matches!(op, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge) || c <= 0.0 {
        return None;
    }
    let Expr::Reduce { op: ReduceOp::Sum, var, set, body } = module.exprs[through_lets(module, a)?.0].clone() else {
        return None;
    };
    let Expr::Load { buffer, index } = &module.exprs[body] else { return None };
    let b = &module.buffers[*buffer];
    let whole = b.kind == BufferKind::Continuous
        && b.dims == [set]
        && matches!(index.as_slice(), [i] if module.exprs[*i] == Expr::Var(var));
    whole.then_some((*buffer, op, c))
}

/// A threshold on the sum of a non-negative action (a truck's capacity, `sum(i in I) q[i] > 100`)
/// is a jump in every element. The action is split into a total and shares: new continuous
/// actions `q.total` (scalar, `>= 0`) and `q.share[I]` (unbounded), and `q` becomes a value the
/// step computes first, `q[i] = q.total * exp(q.share[i]) / sum(j in I) exp(q.share[j])`. The
/// total's domain is then cut into pieces at the thresholds like any action's (`q.total.piece`),
/// so each regime's continuous part is smooth. Only an action whose every comparison is one of
/// its whole sum is split: a bound above, a `when`, or a comparison of one element keeps it.
fn split_totals(module: &mut Module, rewrites: &mut Vec<Rewrite>) {
    // An action with a joint bound on its sum is split whatever the step does with it: the
    // policy draws its total within `[0, bound]`, so the sum never exceeds the bound.
    let bounded: Vec<(BufferId, BufferId)> = module
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(id, b)| match b.kind {
            BufferKind::SumBound { action } => Some((action, id)),
            _ => None,
        })
        .collect();
    for (action, bound) in bounded {
        split_bounded(module, action, bound, rewrites);
    }
    let handles = reachable_from_step(module);
    let mut candidates: Vec<(BufferId, Span)> = Vec::new();
    for &h in &handles {
        if let Some((action, _, _)) = sum_threshold(module, h)
            && !candidates.iter().any(|(a, _)| *a == action)
        {
            candidates.push((action, module.exprs.span(h)));
        }
    }
    for (action, span) in candidates {
        let element_compared = handles.iter().any(|&h| {
            interior(module, h).is_some_and(|(t, _, _)| t.buffer == action)
                || recognise(module, h).is_some_and(|(t, _, shared)| t.buffer == action && !shared)
        });
        let has = |kind: BufferKind| module.buffers.iter().any(|b| b.kind == kind);
        let splittable = !element_compared
            && constant_lower_bound(module, action) == Some(0.0)
            && !has(BufferKind::Bound { action, upper: true })
            && !has(BufferKind::Regime { action });
        if splittable {
            split(module, action, span, rewrites);
        }
    }
}

/// Splits an action declared with a joint bound on its sum (`real >= 0, sum <= stock`) into a
/// total and shares (see [`split_totals`]); the bound on the sum becomes the total's upper bound,
/// computed where it was (`bounds`, or `regimes` when it reads a discrete action), so the policy
/// squashes the total into `[0, bound]` and a bound that reads the state is differentiated like
/// any other (`bounds_vjp`).
fn split_bounded(module: &mut Module, action: BufferId, bound: BufferId, rewrites: &mut Vec<Rewrite>) {
    let span = [&module.bounds, &module.regimes]
        .into_iter()
        .find_map(|p| store_value(&p.body, bound))
        .map_or_else(Span::default, |value| module.exprs.span(value));
    let q = module.buffers[action].name.clone();
    let Some(&set) = module.buffers[action].dims.first() else { return };
    let (total, shares) = into_total_and_shares(module, action, span);
    module.buffers[bound].kind = BufferKind::Bound { action: total, upper: true };
    module.buffers[bound].name = format!("{q}.total.hi");
    rewrites.push(Rewrite {
        span,
        action: total,
        description: format!(
            "a bound on the sum of `{q}`: new continuous actions `{q}.total` (within [0, the bound]) and `{q}.share[{}]`; `{q}` = `{q}.total` × softmax(`{q}.share`)",
            module.sets[set].name
        ),
        choice: Choice::Total { of: action, total, shares },
    });
}

/// Turns the one-dimensional, non-negative continuous action `action` into a `let` the step
/// computes first from two new continuous actions, its total (`q.total`, which takes over the
/// lower bound 0) and shares (`q.share`, unbounded):
/// `q[i] = q.total * exp(q.share[i]) / sum(j in I) exp(q.share[j])`. Returns (total, shares).
fn into_total_and_shares(module: &mut Module, action: BufferId, span: Span) -> (BufferId, BufferId) {
    let q = module.buffers[action].name.clone();
    let dims = module.buffers[action].dims.clone();
    let set = dims.first().copied().unwrap_or_default();
    let push = |module: &mut Module, name: String, kind: BufferKind, dims: Vec<SetId>| {
        module.buffers.push(Buffer { name, kind, dims, elem: ElemType::Real, labels: Vec::new(), data: None });
        module.buffers.len() - 1
    };
    let total = push(module, format!("{q}.total"), BufferKind::Continuous, Vec::new());
    let shares = push(module, format!("{q}.share"), BufferKind::Continuous, dims.clone());
    module.buffers[action].kind = BufferKind::Let;
    // The lower bound 0 of `q` becomes the total's.
    if let Some(lower) = module.buffers.iter().position(|b| b.kind == BufferKind::Bound { action, upper: false }) {
        module.buffers[lower].kind = BufferKind::Bound { action: total, upper: false };
        module.buffers[lower].dims = Vec::new();
        module.buffers[lower].name = format!("{q}.total.lo");
        let zero_bound = module.exprs.push(Expr::Const(0.0), span);
        module.bounds.body.retain(|s| !stores_into(s, lower));
        module.bounds.body.push(Stmt::Store { buffer: lower, index: Vec::new(), value: zero_bound });
    }
    // q[i] = total * exp(share[i]) / sum(j in I) exp(share[j]), first in the step.
    let first = module.next_var();
    let (i, j) = (Var(first), Var(first + 1));
    let e = &mut module.exprs;
    let vj = e.push(Expr::Var(j), span);
    let sj = e.push(Expr::Load { buffer: shares, index: vec![vj] }, span);
    let ej = e.push(Expr::Unary { op: UnaryOp::Exp, arg: sj }, span);
    let norm = e.push(Expr::Reduce { op: ReduceOp::Sum, var: j, set, body: ej }, span);
    let vi = e.push(Expr::Var(i), span);
    let si = e.push(Expr::Load { buffer: shares, index: vec![vi] }, span);
    let ei = e.push(Expr::Unary { op: UnaryOp::Exp, arg: si }, span);
    let share = e.push(Expr::Binary { op: BinaryOp::Div, lhs: ei, rhs: norm }, span);
    let t = e.push(Expr::Load { buffer: total, index: Vec::new() }, span);
    let value = e.push(Expr::Binary { op: BinaryOp::Mul, lhs: t, rhs: share }, span);
    let store = Stmt::For { var: i, set, body: vec![Stmt::Store { buffer: action, index: vec![i], value }] };
    module.step.body.insert(0, store);
    (total, shares)
}

/// Splits `action` into a total and shares (see [`split_totals`]) and cuts the total into pieces.
fn split(module: &mut Module, action: BufferId, span: Span, rewrites: &mut Vec<Rewrite>) {
    let q = module.buffers[action].name.clone();
    let dims = module.buffers[action].dims.clone();
    let Some(&set) = dims.first() else { return };
    // The comparisons of the sum, found while `q` is still an action: a threshold, or 0 (a
    // joint fixed cost, which gives the total a piece `zero`).
    let mut compared: Vec<(Handle<Expr>, BinaryOp, Option<f64>)> = Vec::new();
    for h in reachable_from_step(module) {
        if let Some((a, op, c)) = sum_threshold(module, h)
            && a == action
        {
            compared.push((h, op, Some(c)));
        } else if let Some((t, op, true)) = recognise(module, h)
            && t.buffer == action
        {
            compared.push((h, op, None));
        }
    }
    let mut cuts: Vec<f64> = compared.iter().filter_map(|(_, _, c)| *c).collect();
    let zero = compared.iter().any(|(_, _, c)| c.is_none());
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let (total, shares) = into_total_and_shares(module, action, span);
    rewrites.push(Rewrite {
        span,
        action: total,
        description: format!(
            "a threshold on the sum of `{q}`: new continuous actions `{q}.total` and `{q}.share[{}]`; `{q}` = `{q}.total` × softmax(`{q}.share`)",
            module.sets[set].name
        ),
        choice: Choice::Total { of: action, total, shares },
    });
    // The total's pieces, as for any action.
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut labels = Vec::new();
    if zero {
        starts.push(0.0);
        ends.push(0.0);
        labels.push("zero".to_string());
    }
    let mut from = 0.0;
    for to in cuts.iter().copied().chain(std::iter::once(f64::INFINITY)) {
        starts.push(from);
        ends.push(to);
        labels.push(format!("{}..{}", number(from), number(to)));
        from = to;
    }
    let plan = PiecePlan { starts: starts.clone(), ends, labels, zero, span };
    let piece = piece_action(module, total, &plan, rewrites, span);
    // Each comparison of the sum becomes one of the total's piece; from the highest handle
    // down, since a splice renumbers only the nodes after it (the nodes added above are later
    // than every comparison).
    for (h, op, c) in compared.into_iter().rev() {
        let chosen = Expr::Load { buffer: piece, index: Vec::new() };
        match c {
            Some(c) => {
                let first_above = starts.iter().position(|s| *s == c).unwrap_or(starts.len()) as f64;
                let op = if matches!(op, BinaryOp::Gt | BinaryOp::Ge) { BinaryOp::Ge } else { BinaryOp::Lt };
                compare_chosen(module, h, chosen, op, first_above, None);
            }
            None => {
                let op = if op == BinaryOp::Eq { BinaryOp::Eq } else { BinaryOp::Ne };
                compare_chosen(module, h, chosen, op, 0.0, None);
            }
        }
    }
}

fn stores_into(stmt: &Stmt, buffer: BufferId) -> bool {
    match stmt {
        Stmt::For { body, .. } => body.iter().any(|s| stores_into(s, buffer)),
        Stmt::Store { buffer: b, .. } => *b == buffer,
        _ => false,
    }
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

/// The constant value of an expression made only of numbers and of scalar parameters whose
/// value the compiler knows (`param brk = 30`, a one-number data file, or `--set brk=40`).
fn constant(module: &Module, h: Handle<Expr>) -> Option<f64> {
    let value = match &module.exprs[h] {
        Expr::Const(v) => *v,
        Expr::Unary { op, arg } => op.apply(constant(module, *arg)?),
        Expr::Binary { op, lhs, rhs } => op.apply(constant(module, *lhs)?, constant(module, *rhs)?),
        Expr::Load { buffer, index } if index.is_empty() && module.buffers[*buffer].kind == BufferKind::Param => {
            known_parameter(module, *buffer)?
        }
        _ => return None,
    };
    (!value.is_nan()).then_some(value)
}

/// The value of a scalar parameter known at compile time: the lowering stores a constant
/// parameter as a number in `instance`; a random one is a draw, and stays unknown.
fn known_parameter(module: &Module, param: BufferId) -> Option<f64> {
    if let Some(data) = &module.buffers[param].data {
        return match data.as_slice() {
            [v] => Some(*v),
            _ => None,
        };
    }
    match module.exprs[store_value(&module.instance.body, param)?] {
        Expr::Const(v) => Some(v),
        _ => None,
    }
}

/// The value stored into `buffer` by a program (outside any branch), with its loop variables.
fn store_of(stmts: &[Stmt], buffer: BufferId) -> Option<(Vec<Var>, Handle<Expr>)> {
    stmts.iter().find_map(|s| match s {
        Stmt::For { body, .. } => store_of(body, buffer),
        Stmt::Store { buffer: b, index, value } if *b == buffer => Some((index.clone(), *value)),
        _ => None,
    })
}

fn store_value(stmts: &[Stmt], buffer: BufferId) -> Option<Handle<Expr>> {
    store_of(stmts, buffer).map(|(_, value)| value)
}

/// The loop variables of the `let`s passed on the way to a node, each with the index it is read at.
type LetIndices = Vec<(Var, Handle<Expr>)>;

/// The longest chain of `let`s followed to find what a comparison compares.
const MAX_LET_CHAIN: usize = 64;

/// What `h` stands for, seen through `let`s: after `let total = sum(i in I) q[i]`, the
/// comparison `total > 0` compares the sum. Returns the node and the loop variables of the
/// `let`s passed, each with the index it is read at (`let o[i] = q[i]` read as `o[j]`).
fn through_lets(module: &Module, h: Handle<Expr>) -> Option<(Handle<Expr>, LetIndices)> {
    let mut node = h;
    let mut bound: Vec<(Var, Handle<Expr>)> = Vec::new();
    for _ in 0..MAX_LET_CHAIN {
        let Expr::Load { buffer, index } = &module.exprs[node] else { break };
        if module.buffers[*buffer].kind != BufferKind::Let {
            break;
        }
        let (vars, value) = store_of(&module.step.body, *buffer)?;
        let index: Vec<Handle<Expr>> = index.iter().map(|i| substitute(module, *i, &bound)).collect::<Option<_>>()?;
        bound = vars.into_iter().zip(index).collect();
        node = value;
    }
    Some((node, bound))
}

/// An index of a node inside a `let`, in terms of the place that reads the `let`: a loop
/// variable of the `let` becomes the index it is read at; an index that computes with such a
/// variable (`o[i + 1]`) is not followed.
fn substitute(module: &Module, index: Handle<Expr>, bound: &[(Var, Handle<Expr>)]) -> Option<Handle<Expr>> {
    if let Expr::Var(v) = module.exprs[index]
        && let Some((_, at)) = bound.iter().find(|(b, _)| *b == v)
    {
        return Some(*at);
    }
    let mut stack = vec![index];
    while let Some(n) = stack.pop() {
        if let Expr::Var(v) = module.exprs[n]
            && bound.iter().any(|(b, _)| *b == v)
        {
            return None;
        }
        stack.extend(module.exprs[n].children());
    }
    Some(index)
}

/// The element of a continuous action that `h` reads, through `let`s.
fn action_element(module: &Module, h: Handle<Expr>) -> Option<Target> {
    let (node, bound) = through_lets(module, h)?;
    let Expr::Load { buffer, index } = &module.exprs[node] else { return None };
    if module.buffers[*buffer].kind != BufferKind::Continuous {
        return None;
    }
    let index = index.iter().map(|i| substitute(module, *i, &bound)).collect::<Option<_>>()?;
    Some(Target { buffer: *buffer, index })
}

/// The value stored into an action's lower or upper bound; `Err` when it has none.
fn bound_value(module: &Module, action: BufferId, upper: bool) -> Result<Option<Handle<Expr>>, ()> {
    let bound = module.buffers.iter().position(|b| b.kind == BufferKind::Bound { action, upper }).ok_or(())?;
    fn find(stmts: &[Stmt], bound: BufferId) -> Option<Handle<Expr>> {
        stmts.iter().find_map(|s| match s {
            Stmt::For { body, .. } => find(body, bound),
            Stmt::Store { buffer, value, .. } if *buffer == bound => Some(*value),
            _ => None,
        })
    }
    Ok(find(&module.bounds.body, bound))
}

/// The action's lower bound, when it is a constant (its `bounds` store is a number).
fn constant_lower_bound(module: &Module, action: BufferId) -> Option<f64> {
    constant(module, bound_value(module, action, false).ok()??)
}

/// `q[...] op c` (or mirrored) with `c` strictly inside the action's constant bounds, `op` one
/// of `<`, `<=`, `>`, `>=`: a threshold that cuts the action's domain into pieces.
fn interior(module: &Module, h: Handle<Expr>) -> Option<(Target, BinaryOp, f64)> {
    let (a, op, c) = against_constant(module, h)?;
    if !matches!(op, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge) {
        return None;
    }
    let target = action_element(module, a)?;
    let (lo, hi) = constant_bounds(module, target.buffer)?;
    (lo < c && c < hi).then_some((target, op, c))
}

/// A comparison of an expression with a number, normalised to `A op c` (so `5 < q` is `q > 5`).
fn against_constant(module: &Module, h: Handle<Expr>) -> Option<(Handle<Expr>, BinaryOp, f64)> {
    let Expr::Binary { op, lhs, rhs } = module.exprs[h].clone() else { return None };
    match (constant(module, lhs), constant(module, rhs)) {
        (None, Some(c)) => Some((lhs, op, c)),
        (Some(c), None) => Some((rhs, mirror(op), c)),
        _ => None,
    }
}

fn mirror(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Le => BinaryOp::Ge,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Ge => BinaryOp::Le,
        other => other,
    }
}

/// The action's bounds when both are constants or absent (absent is infinite); `None` when a
/// bound depends on the state or the parameters.
fn constant_bounds(module: &Module, action: BufferId) -> Option<(f64, f64)> {
    let bound = |upper: bool| match bound_value(module, action, upper) {
        Err(()) => Some(if upper { f64::INFINITY } else { f64::NEG_INFINITY }),
        Ok(value) => constant(module, value?),
    };
    Some((bound(false)?, bound(true)?))
}

/// How an action's domain is cut: the start and end of each piece (the first is the lower
/// bound, or the single point 0 for a `zero` piece) and their labels.
struct PiecePlan {
    starts: Vec<f64>,
    ends: Vec<f64>,
    labels: Vec<String>,
    zero: bool,
    span: Span,
}

/// What the reformulation will add: the actions whose domain interior thresholds cut, and the
/// actions whose whole sum is compared with 0 (a shared order decision), with the place of the
/// first such comparison.
struct Plan {
    pieces: Vec<(BufferId, PiecePlan)>,
    shared: Vec<(BufferId, Span)>,
}

/// The actions whose domain interior thresholds cut, with their pieces. An action that is also
/// compared with 0 element by element, at a lower bound of 0, gets a first piece `zero` = [0, 0].
/// An action may have both pieces and a shared order decision (joint ordering with quantity
/// discounts): the order decides whether it acts at all, the pieces where each element lies.
fn plan_pieces(module: &Module, handles: &[Handle<Expr>]) -> Plan {
    let mut thresholds: Vec<(BufferId, f64, Span)> = Vec::new();
    let mut zero_per_element: Vec<BufferId> = Vec::new();
    let mut shared: Vec<(BufferId, Span)> = Vec::new();
    for &h in handles {
        if let Some((target, _, c)) = interior(module, h) {
            thresholds.push((target.buffer, c, module.exprs.span(h)));
        } else if let Some((target, _, is_shared)) = recognise(module, h) {
            if is_shared {
                if !shared.iter().any(|(a, _)| *a == target.buffer) {
                    shared.push((target.buffer, module.exprs.span(h)));
                }
            } else {
                zero_per_element.push(target.buffer);
            }
        }
    }
    let mut actions: Vec<BufferId> = thresholds.iter().map(|(a, _, _)| *a).collect();
    actions.sort_unstable();
    actions.dedup();
    let pieces = actions
        .into_iter()
        .filter_map(|action| {
            let (lo, hi) = constant_bounds(module, action)?;
            let mut cuts: Vec<f64> = thresholds.iter().filter(|(a, _, _)| *a == action).map(|(_, c, _)| *c).collect();
            cuts.sort_by(f64::total_cmp);
            cuts.dedup();
            let span = thresholds.iter().find(|(a, _, _)| *a == action).map_or(Span::default(), |(_, _, s)| *s);
            let zero = zero_per_element.contains(&action) && lo == 0.0;
            let mut starts = Vec::new();
            let mut ends = Vec::new();
            let mut labels = Vec::new();
            if zero {
                starts.push(0.0);
                ends.push(0.0);
                labels.push("zero".to_string());
            }
            let mut from = lo;
            for to in cuts.iter().copied().chain(std::iter::once(hi)) {
                starts.push(from);
                ends.push(to);
                labels.push(format!("{}..{}", number(from), number(to)));
                from = to;
            }
            Some((action, PiecePlan { starts, ends, labels, zero, span }))
        })
        .collect();
    Plan { pieces, shared }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The discrete action choosing a piece of `action`'s domain, with the piece bounds that the
/// `regimes` program computes from it.
fn piece_action(
    module: &mut Module,
    action: BufferId,
    plan: &PiecePlan,
    rewrites: &mut Vec<Rewrite>,
    span: Span,
) -> BufferId {
    let q = module.buffers[action].name.clone();
    let dims = module.buffers[action].dims.clone();
    module.buffers.push(Buffer {
        name: format!("{q}.piece"),
        kind: BufferKind::Discrete,
        dims: dims.clone(),
        elem: ElemType::Int,
        labels: plan.labels.clone(),
        data: None,
    });
    let piece = module.buffers.len() - 1;
    for (upper, values) in [(false, &plan.starts), (true, &plan.ends)] {
        module.buffers.push(Buffer {
            name: format!("{q}.piece_{}", if upper { "hi" } else { "lo" }),
            kind: BufferKind::PieceBound { action, upper },
            dims: dims.clone(),
            elem: ElemType::Real,
            labels: Vec::new(),
            data: None,
        });
        let bound = module.buffers.len() - 1;
        let first = module.next_var();
        let vars: Vec<Var> = (0..dims.len() as u32).map(|k| Var(first + k)).collect();
        // piece == 0 ? v0 : piece == 1 ? v1 : ... : v_last
        let mut value = module.exprs.push(Expr::Const(values.last().copied().unwrap_or(0.0)), span);
        for (k, v) in values.iter().enumerate().rev().skip(1) {
            let index = vars.iter().map(|var| module.exprs.push(Expr::Var(*var), span)).collect();
            let chosen = module.exprs.push(Expr::Load { buffer: piece, index }, span);
            let label = module.exprs.push(Expr::Const(k as f64), span);
            let cond = module.exprs.push(Expr::Binary { op: BinaryOp::Eq, lhs: chosen, rhs: label }, span);
            let then = module.exprs.push(Expr::Const(*v), span);
            value = module.exprs.push(Expr::Select { cond, then, otherwise: value }, span);
        }
        let mut stmt = Stmt::Store { buffer: bound, index: vars.clone(), value };
        for (var, set) in vars.into_iter().zip(&dims).rev() {
            stmt = Stmt::For { var, set: *set, body: vec![stmt] };
        }
        module.regimes.body.push(stmt);
    }
    rewrites.push(Rewrite {
        span,
        action: piece,
        description: format!(
            "thresholds in `{q}`: new discrete action `{q}.piece` {{{}}}{}; `{q}` stays within the chosen piece",
            plan.labels.join(", "),
            if dims.is_empty() { "" } else { " (one choice per element)" }
        ),
        choice: Choice::Pieces { of: action, starts: plan.starts.clone(), zero: plan.zero },
    });
    piece
}

/// `cmp(A, c)` where the comparison flips from false to true exactly when `A` leaves its lower
/// bound: returns the action element (or the whole action, `shared`) and the operator.
fn recognise(module: &Module, h: Handle<Expr>) -> Option<(Target, BinaryOp, bool)> {
    let (a, op, c) = against_constant(module, h)?;
    // Only the comparisons that separate "at the lower bound" from "above it".
    if !matches!(op, BinaryOp::Gt | BinaryOp::Ne | BinaryOp::Eq) {
        return None;
    }
    // The `zero` regime confines the action to its lower bound by not letting it act, and an
    // action that does not act is 0: so the bound must be 0.
    if let Some(target) = action_element(module, a) {
        return (constant_lower_bound(module, target.buffer)? == 0.0 && c == 0.0).then_some((target, op, false));
    }
    match module.exprs[through_lets(module, a)?.0].clone() {
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
            if shared {
                " (one choice for all elements)"
            } else if module.buffers[action].dims.is_empty() {
                ""
            } else {
                " (one choice per element)"
            }
        ),
        choice: Choice::Regime { of: action, shared },
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
    let first = module.next_var();
    let vars: Vec<Var> = (0..dims.len() as u32).map(|k| Var(first + k)).collect();
    let mut stmt = Stmt::Store { buffer, index: vars.clone(), value };
    for (var, set) in vars.into_iter().zip(dims).rev() {
        stmt = Stmt::For { var, set: *set, body: vec![stmt] };
    }
    stmt
}

/// Replaces node `h` by the nodes `build` pushes, the last of them taking `h`'s place, keeping
/// the arena's children-before-parents order: the new nodes are inserted at `h`'s position and
/// every later handle moves up. The new nodes may refer only to nodes before `h`.
fn replace(module: &mut Module, h: Handle<Expr>, build: impl FnOnce(&mut Arena<Expr>, Span)) {
    let at = h.index();
    let span = module.exprs.span(h);
    let mut rebuilt = Arena::default();
    let mut build = Some(build);
    let mut added = 0;
    for (handle, e) in module.exprs.iter() {
        if handle.index() == at {
            if let Some(build) = build.take() {
                build(&mut rebuilt, span);
            }
            added = rebuilt.len() - at;
            continue;
        }
        let mut e = e.clone();
        for child in e.children_mut() {
            *child = if child.index() < at { *child } else { Handle::new(child.index() + added - 1) };
        }
        rebuilt.push(e, module.exprs.span(handle));
    }
    let remap = |x: Handle<Expr>| if x.index() < at { x } else { Handle::new(x.index() + added - 1) };
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

/// Why the reformulation left a jump as it is, and what the user can write instead: the text
/// under a jump in the report of `hmdpc compile`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    /// The jump is in the state: no choice of the policy can remove it.
    pub in_state: bool,
    /// Which rule would have applied and what stopped it (in the state: why none can).
    pub reason: String,
    /// What the user can write instead.
    pub instead: String,
}

/// Why the jump at `h` was kept: `h` is a comparison, the condition of an `if`, or a rounding
/// or `%` of an active value, in a module the reformulation has run on.
pub fn why_kept(module: &Module, h: Handle<Expr>) -> Kept {
    let read = reads(module, h);
    let names = |kind: fn(&BufferKind) -> bool| -> Vec<String> {
        read.iter()
            .filter(|b| kind(&module.buffers[**b].kind))
            .map(|b| format!("`{}`", module.buffers[*b].name))
            .collect()
    };
    // A choice state is read like a discrete action: it is never the reason for a jump.
    let states: Vec<String> = read
        .iter()
        .filter(|b| module.buffers[**b].kind == BufferKind::State && !module.buffers[**b].holds_choice())
        .map(|b| format!("`{}`", module.buffers[*b].name))
        .collect();
    if !states.is_empty() {
        let with_choice = read.iter().any(|b| module.buffers[*b].kind == BufferKind::Discrete);
        let instead = if with_choice {
            "if the state holds a mode (the last choice, for a switching cost), declare it as a choice state \
             (`state last: choice { ... }`, `last' = mode`), which splits this into regimes; otherwise accept it \
             when it is small (simulation is exact; only the pathwise gradient does not see it)"
        } else {
            "accept it when it is small (simulation is exact; only the pathwise gradient does not see it)"
        };
        return Kept {
            in_state: true,
            reason: format!("it depends on the state {}, which no choice of the policy can change", states.join(", ")),
            instead: instead.into(),
        };
    }
    let kept = |reason: String, instead: &str| Kept { in_state: false, reason, instead: instead.to_string() };
    match &module.exprs[h] {
        Expr::Unary { op: UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round, .. } | Expr::Binary { op: BinaryOp::Rem, .. } => {
            kept(
                format!("rounding or `%` of the action {} has no rewrite", names(|k| *k == BufferKind::Continuous).join(", ")),
                "declare a whole quantity as a discrete action (`choice[SET]`), or use the action without rounding",
            )
        }
        Expr::Binary { op: BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne, .. } => {
            why_comparison_kept(module, h)
        }
        _ => kept(
            "the condition is not one comparison of an action with a number (it combines several with `and`, `or` or `not`)"
                .into(),
            "nest the branches, `if a then (if b then ... else ...) else ...`, each on one comparison of an action with a number",
        ),
    }
}

/// The buffers an expression reads, following `let`s into their values.
fn reads(module: &Module, h: Handle<Expr>) -> Vec<BufferId> {
    let mut out = Vec::new();
    let mut seen = vec![false; module.exprs.len()];
    let mut stack = vec![h];
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut seen[n.index()], true) {
            continue;
        }
        if let Expr::Load { buffer, .. } = &module.exprs[n] {
            if !out.contains(buffer) {
                out.push(*buffer);
            }
            if module.buffers[*buffer].kind == BufferKind::Let
                && let Some(value) = store_value(&module.step.body, *buffer)
            {
                stack.push(value);
            }
        }
        stack.extend(module.exprs[n].children());
    }
    out
}

/// What stopped the split of the action a sum compared with a threshold runs over.
fn why_not_split(module: &Module, sum: Handle<Expr>) -> String {
    let Some((node, _)) = through_lets(module, sum) else { return "here the sum is not of one action".into() };
    let Expr::Reduce { var, set, body, .. } = module.exprs[node].clone() else {
        return "here the sum is not of one action".into();
    };
    let Expr::Load { buffer, index } = &module.exprs[body] else { return "here the sum is not of one action".into() };
    let b = &module.buffers[*buffer];
    let q = &b.name;
    let has = |kind: BufferKind| module.buffers.iter().any(|x| x.kind == kind);
    if b.dims != [set] || !matches!(index.as_slice(), [i] if module.exprs[*i] == Expr::Var(var)) {
        format!("here the sum is not over the whole of a one-dimensional `{q}`")
    } else if constant_lower_bound(module, *buffer) != Some(0.0) {
        format!("here the lower bound of `{q}` is not 0")
    } else if has(BufferKind::Bound { action: *buffer, upper: true }) {
        format!("here `{q}` has an upper bound, which shares of a total cannot keep each element under")
    } else if has(BufferKind::Regime { action: *buffer }) {
        format!("here `{q}` has a `when`")
    } else {
        format!("here an element of `{q}` is also compared on its own")
    }
}

/// Why a comparison of actions (and no state) stayed a jump.
fn why_comparison_kept(module: &Module, h: Handle<Expr>) -> Kept {
    let kept = |reason: String, instead: String| Kept { in_state: false, reason, instead };
    let name = |b: BufferId| module.buffers[b].name.clone();
    let Some((a, op, c)) = against_constant(module, h) else {
        let Expr::Binary { lhs, rhs, .. } = module.exprs[h] else {
            return kept(
                "the comparison is not of an action with a number".into(),
                "compare an action with a number".into(),
            );
        };
        let acting =
            |side: Handle<Expr>| reads(module, side).iter().any(|b| module.buffers[*b].kind == BufferKind::Continuous);
        if acting(lhs) && acting(rhs) {
            return kept(
                "both sides of the comparison read continuous actions; only an action compared with a number is rewritten"
                    .into(),
                "compare one action with a number (`q > 10`), or make the quantity compared an action of its own".into(),
            );
        }
        let threshold = if acting(lhs) { rhs } else { lhs };
        let what = reads(module, threshold)
            .into_iter()
            .find_map(|b| match module.buffers[b].kind {
                BufferKind::Noise => Some(format!("reads the noise `{}`", name(b))),
                BufferKind::Param => Some(format!("reads `{}`, a parameter drawn at random", name(b))),
                BufferKind::Discrete => Some(format!("reads the discrete action `{}`", name(b))),
                _ => None,
            })
            .unwrap_or_else(|| "is not a number known at compile time".into());
        return kept(
            format!("a threshold is rewritten when it is a number known at compile time, but this one {what}"),
            "compare with a number or a constant `param` (which `--set` can change)".into(),
        );
    };
    if let Some(target) = action_element(module, a) {
        let q = name(target.buffer);
        let lower = match bound_value(module, target.buffer, false) {
            Err(()) => Ok(None),
            Ok(value) => value.and_then(|v| constant(module, v)).map(Some).ok_or(()),
        };
        let fixed_cost = matches!(op, BinaryOp::Gt | BinaryOp::Ne | BinaryOp::Eq);
        if fixed_cost {
            let zero_rule = format!(
                "a comparison of `{q}` with its lower bound becomes a `{{zero, positive}}` choice when the bound is 0"
            );
            match lower {
                Ok(Some(l)) if l == c && l != 0.0 => {
                    return kept(
                        format!(
                            "{zero_rule} (in `zero` the action does not act, and an action that does not act is 0), but it is {}",
                            number(l)
                        ),
                        format!(
                            "declare the part above the bound as the action, `real >= 0`, and add {} where it is used",
                            number(l)
                        ),
                    );
                }
                Ok(None) if c == 0.0 => {
                    return kept(
                        format!("{zero_rule}, but `{q}` has no lower bound"),
                        format!("declare `{q}: real >= 0` when it cannot be negative"),
                    );
                }
                Err(()) if c == 0.0 => {
                    return kept(
                        format!(
                            "{zero_rule}, but the lower bound of `{q}` is not known at compile time (it reads the state or a parameter drawn at random)"
                        ),
                        format!(
                            "declare `{q}: real >= 0` and put a lower limit that moves with the state as a `max` in the step"
                        ),
                    );
                }
                _ => {}
            }
        }
        let Some((lo, hi)) = constant_bounds(module, target.buffer) else {
            return kept(
                format!(
                    "a threshold cuts the domain of `{q}` into pieces when both its bounds are known at compile time, but a \
                     bound of `{q}` reads the state or a parameter drawn at random"
                ),
                format!(
                    "write the bounds of `{q}` as numbers or constant `param`s, and a limit that moves with the state as a `min` in the step"
                ),
            );
        };
        if !(lo < c && c < hi) {
            return kept(
                format!(
                    "a threshold cuts the domain of `{q}` into pieces when it lies inside the bounds, but {} is not inside [{}, {}]",
                    number(c),
                    number(lo),
                    number(hi)
                ),
                "drop the comparison, whose value does not change inside the bounds, or correct the threshold".into(),
            );
        }
        return kept(
            format!(
                "`==` or `!=` with {} holds at a single point inside the domain of `{q}`, which no piece can be",
                number(c)
            ),
            "compare with `<=`, `<`, `>=` or `>`".into(),
        );
    }
    if let Expr::Reduce { op: ReduceOp::Sum, .. } = module.exprs[through_lets(module, a).map_or(a, |(n, _)| n)] {
        return if c == 0.0 && matches!(op, BinaryOp::Gt | BinaryOp::Ne | BinaryOp::Eq) {
            kept(
                "a sum compared with 0 becomes a shared order decision when it runs over the whole of one one-dimensional \
                 action whose lower bound is 0"
                    .into(),
                "sum over the whole action, declared `real >= 0`, or write the order choice yourself".into(),
            )
        } else {
            kept(
                format!(
                    "a threshold on the sum of an action splits it into a total and shares when the sum runs over the whole \
                     of a one-dimensional action declared `real >= 0`, with no upper bound, no `when`, and no element compared \
                     on its own; {}",
                    why_not_split(module, a)
                ),
                "declare the action `real >= 0` without an upper bound (put a cap per element as a cost or a `min`), or write \
                 the choice of the range the total lies in yourself"
                    .into(),
            )
        };
    }
    kept(
        "the comparison is of an expression of actions, not of one action (or the whole sum of one) with a number"
            .into(),
        "compare the action itself with a number: `q > 10`, not `2 * q > 20`".into(),
    )
}
