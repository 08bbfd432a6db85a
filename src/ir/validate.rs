//! The IR validator: [`validate`] checks a [`Module`] against the invariants that `ir/mod.rs`
//! documents and returns every violation it finds, each a sentence naming the program,
//! statement, buffer or node (`%12`) it is about. Run it on every module a pass or the lowering
//! produces (tests do); a backend takes a validated module and never defends against malformed
//! IR. When you add an invariant to the IR docs, add its check here and a test that breaks it.
//!
//! The checks, in the order they run:
//!
//! - **Settings**: `horizon >= 1`, `warmup < horizon`, `0 < discount <= 1`, every `report per`
//!   size positive.
//! - **Sets**: non-empty (`lo < hi`), named, names unique.
//! - **Buffers**: named, names unique; dimensions are existing sets; only discrete actions have
//!   labels, and they have at least one, all distinct (a state may have labels: a choice state,
//!   which has no adjoint, nor has its next state); only params have `data`, with
//!   `module.len(id)` finite values; `Next { of }` names a state with the same dimensions, and
//!   every state has exactly one `Next`; `Bound` and `Regime` name a continuous action with the
//!   same dimensions, at most one lower bound, one upper bound and one regime mask per action; a
//!   cost is a scalar; `Adjoint { of }` names a state, continuous action, let, next state or
//!   cost with the same dimensions, holds reals, and each buffer has at most one adjoint; no
//!   `SumBound` is left (the reformulation turns each into the bound of a total).
//! - **Expression nodes** (the whole arena, used or not): a node refers only to *earlier* nodes
//!   (lower handles). `Arena::push` returns handles in push order and children are pushed before
//!   their parents, so this rule holds for any arena built bottom-up, and it makes the graph
//!   acyclic and every handle in range by construction. Loads name an existing buffer with one
//!   index per dimension; reductions an existing set; constants are finite; a sample has the
//!   argument count of its [`Dist`] (`Categorical` at least one); a reduction (`argmax` and
//!   `argmin` included) does not contain another reduction over the same variable.
//! - **Programs**, statement by statement: a `for` runs over an existing set and does not rebind
//!   an enclosing loop variable; a store writes a buffer of a kind its program writes (the table
//!   in `ir/mod.rs`; `vjp` stores what `step` stores, `regimes` may store a bound); its index has one variable per dimension
//!   and the enclosing loops are exactly those variables, outermost first, each over that
//!   dimension's set, and no `if` encloses it (so every element is stored exactly once); every
//!   expression a statement evaluates (a store's value, an `if`'s condition, an accumulation's
//!   indices and value) uses only variables bound by an enclosing loop or reduction, no
//!   reduction in it rebinds a loop variable; it loads only what its program reads, and params
//!   (in `instance`), lets and costs (in `step` and `vjp`) only after the statement that stores
//!   them; it samples only in `instance`, `init` and `noise`. `if` and `accumulate` appear only
//!   in `vjp`; an `if` binds nothing; an accumulation targets an existing adjoint with one index
//!   expression per dimension (their range is checked at run time).
//! - **Writes**: every param without data, state, noise, next state, let, cost, bound and regime
//!   mask is stored by exactly one statement of its program; discrete and continuous actions,
//!   params with data and adjoints by none. When `vjp` is not empty (a differentiated module), it
//!   also stores every next state, let and cost exactly once, as `step` does.
//! - **Observe**: existing params, states and lets, each once; an observed let is stored by `bounds`
//!   (before the decision) as well as by `step`. `bounds` may store a let at most once, and only
//!   from params, states and lets it stored before. The period index (the noise `period`, see
//!   [`super::PERIOD`]) may be observed too; no program stores it.
//!
//! Variables: the rule is "no variable is bound twice in nested scope", so sibling loops may
//! reuse `v0`, and a node shared by two statements may sit under reductions in both. It holds in
//! `vjp` too, with no exception for shadowing: a backend may keep one slot per variable, so a
//! reduction over `v8` evaluated inside `for v8` would leave the loop's `v8` changed.

// The validator's input is by definition possibly malformed: it must not panic on any module.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use super::{Buffer, BufferId, BufferKind, Dist, ElemType, Expr, Handle, Module, Program, ReduceOp, SetId, Stmt, Var};

/// Checks the invariants documented in [`super`] and in this module's doc; returns every
/// violation, one message each.
pub fn validate(module: &Module) -> Result<(), Vec<String>> {
    let mut validator = Validator { module, errors: Vec::new(), early_lets: vec![0; module.buffers.len()] };
    validator.settings();
    validator.sets();
    validator.buffers();
    let nodes = validator.nodes();
    validator.programs(&nodes);
    validator.observe();
    if validator.errors.is_empty() { Ok(()) } else { Err(validator.errors) }
}

/// A module the validator accepted: the only kind a backend takes, so an unvalidated module
/// cannot reach one. It reads as the [`Module`] it holds; changing it means validating again
/// ([`ValidModule::into_inner`], then [`ValidModule::new`]).
#[derive(Clone, Debug)]
pub struct ValidModule(Module);

impl ValidModule {
    /// Validates `module`; the errors say which invariant is broken where.
    pub fn new(module: Module) -> Result<ValidModule, Vec<String>> {
        validate(&module)?;
        Ok(ValidModule(module))
    }

    /// The module, to transform it (and validate it again).
    pub fn into_inner(self) -> Module {
        self.0
    }
}

impl std::ops::Deref for ValidModule {
    type Target = Module;

    fn deref(&self) -> &Module {
        &self.0
    }
}

/// The eight programs, in the order a run executes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Instance,
    Init,
    Noise,
    Bounds,
    Regimes,
    Step,
    Vjp,
    BoundsVjp,
}

impl Stage {
    const ALL: [Stage; 8] = [
        Stage::Instance,
        Stage::Init,
        Stage::Noise,
        Stage::Bounds,
        Stage::Regimes,
        Stage::Step,
        Stage::Vjp,
        Stage::BoundsVjp,
    ];

    fn program(self, module: &Module) -> &Program {
        match self {
            Stage::Instance => &module.instance,
            Stage::Init => &module.init,
            Stage::Noise => &module.noise,
            Stage::Bounds => &module.bounds,
            Stage::Regimes => &module.regimes,
            Stage::Step => &module.step,
            Stage::Vjp => &module.vjp,
            Stage::BoundsVjp => &module.bounds_vjp,
        }
    }

    /// The program that stores a buffer, or `None` when no program does (the policy sets actions,
    /// the data file sets params with data, `vjp` only accumulates into adjoints). `vjp` also
    /// stores what `step` stores: see [`Stage::stores`].
    fn writer(buffer: &Buffer) -> Option<Stage> {
        match buffer.kind {
            BufferKind::Param if buffer.data.is_some() => None,
            BufferKind::Param => Some(Stage::Instance),
            BufferKind::State => Some(Stage::Init),
            // The period index is set by the protocol.
            BufferKind::Noise if buffer.name == super::PERIOD && buffer.dims.is_empty() => None,
            BufferKind::Noise => Some(Stage::Noise),
            BufferKind::Bound { .. } => Some(Stage::Bounds),
            BufferKind::PieceBound { .. } => Some(Stage::Regimes),
            // Refused below: `passes::reformulate` turns it into a bound before any backend runs.
            BufferKind::SumBound { .. } => Some(Stage::Bounds),
            BufferKind::Regime { .. } => Some(Stage::Regimes),
            BufferKind::Next { .. } | BufferKind::Let | BufferKind::Cost => Some(Stage::Step),
            BufferKind::Discrete | BufferKind::Continuous | BufferKind::Adjoint { .. } => None,
        }
    }

    /// Whether this program stores what `writer` stores: its own buffers, for `vjp`, which
    /// recomputes the step, the step's, and for `regimes`, the bounds that read a discrete action.
    fn stores(self, writer: Stage) -> bool {
        writer == self
            || (self == Stage::Vjp && writer == Stage::Step)
            || (self == Stage::Regimes && writer == Stage::Bounds)
    }

