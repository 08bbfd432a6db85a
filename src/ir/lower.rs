//! Lowering: a [`CheckedModel`] becomes a [`Module`].
//!
//! Each declaration becomes a buffer and a store in the program that owns it (see the table in
//! [`super`]); each `let`, update and cost of the step becomes a store in `step`, in source order.
//! Index names become loop variables, reductions stay reductions, `if` and `match` become
//! [`Expr::Select`], a comparison with a label becomes a comparison with the label's position,
//! and `clamp`, n-ary `max`/`min` become nested `Max`/`Min`.
//!
//! The checker has already proven every expression well typed in its context, so this module
//! resolves names without reporting errors; a name it cannot resolve (which a checked model does
//! not contain) lowers to `NaN`, which the validator rejects.

use std::collections::HashMap;

use super::*;
use crate::builtins;
use crate::check::{self, ActionType, CheckedModel, Chooser, Definition, Observed, ReportScale, Symbol};
use crate::syntax::ast::{self, ExprKind};

/// Lowers a checked model. The result passes [`validate`].
pub fn lower(model: &CheckedModel) -> Module {
    let mut lowering = Lowering::new(model);
    lowering.declare_buffers();
    lowering.programs();
    lowering.module
}

/// Lowers a policy of a checked model against the module compiled from it (after the passes,
/// which only add buffers after the model's own): the policy's buffers are numbered after the
/// module's.
pub fn lower_policy(model: &CheckedModel, module: &Module, policy: &check::Policy) -> PolicyProgram {
    let mut lowering = Lowering::new(model);
    lowering.declare_buffers();
    let first = module.buffers.len();
    lowering.module.buffers = module.buffers.clone();
    let mut tunables = Vec::new();
    for t in &policy.tunables {
        let buffer = lowering.buffer(format!("{}.{}", policy.name, t.name), BufferKind::Param, &[], ElemType::Real);
        lowering.locals.insert(t.name.clone(), buffer);
        tunables.push(TunableParam { name: t.name.clone(), lo: t.lo, hi: t.hi, start: t.start, buffer });
    }
    // `let`s and rules in source order: a rule may read every `let` before it.
    enum Item<'m> {
        Let(&'m check::Let),
        Rule(&'m check::Rule),
    }
    let mut items: Vec<(usize, Item)> = policy.lets.iter().map(|l| (l.span.start, Item::Let(l))).collect();
    items.extend(policy.rules.iter().map(|r| (r.span.start, Item::Rule(r))));
    items.sort_by_key(|(start, _)| *start);
    let mut program = Program::default();
    let mut outputs = Vec::new();
    for (_, item) in items {
        match item {
            Item::Let(l) => {
                let buffer =
                    lowering.buffer(format!("{}.{}", policy.name, l.name), BufferKind::Let, &l.dims, elem(l.ty));
                let stmt = lowering.store(buffer, &l.dims, |this, env| this.expr(&l.value, env));
                lowering.locals.insert(l.name.clone(), buffer);
                program.body.push(stmt);
            }
            Item::Rule(r) => {
                let Some(a) = model.actions.get(r.action) else { continue };
                let action = lowering.buffers.actions[r.action];
                let dims: Vec<check::Dimension> = a
                    .dims
                    .iter()
                    .zip(&r.indices)
                    .map(|(d, name)| check::Dimension { set: d.set, index: Some(name.clone()) })
                    .collect();
                let output = lowering.buffer(
                    format!("{}.{}", policy.name, a.name),
                    BufferKind::Let,
                    &dims,
                    if a.is_discrete() { ElemType::Int } else { ElemType::Real },
                );
                let stmt = lowering.store(output, &dims, |this, env| match &a.ty {
                    ActionType::Discrete { over_set: None, .. } => this.label_value(&r.value, r.action, env),
                    ActionType::Discrete { over_set: Some(set), .. } => {
                        // The buffer holds the position of the chosen element.
                        let value = this.expr(&r.value, env);
                        let lo = model.sets.get(*set).map_or(0, |s| s.lo) as f64;
                        let lo = this.constant(lo, r.value.span);
                        this.binary(BinaryOp::Sub, value, lo, r.value.span)
                    }
                    ActionType::Continuous { .. } => this.expr(&r.value, env),
                });
                program.body.push(stmt);
                outputs.push((action, output));
            }
        }
    }
    outputs.sort_unstable();
    PolicyProgram {
        name: policy.name.clone(),
        first,
        buffers: lowering.module.buffers.split_off(first),
        exprs: lowering.module.exprs,
        program,
        tunables,
        outputs,
    }
}

/// Where each declaration of the model lives in the module.
#[derive(Default)]
struct Buffers {
    params: Vec<BufferId>,
    states: Vec<BufferId>,
    next: Vec<BufferId>,
    noises: Vec<BufferId>,
    actions: Vec<BufferId>,
    lets: Vec<BufferId>,
    /// The param holding the period index, when the model reads it or has terminal costs.
    period: Option<BufferId>,
    /// The data-file buffer holding a state's initial values, for states read `from` a file.
    initial_data: HashMap<usize, BufferId>,
}

struct Lowering<'a> {
    model: &'a CheckedModel,
    module: Module,
    buffers: Buffers,
    next_var: u32,
    /// Lowering a terminal cost: a state stands for its next value, its update's expression.
    final_states: bool,
    /// A policy's tunables and `let`s, while lowering a policy.
    locals: HashMap<String, BufferId>,
}

