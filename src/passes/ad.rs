//! Reverse-mode differentiation of the step, as IR: `step` ↦ `vjp`, and of the bounds that read
//! the state: `bounds` (and the bounds `regimes` computes) ↦ `bounds_vjp`.
//!
//! For the step `(s, d, u, ξ) → (s', c)` the `vjp` program computes, given the adjoints of the
//! next states `s̄'` and of the costs `c̄` (written by the caller into their adjoint buffers),
//! the adjoints of the states `s̄` and of the continuous actions `ū`. Discrete actions, choice
//! states, noise and parameters are constants for the derivative. Every backend runs the same `vjp`, so they
//! all compute the same derivative, and the interpreter is its reference.
//!
//! The program first recomputes the step (so that every `let` holds its forward value), then
//! visits the step's stores in reverse order. A store `x[i] = e` propagates its adjoint `x̄[i]`
//! into the buffers `e` reads, by [`Stmt::Accumulate`]: all uses of `x` come after its store,
//! so `x̄` is complete when its store is visited. Loops stay loops: a reduction's adjoint is a
//! loop over the same set, so the size of `vjp` does not depend on the model's sizes.
//!
//! Conventions at points where a derivative does not exist (documented for users in
//! `docs/language.md`): a branch condition (`if`, `match`, comparisons) is a constant, so the
//! derivative is that of the taken branch; `max(a, b)` passes the adjoint to `a` when `a >= b`,
//! `min(a, b)` to `a` when `a <= b`; a `max`/`min` reduction passes it to the first maximiser
//! (minimiser); `abs` has derivative 0 at 0; `floor`, `ceil`, `round` have derivative 0.
//!
//! Adjoint buffers of states, continuous actions and `let`s are zero when `vjp` starts.
//!
//! A continuous action is the squashing of a network output into its bounds, so when a bound
//! reads the state, the action moves with the state through the bound. `bounds_vjp` carries
//! that: the trainer writes the adjoints of the bounds (the action's adjoint times the
//! squashing's derivative in each bound) and runs it, and it adds `∂bound/∂state` times them into
//! the adjoints of the states, with the same conventions as `vjp`.

use std::collections::HashMap;

use crate::diagnostics::Span;
use crate::ir::*;

/// Adds the adjoint buffers and the `vjp` program to a module whose `step` is valid.
pub fn differentiate(module: &mut Module) {
    let mut ad = Ad::new(module);
    ad.run();
}

struct Ad<'m> {
    module: &'m mut Module,
    /// The adjoint buffer of each buffer that has one.
    adjoint: HashMap<BufferId, BufferId>,
    /// Whether an expression reads a buffer with an adjoint (memoised).
    active: HashMap<Handle<Expr>, bool>,
    next_var: u32,
}