    /// What the program may load, as the table in `ir/mod.rs` says, for messages.
    fn reads(self) -> &'static str {
        match self {
            Stage::Instance => "params stored earlier or given as data",
            Stage::Init | Stage::Noise => "params",
            Stage::Bounds => "params, states, and lets stored earlier in bounds",
            Stage::Regimes => "params, states and discrete actions",
            Stage::Step => "params, states, noise, actions, and lets and costs stored earlier in the step",
            Stage::Vjp => "params, states, noise, actions, adjoints, and lets and costs stored earlier in vjp",
            Stage::BoundsVjp => "params, states, discrete actions, lets, bounds, piece bounds and adjoints",
        }
    }

    /// Whether the program may load `buffer`; `stored` says whether an earlier statement of the
    /// same program stored it.
    fn may_read(self, buffer: &Buffer, stored: bool) -> bool {
        match (self, buffer.kind) {
            (Stage::Instance, BufferKind::Param) => buffer.data.is_some() || stored,
            (_, BufferKind::Param) => true,
            (Stage::Bounds | Stage::Regimes | Stage::Step | Stage::Vjp | Stage::BoundsVjp, BufferKind::State) => true,
            (Stage::Regimes | Stage::Step | Stage::Vjp | Stage::BoundsVjp, BufferKind::Discrete) => true,
            (
                Stage::BoundsVjp,
                BufferKind::Bound { .. } | BufferKind::PieceBound { .. } | BufferKind::Adjoint { .. },
            ) => true,
            (Stage::Step | Stage::Vjp, BufferKind::Noise | BufferKind::Continuous) => true,
            (Stage::Step | Stage::Vjp, BufferKind::Let | BufferKind::Cost) => stored,
            // The lets the policy observes, stored by `bounds` before the decision.
            (Stage::Bounds, BufferKind::Let) => stored,
            (Stage::Vjp, BufferKind::Adjoint { .. }) => true,
            // The lets `bounds` stores (those the policy observes), which hold their values.
            (Stage::BoundsVjp, BufferKind::Let) => true,
            _ => false,
        }
    }

    fn may_sample(self) -> bool {
        matches!(self, Stage::Instance | Stage::Init | Stage::Noise)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Instance => "instance",
            Stage::Init => "init",
            Stage::Noise => "noise",
            Stage::Bounds => "bounds",
            Stage::Regimes => "regimes",
            Stage::Step => "step",
            Stage::Vjp => "vjp",
            Stage::BoundsVjp => "bounds_vjp",
        })
    }
}

/// How a message names a buffer's kind: "state `onhand`".
fn kind_word(kind: &BufferKind) -> &'static str {
    match kind {
        BufferKind::Param => "param",
        BufferKind::State => "state",
        BufferKind::Next { .. } => "next state",
        BufferKind::Noise => "noise",
        BufferKind::Discrete => "discrete action",
        BufferKind::Continuous => "continuous action",
        BufferKind::Bound { .. } => "bound",
        BufferKind::PieceBound { .. } => "piece bound",
        BufferKind::SumBound { .. } => "bound on a sum",
        BufferKind::Regime { .. } => "regime mask",
        BufferKind::Let => "let",
        BufferKind::Cost => "cost",
        BufferKind::Adjoint { .. } => "adjoint",
    }
}

/// The operands of a node, in the order they are pushed (and printed).
fn operands(expr: &Expr) -> Vec<Handle<Expr>> {
    expr.children()
}

/// The number of arguments a distribution takes, or the least for `Categorical`.
fn arity(dist: Dist) -> (usize, bool) {
    match dist {
        Dist::Poisson | Dist::Bernoulli => (1, false),
        Dist::Categorical => (1, true),
        Dist::Uniform | Dist::Normal | Dist::LogNormal | Dist::Binomial | Dist::NegBinomial | Dist::Gamma => (2, false),
    }
}

/// What the arena-wide pass learns about each node, for the per-store checks.
struct Nodes {
    /// Variables a node uses that no reduction inside it binds.
    free: Vec<BTreeSet<Var>>,
}

struct Validator<'m> {
    module: &'m Module,
    errors: Vec<String>,
    /// Stores per let by `bounds`, which computes the observed lets before the decision.
    early_lets: Vec<usize>,
}

