//! The checked model: every declaration resolved to sizes, sets and types, ready to lower.
//!
//! Expressions stay as AST ([`crate::syntax::ast::Expr`]); the checker guarantees that each one
//! is well typed in its context, so lowering resolves names through [`CheckedModel::symbols`]
//! without defending against errors.

use std::collections::HashMap;

use crate::diagnostics::Span;
use crate::syntax::ast::Expr;

pub type SizeId = usize;
pub type SetId = usize;
pub type ParamId = usize;
pub type StateId = usize;
pub type NoiseId = usize;
pub type ActionId = usize;
pub type LetId = usize;

/// What a global name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Symbol {
    Size(SizeId),
    Set(SetId),
    Param(ParamId),
    State(StateId),
    Noise(NoiseId),
    Action(ActionId),
    Let(LetId),
}

/// The type of one element of a declared array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    Real,
    Int,
    Bool,
}

impl ElemType {
    pub fn name(self) -> &'static str {
        match self {
            ElemType::Real => "real",
            ElemType::Int => "int",
            ElemType::Bool => "bool",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Size {
    pub name: String,
    pub value: i64,
    pub span: Span,
}

/// A half-open integer range `lo..hi`, never empty.
#[derive(Clone, Debug)]
pub struct IndexSet {
    pub name: String,
    pub lo: i64,
    pub hi: i64,
    pub span: Span,
}

impl IndexSet {
    pub fn len(&self) -> usize {
        usize::try_from(self.hi - self.lo).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One dimension of a declared array: its set, and the index name the definition uses for it.
#[derive(Clone, Debug)]
pub struct Dimension {
    pub set: SetId,
    pub index: Option<String>,
}

/// How a parameter or an initial state gets its values.
#[derive(Clone, Debug)]
pub enum Definition {
    /// Deterministic expression, evaluated per element with the dimensions' indices bound.
    Value(Expr),
    /// Expression with distribution draws: per instance for parameters, per scenario for states.
    Random(Expr),
    /// Read from a data file, row-major.
    Data(Vec<f64>),
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub dims: Vec<Dimension>,
    pub ty: ElemType,
    pub definition: Definition,
    /// The value, when the parameter is a scalar known at compile time (after `--set`).
    pub constant: Option<f64>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct State {
    pub name: String,
    pub dims: Vec<Dimension>,
    pub initial: Definition,
    /// `state last: choice ...`: the state holds one of these labels (`None`: a real).
    pub choice: Option<Choice>,
    pub span: Span,
}

/// The labels of a state that holds a choice: listed, or for `choice[SET]` (`over_set`) the
/// set's elements, as for a discrete action.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub labels: Vec<String>,
    pub over_set: Option<SetId>,
}

/// Where a value of choice type comes from: a discrete action, or a state that holds a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chooser {
    Action(ActionId),
    State(StateId),
}

/// Exogenous randomness drawn afresh every step.
#[derive(Clone, Debug)]
pub struct Noise {
    pub name: String,
    pub dims: Vec<Dimension>,
    pub ty: ElemType,
    pub distribution: Expr,
    pub span: Span,
}

// Few actions exist per model; boxing the bound expressions would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ActionType {
    /// A discrete choice: its `labels`, or for `choice[SET]` (`over_set`) none, because its labels
    /// are the set's elements and a set may hold up to 10^9 of them: ask
    /// [`CheckedModel::label_count`], [`CheckedModel::label_position`] or
    /// [`CheckedModel::labels`].
    Discrete { labels: Vec<String>, over_set: Option<SetId> },
    /// A continuous action with optional bounds, acting only in the regimes where `when` holds.
    /// `sum` is a joint upper bound on the sum of its elements (`real >= 0, sum <= stock`): only
    /// on a one-dimensional action with the lower bound 0, no upper bound and no `when`. It reads
    /// what a bound may read, but no index name of the action.
    Continuous { lo: Option<Expr>, hi: Option<Expr>, sum: Option<Expr>, when: Option<Expr> },
}

#[derive(Clone, Debug)]
pub struct Action {
    pub name: String,
    pub dims: Vec<Dimension>,
    pub ty: ActionType,
    pub span: Span,
}

impl Action {
    pub fn is_discrete(&self) -> bool {
        matches!(self.ty, ActionType::Discrete { .. })
    }
}

#[derive(Clone, Debug)]
pub struct Let {
    pub name: String,
    pub dims: Vec<Dimension>,
    pub ty: ElemType,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Cost {
    pub name: String,
    pub value: Expr,
    pub span: Span,
}

/// `x'[i, j] = value`: `indices` name the state's dimensions in order.
#[derive(Clone, Debug)]
pub struct Update {
    pub state: StateId,
    pub indices: Vec<String>,
    pub value: Expr,
    pub span: Span,
}

/// One factor the reported cost is divided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportScale {
    /// Per reported period (after warm-up).
    Period,
    /// Per unit of a size, e.g. per item.
    Size(SizeId),
}

/// A heuristic policy declared in the model (`policy NAME { ... }`).
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub tunables: Vec<Tunable>,
    /// In source order; each may read the tunables and `let`s before it.
    pub lets: Vec<Let>,
    /// Exactly one per action of the model.
    pub rules: Vec<Rule>,
    pub span: Span,
}

/// `tune s in [lo, hi] = start`: a parameter of a policy that `hmdpc tune` fits.
#[derive(Clone, Debug)]
pub struct Tunable {
    pub name: String,
    pub lo: f64,
    pub hi: f64,
    pub start: f64,
    pub span: Span,
}

/// `q[i] = value`: a policy's rule for one action; `indices` name the action's dimensions.
/// A labelled choice's value is a label, or an `if` choosing among labels.
#[derive(Clone, Debug)]
pub struct Rule {
    pub action: ActionId,
    pub indices: Vec<String>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Observed {
    State(StateId),
    Param(ParamId),
    /// A `let` of the step that reads only states, parameters and such lets: it is also computed
    /// before the decision (see [`CheckedModel::before_decision`]).
    Let(LetId),
    /// The period index, `period`.
    Period,
}

#[derive(Clone, Debug)]
pub struct CheckedModel {
    pub name: String,
    pub sizes: Vec<Size>,
    pub sets: Vec<IndexSet>,
    pub params: Vec<Param>,
    pub states: Vec<State>,
    pub noises: Vec<Noise>,
    pub actions: Vec<Action>,
    /// In order of the step block; a `let` may read the ones before it.
    pub lets: Vec<Let>,
    pub costs: Vec<Cost>,
    /// Exactly one per state, in the order of `states`.
    pub updates: Vec<Update>,
    pub observe: Vec<Observed>,
    /// The `let`s the observation needs before the decision: the observed ones and the lets they
    /// read, in step order. They are computed from the states (and parameters) before the
    /// policy decides, and again in the step, to the same value.
    pub before_decision: Vec<LetId>,
    pub horizon: u64,
    pub warmup: u64,
    pub discount: f64,
    /// Empty: the reported figure is the total over reported periods.
    pub report: Vec<ReportScale>,
    pub symbols: HashMap<String, Symbol>,
    /// The `if`s whose condition is known at compile time (it reads only numbers, sizes and
    /// constant parameters), by the span of the `if` expression, with the branch taken (`true`:
    /// `then`). Lowering lowers only that branch.
    pub decided: HashMap<Span, bool>,
    /// The costs of the final states, charged once after the last period (`terminal { ... }`).
    pub terminal: Vec<Cost>,
    /// Whether the step or `observe` reads the period index `period`.
    pub reads_period: bool,
    /// The heuristic policies, in source order.
    pub policies: Vec<Policy>,
    /// The model's `train { … }` block.
    pub train: TrainDefaults,
}

/// The training defaults a model carries in its `train { … }` block, each `None` (or empty)
/// where the block does not give it: `hmdpc train` uses them for the settings its command line
/// leaves unset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainDefaults {
    pub gamma: Option<f64>,
    pub buffer_periods: Option<usize>,
    pub hidden: Option<Vec<usize>>,
    /// `action_scale VALUE`: every continuous action not on an interval.
    pub action_scale: Option<f64>,
    /// `action_scale NAME = VALUE`, by action name.
    pub action_scales: std::collections::BTreeMap<String, f64>,
    pub updates: Option<usize>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub patience: Option<usize>,
    pub entropy_half_life: Option<usize>,
}

impl CheckedModel {
    /// Number of scalar values of an array with these dimensions.
    pub fn count(&self, dims: &[Dimension]) -> usize {
        dims.iter().map(|d| self.sets.get(d.set).map_or(0, IndexSet::len)).product()
    }

