//! The abstract syntax tree of a `.hmdp` file, exactly as written, with a byte span on every node.
//!
//! Nothing here is resolved: a name is a string, a label is an identifier that the checker
//! interprets in context. Malformed sub-expressions the parser could not build become
//! [`ExprKind::Error`] so that later stages can go on and report more than one problem.

use crate::diagnostics::Span;

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole model file.
#[derive(Clone, Debug)]
pub struct Model {
    pub name: Ident,
    pub items: Vec<Item>,
}

/// One top-level declaration, in source order.
#[derive(Clone, Debug)]
pub enum Item {
    Size(SizeDecl),
    Set(SetDecl),
    Param(ParamDecl),
    State(StateDecl),
    Noise(NoiseDecl),
    Action(ActionDecl),
    Step(StepBlock),
    Observe(ObserveDecl),
    Horizon(Setting),
    Warmup(Setting),
    Discount(Setting),
    Report(ReportDecl),
    Terminal(TerminalBlock),
    Policy(PolicyDecl),
    Train(TrainBlock),
}

/// `terminal { cost salvage = ... }`: costs of the final states, charged once at the end.
#[derive(Clone, Debug)]
pub struct TerminalBlock {
    /// Each a [`Statement::Cost`].
    pub costs: Vec<Statement>,
    pub span: Span,
}