impl Validator<'_> {
    fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    fn buffer_name(&self, id: BufferId) -> String {
        self.module.buffers.get(id).map_or_else(|| format!("#{id}"), |b| b.name.clone())
    }

    fn set_name(&self, id: SetId) -> String {
        self.module.sets.get(id).map_or_else(|| format!("#{id}"), |s| s.name.clone())
    }

    /// How messages name a statement: "step: store to `post`", "vjp: accumulate into `x.adj`",
    /// "vjp: `if` on %12", "vjp: `for v0 in I`".
    fn context(&self, stage: Stage, stmt: &Stmt) -> String {
        match stmt {
            Stmt::For { var, set, .. } => format!("{stage}: `for v{} in {}`", var.0, self.set_name(*set)),
            Stmt::Store { buffer, .. } => format!("{stage}: store to `{}`", self.buffer_name(*buffer)),
            Stmt::If { cond, .. } => format!("{stage}: `if` on {cond:?}"),
            Stmt::Accumulate { buffer, .. } => format!("{stage}: accumulate into `{}`", self.buffer_name(*buffer)),
        }
    }

    fn settings(&mut self) {
        let m = self.module;
        if m.horizon < 1 {
            self.error("horizon is 0; a run needs at least one period".into());
        }
        if m.warmup >= m.horizon {
            self.error(format!(
                "warmup {} is not less than horizon {}: no period would be reported",
                m.warmup, m.horizon
            ));
        }
        if !(m.discount > 0.0 && m.discount <= 1.0) {
            self.error(format!("discount {:?} is not in (0, 1]", m.discount));
        }
        for (name, size) in &m.report.per_size {
            if *size <= 0 {
                self.error(format!("report per `{name}`: size {size} is not positive"));
            }
        }
    }

    fn sets(&mut self) {
        let sets = &self.module.sets;
        let mut names = HashSet::new();
        for (id, set) in sets.iter().enumerate() {
            if set.name.is_empty() {
                self.error(format!("set #{id} has no name"));
            }
            if !names.insert(set.name.as_str()) {
                self.error(format!("set `{}` is declared twice", set.name));
            }
            if set.lo > set.hi {
                self.error(format!(
                    "set `{}` = {}..{} is reversed; an empty set is written `lo..lo`",
                    set.name, set.lo, set.hi
                ));
            }
        }
    }

    fn buffers(&mut self) {
        let m = self.module;
        let mut names = HashSet::new();
        for (id, buffer) in m.buffers.iter().enumerate() {
            let what = format!("{} `{}`", kind_word(&buffer.kind), buffer.name);
            if buffer.name.is_empty() {
                self.error(format!("buffer #{id} has no name"));
            }
            if !names.insert(buffer.name.as_str()) {
                self.error(format!("{what}: another buffer has the same name"));
            }
            for (axis, set) in buffer.dims.iter().enumerate() {
                if m.sets.get(*set).is_none() {
                    self.error(format!("{what}: dimension {axis} is set #{set}, which does not exist"));
                }
            }
            self.labels(buffer, &what);
            self.data(buffer, &what);
            match buffer.kind {
                BufferKind::Next { of } => self.partner(buffer, &what, of, "state", |k| *k == BufferKind::State),
                BufferKind::Bound { action, .. }
                | BufferKind::PieceBound { action, .. }
                | BufferKind::Regime { action } => {
                    self.partner(buffer, &what, action, "continuous action", |k| *k == BufferKind::Continuous)
                }
                BufferKind::Cost if !buffer.dims.is_empty() => {
                    self.error(format!("{what} has {} dimensions; a cost is a scalar", buffer.dims.len()))
                }
                // No backend or policy keeps a bound on a sum: the reformulation splits its action
                // into a total that this bound bounds and shares.
                BufferKind::SumBound { .. } => self.error(format!(
                    "{what} is left: passes::reformulate must split its action into a total and shares first"
                )),
                BufferKind::Adjoint { of } => {
                    let kinds = "state, continuous action, let, next state, cost, bound or piece bound";
                    self.partner(buffer, &what, of, kinds, |k| {
                        matches!(
                            k,
                            BufferKind::State
                                | BufferKind::Continuous
                                | BufferKind::Let
                                | BufferKind::Next { .. }
                                | BufferKind::Cost
                                | BufferKind::Bound { .. }
                                | BufferKind::PieceBound { .. }
                        )
                    });
                    if buffer.elem != ElemType::Real {
                        self.error(format!("{what} holds {:?} elements; an adjoint holds reals", buffer.elem));
                    }
                    let of_state = m
                        .buffers
                        .get(of)
                        .is_some_and(|b| matches!(b.kind, BufferKind::State | BufferKind::Next { .. }));
                    if of_state && !m.is_differentiable(of) {
                        self.error(format!("{what}: a choice state and its next state have no adjoint"));
                    }
                }
                _ => {}
            }
        }
        self.partners_unique();
    }

    fn labels(&mut self, buffer: &Buffer, what: &str) {
        if matches!(buffer.kind, BufferKind::Discrete | BufferKind::State) {
            if buffer.labels.is_empty() && buffer.kind == BufferKind::Discrete {
                self.error(format!("{what} has no labels"));
            }
            let mut seen = HashSet::new();
            for label in &buffer.labels {
                if !seen.insert(label.as_str()) {
                    self.error(format!("{what}: label `{label}` appears twice"));
                }
            }
        } else if !buffer.labels.is_empty() {
            self.error(format!("{what} has labels; only a discrete action or a state has labels"));
        }
    }

    fn data(&mut self, buffer: &Buffer, what: &str) {
        let Some(data) = &buffer.data else { return };
        if buffer.kind != BufferKind::Param {
            self.error(format!("{what} has data; only a param may be given as data"));
        }
        match elements(self.module, buffer) {
            Some(elements) if elements == data.len() => {}
            Some(elements) => self.error(format!("{what} has {} data values for {elements} elements", data.len())),
            None => self.error(format!("{what} has {} data values for more elements than a machine holds", data.len())),
        }
        if let Some((at, value)) = data.iter().enumerate().find(|(_, value)| !value.is_finite()) {
            self.error(format!("{what}: data value {at} is {value:?}, not a finite number"));
        }
    }

    /// Checks that `of` (the state of a next state, the action of a bound or regime mask, the
    /// buffer of an adjoint) exists, has the expected kind and the same dimensions as `buffer`.
    fn partner(&mut self, buffer: &Buffer, what: &str, of: BufferId, expected: &str, is: fn(&BufferKind) -> bool) {
        let Some(partner) = self.module.buffers.get(of) else {
            self.error(format!("{what} is of buffer #{of}, which does not exist"));
            return;
        };
        if !is(&partner.kind) {
            self.error(format!("{what} is of {} `{}`, not of a {expected}", kind_word(&partner.kind), partner.name));
        } else if partner.dims != buffer.dims {
            self.error(format!(
                "{what} has dimensions [{}] but its {} `{}` has [{}]",
                self.set_list(&buffer.dims),
                kind_word(&partner.kind),
                partner.name,
                self.set_list(&partner.dims)
            ));
        }
    }

    fn set_list(&self, dims: &[SetId]) -> String {
        dims.iter().map(|d| self.set_name(*d)).collect::<Vec<_>>().join(", ")
    }

    /// One next state per state; at most one lower bound, one upper bound, one regime mask per
    /// continuous action; at most one adjoint per buffer.
    fn partners_unique(&mut self) {
        let m = self.module;
        // Buffers per kind, counted once: a search per buffer would be quadratic in the buffers.
        let mut of_kind: HashMap<BufferKind, usize> = HashMap::new();
        for b in &m.buffers {
            *of_kind.entry(b.kind).or_default() += 1;
        }
        let count = |kind: BufferKind| of_kind.get(&kind).copied().unwrap_or(0);
        for (id, buffer) in m.buffers.iter().enumerate() {
            let nexts = count(BufferKind::Next { of: id });
            if buffer.kind == BufferKind::State && nexts != 1 {
                self.error(format!("state `{}` has {nexts} next states; it needs exactly one", buffer.name));
            }
            let adjoints = count(BufferKind::Adjoint { of: id });
            if adjoints > 1 {
                self.error(format!(
                    "{} `{}` has {adjoints} adjoints; it may have one",
                    kind_word(&buffer.kind),
                    buffer.name
                ));
            }
            if buffer.kind != BufferKind::Continuous {
                continue;
            }
            for (kind, word) in [
                (BufferKind::Bound { action: id, upper: false }, "lower bounds"),
                (BufferKind::Bound { action: id, upper: true }, "upper bounds"),
                (BufferKind::PieceBound { action: id, upper: false }, "lower piece bounds"),
                (BufferKind::PieceBound { action: id, upper: true }, "upper piece bounds"),
                (BufferKind::Regime { action: id }, "regime masks"),
            ] {
                let n = count(kind);
                if n > 1 {
                    self.error(format!("continuous action `{}` has {n} {word}; it may have one", buffer.name));
                }
            }
        }
    }

    /// The arena-wide checks, and what the per-store checks need to know about each node.
    fn nodes(&mut self) -> Nodes {
        let m = self.module;
        let count = m.exprs.len();
        // Messages about a node name the first statement that uses it, so a reader can find it.
        let mut owner: Vec<Option<String>> = vec![None; count];
        for stage in Stage::ALL {
            for_each_stmt(&stage.program(m).body, &mut |stmt| {
                let roots = roots(stmt);
                if roots.is_empty() {
                    return;
                }
                let context = self.context(stage, stmt);
                for node in roots.into_iter().flat_map(|root| reachable(m, root)) {
                    if let Some(slot @ None) = owner.get_mut(node.index()) {
                        *slot = Some(context.clone());
                    }
                }
            });
        }

        let mut free: Vec<BTreeSet<Var>> = Vec::with_capacity(count);
        let mut bound_inside: Vec<BTreeSet<Var>> = Vec::with_capacity(count);
        for (handle, expr) in m.exprs.iter() {
            let at = match owner.get(handle.index()).cloned().flatten() {
                Some(context) => format!("{context}: {handle:?}"),
                None => format!("{handle:?} (used by no statement)"),
            };
            let mut uses = BTreeSet::new();
            let mut binds = BTreeSet::new();
            for operand in operands(expr) {
                if operand.index() >= count {
                    self.error(format!("{at} refers to {operand:?}, which is out of range ({count} nodes)"));
                } else if operand.index() >= handle.index() {
                    self.error(format!(
                        "{at} refers to {operand:?}, which is not an earlier node (operands come first, so the \
                         graph has no cycle)"
                    ));
                } else {
                    uses.extend(free.get(operand.index()).into_iter().flatten().copied());
                    binds.extend(bound_inside.get(operand.index()).into_iter().flatten().copied());
                }
            }
            match expr {
                // Infinite constants are allowed (the bound of an unbounded piece), NaN never.
                Expr::Const(value) if value.is_nan() => {
                    self.error(format!("{at} is the constant {value:?}, not a number"))
                }
                Expr::Var(var) => {
                    uses.insert(*var);
                }
                Expr::Load { buffer, index } => match m.buffers.get(*buffer) {
                    None => self.error(format!("{at} loads buffer #{buffer}, which does not exist")),
                    Some(b) if b.dims.len() != index.len() => self.error(format!(
                        "{at} loads `{}` with {} for {}",
                        b.name,
                        count_of(index.len(), "index", "indices"),
                        count_of(b.dims.len(), "dimension", "dimensions")
                    )),
                    Some(_) => {}
                },
                Expr::Reduce { op, var, set, .. } => {
                    match m.sets.get(*set) {
                        None => self.error(format!("{at} reduces over set #{set}, which does not exist")),
                        Some(s) if s.is_empty() && !matches!(op, ReduceOp::Sum | ReduceOp::Prod) => {
                            self.error(format!(
                                "{at} takes {op:?} over the empty set `{}`, which has no value",
                                s.name
                            ));
                        }
                        Some(_) => {}
                    }
                    if binds.contains(var) {
                        self.error(format!(
                            "{at} reduces over v{} inside a reduction that binds v{} again",
                            var.0, var.0
                        ));
                    }
                    uses.remove(var);
                    binds.insert(*var);
                }
                Expr::Sample { dist, args, .. } => {
                    let (want, at_least) = arity(*dist);
                    if args.len() != want && !(at_least && args.len() > want) {
                        let want = if at_least { format!("at least {want}") } else { want.to_string() };
                        self.error(format!(
                            "{at} samples {dist:?} with {}; it takes {want}",
                            count_of(args.len(), "argument", "arguments")
                        ));
                    }
                }
                _ => {}
            }
            free.push(uses);
            bound_inside.push(binds);
        }
        Nodes { free }
    }

    fn programs(&mut self, nodes: &Nodes) {
        let m = self.module;
        // Stores per buffer by the program that writes it; `vjp`'s, which repeat the step's, apart.
        let mut stores = vec![0usize; m.buffers.len()];
        let mut vjp_stores = vec![0usize; m.buffers.len()];
        for stage in Stage::ALL {
            let counts = if stage == Stage::Vjp { &mut vjp_stores } else { &mut stores };
            let mut walk = Walk {
                stage,
                loops: Vec::new(),
                conditional: false,
                stored: vec![false; m.buffers.len()],
                stores: counts,
            };
            walk.stmts(self, nodes, &stage.program(m).body);
        }
        for (id, buffer) in m.buffers.iter().enumerate() {
            if let Some(&n) = self.early_lets.get(id).filter(|&&n| n > 1) {
                self.error(format!("let `{}` is stored by {n} statements of bounds; at most one", buffer.name));
            }
            let Some(stage) = Stage::writer(buffer) else { continue };
            self.stored_once(buffer, stage, stores.get(id).copied().unwrap_or(0));
            // A differentiated module's `vjp` recomputes the step before it differentiates it.
            if stage == Stage::Step && !m.vjp.body.is_empty() {
                self.stored_once(buffer, Stage::Vjp, vjp_stores.get(id).copied().unwrap_or(0));
            }
        }
    }

    fn stored_once(&mut self, buffer: &Buffer, stage: Stage, count: usize) {
        let what = format!("{} `{}`", kind_word(&buffer.kind), buffer.name);
        match count {
            1 => {}
            0 if stage == Stage::Vjp => {
                self.error(format!("{what} is never stored by vjp; a non-empty vjp recomputes what step stores"))
            }
            0 => self.error(format!("{what} is never stored by {stage}")),
            n => self.error(format!("{what} is stored by {n} statements of {stage}; it must be stored by exactly one")),
        }
    }

    fn observe(&mut self) {
        let m = self.module;
        let mut listed = HashSet::new();
        for id in &m.observe {
            match m.buffers.get(*id) {
                None => self.error(format!("observe lists buffer #{id}, which does not exist")),
                Some(b)
                if !matches!(b.kind, BufferKind::State | BufferKind::Param | BufferKind::Let)
                    && !(b.kind == BufferKind::Noise && b.name == super::PERIOD) =>
            {
                    self.error(format!(
                        "observe lists {} `{}`; the policy observes only states, params and lets",
                        kind_word(&b.kind),
                        b.name
                    ))
                }
                Some(b) if b.kind == BufferKind::Let && self.early_lets.get(*id) != Some(&1) => self.error(format!(
                    "observe lists let `{}`, which bounds does not store; an observed let is computed before the decision",
                    b.name
                )),
                Some(b) if !listed.insert(*id) => self.error(format!("observe lists `{}` twice", b.name)),
                Some(_) => {}
            }
        }
    }
}

