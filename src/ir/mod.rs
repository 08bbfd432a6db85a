//! The IR: a model as a handful of small loop programs over named arrays.
//!
//! A [`Module`] holds everything a backend needs to simulate a model: the index sets (sizes
//! already resolved), the arrays ([`Buffer`]s) the programs read and write, one arena of
//! expression nodes shared by all programs, and eight [`Program`]s:
//!
//! | program    | runs                         | reads                               | writes                 |
//! |------------|------------------------------|-------------------------------------|------------------------|
//! | `instance` | once per instance            | params (earlier ones)               | params                 |
//! | `init`     | once per scenario, at t = 0  | params                              | states                 |
//! | `noise`    | every step, before `step`    | params                              | noise                  |
//! | `bounds`   | every step, before the policy| params, states                      | action bounds          |
//! | `regimes`  | every step, after the discrete choice | params, states, discrete actions | regime masks, piece bounds, bounds that read discrete actions |
//! | `step`     | every step                   | params, states, noise, actions, lets| lets, next states, costs|
//! | `vjp`      | for a gradient, after `step` | what `step` reads, adjoints         | what `step` writes; adds to adjoints |
//! | `bounds_vjp` | for a gradient, after `vjp` | what `bounds` and `regimes` read, their lets, adjoints | adds to adjoints |
//!
//! `vjp` is produced by `passes::ad`: it recomputes the step, then adds into the adjoints of
//! states, continuous actions and lets ([`Stmt::Accumulate`]) from the adjoints of next states
//! and costs, which the caller writes before running it. Adjoint buffers of states, continuous
//! actions and lets are zero when `vjp` starts.
//!
//! `bounds_vjp`, also produced by `passes::ad`, is the vector-Jacobian product of what the policy
//! reads from the state before it decides: the bounds it squashes its continuous actions into
//! and the lets it observes. Given the adjoints of the bounds and piece bounds that read the
//! state (written by the caller, from the derivative of the squashing) and of the lets `bounds`
//! stores (the gradient of the observed ones' features; 0 for the others), it adds into the
//! adjoints of the states, visiting the piece-bound (and, for a bound that reads a discrete
//! action, bound) stores of `regimes` backwards, then the stores of `bounds`. The adjoints of
//! states are zero when it starts. It is empty when no bound and no observed let reads the state.
//!
//! Loops over index sets stay loops ([`Stmt::For`], [`Expr::Reduce`]): the size of a module does
//! not depend on the sizes of the model, so a 10 000-item model compiles as fast as a 10-item one.
//!
//! # Values
//!
//! Every value is an `f64` when evaluated. Integers (indices, counts, discrete-action labels) are
//! exact in `f64`, and a bool is `0.0` or `1.0`. [`ElemType`] records what a buffer holds so that
//! backends may store it more compactly; it never changes what an expression means.
//!
//! # Smoothness
//!
//! Every node has a [`Class`] with respect to the *active inputs* — states and continuous
//! actions, the things the pathwise gradient differentiates — computed by the smoothness pass:
//! `Smooth` (+, −, ×, ÷, exp, …), `Kink` (max, min, abs: continuous, differentiable almost
//! everywhere), `Regime` (a branch whose condition does not depend on active inputs: the discrete
//! action gets the score-function gradient), `Jump` (a discontinuity in an active input). A state
//! that holds a choice (a `State` buffer with labels) is not an active input: it is read like a
//! discrete action, so a branch on it is a regime split, and it has no adjoint. A node
//! that does not depend on active inputs at all is `Constant`. The class of each operation is
//! documented on [`UnaryOp`], [`BinaryOp`] and [`Expr`].
//!
//! # Validity
//!
//! [`validate`] checks the invariants every backend relies on (handles in range, loads with one
//! index per dimension, each buffer written by exactly one store in the right program, loop and
//! reduction variables bound where they are used, no sampling outside the sampling programs).
//! Backends require a validated module and never defend against malformed IR.
//!
//! Invariant: `ir` knows nothing about pest, the AST or any backend.

pub mod lower;
pub mod text;
pub mod validate;

use std::marker::PhantomData;

use crate::diagnostics::Span;

