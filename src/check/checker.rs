//! The checker's state and its order of work: declarations in dependency order, then the step,
//! then the settings. Each kind of work is in its own file beside this one; expressions are typed
//! by [`Checker::expr`] (`exprs.rs`) in a [`Scope`] that says what may be read there.

use std::collections::{HashMap, HashSet};

use super::model::*;
use super::{DataFiles, Options, duplicate};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, ExprKind, Item};

/// The type of an expression while checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Int,
    Real,
    Bool,
    /// An index variable ranging over a set (an integer).
    Index(SetId),
    /// The value of a discrete action, or of a state that holds a choice.
    Choice(Chooser),
    /// Already reported; stays silent.
    Error,
}

/// Where an expression stands, which decides what it may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Context {
    Size,
    SetBound,
    Param,
    StateInit,
    Noise,
    ActionBound,
    When,
    Step,
    /// A terminal cost: the final states, parameters and sizes.
    Terminal,
    Setting,
    Policy,
}

impl Context {
    pub(super) fn allows(self, symbol: Symbol, model: &CheckedModel) -> bool {
        use Symbol::*;
        match (self, symbol) {
            (_, Size(_)) => true,
            (Context::Size | Context::SetBound, _) => false,
            (_, Param(_)) => true,
            (Context::Setting | Context::StateInit | Context::Noise, _) => false,
            (Context::Param, _) => false,
            (Context::ActionBound | Context::Terminal, State(_)) => true,
            // Bounds that read a discrete action are computed after the discrete choice.
            (Context::ActionBound, Action(a)) => model.actions.get(a).is_some_and(|x| x.is_discrete()),
            (Context::ActionBound | Context::Terminal, _) => false,
            (Context::When, Action(a)) => model.actions.get(a).is_some_and(|x| x.is_discrete()),
            (Context::When, _) => false,
            (Context::Policy, State(_)) => true,
            (Context::Policy, _) => false,
            (Context::Step, Set(_)) => false,
            (Context::Step, _) => true,
        }
    }

    /// Why a name of another kind cannot be read here, as a help line.
    pub(super) fn rule(self) -> &'static str {
        match self {
            Context::Size => "a size can only use other sizes",
            Context::SetBound => "set bounds can only use sizes",
            Context::Param => "a parameter is fixed per instance: it can use sizes and earlier parameters",
            Context::StateInit => "an initial state can use sizes and parameters",
            Context::Noise => {
                "noise is drawn independently of the state and the actions: it can use sizes and parameters"
            }
            Context::ActionBound => "an action's bound can use sizes, parameters, the state and discrete actions",
            Context::When => "a `when` condition selects regimes: it can use discrete actions, sizes and parameters",
            Context::Step => "the step can use sizes, parameters, state, noise, actions and earlier `let`s",
            Context::Terminal => {
                "a terminal cost is charged on the final states: it can use sizes, parameters and the state"
            }
            Context::Setting => "this setting must be a constant: it can use sizes and constant parameters",
            Context::Policy => {
                "a policy decides before the period's noise: it can use sizes, parameters, states, its tunables and its own `let`s"
            }
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Context::Size => "a size",
            Context::SetBound => "a set's bounds",
            Context::Param => "a parameter",
            Context::StateInit => "an initial state",
            Context::Noise => "a noise distribution",
            Context::ActionBound => "an action's bound",
            Context::When => "a `when` condition",
            Context::Step => "the step",
            Context::Terminal => "a terminal cost",
            Context::Setting => "a setting",
            Context::Policy => "a policy",
        }
    }
}

/// The set of a dimension that did not resolve (already reported); any index fits it.
pub(super) const UNRESOLVED: SetId = usize::MAX;

pub(super) struct Binding {
    pub(super) name: String,
    pub(super) set: SetId,
}

pub(super) struct Scope {
    pub(super) context: Context,
    pub(super) binders: Vec<Binding>,
    /// Distribution draws are allowed (after `~`).
    pub(super) random: bool,
    /// A draw was seen.
    pub(super) draws: bool,
    /// In a size or parameter definition: only ids below this of that kind are defined yet.
    pub(super) defined_before: Option<usize>,
    /// The `let` being defined, which its own value cannot read.
    pub(super) defining: Option<String>,
    /// Inside the branch of an `if` whose condition is known at compile time to choose the
    /// other branch: the branch is typed, but not lowered, so an index outside its set or an
    /// empty `max` there is not an error (`if lead >= 2 then pipe[i, 0] else 0` with no slots).
    pub(super) not_taken: bool,
}