/// `module.len(id)`, computed without overflow: `Set::len` subtracts and `Module::len`
/// multiplies unchecked, which panics in a debug build on sets such as `i64::MIN..i64::MAX`.
/// `None` when the count does not fit a `usize` (or a dimension does not exist, reported apart).
fn elements(module: &Module, buffer: &Buffer) -> Option<usize> {
    buffer.dims.iter().try_fold(1usize, |product, dim| {
        let set = module.sets.get(*dim)?;
        let len = usize::try_from(set.hi.checked_sub(set.lo)?.max(0)).ok()?;
        product.checked_mul(len)
    })
}

fn count_of(n: usize, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// Calls `visit` on every statement in `stmts` and in the bodies inside them, in program order.
fn for_each_stmt(stmts: &[Stmt], visit: &mut dyn FnMut(&Stmt)) {
    for stmt in stmts {
        visit(stmt);
        match stmt {
            Stmt::For { body, .. } => for_each_stmt(body, visit),
            Stmt::If { then, otherwise, .. } => {
                for_each_stmt(then, visit);
                for_each_stmt(otherwise, visit);
            }
            Stmt::Store { .. } | Stmt::Accumulate { .. } => {}
        }
    }
}

/// The expressions a statement itself evaluates (not those of the statements inside it), in
/// the order `text::parse` creates them.
fn roots(stmt: &Stmt) -> Vec<Handle<Expr>> {
    match stmt {
        Stmt::For { .. } => Vec::new(),
        Stmt::Store { value, .. } => vec![*value],
        Stmt::If { cond, .. } => vec![*cond],
        Stmt::Accumulate { index, value, .. } => index.iter().copied().chain([*value]).collect(),
    }
}

/// The nodes reachable from `root`, each once, following only operands that are earlier nodes
/// (the others are reported by the arena-wide pass). Iterative, so deep trees cannot overflow
/// the stack.
fn reachable(module: &Module, root: Handle<Expr>) -> Vec<Handle<Expr>> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    let mut pending = vec![root];
    while let Some(handle) = pending.pop() {
        let Some(expr) = module.exprs.get(handle) else { continue };
        if !seen.insert(handle.index()) {
            continue;
        }
        found.push(handle);
        pending.extend(operands(expr).into_iter().filter(|operand| operand.index() < handle.index()));
    }
    found
}

/// The walk over one program's statements: the enclosing loops, and which buffers an earlier
/// statement of this program stored.
struct Walk<'s> {
    stage: Stage,
    loops: Vec<(Var, SetId)>,
    /// Whether an `if` encloses the statement.
    conditional: bool,
    stored: Vec<bool>,
    /// Stores per buffer by a program that stores it (see [`Stage::stores`]).
    stores: &'s mut Vec<usize>,
}

impl Walk<'_> {
    fn stmts(&mut self, v: &mut Validator<'_>, nodes: &Nodes, stmts: &[Stmt]) {
        for stmt in stmts {
            let stage = self.stage;
            match stmt {
                Stmt::For { var, set, body } => {
                    if v.module.sets.get(*set).is_none() {
                        v.error(format!("{stage}: `for v{}` runs over set #{set}, which does not exist", var.0));
                    }
                    if self.loops.iter().any(|(outer, _)| outer == var) {
                        v.error(format!(
                            "{stage}: `for v{} in {}` rebinds v{}, already bound by an enclosing loop",
                            var.0,
                            v.set_name(*set),
                            var.0
                        ));
                    }
                    self.loops.push((*var, *set));
                    self.stmts(v, nodes, body);
                    self.loops.pop();
                }
                Stmt::Store { buffer, index, value } => self.store(v, nodes, *buffer, index, *value),
                Stmt::If { cond, then, otherwise } => {
                    let at = v.context(stage, stmt);
                    if !matches!(stage, Stage::Vjp | Stage::BoundsVjp) {
                        v.error(format!("{at}: only vjp and bounds_vjp have `if` statements"));
                    }
                    self.expr(v, nodes, &at, "the condition", *cond);
                    // An `if` binds nothing: its branches see the enclosing loops only.
                    let outer = std::mem::replace(&mut self.conditional, true);
                    self.stmts(v, nodes, then);
                    self.stmts(v, nodes, otherwise);
                    self.conditional = outer;
                }
                Stmt::Accumulate { buffer, index, value } => {
                    let at = v.context(stage, stmt);
                    self.accumulate(v, nodes, &at, *buffer, index, *value);
                }
            }
        }
    }

    fn store(&mut self, v: &mut Validator<'_>, nodes: &Nodes, id: BufferId, index: &[Var], value: Handle<Expr>) {
        let stage = self.stage;
        let m = v.module;
        let at = format!("{stage}: store to `{}`", v.buffer_name(id));
        match m.buffers.get(id) {
            None => v.error(format!("{stage}: store to buffer #{id}, which does not exist")),
            Some(buffer) => {
                let what = format!("{} `{}`", kind_word(&buffer.kind), buffer.name);
                match Stage::writer(buffer) {
                    Some(writer) if stage.stores(writer) => {
                        if let Some(count) = self.stores.get_mut(id) {
                            *count += 1;
                        }
                    }
                    // An observed let is also computed before the decision.
                    Some(Stage::Step) if stage == Stage::Bounds && buffer.kind == BufferKind::Let => {
                        if let Some(count) = v.early_lets.get_mut(id) {
                            *count += 1;
                        }
                    }
                    Some(writer) => v.error(format!("{at}: {what} is stored by {writer}, not by {stage}")),
                    None => {
                        let why = match buffer.kind {
                            BufferKind::Param => "is given as data",
                            BufferKind::Adjoint { .. } => "is only accumulated into, by vjp",
                            BufferKind::Noise => "is the period index, set by the protocol",
                            _ => "is set by the policy",
                        };
                        v.error(format!("{at}: {what} {why}; no program stores it"))
                    }
                }
                self.index(v, &at, buffer, index);
            }
        }
        if self.conditional {
            v.error(format!(
                "{at}: inside an `if`, so some of its elements might not be stored; only accumulations are \
                 conditional"
            ));
        }
        self.expr(v, nodes, &at, "the value", value);
        if let Some(stored) = self.stored.get_mut(id) {
            *stored = true;
        }
    }

    /// `buffer[index...] += value`: only in `vjp`, only into an adjoint, one index expression per
    /// dimension. Where the indices land is checked at run time.
    fn accumulate(
        &mut self,
        v: &mut Validator<'_>,
        nodes: &Nodes,
        at: &str,
        id: BufferId,
        index: &[Handle<Expr>],
        value: Handle<Expr>,
    ) {
        let stage = self.stage;
        if !matches!(stage, Stage::Vjp | Stage::BoundsVjp) {
            v.error(format!("{at}: only vjp and bounds_vjp accumulate"));
        }
        match v.module.buffers.get(id) {
            None => v.error(format!("{stage}: accumulate into buffer #{id}, which does not exist")),
            Some(buffer) => {
                if !matches!(buffer.kind, BufferKind::Adjoint { .. }) {
                    v.error(format!(
                        "{at}: {} `{}` is not an adjoint; only adjoints are accumulated into",
                        kind_word(&buffer.kind),
                        buffer.name
                    ));
                }
                if index.len() != buffer.dims.len() {
                    v.error(format!(
                        "{at}: {} for {}",
                        count_of(index.len(), "index", "indices"),
                        count_of(buffer.dims.len(), "dimension", "dimensions")
                    ));
                }
            }
        }
        for (axis, position) in index.iter().enumerate() {
            self.expr(v, nodes, at, &format!("index {axis}"), *position);
        }
        self.expr(v, nodes, at, "the value", value);
    }

    /// Checks an expression the statement `at` evaluates (`what` names it for messages): its
    /// variables are bound by enclosing loops or by reductions inside it, no reduction rebinds a
    /// loop variable, it loads only what the program reads and samples only where allowed.
    fn expr(&self, v: &mut Validator<'_>, nodes: &Nodes, at: &str, what: &str, root: Handle<Expr>) {
        let stage = self.stage;
        let m = v.module;
        let Some(free) = nodes.free.get(root.index()) else {
            v.error(format!("{at}: {what} is {root:?}, which is out of range ({} nodes)", m.exprs.len()));
            return;
        };
        for var in free {
            if !self.loops.iter().any(|(bound, _)| bound == var) {
                v.error(format!("{at}: uses v{}, which no enclosing `for` or reduction binds", var.0));
            }
        }
        for node in reachable(m, root) {
            match m.exprs.get(node) {
                Some(Expr::Reduce { var, .. }) if self.loops.iter().any(|(bound, _)| bound == var) => {
                    v.error(format!("{at}: {node:?} reduces over v{}, already bound by an enclosing loop", var.0))
                }
                Some(Expr::Load { buffer: read, .. }) => {
                    let Some(source) = m.buffers.get(*read) else { continue };
                    let stored = self.stored.get(*read).copied().unwrap_or(false);
                    if !stage.may_read(source, stored) {
                        let source_what = format!("{} `{}`", kind_word(&source.kind), source.name);
                        let why = if stage.may_read(source, true) {
                            format!("before the statement that stores it; {stage} reads {}", stage.reads())
                        } else {
                            format!("but {stage} reads only {}", stage.reads())
                        };
                        v.error(format!("{at}: {node:?} loads {source_what} {why}"));
                    }
                }
                Some(Expr::Sample { dist, .. }) if !stage.may_sample() => {
                    v.error(format!("{at}: {node:?} samples {dist:?}, but only instance, init and noise may sample"))
                }
                _ => {}
            }
        }
    }

    /// The index of a store names the enclosing loop variables, outermost first, one per
    /// dimension, each running over that dimension's set — and no other loop encloses the store,
    /// or it would store each element more than once.
    fn index(&self, v: &mut Validator<'_>, at: &str, buffer: &Buffer, index: &[Var]) {
        if index.len() != buffer.dims.len() {
            v.error(format!(
                "{at}: {} for {}",
                count_of(index.len(), "index", "indices"),
                count_of(buffer.dims.len(), "dimension", "dimensions")
            ));
            return;
        }
        let mut last_depth = None;
        for (axis, (var, dim)) in index.iter().zip(&buffer.dims).enumerate() {
            let Some(depth) = self.loops.iter().position(|(bound, _)| bound == var) else {
                v.error(format!("{at}: index v{} is not the variable of an enclosing `for`", var.0));
                continue;
            };
            let set = self.loops.get(depth).map(|(_, set)| *set);
            if set != Some(*dim) {
                v.error(format!(
                    "{at}: index v{} runs over `{}`, but dimension {axis} of `{}` is `{}`",
                    var.0,
                    set.map_or_else(String::new, |s| v.set_name(s)),
                    buffer.name,
                    v.set_name(*dim)
                ));
            }
            if last_depth.is_some_and(|last| depth <= last) {
                v.error(format!("{at}: indices are not in the order of the enclosing loops, outermost first"));
            }
            last_depth = Some(depth);
        }
        for (var, set) in &self.loops {
            if !index.contains(var) {
                v.error(format!(
                    "{at}: inside `for v{} in {}`, which is not one of its indices, so each element would be \
                     stored more than once",
                    var.0,
                    v.set_name(*set)
                ));
            }
        }
    }
}

