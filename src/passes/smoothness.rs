//! Smoothness analysis: how each cost term and state update depends on the active inputs
//! (states and continuous actions), and where its kinks and jumps are.
//!
//! The classes are ordered `Constant < Smooth < Kink < Regime < Jump`; an expression's class is
//! the largest of what its operations contribute (see [`crate::ir`] for the class of each
//! operation). A branch is a *regime* split when its condition reads a discrete action and not
//! an active input, a *jump* when its condition reads an active input — unless its branches meet
//! where it switches (`if post > 0 then h * post else -b * post`), which makes it a *kink*. A
//! `let` passes on the class of its value, so a kink inside a `let` shows in every cost that
//! reads it. Each jump carries why the reformulation kept it ([`super::reformulate::why_kept`]).

use std::collections::{HashMap, HashSet};

use crate::builtins::Smoothness;
use crate::diagnostics::{Span, pad};
use crate::ir::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Does not depend on states or continuous actions.
    Constant,
    Smooth,
    /// Continuous, differentiable almost everywhere (max, min, abs).
    Kink,
    /// Smooth within each regime of a discrete action.
    Regime,
    /// Discontinuous in a state or a continuous action.
    Jump,
}

impl Class {
    /// The class an operation gives to operands that are not constant.
    fn of(smoothness: Smoothness) -> Class {
        match smoothness {
            Smoothness::Smooth => Class::Smooth,
            Smoothness::Kink => Class::Kink,
            Smoothness::Jump => Class::Jump,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Constant => "constant",
            Class::Smooth => "smooth",
            Class::Kink => "kinked",
            Class::Regime => "regime-split",
            Class::Jump => "jump",
        }
    }
}

/// A place where an expression is not smooth in the active inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    pub span: Span,
    pub class: Class,
    /// What happens there, e.g. "`max` of an active value".
    pub what: String,
    /// For a jump: why the reformulation kept it, and what to write instead.
    pub kept: Option<super::reformulate::Kept>,
}

/// The analysis of one cost term or state update.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The cost buffer or the next-state buffer.
    pub buffer: BufferId,
    pub class: Class,
    /// Discrete actions whose choice splits it into regimes.
    pub regimes: Vec<BufferId>,
    pub sites: Vec<Site>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    pub costs: Vec<Entry>,
    pub updates: Vec<Entry>,
    /// The class of every expression node, by handle index.
    pub classes: Vec<Class>,
}

/// Analyses the `step` program of a validated module.
pub fn analyze(module: &Module) -> Analysis {
    let mut a = Analyzer { module, class: HashMap::new(), let_value: HashMap::new() };
    // Lets are written before they are read, so one pass in order knows every let's value.
    collect_lets(&module.step.body, &mut a.let_value);
    let mut analysis = Analysis::default();
    for (buffer, value) in stores(&module.step.body) {
        let kind = module.buffers[buffer].kind;
        if !matches!(kind, BufferKind::Cost | BufferKind::Next { .. }) {
            continue;
        }
        let class = a.class(value);
        let mut sites = Vec::new();
        let mut regimes = Vec::new();
        a.sites(value, &mut sites, &mut regimes, &mut HashSet::new());
        // A term that is constant in the active inputs may still depend on a discrete choice
        // (a fixed cost): the score-function gradient's business.
        a.walk(value, &mut |m, e| {
            if let Expr::Load { buffer, .. } = e
                && m.buffers[*buffer].holds_choice()
            {
                regimes.push(*buffer);
            }
        });
        sites.sort_by_key(|s| (s.span.start, s.span.end));
        sites.dedup();
        regimes.sort_unstable();
        regimes.dedup();
        let entry = Entry { buffer, class, regimes, sites };
        if kind == BufferKind::Cost {
            analysis.costs.push(entry);
        } else {
            analysis.updates.push(entry);
        }
    }
    analysis.classes = (0..module.exprs.len()).map(|i| a.class(Handle::new(i))).collect();
    analysis
}

fn stores(stmts: &[Stmt]) -> Vec<(BufferId, Handle<Expr>)> {
    let mut out = Vec::new();
    for s in stmts {
        match s {
            Stmt::For { body, .. } => out.extend(stores(body)),
            Stmt::If { then, otherwise, .. } => {
                out.extend(stores(then));
                out.extend(stores(otherwise));
            }
            Stmt::Store { buffer, value, .. } => out.push((*buffer, *value)),
            Stmt::Accumulate { .. } => {}
        }
    }
    out
}