impl<'m> Ad<'m> {
    fn new(module: &'m mut Module) -> Ad<'m> {
        let next_var = module.next_var();
        Ad { module, adjoint: HashMap::new(), active: HashMap::new(), next_var }
    }

    fn run(&mut self) {
        // A choice state and its next state hold labels, constants for the derivative like the
        // discrete actions they are given: they get no adjoint.
        let differentiable: Vec<BufferId> =
            (0..self.module.buffers.len()).filter(|&id| self.module.is_differentiable(id)).collect();
        for id in differentiable {
            let b = &self.module.buffers[id];
            let adjoint = Buffer {
                name: format!("{}.adj", b.name),
                kind: BufferKind::Adjoint { of: id },
                dims: b.dims.clone(),
                elem: ElemType::Real,
                labels: Vec::new(),
                data: None,
            };
            self.module.buffers.push(adjoint);
            self.adjoint.insert(id, self.module.buffers.len() - 1);
        }
        let mut body = self.module.step.body.clone();
        let forward = self.module.step.body.clone();
        for stmt in forward.iter().rev() {
            body.extend(self.reverse(stmt));
        }
        self.module.vjp = Program { body };
        self.bounds();
    }

    /// The `bounds_vjp` program: the bounds that read the state (directly, or through another
    /// bound) get adjoint buffers, and their stores — those of `regimes` (piece bounds, bounds
    /// that read a discrete action), then those of `bounds` — are visited backwards, adding into
    /// the adjoints of the states. A bound whose store is inactive gets no adjoint, so a model
    /// whose bounds are constants has an empty `bounds_vjp` and its module is unchanged.
    fn bounds(&mut self) {
        let is_bound = |kind: BufferKind| matches!(kind, BufferKind::Bound { .. } | BufferKind::PieceBound { .. });
        // In the order the programs store them, so that a bound read by a later one (a piece
        // bound clipped to the action's bounds) already has its adjoint when that one is visited.
        let stores: Vec<(BufferId, Handle<Expr>)> = [&self.module.bounds, &self.module.regimes]
            .into_iter()
            .flat_map(|p| stores(&p.body))
            .filter(|(buffer, _)| is_bound(self.module.buffers[*buffer].kind))
            .collect();
        // Only states and bounds carry derivatives here: the step's lets and actions are not read.
        self.active.clear();
        for (buffer, value) in stores {
            if self.is_active(value) && !self.adjoint.contains_key(&buffer) {
                let b = &self.module.buffers[buffer];
                let adjoint = Buffer {
                    name: format!("{}.adj", b.name),
                    kind: BufferKind::Adjoint { of: buffer },
                    dims: b.dims.clone(),
                    elem: ElemType::Real,
                    labels: Vec::new(),
                    data: None,
                };
                self.module.buffers.push(adjoint);
                self.adjoint.insert(buffer, self.module.buffers.len() - 1);
                // Expressions that read this bound are active from now on.
                self.active.clear();
            }
        }
        let mut body = Vec::new();
        for program in [self.module.regimes.body.clone(), self.module.bounds.body.clone()] {
            for stmt in program.iter().rev() {
                body.extend(self.reverse(stmt));
            }
        }
        self.module.bounds_vjp = Program { body };
    }

    /// The adjoint statements of one forward statement (a store inside its loops).
    fn reverse(&mut self, stmt: &Stmt) -> Vec<Stmt> {
        match stmt {
            Stmt::For { var, set, body } => {
                let inner: Vec<Stmt> = body.iter().rev().flat_map(|s| self.reverse(s)).collect();
                if inner.is_empty() { Vec::new() } else { vec![Stmt::For { var: *var, set: *set, body: inner }] }
            }
            Stmt::Store { buffer, index, value } => {
                let Some(&adjoint) = self.adjoint.get(buffer) else { return Vec::new() };
                let span = self.module.exprs.span(*value);
                let position = index.iter().map(|v| self.push(Expr::Var(*v), span)).collect();
                let seed = self.push(Expr::Load { buffer: adjoint, index: position }, span);
                self.expr(*value, seed)
            }
            Stmt::If { cond, then, otherwise } => {
                let then: Vec<Stmt> = then.iter().rev().flat_map(|s| self.reverse(s)).collect();
                let otherwise: Vec<Stmt> = otherwise.iter().rev().flat_map(|s| self.reverse(s)).collect();
                if then.is_empty() && otherwise.is_empty() {
                    Vec::new()
                } else {
                    vec![Stmt::If { cond: *cond, then, otherwise }]
                }
            }
            Stmt::Accumulate { .. } => Vec::new(),
        }
    }

    fn push(&mut self, e: Expr, span: Span) -> Handle<Expr> {
        self.module.exprs.push(e, span)
    }

    fn fresh(&mut self) -> Var {
        self.next_var += 1;
        Var(self.next_var - 1)
    }

    fn is_active(&mut self, h: Handle<Expr>) -> bool {
        if let Some(&known) = self.active.get(&h) {
            return known;
        }
        let result = match self.module.exprs[h].clone() {
            Expr::Const(_) | Expr::Var(_) | Expr::Sample { .. } => false,
            Expr::Load { buffer, .. } => self.adjoint.contains_key(&buffer),
            Expr::Unary { op, arg } => differentiable_unary(op) && self.is_active(arg),
            Expr::Binary { op, lhs, rhs } => {
                !op.is_condition() && {
                    let a = self.is_active(lhs);
                    self.is_active(rhs) || a
                }
            }
            Expr::Select { then, otherwise, .. } => {
                let t = self.is_active(then);
                self.is_active(otherwise) || t
            }
            Expr::Reduce { op, body, .. } => !matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) && self.is_active(body),
        };
        self.active.insert(h, result);
        result
    }