/// Hand-built modules for tests of the IR; `text.rs` tests use them too.
#[cfg(test)]
pub(crate) mod tests {
    use super::super::text::print;
    use super::super::{BinaryOp, ReduceOp, Report, Set, UnaryOp};
    use super::*;
    use crate::diagnostics::Span;

    /// Builds a module by hand. Nodes are pushed as they are built, so a test that builds each
    /// store's value bottom-up, program by program, gets the arena `text::parse` would make.
    pub(crate) struct Build {
        pub(crate) m: Module,
    }

    impl Build {
        pub(crate) fn new(name: &str) -> Build {
            Build {
                m: Module {
                    name: name.into(),
                    sets: Vec::new(),
                    buffers: Vec::new(),
                    exprs: Default::default(),
                    instance: Program::default(),
                    init: Program::default(),
                    noise: Program::default(),
                    bounds: Program::default(),
                    regimes: Program::default(),
                    step: Program::default(),
                    vjp: Program::default(),
                    bounds_vjp: Program::default(),
                    observe: Vec::new(),
                    horizon: 10,
                    warmup: 2,
                    discount: 0.99,
                    report: Report { per_period: true, per_size: vec![("items".into(), 3)] },
                },
            }
        }

        pub(crate) fn set(&mut self, name: &str, lo: i64, hi: i64) -> SetId {
            self.m.sets.push(Set { name: name.into(), lo, hi });
            self.m.sets.len() - 1
        }

        pub(crate) fn buffer(&mut self, name: &str, kind: BufferKind, dims: &[SetId], elem: ElemType) -> BufferId {
            let buffer = Buffer { name: name.into(), kind, dims: dims.to_vec(), elem, labels: Vec::new(), data: None };
            self.m.buffers.push(buffer);
            self.m.buffers.len() - 1
        }

        pub(crate) fn e(&mut self, expr: Expr) -> Handle<Expr> {
            self.m.exprs.push(expr, Span::default())
        }

        pub(crate) fn num(&mut self, value: f64) -> Handle<Expr> {
            self.e(Expr::Const(value))
        }

        pub(crate) fn var(&mut self, var: u32) -> Handle<Expr> {
            self.e(Expr::Var(Var(var)))
        }

        /// `buffer[v...]`, each index a fresh `Var` node.
        pub(crate) fn load(&mut self, buffer: BufferId, vars: &[u32]) -> Handle<Expr> {
            let index = vars.iter().map(|v| self.var(*v)).collect();
            self.e(Expr::Load { buffer, index })
        }

        pub(crate) fn bin(&mut self, op: BinaryOp, lhs: Handle<Expr>, rhs: Handle<Expr>) -> Handle<Expr> {
            self.e(Expr::Binary { op, lhs, rhs })
        }

        pub(crate) fn sample(&mut self, dist: Dist, args: &[f64]) -> Handle<Expr> {
            let args = args.iter().map(|a| self.num(*a)).collect();
            self.e(Expr::Sample { dist, args, truncate: None })
        }
    }

    pub(crate) fn each(var: u32, set: SetId, body: Vec<Stmt>) -> Stmt {
        Stmt::For { var: Var(var), set, body }
    }

    pub(crate) fn store(buffer: BufferId, index: &[u32], value: Handle<Expr>) -> Stmt {
        Stmt::Store { buffer, index: index.iter().map(|v| Var(*v)).collect(), value }
    }

    // Buffer ids of `minimal`.
    pub(crate) const MU: BufferId = 0;
    pub(crate) const C: BufferId = 1;
    pub(crate) const X: BufferId = 2;
    pub(crate) const X_NEXT: BufferId = 3;
    pub(crate) const D: BufferId = 4;
    pub(crate) const ORDER: BufferId = 5;
    pub(crate) const Q: BufferId = 6;
    pub(crate) const Q_LO: BufferId = 7;
    pub(crate) const Q_WHEN: BufferId = 8;
    pub(crate) const POST: BufferId = 9;
    pub(crate) const HOLDING: BufferId = 10;
    pub(crate) const I: SetId = 0;

    /// A small valid module with one buffer of every kind but an upper bound, each program
    /// non-empty, built program by program, each value bottom-up.
    pub(crate) fn minimal() -> Build {
        let mut b = Build::new("tiny");
        let i = b.set("I", 0, 3);
        b.buffer("mu", BufferKind::Param, &[i], ElemType::Real);
        b.buffer("c", BufferKind::Param, &[i], ElemType::Real);
        b.buffer("x", BufferKind::State, &[i], ElemType::Real);
        b.buffer("x'", BufferKind::Next { of: X }, &[i], ElemType::Real);
        b.buffer("d", BufferKind::Noise, &[i], ElemType::Int);
        b.buffer("order", BufferKind::Discrete, &[], ElemType::Int);
        b.buffer("q", BufferKind::Continuous, &[i], ElemType::Real);
        b.buffer("q.lo", BufferKind::Bound { action: Q, upper: false }, &[i], ElemType::Real);
        b.buffer("q.when", BufferKind::Regime { action: Q }, &[i], ElemType::Bool);
        b.buffer("post", BufferKind::Let, &[i], ElemType::Real);
        b.buffer("holding", BufferKind::Cost, &[], ElemType::Real);
        b.m.buffers[C].data = Some(vec![1.0, 2.0, 3.0]);
        b.m.buffers[ORDER].labels = vec!["skip".into(), "buy".into()];
        b.m.observe = vec![X, MU];

        let draw = b.sample(Dist::Uniform, &[1.0, 2.0]);
        b.m.instance.body = vec![each(0, i, vec![store(MU, &[0], draw)])];

        let start = b.load(C, &[0]);
        b.m.init.body = vec![each(0, i, vec![store(X, &[0], start)])];

        let mean = b.load(MU, &[0]);
        let demand = b.e(Expr::Sample { dist: Dist::Poisson, args: vec![mean], truncate: None });
        b.m.noise.body = vec![each(0, i, vec![store(D, &[0], demand)])];

        let x = b.load(X, &[0]);
        let lower = b.e(Expr::Unary { op: UnaryOp::Neg, arg: x });
        b.m.bounds.body = vec![each(0, i, vec![store(Q_LO, &[0], lower)])];

        let order = b.load(ORDER, &[]);
        let buy = b.num(1.0);
        let buying = b.bin(BinaryOp::Eq, order, buy);
        b.m.regimes.body = vec![each(0, i, vec![store(Q_WHEN, &[0], buying)])];

        b.m.step.body = minimal_step(&mut b);
        b
    }