impl Scope {
    pub(super) fn new(context: Context) -> Scope {
        Scope {
            context,
            binders: Vec::new(),
            random: false,
            draws: false,
            defined_before: None,
            defining: None,
            not_taken: false,
        }
    }

    pub(super) fn with_dims(context: Context, dims: &[Dimension]) -> Scope {
        let mut scope = Scope::new(context);
        for d in dims {
            if let Some(name) = &d.index {
                scope.binders.push(Binding { name: name.clone(), set: d.set });
            }
        }
        scope
    }

    pub(super) fn binder(&self, name: &str) -> Option<SetId> {
        self.binders.iter().rev().find(|b| b.name == name).map(|b| b.set)
    }
}

pub(super) struct Global {
    pub(super) symbol: Symbol,
    pub(super) span: Span,
}

pub(crate) struct Checker<'a> {
    pub(super) files: &'a dyn DataFiles,
    pub(super) options: &'a Options,
    pub diagnostics: Vec<Diagnostic>,
    pub(super) globals: HashMap<String, Global>,
    /// Declarations whose definition failed: reading them reports nothing more.
    pub(super) broken: HashSet<Symbol>,
    /// Every `let` name in the step, with its span, to tell "used before its `let`".
    pub(super) let_names: HashMap<String, Span>,
    pub(super) m: CheckedModel,
    /// The tunables and `let`s of the policy being checked, in order.
    pub(super) locals: Vec<super::policy::Local>,
}

pub(super) fn elem_ty(ty: ElemType) -> Ty {
    match ty {
        ElemType::Real => Ty::Real,
        ElemType::Int => Ty::Int,
        ElemType::Bool => Ty::Bool,
    }
}

/// The labelled discrete action or choice state an expression reads directly (`order`,
/// `open[i]`, `last`), if any.
pub(super) fn labelled_choice(checker: &Checker<'_>, e: &ast::Expr) -> Option<Chooser> {
    match &e.kind {
        ExprKind::Access { name, primed: false, .. } => {
            let chooser = match checker.globals.get(&name.name)?.symbol {
                Symbol::Action(a) => Chooser::Action(a),
                Symbol::State(s) => Chooser::State(s),
                _ => return None,
            };
            matches!(checker.m.choice(chooser), Some((_, None))).then_some(chooser)
        }
        ExprKind::Paren(inner) => labelled_choice(checker, inner),
        _ => None,
    }
}

pub(super) fn bare_name(e: &ast::Expr) -> Option<&ast::Ident> {
    match &e.kind {
        ExprKind::Access { name, primed: false, indices } if indices.is_empty() => Some(name),
        _ => None,
    }
}

pub(super) fn fmt_num(v: f64) -> String {
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
                decided: HashMap::new(),
                terminal: Vec::new(),
                reads_period: false,
                before_decision: Vec::new(),
                policies: Vec::new(),
                train: Default::default(),
            },
            locals: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

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
        let terminals: Vec<&ast::TerminalBlock> =
            ast.items.iter().filter_map(|i| if let Item::Terminal(t) = i { Some(t) } else { None }).collect();
        if let [first, rest @ ..] = terminals.as_slice() {
            for extra in rest {
                self.error(duplicate(
                    "block",
                    "terminal",
                    Span::new(extra.span.start, extra.span.start + 8),
                    Span::new(first.span.start, first.span.start + 8),
                ));
            }
            self.terminal(first);
        }
        self.settings(ast);
        self.policies(ast);
        self.train_block(ast);

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
                        choice: None,
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
                        ty: ActionType::Continuous { lo: None, hi: None, sum: None, when: None },
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
        if name.name == PERIOD {
            self.error(period_taken(kind, name.span));
            self.broken.insert(symbol);
        } else if let Some(first) = self.globals.get(&name.name) {
            let first = first.span;
            self.error(duplicate(kind, &name.name, name.span, first));
            self.broken.insert(symbol);
        } else {
            self.globals.insert(name.name.clone(), Global { symbol, span: name.span });
        }
    }
}

/// The name of the period index, readable in the step and in `observe`.
pub(super) const PERIOD: &str = "period";

/// `period` is the period index: a declaration cannot take the name.
pub(super) fn period_taken(kind: &str, span: Span) -> Diagnostic {
    Diagnostic::error("shadow", format!("a {kind} cannot be named `period`"), span, "the period index")
        .with_help("`period` is the index of the current period (0, 1, ..., horizon - 1): choose another name")
}

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
