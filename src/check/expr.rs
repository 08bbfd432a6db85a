//! The checker's work: declarations in dependency order, then the step, then the settings.
//! Expressions are typed by [`Checker::expr`] in a [`Scope`] that says what may be read there.

use std::collections::{HashMap, HashSet};

use super::model::*;
use super::{DataFiles, Options, did_you_mean, duplicate, name_taken, parse_csv, parse_json};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, BinaryOp, ExprKind, Item, UnaryOp};

/// The type of an expression while checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Int,
    Real,
    Bool,
    /// An index variable ranging over a set (an integer).
    Index(SetId),
    /// The value of a discrete action.
    Choice(ActionId),
    /// Already reported; stays silent.
    Error,
}

/// Where an expression stands, which decides what it may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    Size,
    SetBound,
    Param,
    StateInit,
    Noise,
    ActionBound,
    When,
    Step,
    Setting,
}

impl Context {
    fn allows(self, symbol: Symbol, model: &CheckedModel) -> bool {
        use Symbol::*;
        match (self, symbol) {
            (_, Size(_)) => true,
            (Context::Size | Context::SetBound, _) => false,
            (_, Param(_)) => true,
            (Context::Setting | Context::StateInit | Context::Noise, _) => false,
            (Context::Param, _) => false,
            (Context::ActionBound, State(_)) => true,
            (Context::ActionBound, _) => false,
            (Context::When, Action(a)) => model.actions.get(a).is_some_and(|x| x.is_discrete()),
            (Context::When, _) => false,
            (Context::Step, Set(_)) => false,
            (Context::Step, _) => true,
        }
    }

    /// Why a name of another kind cannot be read here, as a help line.
    fn rule(self) -> &'static str {
        match self {
            Context::Size => "a size can only use other sizes",
            Context::SetBound => "set bounds can only use sizes",
            Context::Param => "a parameter is fixed per instance: it can use sizes and earlier parameters",
            Context::StateInit => "an initial state can use sizes and parameters",
            Context::Noise => {
                "noise is drawn independently of the state and the actions: it can use sizes and parameters"
            }
            Context::ActionBound => "an action's bound can use sizes, parameters and the state",
            Context::When => "a `when` condition selects regimes: it can use discrete actions, sizes and parameters",
            Context::Step => "the step can use sizes, parameters, state, noise, actions and earlier `let`s",
            Context::Setting => "this setting must be a constant: it can use sizes and constant parameters",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Context::Size => "a size",
            Context::SetBound => "a set's bounds",
            Context::Param => "a parameter",
            Context::StateInit => "an initial state",
            Context::Noise => "a noise distribution",
            Context::ActionBound => "an action's bound",
            Context::When => "a `when` condition",
            Context::Step => "the step",
            Context::Setting => "a setting",
        }
    }
}

/// The set of a dimension that did not resolve (already reported); any index fits it.
const UNRESOLVED: SetId = usize::MAX;

struct Binding {
    name: String,
    set: SetId,
}

struct Scope {
    context: Context,
    binders: Vec<Binding>,
    /// Distribution draws are allowed (after `~`).
    random: bool,
    /// A draw was seen.
    draws: bool,
    /// In a size or parameter definition: only ids below this of that kind are defined yet.
    defined_before: Option<usize>,
    /// The `let` being defined, which its own value cannot read.
    defining: Option<String>,
}

impl Scope {
    fn new(context: Context) -> Scope {
        Scope { context, binders: Vec::new(), random: false, draws: false, defined_before: None, defining: None }
    }

    fn with_dims(context: Context, dims: &[Dimension]) -> Scope {
        let mut scope = Scope::new(context);
        for d in dims {
            if let Some(name) = &d.index {
                scope.binders.push(Binding { name: name.clone(), set: d.set });
            }
        }
        scope
    }

    fn binder(&self, name: &str) -> Option<SetId> {
        self.binders.iter().rev().find(|b| b.name == name).map(|b| b.set)
    }
}

const FUNCTIONS: &[&str] = &[
    "exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "sin", "cos", "abs", "max", "min", "clamp", "pow", "floor",
    "ceil", "round",
];
const DISTRIBUTIONS: &[&str] = &[
    "uniform",
    "normal",
    "lognormal",
    "poisson",
    "binomial",
    "negbinomial",
    "gamma",
    "bernoulli",
    "categorical",
    "truncated",
];

struct Global {
    symbol: Symbol,
    span: Span,
}

pub(crate) struct Checker<'a> {
    files: &'a dyn DataFiles,
    options: &'a Options,
    pub diagnostics: Vec<Diagnostic>,
    globals: HashMap<String, Global>,
    /// Declarations whose definition failed: reading them reports nothing more.
    broken: HashSet<Symbol>,
    /// Every `let` name in the step, with its span, to tell "used before its `let`".
    let_names: HashMap<String, Span>,
    m: CheckedModel,
}

fn elem_ty(ty: ElemType) -> Ty {
    match ty {
        ElemType::Real => Ty::Real,
        ElemType::Int => Ty::Int,
        ElemType::Bool => Ty::Bool,
    }
}

