//! The built-in functions and distributions of the language, and the scalar operations they
//! become: one table that every stage reads. The checker takes a function's arity, result type
//! and signature from [`FUNCTIONS`] and folds constants with [`Function::fold`]; lowering turns a
//! call into the [`Lowering`] of its entry; the IR's text form spells operations with
//! [`UnaryOp::name`] and [`Dist::name`]; the interpreter evaluates them with [`UnaryOp::apply`]
//! and [`BinaryOp::apply`]; the smoothness analysis reads [`UnaryOp::smoothness`] and
//! [`BinaryOp::smoothness`].
//!
//! Adding a function is one entry in [`FUNCTIONS`]; one that needs a new operation also adds a
//! variant to [`UnaryOp`], whose exhaustive matches (here, and the derivative in `passes::ad`
//! and the code generators in `backend`) then say what else it needs.
//!
//! Invariant: this module depends on nothing else in the crate, so every stage may read it.

/// How an operation behaves in its operands, as the smoothness analysis classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Smoothness {
    /// Differentiable wherever it is defined.
    Smooth,
    /// Continuous, differentiable almost everywhere.
    Kink,
    /// Discontinuous: rounding, `%`, and conditions used as numbers.
    Jump,
}

/// Unary operations. Classes: `Neg` smooth; `Exp`, `Log`, `Sqrt`, `Tanh`, `Sigmoid`, `Softplus`,
/// `Sin`, `Cos` smooth (where defined); `Abs` kink; `Floor`, `Ceil`, `Round` jump; `Not` on a
/// condition: see [`crate::ir::Expr::Select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Softplus,
    Sin,
    Cos,
    Abs,
    Floor,
    Ceil,
    Round,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 14] = [
        UnaryOp::Neg,
        UnaryOp::Not,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Abs,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
    ];

    /// The operation's name in the IR's text form.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Not => "not",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Abs => "abs",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
        }
    }

    /// The operation spelled `name` in the IR's text form.
    pub fn named(name: &str) -> Option<UnaryOp> {
        UnaryOp::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The value, as the interpreter computes it; every backend reproduces it bit for bit.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Not => f64::from(u8::from(x == 0.0)),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            // Stable for large |x|: max(x, 0) + log(1 + exp(-|x|)).
            UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Round => x.round(),
        }
    }

    pub fn smoothness(self) -> Smoothness {
        match self {
            UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round | UnaryOp::Not => Smoothness::Jump,
            UnaryOp::Abs => Smoothness::Kink,
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Softplus
            | UnaryOp::Sin
            | UnaryOp::Cos => Smoothness::Smooth,
        }
    }
}

/// Binary operations. Classes: `Add`, `Sub`, `Mul`, `Div`, `Pow` smooth; `Min`, `Max` kink;
/// `Rem` jump; comparisons and `And`/`Or` give a 0/1 condition whose class is `Regime` when
/// its operands do not depend on active inputs and `Jump` when they do (a condition used as a
/// number, as in `K * (q > 0)`, is a step function of `q`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Min,
    Max,
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
    /// Comparisons and logic: the result is a 0/1 condition, with derivative 0.
    pub fn is_condition(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
                | BinaryOp::And
                | BinaryOp::Or
        )
    }

    /// The value, as the interpreter computes it; every backend reproduces it bit for bit.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        let truth = |c: bool| f64::from(u8::from(c));
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Rem => a % b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Max => a.max(b),
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

    /// A condition is a jump when it is used as a number of active values.
    pub fn smoothness(self) -> Smoothness {
        match self {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow => Smoothness::Smooth,
            BinaryOp::Min | BinaryOp::Max => Smoothness::Kink,
            BinaryOp::Rem
            | BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::And
            | BinaryOp::Or => Smoothness::Jump,
        }
    }
}

/// How many arguments a function takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

/// The type of a function's value, given numeric arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returns {
    Real,
    Int,
    /// An integer when every argument is one, else a real (`abs`, `max`, `min`, `clamp`).
    IntIfAllInt,
}

/// What a call becomes in the IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// `op(x)`.
    Unary(UnaryOp),
    /// `op(x, y)`.
    Binary(BinaryOp),
    /// `op(op(x1, x2), x3) ...`, left to right.
    Fold(BinaryOp),
    /// `clamp(x, lo, hi)` is `min(max(x, lo), hi)`.
    Clamp,
}