    /// The step of `minimal`, its nodes pushed bottom-up: `vjp` recomputes it.
    fn minimal_step(b: &mut Build) -> Vec<Stmt> {
        let x = b.load(X, &[0]);
        let d = b.load(D, &[0]);
        let left = b.bin(BinaryOp::Sub, x, d);
        let q = b.load(Q, &[0]);
        let post = b.bin(BinaryOp::Add, left, q);
        let next = b.load(POST, &[0]);
        let c = b.load(C, &[1]);
        let post_1 = b.load(POST, &[1]);
        let zero = b.num(0.0);
        let over = b.bin(BinaryOp::Max, post_1, zero);
        let term = b.bin(BinaryOp::Mul, c, over);
        let holding = b.e(Expr::Reduce { op: ReduceOp::Sum, var: Var(1), set: I, body: term });
        vec![each(0, I, vec![store(POST, &[0], post), store(X_NEXT, &[0], next)]), store(HOLDING, &[], holding)]
    }

    // Buffer ids of `differentiated`, after those of `minimal`.
    pub(crate) const X_ADJ: BufferId = 11;
    pub(crate) const X_NEXT_ADJ: BufferId = 12;
    pub(crate) const Q_ADJ: BufferId = 13;
    pub(crate) const POST_ADJ: BufferId = 14;
    pub(crate) const HOLDING_ADJ: BufferId = 15;

    /// `minimal` differentiated as `passes::ad` does: an adjoint of every state, next state,
    /// continuous action, let and cost, and a `vjp` that recomputes the step, then runs it
    /// backwards (nodes pushed in the order `text::parse` creates them).
    ///
    /// ```text
    /// for v1 in I {
    ///     if (post[v1] >= 0.0) {
    ///         accumulate post.adj[v1] += (holding.adj * c[v1])
    ///     }
    /// }
    /// for v0 in I {
    ///     accumulate post.adj[v0] += x'.adj[v0]
    ///     accumulate x.adj[v0] += post.adj[v0]
    ///     accumulate q.adj[v0] += post.adj[v0]
    /// }
    /// ```
    pub(crate) fn differentiated() -> Build {
        let mut b = minimal();
        for (name, of, dims) in [
            ("x.adj", X, &[I][..]),
            ("x'.adj", X_NEXT, &[I]),
            ("q.adj", Q, &[I]),
            ("post.adj", POST, &[I]),
            ("holding.adj", HOLDING, &[]),
        ] {
            b.buffer(name, BufferKind::Adjoint { of }, dims, ElemType::Real);
        }
        b.m.vjp.body = minimal_step(&mut b);

        let post = b.load(POST, &[1]);
        let zero = b.num(0.0);
        let positive = b.bin(BinaryOp::Ge, post, zero);
        let at = b.var(1);
        let seed = b.load(HOLDING_ADJ, &[]);
        let c = b.load(C, &[1]);
        let term = b.bin(BinaryOp::Mul, seed, c);
        let holding = each(
            1,
            I,
            vec![Stmt::If { cond: positive, then: vec![accumulate(POST_ADJ, &[at], term)], otherwise: Vec::new() }],
        );

        let mut post_body = Vec::new();
        for (into, from) in [(POST_ADJ, X_NEXT_ADJ), (X_ADJ, POST_ADJ), (Q_ADJ, POST_ADJ)] {
            let at = b.var(0);
            let seed = b.load(from, &[0]);
            post_body.push(accumulate(into, &[at], seed));
        }
        b.m.vjp.body.extend([holding, each(0, I, post_body)]);
        b
    }

    pub(crate) fn accumulate(buffer: BufferId, index: &[Handle<Expr>], value: Handle<Expr>) -> Stmt {
        Stmt::Accumulate { buffer, index: index.to_vec(), value }
    }

    fn errors(m: &Module) -> Vec<String> {
        validate(m).err().unwrap_or_default()
    }

    /// Asserts that validating `m` reports a message containing `needle`.
    #[track_caller]
    fn reports(m: &Module, needle: &str) {
        let errors = errors(m);
        assert!(errors.iter().any(|e| e.contains(needle)), "no message contains {needle:?}; got {errors:#?}");
    }

    #[test]
    fn minimal_module_is_valid() {
        assert_eq!(errors(&minimal().m), Vec::<String>::new());
    }

    #[test]
    fn settings() {
        let mut b = minimal();
        b.m.horizon = 0;
        b.m.warmup = 0;
        reports(&b.m, "horizon is 0");
        reports(&b.m, "warmup 0 is not less than horizon 0");
        for discount in [0.0, 1.5, f64::NAN] {
            let mut b = minimal();
            b.m.discount = discount;
            reports(&b.m, &format!("discount {discount:?} is not in (0, 1]"));
        }
        let mut b = minimal();
        b.m.report.per_size = vec![("items".into(), 0)];
        reports(&b.m, "report per `items`: size 0 is not positive");
    }

    #[test]
    fn sets() {
        let mut b = minimal();
        b.set("J", 4, 3);
        b.set("I", 0, 1);
        reports(&b.m, "set `J` = 4..3 is reversed");
        reports(&b.m, "set `I` is declared twice");
    }

    #[test]
    fn buffer_declarations() {
        let mut b = minimal();
        b.m.buffers[MU].dims = vec![7];
        b.m.buffers[ORDER].labels.clear();
        b.m.buffers[Q].labels = vec!["a".into()];
        b.m.buffers[C].data = Some(vec![1.0, f64::INFINITY]);
        b.m.buffers[D].data = Some(vec![0.0; 3]);
        b.m.buffers[HOLDING].dims = vec![I];
        b.m.buffers[POST].name = "x".into();
        reports(&b.m, "param `mu`: dimension 0 is set #7, which does not exist");
        reports(&b.m, "discrete action `order` has no labels");
        reports(&b.m, "continuous action `q` has labels");
        reports(&b.m, "param `c` has 2 data values for 3 elements");
        reports(&b.m, "param `c`: data value 1 is inf, not a finite number");
        reports(&b.m, "noise `d` has data; only a param may be given as data");
        reports(&b.m, "cost `holding` has 1 dimensions; a cost is a scalar");
        reports(&b.m, "let `x`: another buffer has the same name");

        let mut b = minimal();
        b.m.buffers[ORDER].labels = vec!["buy".into(), "buy".into()];
        reports(&b.m, "discrete action `order`: label `buy` appears twice");
    }

    #[test]
    fn huge_sets_do_not_overflow() {
        let mut b = minimal();
        b.m.sets[I] = Set { name: "I".into(), lo: i64::MIN, hi: i64::MAX };
        reports(&b.m, "param `c` has 3 data values for more elements than a machine holds");
    }

    #[test]
    fn partners() {
        let mut b = minimal();
        b.m.buffers[X_NEXT].kind = BufferKind::Next { of: MU };
        b.m.buffers[Q_LO].kind = BufferKind::Bound { action: 99, upper: false };
        b.m.buffers[Q_WHEN].dims = vec![];
        reports(&b.m, "next state `x'` is of param `mu`, not of a state");
        reports(&b.m, "state `x` has 0 next states; it needs exactly one");
        reports(&b.m, "bound `q.lo` is of buffer #99, which does not exist");
        reports(&b.m, "regime mask `q.when` has dimensions [] but its continuous action `q` has [I]");

        let mut b = minimal();
        b.buffer("q.lo2", BufferKind::Bound { action: Q, upper: false }, &[I], ElemType::Real);
        b.buffer("q.when2", BufferKind::Regime { action: Q }, &[I], ElemType::Bool);
        reports(&b.m, "continuous action `q` has 2 lower bounds; it may have one");
        reports(&b.m, "continuous action `q` has 2 regime masks; it may have one");
    }

    #[test]
    fn nodes_refer_to_earlier_nodes_only() {
        let mut b = minimal();
        let ahead = Handle::new(b.m.exprs.len() + 1);
        let forward = b.e(Expr::Unary { op: UnaryOp::Exp, arg: ahead });
        b.e(Expr::Const(0.0));
        let dangling = b.e(Expr::Unary { op: UnaryOp::Exp, arg: Handle::new(9999) });
        let looping = b.e(Expr::Unary { op: UnaryOp::Exp, arg: Handle::new(b.m.exprs.len()) });
        b.m.step.body.push(store(HOLDING, &[], looping));
        reports(&b.m, &format!("{forward:?} (used by no statement) refers to {ahead:?}, which is not an earlier node"));
        reports(&b.m, &format!("{dangling:?} (used by no statement) refers to %9999, which is out of range"));
        reports(&b.m, &format!("step: store to `holding`: {looping:?} refers to {looping:?}, which is not an earlier"));
    }

