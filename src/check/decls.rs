//! Declarations with shapes: dimensions and their index sets, parameters (defined, drawn or
//! read from a data file), states, noise and actions with their bounds and `when`.

use std::collections::{HashMap, HashSet};

use super::checker::*;
use super::model::*;
use super::{did_you_mean, duplicate, parse_csv, parse_json};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, ExprKind};

impl Checker<'_> {
    /// Resolves a declaration's dimensions; `uses` are the expressions from which the sets of
    /// bare index names (`[i]`) are inferred. A dimension that does not resolve is reported and
    /// gets the set [`UNRESOLVED`], so that the definition can still be checked for errors of
    /// its own; `false` says the declaration is broken.
    pub(super) fn dims(&mut self, dims: &[ast::Dim], uses: &[&ast::Expr]) -> (Vec<Dimension>, bool) {
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for dim in dims {
            let index_name = match &dim.set {
                Some(_) => Some(&dim.first),
                None => match self.globals.get(&dim.first.name).map(|g| g.symbol) {
                    Some(Symbol::Set(_)) => None,
                    _ => Some(&dim.first),
                },
            };
            if let Some(index) = index_name
                && let Some(first) = seen.insert(index.name.as_str(), index.span)
            {
                self.error(duplicate("index", &index.name, index.span, first));
                ok = false;
                out.push(Dimension { set: UNRESOLVED, index: None });
                continue;
            }
            let set = match &dim.set {
                Some(set_name) => {
                    if let Some(g) = self.globals.get(&dim.first.name) {
                        let span = g.span;
                        self.error(
                            Diagnostic::error(
                                "shadow",
                                format!("index name `{}` is already declared", dim.first.name),
                                dim.first.span,
                                "index names must be new",
                            )
                            .with_label(span, "declared here")
                            .with_help("choose another index name, such as a single lowercase letter"),
                        );
                        ok = false;
                        out.push(Dimension { set: UNRESOLVED, index: None });
                        continue;
                    }
                    self.set_named(set_name)
                }
                None => match self.globals.get(&dim.first.name).map(|g| g.symbol) {
                    // A broken set was reported where it is declared; what follows from it is not.
                    Some(Symbol::Set(s)) if self.broken.contains(&Symbol::Set(s)) => None,
                    Some(Symbol::Set(s)) => Some(s),
                    Some(other) => {
                        let kind = self.kind_name(other);
                        self.error(
                            Diagnostic::error(
                                "not-a-set",
                                format!("`{}` is a {kind}, not a set", dim.first.name),
                                dim.first.span,
                                "expected a set",
                            )
                            .with_help(format!(
                                "dimensions are sets: declare `set S = 0..{}` and write `[S]`",
                                dim.first.name
                            )),
                        );
                        None
                    }
                    None if dim.first.name.starts_with(|c: char| c.is_ascii_uppercase()) => self.set_named(&dim.first),
                    None => self.infer_set(&dim.first, uses),
                },
            };
            if set.is_none() {
                ok = false;
            }
            out.push(Dimension { set: set.unwrap_or(UNRESOLVED), index: index_name.map(|i| i.name.clone()) });
        }
        (out, ok)
    }

    pub(super) fn set_named(&mut self, name: &ast::Ident) -> Option<SetId> {
        match self.globals.get(&name.name).map(|g| g.symbol) {
            Some(Symbol::Set(s)) if !self.broken.contains(&Symbol::Set(s)) => Some(s),
            Some(Symbol::Set(_)) => None,
            Some(other) => {
                let kind = self.kind_name(other);
                self.error(Diagnostic::error(
                    "not-a-set",
                    format!("`{}` is a {kind}, not a set", name.name),
                    name.span,
                    "expected a set",
                ));
                None
            }
            None => {
                let sets: Vec<&str> = self.m.sets.iter().map(|s| s.name.as_str()).collect();
                let mut d = Diagnostic::error(
                    "unknown-name",
                    format!("unknown set `{}`", name.name),
                    name.span,
                    "no set has this name",
                );
                if let Some(help) = did_you_mean(&name.name, sets) {
                    d = d.with_help(help);
                }
                self.error(d);
                None
            }
        }
    }

    /// The set of a bare index name, from where it indexes declared arrays.
    fn infer_set(&mut self, index: &ast::Ident, uses: &[&ast::Expr]) -> Option<SetId> {
        let mut found: Vec<(SetId, Span)> = Vec::new();
        for e in uses {
            self.collect_index_uses(e, &index.name, &mut found);
        }
        // An array over a set that did not resolve (reported where it is declared) says nothing
        // about the index: stay quiet rather than report a conflict with a set `?`.
        if found.iter().any(|(s, _)| *s == UNRESOLVED || self.broken.contains(&Symbol::Set(*s))) {
            return None;
        }
        let sets: HashSet<SetId> = found.iter().map(|(s, _)| *s).collect();
        match sets.len() {
            1 => found.first().map(|(s, _)| *s),
            0 => {
                let set_names: Vec<&str> = self.m.sets.iter().map(|s| s.name.as_str()).collect();
                let mut d = Diagnostic::error(
                    "unknown-index-set",
                    format!("cannot tell which set `{}` ranges over", index.name),
                    index.span,
                    "not a set, and not used as an index of a declared array",
                );
                d = match did_you_mean(&index.name, set_names.iter().copied()) {
                    Some(hint) => d.with_help(format!("{hint} (or name the set: `{} in SET`)", index.name)),
                    None => d.with_help(format!("name the set: `[{} in SET]`", index.name)),
                };
                self.error(d);
                None
            }
            _ => {
                let mut d = Diagnostic::error(
                    "index-set-conflict",
                    format!("`{}` is used as an index of different sets", index.name),
                    index.span,
                    "declared here",
                );
                for (set, span) in &found {
                    let name = self.m.sets.get(*set).map_or("?", |s| s.name.as_str());
                    d = d.with_label(*span, format!("over `{name}`"));
                }
                self.error(d.with_help(format!("name the set: `{} in SET`", index.name)));
                None
            }
        }
    }

    fn collect_index_uses(&self, e: &ast::Expr, index: &str, found: &mut Vec<(SetId, Span)>) {
        match &e.kind {
            ExprKind::Access { name, indices, .. } => {
                let dims = self.globals.get(&name.name).and_then(|g| self.dims_of(g.symbol));
                for (k, ix) in indices.iter().enumerate() {
                    if bare_name(ix).is_some_and(|n| n.name == index)
                        && let Some(d) = dims.and_then(|d| d.get(k))
                    {
                        found.push((d.set, ix.span));
                    }
                    self.collect_index_uses(ix, index, found);
                }
            }
            ExprKind::Call { args, .. } => args.iter().for_each(|a| self.collect_index_uses(a, index, found)),
            ExprKind::Reduce { body, .. } => self.collect_index_uses(body, index, found),
            ExprKind::Unary { operand, .. } => self.collect_index_uses(operand, index, found),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.collect_index_uses(lhs, index, found);
                self.collect_index_uses(rhs, index, found);
            }
            ExprKind::If { cond, then, otherwise } => {
                for part in [cond, then, otherwise] {
                    self.collect_index_uses(part, index, found);
                }
            }
            ExprKind::Match { scrutinee, arms } => {
                self.collect_index_uses(scrutinee, index, found);
                arms.iter().for_each(|a| self.collect_index_uses(&a.value, index, found));
            }
            ExprKind::Paren(inner) => self.collect_index_uses(inner, index, found),
            ExprKind::Number { .. } | ExprKind::Bool(_) | ExprKind::Error => {}
        }
    }

    pub(super) fn dims_of(&self, symbol: Symbol) -> Option<&[Dimension]> {
        Some(match symbol {
            Symbol::Param(i) => &self.m.params.get(i)?.dims,
            Symbol::State(i) => &self.m.states.get(i)?.dims,
            Symbol::Noise(i) => &self.m.noises.get(i)?.dims,
            Symbol::Action(i) => &self.m.actions.get(i)?.dims,
            Symbol::Let(i) => &self.m.lets.get(i)?.dims,
            Symbol::Size(_) | Symbol::Set(_) => &[],
        })
    }

    pub(super) fn kind_name(&self, symbol: Symbol) -> &'static str {
        match symbol {
            Symbol::Size(_) => "size",
            Symbol::Set(_) => "set",
            Symbol::Param(_) => "parameter",
            Symbol::State(_) => "state",
            Symbol::Noise(_) => "noise",
            Symbol::Action(a) => {
                if self.m.actions.get(a).is_some_and(Action::is_discrete) {
                    "discrete action"
                } else {
                    "continuous action"
                }
            }
            Symbol::Let(_) => "`let` binding",
        }
    }

    /// The dimensions of a parameter or a state, inferred with what its definition reads, and
    /// whether they resolved; a declaration whose dimensions do not resolve is marked broken, so
    /// later errors about it stay quiet.
    fn declared_dims(&mut self, symbol: Symbol, dims: &[ast::Dim], def: &ast::Definition) -> (Vec<Dimension>, bool) {
        let uses: Vec<&ast::Expr> = match def {
            ast::Definition::Value(e) | ast::Definition::Random(e) => vec![e],
            ast::Definition::File { .. } => vec![],
        };
        let (dims, dims_ok) = self.dims(dims, &uses);
        if !dims_ok {
            self.broken.insert(symbol);
        }
        (dims, dims_ok)
    }

    pub(super) fn param(&mut self, d: &ast::ParamDecl) {
        let Some(Global { symbol: Symbol::Param(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::Param(id);
        let (dims, dims_ok) = self.declared_dims(symbol, &d.dims, &d.def);
        if let Some(param) = self.m.params.get_mut(id) {
            param.dims = dims.clone();
        }
        let mut scope = Scope::with_dims(Context::Param, &dims);
        scope.defined_before = Some(id);
        let (ty, definition) = match &d.def {
            ast::Definition::Value(e) => (self.expr(e, &mut scope), Definition::Value(e.clone())),
            ast::Definition::Random(e) => {
                scope.random = true;
                let ty = self.expr(e, &mut scope);
                self.require_draw(&scope, e, ty);
                (ty, Definition::Random(e.clone()))
            }
            ast::Definition::File { .. } if !dims_ok => (Ty::Error, Definition::Data(Vec::new())),
            ast::Definition::File { path, span } => {
                match self.data_file(&d.name.name, &dims, path, *span, d.ty.map(|t| t.0)) {
                    Some((values, ty)) => (ty, Definition::Data(values)),
                    None => (Ty::Error, Definition::Data(Vec::new())),
                }
            }
        };
        if !dims_ok {
            return;
        }
        let Some(elem) = self.element_type(ty, d.ty, &d.name.name, d.def.span()) else {
            self.broken.insert(symbol);
            return;
        };
        let mut constant = match (&definition, dims.is_empty()) {
            (Definition::Value(e), true) => self.constant(e, &scope),
            (Definition::Data(v), true) => v.first().copied(),
            _ => None,
        };
        let overridden = dims.is_empty() && self.override_for(&d.name.name).is_some();
        if let (Definition::Value(e), None, false) = (&definition, constant, overridden)
            && self.value_at_run_time(e, &scope).is_some_and(|v| !v.is_finite())
        {
            self.broken.insert(symbol);
            self.not_finite(&d.name.name, e, &scope, self.value_at_run_time(e, &scope).unwrap_or(f64::NAN));
            return;
        }
        let mut definition = definition;
        // `--set` replaces the value of a scalar parameter and keeps its type.
        if let Some(v) = self.override_for(&d.name.name).filter(|_| dims.is_empty()) {
            let fits = match elem {
                ElemType::Real => true,
                ElemType::Int => v.fract() == 0.0,
                ElemType::Bool => v == 0.0 || v == 1.0,
            };
            if !fits {
                self.broken.insert(symbol);
                self.error(
                    Diagnostic::error(
                        "bad-override",
                        format!(
                            "`--set {}={}` does not fit: `{}` is {}",
                            d.name.name,
                            fmt_num(v),
                            d.name.name,
                            elem.name()
                        ),
                        d.name.span,
                        format!("{} parameter", elem.name()),
                    )
                    .with_help(if elem == ElemType::Bool {
                        "give 0 or 1"
                    } else {
                        "give a whole number"
                    }),
                );
                return;
            }
            constant = Some(v);
            definition = Definition::Value(ast::Expr {
                kind: ExprKind::Number { value: v, is_int: elem != ElemType::Real },
                span: d.name.span,
            });
        }
        if let Some(param) = self.m.params.get_mut(id) {
            param.ty = elem;
            param.definition = definition;
            param.constant = constant;
        }
    }

    /// A parameter whose value, known at compile time, is infinite or not a number: the error
    /// points at the part that made it so.
    fn not_finite(&mut self, name: &str, e: &ast::Expr, scope: &Scope, whole: f64) {
        let (part, value) = self.non_finite(e, scope).unwrap_or_else(|| (e.clone(), whole));
        let what = if whole.is_nan() { "not a number" } else { "infinite" };
        let cause = match &part.kind {
            ast::ExprKind::Binary { op: ast::BinaryOp::Div | ast::BinaryOp::Rem, rhs, .. }
                if self.constant(rhs, scope) == Some(0.0) =>
            {
                "a division by zero"
            }
            _ if value.is_nan() => "not a number (NaN)",
            _ => "infinite",
        };
        self.error(
            Diagnostic::error("not-finite", format!("the value of parameter `{name}` is {what}"), part.span, cause)
                .with_help("a parameter must be a finite number: check for a division by zero, `log` of 0, `sqrt` of a negative number or an overflow"),
        );
    }

    /// The element type a declaration gets from its value's type and its annotation.
    pub(super) fn element_type(
        &mut self,
        ty: Ty,
        annotation: Option<(ast::ScalarType, Span)>,
        name: &str,
        value_span: Span,
    ) -> Option<ElemType> {
        let inferred = match ty {
            Ty::Error => return None,
            Ty::Real => ElemType::Real,
            Ty::Int | Ty::Index(_) => ElemType::Int,
            Ty::Bool => ElemType::Bool,
            Ty::Choice(_) => {
                self.error(
                    Diagnostic::error(
                        "type",
                        format!("`{name}` cannot hold a discrete action's value"),
                        value_span,
                        "a choice",
                    )
                    .with_help("compare the action with a label instead, e.g. `order == buy`"),
                );
                return None;
            }
        };
        let Some((declared, span)) = annotation else { return Some(inferred) };
        let declared_elem = match declared {
            ast::ScalarType::Real => ElemType::Real,
            ast::ScalarType::Int => ElemType::Int,
            ast::ScalarType::Bool => ElemType::Bool,
        };
        let fits = declared_elem == inferred || (declared_elem == ElemType::Real && inferred == ElemType::Int);
        if !fits {
            let help = match (declared_elem, inferred) {
                (ElemType::Int, ElemType::Real) => "round it explicitly: `floor(...)`, `ceil(...)` or `round(...)`",
                (_, ElemType::Bool) => "a condition is a bool; multiply by it to get a number: `1 * (x > 0)`",
                _ => "change the declared type or the value",
            };
            self.error(
                Diagnostic::error(
                    "type",
                    format!("`{name}` is declared `{}` but its value is {}", declared_elem.name(), inferred.name()),
                    value_span,
                    format!("{} value", inferred.name()),
                )
                .with_label(span, "declared here")
                .with_help(help),
            );
            return None;
        }
        Some(declared_elem)
    }

    fn require_draw(&mut self, scope: &Scope, e: &ast::Expr, ty: Ty) {
        if !scope.draws && ty != Ty::Error {
            self.error(
                Diagnostic::error(
                    "no-distribution",
                    "`~` needs a distribution, but this value is not random",
                    e.span,
                    "no distribution here",
                )
                .with_help("draw it, e.g. `~ uniform(0, 1)`, or write `=` for a fixed value"),
            );
        }
    }

    fn data_file(
        &mut self,
        name: &str,
        dims: &[Dimension],
        path: &str,
        span: Span,
        annotation: Option<ast::ScalarType>,
    ) -> Option<(Vec<f64>, Ty)> {
        let text = match self.files.read(path) {
            Ok(text) => text,
            Err(reason) => {
                self.error(
                    Diagnostic::error("data-file", format!("cannot read data file `{path}`"), span, reason)
                        .with_help("paths are relative to the model file"),
                );
                return None;
            }
        };
        let lower = path.to_ascii_lowercase();
        let table = if lower.ends_with(".csv") {
            parse_csv(&text)
        } else if lower.ends_with(".json") {
            parse_json(&text)
        } else {
            self.error(
                Diagnostic::error("data-file", format!("unknown data file type `{path}`"), span, "not .csv or .json")
                    .with_help("parameters can be read from `.csv` or `.json` files"),
            );
            return None;
        };
        let table = match table {
            Ok(table) => table,
            Err(reason) => {
                self.error(Diagnostic::error(
                    "data-file",
                    format!("data file `{path}` is malformed: {reason}"),
                    span,
                    "in this file",
                ));
                return None;
            }
        };
        let expected: Vec<usize> = dims.iter().map(|d| self.m.sets.get(d.set).map_or(0, IndexSet::len)).collect();
        // A CSV cannot say whether a vector is a row or a column, so dimensions of length 1 do
        // not count: 10 values in one column fit `[I]`, `[I, K]` with one K, or `[K, I]`.
        let without_ones = |shape: &[usize]| shape.iter().copied().filter(|&n| n != 1).collect::<Vec<_>>();
        let fits = table.shape == expected || without_ones(&table.shape) == without_ones(&expected);
        if !fits {
            let show = |shape: &[usize]| {
                if shape.is_empty() {
                    "a single number".to_string()
                } else {
                    shape.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" × ")
                }
            };
            let sets: Vec<String> = dims
                .iter()
                .filter_map(|d| self.m.sets.get(d.set))
                .map(|s| format!("{} = {}..{}", s.name, s.lo, s.hi))
                .collect();
            let expected_text =
                if expected.is_empty() { "a single number".to_string() } else { format!("{} values", show(&expected)) };
            self.error(
                Diagnostic::error(
                    "data-shape",
                    format!(
                        "data file `{path}` has the wrong shape for `{name}`: expected {expected_text}, found {}",
                        show(&table.shape)
                    ),
                    span,
                    format!("{} values", table.values.len()),
                )
                .with_help(if sets.is_empty() {
                    "a scalar parameter needs a file with one number".to_string()
                } else {
                    format!("`{name}` is indexed by {}", sets.join(", "))
                }),
            );
            return None;
        }
        let all_int = table.values.iter().all(|v| v.fract() == 0.0);
        let ty = match annotation {
            Some(ast::ScalarType::Bool) => {
                if let Some(bad) = table.values.iter().find(|v| **v != 0.0 && **v != 1.0) {
                    self.error(Diagnostic::error(
                        "data-file",
                        format!("`{name}` is declared `bool`, but `{path}` holds {bad}"),
                        span,
                        "values must be 0 or 1",
                    ));
                    return None;
                }
                Ty::Bool
            }
            Some(ast::ScalarType::Int) if !all_int => {
                let bad = table.values.iter().find(|v| v.fract() != 0.0).copied().unwrap_or(0.0);
                self.error(Diagnostic::error(
                    "data-file",
                    format!("`{name}` is declared `int`, but `{path}` holds {bad}"),
                    span,
                    "values must be integers",
                ));
                return None;
            }
            Some(ast::ScalarType::Int) => Ty::Int,
            _ => Ty::Real,
        };
        Some((table.values, ty))
    }

    pub(super) fn state(&mut self, d: &ast::StateDecl) {
        let Some(Global { symbol: Symbol::State(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::State(id);
        let (dims, dims_ok) = self.declared_dims(symbol, &d.dims, &d.def);
        let mut scope = Scope::with_dims(Context::StateInit, &dims);
        if let Some((ty, _)) = &d.choice {
            self.choice_state(d, id, ty, dims, &mut scope);
            return;
        }
        let (ty, initial) = match &d.def {
            ast::Definition::Value(e) => (self.expr(e, &mut scope), Definition::Value(e.clone())),
            ast::Definition::Random(e) => {
                scope.random = true;
                let ty = self.expr(e, &mut scope);
                self.require_draw(&scope, e, ty);
                (ty, Definition::Random(e.clone()))
            }
            ast::Definition::File { .. } if !dims_ok => (Ty::Error, Definition::Data(Vec::new())),
            ast::Definition::File { path, span } => match self.data_file(&d.name.name, &dims, path, *span, None) {
                Some((values, ty)) => (ty, Definition::Data(values)),
                None => (Ty::Error, Definition::Data(Vec::new())),
            },
        };
        if let Some(state) = self.m.states.get_mut(id) {
            state.dims = dims;
            state.initial = initial;
        }
        if !self.numeric(ty, d.def.span(), "a state's initial value") {
            self.broken.insert(symbol);
        }
    }

    /// A state that holds a choice: its labels, then its initial value, which is one of them
    /// (`=` only: a drawn or read value would be a number).
    fn choice_state(
        &mut self,
        d: &ast::StateDecl,
        id: StateId,
        ty: &ast::ChoiceType,
        dims: Vec<Dimension>,
        scope: &mut Scope,
    ) {
        let symbol = Symbol::State(id);
        let choice = self.state_choice(&d.name, ty);
        if let Some(state) = self.m.states.get_mut(id) {
            state.dims = dims;
            state.choice = choice.clone();
        }
        if choice.is_none() {
            self.broken.insert(symbol);
            return;
        }
        let e = match &d.def {
            ast::Definition::Value(e) => e,
            ast::Definition::Random(_) | ast::Definition::File { .. } => {
                let how =
                    if matches!(d.def, ast::Definition::Random(_)) { "drawn at random" } else { "read from a file" };
                self.error(
                    Diagnostic::error(
                        "choice-initial",
                        format!("choice state `{}` cannot be {how}", d.name.name),
                        d.def.span(),
                        "a choice state starts at a label",
                    )
                    .with_help(format!(
                        "give its first value with `=`: a label, or an `if` on parameters choosing one, e.g. `state {}: ... = {}`",
                        d.name.name,
                        self.m.choice_labels(Chooser::State(id)).first().map_or("0", String::as_str)
                    )),
                );
                self.broken.insert(symbol);
                return;
            }
        };
        if !self.choice_value(e, id, scope, "the initial value") {
            self.broken.insert(symbol);
        }
        if let Some(state) = self.m.states.get_mut(id) {
            state.initial = Definition::Value(e.clone());
        }
    }

    pub(super) fn noise(&mut self, d: &ast::NoiseDecl) {
        let Some(Global { symbol: Symbol::Noise(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::Noise(id);
        let e = match &d.def {
            ast::Definition::Random(e) => e,
            ast::Definition::Value(e) => {
                self.broken.insert(symbol);
                self.error(
                    Diagnostic::error(
                        "noise-not-random",
                        format!("noise `{}` must be drawn from a distribution", d.name.name),
                        e.span,
                        "a fixed value",
                    )
                    .with_help("write `~` and a distribution, e.g. `noise d ~ poisson(5)`; a fixed value is a `param`"),
                );
                return;
            }
            ast::Definition::File { span, .. } => {
                self.broken.insert(symbol);
                self.error(
                    Diagnostic::error(
                        "noise-not-random",
                        format!("noise `{}` cannot be read from a file", d.name.name),
                        *span,
                        "a fixed value",
                    )
                    .with_help("noise is drawn every step: write `~` and a distribution"),
                );
                return;
            }
        };
        let (dims, dims_ok) = self.dims(&d.dims, &[e]);
        if !dims_ok {
            self.broken.insert(symbol);
        }
        if let Some(noise) = self.m.noises.get_mut(id) {
            noise.dims = dims.clone();
        }
        let mut scope = Scope::with_dims(Context::Noise, &dims);
        scope.random = true;
        let ty = self.expr(e, &mut scope);
        self.require_draw(&scope, e, ty);
        let elem = match ty {
            Ty::Int | Ty::Index(_) => ElemType::Int,
            Ty::Bool => ElemType::Bool,
            Ty::Real => ElemType::Real,
            _ => {
                self.broken.insert(symbol);
                return;
            }
        };
        if let Some(noise) = self.m.noises.get_mut(id) {
            noise.dims = dims;
            noise.ty = elem;
            noise.distribution = e.clone();
        }
    }

    pub(super) fn action_shape(&mut self, d: &ast::ActionDecl) {
        let Some(Global { symbol: Symbol::Action(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::Action(id);
        let mut uses: Vec<&ast::Expr> = d.when.iter().collect();
        if let ast::ActionKind::Real { lo, hi, .. } = &d.kind {
            uses.extend(lo.iter().chain(hi.iter()));
        }
        let (dims, dims_ok) = self.dims(&d.dims, &uses);
        let ty = match &d.kind {
            ast::ActionKind::Labels(labels) => {
                let mut seen: HashMap<&str, Span> = HashMap::new();
                for label in labels {
                    if let Some(first) = seen.insert(label.name.as_str(), label.span) {
                        self.error(duplicate("label", &label.name, label.span, first));
                        self.broken.insert(symbol);
                    }
                }
                ActionType::Discrete { labels: labels.iter().map(|l| l.name.clone()).collect(), over_set: None }
            }
            ast::ActionKind::OverSet(set) => match self.set_named(set) {
                Some(s) if self.m.sets.get(s).is_some_and(IndexSet::is_empty) => {
                    self.broken.insert(symbol);
                    let range = self.m.sets.get(s).map_or(String::new(), |s| format!("{}..{}", s.lo, s.hi));
                    self.error(
                        Diagnostic::error(
                            "empty-set",
                            format!(
                                "`{}` has nothing to choose from: set `{}` = {range} is empty",
                                d.name.name, set.name
                            ),
                            set.span,
                            "empty set",
                        )
                        .with_help("a choice needs at least one option: give the set at least one element"),
                    );
                    ActionType::Discrete { labels: Vec::new(), over_set: None }
                }
                Some(s) => ActionType::Discrete { labels: Vec::new(), over_set: Some(s) },
                None => {
                    self.broken.insert(symbol);
                    ActionType::Discrete { labels: Vec::new(), over_set: None }
                }
            },
            ast::ActionKind::Real { .. } => ActionType::Continuous { lo: None, hi: None, sum: None, when: None },
        };
        if let (Some(when), ActionType::Discrete { .. }) = (&d.when, &ty) {
            self.error(
                Diagnostic::error(
                    "when-on-choice",
                    format!("discrete action `{}` cannot have a `when` condition", d.name.name),
                    when.span,
                    "only for continuous actions",
                )
                .with_help("`when` says in which regimes a continuous action acts"),
            );
        }
        if !dims_ok {
            self.broken.insert(symbol);
        }
        if let Some(action) = self.m.actions.get_mut(id) {
            action.dims = dims;
            action.ty = ty;
        }
    }

    pub(super) fn action_bounds(&mut self, d: &ast::ActionDecl) {
        let Some(Global { symbol: Symbol::Action(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let ast::ActionKind::Real { lo, hi, sum } = &d.kind else { return };
        let dims = self.m.actions.get(id).map(|a| a.dims.clone()).unwrap_or_default();
        let mut constants = [None, None];
        for (slot, bound) in constants.iter_mut().zip([lo, hi]) {
            if let Some(e) = bound {
                let mut scope = Scope::with_dims(Context::ActionBound, &dims);
                let ty = self.expr(e, &mut scope);
                if self.numeric(ty, e.span, "a bound") {
                    *slot = self.constant(e, &scope);
                }
            }
        }
        if let (Some(l), Some(h), Some(lo), Some(hi)) = (constants[0], constants[1], lo, hi)
            && l >= h
        {
            self.error(
                Diagnostic::error(
                    "empty-bound",
                    format!("the bounds of `{}` leave no room: [{}, {}]", d.name.name, fmt_num(l), fmt_num(h)),
                    lo.span.to(hi.span),
                    if l > h { "lower bound above upper bound" } else { "a single point" },
                )
                .with_help(if l > h {
                    "swap the bounds"
                } else {
                    "a fixed value is a `let` or a `param`, not an action"
                }),
            );
        }
        let when = match &d.when {
            Some(w) => {
                let mut scope = Scope::with_dims(Context::When, &dims);
                let ty = self.expr(w, &mut scope);
                self.condition(ty, w.span, "a `when` condition");
                Some(w.clone())
            }
            None => None,
        };
        let sum = sum.as_ref().and_then(|e| self.sum_bound(d, e, dims.len(), constants[0]));
        if let Some(action) = self.m.actions.get_mut(id) {
            action.ty = ActionType::Continuous { lo: lo.clone(), hi: hi.clone(), sum, when };
        }
    }

    /// Checks a joint bound on the sum of an action's elements (`real >= 0, sum <= stock`) and
    /// returns it when it can be kept. The policy draws a total within `[0, bound]` and splits it
    /// into shares (`passes::reformulate`), which keeps every element `>= 0` and none under a
    /// bound of its own: so the action must be one-dimensional, with the lower bound 0, no upper
    /// bound and no `when`. `lo` is the lower bound's value when it is known at compile time.
    fn sum_bound(&mut self, d: &ast::ActionDecl, e: &ast::Expr, dims: usize, lo: Option<f64>) -> Option<ast::Expr> {
        let name = &d.name.name;
        // A scalar: the total of all elements, so no index name of the action is bound here.
        let mut scope = Scope::with_dims(Context::ActionBound, &[]);
        let from = self.diagnostics.len();
        let ty = self.expr(e, &mut scope);
        // "Give the declaration a dimension" does not apply: the bound is one number for the total.
        for diagnostic in self.diagnostics.iter_mut().skip(from).filter(|d| d.code == "unbound-index") {
            // The generic help starts "bind it: sum over it with `sum(k in SET) ...`".
            let sum = diagnostic.help.as_deref().and_then(|h| h.split('`').nth(1)).unwrap_or("sum(k in SET) ...");
            diagnostic.help = Some(format!(
                "a bound on the sum is one number, for all the elements of `{name}` together, so no index is bound \
                 in it: sum over the index (`{sum}`), or bound each element instead (`real in [0, ...]`)"
            ));
        }
        let numeric = self.numeric(ty, e.span, "a bound");
        let ast::ActionKind::Real { lo: lower, hi, .. } = &d.kind else { return None };
        let refused = |message: String, span: Span, label: &str, help: &str| {
            Diagnostic::error("sum-bound", message, span, label).with_help(help)
        };
        let problem = if dims == 0 {
            Some(refused(
                format!("`{name}` is a single number: a bound on its sum is its upper bound"),
                e.span,
                "the sum of one element",
                "write the bound as the action's own: `real in [0, ...]`",
            ))
        } else if dims > 1 {
            Some(refused(
                format!("a bound on the sum needs an action with one dimension, but `{name}` has {dims}"),
                e.span,
                "a sum over all elements",
                "declare one action per row, each with its own bound on its sum, or one action over the pairs",
            ))
        } else if let Some(hi) = hi {
            Some(refused(
                format!("`{name}` has an upper bound on each element and a bound on its sum"),
                hi.span,
                "a bound on each element",
                "a total split into shares cannot keep each element under its own bound: keep the bound on the sum, \
                 and write `min(...)` in the step where an element must stay under a bound of its own",
            ))
        } else if lo != Some(0.0) {
            Some(refused(
                format!("a bound on the sum of `{name}` needs `{name}` declared `real >= 0`"),
                lower.as_ref().map_or(d.name.span, |l| l.span),
                if lower.is_some() { "the lower bound must be 0" } else { "no lower bound" },
                "the policy draws a total within [0, bound] and splits it into non-negative shares; declare the \
                 part above the lower bound as the action, `real >= 0`, and add the lower bound where it is used",
            ))
        } else {
            d.when.as_ref().map(|when| {
                refused(
                    format!("a bound on the sum of `{name}` cannot be combined with `when`"),
                    when.span,
                    "a regime",
                    "let the bound be 0 outside the regime, e.g. `sum <= if order == buy then stock else 0`",
                )
            })
        };
        if let Some(problem) = problem {
            self.error(problem);
            return None;
        }
        if let Some(v) = self.constant(e, &scope).filter(|v| *v < 0.0) {
            self.error(
                Diagnostic::error(
                    "empty-bound",
                    format!("the bound on the sum of `{name}` leaves no room: {}", fmt_num(v)),
                    e.span,
                    "below 0, the lower bound of every element",
                )
                .with_help("a bound on the sum of a non-negative action is at least 0"),
            );
            return None;
        }
        numeric.then(|| e.clone())
    }
}