fn collect_lets(stmts: &[Stmt], out: &mut HashMap<BufferId, Handle<Expr>>) {
    for (buffer, value) in stores(stmts) {
        out.insert(buffer, value);
    }
}

struct Analyzer<'m> {
    module: &'m Module,
    class: HashMap<Handle<Expr>, Class>,
    let_value: HashMap<BufferId, Handle<Expr>>,
}

impl Analyzer<'_> {
    fn is_let(&self, buffer: BufferId) -> bool {
        self.module.buffers[buffer].kind == BufferKind::Let
    }

    /// Whether the node reads a discrete action or a choice state (directly or through a `let`).
    fn reads_discrete(&self, h: Handle<Expr>) -> bool {
        let mut found = false;
        self.walk(h, &mut |m, e| {
            if let Expr::Load { buffer, .. } = e {
                found |= m.buffers[*buffer].holds_choice();
            }
        });
        found
    }

    /// Visits every node under `h`, following `let`s into their values.
    fn walk(&self, h: Handle<Expr>, f: &mut dyn FnMut(&Module, &Expr)) {
        let mut stack = vec![h];
        let mut seen = HashSet::new();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            let e = &self.module.exprs[h];
            f(self.module, e);
            stack.extend(e.children());
            // A `let` is followed into its value.
            if let Expr::Load { buffer, .. } = e
                && self.is_let(*buffer)
                && let Some(v) = self.let_value.get(buffer)
            {
                stack.push(*v);
            }
        }
    }

    fn class(&mut self, h: Handle<Expr>) -> Class {
        if let Some(&c) = self.class.get(&h) {
            return c;
        }
        let c = match self.module.exprs[h].clone() {
            Expr::Const(_) | Expr::Var(_) | Expr::Sample { .. } => Class::Constant,
            Expr::Load { buffer, .. } => match self.module.buffers[buffer].kind {
                // A choice state is read like a discrete action: not an active input.
                BufferKind::State if self.module.buffers[buffer].holds_choice() => Class::Constant,
                BufferKind::State | BufferKind::Continuous => Class::Smooth,
                BufferKind::Let => match self.let_value.get(&buffer).copied() {
                    Some(v) => self.class(v),
                    None => Class::Constant,
                },
                _ => Class::Constant,
            },
            Expr::Unary { op, arg } => {
                let inner = self.class(arg);
                if inner == Class::Constant { Class::Constant } else { inner.max(Class::of(op.smoothness())) }
            }
            Expr::Binary { op, lhs, rhs } => {
                let inner = self.class(lhs).max(self.class(rhs));
                if inner == Class::Constant { Class::Constant } else { inner.max(Class::of(op.smoothness())) }
            }
            Expr::Select { cond, then, otherwise } => {
                let branches = self.class(then).max(self.class(otherwise));
                if self.class(cond) != Class::Constant {
                    if branches_meet(self.module, cond, then, otherwise) {
                        branches.max(Class::Kink)
                    } else {
                        Class::Jump
                    }
                } else if branches == Class::Constant {
                    Class::Constant
                } else if self.reads_discrete(cond) {
                    branches.max(Class::Regime)
                } else {
                    branches
                }
            }
            Expr::Reduce { op, body, .. } => {
                let inner = self.class(body);
                match op {
                    _ if inner == Class::Constant => Class::Constant,
                    ReduceOp::Max | ReduceOp::Min | ReduceOp::ArgMax | ReduceOp::ArgMin => inner.max(Class::Kink),
                    _ => inner,
                }
            }
        };
        self.class.insert(h, c);
        c
    }

    /// The kinks and jumps under `h`, and the discrete actions that split it into regimes.
    fn sites(
        &mut self,
        h: Handle<Expr>,
        sites: &mut Vec<Site>,
        regimes: &mut Vec<BufferId>,
        seen: &mut HashSet<Handle<Expr>>,
    ) {
        // A set, not a list: through `let`s one term may reach every node of the step.
        if seen.contains(&h) || self.class(h) == Class::Constant {
            return;
        }
        seen.insert(h);
        let span = self.module.exprs.span(h);
        let node = self.module.exprs[h].clone();
        let module = self.module;
        let mut site = |class: Class, what: &str, at: Option<Handle<Expr>>| {
            let kept = at.map(|at| super::reformulate::why_kept(module, at));
            sites.push(Site { span, class, what: what.to_string(), kept })
        };
        match &node {
            Expr::Unary { op: UnaryOp::Abs, .. } => site(Class::Kink, "`abs` of an active value", None),
            Expr::Unary { op: UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round, .. } => {
                site(Class::Jump, "rounding of an active value", Some(h))
            }
            Expr::Unary { op: UnaryOp::Not, .. } => {}
            Expr::Binary { op: BinaryOp::Min | BinaryOp::Max, .. } => {
                site(Class::Kink, "`max`/`min` of an active value", None)
            }
            Expr::Binary { op: BinaryOp::Rem, .. } => site(Class::Jump, "`%` of an active value", Some(h)),
            Expr::Binary {
                op: BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge,
                ..
            } => site(Class::Jump, "a comparison of an active value, used as a number", Some(h)),
            Expr::Reduce { op: ReduceOp::Max | ReduceOp::Min, .. } => site(Class::Kink, "`max`/`min` over a set", None),
            Expr::Select { cond, then, otherwise } => {
                if self.class(*cond) != Class::Constant {
                    if branches_meet(module, *cond, *then, *otherwise) {
                        site(Class::Kink, "an `if` on an active value whose branches meet where it switches", None);
                    } else {
                        site(Class::Jump, "a branch on an active value", Some(*cond));
                    }
                } else if self.reads_discrete(*cond) {
                    let mut found = Vec::new();
                    self.walk(*cond, &mut |m, e| {
                        if let Expr::Load { buffer, .. } = e
                            && m.buffers[*buffer].holds_choice()
                        {
                            found.push(*buffer);
                        }
                    });
                    regimes.extend(found);
                }
            }
            _ => {}
        }
        let children: Vec<Handle<Expr>> = match &node {
            Expr::Const(_) | Expr::Var(_) | Expr::Sample { .. } => Vec::new(),
            Expr::Load { buffer, index } => {
                let mut c = index.clone();
                if self.is_let(*buffer)
                    && let Some(v) = self.let_value.get(buffer)
                {
                    c.push(*v);
                }
                c
            }
            Expr::Unary { arg, .. } => vec![*arg],
            // Inside a jump, the operands' own sites are not interesting: report the jump.
            Expr::Binary { op, lhs, rhs } => {
                if matches!(op, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
                {
                    Vec::new()
                } else {
                    vec![*lhs, *rhs]
                }
            }
            Expr::Select { cond, then, otherwise } => {
                if self.class(*cond) != Class::Constant {
                    vec![*then, *otherwise]
                } else {
                    vec![*cond, *then, *otherwise]
                }
            }
            Expr::Reduce { body, .. } => vec![*body],
        };
        for c in children {
            self.sites(c, sites, regimes, seen);
        }
    }
}