    #[test]
    fn node_contents() {
        let mut b = minimal();
        let nan = b.num(f64::NAN);
        let x = b.load(X, &[]);
        let normal = b.sample(Dist::Normal, &[0.0]);
        let categorical = b.sample(Dist::Categorical, &[]);
        let nowhere = b.e(Expr::Reduce { op: ReduceOp::Sum, var: Var(5), set: 9, body: nan });
        let missing = b.e(Expr::Load { buffer: 42, index: Vec::new() });
        let sum = [x, normal, categorical, nowhere, missing].into_iter().reduce(|l, r| b.bin(BinaryOp::Add, l, r));
        b.m.instance.body.push(store(C, &[], sum.unwrap_or(nan)));
        let at = "instance: store to `c`";
        reports(&b.m, &format!("{at}: {nan:?} is the constant NaN, not a number"));
        reports(&b.m, &format!("{at}: {x:?} loads `x` with 0 indices for 1 dimension"));
        reports(&b.m, &format!("{at}: {normal:?} samples Normal with 1 argument; it takes 2"));
        reports(&b.m, &format!("{at}: {categorical:?} samples Categorical with 0 arguments; it takes at least 1"));
        reports(&b.m, &format!("{at}: {nowhere:?} reduces over set #9, which does not exist"));
        reports(&b.m, &format!("{at}: {missing:?} loads buffer #42, which does not exist"));
    }

    #[test]
    fn variables_are_bound_once_where_used() {
        let mut b = minimal();
        // sum(v1 in I) sum(v1 in I) v1, stored inside `for v1`: both rebind.
        let v1 = b.var(1);
        let inner = b.e(Expr::Reduce { op: ReduceOp::Sum, var: Var(1), set: I, body: v1 });
        let outer = b.e(Expr::Reduce { op: ReduceOp::Sum, var: Var(1), set: I, body: inner });
        let stray = b.var(7);
        b.m.step.body = vec![each(1, I, vec![each(1, I, vec![store(POST, &[1], outer)]), store(X_NEXT, &[1], stray)])];
        let at = "step: store to";
        reports(&b.m, &format!("{at} `post`: {outer:?} reduces over v1 inside a reduction that binds v1 again"));
        reports(&b.m, &format!("{at} `post`: {inner:?} reduces over v1, already bound by an enclosing loop"));
        reports(&b.m, "step: `for v1 in I` rebinds v1, already bound by an enclosing loop");
        reports(&b.m, &format!("{at} `x'`: uses v7, which no enclosing `for` or reduction binds"));
    }

    #[test]
    fn store_indices_follow_the_enclosing_loops() {
        let mut b = minimal();
        let j = b.set("J", 0, 2);
        let grid = b.buffer("grid", BufferKind::Let, &[I, j], ElemType::Real);
        let zero = b.num(0.0);
        b.m.step.body.extend([
            each(0, j, vec![each(1, I, vec![store(grid, &[1, 0], zero)])]),
            each(0, I, vec![store(HOLDING, &[], zero), store(grid, &[0], zero), store(grid, &[0, 9], zero)]),
        ]);
        let at = "step: store to";
        reports(&b.m, &format!("{at} `grid`: indices are not in the order of the enclosing loops"));
        reports(&b.m, &format!("{at} `holding`: inside `for v0 in I`, which is not one of its indices"));
        reports(&b.m, &format!("{at} `grid`: 1 index for 2 dimensions"));
        reports(&b.m, &format!("{at} `grid`: index v9 is not the variable of an enclosing `for`"));

        let mut b = minimal();
        let j = b.set("J", 0, 2);
        let zero = b.num(0.0);
        b.m.step.body.push(each(0, j, vec![store(POST, &[0], zero)]));
        reports(&b.m, "step: store to `post`: index v0 runs over `J`, but dimension 0 of `post` is `I`");
    }

    #[test]
    fn each_program_writes_its_own_buffers_once() {
        let mut b = minimal();
        let zero = b.num(0.0);
        b.m.init.body.push(store(HOLDING, &[], zero));
        b.m.instance.body.push(each(0, I, vec![store(C, &[0], zero)]));
        b.m.step.body.push(store(ORDER, &[], zero));
        b.m.step.body.push(store(HOLDING, &[], zero));
        b.m.noise.body.clear();
        reports(&b.m, "init: store to `holding`: cost `holding` is stored by step, not by init");
        reports(&b.m, "instance: store to `c`: param `c` is given as data; no program stores it");
        reports(&b.m, "step: store to `order`: discrete action `order` is set by the policy");
        reports(&b.m, "cost `holding` is stored by 2 statements of step; it must be stored by exactly one");
        reports(&b.m, "noise `d` is never stored by noise");
    }

    #[test]
    fn each_program_reads_what_its_row_allows() {
        let mut b = minimal();
        let state = b.load(X, &[0]);
        b.m.init.body = vec![each(0, I, vec![store(X, &[0], state)])];
        let next = b.load(X_NEXT, &[0]);
        let cost = b.load(HOLDING, &[]);
        let sum = b.bin(BinaryOp::Add, next, cost);
        b.m.step.body.insert(0, each(0, I, vec![store(POST, &[0], sum)]));
        let action = b.load(Q, &[0]);
        b.m.regimes.body = vec![each(0, I, vec![store(Q_WHEN, &[0], action)])];
        let noise = b.load(D, &[0]);
        b.m.bounds.body = vec![each(0, I, vec![store(Q_LO, &[0], noise)])];
        reports(&b.m, &format!("init: store to `x`: {state:?} loads state `x` but init reads only params"));
        reports(&b.m, &format!("step: store to `post`: {next:?} loads next state `x'` but step reads only"));
        reports(&b.m, &format!("step: store to `post`: {cost:?} loads cost `holding` before the statement that"));
        reports(&b.m, &format!("regimes: store to `q.when`: {action:?} loads continuous action `q` but regimes"));
        reports(&b.m, &format!("bounds: store to `q.lo`: {noise:?} loads noise `d` but bounds reads only"));
    }

    #[test]
    fn lets_and_params_are_read_after_they_are_stored() {
        let mut b = minimal();
        // `holding` before `post` is stored.
        b.m.step.body.reverse();
        // `mu` reads itself, then `k` reads `mu` once it is stored: fine.
        let k = b.buffer("k", BufferKind::Param, &[], ElemType::Real);
        let own = b.load(MU, &[0]);
        b.m.instance.body = vec![each(0, I, vec![store(MU, &[0], own)])];
        let mu = b.load(MU, &[0]);
        let total = b.e(Expr::Reduce { op: ReduceOp::Sum, var: Var(0), set: I, body: mu });
        b.m.instance.body.push(store(k, &[], total));
        reports(&b.m, "step: store to `holding`: %");
        reports(&b.m, "loads let `post` before the statement that stores it");
        reports(
            &b.m,
            &format!("instance: store to `mu`: {own:?} loads param `mu` before the statement that stores it"),
        );
        assert_eq!(errors(&b.m).len(), 2, "{:#?}", errors(&b.m));
    }

    #[test]
    fn sampling_only_where_drawn() {
        let mut b = minimal();
        let coin = b.sample(Dist::Bernoulli, &[0.5]);
        b.m.step.body.push(store(HOLDING, &[], coin));
        b.m.step.body.remove(1);
        reports(
            &b.m,
            &format!("step: store to `holding`: {coin:?} samples Bernoulli, but only instance, init and noise"),
        );
    }

    #[test]
    fn observe_lists_states_and_params() {
        let mut b = minimal();
        b.m.observe = vec![X, D, X, 50];
        reports(&b.m, "observe lists noise `d`; the policy observes only states, params and lets");
        reports(&b.m, "observe lists `x` twice");
        reports(&b.m, "observe lists buffer #50, which does not exist");
    }

    #[test]
    fn differentiated_module_is_valid() {
        assert_eq!(errors(&differentiated().m), Vec::<String>::new());
        // Not differentiated (yet): adjoints, but an empty `vjp`.
        let mut b = differentiated();
        b.m.vjp.body.clear();
        assert_eq!(errors(&b.m), Vec::<String>::new());
    }

    #[test]
    fn arg_reductions_go_wherever_reductions_do() {
        let mut b = differentiated();
        // holding = sum(v1 in I) ... becomes argmin(v1 in I) ..., in step and in vjp.
        for program in [&mut b.m.step, &mut b.m.vjp] {
            if let Some(Stmt::Store { value, .. }) = program.body.get(1) {
                let value = *value;
                if let Expr::Reduce { op, .. } = &mut b.m.exprs.items[value.index()] {
                    *op = ReduceOp::ArgMin;
                }
            }
        }
        // accumulate x.adj[argmax(v2 in I) x[v2]] += 1.0, after the recomputation.
        let x = b.load(X, &[2]);
        let top = b.e(Expr::Reduce { op: ReduceOp::ArgMax, var: Var(2), set: I, body: x });
        let one = b.num(1.0);
        b.m.vjp.body.push(accumulate(X_ADJ, &[top], one));
        assert_eq!(errors(&b.m), Vec::<String>::new());
        assert!(print(&b.m).contains("accumulate x.adj[argmax(v2 in I) x[v2]] += 1.0"), "{}", print(&b.m));

        // The same index inside `for v2` rebinds v2.
        let again = b.m.vjp.body.pop();
        b.m.vjp.body.push(each(2, I, again.into_iter().collect()));
        reports(&b.m, &format!("vjp: accumulate into `x.adj`: {top:?} reduces over v2, already bound by an enclosing"));
    }