/// A built-in function of the language.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub name: &'static str,
    pub arity: Arity,
    /// How to call it, for a help line: `clamp(x, low, high)`.
    pub signature: &'static str,
    pub returns: Returns,
    pub lowering: Lowering,
}

const fn unary(name: &'static str, signature: &'static str, returns: Returns, op: UnaryOp) -> Function {
    Function { name, arity: Arity::Exactly(1), signature, returns, lowering: Lowering::Unary(op) }
}

/// Every built-in function, in the order the language reference lists them.
pub const FUNCTIONS: &[Function] = &[
    unary("exp", "exp(x)", Returns::Real, UnaryOp::Exp),
    unary("log", "log(x)", Returns::Real, UnaryOp::Log),
    unary("sqrt", "sqrt(x)", Returns::Real, UnaryOp::Sqrt),
    unary("tanh", "tanh(x)", Returns::Real, UnaryOp::Tanh),
    unary("sigmoid", "sigmoid(x)", Returns::Real, UnaryOp::Sigmoid),
    unary("softplus", "softplus(x)", Returns::Real, UnaryOp::Softplus),
    unary("sin", "sin(x)", Returns::Real, UnaryOp::Sin),
    unary("cos", "cos(x)", Returns::Real, UnaryOp::Cos),
    unary("abs", "abs(x)", Returns::IntIfAllInt, UnaryOp::Abs),
    Function {
        name: "max",
        arity: Arity::AtLeast(2),
        signature: "max(x, y, ...)",
        returns: Returns::IntIfAllInt,
        lowering: Lowering::Fold(BinaryOp::Max),
    },
    Function {
        name: "min",
        arity: Arity::AtLeast(2),
        signature: "min(x, y, ...)",
        returns: Returns::IntIfAllInt,
        lowering: Lowering::Fold(BinaryOp::Min),
    },
    Function {
        name: "clamp",
        arity: Arity::Exactly(3),
        signature: "clamp(x, low, high)",
        returns: Returns::IntIfAllInt,
        lowering: Lowering::Clamp,
    },
    Function {
        name: "pow",
        arity: Arity::Exactly(2),
        signature: "pow(x, y)",
        returns: Returns::Real,
        lowering: Lowering::Binary(BinaryOp::Pow),
    },
    unary("floor", "floor(x)", Returns::Int, UnaryOp::Floor),
    unary("ceil", "ceil(x)", Returns::Int, UnaryOp::Ceil),
    unary("round", "round(x)", Returns::Int, UnaryOp::Round),
];

/// The built-in function called `name`.
pub fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

impl Function {
    /// The value of a call on known arguments, computed as the IR it lowers to would compute it;
    /// `None` when an argument it needs is missing.
    pub fn fold(&self, args: &[f64]) -> Option<f64> {
        let x = *args.first()?;
        Some(match self.lowering {
            Lowering::Unary(op) => op.apply(x),
            Lowering::Binary(op) => op.apply(x, *args.get(1)?),
            Lowering::Fold(op) => args.iter().skip(1).fold(x, |acc, v| op.apply(acc, *v)),
            Lowering::Clamp => BinaryOp::Min.apply(BinaryOp::Max.apply(x, *args.get(1)?), *args.get(2)?),
        })
    }
}

/// A distribution for [`crate::ir::Expr::Sample`], with its arguments in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dist {
    /// `(low, high)`
    Uniform,
    /// `(mean, sd)`
    Normal,
    /// `(mu, sigma)` of the underlying normal.
    LogNormal,
    /// `(rate)`
    Poisson,
    /// `(trials, p)`
    Binomial,
    /// `(r, p)`: failures before the r-th success.
    NegBinomial,
    /// `(shape, scale)`
    Gamma,
    /// `(p)`: 1 with probability p.
    Bernoulli,
    /// `(w0, w1, ...)`: k with probability proportional to wk.
    Categorical,
}