/// Whether `if cond then a else b` is continuous although `cond` reads an active value: `cond`
/// compares two values, and the branches are equal wherever the two are (on the boundary).
/// Proven symbolically: each occurrence of one compared value in the branches is replaced by the
/// other, and both branches simplify to the same expression (`if post > 0 then h * post else
/// -b * post` gives `h * 0` and `-b * 0`, both 0). Simplification assumes finite values
/// (`x * 0 = 0`). A branch that cannot be proven equal is a jump.
fn branches_meet(module: &Module, cond: Handle<Expr>, then: Handle<Expr>, otherwise: Handle<Expr>) -> bool {
    let Expr::Binary {
        op: BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne,
        lhs,
        rhs,
    } = module.exprs[cond]
    else {
        return false;
    };
    let mut budget = MAX_TERM_NODES;
    let (Some(l), Some(r), Some(a), Some(b)) = (
        Term::of(module, lhs, &mut budget),
        Term::of(module, rhs, &mut budget),
        Term::of(module, then, &mut budget),
        Term::of(module, otherwise, &mut budget),
    ) else {
        return false;
    };
    [(&l, &r), (&r, &l)].iter().any(|(from, to)| a.replaced(from, to).simplified() == b.replaced(from, to).simplified())
}

/// The most nodes [`branches_meet`] builds terms for; a larger `if` is left a jump.
const MAX_TERM_NODES: usize = 4096;