/// Index names in scope, innermost last.
type Env = Vec<(String, Var)>;

/// A choice state holds a label's position, an integer; other states hold reals.
fn state_elem(s: &check::State) -> ElemType {
    if s.choice.is_some() { ElemType::Int } else { ElemType::Real }
}

fn elem(ty: check::ElemType) -> ElemType {
    match ty {
        check::ElemType::Real => ElemType::Real,
        check::ElemType::Int => ElemType::Int,
        check::ElemType::Bool => ElemType::Bool,
    }
}

impl<'a> Lowering<'a> {
    fn new(model: &'a CheckedModel) -> Lowering<'a> {
        let sets = model.sets.iter().map(|s| Set { name: s.name.clone(), lo: s.lo, hi: s.hi }).collect();
        let report = Report {
            per_period: model.report.contains(&ReportScale::Period),
            per_size: model
                .report
                .iter()
                .filter_map(|r| match r {
                    ReportScale::Size(s) => model.sizes.get(*s).map(|s| (s.name.clone(), s.value)),
                    ReportScale::Period => None,
                })
                .collect(),
        };
        Lowering {
            model,
            module: Module {
                name: model.name.clone(),
                sets,
                buffers: Vec::new(),
                exprs: Arena::default(),
                instance: Program::default(),
                init: Program::default(),
                noise: Program::default(),
                bounds: Program::default(),
                regimes: Program::default(),
                step: Program::default(),
                vjp: Program::default(),
                bounds_vjp: Program::default(),
                observe: Vec::new(),
                horizon: model.horizon,
                warmup: model.warmup,
                discount: model.discount,
                report,
            },
            buffers: Buffers::default(),
            next_var: 0,
            final_states: false,
            locals: HashMap::new(),
        }
    }

    fn buffer(&mut self, name: String, kind: BufferKind, dims: &[check::Dimension], elem: ElemType) -> BufferId {
        self.module.buffers.push(Buffer {
            name,
            kind,
            dims: dims.iter().map(|d| d.set).collect(),
            elem,
            labels: Vec::new(),
            data: None,
        });
        self.module.buffers.len() - 1
    }

    fn declare_buffers(&mut self) {
        let m = self.model;
        for p in &m.params {
            let id = self.buffer(p.name.clone(), BufferKind::Param, &p.dims, elem(p.ty));
            if let Definition::Data(values) = &p.definition {
                self.module.buffers[id].data = Some(values.clone());
            }
            self.buffers.params.push(id);
        }
        for (k, s) in m.states.iter().enumerate() {
            if let Definition::Data(values) = &s.initial {
                let id = self.buffer(format!("{}.initial", s.name), BufferKind::Param, &s.dims, ElemType::Real);
                self.module.buffers[id].data = Some(values.clone());
                self.buffers.initial_data.insert(k, id);
            }
            // A choice state holds the position of its label, like a discrete action.
            let id = self.buffer(s.name.clone(), BufferKind::State, &s.dims, state_elem(s));
            if s.choice.is_some() {
                self.module.buffers[id].labels = m.choice_labels(Chooser::State(k));
            }
            self.buffers.states.push(id);
        }
        for n in &m.noises {
            let id = self.buffer(n.name.clone(), BufferKind::Noise, &n.dims, elem(n.ty));
            self.buffers.noises.push(id);
        }
        for a in &m.actions {
            let id = match &a.ty {
                ActionType::Discrete { .. } => {
                    let id = self.buffer(a.name.clone(), BufferKind::Discrete, &a.dims, ElemType::Int);
                    self.module.buffers[id].labels = m.labels(a);
                    id
                }
                ActionType::Continuous { .. } => {
                    self.buffer(a.name.clone(), BufferKind::Continuous, &a.dims, ElemType::Real)
                }
            };
            self.buffers.actions.push(id);
        }
        for (k, s) in m.states.iter().enumerate() {
            let of = self.buffers.states[k];
            let id = self.buffer(format!("{}'", s.name), BufferKind::Next { of }, &s.dims, state_elem(s));
            self.buffers.next.push(id);
        }
        for l in &m.lets {
            let id = self.buffer(l.name.clone(), BufferKind::Let, &l.dims, elem(l.ty));
            self.buffers.lets.push(id);
        }
        if m.reads_period || !m.terminal.is_empty() {
            // Like noise, an input of each period that the step does not differentiate; the
            // protocol sets it before each period (see `Module::period_index`).
            let id = self.buffer(PERIOD.to_string(), BufferKind::Noise, &[], ElemType::Int);
            self.buffers.period = Some(id);
        }
        self.module.observe = m
            .observe
            .iter()
            .map(|o| match o {
                Observed::State(s) => self.buffers.states[*s],
                Observed::Param(p) => self.buffers.params[*p],
                Observed::Let(l) => self.buffers.lets[*l],
                Observed::Period => self.buffers.period.unwrap_or(usize::MAX),
            })
            .collect();
    }

    fn programs(&mut self) {
        let m = self.model;
        for (k, p) in m.params.iter().enumerate() {
            let value = match &p.definition {
                Definition::Data(_) => continue,
                Definition::Value(e) | Definition::Random(e) => e,
            };
            let buffer = self.buffers.params[k];
            let stmt = self.store(buffer, &p.dims, |this, env| match p.constant {
                // `--set` and constants: the value the checker computed.
                Some(c) if p.dims.is_empty() => this.constant(c, value.span),
                _ => this.expr(value, env),
            });
            self.module.instance.body.push(stmt);
        }
        for (k, s) in m.states.iter().enumerate() {
            let buffer = self.buffers.states[k];
            let stmt = match (&s.initial, self.buffers.initial_data.get(&k).copied()) {
                (Definition::Data(_), Some(data)) => self.store(buffer, &s.dims, |this, env| {
                    let index = env.iter().map(|(_, v)| this.push(Expr::Var(*v), Span::default())).collect();
                    this.push(Expr::Load { buffer: data, index }, s.span)
                }),
                (Definition::Value(e), _) if s.choice.is_some() => {
                    self.store(buffer, &s.dims, |this, env| this.choice_position(e, Chooser::State(k), env))
                }
                (Definition::Value(e) | Definition::Random(e), _) => {
                    self.store(buffer, &s.dims, |this, env| this.expr(e, env))
                }
                (Definition::Data(_), None) => continue,
            };
            self.module.init.body.push(stmt);
        }
        for (k, n) in m.noises.iter().enumerate() {
            let buffer = self.buffers.noises[k];
            let stmt = self.store(buffer, &n.dims, |this, env| this.expr(&n.distribution, env));
            self.module.noise.body.push(stmt);
        }
        for (k, a) in m.actions.iter().enumerate() {
            let ActionType::Continuous { lo, hi, sum, when } = &a.ty else { continue };
            let action = self.buffers.actions[k];
            for (bound, upper) in [(lo, false), (hi, true)] {
                if let Some(e) = bound {
                    let name = format!("{}.{}", a.name, if upper { "hi" } else { "lo" });
                    let id = self.buffer(name, BufferKind::Bound { action, upper }, &a.dims, ElemType::Real);
                    let stmt = self.store(id, &a.dims, |this, env| this.expr(e, env));
                    // A bound that reads a discrete action is known only after the choice: the
                    // `regimes` program computes it, before any piece bound that reads it.
                    if reads_discrete(&self.module, &stmt) {
                        self.module.regimes.body.push(stmt);
                    } else {
                        self.module.bounds.body.push(stmt);
                    }
                }
            }
            if let Some(e) = sum {
                // A scalar: `passes::reformulate` makes it the upper bound of the action's total.
                let id =
                    self.buffer(format!("{}.sum_hi", a.name), BufferKind::SumBound { action }, &[], ElemType::Real);
                let stmt = self.store(id, &[], |this, env| this.expr(e, env));
                if reads_discrete(&self.module, &stmt) {
                    self.module.regimes.body.push(stmt);
                } else {
                    self.module.bounds.body.push(stmt);
                }
            }
            if let Some(e) = when {
                let id =
                    self.buffer(format!("{}.active", a.name), BufferKind::Regime { action }, &a.dims, ElemType::Bool);
                let stmt = self.store(id, &a.dims, |this, env| this.expr(e, env));
                self.module.regimes.body.push(stmt);
            }
        }
        // The lets the policy observes, computed before the decision; the step computes them
        // again to the same value, as they read only states and parameters.
        for &k in &m.before_decision {
            let l = &m.lets[k];
            let buffer = self.buffers.lets[k];
            let stmt = self.store(buffer, &l.dims, |this, env| this.expr(&l.value, env));
            self.module.bounds.body.push(stmt);
        }
        self.step();
    }

    /// The step's statements in source order: lets, updates and costs interleaved as written.
    fn step(&mut self) {
        let m = self.model;
        enum Item<'m> {
            Let(usize),
            Update(&'m check::Update),
            Cost(&'m check::Cost),
        }
        let mut items: Vec<(usize, Item)> = Vec::new();
        items.extend(m.lets.iter().enumerate().map(|(k, l)| (l.span.start, Item::Let(k))));
        items.extend(m.updates.iter().map(|u| (u.span.start, Item::Update(u))));
        items.extend(m.costs.iter().map(|c| (c.span.start, Item::Cost(c))));
        items.sort_by_key(|(start, _)| *start);
        let mut costs = Vec::new();
        for (_, item) in items {
            let stmt = match item {
                Item::Let(k) => {
                    let l = &m.lets[k];
                    let buffer = self.buffers.lets[k];
                    self.store(buffer, &l.dims, |this, env| this.expr(&l.value, env))
                }
                Item::Update(u) => {
                    let buffer = self.buffers.next[u.state];
                    let dims: Vec<check::Dimension> = m.states[u.state]
                        .dims
                        .iter()
                        .zip(&u.indices)
                        .map(|(d, name)| check::Dimension { set: d.set, index: Some(name.clone()) })
                        .collect();
                    if m.states[u.state].choice.is_some() {
                        let chooser = Chooser::State(u.state);
                        self.store(buffer, &dims, |this, env| this.choice_position(&u.value, chooser, env))
                    } else {
                        self.store(buffer, &dims, |this, env| this.expr(&u.value, env))
                    }
                }
                Item::Cost(c) => {
                    let id = self.buffer(c.name.clone(), BufferKind::Cost, &[], ElemType::Real);
                    costs.push(id);
                    let value = self.expr(&c.value, &Env::new());
                    Stmt::Store { buffer: id, index: Vec::new(), value }
                }
            };
            self.module.step.body.push(stmt);
        }
        self.terminal();
    }

    /// Each terminal cost, as a cost of the step that is 0 until the last period and then the
    /// cost of the next states (the final ones), written out from their updates. Charged in the
    /// last period, it is reported, discounted and differentiated with that period's costs.
    fn terminal(&mut self) {
        let m = self.model;
        let Some(period) = self.buffers.period else { return };
        for c in &m.terminal {
            let id = self.buffer(c.name.clone(), BufferKind::Cost, &[], ElemType::Real);
            self.final_states = true;
            let cost = self.expr(&c.value, &Env::new());
            self.final_states = false;
            let now = self.push(Expr::Load { buffer: period, index: Vec::new() }, c.span);
            let last = self.constant(m.horizon.saturating_sub(1) as f64, c.span);
            let cond = self.binary(BinaryOp::Eq, now, last, c.span);
            let zero = self.constant(0.0, c.span);
            let value = self.push(Expr::Select { cond, then: cost, otherwise: zero }, c.span);
            self.module.step.body.push(Stmt::Store { buffer: id, index: Vec::new(), value });
        }
    }

    fn fresh(&mut self) -> Var {
        self.next_var += 1;
        Var(self.next_var - 1)
    }

    /// `buffer[...] = value` inside one loop per dimension; the dimensions' index names are in
    /// scope for `value`.
    fn store(
        &mut self,
        buffer: BufferId,
        dims: &[check::Dimension],
        value: impl FnOnce(&mut Self, &Env) -> Handle<Expr>,
    ) -> Stmt {
        let mut env = Env::new();
        let mut loops = Vec::new();
        for d in dims {
            let var = self.fresh();
            // An anonymous dimension (`[I]`) still needs a variable; its name cannot be written.
            env.push((d.index.clone().unwrap_or_else(|| format!("#{}", var.0)), var));
            loops.push((var, d.set));
        }
        let value = value(self, &env);
        let mut stmt = Stmt::Store { buffer, index: loops.iter().map(|(v, _)| *v).collect(), value };
        for (var, set) in loops.into_iter().rev() {
            stmt = Stmt::For { var, set, body: vec![stmt] };
        }
        stmt
    }

    fn push(&mut self, e: Expr, span: crate::diagnostics::Span) -> Handle<Expr> {
        self.module.exprs.push(e, span)
    }

    fn constant(&mut self, value: f64, span: crate::diagnostics::Span) -> Handle<Expr> {
        self.push(Expr::Const(value), span)
    }

    fn unary(&mut self, op: UnaryOp, arg: Handle<Expr>, span: crate::diagnostics::Span) -> Handle<Expr> {
        self.push(Expr::Unary { op, arg }, span)
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        lhs: Handle<Expr>,
        rhs: Handle<Expr>,
        span: crate::diagnostics::Span,
    ) -> Handle<Expr> {
        self.push(Expr::Binary { op, lhs, rhs }, span)
    }

    /// A policy's rule for a labelled choice: a label's position, or an `if` choosing among them.
    fn label_value(&mut self, e: &ast::Expr, action: check::ActionId, env: &Env) -> Handle<Expr> {
        match &e.kind {
            ExprKind::Paren(inner) => self.label_value(inner, action, env),
            ExprKind::If { cond, then, otherwise } => {
                let cond = self.expr(cond, env);
                let then = self.label_value(then, action, env);
                let otherwise = self.label_value(otherwise, action, env);
                self.push(Expr::Select { cond, then, otherwise }, e.span)
            }
            ExprKind::Access { name, indices, .. } if indices.is_empty() => {
                let position = self.label_position(Chooser::Action(action), &name.name).map_or(f64::NAN, |p| p as f64);
                self.constant(position, e.span)
            }
            _ => self.expr(e, env),
        }
    }

    /// A value given to a choice state (its initial or next value), as the position of its
    /// label: a label's position, an `if` or `match` among them, or the value of a chooser with
    /// the same labels (for `choice[SET]`, an element less the set's first one).
    fn choice_position(&mut self, e: &ast::Expr, chooser: Chooser, env: &Env) -> Handle<Expr> {
        match &e.kind {
            ExprKind::Paren(inner) => self.choice_position(inner, chooser, env),
            ExprKind::If { cond, then, otherwise } => match self.model.decided.get(&e.span) {
                Some(true) => self.choice_position(then, chooser, env),
                Some(false) => self.choice_position(otherwise, chooser, env),
                None => {
                    let cond = self.expr(cond, env);
                    let then = self.choice_position(then, chooser, env);
                    let otherwise = self.choice_position(otherwise, chooser, env);
                    self.push(Expr::Select { cond, then, otherwise }, e.span)
                }
            },
            ExprKind::Access { name, indices, .. }
                if indices.is_empty()
                    && !env.iter().any(|(n, _)| *n == name.name)
                    && !matches!(self.model.symbols.get(&name.name), Some(Symbol::Action(_) | Symbol::State(_)))
                    && self.label_position(chooser, &name.name).is_some() =>
            {
                let position = self.label_position(chooser, &name.name).map_or(f64::NAN, |p| p as f64);
                self.constant(position, e.span)
            }
            _ => {
                let value = self.expr(e, env);
                match self.model.choice(chooser) {
                    Some((_, Some(set))) => {
                        let lo = self.model.sets.get(set).map_or(0, |s| s.lo);
                        if lo == 0 {
                            value
                        } else {
                            let lo = self.constant(lo as f64, e.span);
                            self.binary(BinaryOp::Sub, value, lo, e.span)
                        }
                    }
                    _ => value,
                }
            }
        }
    }

    /// A loaded choice as the language sees it: `choice[SET]` values are the set's elements,
    /// while the buffer holds positions; other loads are unchanged.
    fn choice_element(&mut self, load: Handle<Expr>, chooser: Chooser, span: crate::diagnostics::Span) -> Handle<Expr> {
        match self.model.choice(chooser) {
            Some((_, Some(set))) => {
                let lo = self.model.sets.get(set).map_or(0, |s| s.lo);
                if lo == 0 {
                    load
                } else {
                    let offset = self.constant(lo as f64, span);
                    self.binary(BinaryOp::Add, load, offset, span)
                }
            }
            _ => load,
        }
    }

    /// The discrete action or choice state an expression of choice type comes from.
    fn choice_of(&self, e: &ast::Expr) -> Option<Chooser> {
        match &e.kind {
            ExprKind::Access { name, .. } => match self.model.symbols.get(&name.name) {
                Some(Symbol::Action(a)) => Some(Chooser::Action(*a)),
                Some(Symbol::State(s)) => Some(Chooser::State(*s)),
                _ => None,
            },
            ExprKind::Paren(inner) => self.choice_of(inner),
            ExprKind::If { then, .. } => self.choice_of(then),
            ExprKind::Match { arms, .. } => arms.first().and_then(|a| self.choice_of(&a.value)),
            _ => None,
        }
    }

    /// The position of `label` among the labels of a chooser (`choice[SET]` labels are numbers).
    fn label_position(&self, chooser: Chooser, label: &str) -> Option<usize> {
        self.model.choice_label_position(chooser, label)
    }

    fn is_label(&self, e: &ast::Expr, env: &Env) -> Option<String> {
        match &e.kind {
            ExprKind::Access { name, primed: false, indices }
                if indices.is_empty()
                    && !env.iter().any(|(n, _)| *n == name.name)
                    && !self.model.symbols.contains_key(&name.name) =>
            {
                Some(name.name.clone())
            }
            _ => None,
        }
    }

    fn expr(&mut self, e: &ast::Expr, env: &Env) -> Handle<Expr> {
        let span = e.span;
        match &e.kind {
            ExprKind::Number { value, .. } => self.constant(*value, span),
            ExprKind::Bool(b) => self.constant(f64::from(u8::from(*b)), span),
            ExprKind::Paren(inner) => self.expr(inner, env),
            ExprKind::Error => self.constant(f64::NAN, span),
            ExprKind::Access { name, indices, .. } => self.access(&name.name, indices, env, span),
            ExprKind::Unary { op: ast::UnaryOp::Neg, operand } => {
                let arg = self.expr(operand, env);
                self.unary(UnaryOp::Neg, arg, span)
            }
            ExprKind::Unary { op: ast::UnaryOp::Not, operand } => {
                let arg = self.expr(operand, env);
                self.unary(UnaryOp::Not, arg, span)
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary_expr(*op, lhs, rhs, env, span),
            ExprKind::If { cond, then, otherwise } => {
                // Decided when the model was compiled: only the branch taken exists.
                match self.model.decided.get(&span) {
                    Some(true) => return self.expr(then, env),
                    Some(false) => return self.expr(otherwise, env),
                    None => {}
                }
                let cond = self.expr(cond, env);
                let then = self.expr(then, env);
                let otherwise = self.expr(otherwise, env);
                self.push(Expr::Select { cond, then, otherwise }, span)
            }
            ExprKind::Match { scrutinee, arms } => self.match_expr(scrutinee, arms, env, span),
            ExprKind::Reduce { op, binders, body } => {
                let op = match op {
                    ast::ReduceOp::Sum => ReduceOp::Sum,
                    ast::ReduceOp::Prod => ReduceOp::Prod,
                    ast::ReduceOp::Max => ReduceOp::Max,
                    ast::ReduceOp::Min => ReduceOp::Min,
                };
                let mut inner = env.clone();
                let mut vars = Vec::new();
                for b in binders {
                    let var = self.fresh();
                    let set = match self.model.symbols.get(&b.set.name) {
                        Some(Symbol::Set(s)) => *s,
                        _ => 0,
                    };
                    inner.push((b.var.name.clone(), var));
                    vars.push((var, set));
                }
                let mut body = self.expr(body, &inner);
                for (var, set) in vars.into_iter().rev() {
                    body = self.push(Expr::Reduce { op, var, set, body }, span);
                }
                body
            }
            ExprKind::Call { func, args } => self.call(&func.name, args, env, span),
        }
    }

    fn access(&mut self, name: &str, indices: &[ast::Expr], env: &Env, span: crate::diagnostics::Span) -> Handle<Expr> {
        if let Some((_, var)) = env.iter().rev().find(|(n, _)| n == name) {
            return self.push(Expr::Var(*var), span);
        }
        if let (true, Some(Symbol::State(s))) = (self.final_states, self.model.symbols.get(name)) {
            // The checker lets a terminal cost index a state only by index names in scope.
            if let Some(update) = self.model.updates.iter().find(|u| u.state == *s) {
                let mut inner = env.clone();
                for (index, name) in indices.iter().zip(&update.indices) {
                    if let ExprKind::Access { name: ix, .. } = &index.kind
                        && let Some((_, var)) = env.iter().rev().find(|(n, _)| *n == ix.name)
                    {
                        inner.push((name.clone(), *var));
                    }
                }
                self.final_states = false;
                let value = self.expr(&update.value, &inner);
                self.final_states = true;
                return value;
            }
        }
        if name == PERIOD
            && !self.model.symbols.contains_key(name)
            && let Some(period) = self.buffers.period
        {
            return self.push(Expr::Load { buffer: period, index: Vec::new() }, span);
        }
        let index: Vec<Handle<Expr>> = indices.iter().map(|i| self.expr(i, env)).collect();
        if let Some(&buffer) = self.locals.get(name) {
            return self.push(Expr::Load { buffer, index }, span);
        }
        let buffer = match self.model.symbols.get(name) {
            Some(Symbol::Size(s)) => {
                let value = self.model.sizes.get(*s).map_or(f64::NAN, |s| s.value as f64);
                return self.constant(value, span);
            }
            Some(Symbol::Param(p)) => self.buffers.params[*p],
            Some(Symbol::State(s)) => {
                let buffer = self.buffers.states[*s];
                let load = self.push(Expr::Load { buffer, index }, span);
                return self.choice_element(load, Chooser::State(*s), span);
            }
            Some(Symbol::Noise(n)) => self.buffers.noises[*n],
            Some(Symbol::Let(l)) => self.buffers.lets[*l],
            Some(Symbol::Action(a)) => {
                let buffer = self.buffers.actions[*a];
                let load = self.push(Expr::Load { buffer, index }, span);
                return self.choice_element(load, Chooser::Action(*a), span);
            }
            Some(Symbol::Set(_)) | None => return self.constant(f64::NAN, span),
        };
        self.push(Expr::Load { buffer, index }, span)
    }

    fn binary_expr(
        &mut self,
        op: ast::BinaryOp,
        lhs: &ast::Expr,
        rhs: &ast::Expr,
        env: &Env,
        span: crate::diagnostics::Span,
    ) -> Handle<Expr> {
        use ast::BinaryOp as A;
        if matches!(op, A::Eq | A::Ne) {
            // `order == buy`: the label is the position of `buy` among `order`'s labels.
            // A label of the choice on the other side is that label, even where a declared name
            // is spelt the same (the checker warned about it).
            let label_of = |this: &Self, side: &ast::Expr, other: &ast::Expr| -> Option<String> {
                let ExprKind::Access { name, primed: false, indices } = &side.kind else { return None };
                let action = this.choice_of(other)?;
                (indices.is_empty() && this.label_position(action, &name.name).is_some()).then(|| name.name.clone())
            };
            let labelled = match (
                label_of(self, lhs, rhs).or_else(|| self.is_label(lhs, env)),
                label_of(self, rhs, lhs).or_else(|| self.is_label(rhs, env)),
            ) {
                (None, Some(label)) => Some((lhs, label)),
                (Some(label), None) => Some((rhs, label)),
                _ => None,
            };
            if let Some((choice, label)) = labelled {
                let position = self.choice_of(choice).and_then(|a| self.label_position(a, &label));
                let value = self.expr(choice, env);
                let position = self.constant(position.map_or(f64::NAN, |p| p as f64), span);
                let op = if op == A::Eq { BinaryOp::Eq } else { BinaryOp::Ne };
                return self.binary(op, value, position, span);
            }
        }
        let a = self.expr(lhs, env);
        let b = self.expr(rhs, env);
        self.binary(op.operation(), a, b, span)
    }

    /// A `match` becomes a chain of selects on the label's position, tested in arm order; the
    /// last arm (or `_`) needs no test because the checker proved the match exhaustive.
    fn match_expr(
        &mut self,
        scrutinee: &ast::Expr,
        arms: &[ast::MatchArm],
        env: &Env,
        span: crate::diagnostics::Span,
    ) -> Handle<Expr> {
        let action = self.choice_of(scrutinee);
        let value = self.expr(scrutinee, env);
        let over_set = action.and_then(|a| self.model.choice(a)).and_then(|(_, set)| set);
        let mut tests = Vec::new();
        let mut default = None;
        for arm in arms {
            let result = self.expr(&arm.value, env);
            let key = match &arm.pattern {
                ast::Pattern::Wildcard(_) => {
                    default = Some(result);
                    break;
                }
                ast::Pattern::Label(l) => action.and_then(|a| self.label_position(a, &l.name)).map(|p| p as f64),
                // `choice[SET]` arms are elements of the set, which is also the loaded value.
                ast::Pattern::Number(n, _) if over_set.is_some() => Some(*n as f64),
                ast::Pattern::Number(..) => None,
            };
            tests.push((key.unwrap_or(f64::NAN), result));
        }
        let mut chain = match default {
            Some(d) => d,
            None => match tests.pop() {
                Some((_, last)) => last,
                None => self.constant(f64::NAN, span),
            },
        };
        for (key, result) in tests.into_iter().rev() {
            let key = self.constant(key, span);
            let cond = self.binary(BinaryOp::Eq, value, key, span);
            chain = self.push(Expr::Select { cond, then: result, otherwise: chain }, span);
        }
        chain
    }

    fn call(&mut self, name: &str, args: &[ast::Expr], env: &Env, span: crate::diagnostics::Span) -> Handle<Expr> {
        if name == "truncated" {
            // `truncated(dist(args), lo, hi)`: one sample node with the truncation attached.
            if let (Some(ast::Expr { kind: ExprKind::Call { func, args: inner }, .. }), Some(lo), Some(hi)) =
                (args.first(), args.get(1), args.get(2))
                && let Some(dist) = builtins::distribution(&func.name).map(|d| d.dist)
            {
                let values: Vec<Handle<Expr>> = inner.iter().map(|a| self.expr(a, env)).collect();
                let lo = self.expr(lo, env);
                let hi = self.expr(hi, env);
                return self.push(Expr::Sample { dist, args: values, truncate: Some((lo, hi)) }, span);
            }
            return self.constant(f64::NAN, span);
        }
        let values: Vec<Handle<Expr>> = args.iter().map(|a| self.expr(a, env)).collect();
        if let Some(d) = builtins::distribution(name) {
            return self.push(Expr::Sample { dist: d.dist, args: values, truncate: None }, span);
        }
        let (Some(function), Some(&x)) = (builtins::function(name), values.first()) else {
            return self.constant(f64::NAN, span);
        };
        match (function.lowering, values.as_slice()) {
            (builtins::Lowering::Unary(op), _) => self.unary(op, x, span),
            (builtins::Lowering::Binary(op), [_, y]) => self.binary(op, x, *y, span),
            (builtins::Lowering::Fold(op), [_, rest @ ..]) => {
                rest.iter().fold(x, |acc, v| self.binary(op, acc, *v, span))
            }
            (builtins::Lowering::Clamp, [_, lo, hi]) => {
                let above = self.binary(BinaryOp::Max, x, *lo, span);
                self.binary(BinaryOp::Min, above, *hi, span)
            }
            _ => self.constant(f64::NAN, span),
        }
    }
}

/// Whether a store's value loads a discrete action.
fn reads_discrete(module: &Module, stmt: &Stmt) -> bool {
    fn expr(module: &Module, h: Handle<Expr>) -> bool {
        match &module.exprs[h] {
            Expr::Load { buffer, .. } if module.buffers[*buffer].kind == BufferKind::Discrete => true,
            node => node.children().into_iter().any(|c| expr(module, c)),
        }
    }
    match stmt {
        Stmt::For { body, .. } => body.iter().any(|s| reads_discrete(module, s)),
        Stmt::Store { value, .. } => expr(module, *value),
        Stmt::If { .. } | Stmt::Accumulate { .. } => false,
    }
}
