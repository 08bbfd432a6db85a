//! States that hold a choice (`state last: choice { off, on } = off`, `state last: choice[M] = 0`):
//! their labels, and the values they may be given — at the start and in the step — which are
//! values of the same choice, never numbers, so that what reads the state is split into regimes
//! instead of jumping.

use std::collections::HashMap;

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, ExprKind};

impl Checker<'_> {
    /// The labels of a choice-typed state, or `None` (and the state is broken) when they are
    /// wrong: a label listed twice, a set that is unknown or empty.
    pub(super) fn state_choice(&mut self, name: &ast::Ident, ty: &ast::ChoiceType) -> Option<Choice> {
        match ty {
            ast::ChoiceType::Labels(labels) => {
                let mut seen: HashMap<&str, Span> = HashMap::new();
                let mut ok = true;
                for label in labels {
                    if let Some(first) = seen.insert(label.name.as_str(), label.span) {
                        self.error(duplicate("label", &label.name, label.span, first));
                        ok = false;
                    }
                }
                ok.then(|| Choice { labels: labels.iter().map(|l| l.name.clone()).collect(), over_set: None })
            }
            ast::ChoiceType::OverSet(set) => {
                let s = self.set_named(set)?;
                let range = self.m.sets.get(s).filter(|s| s.is_empty()).map(|s| format!("{}..{}", s.lo, s.hi));
                if let Some(range) = range {
                    self.error(
                        Diagnostic::error(
                            "empty-set",
                            format!("`{}` can hold nothing: set `{}` = {range} is empty", name.name, set.name),
                            set.span,
                            "empty set",
                        )
                        .with_help("a choice needs at least one option: give the set at least one element"),
                    );
                    return None;
                }
                Some(Choice { labels: Vec::new(), over_set: Some(s) })
            }
        }
    }

    /// Checks a value given to a choice state (`what` says where: its initial value, its next
    /// value): one of its labels, a value of a discrete action or choice state with the same
    /// labels, or an `if` or `match` choosing among those. For `choice[SET]`, an element of the
    /// set known at compile time also counts. Anything else — a real number above all — is
    /// refused, since the state would then hold something that is not one of its labels.
    pub(super) fn choice_value(&mut self, e: &ast::Expr, state: StateId, scope: &mut Scope, what: &str) -> bool {
        let target = Chooser::State(state);
        match &e.kind {
            ExprKind::Paren(inner) => self.choice_value(inner, state, scope, what),
            ExprKind::If { cond, then, otherwise } => {
                let ty = self.expr(cond, scope);
                let c = self.condition(ty, cond.span, "an `if` condition");
                let a = self.choice_value(then, state, scope, what);
                let b = self.choice_value(otherwise, state, scope, what);
                c && a && b
            }
            ExprKind::Access { name, primed: false, indices }
                if indices.is_empty()
                    && scope.binder(&name.name).is_none()
                    && self.choice_set(target).is_none()
                    && !matches!(
                        self.globals.get(&name.name).map(|g| g.symbol),
                        Some(Symbol::Action(_) | Symbol::State(_))
                    ) =>
            {
                // A bare name next to a labelled choice state is one of its labels.
                if self.has_label(target, &name.name) {
                    return true;
                }
                let labels = self.m.choice_labels(target);
                let mut d = Diagnostic::error(
                    "unknown-label",
                    format!("choice state `{}` has no label `{}`", self.m.chooser_name(target), name.name),
                    name.span,
                    format!("not one of {{{}}}", labels.join(", ")),
                );
                if let Some(hint) = did_you_mean(&name.name, labels.iter().map(String::as_str)) {
                    d = d.with_help(hint);
                }
                self.error(d);
                false
            }
            _ => {
                let ty = self.expr(e, scope);
                let element = match (ty, self.choice_set(target)) {
                    (Ty::Choice(c), _) if self.same_labels(c, target) => return true,
                    (Ty::Int | Ty::Index(_), Some(set)) => self.constant(e, scope).map(|v| (v, set)),
                    (Ty::Error, _) => return false,
                    _ => None,
                };
                if let Some((v, set)) = element
                    && self.m.sets.get(set).is_some_and(|s| v >= s.lo as f64 && v < s.hi as f64)
                {
                    return true;
                }
                let d = self.not_a_choice_value(e.span, state, ty, element.map(|(v, _)| v), what);
                self.error(d);
                false
            }
        }
    }

    fn not_a_choice_value(&self, span: Span, state: StateId, ty: Ty, constant: Option<f64>, what: &str) -> Diagnostic {
        let target = Chooser::State(state);
        let name = self.m.chooser_name(target).to_string();
        let (labels, example) = match self.choice_set(target).and_then(|s| self.m.sets.get(s)) {
            Some(set) => (
                format!("an element of `{}` = {}..{}", set.name, set.lo, set.hi),
                format!("`{name}' = if ... then {} else {name}`, or a `choice[{}]` action", set.lo, set.name),
            ),
            None => {
                let labels = self.m.choice_labels(target);
                let first = labels.first().map_or("a", String::as_str);
                (
                    format!("one of its labels ({})", labels.join(", ")),
                    format!("`{name}' = if ... then {first} else {name}`, or an action with the same labels"),
                )
            }
        };
        let found = match (ty, constant) {
            (_, Some(v)) => format!("{}, outside the choice", fmt_num(v)),
            (Ty::Real, _) => "a real number".to_string(),
            (Ty::Int | Ty::Index(_), _) if self.choice_set(target).is_some() => {
                "a number not known at compile time".to_string()
            }
            (Ty::Int | Ty::Index(_), _) => "a number".to_string(),
            (Ty::Bool, _) => "a bool".to_string(),
            (Ty::Choice(c), _) => format!("a choice of `{}`, with other labels", self.m.chooser_name(c)),
            (Ty::Error, _) => "an error".to_string(),
        };
        Diagnostic::error(
            "choice-value",
            format!("{what} of `{name}` must be {labels}, but this is {found}"),
            span,
            "not a value of the choice",
        )
        .with_help(format!("a choice state holds a label: write {example}"))
    }
}