    /// How many labels a discrete action has (0 for a continuous one).
    pub fn label_count(&self, action: &Action) -> usize {
        match &action.ty {
            ActionType::Discrete { labels, over_set } => self.count_labels(labels, *over_set),
            ActionType::Continuous { .. } => 0,
        }
    }

    /// The position of `label` among the labels of a discrete action; a `choice[SET]`'s labels
    /// are the set's elements written as integers.
    pub fn label_position(&self, action: &Action, label: &str) -> Option<usize> {
        match &action.ty {
            ActionType::Discrete { labels, over_set } => self.position_of(labels, *over_set, label),
            ActionType::Continuous { .. } => None,
        }
    }

    /// Every label of a discrete action, in order. A `choice[SET]`'s are written out here, so
    /// call this where the labels are needed one by one (the IR), not to count or find one.
    pub fn labels(&self, action: &Action) -> Vec<String> {
        match &action.ty {
            ActionType::Discrete { labels, over_set } => self.write_labels(labels, *over_set),
            ActionType::Continuous { .. } => Vec::new(),
        }
    }

    /// The labels of a chooser (listed, or the set of a `choice[SET]`); `None` for a continuous
    /// action or a real state.
    pub fn choice(&self, chooser: Chooser) -> Option<(&[String], Option<SetId>)> {
        match chooser {
            Chooser::Action(a) => match &self.actions.get(a)?.ty {
                ActionType::Discrete { labels, over_set } => Some((labels, *over_set)),
                ActionType::Continuous { .. } => None,
            },
            Chooser::State(s) => self.states.get(s)?.choice.as_ref().map(|c| (c.labels.as_slice(), c.over_set)),
        }
    }