/// The labelled discrete action an expression reads directly (`order`, `open[i]`), if any.
fn labelled_choice(checker: &Checker<'_>, e: &ast::Expr) -> Option<ActionId> {
    match &e.kind {
        ExprKind::Access { name, primed: false, .. } => match checker.globals.get(&name.name)?.symbol {
            Symbol::Action(a)
                if checker.m.actions.get(a).is_some_and(|x| x.is_discrete()) && checker.over_set(a).is_none() =>
            {
                Some(a)
            }
            _ => None,
        },
        ExprKind::Paren(inner) => labelled_choice(checker, inner),
        _ => None,
    }
}

fn bare_name(e: &ast::Expr) -> Option<&ast::Ident> {
    match &e.kind {
        ExprKind::Access { name, primed: false, indices } if indices.is_empty() => Some(name),
        _ => None,
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

impl<'a> Checker<'a> {
    pub(crate) fn new(files: &'a dyn DataFiles, options: &'a Options) -> Checker<'a> {
        Checker {
            files,
            options,
            diagnostics: Vec::new(),
            globals: HashMap::new(),
            broken: HashSet::new(),
            let_names: HashMap::new(),
            m: CheckedModel {
                name: String::new(),
                sizes: Vec::new(),
                sets: Vec::new(),
                params: Vec::new(),
                states: Vec::new(),
                noises: Vec::new(),
                actions: Vec::new(),
                lets: Vec::new(),
                costs: Vec::new(),
                updates: Vec::new(),
                observe: Vec::new(),
                horizon: 1,
                warmup: 0,
                discount: 1.0,
                report: Vec::new(),
                symbols: HashMap::new(),
            },
        }
    }

    fn error(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    // ------------------------------------------------------------------ the model

    pub(crate) fn model(&mut self, ast: &ast::Model) -> CheckedModel {
        self.m.name = ast.name.name.clone();
        self.register(ast);

        for item in &ast.items {
            if let Item::Size(d) = item {
                self.size(d);
            }
        }
        for item in &ast.items {
            if let Item::Set(d) = item {
                self.set(d);
            }
        }
        for item in &ast.items {
            if let Item::Param(d) = item {
                self.param(d);
            }
        }
        for item in &ast.items {
            if let Item::State(d) = item {
                self.state(d);
            }
        }
        for item in &ast.items {
            if let Item::Noise(d) = item {
                self.noise(d);
            }
        }
        let actions: Vec<&ast::ActionDecl> =
            ast.items.iter().filter_map(|i| if let Item::Action(d) = i { Some(d) } else { None }).collect();
        for d in &actions {
            self.action_shape(d);
        }
        for d in &actions {
            self.action_bounds(d);
        }

        let steps: Vec<&ast::StepBlock> =
            ast.items.iter().filter_map(|i| if let Item::Step(s) = i { Some(s) } else { None }).collect();
        match steps.as_slice() {
            [] => self.error(
                Diagnostic::error("missing-step", "the model has no `step` block", ast.name.span, "in this model")
                    .with_help("add `step { ... }` with the state updates and costs"),
            ),
            [first, rest @ ..] => {
                for extra in rest {
                    self.error(duplicate(
                        "block",
                        "step",
                        Span::new(extra.span.start, extra.span.start + 4),
                        Span::new(first.span.start, first.span.start + 4),
                    ));
                }
                self.step(first);
            }
        }
        self.settings(ast);

        if self.m.states.is_empty() {
            self.error(
                Diagnostic::error("no-state", "the model has no state", ast.name.span, "in this model")
                    .with_help("declare what the model remembers between steps, e.g. `state x = 0`"),
            );
        }
        if self.m.actions.is_empty() {
            self.error(
                Diagnostic::warning(
                    "no-actions",
                    "the model has no actions: there is nothing to decide",
                    ast.name.span,
                    "in this model",
                )
                .with_help("declare `action name: choice {...}` or `action name: real`"),
            );
        }
        self.m.symbols = self.globals.iter().map(|(k, g)| (k.clone(), g.symbol)).collect();
        std::mem::replace(&mut self.m, Checker::new(self.files, self.options).m)
    }

    /// Gives every declaration an id and a placeholder, so that names resolve in any order and
    /// duplicates are found once.
    fn register(&mut self, ast: &ast::Model) {
        let placeholder_dims = Vec::new;
        for item in &ast.items {
            let (name, symbol, kind) = match item {
                Item::Size(d) => {
                    self.m.sizes.push(Size { name: d.name.name.clone(), value: 1, span: d.span });
                    (&d.name, Symbol::Size(self.m.sizes.len() - 1), "size")
                }
                Item::Set(d) => {
                    self.m.sets.push(IndexSet { name: d.name.name.clone(), lo: 0, hi: 1, span: d.span });
                    (&d.name, Symbol::Set(self.m.sets.len() - 1), "set")
                }
                Item::Param(d) => {
                    self.m.params.push(Param {
                        name: d.name.name.clone(),
                        dims: placeholder_dims(),
                        ty: ElemType::Real,
                        definition: Definition::Data(Vec::new()),
                        constant: None,
                        span: d.span,
                    });
                    (&d.name, Symbol::Param(self.m.params.len() - 1), "parameter")
                }
                Item::State(d) => {
                    self.m.states.push(State {
                        name: d.name.name.clone(),
                        dims: placeholder_dims(),
                        initial: Definition::Data(Vec::new()),
                        span: d.span,
                    });
                    (&d.name, Symbol::State(self.m.states.len() - 1), "state")
                }
                Item::Noise(d) => {
                    self.m.noises.push(Noise {
                        name: d.name.name.clone(),
                        dims: placeholder_dims(),
                        ty: ElemType::Real,
                        distribution: ast::Expr { kind: ExprKind::Error, span: d.span },
                        span: d.span,
                    });
                    (&d.name, Symbol::Noise(self.m.noises.len() - 1), "noise")
                }
                Item::Action(d) => {
                    self.m.actions.push(Action {
                        name: d.name.name.clone(),
                        dims: placeholder_dims(),
                        ty: ActionType::Continuous { lo: None, hi: None, when: None },
                        span: d.span,
                    });
                    (&d.name, Symbol::Action(self.m.actions.len() - 1), "action")
                }
                _ => continue,
            };
            self.declare(name, symbol, kind);
        }
        for item in &ast.items {
            if let Item::Step(step) = item {
                for s in &step.statements {
                    if let ast::Statement::Let { name, .. } = s {
                        self.let_names.entry(name.name.clone()).or_insert(name.span);
                    }
                }
            }
        }
    }

    fn declare(&mut self, name: &ast::Ident, symbol: Symbol, kind: &str) {
        if let Some(first) = self.globals.get(&name.name) {
            let first = first.span;
            self.error(duplicate(kind, &name.name, name.span, first));
            self.broken.insert(symbol);
        } else {
            self.globals.insert(name.name.clone(), Global { symbol, span: name.span });
        }
    }

    // ------------------------------------------------------------------ sizes and sets

    fn override_for(&self, name: &str) -> Option<f64> {
        self.options.overrides.iter().rev().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn size(&mut self, d: &ast::SizeDecl) {
        let Some(Global { symbol: Symbol::Size(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let (value, span, what) = match self.override_for(&d.name.name) {
            Some(v) => (Some(v), d.name.span, format!("`--set {}={}`", d.name.name, fmt_num(v))),
            None => {
                let mut scope = Scope::new(Context::Size);
                scope.defined_before = Some(id);
                let ty = self.expr(&d.value, &mut scope);
                if ty == Ty::Error {
                    self.broken.insert(Symbol::Size(id));
                    return;
                }
                (self.constant(&d.value, &scope), d.value.span, "this value".to_string())
            }
        };
        match value {
            Some(v) if v.fract() == 0.0 && (1.0..=1e9).contains(&v) => {
                if let Some(size) = self.m.sizes.get_mut(id) {
                    size.value = v as i64;
                }
            }
            Some(v) => {
                self.broken.insert(Symbol::Size(id));
                self.error(
                    Diagnostic::error(
                        "bad-size",
                        format!("size `{}` must be a positive integer, but {what} is {}", d.name.name, fmt_num(v)),
                        span,
                        "not a positive integer",
                    )
                    .with_help("sizes count things: use a whole number of at least 1 (and at most 10^9)"),
                );
            }
            None => {
                self.broken.insert(Symbol::Size(id));
                self.not_constant(&d.value, "a size");
            }
        }
    }

    fn not_constant(&mut self, e: &ast::Expr, what: &str) {
        self.error(
            Diagnostic::error(
                "not-constant",
                format!("{what} must be known when the model is compiled"),
                e.span,
                "not a constant",
            )
            .with_help("use numbers, sizes and parameters defined by constants"),
        );
    }

    fn set(&mut self, d: &ast::SetDecl) {
        let Some(Global { symbol: Symbol::Set(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let mut bounds = [0i64; 2];
        for (slot, e) in bounds.iter_mut().zip([&d.lo, &d.hi]) {
            let mut scope = Scope::new(Context::SetBound);
            match self.expr(e, &mut scope) {
                Ty::Error => {
                    self.broken.insert(Symbol::Set(id));
                    return;
                }
                Ty::Int | Ty::Index(_) => {}
                _ => {
                    self.broken.insert(Symbol::Set(id));
                    self.error(Diagnostic::error("type", "a set's bounds must be integers", e.span, "not an integer"));
                    return;
                }
            }
            match self.constant(e, &scope) {
                Some(v) if v.abs() <= 1e12 => *slot = v as i64,
                _ => {
                    self.broken.insert(Symbol::Set(id));
                    self.not_constant(e, "a set's bound");
                    return;
                }
            }
        }
        let [lo, hi] = bounds;
        if hi <= lo {
            self.broken.insert(Symbol::Set(id));
            self.error(
                Diagnostic::error(
                    "empty-set",
                    format!("set `{}` is empty: {lo}..{hi} contains no integer", d.name.name),
                    d.lo.span.to(d.hi.span),
                    "empty range",
                )
                .with_help("ranges are half-open: `0..n` holds 0, 1, ..., n-1"),
            );
            return;
        }
        if let Some(set) = self.m.sets.get_mut(id) {
            set.lo = lo;
            set.hi = hi;
        }
    }

    // ------------------------------------------------------------------ declarations with shapes

    /// Resolves a declaration's dimensions; `uses` are the expressions from which the sets of
    /// bare index names (`[i]`) are inferred. A dimension that does not resolve is reported and
    /// gets the set [`UNRESOLVED`], so that the definition can still be checked for errors of
    /// its own; `false` says the declaration is broken.
    fn dims(&mut self, dims: &[ast::Dim], uses: &[&ast::Expr]) -> (Vec<Dimension>, bool) {
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

    fn set_named(&mut self, name: &ast::Ident) -> Option<SetId> {
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

    fn dims_of(&self, symbol: Symbol) -> Option<&[Dimension]> {
        Some(match symbol {
            Symbol::Param(i) => &self.m.params.get(i)?.dims,
            Symbol::State(i) => &self.m.states.get(i)?.dims,
            Symbol::Noise(i) => &self.m.noises.get(i)?.dims,
            Symbol::Action(i) => &self.m.actions.get(i)?.dims,
            Symbol::Let(i) => &self.m.lets.get(i)?.dims,
            Symbol::Size(_) | Symbol::Set(_) => &[],
        })
    }

    fn kind_name(&self, symbol: Symbol) -> &'static str {
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

    fn param(&mut self, d: &ast::ParamDecl) {
        let Some(Global { symbol: Symbol::Param(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::Param(id);
        let uses: Vec<&ast::Expr> = match &d.def {
            ast::Definition::Value(e) | ast::Definition::Random(e) => vec![e],
            ast::Definition::File { .. } => vec![],
        };
        let (dims, dims_ok) = self.dims(&d.dims, &uses);
        if !dims_ok {
            self.broken.insert(symbol);
        }
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

    /// The element type a declaration gets from its value's type and its annotation.
    fn element_type(
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

    fn state(&mut self, d: &ast::StateDecl) {
        let Some(Global { symbol: Symbol::State(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::State(id);
        let uses: Vec<&ast::Expr> = match &d.def {
            ast::Definition::Value(e) | ast::Definition::Random(e) => vec![e],
            ast::Definition::File { .. } => vec![],
        };
        let (dims, dims_ok) = self.dims(&d.dims, &uses);
        if !dims_ok {
            self.broken.insert(symbol);
        }
        let mut scope = Scope::with_dims(Context::StateInit, &dims);
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

    fn noise(&mut self, d: &ast::NoiseDecl) {
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

    fn action_shape(&mut self, d: &ast::ActionDecl) {
        let Some(Global { symbol: Symbol::Action(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let symbol = Symbol::Action(id);
        let mut uses: Vec<&ast::Expr> = d.when.iter().collect();
        if let ast::ActionKind::Real { lo, hi } = &d.kind {
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
                Some(s) => {
                    let (lo, hi) = self.m.sets.get(s).map_or((0, 0), |s| (s.lo, s.hi));
                    ActionType::Discrete { labels: (lo..hi).map(|v| v.to_string()).collect(), over_set: Some(s) }
                }
                None => {
                    self.broken.insert(symbol);
                    ActionType::Discrete { labels: Vec::new(), over_set: None }
                }
            },
            ast::ActionKind::Real { .. } => ActionType::Continuous { lo: None, hi: None, when: None },
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

    fn action_bounds(&mut self, d: &ast::ActionDecl) {
        let Some(Global { symbol: Symbol::Action(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let ast::ActionKind::Real { lo, hi } = &d.kind else { return };
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
        if let Some(action) = self.m.actions.get_mut(id) {
            action.ty = ActionType::Continuous { lo: lo.clone(), hi: hi.clone(), when };
        }
    }

    // ------------------------------------------------------------------ the step

    fn step(&mut self, step: &ast::StepBlock) {
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

    fn let_binding(&mut self, name: &ast::Ident, dims: &[ast::Dim], value: &ast::Expr, span: Span) {
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
        let ty = self.expr(value, &mut scope);
        self.numeric(ty, value.span, "a state's next value");
        self.m.updates.push(Update { state, indices: names, value: value.clone(), span });
    }

    /// Checks an expression whose statement is already wrong, to report its own errors too.
    fn check_alone(&mut self, value: &ast::Expr) {
        let mut scope = Scope::new(Context::Step);
        self.expr(value, &mut scope);
    }

    fn rank_error(&self, name: &str, dims: &[Dimension], found: usize, span: Span) -> Diagnostic {
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

    // ------------------------------------------------------------------ settings

    fn settings(&mut self, ast: &ast::Model) {
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

    fn setting(&mut self, e: &ast::Expr, what: &str, valid: impl Fn(f64) -> bool, expected: &str) -> Option<f64> {
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

    // ------------------------------------------------------------------ expressions

    fn numeric(&mut self, ty: Ty, span: Span, what: &str) -> bool {
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
                if self.over_set(a).is_some() {
                    return true;
                }
                let name = self.m.actions.get(a).map_or("?", |a| a.name.as_str()).to_string();
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

    fn condition(&mut self, ty: Ty, span: Span, what: &str) -> bool {
        match ty {
            Ty::Bool => true,
            Ty::Error => false,
            Ty::Choice(a) => {
                let name = self.m.actions.get(a).map_or("?", |a| a.name.as_str()).to_string();
                let label = self.labels(a).first().cloned().unwrap_or_default();
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

    fn labels(&self, action: ActionId) -> Vec<String> {
        match self.m.actions.get(action).map(|a| &a.ty) {
            Some(ActionType::Discrete { labels, .. }) => labels.clone(),
            _ => Vec::new(),
        }
    }

    fn over_set(&self, action: ActionId) -> Option<SetId> {
        match self.m.actions.get(action).map(|a| &a.ty) {
            Some(ActionType::Discrete { over_set, .. }) => *over_set,
            _ => None,
        }
    }

    /// Whether a bare name means something here (a binder or a declared name).
    fn is_known(&self, name: &str, scope: &Scope) -> bool {
        scope.binder(name).is_some() || self.globals.contains_key(name)
    }

    fn expr(&mut self, e: &ast::Expr, scope: &mut Scope) -> Ty {
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
                self.condition(c, cond.span, "an `if` condition");
                let a = self.expr(then, scope);
                let b = self.expr(otherwise, scope);
                self.join(a, b, then.span, otherwise.span, "the two branches of this `if`")
            }
            ExprKind::Match { scrutinee, arms } => self.match_expr(e, scrutinee, arms, scope),
        }
    }

    fn join(&mut self, a: Ty, b: Ty, a_span: Span, b_span: Span, what: &str) -> Ty {
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
            Ty::Choice(a) => format!("a choice of `{}`", self.m.actions.get(a).map_or("?", |a| a.name.as_str())),
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
        let Some(global) = self.globals.get(&name.name) else {
            self.unknown_name(name, scope);
            for ix in indices {
                self.expr(ix, scope);
            }
            return Ty::Error;
        };
        let (symbol, declared) = (global.symbol, global.span);
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
            Symbol::State(_) => Ty::Real,
            Symbol::Noise(n) => self.m.noises.get(n).map_or(Ty::Error, |n| elem_ty(n.ty)),
            Symbol::Action(a) => match self.m.actions.get(a).map(|a| &a.ty) {
                Some(ActionType::Discrete { .. }) => Ty::Choice(a),
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

    /// Checks one index of `array` against the set of its dimension.
    fn index(&mut self, ix: &ast::Expr, set: SetId, array: &str, position: usize, scope: &mut Scope) -> bool {
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
            Ty::Choice(a) => match self.over_set(a) {
                Some(s) if s == set || set == UNRESOLVED => true,
                _ => {
                    let name = self.m.actions.get(a).map_or("?", |a| a.name.as_str()).to_string();
                    self.error(
                        Diagnostic::error(
                            "wrong-set",
                            format!(
                                "`{name}` cannot index the {ordinal} dimension of `{array}`, which is `{set_name}`"
                            ),
                            ix.span,
                            "choice used as an index",
                        )
                        .with_help(format!("declare the action as `choice[{set_name}]` to index by it")),
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
                    && self.labels(action).contains(&name.name)
                    && self.is_known(&name.name, scope)
                {
                    let declared = self.globals.get(&name.name).map(|g| g.span);
                    let action_name = self.m.actions.get(action).map_or("?", |a| a.name.as_str()).to_string();
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
        let b = self.expr(rhs, scope);
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
                    (Ty::Choice(x), Ty::Choice(y)) => x == y || self.labels(x) == self.labels(y),
                    (Ty::Choice(x), other) | (other, Ty::Choice(x)) => {
                        self.over_set(x).is_some() && matches!(other, Ty::Int | Ty::Index(_))
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
                        d = d.with_help(format!("compare it with one of its labels: {}", self.labels(x).join(", ")));
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
            Ty::Choice(a) if self.over_set(a).is_none() => {
                let labels = self.labels(a);
                if labels.contains(&label.name) {
                    return Ty::Bool;
                }
                let action = self.m.actions.get(a).map_or("?", |a| a.name.as_str()).to_string();
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
                        format!("`match` needs a discrete action, but this is {name}"),
                        scrutinee.span,
                        "not a choice",
                    )
                    .with_help("for numbers and conditions use `if ... then ... else ...`"),
                );
                return Ty::Error;
            }
        };
        let labels = self.labels(action);
        let action_name = self.m.actions.get(action).map_or("?", |a| a.name.as_str()).to_string();
        let over_set = self.over_set(action).is_some();
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
                if !labels.contains(&key) {
                    let mut d = Diagnostic::error(
                        "unknown-label",
                        format!("choice `{action_name}` has no label `{key}`"),
                        span,
                        format!("not one of {{{}}}", labels.join(", ")),
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
        let missing: Vec<&String> = labels.iter().filter(|l| !covered.contains_key(*l)).collect();
        if let Some(span) = wildcard
            && missing.is_empty()
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
        if wildcard.is_none() && !missing.is_empty() && ok {
            let list: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
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

    fn call(&mut self, e: &ast::Expr, func: &ast::Ident, args: &[ast::Expr], scope: &mut Scope) -> Ty {
        let name = func.name.as_str();
        if DISTRIBUTIONS.contains(&name) {
            return self.distribution(e, func, args, scope);
        }
        if !FUNCTIONS.contains(&name) {
            for a in args {
                self.expr(a, scope);
            }
            if let Some(g) = self.globals.get(name) {
                let declared = g.span;
                self.error(
                    Diagnostic::error(
                        "not-a-function",
                        format!("`{name}` is not a function"),
                        func.span,
                        "called here",
                    )
                    .with_label(declared, "declared here")
                    .with_help(format!("index arrays with brackets: `{name}[i]`")),
                );
            } else {
                let mut known: Vec<&str> = FUNCTIONS.to_vec();
                if scope.random {
                    known.extend(DISTRIBUTIONS);
                }
                let mut d = Diagnostic::error(
                    "unknown-function",
                    format!("unknown function `{name}`"),
                    func.span,
                    "not a function",
                );
                d = match did_you_mean(name, known.iter().copied()) {
                    Some(hint) => d.with_help(hint),
                    None => d.with_help(format!("functions: {}", FUNCTIONS.join(", "))),
                };
                self.error(d);
            }
            return Ty::Error;
        }
        let (min, max) = match name {
            "max" | "min" => (2, usize::MAX),
            "clamp" => (3, 3),
            "pow" => (2, 2),
            _ => (1, 1),
        };
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (n, m) if n == m => plural(n, "argument"),
                (n, _) => format!("at least {}", plural(n, "argument")),
            };
            self.error(
                Diagnostic::error(
                    "arity",
                    format!("`{name}` takes {expected}, but {} given", args.len()),
                    e.span,
                    "wrong number of arguments",
                )
                .with_help(if name == "max" || name == "min" {
                    format!("to reduce over a set write `{name}(i in I) x[i]`")
                } else {
                    format!("call it as `{}`", signature(name))
                }),
            );
            for a in args {
                self.expr(a, scope);
            }
            return Ty::Error;
        }
        let mut tys = Vec::new();
        let mut ok = true;
        for a in args {
            let ty = self.expr(a, scope);
            ok &= self.numeric(ty, a.span, &format!("an argument of `{name}`"));
            tys.push(ty);
        }
        if !ok {
            return Ty::Error;
        }
        let all_int = tys.iter().all(|t| matches!(t, Ty::Int | Ty::Index(_) | Ty::Choice(_)));
        match name {
            "floor" | "ceil" | "round" => Ty::Int,
            "abs" | "max" | "min" | "clamp" if all_int => Ty::Int,
            _ => Ty::Real,
        }
    }

    fn distribution(&mut self, e: &ast::Expr, func: &ast::Ident, args: &[ast::Expr], scope: &mut Scope) -> Ty {
        let name = func.name.as_str();
        if !scope.random {
            let help = match scope.context {
                Context::Step => {
                    "randomness in the step comes from noise: declare `noise d ~ ...` and use `d`".to_string()
                }
                Context::Param | Context::StateInit => "write `~` instead of `=` to draw the value".to_string(),
                _ => format!("{} cannot be random", scope.context.describe()),
            };
            self.error(
                Diagnostic::error(
                    "random-here",
                    format!("`{name}` draws a random value, which is not allowed here"),
                    func.span,
                    "a distribution",
                )
                .with_help(help),
            );
            return Ty::Error;
        }
        scope.draws = true;
        if name == "truncated" {
            let [inner, lo, hi] = args else {
                self.error(
                    Diagnostic::error(
                        "arity",
                        format!("`truncated` takes 3 arguments, but {} given", args.len()),
                        e.span,
                        "wrong number of arguments",
                    )
                    .with_help("write `truncated(normal(5, 2), 0, 10)`"),
                );
                return Ty::Error;
            };
            let is_dist = matches!(&inner.kind, ExprKind::Call { func, .. } if DISTRIBUTIONS.contains(&func.name.as_str()) && func.name != "truncated");
            if !is_dist {
                self.error(
                    Diagnostic::error(
                        "type",
                        "`truncated` needs a distribution as its first argument",
                        inner.span,
                        "not a distribution",
                    )
                    .with_help("write `truncated(normal(5, 2), 0, 10)`"),
                );
                return Ty::Error;
            }
            let ty = self.expr(inner, scope);
            let mut ok = ty != Ty::Error;
            for bound in [lo, hi] {
                let t = self.expr(bound, scope);
                ok &= self.numeric(t, bound.span, "a truncation bound");
            }
            if ok
                && let (Some(l), Some(h)) = (self.constant(lo, scope), self.constant(hi, scope))
                && (l >= h || (ty == Ty::Int && l.ceil() > h.floor()))
            {
                self.error(Diagnostic::error(
                    "distribution-parameter",
                    if l >= h {
                        format!("truncation to [{}, {}] leaves nothing to draw", fmt_num(l), fmt_num(h))
                    } else {
                        format!(
                            "truncation to [{}, {}] leaves no integer for this integer distribution to draw",
                            fmt_num(l),
                            fmt_num(h)
                        )
                    },
                    lo.span.to(hi.span),
                    "empty interval",
                ));
                return Ty::Error;
            }
            return if ok { ty } else { Ty::Error };
        }
        let params: &[&str] = match name {
            "uniform" => &["low", "high"],
            "normal" => &["mean", "standard deviation"],
            "lognormal" => &["log-mean", "log-standard deviation"],
            "poisson" => &["rate"],
            "binomial" => &["trials", "probability"],
            "negbinomial" => &["successes", "probability"],
            "gamma" => &["shape", "scale"],
            "bernoulli" => &["probability"],
            _ => &[],
        };
        let arity_ok = if name == "categorical" { !args.is_empty() } else { args.len() == params.len() };
        if !arity_ok {
            let expected = if name == "categorical" {
                "one or more weights".to_string()
            } else {
                format!("{} ({})", plural(params.len(), "argument"), params.join(", "))
            };
            self.error(Diagnostic::error(
                "arity",
                format!("`{name}` takes {expected}, but {} given", args.len()),
                e.span,
                "wrong number of arguments",
            ));
            return Ty::Error;
        }
        let mut ok = true;
        let mut values = Vec::new();
        for (k, a) in args.iter().enumerate() {
            let t = self.expr(a, scope);
            ok &= self.numeric(t, a.span, &format!("a parameter of `{name}`"));
            if name == "binomial" && k == 0 && t == Ty::Real {
                self.error(
                    Diagnostic::error(
                        "type",
                        "the number of trials of `binomial` must be an integer, but this is a real",
                        a.span,
                        "real number of trials",
                    )
                    .with_help("round it explicitly: `binomial(round(n), p)`, or declare it `: int`"),
                );
                ok = false;
            }
            values.push(self.constant(a, scope));
        }
        if !ok {
            return Ty::Error;
        }
        let arg = |k: usize| values.get(k).copied().flatten();
        let span_of = |k: usize| args.get(k).map_or(e.span, |a| a.span);
        let mut bad: Option<(usize, String)> = None;
        let positive = |k: usize, what: &str| {
            arg(k)
                .filter(|v| *v <= 0.0)
                .map(|v| (k, format!("the {what} of `{name}` must be positive, not {}", fmt_num(v))))
        };
        let probability = |k: usize| {
            arg(k)
                .filter(|v| !(0.0..=1.0).contains(v))
                .map(|v| (k, format!("the probability of `{name}` must be between 0 and 1, not {}", fmt_num(v))))
        };
        match name {
            "uniform" => {
                if let (Some(l), Some(h)) = (arg(0), arg(1))
                    && l >= h
                {
                    bad = Some((1, format!("`uniform` needs low < high, but {} >= {}", fmt_num(l), fmt_num(h))));
                }
            }
            "normal" => bad = positive(1, "standard deviation"),
            "lognormal" => bad = positive(1, "log-standard deviation"),
            "gamma" => bad = positive(0, "shape").or_else(|| positive(1, "scale")),
            "poisson" => {
                bad = arg(0)
                    .filter(|v| *v < 0.0)
                    .map(|v| (0, format!("the rate of `poisson` must not be negative, not {}", fmt_num(v))))
            }
            "binomial" => {
                bad = arg(0)
                    .filter(|v| *v < 0.0 || v.fract() != 0.0)
                    .map(|v| {
                        (
                            0,
                            format!(
                                "the number of trials of `binomial` must be a whole number, at least 0, not {}",
                                fmt_num(v)
                            ),
                        )
                    })
                    .or_else(|| probability(1));
            }
            "negbinomial" => {
                bad = positive(0, "number of successes").or_else(|| {
                    arg(1)
                        .filter(|v| *v <= 0.0 || *v > 1.0)
                        .map(|v| (1, format!("the probability of `negbinomial` must be in (0, 1], not {}", fmt_num(v))))
                });
            }
            "bernoulli" => bad = probability(0),
            "categorical" => {
                if let Some(k) = (0..args.len()).find(|k| arg(*k).is_some_and(|v| v < 0.0)) {
                    bad = Some((
                        k,
                        format!(
                            "weights of `categorical` must not be negative, not {}",
                            fmt_num(arg(k).unwrap_or(0.0))
                        ),
                    ));
                } else if (0..args.len()).all(|k| arg(k) == Some(0.0)) {
                    bad = Some((0, "`categorical` needs at least one positive weight".to_string()));
                }
            }
            _ => {}
        }
        if let Some((k, message)) = bad {
            self.error(
                Diagnostic::error("distribution-parameter", message, span_of(k), "invalid parameter")
                    .with_help(format!("`{}`", signature(name))),
            );
            return Ty::Error;
        }
        match name {
            "poisson" | "binomial" | "negbinomial" | "bernoulli" | "categorical" => Ty::Int,
            _ => Ty::Real,
        }
    }

    // ------------------------------------------------------------------ constants

    /// The value of an expression known at compile time: numbers, sizes, constant parameters,
    /// arithmetic and math functions on them. `None` for anything else.
    fn constant(&self, e: &ast::Expr, scope: &Scope) -> Option<f64> {
        let value = match &e.kind {
            ExprKind::Number { value, .. } => *value,
            ExprKind::Bool(b) => f64::from(u8::from(*b)),
            ExprKind::Paren(inner) => self.constant(inner, scope)?,
            ExprKind::Access { name, primed: false, indices } if indices.is_empty() => {
                if scope.binder(&name.name).is_some() {
                    return None;
                }
                match self.globals.get(&name.name)?.symbol {
                    Symbol::Size(s) if !self.broken.contains(&Symbol::Size(s)) => self.m.sizes.get(s)?.value as f64,
                    Symbol::Param(p) => self.m.params.get(p)?.constant?,
                    _ => return None,
                }
            }
            ExprKind::Unary { op: UnaryOp::Neg, operand } => -self.constant(operand, scope)?,
            ExprKind::Unary { op: UnaryOp::Not, operand } => f64::from(u8::from(self.constant(operand, scope)? == 0.0)),
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.constant(lhs, scope)?;
                let b = self.constant(rhs, scope)?;
                let truth = |c: bool| f64::from(u8::from(c));
                match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div => a / b,
                    BinaryOp::Rem => a % b,
                    BinaryOp::Pow => a.powf(b),
                    BinaryOp::Eq => truth(a == b),
                    BinaryOp::Ne => truth(a != b),
                    BinaryOp::Lt => truth(a < b),
                    BinaryOp::Le => truth(a <= b),
                    BinaryOp::Gt => truth(a > b),
                    BinaryOp::Ge => truth(a >= b),
                    BinaryOp::And => truth(a != 0.0 && b != 0.0),
                    BinaryOp::Or => truth(a != 0.0 || b != 0.0),
                }
            }
            ExprKind::If { cond, then, otherwise } => {
                if self.constant(cond, scope)? != 0.0 {
                    self.constant(then, scope)?
                } else {
                    self.constant(otherwise, scope)?
                }
            }
            ExprKind::Call { func, args } if FUNCTIONS.contains(&func.name.as_str()) => {
                let v: Vec<f64> = args.iter().map(|a| self.constant(a, scope)).collect::<Option<_>>()?;
                let x = *v.first()?;
                match func.name.as_str() {
                    "exp" => x.exp(),
                    "log" => x.ln(),
                    "sqrt" => x.sqrt(),
                    "tanh" => x.tanh(),
                    "sigmoid" => 1.0 / (1.0 + (-x).exp()),
                    "softplus" => x.max(0.0) + (-x.abs()).exp().ln_1p(),
                    "sin" => x.sin(),
                    "cos" => x.cos(),
                    "abs" => x.abs(),
                    "max" => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    "min" => v.iter().copied().fold(f64::INFINITY, f64::min),
                    "clamp" => x.max(*v.get(1)?).min(*v.get(2)?),
                    "pow" => x.powf(*v.get(1)?),
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    "round" => x.round(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        value.is_finite().then_some(value)
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

fn signature(name: &str) -> &'static str {
    match name {
        "exp" => "exp(x)",
        "log" => "log(x)",
        "sqrt" => "sqrt(x)",
        "tanh" => "tanh(x)",
        "sigmoid" => "sigmoid(x)",
        "softplus" => "softplus(x)",
        "sin" => "sin(x)",
        "cos" => "cos(x)",
        "abs" => "abs(x)",
        "clamp" => "clamp(x, low, high)",
        "pow" => "pow(x, y)",
        "floor" => "floor(x)",
        "ceil" => "ceil(x)",
        "round" => "round(x)",
        "uniform" => "uniform(low, high) with low < high",
        "normal" => "normal(mean, sd) with sd > 0",
        "lognormal" => "lognormal(mu, sigma) with sigma > 0: the log is normal(mu, sigma)",
        "poisson" => "poisson(rate) with rate >= 0",
        "binomial" => "binomial(trials, p) with trials a whole number >= 0 and 0 <= p <= 1",
        "negbinomial" => "negbinomial(r, p): failures before r successes, r > 0 and 0 < p <= 1",
        "gamma" => "gamma(shape, scale) with both > 0",
        "bernoulli" => "bernoulli(p) with 0 <= p <= 1: 1 with probability p, else 0",
        "categorical" => "categorical(w0, w1, ...): k with probability proportional to wk",
        _ => "",
    }
}