    #[test]
    fn adjoint_declarations() {
        let mut b = differentiated();
        b.buffer("mu.adj", BufferKind::Adjoint { of: MU }, &[I], ElemType::Real);
        b.buffer("ghost.adj", BufferKind::Adjoint { of: 99 }, &[], ElemType::Real);
        b.buffer("x.adj2", BufferKind::Adjoint { of: X }, &[I], ElemType::Real);
        b.buffer("x.adj.adj", BufferKind::Adjoint { of: X_ADJ }, &[I], ElemType::Real);
        b.m.buffers[X_NEXT_ADJ].dims = vec![];
        b.m.buffers[Q_ADJ].elem = ElemType::Int;
        b.m.buffers[POST_ADJ].data = Some(vec![0.0; 3]);
        b.m.observe.push(HOLDING_ADJ);
        let kinds = "state, continuous action, let, next state, cost, bound or piece bound";
        reports(&b.m, &format!("adjoint `mu.adj` is of param `mu`, not of a {kinds}"));
        reports(&b.m, "adjoint `ghost.adj` is of buffer #99, which does not exist");
        reports(&b.m, "state `x` has 2 adjoints; it may have one");
        reports(&b.m, &format!("adjoint `x.adj.adj` is of adjoint `x.adj`, not of a {kinds}"));
        reports(&b.m, "adjoint `x'.adj` has dimensions [] but its next state `x'` has [I]");
        reports(&b.m, "adjoint `q.adj` holds Int elements; an adjoint holds reals");
        reports(&b.m, "adjoint `post.adj` has data; only a param may be given as data");
        reports(&b.m, "observe lists adjoint `holding.adj`; the policy observes only states, params and lets");
        // The seed `x'.adj[v0]` no longer fits `x'.adj`.
        reports(&b.m, "vjp: accumulate into `post.adj`: %");
        reports(&b.m, "loads `x'.adj` with 1 index for 0 dimensions");
        assert_eq!(errors(&b.m).len(), 9, "{:#?}", errors(&b.m));
    }

    #[test]
    fn adjoints_are_accumulated_into_never_stored() {
        let mut b = differentiated();
        let zero = b.num(0.0);
        b.m.vjp.body.push(store(HOLDING_ADJ, &[], zero));
        b.m.init.body.push(each(0, I, vec![store(X_ADJ, &[0], zero)]));
        reports(
            &b.m,
            "vjp: store to `holding.adj`: adjoint `holding.adj` is only accumulated into, by vjp; no program",
        );
        reports(&b.m, "init: store to `x.adj`: adjoint `x.adj` is only accumulated into");
        assert_eq!(errors(&b.m).len(), 2, "{:#?}", errors(&b.m));
    }

    #[test]
    fn if_and_accumulate_only_in_vjp() {
        let mut b = differentiated();
        let order = b.load(ORDER, &[]);
        let at = b.var(0);
        let one = b.num(1.0);
        b.m.step.body.push(Stmt::If {
            cond: order,
            then: vec![each(0, I, vec![accumulate(X_ADJ, &[at], one)])],
            otherwise: Vec::new(),
        });
        let zero = b.num(0.0);
        b.m.regimes.body.push(accumulate(HOLDING_ADJ, &[], zero));
        reports(&b.m, &format!("step: `if` on {order:?}: only vjp and bounds_vjp have `if` statements"));
        reports(&b.m, "step: accumulate into `x.adj`: only vjp and bounds_vjp accumulate");
        reports(&b.m, "regimes: accumulate into `holding.adj`: only vjp and bounds_vjp accumulate");
        assert_eq!(errors(&b.m).len(), 3, "{:#?}", errors(&b.m));
    }

    #[test]
    fn accumulations_target_adjoints_with_one_index_per_dimension() {
        let mut b = differentiated();
        let at = b.var(0);
        let one = b.num(1.0);
        let stray = b.var(7);
        let nan = b.num(f64::NAN);
        b.m.vjp.body.extend([
            each(0, I, vec![accumulate(X, &[at], one)]),
            accumulate(X_ADJ, &[], one),
            accumulate(HOLDING_ADJ, &[one], one),
            accumulate(99, &[], one),
            accumulate(HOLDING_ADJ, &[], stray),
            accumulate(X_ADJ, &[Handle::new(9999)], one),
            accumulate(HOLDING_ADJ, &[], nan),
        ]);
        let at = "vjp: accumulate into";
        reports(&b.m, &format!("{at} `x`: state `x` is not an adjoint; only adjoints are accumulated into"));
        reports(&b.m, &format!("{at} `x.adj`: 0 indices for 1 dimension"));
        reports(&b.m, &format!("{at} `holding.adj`: 1 index for 0 dimensions"));
        reports(&b.m, "vjp: accumulate into buffer #99, which does not exist");
        reports(&b.m, &format!("{at} `holding.adj`: uses v7, which no enclosing `for` or reduction binds"));
        reports(&b.m, &format!("{at} `x.adj`: index 0 is %9999, which is out of range"));
        reports(&b.m, &format!("{at} `holding.adj`: {nan:?} is the constant NaN, not a number"));
        assert_eq!(errors(&b.m).len(), 7, "{:#?}", errors(&b.m));
    }

    #[test]
    fn an_if_binds_nothing_and_stores_nothing() {
        let mut b = differentiated();
        let stray = b.var(5);
        let zero = b.num(0.0);
        let cond = b.bin(BinaryOp::Gt, stray, zero);
        let at = b.var(5);
        let one = b.num(1.0);
        let post = b.load(POST, &[0]);
        let sample = b.sample(Dist::Bernoulli, &[0.5]);
        b.m.vjp.body.extend([
            Stmt::If { cond, then: vec![accumulate(X_ADJ, &[at], one)], otherwise: Vec::new() },
            Stmt::If { cond: sample, then: Vec::new(), otherwise: vec![each(0, I, vec![store(POST, &[0], post)])] },
            Stmt::If { cond: Handle::new(9999), then: Vec::new(), otherwise: Vec::new() },
        ]);
        reports(&b.m, &format!("vjp: `if` on {cond:?}: uses v5, which no enclosing `for` or reduction binds"));
        reports(&b.m, "vjp: accumulate into `x.adj`: uses v5, which no enclosing `for` or reduction binds");
        reports(&b.m, &format!("vjp: `if` on {sample:?}: {sample:?} samples Bernoulli, but only instance"));
        reports(&b.m, "vjp: store to `post`: inside an `if`, so some of its elements might not be stored");
        reports(&b.m, "let `post` is stored by 2 statements of vjp; it must be stored by exactly one");
        reports(&b.m, "vjp: `if` on %9999: the condition is %9999, which is out of range");
        assert_eq!(errors(&b.m).len(), 6, "{:#?}", errors(&b.m));
    }

    #[test]
    fn vjp_recomputes_the_step_before_it_reads_it() {
        // The recomputation of `holding` left out, `post`'s stored twice.
        let mut b = differentiated();
        b.m.vjp.body.remove(1);
        let again = b.m.vjp.body.first().cloned();
        b.m.vjp.body.extend(again);
        reports(&b.m, "cost `holding` is never stored by vjp; a non-empty vjp recomputes what step stores");
        reports(&b.m, "let `post` is stored by 2 statements of vjp; it must be stored by exactly one");
        reports(&b.m, "next state `x'` is stored by 2 statements of vjp; it must be stored by exactly one");
        assert_eq!(errors(&b.m).len(), 3, "{:#?}", errors(&b.m));

        // Differentiation before recomputation: `post` is read before it is stored.
        let mut b = differentiated();
        b.m.vjp.body.rotate_left(2);
        reports(&b.m, "vjp: `if` on %");
        reports(&b.m, "loads let `post` before the statement that stores it; vjp reads params, states, noise");
        assert_eq!(errors(&b.m).len(), 1, "{:#?}", errors(&b.m));
    }

    #[test]
    fn vjp_reads_what_step_reads_and_adjoints() {
        let mut b = differentiated();
        let next = b.load(X_NEXT, &[]);
        let state = b.load(X, &[]);
        b.m.vjp.body.push(accumulate(HOLDING_ADJ, &[], next));
        b.m.vjp.body.push(store(X, &[], state));
        // Adjoints are read by vjp only.
        let adjoint = b.load(X_NEXT_ADJ, &[0]);
        b.m.step.body.insert(0, each(0, I, vec![store(POST, &[0], adjoint)]));
        b.m.step.body.remove(1);
        reports(
            &b.m,
            &format!("vjp: accumulate into `holding.adj`: {next:?} loads next state `x'` but vjp reads only"),
        );
        reports(&b.m, "vjp: store to `x`: state `x` is stored by init, not by vjp");
        reports(&b.m, &format!("step: store to `post`: {adjoint:?} loads adjoint `x'.adj` but step reads only"));
    }

    #[test]
    fn every_violation_is_reported_not_just_the_first() {
        let mut b = minimal();
        b.m.horizon = 0;
        b.m.sets[I].hi = 0;
        b.m.observe.push(D);
        assert!(errors(&b.m).len() >= 3, "{:#?}", errors(&b.m));
    }
}
