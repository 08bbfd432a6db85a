//! The settings after the step: `horizon`, `warmup`, `discount`, `report` and `observe`.

use std::collections::HashMap;

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, Item};

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
                    .with_help("list states and parameters, or remove `observe` to observe every state"),
            );
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for name in &o.names {
            if let Some(first) = seen.insert(name.name.as_str(), name.span) {
                self.error(duplicate("observation", &name.name, name.span, first));
                continue;
            }
            match self.globals.get(&name.name).map(|g| g.symbol) {
                Some(Symbol::State(s)) => self.m.observe.push(Observed::State(s)),
                Some(Symbol::Param(p)) => self.m.observe.push(Observed::Param(p)),
                Some(other) => {
                    let why = match other {
                        Symbol::Noise(_) => "noise is drawn after the decision, so the policy cannot see it",
                        Symbol::Action(_) => "actions are what the policy decides, not what it sees",
                        Symbol::Let(_) => "`let`s are computed in the step, after the decision",
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
