//! The settings after the step: `horizon`, `warmup`, `discount`, `report` and `observe`.

use std::collections::HashMap;

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, ExprKind, Item};

impl Checker<'_> {
    pub(super) fn settings(&mut self, ast: &ast::Model) {
        let mut firsts: HashMap<&'static str, Span> = HashMap::new();
        let mut horizon = None;
        for item in &ast.items {
            let (key, span) = match item {
                Item::Horizon(s) => ("horizon", s.span),
                Item::Warmup(s) => ("warmup", s.span),
                Item::Discount(s) => ("discount", s.span),
                Item::Report(r) => ("report", r.span),
                Item::Observe(o) => ("observe", o.span),
                _ => continue,
            };
            let head = Span::new(span.start, span.start + key.len());
            if let Some(first) = firsts.get(key) {
                let first = *first;
                self.error(duplicate("setting", key, head, first));
                continue;
            }
            firsts.insert(key, head);
            match item {
                Item::Horizon(s) => {
                    if let Some(v) = self.setting(
                        &s.value,
                        "horizon",
                        |v| v.fract() == 0.0 && (1.0..=1e9).contains(&v),
                        "a whole number of steps, at least 1",
                    ) {
                        self.m.horizon = v as u64;
                        horizon = Some(v as u64);
                    }
                }
                Item::Warmup(s) => {
                    if let Some(v) = self.setting(
                        &s.value,
                        "warmup",
                        |v| v.fract() == 0.0 && (0.0..=1e9).contains(&v),
                        "a whole number of steps, at least 0",
                    ) {
                        self.m.warmup = v as u64;
                    }
                }
                Item::Discount(s) => {
                    if let Some(v) = self.setting(&s.value, "discount", |v| v > 0.0 && v <= 1.0, "a factor in (0, 1]") {
                        self.m.discount = v;
                    }
                }
                Item::Report(r) => self.report(r),
                Item::Observe(o) => self.observe(o),
                _ => {}
            }
        }
        match horizon {
            None if !firsts.contains_key("horizon") => self.error(
                Diagnostic::error("missing-horizon", "the model has no `horizon`", ast.name.span, "in this model")
                    .with_help("say how many steps an episode has, e.g. `horizon 100`"),
            ),
            Some(h) if self.m.warmup >= h => {
                if let Some(span) = firsts.get("warmup") {
                    self.error(
                        Diagnostic::error(
                            "warmup",
                            format!("warm-up of {} steps leaves nothing of a horizon of {h}", self.m.warmup),
                            *span,
                            "too long",
                        )
                        .with_help("the warm-up must be shorter than the horizon"),
                    );
                }
            }
            _ => {}
        }
        if !firsts.contains_key("observe") {
            self.m.observe = (0..self.m.states.len()).map(Observed::State).collect();
        }
    }

    pub(super) fn setting(
        &mut self,
        e: &ast::Expr,
        what: &str,
        valid: impl Fn(f64) -> bool,
        expected: &str,
    ) -> Option<f64> {
        let mut scope = Scope::new(Context::Setting);
        let ty = self.expr(e, &mut scope);
        if !self.numeric(ty, e.span, what) {
            return None;
        }
        match self.constant(e, &scope) {
            Some(v) if valid(v) => Some(v),
            Some(v) => {
                self.error(Diagnostic::error(
                    "bad-setting",
                    format!("`{what}` must be {expected}, not {}", fmt_num(v)),
                    e.span,
                    "invalid value",
                ));
                None
            }
            None => {
                self.not_constant(e, &format!("`{what}`"));
                None
            }
        }
    }

    fn report(&mut self, r: &ast::ReportDecl) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for per in &r.per {
            if let Some(first) = seen.insert(per.name.as_str(), per.span) {
                self.error(
                    Diagnostic::error("duplicate", format!("`per {}` is given twice", per.name), per.span, "again")
                        .with_label(first, "first here")
                        .with_help("remove one"),
                );
                continue;
            }
            if per.name == "period" {
                self.m.report.push(ReportScale::Period);
                continue;
            }
            match self.globals.get(&per.name).map(|g| g.symbol) {
                Some(Symbol::Size(s)) if self.m.sizes.get(s).is_some_and(|s| s.value == 0) => self.error(
                    Diagnostic::error(
                        "report",
                        format!("cannot report per `{}`: it is 0", per.name),
                        per.span,
                        "a size of 0",
                    )
                    .with_help(format!(
                        "dividing by 0 has no meaning: give `{}` a value of at least 1, or drop `per {}`",
                        per.name, per.name
                    )),
                ),
                Some(Symbol::Size(s)) => self.m.report.push(ReportScale::Size(s)),
                _ => {
                    let mut candidates: Vec<&str> = self.m.sizes.iter().map(|s| s.name.as_str()).collect();
                    candidates.push("period");
                    let mut d = Diagnostic::error(
                        "report",
                        format!("cannot report per `{}`", per.name),
                        per.span,
                        "not a size or `period`",
                    )
                    .with_help("report per `period` or per a size, e.g. `report per period per items`");
                    if let Some(hint) = did_you_mean(&per.name, candidates) {
                        d = d.with_help(hint);
                    }
                    self.error(d);
                }
            }
        }
    }

    fn observe(&mut self, o: &ast::ObserveDecl) {
        if o.names.is_empty() {
            self.error(
                Diagnostic::error("observe", "`observe` lists nothing: the policy would see nothing", o.span, "empty")
                    .with_help(
                        "list states, parameters and `let`s of them, or remove `observe` to observe every state",
                    ),
            );
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for name in &o.names {
            if let Some(first) = seen.insert(name.name.as_str(), name.span) {
                self.error(duplicate("observation", &name.name, name.span, first));
                continue;
            }
            match self.globals.get(&name.name).map(|g| g.symbol) {
                None if name.name == PERIOD => {
                    self.m.observe.push(Observed::Period);
                    self.m.reads_period = true;
                }
                Some(Symbol::State(s)) => self.m.observe.push(Observed::State(s)),
                Some(Symbol::Param(p)) => self.m.observe.push(Observed::Param(p)),
                Some(Symbol::Let(l)) if self.broken.contains(&Symbol::Let(l)) => {}
                Some(Symbol::Let(l)) => match self.decision_read(l) {
                    None => {
                        self.m.observe.push(Observed::Let(l));
                        self.needed_before_decision(l);
                    }
                    Some(read) => {
                        let mut d = Diagnostic::error(
                            "observe",
                            format!(
                                "cannot observe `{}`: it reads {}, which the policy does not know yet",
                                name.name, read.what
                            ),
                            name.span,
                            "observed here",
                        )
                        .with_label(read.span, format!("reads {}", read.what));
                        if let Some(through) = read.through {
                            d = d.with_label(through.0, format!("`{}` reads it", through.1));
                        }
                        self.error(d.with_help(
                            "the policy decides before the noise is drawn: observe a `let` of states and parameters only",
                        ));
                    }
                },
                Some(other) => {
                    let why = match other {
                        Symbol::Noise(_) => "noise is drawn after the decision, so the policy cannot see it",
                        Symbol::Action(_) => "actions are what the policy decides, not what it sees",
                        _ => "the policy observes states and parameters",
                    };
                    let kind = self.kind_name(other);
                    self.error(
                        Diagnostic::error(
                            "observe",
                            format!("cannot observe `{}`: it is a {kind}", name.name),
                            name.span,
                            "not observable",
                        )
                        .with_help(why),
                    );
                }
                None => {
                    let candidates: Vec<&str> = self
                        .m
                        .states
                        .iter()
                        .map(|s| s.name.as_str())
                        .chain(self.m.params.iter().map(|p| p.name.as_str()))
                        .collect();
                    let mut d = Diagnostic::error(
                        "unknown-name",
                        format!("unknown name `{}`", name.name),
                        name.span,
                        "not a state or parameter",
                    );
                    if let Some(hint) = did_you_mean(&name.name, candidates) {
                        d = d.with_help(hint);
                    }
                    self.error(d);
                }
            }
        }
    }
}