/// An expression as a tree, for comparing branches symbolically.
#[derive(Clone, Debug, PartialEq)]
enum Term {
    Num(f64),
    Unary(UnaryOp, Box<Term>),
    Binary(BinaryOp, Box<Term>, Box<Term>),
    /// Anything else, compared by what it is (a load of a buffer, a variable, a reduction,
    /// a branch) and its operands.
    Other(String, Vec<Term>),
}

impl Term {
    fn of(module: &Module, h: Handle<Expr>, budget: &mut usize) -> Option<Term> {
        *budget = budget.checked_sub(1)?;
        let mut all = |hs: &[Handle<Expr>]| hs.iter().map(|c| Term::of(module, *c, budget)).collect::<Option<Vec<_>>>();
        Some(match &module.exprs[h] {
            Expr::Const(v) => Term::Num(*v),
            Expr::Unary { op, arg } => Term::Unary(*op, Box::new(all(&[*arg])?.pop()?)),
            Expr::Binary { op, lhs, rhs } => {
                let mut both = all(&[*lhs, *rhs])?;
                let r = both.pop()?;
                let l = both.pop()?;
                Term::Binary(*op, Box::new(l), Box::new(r))
            }
            Expr::Var(v) => Term::Other(format!("var {}", v.0), Vec::new()),
            Expr::Load { buffer, index } => Term::Other(format!("load {buffer}"), all(index)?),
            Expr::Select { cond, then, otherwise } => Term::Other("select".into(), all(&[*cond, *then, *otherwise])?),
            Expr::Reduce { op, var, set, body } => Term::Other(format!("{op:?} {} {set}", var.0), all(&[*body])?),
            // Two draws are never the same value.
            Expr::Sample { .. } => Term::Other(format!("sample {}", h.index()), Vec::new()),
        })
    }

    /// The term with every occurrence of `from` replaced by `to`.
    fn replaced(&self, from: &Term, to: &Term) -> Term {
        if self == from {
            return to.clone();
        }
        match self {
            Term::Num(_) => self.clone(),
            Term::Unary(op, a) => Term::Unary(*op, Box::new(a.replaced(from, to))),
            Term::Binary(op, a, b) => Term::Binary(*op, Box::new(a.replaced(from, to)), Box::new(b.replaced(from, to))),
            Term::Other(what, operands) => {
                Term::Other(what.clone(), operands.iter().map(|o| o.replaced(from, to)).collect())
            }
        }
    }

    /// Folds numbers and applies `x * 0 = 0`, `x + 0 = x`, `x - x = 0` and the like.
    fn simplified(&self) -> Term {
        use Term::Num;
        match self {
            Num(_) => self.clone(),
            Term::Other(what, operands) => Term::Other(what.clone(), operands.iter().map(Term::simplified).collect()),
            Term::Unary(op, a) => match (op, a.simplified()) {
                (_, Num(x)) => Num(op.apply(x)),
                (UnaryOp::Neg, Term::Unary(UnaryOp::Neg, inner)) => *inner,
                (_, a) => Term::Unary(*op, Box::new(a)),
            },
            Term::Binary(op, a, b) => match (op, a.simplified(), b.simplified()) {
                (_, Num(x), Num(y)) => Num(op.apply(x, y)),
                (BinaryOp::Mul, Num(z), _) | (BinaryOp::Mul, _, Num(z)) if z == 0.0 => Num(0.0),
                (BinaryOp::Mul, Num(one), x) | (BinaryOp::Mul, x, Num(one)) if one == 1.0 => x,
                (BinaryOp::Add, Num(z), x) | (BinaryOp::Add, x, Num(z)) if z == 0.0 => x,
                (BinaryOp::Sub, x, Num(0.0)) => x,
                (BinaryOp::Sub, Num(0.0), x) => Term::Unary(UnaryOp::Neg, Box::new(x)).simplified(),
                (BinaryOp::Sub, x, y) if x == y => Num(0.0),
                (BinaryOp::Div, Num(0.0), _) => Num(0.0),
                (BinaryOp::Div, x, Num(1.0)) => x,
                (BinaryOp::Max | BinaryOp::Min, x, y) if x == y => x,
                (_, a, b) => Term::Binary(*op, Box::new(a), Box::new(b)),
            },
        }
    }
}

