//! Heuristic policies: `policy NAME { tune ...; let ...; action = ... }`. A policy decides from
//! what is known before the period's noise — sizes, parameters, states, its tunable parameters
//! and its own `let`s — and gives every action exactly one rule: a label for a discrete action,
//! a number for a continuous one.

use std::collections::HashMap;

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate, name_taken};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, ExprKind, Item, PolicyStatement};

/// A name a policy defines (a tunable parameter or a `let`), visible to its later statements.
pub(super) struct Local {
    pub(super) name: String,
    pub(super) dims: Vec<Dimension>,
    pub(super) ty: Ty,
    pub(super) span: Span,
}

impl Checker<'_> {
    /// Every `policy` of the model, after the step and the settings.
    pub(super) fn policies(&mut self, ast: &ast::Model) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in &ast.items {
            let Item::Policy(p) = item else { continue };
            if let Some(first) = seen.get(&p.name.name) {
                let first = *first;
                self.error(duplicate("policy", &p.name.name, p.name.span, first));
                continue;
            }
            seen.insert(p.name.name.clone(), p.name.span);
            self.policy(p);
            self.locals.clear();
        }
    }

    fn policy(&mut self, p: &ast::PolicyDecl) {
        let mut policy = Policy {
            name: p.name.name.clone(),
            tunables: Vec::new(),
            lets: Vec::new(),
            rules: Vec::new(),
            span: p.span,
        };
        let mut given: HashMap<ActionId, Span> = HashMap::new();
        for statement in &p.statements {
            match statement {
                PolicyStatement::Tune { name, lo, hi, start, span } => {
                    if !self.new_local(name) {
                        self.broken_local(name);
                        continue;
                    }
                    if let Some(t) = self.tunable(name, lo, hi, start, *span) {
                        policy.tunables.push(t);
                    }
                    self.locals.push(Local {
                        name: name.name.clone(),
                        dims: Vec::new(),
                        ty: Ty::Real,
                        span: name.span,
                    });
                }
                PolicyStatement::Let { name, dims, value, span } => {
                    if !self.new_local(name) {
                        self.broken_local(name);
                        continue;
                    }
                    let (dims, dims_ok) = self.dims(dims, &[value]);
                    let mut scope = Scope::with_dims(Context::Policy, &dims);
                    scope.defining = Some(name.name.clone());
                    let ty = self.expr(value, &mut scope);
                    let ty = if dims_ok { ty } else { Ty::Error };
                    let elem = self.element_type(ty, None, &name.name, value.span);
                    self.locals.push(Local {
                        name: name.name.clone(),
                        dims: dims.clone(),
                        ty: elem.map_or(Ty::Error, elem_ty),
                        span: name.span,
                    });
                    if let Some(elem) = elem {
                        policy.lets.push(Let {
                            name: name.name.clone(),
                            dims,
                            ty: elem,
                            value: value.clone(),
                            span: *span,
                        });
                    }
                }
                PolicyStatement::Assign { name, indices, value, span } => {
                    if let Some(rule) = self.rule(name, indices, value, *span, &mut given) {
                        policy.rules.push(rule);
                    }
                }
            }
        }
        let missing: Vec<String> = self
            .m
            .actions
            .iter()
            .enumerate()
            .filter(|(id, _)| !given.contains_key(id) && !self.broken.contains(&Symbol::Action(*id)))
            .map(|(_, a)| a.name.clone())
            .collect();
        for action in &missing {
            let example = self.m.actions.iter().find(|a| a.name == *action).map_or(String::new(), |a| {
                let indices: Vec<&str> = a.dims.iter().map(|d| d.index.as_deref().unwrap_or("i")).collect();
                if indices.is_empty() { String::new() } else { format!("[{}]", indices.join(", ")) }
            });
            self.error(
                Diagnostic::error(
                    "missing-rule",
                    format!("policy `{}` does not say what `{action}` is", p.name.name),
                    p.name.span,
                    format!("no rule for `{action}`"),
                )
                .with_help(format!("a policy gives every action a rule: add `{action}{example} = ...`")),
            );
        }
        self.m.policies.push(policy);
    }

    /// Whether `name` can be defined in the policy: no declaration, `let` or cost of the model,
    /// and no earlier name of the policy, has it.
    fn new_local(&mut self, name: &ast::Ident) -> bool {
        if let Some(first) = self.locals.iter().find(|l| l.name == name.name).map(|l| l.span) {
            self.error(duplicate("name", &name.name, name.span, first));
            return false;
        }
        if let Some(g) = self.globals.get(&name.name) {
            let (kind, first) = (self.kind_name(g.symbol), g.span);
            self.error(name_taken("name in a policy", &name.name, name.span, kind, first));
            return false;
        }
        if let Some(cost) = self.m.costs.iter().find(|c| c.name == name.name).map(|c| c.span) {
            self.error(name_taken("name in a policy", &name.name, name.span, "cost", cost));
            return false;
        }
        true
    }

    /// A name the policy could not define: later uses of it read it silently (as a broken
    /// declaration does), instead of the declaration it collides with.
    fn broken_local(&mut self, name: &ast::Ident) {
        self.locals.push(Local { name: name.name.clone(), dims: Vec::new(), ty: Ty::Error, span: name.span });
    }

    /// `tune s in [lo, hi] = start`: constant bounds holding the start.
    fn tunable(
        &mut self,
        name: &ast::Ident,
        lo: &ast::Expr,
        hi: &ast::Expr,
        start: &ast::Expr,
        span: Span,
    ) -> Option<Tunable> {
        let mut values = [0.0; 3];
        let mut ok = true;
        for (slot, (e, what)) in values.iter_mut().zip([
            (lo, "a tunable's lower bound"),
            (hi, "a tunable's upper bound"),
            (start, "a tunable's start value"),
        ]) {
            let mut scope = Scope::new(Context::Setting);
            let ty = self.expr(e, &mut scope);
            if !self.numeric(ty, e.span, what) {
                ok = false;
                continue;
            }
            match self.constant(e, &scope).filter(|v| v.is_finite()) {
                Some(v) => *slot = v,
                None => {
                    self.not_constant(e, what);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let [lo_value, hi_value, start_value] = values;
        if lo_value >= hi_value {
            self.error(
                Diagnostic::error(
                    "tune-bounds",
                    format!(
                        "the bounds of `{}` are empty: {} is not below {}",
                        name.name,
                        fmt_num(lo_value),
                        fmt_num(hi_value)
                    ),
                    lo.span.to(hi.span),
                    "empty interval",
                )
                .with_help("write the lower bound first, e.g. `tune s in [0, 100] = 10`"),
            );
            return None;
        }
        if !(lo_value..=hi_value).contains(&start_value) {
            self.error(
                Diagnostic::error(
                    "tune-start",
                    format!(
                        "`{}` starts at {}, outside its bounds [{}, {}]",
                        name.name,
                        fmt_num(start_value),
                        fmt_num(lo_value),
                        fmt_num(hi_value)
                    ),
                    start.span,
                    "start value",
                )
                .with_label(lo.span.to(hi.span), "bounds")
                .with_help("the start value is where `hmdpc tune` begins: put it inside the bounds"),
            );
            return None;
        }
        Some(Tunable { name: name.name.clone(), lo: lo_value, hi: hi_value, start: start_value, span })
    }

    /// `action[i, ...] = value`: the rule of one action, once, over all its elements.
    fn rule(
        &mut self,
        name: &ast::Ident,
        indices: &[ast::Expr],
        value: &ast::Expr,
        span: Span,
        given: &mut HashMap<ActionId, Span>,
    ) -> Option<Rule> {
        let alone = |this: &mut Self| {
            let mut scope = Scope::new(Context::Policy);
            this.expr(value, &mut scope);
        };
        let action = match self.globals.get(&name.name).map(|g| (g.symbol, g.span)) {
            Some((Symbol::Action(a), _)) => a,
            Some((other, declared)) => {
                let kind = self.kind_name(other);
                self.error(
                    Diagnostic::error(
                        "not-an-action",
                        format!("a policy sets actions, and `{}` is a {kind}", name.name),
                        name.span,
                        "not an action",
                    )
                    .with_label(declared, "declared here")
                    .with_help("compute values in a `let`; give a rule only to each action"),
                );
                alone(self);
                return None;
            }
            None => {
                let actions: Vec<&str> = self.m.actions.iter().map(|a| a.name.as_str()).collect();
                let mut d = Diagnostic::error(
                    "unknown-name",
                    format!("unknown action `{}`", name.name),
                    name.span,
                    "no action has this name",
                );
                if let Some(help) = did_you_mean(&name.name, actions) {
                    d = d.with_help(help);
                }
                self.error(d);
                alone(self);
                return None;
            }
        };
        if let Some(first) = given.get(&action) {
            let first = *first;
            self.error(
                Diagnostic::error(
                    "duplicate-rule",
                    format!("`{}` is given two rules", name.name),
                    name.span,
                    "second rule",
                )
                .with_label(first, "first rule")
                .with_help(
                    "a policy gives each action exactly one rule; combine the cases with `if ... then ... else`",
                ),
            );
            return None;
        }
        given.insert(action, name.span);
        if self.broken.contains(&Symbol::Action(action)) {
            return None;
        }
        let dims = self.m.actions.get(action).map(|a| a.dims.clone()).unwrap_or_default();
        if indices.len() != dims.len() {
            let at = name.span.to(indices.last().map_or(name.span, |e| e.span));
            let mut d = self.rank_error(&name.name, &dims, indices.len(), at);
            if dims.is_empty() {
                d.help = Some(format!("a scalar action's rule has no brackets: `{} = ...`", name.name));
            }
            self.error(d);
            return None;
        }
        let mut scope = Scope::new(Context::Policy);
        let mut names = Vec::new();
        for (ix, dim) in indices.iter().zip(&dims) {
            match bare_name(ix) {
                Some(index)
                    if !self.globals.contains_key(&index.name)
                        && !self.locals.iter().any(|l| l.name == index.name)
                        && scope.binder(&index.name).is_none() =>
                {
                    scope.binders.push(Binding { name: index.name.clone(), set: dim.set });
                    names.push(index.name.clone());
                }
                _ => {
                    self.error(
                        Diagnostic::error(
                            "partial-rule",
                            format!("`{}` must be given one rule for all its elements", name.name),
                            ix.span,
                            "expected a new index name",
                        )
                        .with_help(format!(
                            "name each dimension with a new index, e.g. `{}[{}] = ...`, and distinguish elements with `if`",
                            name.name,
                            (0..dims.len()).map(|k| ["i", "j", "k", "l"].get(k).copied().unwrap_or("n")).collect::<Vec<_>>().join(", ")
                        )),
                    );
                    return None;
                }
            }
        }
        let discrete = self.m.actions.get(action).is_some_and(Action::is_discrete);
        let ok = if discrete && self.over_set(action).is_none() {
            self.label_rule(value, action, &mut scope)
        } else {
            let ty = self.expr(value, &mut scope);
            match ty {
                Ty::Choice(c) if self.same_labels(c, Chooser::Action(action)) => true,
                Ty::Int | Ty::Index(_) if discrete => true,
                _ if discrete => {
                    if ty != Ty::Error {
                        self.error(
                            Diagnostic::error(
                                "type",
                                format!("`{}` chooses an element of a set, but this is not an integer", name.name),
                                value.span,
                                "not an integer",
                            )
                            .with_help(
                                "give an integer expression, e.g. `argmin`-free rules such as `if x > 0 then 1 else 0`",
                            ),
                        );
                    }
                    false
                }
                _ => self.numeric(ty, value.span, "a continuous action's rule"),
            }
        };
        ok.then(|| Rule { action, indices: names, value: value.clone(), span })
    }

    /// A labelled choice's rule: a label of the action, possibly chosen by `if`.
    fn label_rule(&mut self, e: &ast::Expr, action: ActionId, scope: &mut Scope) -> bool {
        let action_name = self.m.actions.get(action).map_or(String::new(), |a| a.name.clone());
        let labels = self.m.actions.get(action).map(|a| self.m.labels(a)).unwrap_or_default();
        match &e.kind {
            ExprKind::Paren(inner) => self.label_rule(inner, action, scope),
            ExprKind::If { cond, then, otherwise } => {
                let ty = self.expr(cond, scope);
                let c = self.condition(ty, cond.span, "an `if` condition");
                let a = self.label_rule(then, action, scope);
                let b = self.label_rule(otherwise, action, scope);
                c && a && b
            }
            ExprKind::Access { name, primed: false, indices }
                if indices.is_empty() && scope.binder(&name.name).is_none() =>
            {
                if labels.contains(&name.name) {
                    return true;
                }
                let mut d = Diagnostic::error(
                    "unknown-label",
                    format!("`{action_name}` has no label `{}`", name.name),
                    name.span,
                    "not a label of this choice",
                )
                .with_help(format!("its labels are: {}", labels.join(", ")));
                if let Some(help) = did_you_mean(&name.name, labels.iter().map(String::as_str)) {
                    d = d.with_help(help);
                }
                self.error(d);
                false
            }
            _ => {
                let ty = self.expr(e, scope);
                if let Ty::Choice(c) = ty
                    && self.same_labels(c, Chooser::Action(action))
                {
                    return true;
                }
                if ty != Ty::Error {
                    self.error(
                        Diagnostic::error(
                            "policy-label",
                            format!("`{action_name}` must be given one of its labels"),
                            e.span,
                            "not a label",
                        )
                        .with_help(format!(
                            "write a label ({}), or choose one with `if ... then {} else {}`",
                            labels.join(", "),
                            labels.last().map_or("a", String::as_str),
                            labels.first().map_or("b", String::as_str)
                        )),
                    );
                }
                false
            }
        }
    }
}