    fn bin(&mut self, op: BinaryOp, lhs: Handle<Expr>, rhs: Handle<Expr>, span: Span) -> Handle<Expr> {
        self.push(Expr::Binary { op, lhs, rhs }, span)
    }

    fn un(&mut self, op: UnaryOp, arg: Handle<Expr>, span: Span) -> Handle<Expr> {
        self.push(Expr::Unary { op, arg }, span)
    }

    fn num(&mut self, value: f64, span: Span) -> Handle<Expr> {
        self.push(Expr::Const(value), span)
    }

    /// Statements that add `seed × ∂e/∂x` to the adjoint of every active buffer element `x`
    /// that `e` reads.
    fn expr(&mut self, e: Handle<Expr>, seed: Handle<Expr>) -> Vec<Stmt> {
        if !self.is_active(e) {
            return Vec::new();
        }
        let span = self.module.exprs.span(e);
        match self.module.exprs[e].clone() {
            Expr::Const(_) | Expr::Var(_) | Expr::Sample { .. } => Vec::new(),
            Expr::Load { buffer, index } => match self.adjoint.get(&buffer) {
                Some(&adjoint) => vec![Stmt::Accumulate { buffer: adjoint, index, value: seed }],
                None => Vec::new(),
            },
            Expr::Unary { op, arg } => {
                let derivative = match op {
                    UnaryOp::Neg => self.num(-1.0, span),
                    // d exp(a) = exp(a): the forward node itself.
                    UnaryOp::Exp => e,
                    UnaryOp::Log => {
                        let one = self.num(1.0, span);
                        self.bin(BinaryOp::Div, one, arg, span)
                    }
                    UnaryOp::Sqrt => {
                        let half = self.num(0.5, span);
                        self.bin(BinaryOp::Div, half, e, span)
                    }
                    UnaryOp::Tanh => {
                        let one = self.num(1.0, span);
                        let square = self.bin(BinaryOp::Mul, e, e, span);
                        self.bin(BinaryOp::Sub, one, square, span)
                    }
                    UnaryOp::Sigmoid => {
                        let one = self.num(1.0, span);
                        let rest = self.bin(BinaryOp::Sub, one, e, span);
                        self.bin(BinaryOp::Mul, e, rest, span)
                    }
                    UnaryOp::Softplus => self.un(UnaryOp::Sigmoid, arg, span),
                    UnaryOp::Sin => self.un(UnaryOp::Cos, arg, span),
                    UnaryOp::Cos => {
                        let sin = self.un(UnaryOp::Sin, arg, span);
                        self.un(UnaryOp::Neg, sin, span)
                    }
                    UnaryOp::Abs => {
                        // sign(a), with sign(0) = 0.
                        let zero = self.num(0.0, span);
                        let one = self.num(1.0, span);
                        let minus = self.num(-1.0, span);
                        let negative = self.bin(BinaryOp::Lt, arg, zero, span);
                        let inner = self.push(Expr::Select { cond: negative, then: minus, otherwise: zero }, span);
                        let positive = self.bin(BinaryOp::Gt, arg, zero, span);
                        self.push(Expr::Select { cond: positive, then: one, otherwise: inner }, span)
                    }
                    UnaryOp::Not | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => return Vec::new(),
                };
                let seed = self.bin(BinaryOp::Mul, seed, derivative, span);
                self.expr(arg, seed)
            }
            Expr::Binary { op, lhs, rhs } => self.binary(e, op, lhs, rhs, seed, span),
            Expr::Select { cond, then, otherwise } => {
                let then = self.expr(then, seed);
                let otherwise = self.expr(otherwise, seed);
                vec![Stmt::If { cond, then, otherwise }]
            }
            // The adjoint loop of a reduction gets a fresh variable: the seed may contain this very
            // reduction (through the forward value of an enclosing node), whose evaluation binds
            // the reduction's own variable, so reusing it would clobber the loop's.
            Expr::Reduce { op, var, set, body } => match op {
                ReduceOp::Sum => {
                    let own = self.fresh();
                    let body = self.substitute(body, var, Expr::Var(own));
                    vec![Stmt::For { var: own, set, body: self.expr(body, seed) }]
                }
                ReduceOp::Prod => {
                    // ∂/∂body_k = the product of the other elements (well defined at zeros).
                    let (own, other) = (self.fresh(), self.fresh());
                    let at_own = self.substitute(body, var, Expr::Var(own));
                    let at_other = self.substitute(body, var, Expr::Var(other));
                    let this = self.push(Expr::Var(own), span);
                    let that = self.push(Expr::Var(other), span);
                    let same = self.bin(BinaryOp::Eq, that, this, span);
                    let one = self.num(1.0, span);
                    let factor = self.push(Expr::Select { cond: same, then: one, otherwise: at_other }, span);
                    let others = self.push(Expr::Reduce { op: ReduceOp::Prod, var: other, set, body: factor }, span);
                    let seed = self.bin(BinaryOp::Mul, seed, others, span);
                    vec![Stmt::For { var: own, set, body: self.expr(at_own, seed) }]
                }
                ReduceOp::Max | ReduceOp::Min => {
                    // The adjoint goes to the body at the first maximiser. The argmax is a copy
                    // with fresh names for every variable it binds, because it is evaluated inside
                    // the body's own reductions, whose variables it would otherwise clobber.
                    let arg_op = if op == ReduceOp::Max { ReduceOp::ArgMax } else { ReduceOp::ArgMin };
                    let original = self.push(Expr::Reduce { op: arg_op, var, set, body }, span);
                    let chosen = self.rename_bound(original, span);
                    let at_chosen = self.substitute(body, var, self.module.exprs[chosen].clone());
                    self.expr(at_chosen, seed)
                }
                ReduceOp::ArgMax | ReduceOp::ArgMin => Vec::new(),
            },
        }
    }