/// The report `hmdpc compile` prints: what the model is, and how each cost and update depends
/// on the states and continuous actions, with the places of kinks and jumps in the source.
pub fn render(
    module: &Module,
    analysis: &Analysis,
    rewrites: &[super::reformulate::Rewrite],
    file: &str,
    source: &str,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let dims = |b: &Buffer| {
        if b.dims.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = b.dims.iter().map(|d| module.sets[*d].name.as_str()).collect();
            format!("[{}]", names.join(", "))
        }
    };
    let at = |span: Span| {
        let (line, column) = crate::diagnostics::line_column(source, span.start);
        format!("{file}:{line}:{column}")
    };
    let listing = |kind: fn(&BufferKind) -> bool| -> Vec<String> {
        module
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| kind(&b.kind))
            .map(|(id, b)| format!("{}{} ({})", b.name, dims(b), module.len(id)))
            .collect()
    };
    let _ = writeln!(out, "model {}", module.name);
    let _ = writeln!(out, "  states:     {}", listing(|k| *k == BufferKind::State).join(", "));
    let noise = listing(|k| *k == BufferKind::Noise);
    if !noise.is_empty() {
        let _ = writeln!(out, "  noise:      {}", noise.join(", "));
    }
    for (id, b) in module.buffers.iter().enumerate() {
        match b.kind {
            BufferKind::Discrete => {
                let count = match module.len(id) {
                    1 => "one choice".to_string(),
                    n => format!("{n} choices, each"),
                };
                let _ = writeln!(out, "  discrete:   {}{} ({count} of {{{}}})", b.name, dims(b), b.labels.join(", "));
            }
            BufferKind::Continuous => {
                let bound =
                    |upper: bool| module.buffers.iter().any(|x| x.kind == BufferKind::Bound { action: id, upper });
                let range = match (bound(false), bound(true)) {
                    (true, true) => "bounded below and above",
                    (true, false) => "bounded below",
                    (false, true) => "bounded above",
                    (false, false) => "unbounded",
                };
                let mut regime = match module.buffers.iter().position(|x| x.kind == BufferKind::Regime { action: id }) {
                    Some(mask) => format!(", acts only when {}", condition(module, mask, source)),
                    None => String::new(),
                };
                if module.buffers.iter().any(|x| x.kind == BufferKind::PieceBound { action: id, upper: false }) {
                    let chooser = module
                        .buffers
                        .iter()
                        .find(|x| x.kind == BufferKind::Discrete && x.name == format!("{}.piece", b.name))
                        .map_or("its piece".to_string(), |x| x.name.clone());
                    regime.push_str(&format!(", within the piece chosen by {chooser}"));
                }
                let _ = writeln!(out, "  continuous: {}{} ({}), {range}{regime}", b.name, dims(b), module.len(id));
            }
            _ => {}
        }
    }
    let mut explained = HashSet::new();
    for (title, entries) in [("costs", &analysis.costs), ("updates", &analysis.updates)] {
        let _ = writeln!(out, "  {title}:");
        let width = entries.iter().map(|e| module.buffers[e.buffer].name.chars().count()).max().unwrap_or(0);
        for e in entries {
            let regimes: Vec<&str> = e.regimes.iter().map(|r| module.buffers[*r].name.as_str()).collect();
            let description = match (e.class, regimes.is_empty()) {
                (Class::Constant, false) => {
                    format!("set by the regime of {} (constant within each)", regimes.join(", "))
                }
                (Class::Constant, true) => "constant in the states and continuous actions".to_string(),
                (Class::Regime, false) => format!("regime-split by {}", regimes.join(", ")),
                (class, false) => format!("{}; depends on the regime of {}", class.name(), regimes.join(", ")),
                (class, true) => class.name().to_string(),
            };
            let _ = writeln!(out, "    {}  {description}", pad(&module.buffers[e.buffer].name, width));
            for site in &e.sites {
                let _ = writeln!(
                    out,
                    "    {}    {} at {}: {}",
                    pad("", width),
                    site.class.name(),
                    at(site.span),
                    site.what
                );
                // Why a place was kept is said once, under the first term that lists it.
                if let Some(kept) = site.kept.as_ref().filter(|_| explained.insert((site.span.start, site.span.end))) {
                    let indent = pad("", width + 6);
                    if kept.in_state {
                        let _ = writeln!(out, "    {indent}in the state: {}", kept.reason);
                    } else {
                        let _ = writeln!(out, "    {indent}not rewritten: {}", kept.reason);
                    }
                    let _ = writeln!(out, "    {indent}instead: {}", kept.instead);
                }
            }
        }
    }
    if rewrites.is_empty() {
        let _ = writeln!(out, "  reformulated: nothing");
    }
    for r in rewrites {
        let _ = writeln!(out, "  reformulated at {}: {}", at(r.span), r.description);
    }
    // A place read by several terms (a `let`) is one jump, however many terms list it.
    let mut jumps: Vec<(Span, bool)> = analysis
        .costs
        .iter()
        .chain(&analysis.updates)
        .flat_map(|e| &e.sites)
        .filter(|s| s.class == Class::Jump)
        .map(|s| (s.span, s.kept.as_ref().is_some_and(|k| k.in_state)))
        .collect();
    jumps.sort_by_key(|(s, _)| (s.start, s.end));
    jumps.dedup();
    if !jumps.is_empty() {
        let in_state = jumps.iter().filter(|(_, state)| *state).count();
        let in_actions = jumps.len() - in_state;
        let (actions, state) = ("which a restatement would make hybrid", "which no choice of the policy can remove");
        let left = match (in_actions, in_state) {
            (n, 0) => format!("{n} jump place(s) left in continuous actions (above), {actions}"),
            (0, n) => format!("{n} jump place(s) left in the state (above), {state}"),
            (a, n) => format!(
                "{} jump place(s) left (above): {a} in continuous actions, {actions}, and {n} in the state, {state}",
                a + n
            ),
        };
        let _ = writeln!(out, "  warning: {left}; the pathwise gradient does not see them");
    }
    // The derivative through bounds that read the state, when there is one.
    let bounds = if module.bounds_vjp.body.is_empty() {
        String::new()
    } else {
        format!(", bounds_vjp {} statements", count(&module.bounds_vjp.body))
    };
    let _ = writeln!(
        out,
        "  kernel: {} IR nodes, step {} statements, vjp {} statements{bounds}",
        module.exprs.len(),
        count(&module.step.body),
        count(&module.vjp.body)
    );
    out
}