pub use validate::{ValidModule, validate};

/// A typed index into an [`Arena`].
pub struct Handle<T> {
    index: u32,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    pub fn new(index: usize) -> Handle<T> {
        Handle { index: u32::try_from(index).unwrap_or(u32::MAX), _kind: PhantomData }
    }

    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<T> Eq for Handle<T> {}
impl<T> std::hash::Hash for Handle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}
impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "%{}", self.index)
    }
}

/// Nodes of one kind, each with the source span it came from (empty for synthesised nodes).
#[derive(Clone, Debug, PartialEq)]
pub struct Arena<T> {
    items: Vec<T>,
    spans: Vec<Span>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena { items: Vec::new(), spans: Vec::new() }
    }
}

impl<T> Arena<T> {
    pub fn push(&mut self, item: T, span: Span) -> Handle<T> {
        self.items.push(item);
        self.spans.push(span);
        Handle::new(self.items.len() - 1)
    }

    pub fn get(&self, handle: Handle<T>) -> Option<&T> {
        self.items.get(handle.index())
    }

    pub fn span(&self, handle: Handle<T>) -> Span {
        self.spans.get(handle.index()).copied().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Handle<T>, &T)> {
        self.items.iter().enumerate().map(|(i, item)| (Handle::new(i), item))
    }
}

impl<T> std::ops::Index<Handle<T>> for Arena<T> {
    type Output = T;

    /// Panics on a handle from another arena; a validated module has none.
    fn index(&self, handle: Handle<T>) -> &T {
        &self.items[handle.index()]
    }
}

pub type SetId = usize;
pub type BufferId = usize;

/// A loop or reduction variable. Lowering numbers them uniquely across the module; the validator
/// requires only that a variable is not bound again inside its own scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// A half-open integer range `lo..hi`, with `lo <= hi`. It may be empty (`lo == hi`): loops over
/// it run no iteration, a `Sum` over it is 0 and a `Prod` 1, and no `Max`, `Min`, `ArgMax` or
/// `ArgMin` reduces over it (the validator refuses one).
#[derive(Clone, Debug, PartialEq)]
pub struct Set {
    pub name: String,
    pub lo: i64,
    pub hi: i64,
}

/// The name of the noise buffer that holds the period index (0, 1, ..., horizon - 1) of a model
/// that reads `period` or has terminal costs. No program writes it: the protocol sets it before
/// each period. Like noise, it is a per-scenario input the derivative holds constant.
pub const PERIOD: &str = "period";