/// A distribution of the language.
#[derive(Clone, Copy, Debug)]
pub struct Distribution {
    /// Its name in the language and in the IR's text form.
    pub name: &'static str,
    pub dist: Dist,
    /// What each parameter is, for messages; empty for `categorical`, which takes one or more
    /// weights.
    pub params: &'static [&'static str],
    /// How to call it and the domain of its parameters, for a help line.
    pub signature: &'static str,
    /// It draws integers.
    pub integer: bool,
}

/// Every distribution, in the order the language reference lists them. `truncated(dist, lo,
/// hi)` wraps one of them and is not a distribution of its own.
pub const DISTRIBUTIONS: &[Distribution] = &[
    Distribution {
        name: "uniform",
        dist: Dist::Uniform,
        params: &["low", "high"],
        signature: "uniform(low, high) with low < high",
        integer: false,
    },
    Distribution {
        name: "normal",
        dist: Dist::Normal,
        params: &["mean", "standard deviation"],
        signature: "normal(mean, sd) with sd > 0",
        integer: false,
    },
    Distribution {
        name: "lognormal",
        dist: Dist::LogNormal,
        params: &["log-mean", "log-standard deviation"],
        signature: "lognormal(mu, sigma) with sigma > 0: the log is normal(mu, sigma)",
        integer: false,
    },
    Distribution {
        name: "poisson",
        dist: Dist::Poisson,
        params: &["rate"],
        signature: "poisson(rate) with rate >= 0",
        integer: true,
    },
    Distribution {
        name: "binomial",
        dist: Dist::Binomial,
        params: &["trials", "probability"],
        signature: "binomial(trials, p) with trials a whole number >= 0 and 0 <= p <= 1",
        integer: true,
    },
    Distribution {
        name: "negbinomial",
        dist: Dist::NegBinomial,
        params: &["successes", "probability"],
        signature: "negbinomial(r, p): failures before r successes, r > 0 and 0 < p <= 1",
        integer: true,
    },
    Distribution {
        name: "gamma",
        dist: Dist::Gamma,
        params: &["shape", "scale"],
        signature: "gamma(shape, scale) with both > 0",
        integer: false,
    },
    Distribution {
        name: "bernoulli",
        dist: Dist::Bernoulli,
        params: &["probability"],
        signature: "bernoulli(p) with 0 <= p <= 1: 1 with probability p, else 0",
        integer: true,
    },
    Distribution {
        name: "categorical",
        dist: Dist::Categorical,
        params: &[],
        signature: "categorical(w0, w1, ...): k with probability proportional to wk",
        integer: true,
    },
];

/// The distribution called `name`.
pub fn distribution(name: &str) -> Option<&'static Distribution> {
    DISTRIBUTIONS.iter().find(|d| d.name == name)
}

impl Dist {
    /// Its name in the language and in the IR's text form.
    pub fn name(self) -> &'static str {
        DISTRIBUTIONS.iter().find(|d| d.dist == self).map_or("?", |d| d.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_one_name_and_every_name_is_found() {
        for op in UnaryOp::ALL {
            assert_eq!(UnaryOp::named(op.name()), Some(op));
        }
        for d in DISTRIBUTIONS {
            assert_eq!(distribution(d.dist.name()).map(|x| x.dist), Some(d.dist));
        }
        let mut names: Vec<&str> =
            FUNCTIONS.iter().map(|f| f.name).chain(DISTRIBUTIONS.iter().map(|d| d.name)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FUNCTIONS.len() + DISTRIBUTIONS.len(), "a name is used twice");
    }

    #[test]
    fn folding_computes_what_the_lowered_operations_compute() {
        let f = |name: &str, args: &[f64]| function(name).and_then(|f| f.fold(args));
        assert_eq!(f("max", &[1.0, 5.0, 3.0]), Some(5.0));
        assert_eq!(f("min", &[1.0, 5.0, -3.0]), Some(-3.0));
        assert_eq!(f("clamp", &[7.0, 0.0, 5.0]), Some(5.0));
        assert_eq!(f("clamp", &[-7.0, 0.0, 5.0]), Some(0.0));
        assert_eq!(f("pow", &[2.0, 10.0]), Some(1024.0));
        assert_eq!(f("softplus", &[0.0]), Some(std::f64::consts::LN_2));
        assert_eq!(f("round", &[2.5]), Some(3.0));
        assert_eq!(f("clamp", &[1.0, 2.0]), None);
    }
}