fn count(stmts: &[Stmt]) -> usize {
    stmts
        .iter()
        .map(|s| match s {
            Stmt::For { body, .. } => 1 + count(body),
            Stmt::If { then, otherwise, .. } => 1 + count(then) + count(otherwise),
            Stmt::Store { .. } | Stmt::Accumulate { .. } => 1,
        })
        .sum()
}

/// The condition under which a continuous action acts, as the user wrote it (`when ...`) and as
/// the reformulation added it (`q.order is positive`).
fn condition(module: &Module, mask: BufferId, source: &str) -> String {
    fn value(stmts: &[Stmt], mask: BufferId) -> Option<Handle<Expr>> {
        stmts.iter().find_map(|s| match s {
            Stmt::For { body, .. } => value(body, mask),
            Stmt::Store { buffer, value, .. } if *buffer == mask => Some(*value),
            _ => None,
        })
    }
    fn parts(module: &Module, h: Handle<Expr>, source: &str, out: &mut Vec<String>) {
        let span = module.exprs.span(h);
        match &module.exprs[h] {
            Expr::Binary { op: BinaryOp::And, lhs, rhs } if span.is_empty() => {
                parts(module, *lhs, source, out);
                parts(module, *rhs, source, out);
            }
            Expr::Const(v) if span.is_empty() && *v != 0.0 => {}
            Expr::Binary { op: BinaryOp::Eq, lhs, rhs } if span.is_empty() => {
                match (&module.exprs[*lhs], &module.exprs[*rhs]) {
                    (Expr::Load { buffer, .. }, Expr::Const(k)) => {
                        let b = &module.buffers[*buffer];
                        let label = b.labels.get(*k as usize).map_or("?", String::as_str);
                        out.push(format!("{} is {label}", b.name));
                    }
                    _ => out.push("a regime holds".to_string()),
                }
            }
            _ => match source.get(span.start..span.end).filter(|t| !t.is_empty()) {
                Some(text) => out.push(format!("`{text}`")),
                None => out.push("a regime holds".to_string()),
            },
        }
    }
    let mut out = Vec::new();
    if let Some(v) = value(&module.regimes.body, mask) {
        parts(module, v, source, &mut out);
    }
    if out.is_empty() { "a regime holds".to_string() } else { out.join(" and ") }
}