impl Set {
    /// The number of elements (0 for an empty or a reversed range, which the validator rejects).
    pub fn len(&self) -> usize {
        self.hi.checked_sub(self.lo).and_then(|n| usize::try_from(n).ok()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    Real,
    Int,
    Bool,
}

/// What a buffer is, which decides which program writes it and who reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Drawn or computed once per instance by `instance` (or given as `data`).
    Param,
    /// The state at the start of a step; set by `init` at t = 0, then from `Next`. With
    /// `labels`, a *choice state*: each element holds the position of a label, it is constant for
    /// the derivative (no adjoint, like a discrete action), and so is its `Next`.
    State,
    /// The state after the step, written by `step`; `of` is the `State` buffer it replaces.
    Next { of: BufferId },
    /// Drawn every step by `noise`.
    Noise,
    /// A discrete action: each element holds the index of the chosen label.
    Discrete,
    /// A continuous action: each element holds the value that acts.
    Continuous,
    /// Lower or upper bound of a continuous action, written by `bounds`, or by `regimes` when it
    /// reads a discrete action (then it is known only after the choice); same dims as `action`.
    Bound { action: BufferId, upper: bool },
    /// A joint upper bound on the sum of a one-dimensional continuous action whose lower bound
    /// is 0 (`real >= 0, sum <= stock`), written like a `Bound`; scalar. It exists only between
    /// lowering and `passes::reformulate`, which splits the action into a total bounded by it and
    /// shares (the bound becomes the total's `Bound`), so a validated module has none.
    SumBound { action: BufferId },
    /// Lower or upper bound of a continuous action within the piece of its domain that the
    /// discrete action made by reformulation chose (`q.piece`), written by `regimes` after that
    /// choice; same dims as `action`. May be infinite (the top piece of a half-line). When it
    /// exists, the policy squashes the action into it instead of into the `Bound`s.
    PieceBound { action: BufferId, upper: bool },
    /// 1 where a continuous action acts under the chosen discrete actions (its `when`), else 0;
    /// written by `regimes`; same dims as `action`.
    Regime { action: BufferId },
    /// A `let` of the step.
    Let,
    /// A named cost term of the step: a scalar.
    Cost,
    /// The adjoint (gradient) of another buffer, same dims: an input of `vjp` for next states
    /// and costs, an output for states and continuous actions, scratch for lets.
    Adjoint { of: BufferId },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub kind: BufferKind,
    pub dims: Vec<SetId>,
    pub elem: ElemType,
    /// For a discrete action or a choice state, its labels in order (the stored value is the
    /// label's position).
    pub labels: Vec<String>,
    /// Values known at compile time (parameters read from a data file), row-major.
    pub data: Option<Vec<f64>>,
}

// The scalar operations and distributions, with their names, values and smoothness, are the
// table of built-ins shared with the checker; the IR re-exports them as its own vocabulary.
pub use crate::builtins::{BinaryOp, Dist, UnaryOp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Smooth.
    Sum,
    /// Smooth.
    Prod,
    /// Kink.
    Max,
    /// Kink.
    Min,
    /// The element of the set at which `body` is largest (the first one on ties). Produced by
    /// differentiation, for the subgradient of `Max`; not differentiable itself.
    ArgMax,
    /// The element at which `body` is smallest (the first one on ties).
    ArgMin,
}

/// An expression node. Evaluated where a [`Stmt::Store`] needs it, with the enclosing loop and
/// reduction variables bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A number, possibly infinite (the bound of an unbounded piece of an action's domain),
    /// never NaN. Constant.
    Const(f64),
    /// The value of a loop or reduction variable (an element of its set). Constant.
    Var(Var),
    /// An element of a buffer; one index per dimension, each evaluating to an element of that
    /// dimension's set. Reading outside the set is an error at run time. The class is that of
    /// the buffer's kind: states and continuous actions are the active inputs.
    Load {
        buffer: BufferId,
        index: Vec<Handle<Expr>>,
    },
    Unary {
        op: UnaryOp,
        arg: Handle<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Handle<Expr>,
        rhs: Handle<Expr>,
    },
    /// `if cond != 0 then then else otherwise`; only the taken branch is evaluated. `Regime`
    /// when `cond` does not depend on active inputs, `Jump` when it does.
    Select {
        cond: Handle<Expr>,
        then: Handle<Expr>,
        otherwise: Handle<Expr>,
    },
    /// `op` over `body` for `var` in `set`. Class: that of `op` applied to `body`.
    Reduce {
        op: ReduceOp,
        var: Var,
        set: SetId,
        body: Handle<Expr>,
    },
    /// A draw from `dist(args)`, clipped by rejection to `[lo, hi]` when `truncate` is given.
    /// Only in `instance`, `init` and `noise`.
    Sample {
        dist: Dist,
        args: Vec<Handle<Expr>>,
        truncate: Option<(Handle<Expr>, Handle<Expr>)>,
    },
}

impl Expr {
    /// The nodes this node reads, in order.
    pub fn children(&self) -> Vec<Handle<Expr>> {
        match self {
            Expr::Const(_) | Expr::Var(_) => Vec::new(),
            Expr::Load { index, .. } => index.clone(),
            Expr::Unary { arg, .. } => vec![*arg],
            Expr::Binary { lhs, rhs, .. } => vec![*lhs, *rhs],
            Expr::Select { cond, then, otherwise } => vec![*cond, *then, *otherwise],
            Expr::Reduce { body, .. } => vec![*body],
            Expr::Sample { args, truncate, .. } => {
                let mut all = args.clone();
                all.extend(truncate.iter().flat_map(|(lo, hi)| [*lo, *hi]));
                all
            }
        }
    }

