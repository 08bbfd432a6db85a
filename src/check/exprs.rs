//! Typing expressions in a [`Scope`]: names and their indices, operators, comparisons with
//! labels and `match`.

use std::collections::HashMap;

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, BinaryOp, ExprKind, UnaryOp};

/// How many labels of a `choice[SET]` a message lists before it says how many there are.
const SHOWN_LABELS: usize = 20;

impl Checker<'_> {
    pub(super) fn numeric(&mut self, ty: Ty, span: Span, what: &str) -> bool {
        match ty {
            Ty::Int | Ty::Real | Ty::Index(_) => true,
            Ty::Error => false,
            Ty::Bool => {
                self.error(
                    Diagnostic::error("type", format!("{what} must be a number, but this is a bool"), span, "bool used as a number")
                        .with_help("multiply by a condition to use it as 0 or 1, e.g. `K * (q > 0)`, or write `if c then 1 else 0`"),
                );
                false
            }
            Ty::Choice(a) => {
                if self.choice_set(a).is_some() {
                    return true;
                }
                let name = self.m.chooser_name(a).to_string();
                self.error(
                    Diagnostic::error(
                        "type",
                        format!("{what} must be a number, but `{name}` is a choice"),
                        span,
                        "choice used as a number",
                    )
                    .with_help(format!("compare it with a label, or `match {name} {{ ... }}`")),
                );
                false
            }
        }
    }

    pub(super) fn condition(&mut self, ty: Ty, span: Span, what: &str) -> bool {
        match ty {
            Ty::Bool => true,
            Ty::Error => false,
            Ty::Choice(a) => {
                let name = self.m.chooser_name(a).to_string();
                let label = match self.choice_set(a).and_then(|s| self.m.sets.get(s)) {
                    Some(set) => set.lo.to_string(),
                    None => self.m.choice(a).and_then(|(labels, _)| labels.first().cloned()).unwrap_or_default(),
                };
                self.error(
                    Diagnostic::error(
                        "type",
                        format!("{what} must be a condition, but `{name}` is a choice"),
                        span,
                        "choice used as a condition",
                    )
                    .with_help(format!("compare it with a label: `{name} == {label}`")),
                );
                false
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        "type",
                        format!("{what} must be a condition, but this is a number"),
                        span,
                        "number used as a condition",
                    )
                    .with_help("compare it, e.g. `x > 0`"),
                );
                false
            }
        }
    }

    /// Every label of a choice, written out: for messages and labelled choices, whose labels are
    /// few. A `choice[SET]` may have 10^9: count or find its labels with [`Self::label_count`]
    /// and [`Self::has_label`].
    fn labels(&self, action: Chooser) -> Vec<String> {
        self.m.choice_labels(action)
    }

    /// The labels of a choice for a message: all of them, or for a `choice[SET]` with more than
    /// [`SHOWN_LABELS`] the first ones and how many there are, so a choice over 10^9 elements
    /// gives a short message.
    fn label_list(&self, action: Chooser) -> String {
        match self.choice_set(action).and_then(|s| self.m.sets.get(s)) {
            Some(set) if set.len() > SHOWN_LABELS => {
                let first: Vec<String> = (set.lo..set.hi).take(SHOWN_LABELS).map(|v| v.to_string()).collect();
                format!("{}, … ({} in all)", first.join(", "), set.len())
            }
            _ => self.labels(action).join(", "),
        }
    }

    fn label_count(&self, action: Chooser) -> usize {
        self.m.choice_label_count(action)
    }

    pub(super) fn has_label(&self, action: Chooser, label: &str) -> bool {
        self.m.choice_label_position(action, label).is_some()
    }

    /// Two choices whose values can be compared (and a choice state given the other's value):
    /// the same chooser, or the same labels.
    pub(super) fn same_labels(&self, x: Chooser, y: Chooser) -> bool {
        match (self.m.choice(x), self.m.choice(y)) {
            _ if x == y => true,
            (Some((_, Some(s))), Some((_, Some(t)))) => {
                self.m.sets.get(s).map(|s| (s.lo, s.hi)) == self.m.sets.get(t).map(|t| (t.lo, t.hi))
            }
            (Some((a, None)), Some((b, None))) => a == b,
            _ => false,
        }
    }

    pub(super) fn over_set(&self, action: ActionId) -> Option<SetId> {
        self.choice_set(Chooser::Action(action))
    }

    /// The set of a `choice[SET]` action or state.
    pub(super) fn choice_set(&self, chooser: Chooser) -> Option<SetId> {
        self.m.choice(chooser).and_then(|(_, over_set)| over_set)
    }

    /// Whether a bare name means something here (a binder or a declared name).
    fn is_known(&self, name: &str, scope: &Scope) -> bool {
        scope.binder(name).is_some() || self.globals.contains_key(name) || self.locals.iter().any(|l| l.name == name)
    }

    pub(super) fn expr(&mut self, e: &ast::Expr, scope: &mut Scope) -> Ty {
        match &e.kind {
            ExprKind::Number { is_int, .. } => {
                if *is_int {
                    Ty::Int
                } else {
                    Ty::Real
                }
            }
            ExprKind::Bool(_) => Ty::Bool,
            ExprKind::Error => Ty::Error,
            ExprKind::Paren(inner) => self.expr(inner, scope),
            ExprKind::Access { name, primed, indices } => self.access(e, name, *primed, indices, scope),
            ExprKind::Call { func, args } => self.call(e, func, args, scope),
            ExprKind::Reduce { op, binders, body } => {
                let depth = scope.binders.len();
                let mut ok = true;
                for b in binders {
                    if let Some(declared) = self.globals.get(&b.var.name).map(|g| g.span) {
                        self.error(
                            Diagnostic::error(
                                "shadow",
                                format!("index name `{}` is already declared", b.var.name),
                                b.var.span,
                                "index names must be new",
                            )
                            .with_label(declared, "declared here")
                            .with_help("choose another index name, such as a single lowercase letter"),
                        );
                        ok = false;
                    } else if scope.binder(&b.var.name).is_some() {
                        self.error(
                            Diagnostic::error(
                                "shadow",
                                format!("index `{}` is already in use here", b.var.name),
                                b.var.span,
                                "used by an enclosing index",
                            )
                            .with_help("choose another index name"),
                        );
                        ok = false;
                    }
                    let set = self.set_named(&b.set);
                    ok &= set.is_some();
                    if let (ast::ReduceOp::Max | ast::ReduceOp::Min, Some(empty), false) =
                        (op, set.and_then(|s| self.m.sets.get(s)).filter(|s| s.is_empty()), scope.not_taken)
                    {
                        // A sum over nothing is 0 and a product 1, but a largest or smallest
                        // element of nothing does not exist (±inf would only surface later as a
                        // non-finite cost).
                        let range = format!("{}..{}", empty.lo, empty.hi);
                        self.error(
                            Diagnostic::error(
                                "empty-set",
                                format!("`{}` over an empty set has no value: `{}` = {range} is empty", op.name(), b.set.name),
                                b.set.span,
                                "empty set",
                            )
                            .with_help(format!(
                                "guard it with an `if` on the size that empties the set, or give `{}` at least one element",
                                b.set.name
                            )),
                        );
                        ok = false;
                    }
                    // The body is checked even when the set is broken, for errors of its own.
                    scope.binders.push(Binding { name: b.var.name.clone(), set: set.unwrap_or(UNRESOLVED) });
                }
                let ty = self.expr(body, scope);
                let ty = if ok { ty } else { Ty::Error };
                scope.binders.truncate(depth);
                if !self.numeric(ty, body.span, &format!("the body of `{}`", op.name())) {
                    return Ty::Error;
                }
                match ty {
                    Ty::Index(_) | Ty::Choice(_) => Ty::Int,
                    other => other,
                }
            }
            ExprKind::Unary { op: UnaryOp::Neg, operand } => {
                let ty = self.expr(operand, scope);
                if !self.numeric(ty, operand.span, "the operand of `-`") {
                    return Ty::Error;
                }
                if ty == Ty::Real { Ty::Real } else { Ty::Int }
            }
            ExprKind::Unary { op: UnaryOp::Not, operand } => {
                let ty = self.expr(operand, scope);
                if self.condition(ty, operand.span, "the operand of `not`") { Ty::Bool } else { Ty::Error }
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs, scope),
            ExprKind::If { cond, then, otherwise } => {
                let c = self.expr(cond, scope);
                let decided =
                    self.condition(c, cond.span, "an `if` condition").then(|| self.constant(cond, scope)).flatten();
                let outer = scope.not_taken;
                if let Some(value) = decided {
                    self.m.decided.insert(e.span, value != 0.0);
                }
                scope.not_taken = outer || decided == Some(0.0);
                let a = self.expr(then, scope);
                scope.not_taken = outer || decided.is_some_and(|v| v != 0.0);
                let b = self.expr(otherwise, scope);
                scope.not_taken = outer;
                self.join(a, b, then.span, otherwise.span, "the two branches of this `if`")
            }
            ExprKind::Match { scrutinee, arms } => self.match_expr(e, scrutinee, arms, scope),
        }
    }

    pub(super) fn join(&mut self, a: Ty, b: Ty, a_span: Span, b_span: Span, what: &str) -> Ty {
        let numeric = |t: Ty| matches!(t, Ty::Int | Ty::Real | Ty::Index(_));
        match (a, b) {
            (Ty::Error, _) | (_, Ty::Error) => Ty::Error,
            (a, b) if a == b => match a {
                Ty::Index(_) => Ty::Int,
                other => other,
            },
            (Ty::Real, b) | (b, Ty::Real) if numeric(b) => Ty::Real,
            (a, b) if numeric(a) && numeric(b) => Ty::Int,
            _ => {
                let (an, bn) = (self.ty_name(a), self.ty_name(b));
                self.error(
                    Diagnostic::error(
                        "type",
                        format!("{what} have different types: {an} and {bn}"),
                        b_span,
                        bn.clone(),
                    )
                    .with_label(a_span, an),
                );
                Ty::Error
            }
        }
    }

    fn ty_name(&self, ty: Ty) -> String {
        match ty {
            Ty::Int | Ty::Index(_) => "an integer".into(),
            Ty::Real => "a real".into(),
            Ty::Bool => "a bool".into(),
            Ty::Choice(a) => format!("a choice of `{}`", self.m.chooser_name(a)),
            Ty::Error => "an error".into(),
        }
    }

    fn access(
        &mut self,
        e: &ast::Expr,
        name: &ast::Ident,
        primed: bool,
        indices: &[ast::Expr],
        scope: &mut Scope,
    ) -> Ty {
        if primed {
            let is_state = matches!(self.globals.get(&name.name).map(|g| g.symbol), Some(Symbol::State(_)));
            let d = if is_state {
                Diagnostic::error(
                    "primed-read",
                    format!("the next state `{}'` cannot be read", name.name),
                    e.span,
                    "primed name read here",
                )
                .with_help(format!("compute the value in a `let` and use it both in `{}' = ...` and here", name.name))
            } else {
                Diagnostic::error(
                    "primed-read",
                    format!("`{}'`: only states have a next value, and it cannot be read", name.name),
                    e.span,
                    "primed name",
                )
            };
            self.error(d);
            for ix in indices {
                self.expr(ix, scope);
            }
            return Ty::Error;
        }
        if let Some(set) = scope.binder(&name.name) {
            if !indices.is_empty() {
                self.error(Diagnostic::error(
                    "rank",
                    format!("index `{}` is a number and cannot be indexed", name.name),
                    e.span,
                    "indexed here",
                ));
                return Ty::Error;
            }
            return Ty::Index(set);
        }
        if name.name == PERIOD && !self.globals.contains_key(PERIOD) {
            for ix in indices {
                self.expr(ix, scope);
            }
            if !indices.is_empty() {
                self.error(Diagnostic::error(
                    "rank",
                    "the period index `period` is a number and cannot be indexed",
                    e.span,
                    "indexed here",
                ));
                return Ty::Error;
            }
            if scope.context != Context::Step {
                self.error(
                    Diagnostic::error(
                        "context",
                        format!("{} cannot use the period index `period`", scope.context.describe()),
                        name.span,
                        "the period index",
                    )
                    .with_help("the period index (0, 1, ..., horizon - 1) can be read in the step and observed"),
                );
                return Ty::Error;
            }
            self.m.reads_period = true;
            return Ty::Int;
        }
        if let Some(local) = self.locals.iter().rev().find(|l| l.name == name.name) {
            let (dims, ty) = (local.dims.clone(), local.ty);
            if indices.len() != dims.len() {
                let d = self.rank_error(&name.name, &dims, indices.len(), e.span);
                self.error(d);
                return Ty::Error;
            }
            let mut ok = true;
            for (position, (ix, dim)) in indices.iter().zip(&dims).enumerate() {
                ok &= self.index(ix, dim.set, &name.name, position, scope);
            }
            return if ok { ty } else { Ty::Error };
        }
        let Some(global) = self.globals.get(&name.name) else {
            self.unknown_name(name, scope);
            for ix in indices {
                self.expr(ix, scope);
            }
            return Ty::Error;
        };
        let (symbol, declared) = (global.symbol, global.span);
        if let (Context::Terminal, Symbol::State(_)) = (scope.context, symbol)
            && let Some(ix) = indices.iter().find(|ix| bare_name(ix).is_none_or(|n| scope.binder(&n.name).is_none()))
        {
            // The final state is written out from the state's update, whose index names are
            // bound to the indices here.
            self.error(
                Diagnostic::error(
                    "context",
                    format!("a terminal cost reads the final `{}` only at index names", name.name),
                    ix.span,
                    "not an index name",
                )
                .with_help(format!("sum over the elements: `sum(i in ...) ... {}[i]`", name.name)),
            );
            return Ty::Error;
        }
        if !scope.context.allows(symbol, &self.m) {
            let kind = self.kind_name(symbol);
            let d = if let Symbol::Set(_) = symbol {
                Diagnostic::error("set-as-value", format!("`{}` is a set, not a value", name.name), name.span, "a set")
                    .with_help(format!("iterate over it: `sum(i in {}) ...`", name.name))
            } else {
                Diagnostic::error(
                    "context",
                    format!("{} cannot use {kind} `{}`", scope.context.describe(), name.name),
                    name.span,
                    format!("{kind} used here"),
                )
                .with_label(declared, "declared here")
                .with_help(scope.context.rule())
            };
            self.error(d);
            return Ty::Error;
        }
        if let (Some(before), Symbol::Size(id) | Symbol::Param(id)) = (scope.defined_before, symbol)
            && matches!((scope.context, symbol), (Context::Size, Symbol::Size(_)) | (Context::Param, Symbol::Param(_)))
            && id >= before
        {
            let kind = self.kind_name(symbol);
            let d = if id == before {
                Diagnostic::error(
                    "cycle",
                    format!("{kind} `{}` is defined in terms of itself", name.name),
                    name.span,
                    "used in its own definition",
                )
            } else {
                Diagnostic::error(
                    "forward-reference",
                    format!("{kind} `{}` is used before its declaration", name.name),
                    name.span,
                    "used here",
                )
                .with_label(declared, "declared later here")
                .with_help(format!("move the declaration of `{}` above this one", name.name))
            };
            self.error(d);
            return Ty::Error;
        }
        if self.broken.contains(&symbol) {
            for ix in indices {
                self.expr(ix, scope);
            }
            return Ty::Error;
        }
        let dims = self.dims_of(symbol).map(<[Dimension]>::to_vec).unwrap_or_default();
        if indices.len() != dims.len() {
            let d = self.rank_error(&name.name, &dims, indices.len(), e.span);
            self.error(d);
            return Ty::Error;
        }
        let mut ok = true;
        for (position, (ix, dim)) in indices.iter().zip(&dims).enumerate() {
            ok &= self.index(ix, dim.set, &name.name, position, scope);
        }
        if !ok {
            return Ty::Error;
        }
        match symbol {
            Symbol::Size(_) => Ty::Int,
            Symbol::Set(_) => Ty::Error,
            Symbol::Param(p) => self.m.params.get(p).map_or(Ty::Error, |p| elem_ty(p.ty)),
            Symbol::State(s) => match self.m.states.get(s).and_then(|s| s.choice.as_ref()) {
                Some(_) => Ty::Choice(Chooser::State(s)),
                None => Ty::Real,
            },
            Symbol::Noise(n) => self.m.noises.get(n).map_or(Ty::Error, |n| elem_ty(n.ty)),
            Symbol::Action(a) => match self.m.actions.get(a).map(|a| &a.ty) {
                Some(ActionType::Discrete { .. }) => Ty::Choice(Chooser::Action(a)),
                _ => Ty::Real,
            },
            Symbol::Let(l) => self.m.lets.get(l).map_or(Ty::Error, |l| elem_ty(l.ty)),
        }
    }

    fn unknown_name(&mut self, name: &ast::Ident, scope: &Scope) {
        let owners: Vec<String> = self
            .m
            .actions
            .iter()
            .filter(|a| matches!(&a.ty, ActionType::Discrete { labels, over_set: None } if labels.contains(&name.name)))
            .map(|a| a.name.clone())
            .chain(
                self.m
                    .states
                    .iter()
                    .filter(|s| {
                        s.choice.as_ref().is_some_and(|c| c.over_set.is_none() && c.labels.contains(&name.name))
                    })
                    .map(|s| s.name.clone()),
            )
            .collect();
        if let Some(owner) = owners.first() {
            self.error(
                Diagnostic::error(
                    "label-as-value",
                    format!("`{}` is a label of `{owner}`, not a value", name.name),
                    name.span,
                    "a label",
                )
                .with_help(format!("compare with it: `{owner} == {}`, or `match {owner} {{ ... }}`", name.name)),
            );
            return;
        }
        if let Some(later) = self.let_names.get(&name.name).copied()
            && scope.context != Context::Step
        {
            self.error(
                Diagnostic::error(
                    "context",
                    format!("{} cannot use `{}`, a `let` of the step", scope.context.describe(), name.name),
                    name.span,
                    "a `let` used here",
                )
                .with_label(later, "defined in the step")
                .with_help(scope.context.rule()),
            );
            return;
        }
        if let Some(later) = self.let_names.get(&name.name).copied()
            && scope.defining.as_deref() == Some(name.name.as_str())
        {
            self.error(
                Diagnostic::error(
                    "cycle",
                    format!("`let {}` is defined in terms of itself", name.name),
                    name.span,
                    "used in its own definition",
                )
                .with_label(later, "defined here")
                .with_help("a `let` can read the state and earlier `let`s, not itself"),
            );
            return;
        }
        if let Some(later) = self.let_names.get(&name.name) {
            let later = *later;
            self.error(
                Diagnostic::error(
                    "forward-reference",
                    format!("`{}` is used before its `let`", name.name),
                    name.span,
                    "used here",
                )
                .with_label(later, "defined later here")
                .with_help("move the `let` above its first use"),
            );
            return;
        }
        let mut candidates: Vec<&str> = scope.binders.iter().map(|b| b.name.as_str()).collect();
        candidates.extend(
            self.globals.iter().filter(|(_, g)| scope.context.allows(g.symbol, &self.m)).map(|(k, _)| k.as_str()),
        );
        let mut d =
            Diagnostic::error("unknown-name", format!("unknown name `{}`", name.name), name.span, "not declared");
        if let Some(hint) = did_you_mean(&name.name, candidates) {
            d = d.with_help(hint);
        }
        self.error(d);
    }

    /// `sum(i in I) a[i] + b[i]` is `(sum(i in I) a[i]) + b[i]`: the reduction's body stops at
    /// the operator. An index of the reduction read on the right, which the diagnostics from
    /// `from` on report as unbound, gets that explanation instead of "sum over it".
    fn reduction_ended_before(&mut self, lhs: &ast::Expr, op: BinaryOp, from: usize) {
        // The reduction the left side ends with: `x + sum(i in I) a[i]` ends with one too.
        let mut last = lhs;
        while let ExprKind::Binary { rhs, .. } = &last.kind {
            last = rhs;
        }
        let ExprKind::Reduce { op: reduce, binders, .. } = &last.kind else { return };
        let name = match reduce {
            ast::ReduceOp::Sum => "sum",
            ast::ReduceOp::Prod => "prod",
            ast::ReduceOp::Max => "max",
            ast::ReduceOp::Min => "min",
        };
        let over: Vec<String> = binders.iter().map(|b| format!("{} in {}", b.var.name, b.set.name)).collect();
        let sym = op.symbol();
        for d in self.diagnostics.iter_mut().skip(from) {
            let bound_by_it = binders.iter().any(|b| d.message == format!("index `{}` is not bound here", b.var.name));
            if d.code == "unbound-index" && bound_by_it {
                d.help = Some(format!(
                    "`{name}({over})` takes only the term right after it, so it ends before this `{sym}`; to {name} the whole expression, put it in parentheses: `{name}({over}) (... {sym} ...)`",
                    over = over.join(", ")
                ));
                d.secondary
                    .push(crate::diagnostics::Label { span: last.span, text: format!("the `{name}` ends here") });
            }
        }
    }

    /// Checks one index of `array` against the set of its dimension.
    pub(super) fn index(
        &mut self,
        ix: &ast::Expr,
        set: SetId,
        array: &str,
        position: usize,
        scope: &mut Scope,
    ) -> bool {
        let set_name = self.m.sets.get(set).map_or("?", |s| s.name.as_str()).to_string();
        if let Some(name) = bare_name(ix)
            && !self.is_known(&name.name, scope)
            && !self.let_names.contains_key(&name.name)
        {
            self.error(
                Diagnostic::error("unbound-index", format!("index `{}` is not bound here", name.name), ix.span, "unbound index")
                    .with_help(format!(
                        "bind it: sum over it with `sum({n} in {set_name}) ...`, or give the declaration a dimension `[{n} in {set_name}]`",
                        n = name.name
                    )),
            );
            return false;
        }
        let ty = self.expr(ix, scope);
        let ordinal = ["first", "second", "third", "fourth", "fifth"]
            .get(position)
            .map_or_else(|| format!("#{}", position + 1), |s| s.to_string());
        match ty {
            Ty::Error => false,
            Ty::Index(s) if s == set || s == UNRESOLVED || set == UNRESOLVED => true,
            Ty::Index(s) => {
                let other = self.m.sets.get(s).map_or("?", |s| s.name.as_str()).to_string();
                self.error(
                    Diagnostic::error(
                        "wrong-set",
                        format!("index from the wrong set: the {ordinal} dimension of `{array}` is `{set_name}`, but this index ranges over `{other}`"),
                        ix.span,
                        format!("ranges over `{other}`"),
                    )
                    .with_help(format!("use an index over `{set_name}`")),
                );
                false
            }
            Ty::Int => {
                if let Some(v) = self.constant(ix, scope)
                    && !scope.not_taken
                    && let Some(s) = self.m.sets.get(set)
                    && (v < s.lo as f64 || v >= s.hi as f64)
                {
                    let (lo, hi) = (s.lo, s.hi);
                    self.error(Diagnostic::error(
                        "index-range",
                        format!(
                            "index {} is outside `{set_name}` = {lo}..{hi}, the {ordinal} dimension of `{array}`",
                            fmt_num(v)
                        ),
                        ix.span,
                        "out of range",
                    ));
                    return false;
                }
                true
            }
            Ty::Choice(a) => match self.choice_set(a) {
                Some(s) if s == set || set == UNRESOLVED => true,
                _ => {
                    let name = self.m.chooser_name(a).to_string();
                    self.error(
                        Diagnostic::error(
                            "wrong-set",
                            format!(
                                "`{name}` cannot index the {ordinal} dimension of `{array}`, which is `{set_name}`"
                            ),
                            ix.span,
                            "choice used as an index",
                        )
                        .with_help(format!("declare it as `choice[{set_name}]` to index by it")),
                    );
                    false
                }
            },
            Ty::Real => {
                self.error(
                    Diagnostic::error("type", "a real number cannot be an index", ix.span, "real used as an index")
                        .with_help("indices are integers: use an index name, an integer, or `floor(...)`"),
                );
                false
            }
            Ty::Bool => {
                self.error(Diagnostic::error("type", "a bool cannot be an index", ix.span, "bool used as an index"));
                false
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, lhs: &ast::Expr, rhs: &ast::Expr, scope: &mut Scope) -> Ty {
        if matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
            // Next to a labelled choice, one of its labels means the label, even where a declared
            // name is spelt the same; the clash gets a warning.
            for (choice, other) in [(lhs, rhs), (rhs, lhs)] {
                if let (Some(action), Some(name)) = (labelled_choice(self, choice), bare_name(other))
                    && self.has_label(action, &name.name)
                    && self.is_known(&name.name, scope)
                {
                    let declared = self.globals.get(&name.name).map(|g| g.span);
                    let action_name = self.m.chooser_name(action).to_string();
                    let mut d = Diagnostic::warning(
                        "label-shadows",
                        format!(
                            "`{}` is a label of `{action_name}` and also a declared name; here it means the label",
                            name.name
                        ),
                        name.span,
                        "the label",
                    )
                    .with_help("rename the declaration to avoid the ambiguity");
                    if let Some(declared) = declared {
                        d = d.with_label(declared, "also declared here");
                    }
                    self.error(d);
                    let ty = self.expr(choice, scope);
                    return self.compare_with_label(ty, choice, name, scope);
                }
            }
            let l_label = bare_name(lhs).filter(|n| !self.is_known(&n.name, scope));
            let r_label = bare_name(rhs).filter(|n| !self.is_known(&n.name, scope));
            match (l_label, r_label) {
                (None, Some(label)) => {
                    let ty = self.expr(lhs, scope);
                    return self.compare_with_label(ty, lhs, label, scope);
                }
                (Some(label), None) => {
                    let ty = self.expr(rhs, scope);
                    return self.compare_with_label(ty, rhs, label, scope);
                }
                _ => {}
            }
        }
        let a = self.expr(lhs, scope);
        let checked = self.diagnostics.len();
        let b = self.expr(rhs, scope);
        self.reduction_ended_before(lhs, op, checked);
        if a == Ty::Error || b == Ty::Error {
            return Ty::Error;
        }
        let int_like = |t: Ty| matches!(t, Ty::Int | Ty::Index(_) | Ty::Choice(_) | Ty::Bool);
        match op {
            BinaryOp::And | BinaryOp::Or => {
                let ok = self.condition(a, lhs.span, &format!("the left side of `{}`", op.symbol()))
                    & self.condition(b, rhs.span, &format!("the right side of `{}`", op.symbol()));
                if ok { Ty::Bool } else { Ty::Error }
            }
            BinaryOp::Mul => {
                // A bool factor is an indicator (Iverson bracket): `K * (q > 0)`.
                let a_ok = a == Ty::Bool || self.numeric(a, lhs.span, "the left side of `*`");
                let b_ok = b == Ty::Bool || self.numeric(b, rhs.span, "the right side of `*`");
                if !(a_ok && b_ok) {
                    Ty::Error
                } else if int_like(a) && int_like(b) {
                    Ty::Int
                } else {
                    Ty::Real
                }
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Rem | BinaryOp::Div | BinaryOp::Pow => {
                let sym = op.symbol();
                let a_ok = self.numeric(a, lhs.span, &format!("the left side of `{sym}`"));
                let b_ok = self.numeric(b, rhs.span, &format!("the right side of `{sym}`"));
                if !(a_ok && b_ok) {
                    Ty::Error
                } else if int_like(a) && int_like(b) && matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Rem) {
                    Ty::Int
                } else {
                    Ty::Real
                }
            }
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
                let sym = op.symbol();
                let a_ok = self.numeric(a, lhs.span, &format!("the left side of `{sym}`"));
                let b_ok = self.numeric(b, rhs.span, &format!("the right side of `{sym}`"));
                if a_ok && b_ok { Ty::Bool } else { Ty::Error }
            }
            BinaryOp::Eq | BinaryOp::Ne => {
                let comparable = match (a, b) {
                    (Ty::Choice(x), Ty::Choice(y)) => self.same_labels(x, y),
                    (Ty::Choice(x), other) | (other, Ty::Choice(x)) => {
                        self.choice_set(x).is_some() && matches!(other, Ty::Int | Ty::Index(_))
                    }
                    (Ty::Bool, Ty::Bool) => true,
                    (Ty::Bool, _) | (_, Ty::Bool) => false,
                    _ => true,
                };
                if !comparable {
                    let (an, bn) = (self.ty_name(a), self.ty_name(b));
                    let mut d = Diagnostic::error(
                        "type",
                        format!("cannot compare {an} with {bn}"),
                        lhs.span.to(rhs.span),
                        "mismatched comparison",
                    );
                    if let Ty::Choice(x) = a {
                        d = d.with_help(format!("compare it with one of its labels: {}", self.label_list(x)));
                    }
                    self.error(d);
                    return Ty::Error;
                }
                Ty::Bool
            }
        }
    }

    /// `order == buy`: the label is interpreted among the choice's labels.
    fn compare_with_label(&mut self, ty: Ty, other: &ast::Expr, label: &ast::Ident, scope: &mut Scope) -> Ty {
        match ty {
            Ty::Error => Ty::Error,
            Ty::Choice(a) if self.choice_set(a).is_none() => {
                let labels = self.labels(a);
                if labels.contains(&label.name) {
                    return Ty::Bool;
                }
                let action = self.m.chooser_name(a).to_string();
                let mut d = Diagnostic::error(
                    "unknown-label",
                    format!("choice `{action}` has no label `{}`", label.name),
                    label.span,
                    format!("not one of {{{}}}", labels.join(", ")),
                )
                .with_label(other.span, format!("a choice of `{action}`"));
                if let Some(hint) = did_you_mean(&label.name, labels.iter().map(String::as_str)) {
                    d = d.with_help(hint);
                }
                self.error(d);
                Ty::Error
            }
            _ => {
                // Not a labelled choice: the name must mean something by itself.
                let ast_label = ast::Expr {
                    kind: ExprKind::Access { name: label.clone(), primed: false, indices: Vec::new() },
                    span: label.span,
                };
                self.expr(&ast_label, scope);
                Ty::Error
            }
        }
    }

    fn match_expr(&mut self, e: &ast::Expr, scrutinee: &ast::Expr, arms: &[ast::MatchArm], scope: &mut Scope) -> Ty {
        let ty = self.expr(scrutinee, scope);
        let action = match ty {
            Ty::Choice(a) => a,
            Ty::Error => return Ty::Error,
            other => {
                let name = self.ty_name(other);
                self.error(
                    Diagnostic::error(
                        "type",
                        format!("`match` needs a discrete action or a choice state, but this is {name}"),
                        scrutinee.span,
                        "not a choice",
                    )
                    .with_help("for numbers and conditions use `if ... then ... else ...`"),
                );
                return Ty::Error;
            }
        };
        let action_name = self.m.chooser_name(action).to_string();
        let over_set = self.choice_set(action).is_some();
        // A `choice[SET]`'s labels are not written out: the set may hold 10^9 elements.
        let labels = if over_set { Vec::new() } else { self.labels(action) };
        let mut covered: HashMap<String, Span> = HashMap::new();
        let mut wildcard = None;
        let mut result: Option<(Ty, Span)> = None;
        let mut ok = true;
        for arm in arms {
            let key = match &arm.pattern {
                ast::Pattern::Wildcard(span) => {
                    wildcard = Some(*span);
                    None
                }
                ast::Pattern::Label(l) if !over_set => Some((l.name.clone(), l.span)),
                ast::Pattern::Number(n, span) if over_set => Some((n.to_string(), *span)),
                ast::Pattern::Label(l) => {
                    self.error(Diagnostic::error(
                        "unknown-label",
                        format!("`{action_name}` is a choice over a set: match its elements by number"),
                        l.span,
                        "expected a number",
                    ));
                    ok = false;
                    None
                }
                ast::Pattern::Number(_, span) => {
                    self.error(
                        Diagnostic::error(
                            "unknown-label",
                            format!("`{action_name}` has labels, not numbers"),
                            *span,
                            "expected a label",
                        )
                        .with_help(format!("its labels are {}", labels.join(", "))),
                    );
                    ok = false;
                    None
                }
            };
            if let Some((key, span)) = key {
                if !self.has_label(action, &key) {
                    let mut d = Diagnostic::error(
                        "unknown-label",
                        format!("choice `{action_name}` has no label `{key}`"),
                        span,
                        format!("not one of {{{}}}", self.label_list(action)),
                    );
                    if let Some(hint) = did_you_mean(&key, labels.iter().map(String::as_str)) {
                        d = d.with_help(hint);
                    }
                    self.error(d);
                    ok = false;
                } else if let Some(first) = covered.get(&key) {
                    let first = *first;
                    self.error(duplicate("arm", &key, span, first));
                    ok = false;
                } else {
                    covered.insert(key, span);
                }
            }
            let arm_ty = self.expr(&arm.value, scope);
            result = Some(match result {
                None => (arm_ty, arm.value.span),
                Some((prev, prev_span)) => {
                    (self.join(prev, arm_ty, prev_span, arm.value.span, "the arms of this `match`"), arm.value.span)
                }
            });
        }
        // Every covered key is a distinct label, so the count tells whether any is missing.
        let all_covered = covered.len() >= self.label_count(action);
        if let Some(span) = wildcard
            && all_covered
            && ok
        {
            self.error(
                Diagnostic::warning(
                    "unreachable-arm",
                    "this `_` arm is never used: every label is already covered",
                    span,
                    "unreachable",
                )
                .with_help("remove it"),
            );
        }
        if wildcard.is_none() && !all_covered && ok {
            let missing = self.label_count(action).saturating_sub(covered.len());
            let mut list: Vec<String> = match self.choice_set(action).and_then(|s| self.m.sets.get(s)) {
                // Element by element, stopping after the few a message shows.
                Some(set) => (set.lo..set.hi)
                    .map(|v| v.to_string())
                    .filter(|l| !covered.contains_key(l))
                    .take(SHOWN_LABELS)
                    .map(|m| format!("`{m}`"))
                    .collect(),
                None => labels.iter().filter(|l| !covered.contains_key(*l)).map(|m| format!("`{m}`")).collect(),
            };
            if missing > list.len() {
                list.push(format!("… and {} more", missing - list.len()));
            }
            self.error(
                Diagnostic::error(
                    "non-exhaustive",
                    format!("this `match` on `{action_name}` does not cover {}", list.join(", ")),
                    e.span,
                    "incomplete match",
                )
                .with_help("add an arm for each missing label, or `_ => ...` for the rest".to_string()),
            );
            return Ty::Error;
        }
        match (ok, result) {
            (true, Some((ty, _))) => ty,
            _ => Ty::Error,
        }
    }
}