    fn binary(
        &mut self,
        e: Handle<Expr>,
        op: BinaryOp,
        a: Handle<Expr>,
        b: Handle<Expr>,
        seed: Handle<Expr>,
        span: Span,
    ) -> Vec<Stmt> {
        let mut out = Vec::new();
        match op {
            BinaryOp::Add => {
                out.extend(self.expr(a, seed));
                out.extend(self.expr(b, seed));
            }
            BinaryOp::Sub => {
                out.extend(self.expr(a, seed));
                if self.is_active(b) {
                    let minus = self.un(UnaryOp::Neg, seed, span);
                    out.extend(self.expr(b, minus));
                }
            }
            BinaryOp::Mul => {
                if self.is_active(a) {
                    let s = self.bin(BinaryOp::Mul, seed, b, span);
                    out.extend(self.expr(a, s));
                }
                if self.is_active(b) {
                    let s = self.bin(BinaryOp::Mul, seed, a, span);
                    out.extend(self.expr(b, s));
                }
            }
            BinaryOp::Div => {
                if self.is_active(a) {
                    let s = self.bin(BinaryOp::Div, seed, b, span);
                    out.extend(self.expr(a, s));
                }
                if self.is_active(b) {
                    // d(a/b)/db = -(a/b)/b
                    let q = self.bin(BinaryOp::Div, e, b, span);
                    let s = self.bin(BinaryOp::Mul, seed, q, span);
                    let s = self.un(UnaryOp::Neg, s, span);
                    out.extend(self.expr(b, s));
                }
            }
            BinaryOp::Pow => {
                if self.is_active(a) {
                    // b · a^(b-1)
                    let one = self.num(1.0, span);
                    let b1 = self.bin(BinaryOp::Sub, b, one, span);
                    let p = self.bin(BinaryOp::Pow, a, b1, span);
                    let d = self.bin(BinaryOp::Mul, b, p, span);
                    let s = self.bin(BinaryOp::Mul, seed, d, span);
                    out.extend(self.expr(a, s));
                }
                if self.is_active(b) {
                    // a^b · ln a
                    let ln = self.un(UnaryOp::Log, a, span);
                    let d = self.bin(BinaryOp::Mul, e, ln, span);
                    let s = self.bin(BinaryOp::Mul, seed, d, span);
                    out.extend(self.expr(b, s));
                }
            }
            BinaryOp::Rem => {
                out.extend(self.expr(a, seed));
                if self.is_active(b) {
                    // a % b = a - b·trunc(a/b): the derivative in b is -trunc(a/b).
                    let q = self.bin(BinaryOp::Div, a, b, span);
                    let zero = self.num(0.0, span);
                    let negative = self.bin(BinaryOp::Lt, q, zero, span);
                    let up = self.un(UnaryOp::Ceil, q, span);
                    let down = self.un(UnaryOp::Floor, q, span);
                    let trunc = self.push(Expr::Select { cond: negative, then: up, otherwise: down }, span);
                    let s = self.bin(BinaryOp::Mul, seed, trunc, span);
                    let s = self.un(UnaryOp::Neg, s, span);
                    out.extend(self.expr(b, s));
                }
            }
            BinaryOp::Max | BinaryOp::Min => {
                let pick_a = if op == BinaryOp::Max { BinaryOp::Ge } else { BinaryOp::Le };
                let cond = self.bin(pick_a, a, b, span);
                let then = self.expr(a, seed);
                let otherwise = self.expr(b, seed);
                out.push(Stmt::If { cond, then, otherwise });
            }
            // Conditions have derivative 0 (regimes are constants for the derivative).
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::And
            | BinaryOp::Or => {}
        }
        out
    }