    /// Mutable references to the handles of [`Expr::children`], in the same order.
    pub fn children_mut(&mut self) -> Vec<&mut Handle<Expr>> {
        match self {
            Expr::Const(_) | Expr::Var(_) => Vec::new(),
            Expr::Load { index, .. } => index.iter_mut().collect(),
            Expr::Unary { arg, .. } => vec![arg],
            Expr::Binary { lhs, rhs, .. } => vec![lhs, rhs],
            Expr::Select { cond, then, otherwise } => vec![cond, then, otherwise],
            Expr::Reduce { body, .. } => vec![body],
            Expr::Sample { args, truncate, .. } => {
                let mut all: Vec<&mut Handle<Expr>> = args.iter_mut().collect();
                if let Some((lo, hi)) = truncate {
                    all.push(lo);
                    all.push(hi);
                }
                all
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// Runs `body` for `var` over every element of `set`, in order.
    For { var: Var, set: SetId, body: Vec<Stmt> },
    /// `buffer[index...] = value`; `index` names the enclosing loop variables, one per dimension.
    Store { buffer: BufferId, index: Vec<Var>, value: Handle<Expr> },
    /// Runs `then` when `cond != 0`, else `otherwise`; the untaken branch is not evaluated (its
    /// indices may be out of range). Only in `vjp`.
    If { cond: Handle<Expr>, then: Vec<Stmt>, otherwise: Vec<Stmt> },
    /// `buffer[index...] += value`, with computed indices (one per dimension): how `vjp` adds a
    /// contribution to an adjoint. Only in `vjp`, only on adjoint buffers.
    Accumulate { buffer: BufferId, index: Vec<Handle<Expr>>, value: Handle<Expr> },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    pub body: Vec<Stmt>,
}

/// Which figure a run reports, as in the model's `report`.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Divide by the number of reported periods.
    pub per_period: bool,
    /// Divide by these sizes' values (e.g. per item).
    pub per_size: Vec<(String, i64)>,
}

/// A heuristic policy declared in the model (`policy NAME { ... }`), lowered. Its `program`
/// reads the module's buffers (parameters and states only) and its own, which are numbered after
/// the module's — from `first` on: one per tunable (written by whoever runs it), one per `let`,
/// and one output per action of the model, holding the action's value before any bound is
/// applied (a label's position for a discrete action). Its expressions live in an arena of their
/// own, so the module's passes never see them.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyProgram {
    pub name: String,
    /// The id of the first of `buffers`: the number of the module's buffers.
    pub first: BufferId,
    /// The policy's own buffers: tunables, `let`s, outputs.
    pub buffers: Vec<Buffer>,
    pub exprs: Arena<Expr>,
    pub program: Program,
    /// Each tunable with its bounds, start value and buffer.
    pub tunables: Vec<TunableParam>,
    /// For each action of the model: its buffer and the output that holds its value.
    pub outputs: Vec<(BufferId, BufferId)>,
}

/// A tunable parameter of a policy: `tune name in [lo, hi] = start`.
#[derive(Clone, Debug, PartialEq)]
pub struct TunableParam {
    pub name: String,
    pub lo: f64,
    pub hi: f64,
    pub start: f64,
    pub buffer: BufferId,
}

impl PolicyProgram {
    /// A module holding the module's sets and buffers followed by the policy's own, with the
    /// policy's expressions: what the interpreter runs `program` on.
    pub fn view(&self, module: &Module) -> Module {
        let mut buffers = module.buffers.clone();
        buffers.extend(self.buffers.iter().cloned());
        Module {
            name: module.name.clone(),
            sets: module.sets.clone(),
            buffers,
            exprs: self.exprs.clone(),
            instance: Program::default(),
            init: Program::default(),
            noise: Program::default(),
            bounds: Program::default(),
            regimes: Program::default(),
            step: Program::default(),
            vjp: Program::default(),
            bounds_vjp: Program::default(),
            observe: Vec::new(),
            horizon: module.horizon,
            warmup: module.warmup,
            discount: module.discount,
            report: module.report.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub name: String,
    pub sets: Vec<Set>,
    pub buffers: Vec<Buffer>,
    pub exprs: Arena<Expr>,
    pub instance: Program,
    pub init: Program,
    pub noise: Program,
    pub bounds: Program,
    pub regimes: Program,
    pub step: Program,
    /// The vector-Jacobian product of `step`; empty until `passes::ad::differentiate` runs.
    pub vjp: Program,
    /// The vector-Jacobian product of the bounds (`bounds`, and the bounds `regimes` computes) in
    /// the states; empty until `passes::ad::differentiate` runs, and when no bound reads a state.
    pub bounds_vjp: Program,
    /// The buffers the policy sees, in order.
    pub observe: Vec<BufferId>,
    pub horizon: u64,
    pub warmup: u64,
    pub discount: f64,
    pub report: Report,
}

impl Buffer {
    /// Whether the buffer holds a choice that splits what reads it into regimes: a discrete
    /// action, or a choice state (a state with labels).
    pub fn holds_choice(&self) -> bool {
        self.kind == BufferKind::Discrete || (self.kind == BufferKind::State && !self.labels.is_empty())
    }
}

impl Module {
    /// Whether a buffer is differentiated: states (not choice states) and continuous actions,
    /// and what the step computes from them (lets, next states except those of choice states,
    /// costs).
    pub fn is_differentiable(&self, buffer: BufferId) -> bool {
        let Some(b) = self.buffers.get(buffer) else { return false };
        match b.kind {
            BufferKind::State => b.labels.is_empty(),
            BufferKind::Next { of } => self.buffers.get(of).is_some_and(|s| s.labels.is_empty()),
            BufferKind::Continuous | BufferKind::Let | BufferKind::Cost => true,
            _ => false,
        }
    }

    /// Number of scalar elements of a buffer.
    /// The param holding the period index ([`PERIOD`]), if the model has one.
    pub fn period_index(&self) -> Option<BufferId> {
        self.buffers.iter().position(|b| b.kind == BufferKind::Noise && b.name == PERIOD)
    }

    pub fn len(&self, buffer: BufferId) -> usize {
        self.buffers.get(buffer).map_or(0, |b| b.dims.iter().map(|d| self.sets.get(*d).map_or(0, Set::len)).product())
    }

    pub fn buffers_of(&self, kind: fn(&BufferKind) -> bool) -> impl Iterator<Item = (BufferId, &Buffer)> {
        self.buffers.iter().enumerate().filter(move |(_, b)| kind(&b.kind))
    }

    /// The first variable number that no program or expression uses: where a pass that adds
    /// loops or reductions starts numbering its own.
    pub fn next_var(&self) -> u32 {
        fn in_stmts(stmts: &[Stmt], next: &mut u32) {
            for s in stmts {
                match s {
                    Stmt::For { var, body, .. } => {
                        *next = (*next).max(var.0 + 1);
                        in_stmts(body, next);
                    }
                    Stmt::If { then, otherwise, .. } => {
                        in_stmts(then, next);
                        in_stmts(otherwise, next);
                    }
                    Stmt::Store { index, .. } => index.iter().for_each(|v| *next = (*next).max(v.0 + 1)),
                    Stmt::Accumulate { .. } => {}
                }
            }
        }
        let mut next = 0;
        for (_, e) in self.exprs.iter() {
            if let Expr::Var(v) | Expr::Reduce { var: v, .. } = e {
                next = next.max(v.0 + 1);
            }
        }
        for p in [
            &self.instance,
            &self.init,
            &self.noise,
            &self.bounds,
            &self.regimes,
            &self.step,
            &self.vjp,
            &self.bounds_vjp,
        ] {
            in_stmts(&p.body, &mut next);
        }
        next
    }

    /// Each next-state buffer with the state it replaces: `(next, state)`.
    pub fn next_states(&self) -> Vec<(BufferId, BufferId)> {
        self.buffers
            .iter()
            .enumerate()
            .filter_map(|(id, b)| match b.kind {
                BufferKind::Next { of } => Some((id, of)),
                _ => None,
            })
            .collect()
    }

    /// The cost buffers, in the order of the model's `cost` statements.
    pub fn costs(&self) -> impl Iterator<Item = (BufferId, &Buffer)> {
        self.buffers_of(|k| matches!(k, BufferKind::Cost))
    }
}