/// `size items = 10`
#[derive(Clone, Debug)]
pub struct SizeDecl {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `set I = 0..items` (half-open)
#[derive(Clone, Debug)]
pub struct SetDecl {
    pub name: Ident,
    pub lo: Expr,
    pub hi: Expr,
    pub span: Span,
}

/// One dimension in a declaration's brackets: `I` (a set, or a name whose set is inferred from
/// use) or `i in I` (a named index over a set).
#[derive(Clone, Debug)]
pub struct Dim {
    pub first: Ident,
    /// `Some(I)` for `i in I`.
    pub set: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarType {
    Real,
    Int,
    Bool,
}

/// How a parameter, initial state or noise gets its value.
#[derive(Clone, Debug)]
pub enum Definition {
    /// `= expr`: deterministic.
    Value(Expr),
    /// `~ expr`: the expression contains distribution draws.
    Random(Expr),
    /// `from "file.csv"`: read from a data file, path relative to the model file.
    File { path: String, span: Span },
}

/// `param mu[I] ~ uniform(6, 14)`
#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: Ident,
    pub dims: Vec<Dim>,
    pub ty: Option<(ScalarType, Span)>,
    pub def: Definition,
    pub span: Span,
}

/// `state onhand[I] = 0`, or `state last: choice { off, on } = off`
#[derive(Clone, Debug)]
pub struct StateDecl {
    pub name: Ident,
    pub dims: Vec<Dim>,
    /// `: choice ...`: the state holds one of the choice's labels (no type: a real).
    pub choice: Option<(ChoiceType, Span)>,
    pub def: Definition,
    pub span: Span,
}

/// The labels of a choice-typed state: `choice { a, b }` or `choice[M]`.
#[derive(Clone, Debug)]
pub enum ChoiceType {
    Labels(Vec<Ident>),
    OverSet(Ident),
}

/// `noise demand[i in I] ~ poisson(mu[i])`
#[derive(Clone, Debug)]
pub struct NoiseDecl {
    pub name: Ident,
    pub dims: Vec<Dim>,
    pub def: Definition,
    pub span: Span,
}

/// `action q[I]: real >= 0 when order == buy`
#[derive(Clone, Debug)]
pub struct ActionDecl {
    pub name: Ident,
    pub dims: Vec<Dim>,
    pub kind: ActionKind,
    pub when: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ActionKind {
    /// `choice { skip, buy }`
    Labels(Vec<Ident>),
    /// `choice[M]`: one label per element of the set.
    OverSet(Ident),
    /// `real`, `real >= lo`, `real <= hi`, `real in [lo, hi]`, each optionally followed by a
    /// joint bound on the sum of all elements, `, sum <= total`.
    Real { lo: Option<Expr>, hi: Option<Expr>, sum: Option<Box<Expr>> },
}

/// `step { ... }`
#[derive(Clone, Debug)]
pub struct StepBlock {
    pub statements: Vec<Statement>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Statement {
    /// `let post[i] = onhand[i] - demand[i]`
    Let { name: Ident, dims: Vec<Dim>, value: Expr, span: Span },
    /// `cost holding = ...`
    Cost { name: Ident, value: Expr, span: Span },
    /// `onhand'[i] = ...`
    Update { name: Ident, indices: Vec<Expr>, value: Expr, span: Span },
}

/// `policy base_stock { tune S in [0, 100] = 20; let position = ...; q = max(S - position, 0) }`
#[derive(Clone, Debug)]
pub struct PolicyDecl {
    pub name: Ident,
    pub statements: Vec<PolicyStatement>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum PolicyStatement {
    /// `tune S in [0, 100] = 20`: a parameter `hmdpc tune` fits, its bounds and start value.
    Tune { name: Ident, lo: Expr, hi: Expr, start: Expr, span: Span },
    /// `let position[i] = onhand[i] + pipe[i]`
    Let { name: Ident, dims: Vec<Dim>, value: Expr, span: Span },
    /// `q[i] = max(S - position[i], 0)`: the rule for an action, indexed by the names of its
    /// dimensions.
    Assign { name: Ident, indices: Vec<Expr>, value: Expr, span: Span },
}

/// `observe { onhand, pipe }`
#[derive(Clone, Debug)]
pub struct ObserveDecl {
    pub names: Vec<Ident>,
    pub span: Span,
}

/// `horizon 100`, `warmup 16`, `discount 0.99`
#[derive(Clone, Debug)]
pub struct Setting {
    pub value: Expr,
    pub span: Span,
}

/// `train { gamma 0.99  hidden 64, 64  action_scale q = 10 }`: the model's training defaults.
#[derive(Clone, Debug)]
pub struct TrainBlock {
    pub entries: Vec<TrainEntry>,
    pub span: Span,
}

/// One setting of a `train` block: `hidden 64, 64` (a key and its values), or `action_scale q =
/// 10` (a key, the action it is for, and its value).
#[derive(Clone, Debug)]
pub struct TrainEntry {
    pub key: Ident,
    pub target: Option<Ident>,
    pub values: Vec<Expr>,
    pub span: Span,
}

/// `report per period per items` or `report total`
#[derive(Clone, Debug)]
pub struct ReportDecl {
    /// Empty for `report total`.
    pub per: Vec<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    /// The IR operation it lowers to, whose `apply` is its value.
    pub fn operation(self) -> crate::builtins::BinaryOp {
        use crate::builtins::BinaryOp as Op;
        match self {
            BinaryOp::Add => Op::Add,
            BinaryOp::Sub => Op::Sub,
            BinaryOp::Mul => Op::Mul,
            BinaryOp::Div => Op::Div,
            BinaryOp::Rem => Op::Rem,
            BinaryOp::Pow => Op::Pow,
            BinaryOp::Eq => Op::Eq,
            BinaryOp::Ne => Op::Ne,
            BinaryOp::Lt => Op::Lt,
            BinaryOp::Le => Op::Le,
            BinaryOp::Gt => Op::Gt,
            BinaryOp::Ge => Op::Ge,
            BinaryOp::And => Op::And,
            BinaryOp::Or => Op::Or,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// `i in I` inside a reduction.
#[derive(Clone, Debug)]
pub struct Binder {
    pub var: Ident,
    pub set: Ident,
}

#[derive(Clone, Debug)]
pub enum Pattern {
    /// A choice label, or a set element's number for `choice[SET]`.
    Label(Ident),
    Number(i64, Span),
    Wildcard(Span),
}

#[derive(Clone, Debug)]
pub struct MatchArm {
    pub pattern: Pattern,
    pub value: Expr,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    /// A literal; `is_int` when written without a point or exponent.
    Number {
        value: f64,
        is_int: bool,
    },
    Bool(bool),
    /// `x`, `x[i, j]`, or (always an error in an expression) `x'[i]`.
    Access {
        name: Ident,
        primed: bool,
        indices: Vec<Expr>,
    },
    /// `exp(x)`, `max(a, b)`, `poisson(mu)`: functions and distributions.
    Call {
        func: Ident,
        args: Vec<Expr>,
    },
    Reduce {
        op: ReduceOp,
        binders: Vec<Binder>,
        body: Box<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Match {
        scrutinee: Box<Expr>,
        arms: Vec<MatchArm>,
    },
    Paren(Box<Expr>),
    /// A part the parser could not build; a diagnostic has been reported for it.
    Error,
}

impl Definition {
    /// Where the value is written: the expression, or the file name.
    pub fn span(&self) -> Span {
        match self {
            Definition::Value(e) | Definition::Random(e) => e.span,
            Definition::File { span, .. } => *span,
        }
    }
}