    /// A copy of `e` in which every variable bound by a reduction gets a fresh name.
    fn rename_bound(&mut self, e: Handle<Expr>, span: Span) -> Handle<Expr> {
        match self.module.exprs[e].clone() {
            Expr::Reduce { op, var, set, body } => {
                let fresh = self.fresh();
                let body = self.substitute(body, var, Expr::Var(fresh));
                let body = self.rename_bound(body, span);
                self.push(Expr::Reduce { op, var: fresh, set, body }, span)
            }
            Expr::Const(_) | Expr::Var(_) | Expr::Sample { .. } => e,
            mut node => {
                for child in node.children_mut() {
                    *child = self.rename_bound(*child, span);
                }
                self.push(node, span)
            }
        }
    }

    /// A copy of `e` with `var` replaced by `replacement`; nodes that do not mention `var` are
    /// shared, not copied.
    fn substitute(&mut self, e: Handle<Expr>, var: Var, replacement: Expr) -> Handle<Expr> {
        let mut memo = HashMap::new();
        self.substitute_in(e, var, &replacement, &mut memo)
    }

    fn substitute_in(
        &mut self,
        e: Handle<Expr>,
        var: Var,
        replacement: &Expr,
        memo: &mut HashMap<Handle<Expr>, Handle<Expr>>,
    ) -> Handle<Expr> {
        if let Some(&done) = memo.get(&e) {
            return done;
        }
        let node = self.module.exprs[e].clone();
        let rebuilt = match node {
            Expr::Var(v) if v == var => Some(replacement.clone()),
            // A reduction over the same variable shadows it.
            Expr::Reduce { var: inner, .. } if inner == var => None,
            mut node => {
                let mut changed = false;
                for child in node.children_mut() {
                    let new = self.substitute_in(*child, var, replacement, memo);
                    changed |= new != *child;
                    *child = new;
                }
                changed.then_some(node)
            }
        };
        let result = match rebuilt {
            Some(node) => {
                let span = self.module.exprs.span(e);
                self.push(node, span)
            }
            None => e,
        };
        memo.insert(e, result);
        result
    }
}

fn differentiable_unary(op: UnaryOp) -> bool {
    !matches!(op, UnaryOp::Not | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round)
}

/// Every store of a program, with its value, in program order.
fn stores(body: &[Stmt]) -> Vec<(BufferId, Handle<Expr>)> {
    let mut out = Vec::new();
    for stmt in body {
        match stmt {
            Stmt::For { body, .. } => out.extend(stores(body)),
            Stmt::Store { buffer, value, .. } => out.push((*buffer, *value)),
            Stmt::If { then, otherwise, .. } => {
                out.extend(stores(then));
                out.extend(stores(otherwise));
            }
            Stmt::Accumulate { .. } => {}
        }
    }
    out
}