    /// The declared name of a chooser.
    pub fn chooser_name(&self, chooser: Chooser) -> &str {
        match chooser {
            Chooser::Action(a) => self.actions.get(a).map_or("?", |a| a.name.as_str()),
            Chooser::State(s) => self.states.get(s).map_or("?", |s| s.name.as_str()),
        }
    }

    /// [`Self::label_count`] for any chooser.
    pub fn choice_label_count(&self, chooser: Chooser) -> usize {
        self.choice(chooser).map_or(0, |(labels, over_set)| self.count_labels(labels, over_set))
    }

    /// [`Self::label_position`] for any chooser.
    pub fn choice_label_position(&self, chooser: Chooser, label: &str) -> Option<usize> {
        self.choice(chooser).and_then(|(labels, over_set)| self.position_of(labels, over_set, label))
    }

    /// [`Self::labels`] for any chooser.
    pub fn choice_labels(&self, chooser: Chooser) -> Vec<String> {
        self.choice(chooser).map(|(labels, over_set)| self.write_labels(labels, over_set)).unwrap_or_default()
    }

    fn count_labels(&self, labels: &[String], over_set: Option<SetId>) -> usize {
        match over_set {
            Some(set) => self.sets.get(set).map_or(0, IndexSet::len),
            None => labels.len(),
        }
    }

    fn position_of(&self, labels: &[String], over_set: Option<SetId>, label: &str) -> Option<usize> {
        match over_set {
            Some(set) => {
                let set = self.sets.get(set)?;
                let element: i64 = label.parse().ok()?;
                (set.lo..set.hi).contains(&element).then(|| usize::try_from(element - set.lo).ok()).flatten()
            }
            None => labels.iter().position(|l| l == label),
        }
    }

    fn write_labels(&self, labels: &[String], over_set: Option<SetId>) -> Vec<String> {
        match over_set {
            Some(set) => self.sets.get(set).map(|s| (s.lo..s.hi).map(|v| v.to_string()).collect()).unwrap_or_default(),
            None => labels.to_vec(),
        }
    }
}