/// A read that keeps a `let` from being observed: where, of what, and through which other `let`
/// (its use in the observed one), if not directly.
struct DecisionRead {
    span: Span,
    what: String,
    through: Option<(Span, String)>,
}

impl Checker<'_> {
    /// The first read of noise or an action in the value of `let` `l`, directly or through the
    /// lets it reads; `None` when it reads only states, parameters, sizes and indices, so it can
    /// be computed before the decision.
    fn decision_read(&self, l: LetId) -> Option<DecisionRead> {
        let value = &self.m.lets.get(l)?.value;
        let mut found = None;
        self.first_read(value, &mut found);
        found
    }

    fn first_read(&self, e: &ast::Expr, found: &mut Option<DecisionRead>) {
        if found.is_some() {
            return;
        }
        match &e.kind {
            ExprKind::Access { name, indices, .. } => {
                match self.globals.get(&name.name).map(|g| g.symbol) {
                    Some(Symbol::Noise(_)) => {
                        *found = Some(DecisionRead {
                            span: name.span,
                            what: format!("noise `{}`", name.name),
                            through: None,
                        })
                    }
                    Some(Symbol::Action(_)) => {
                        *found = Some(DecisionRead {
                            span: name.span,
                            what: format!("action `{}`", name.name),
                            through: None,
                        })
                    }
                    Some(Symbol::Let(inner)) => {
                        if let Some(read) = self.decision_read(inner) {
                            *found = Some(DecisionRead { through: Some((name.span, name.name.clone())), ..read });
                        }
                    }
                    _ => {}
                }
                indices.iter().for_each(|i| self.first_read(i, found));
            }
            ExprKind::Call { args, .. } => args.iter().for_each(|a| self.first_read(a, found)),
            ExprKind::Reduce { body, .. } => self.first_read(body, found),
            ExprKind::Unary { operand, .. } => self.first_read(operand, found),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.first_read(lhs, found);
                self.first_read(rhs, found);
            }
            ExprKind::If { cond, then, otherwise } => {
                self.first_read(cond, found);
                self.first_read(then, found);
                self.first_read(otherwise, found);
            }
            ExprKind::Match { scrutinee, arms } => {
                self.first_read(scrutinee, found);
                arms.iter().for_each(|a| self.first_read(&a.value, found));
            }
            ExprKind::Paren(inner) => self.first_read(inner, found),
            ExprKind::Number { .. } | ExprKind::Bool(_) | ExprKind::Error => {}
        }
    }

    /// Adds `l` and every let it reads to [`CheckedModel::before_decision`], kept in step order.
    fn needed_before_decision(&mut self, l: LetId) {
        if self.m.before_decision.contains(&l) {
            return;
        }
        let mut reads = Vec::new();
        if let Some(value) = self.m.lets.get(l).map(|l| l.value.clone()) {
            self.lets_read(&value, &mut reads);
        }
        for inner in reads {
            self.needed_before_decision(inner);
        }
        self.m.before_decision.push(l);
        self.m.before_decision.sort_unstable();
    }

    fn lets_read(&self, e: &ast::Expr, out: &mut Vec<LetId>) {
        match &e.kind {
            ExprKind::Access { name, indices, .. } => {
                if let Some(Symbol::Let(l)) = self.globals.get(&name.name).map(|g| g.symbol) {
                    out.push(l);
                }
                indices.iter().for_each(|i| self.lets_read(i, out));
            }
            ExprKind::Call { args, .. } => args.iter().for_each(|a| self.lets_read(a, out)),
            ExprKind::Reduce { body, .. } => self.lets_read(body, out),
            ExprKind::Unary { operand, .. } => self.lets_read(operand, out),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.lets_read(lhs, out);
                self.lets_read(rhs, out);
            }
            ExprKind::If { cond, then, otherwise } => {
                self.lets_read(cond, out);
                self.lets_read(then, out);
                self.lets_read(otherwise, out);
            }
            ExprKind::Match { scrutinee, arms } => {
                self.lets_read(scrutinee, out);
                arms.iter().for_each(|a| self.lets_read(&a.value, out));
            }
            ExprKind::Paren(inner) => self.lets_read(inner, out),
            ExprKind::Number { .. } | ExprKind::Bool(_) | ExprKind::Error => {}
        }
    }
}
