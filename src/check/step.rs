//! The step: `let`s, costs and state updates, each state updated exactly once.

use std::collections::HashMap;

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate, name_taken};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self};

impl Checker<'_> {
    pub(super) fn step(&mut self, step: &ast::StepBlock) {
        let mut updated: HashMap<StateId, Span> = HashMap::new();
        let mut cost_names: HashMap<String, Span> = HashMap::new();
        for statement in &step.statements {
            match statement {
                ast::Statement::Let { name, dims, value, span } => {
                    if let Some(cost) = cost_names.get(&name.name) {
                        let cost = *cost;
                        self.error(name_taken("`let` binding", &name.name, name.span, "cost", cost));
                    }
                    self.let_binding(name, dims, value, *span);
                }
                ast::Statement::Cost { name, value, span } => {
                    // Costs become buffers of the IR beside every declaration and `let`, so
                    // they share the one namespace.
                    if let Some(first) = cost_names.get(&name.name) {
                        let first = *first;
                        self.error(duplicate("cost", &name.name, name.span, first));
                    } else if name.name == PERIOD {
                        self.error(period_taken("cost", name.span));
                    } else if let Some(g) = self.globals.get(&name.name) {
                        let (kind, first) = (self.kind_name(g.symbol), g.span);
                        self.error(name_taken("cost", &name.name, name.span, kind, first));
                    } else {
                        cost_names.insert(name.name.clone(), name.span);
                    }
                    let mut scope = Scope::new(Context::Step);
                    let ty = self.expr(value, &mut scope);
                    self.numeric(ty, value.span, "a cost");
                    self.m.costs.push(Cost { name: name.name.clone(), value: value.clone(), span: *span });
                }
                ast::Statement::Update { name, indices, value, span } => {
                    self.update(name, indices, value, *span, &mut updated);
                }
            }
        }
        for (id, state) in self.m.states.iter().enumerate() {
            if !updated.contains_key(&id) && !self.broken.contains(&Symbol::State(id)) {
                let indices: Vec<&str> = state.dims.iter().map(|d| d.index.as_deref().unwrap_or("i")).collect();
                let suffix = if indices.is_empty() { String::new() } else { format!("[{}]", indices.join(", ")) };
                let name_span = self.globals.get(&state.name).map_or(state.span, |g| g.span);
                self.diagnostics.push(
                    Diagnostic::error("never-updated", format!("state `{}` is never updated", state.name), name_span, "declared here")
                        .with_help(format!(
                            "give it a next value in the step, e.g. `{name}'{suffix} = {name}{suffix}` if it stays constant",
                            name = state.name
                        )),
                );
            }
        }
        // Updates in the order of the states they update.
        self.m.updates.sort_by_key(|u| u.state);
        if self.m.costs.is_empty() {
            self.error(
                Diagnostic::error(
                    "no-cost",
                    "the step has no cost",
                    Span::new(step.span.start, step.span.start + 4),
                    "in this step",
                )
                .with_help("add at least one named cost, e.g. `cost holding = sum(i in I) h[i] * x[i]`"),
            );
        }
    }

    /// `terminal { cost NAME = expr ... }`: costs of the final states, in the one namespace
    /// with the step's costs.
    pub(super) fn terminal(&mut self, block: &ast::TerminalBlock) {
        for statement in &block.costs {
            let ast::Statement::Cost { name, value, span } = statement else { continue };
            if let Some(first) =
                self.m.costs.iter().chain(&self.m.terminal).find(|c| c.name == name.name).map(|c| c.span)
            {
                self.error(duplicate("cost", &name.name, name.span, first));
            } else if name.name == PERIOD {
                self.error(period_taken("cost", name.span));
            } else if let Some(g) = self.globals.get(&name.name) {
                let (kind, first) = (self.kind_name(g.symbol), g.span);
                self.error(name_taken("cost", &name.name, name.span, kind, first));
            }
            let mut scope = Scope::new(Context::Terminal);
            let ty = self.expr(value, &mut scope);
            self.numeric(ty, value.span, "a cost");
            self.m.terminal.push(Cost { name: name.name.clone(), value: value.clone(), span: *span });
        }
    }

    fn let_binding(&mut self, name: &ast::Ident, dims: &[ast::Dim], value: &ast::Expr, span: Span) {
        if name.name == PERIOD {
            self.error(period_taken("`let`", name.span));
            return;
        }
        if let Some(g) = self.globals.get(&name.name) {
            let first = g.span;
            self.error(duplicate("`let`", &name.name, name.span, first));
            return;
        }
        let id = self.m.lets.len();
        let (dims, dims_ok) = self.dims(dims, &[value]);
        let mut scope = Scope::with_dims(Context::Step, &dims);
        scope.defining = Some(name.name.clone());
        let ty = self.expr(value, &mut scope);
        let ty = if dims_ok { ty } else { Ty::Error };
        let elem = self.element_type(ty, None, &name.name, value.span);
        if elem.is_none() {
            self.broken.insert(Symbol::Let(id));
        }
        self.m.lets.push(Let {
            name: name.name.clone(),
            dims,
            ty: elem.unwrap_or(ElemType::Real),
            value: value.clone(),
            span,
        });
        self.globals.insert(name.name.clone(), Global { symbol: Symbol::Let(id), span: name.span });
    }

    fn update(
        &mut self,
        name: &ast::Ident,
        indices: &[ast::Expr],
        value: &ast::Expr,
        span: Span,
        updated: &mut HashMap<StateId, Span>,
    ) {
        let state = match self.globals.get(&name.name).map(|g| (g.symbol, g.span)) {
            Some((Symbol::State(s), _)) => s,
            Some((other, declared)) => {
                let kind = self.kind_name(other);
                self.error(
                    Diagnostic::error(
                        "not-a-state",
                        format!("only states can be updated, and `{}` is a {kind}", name.name),
                        name.span,
                        "not a state",
                    )
                    .with_label(declared, "declared here"),
                );
                self.check_alone(value);
                return;
            }
            None => {
                let states: Vec<&str> = self.m.states.iter().map(|s| s.name.as_str()).collect();
                let mut d = Diagnostic::error(
                    "unknown-name",
                    format!("unknown state `{}`", name.name),
                    name.span,
                    "no state has this name",
                );
                if let Some(help) = did_you_mean(&name.name, states) {
                    d = d.with_help(help);
                }
                self.error(d);
                self.check_alone(value);
                return;
            }
        };
        if let Some(first) = updated.get(&state) {
            let first = *first;
            self.error(
                Diagnostic::error(
                    "updated-twice",
                    format!("state `{}` is updated twice", name.name),
                    name.span,
                    "second update",
                )
                .with_label(first, "first update")
                .with_help("a state has exactly one next value; combine the cases with `if ... then ... else`"),
            );
            return;
        }
        updated.insert(state, name.span);
        let dims = self.m.states.get(state).map(|s| s.dims.clone()).unwrap_or_default();
        if self.broken.contains(&Symbol::State(state)) {
            return;
        }
        if indices.len() != dims.len() {
            let span = name.span.to(indices.last().map_or(name.span, |e| e.span));
            let mut d = self.rank_error(&name.name, &dims, indices.len(), span);
            if dims.is_empty() {
                d.help = Some(format!("a scalar state is updated without brackets: `{}' = ...`", name.name));
            }
            self.error(d);
            return;
        }
        let mut scope = Scope::new(Context::Step);
        let mut names = Vec::new();
        let mut ok = true;
        for (ix, dim) in indices.iter().zip(&dims) {
            match bare_name(ix) {
                Some(index) if !self.globals.contains_key(&index.name) && scope.binder(&index.name).is_none() => {
                    scope.binders.push(Binding { name: index.name.clone(), set: dim.set });
                    names.push(index.name.clone());
                }
                Some(index) if scope.binder(&index.name).is_some() => {
                    self.error(
                        Diagnostic::error(
                            "duplicate",
                            format!("index `{}` is used twice", index.name),
                            ix.span,
                            "repeated index",
                        )
                        .with_help("give each dimension its own index name"),
                    );
                    ok = false;
                }
                _ => {
                    let example: Vec<String> = dims
                        .iter()
                        .enumerate()
                        .map(|(k, _)| ["i", "j", "k", "l", "m"].get(k).unwrap_or(&"n").to_string())
                        .collect();
                    self.error(
                        Diagnostic::error(
                            "partial-update",
                            format!("state `{}` must be updated as a whole", name.name),
                            ix.span,
                            "expected a new index name",
                        )
                        .with_help(format!(
                            "write one update for all elements, e.g. `{}'[{}] = if ... then ... else ...`",
                            name.name,
                            example.join(", ")
                        )),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return;
        }
        if self.m.states.get(state).is_some_and(|s| s.choice.is_some()) {
            self.choice_value(value, state, &mut scope, "the next value");
        } else {
            let ty = self.expr(value, &mut scope);
            self.numeric(ty, value.span, "a state's next value");
        }
        self.m.updates.push(Update { state, indices: names, value: value.clone(), span });
    }

    /// Checks an expression whose statement is already wrong, to report its own errors too.
    fn check_alone(&mut self, value: &ast::Expr) {
        let mut scope = Scope::new(Context::Step);
        self.expr(value, &mut scope);
    }

    pub(super) fn rank_error(&self, name: &str, dims: &[Dimension], found: usize, span: Span) -> Diagnostic {
        let sets: Vec<&str> = dims.iter().filter_map(|d| self.m.sets.get(d.set)).map(|s| s.name.as_str()).collect();
        let shape = if sets.is_empty() {
            "is a scalar".to_string()
        } else {
            format!("has {} ({})", plural(sets.len(), "dimension"), sets.join(", "))
        };
        let d = Diagnostic::error(
            "rank",
            format!("`{name}` {shape}, but is indexed with {}", plural(found, "index").replace("indexs", "indices")),
            span,
            format!("{} given", plural(found, "index").replace("indexs", "indices")),
        );
        if sets.is_empty() {
            d.with_help(format!("remove the brackets: `{name}`"))
        } else if found == 0 {
            let example: Vec<String> = sets.iter().map(|s| s.to_lowercase()).collect();
            d.with_help(format!(
                "index every dimension, e.g. `{name}[{}]`, or reduce it: `sum({} in {}) {name}[{}]`",
                example.join(", "),
                example.first().map_or("i", |s| s.as_str()),
                sets.first().unwrap_or(&"I"),
                example.join(", ")
            ))
        } else {
            d.with_help(format!(
                "write one index per dimension: `{name}[{}]`",
                sets.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>().join(", ")
            ))
        }
    }
}
