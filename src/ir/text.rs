//! The textual IR, in the spirit of Cranelift's `.clif`: [`print`] writes a [`Module`] as text a
//! person can read to check what the compiler did, and [`parse`] reads that text back, so a pass
//! can be tested IR-in / IR-out and a golden file shows the IR in a diff. To see the format, print
//! any module; to write IR by hand, copy a printed one (a `//` comment runs to the end of a line).
//!
//! ```text
//! module joint_replenishment
//! horizon 100
//! warmup 16
//! discount 1.0
//! report per period per items=10
//!
//! set I = 0..10
//!
//! param mu[I]: real
//! param h[I]: real = data [1.0, 0.5, ...]
//! state onhand[I]: real
//! next onhand'[I]: real of onhand
//! noise demand[I]: int
//! discrete order: int {skip, buy}
//! continuous q[I]: real
//! bound q.lo[I]: real lower of q
//! regime q.when[I]: bool of q
//! let post[I]: real
//! cost holding: real
//! adjoint onhand.adj[I]: real of onhand
//! adjoint post.adj[I]: real of post
//! adjoint holding.adj: real of holding
//!
//! observe onhand, mu
//!
//! step {
//!     for v0 in I {
//!         store post[v0] = (onhand[v0] - demand[v0])
//!     }
//!     store holding = sum(v1 in I) (h[v1] * max(post[v1], 0.0))
//! }
//!
//! vjp {
//!     for v0 in I {
//!         store post[v0] = (onhand[v0] - demand[v0])
//!     }
//!     store holding = sum(v1 in I) (h[v1] * max(post[v1], 0.0))
//!     for v1 in I {
//!         if (post[v1] >= 0.0) {
//!             accumulate post.adj[v1] += (holding.adj * h[v1])
//!         }
//!     }
//!     for v0 in I {
//!         accumulate onhand.adj[v0] += post.adj[v0]
//!     }
//! }
//! ```
//!
//! Buffers are listed in `BufferId` order and the six programs in the order a run executes them
//! (empty ones too), then `vjp` if it is not empty (once the module is differentiated; a text
//! without `vjp` has an empty one), then `bounds_vjp` likewise. Statements are `for VAR in SET { ... }`, `store
//! BUFFER[VAR, ...] = EXPR`, `if EXPR { ... } else { ... }` (the `else` part printed only when
//! it is not empty) and `accumulate BUFFER[EXPR, ...] += EXPR`. Each expression is printed as a
//! tree at the statement that uses it; binary operators are infix and always parenthesised, so
//! no precedence is involved: `(a + b)`, `(a ^ b)`, `(a == b)`, `(a and b)`, `(if c then a else
//! b)`; the rest are calls: `neg(x)`, `max(a, b)`, `sum(v1 in I) body` (also `prod`, `max`,
//! `min`, `argmax`, `argmin`), `sample normal(m, s) truncate(lo, hi)`. A load is the buffer
//! name with its index (`K` for a scalar), a loop or reduction variable is `v` and its number.
//! Numbers are printed with `{:?}`, which gives the shortest text that parses back to the same
//! `f64`. A name that is not a plain word, or is one of the format's keywords (`cost`, `in`, `v3`,
//! ...), is printed quoted with Rust escapes: `"cost"`.
//!
//! What round-trips, for every module that validates and whose expressions and blocks are at most
//! [`MAX_DEPTH`] deep: `print(&parse(&print(m))?) == print(m)`, and `parse(&print(m))` equals `m`
//! up to spans and the numbering of expression nodes. `parse` creates each statement's nodes
//! children first, left to right (an `if`'s condition before its branches, an accumulation's
//! indices before its value), statement by statement in the printed order, with empty spans; so
//! `parse(&print(m))? == m` exactly when `m`'s arena is that post-order (which is what building
//! each statement's expressions bottom-up, program by program, gives), no node is shared or
//! unused, and all spans are empty. A shared node is printed at each use and parsed back as
//! copies; an unused node is not printed. An invalid module may not parse back: `print` never
//! panics, and marks what it cannot print (a dangling handle or id, a forward reference) as
//! `<...>`, which does not parse.
//!
//! `parse` checks syntax and resolves names (sets and buffers must be declared before a program
//! uses them; `of` and `observe` may name a buffer declared later), but nothing else: run
//! [`super::validate`] on what it returns. Whitespace and line breaks only separate tokens.
//! `module NAME` comes first; after it, items may come in any order, and hand-written IR may
//! leave out `warmup` (0), `discount` (1.0), `report` (`total`), `observe` (none) and empty
//! programs, but not `horizon`. It never panics; an error says the line and column and what was
//! expected there.

// Text given to `parse` is user data: nothing here may panic on it (STYLE.md).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::collections::HashMap;
use std::fmt;

use super::{
    Arena, BinaryOp, Buffer, BufferId, BufferKind, ElemType, Expr, Handle, Module, Program, ReduceOp, Report, Set,
    SetId, Stmt, UnaryOp, Var,
};
use crate::builtins::DISTRIBUTIONS;
use crate::diagnostics::Span;

/// Expressions nested deeper than this are refused by `parse`, so that garbled input such as
/// thousands of `(` cannot overflow the stack. Far above what lowering a model produces.
pub const MAX_DEPTH: usize = 1000;

/// The textual form of `module`.
pub fn print(module: &Module) -> String {
    Printer(module).to_string()
}

const PROGRAMS: [&str; 8] = ["instance", "init", "noise", "bounds", "regimes", "step", "vjp", "bounds_vjp"];

fn programs(module: &Module) -> [&Program; 8] {
    [
        &module.instance,
        &module.init,
        &module.noise,
        &module.bounds,
        &module.regimes,
        &module.step,
        &module.vjp,
        &module.bounds_vjp,
    ]
}

/// Binary operators written infix; `Min` and `Max` are written as calls.
const INFIX: [(BinaryOp, &str); 14] = [
    (BinaryOp::Add, "+"),
    (BinaryOp::Sub, "-"),
    (BinaryOp::Mul, "*"),
    (BinaryOp::Div, "/"),
    (BinaryOp::Rem, "%"),
    (BinaryOp::Pow, "^"),
    (BinaryOp::Eq, "=="),
    (BinaryOp::Ne, "!="),
    (BinaryOp::Lt, "<"),
    (BinaryOp::Le, "<="),
    (BinaryOp::Gt, ">"),
    (BinaryOp::Ge, ">="),
    (BinaryOp::And, "and"),
    (BinaryOp::Or, "or"),
];

const REDUCE: [(ReduceOp, &str); 6] = [
    (ReduceOp::Sum, "sum"),
    (ReduceOp::Prod, "prod"),
    (ReduceOp::Max, "max"),
    (ReduceOp::Min, "min"),
    (ReduceOp::ArgMax, "argmax"),
    (ReduceOp::ArgMin, "argmin"),
];

const ELEMS: [(ElemType, &str); 3] = [(ElemType::Real, "real"), (ElemType::Int, "int"), (ElemType::Bool, "bool")];

/// Words with a meaning somewhere in the format. A name spelled like one is printed quoted, so
/// a bare word is never both a keyword and a name, wherever it appears.
const KEYWORDS: [&str; 45] = [
    "module",
    "horizon",
    "warmup",
    "discount",
    "report",
    "per",
    "period",
    "total",
    "set",
    "observe",
    "data",
    "of",
    "lower",
    "upper",
    "param",
    "state",
    "next",
    "noise",
    "discrete",
    "continuous",
    "bound",
    "piece_bound",
    "sum_bound",
    "regime",
    "let",
    "cost",
    "adjoint",
    "instance",
    "init",
    "bounds",
    "regimes",
    "step",
    "vjp",
    "bounds_vjp",
    "for",
    "in",
    "store",
    "accumulate",
    "if",
    "then",
    "else",
    "sample",
    "truncate",
    "inf",
    "NaN",
];

fn name_of<T: Copy + PartialEq>(table: &[(T, &'static str)], item: T) -> &'static str {
    table.iter().find(|(it, _)| *it == item).map_or("?", |(_, name)| name)
}

fn item_named<T: Copy>(table: &[(T, &'static str)], word: &str) -> Option<T> {
    table.iter().find(|(_, name)| *name == word).map(|(it, _)| *it)
}

/// `v` followed by digits: the spelling of a variable.
fn is_var_word(word: &str) -> bool {
    word.strip_prefix('v').is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn is_reserved(word: &str) -> bool {
    KEYWORDS.contains(&word)
        || is_var_word(word)
        || UnaryOp::named(word).is_some()
        || item_named(&INFIX, word).is_some()
        || item_named(&REDUCE, word).is_some()
        || crate::builtins::distribution(word).is_some()
        || item_named(&ELEMS, word).is_some()
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// Names may contain `.` and `'` so that `q.lo` and `onhand'` print bare.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '\'')
}

/// A name as printed: bare when the lexer reads it back as one plain name, else quoted.
struct Name<'a>(&'a str);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        let bare = chars.next().is_some_and(is_name_start) && chars.all(is_name_char) && !is_reserved(self.0);
        if bare { f.write_str(self.0) } else { write!(f, "{:?}", self.0) }
    }
}

struct Printer<'m>(&'m Module);

impl fmt::Display for Printer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        writeln!(f, "module {}", Name(&m.name))?;
        writeln!(f, "horizon {}", m.horizon)?;
        writeln!(f, "warmup {}", m.warmup)?;
        writeln!(f, "discount {:?}", m.discount)?;
        f.write_str("report")?;
        if m.report.per_period {
            f.write_str(" per period")?;
        }
        for (size, value) in &m.report.per_size {
            write!(f, " per {}={value}", Name(size))?;
        }
        if !m.report.per_period && m.report.per_size.is_empty() {
            f.write_str(" total")?;
        }
        f.write_str("\n\n")?;

        for set in &m.sets {
            writeln!(f, "set {} = {}..{}", Name(&set.name), set.lo, set.hi)?;
        }
        if !m.sets.is_empty() {
            f.write_str("\n")?;
        }
        for buffer in &m.buffers {
            self.buffer(f, buffer)?;
        }
        if !m.buffers.is_empty() {
            f.write_str("\n")?;
        }

        f.write_str("observe")?;
        for (i, id) in m.observe.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            self.buffer_ref(f, *id)?;
        }
        f.write_str("\n")?;

        for (name, program) in PROGRAMS.iter().zip(programs(m)) {
            // `vjp` and `bounds_vjp` are empty until the module is differentiated; then they are
            // printed last.
            if (*name == "vjp" || *name == "bounds_vjp") && program.body.is_empty() {
                continue;
            }
            writeln!(f, "\n{name} {{")?;
            self.stmts(f, &program.body, 1)?;
            f.write_str("}\n")?;
        }
        Ok(())
    }
}

impl Printer<'_> {
    fn buffer(&self, f: &mut fmt::Formatter<'_>, buffer: &Buffer) -> fmt::Result {
        let kind = match buffer.kind {
            BufferKind::Param => "param",
            BufferKind::State => "state",
            BufferKind::Next { .. } => "next",
            BufferKind::Noise => "noise",
            BufferKind::Discrete => "discrete",
            BufferKind::Continuous => "continuous",
            BufferKind::Bound { .. } => "bound",
            BufferKind::PieceBound { .. } => "piece_bound",
            BufferKind::SumBound { .. } => "sum_bound",
            BufferKind::Regime { .. } => "regime",
            BufferKind::Let => "let",
            BufferKind::Cost => "cost",
            BufferKind::Adjoint { .. } => "adjoint",
        };
        write!(f, "{kind} {}", Name(&buffer.name))?;
        if !buffer.dims.is_empty() {
            f.write_str("[")?;
            for (i, set) in buffer.dims.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                self.set_ref(f, *set)?;
            }
            f.write_str("]")?;
        }
        write!(f, ": {}", name_of(&ELEMS, buffer.elem))?;
        if !buffer.labels.is_empty() {
            f.write_str(" {")?;
            for (i, label) in buffer.labels.iter().enumerate() {
                write!(f, "{}{}", if i == 0 { "" } else { ", " }, Name(label))?;
            }
            f.write_str("}")?;
        }
        match buffer.kind {
            BufferKind::Next { of }
            | BufferKind::Regime { action: of }
            | BufferKind::SumBound { action: of }
            | BufferKind::Adjoint { of } => {
                f.write_str(" of ")?;
                self.buffer_ref(f, of)?;
            }
            BufferKind::Bound { action, upper } | BufferKind::PieceBound { action, upper } => {
                f.write_str(if upper { " upper of " } else { " lower of " })?;
                self.buffer_ref(f, action)?;
            }
            _ => {}
        }
        if let Some(data) = &buffer.data {
            f.write_str(" = data [")?;
            for (i, value) in data.iter().enumerate() {
                // Long tables wrap, ten values a line, so that the file stays readable.
                let separator = match i {
                    0 => "",
                    _ if i % 10 == 0 => ",\n    ",
                    _ => ", ",
                };
                write!(f, "{separator}{value:?}")?;
            }
            f.write_str("]")?;
        }
        f.write_str("\n")
    }

    fn set_ref(&self, f: &mut fmt::Formatter<'_>, id: SetId) -> fmt::Result {
        match self.0.sets.get(id) {
            Some(set) => write!(f, "{}", Name(&set.name)),
            None => write!(f, "<set #{id} out of range>"),
        }
    }

    fn buffer_ref(&self, f: &mut fmt::Formatter<'_>, id: BufferId) -> fmt::Result {
        match self.0.buffers.get(id) {
            Some(buffer) => write!(f, "{}", Name(&buffer.name)),
            None => write!(f, "<buffer #{id} out of range>"),
        }
    }

    fn stmts(&self, f: &mut fmt::Formatter<'_>, stmts: &[Stmt], depth: usize) -> fmt::Result {
        for stmt in stmts {
            write!(f, "{:width$}", "", width = 4 * depth)?;
            match stmt {
                Stmt::For { var, set, body } => {
                    write!(f, "for v{} in ", var.0)?;
                    self.set_ref(f, *set)?;
                    f.write_str(" {\n")?;
                    self.stmts(f, body, depth + 1)?;
                    writeln!(f, "{:width$}}}", "", width = 4 * depth)?;
                }
                Stmt::Store { buffer, index, value } => {
                    f.write_str("store ")?;
                    self.buffer_ref(f, *buffer)?;
                    if !index.is_empty() {
                        f.write_str("[")?;
                        for (i, var) in index.iter().enumerate() {
                            write!(f, "{}v{}", if i == 0 { "" } else { ", " }, var.0)?;
                        }
                        f.write_str("]")?;
                    }
                    f.write_str(" = ")?;
                    self.expr(f, *value, None)?;
                    f.write_str("\n")?;
                }
                Stmt::If { cond, then, otherwise } => {
                    f.write_str("if ")?;
                    self.expr(f, *cond, None)?;
                    f.write_str(" {\n")?;
                    self.stmts(f, then, depth + 1)?;
                    write!(f, "{:width$}}}", "", width = 4 * depth)?;
                    if !otherwise.is_empty() {
                        f.write_str(" else {\n")?;
                        self.stmts(f, otherwise, depth + 1)?;
                        write!(f, "{:width$}}}", "", width = 4 * depth)?;
                    }
                    f.write_str("\n")?;
                }
                Stmt::Accumulate { buffer, index, value } => {
                    f.write_str("accumulate ")?;
                    self.buffer_ref(f, *buffer)?;
                    if !index.is_empty() {
                        f.write_str("[")?;
                        self.list(f, index, None)?;
                        f.write_str("]")?;
                    }
                    f.write_str(" += ")?;
                    self.expr(f, *value, None)?;
                    f.write_str("\n")?;
                }
            }
        }
        Ok(())
    }

    /// Prints the tree under `handle`. `parent` is the node that refers to it: a valid module
    /// only refers to earlier nodes, and refusing anything else keeps a cyclic arena from
    /// looping forever.
    fn expr(&self, f: &mut fmt::Formatter<'_>, handle: Handle<Expr>, parent: Option<Handle<Expr>>) -> fmt::Result {
        let Some(expr) = self.0.exprs.get(handle) else {
            return write!(f, "<{handle:?} out of range>");
        };
        if parent.is_some_and(|parent| handle.index() >= parent.index()) {
            return write!(f, "<{handle:?} is not an earlier node>");
        }
        let here = Some(handle);
        match expr {
            Expr::Const(value) => write!(f, "{value:?}"),
            Expr::Var(var) => write!(f, "v{}", var.0),
            Expr::Load { buffer, index } => {
                self.buffer_ref(f, *buffer)?;
                if !index.is_empty() {
                    f.write_str("[")?;
                    self.list(f, index, here)?;
                    f.write_str("]")?;
                }
                Ok(())
            }
            Expr::Unary { op, arg } => {
                write!(f, "{}(", op.name())?;
                self.expr(f, *arg, here)?;
                f.write_str(")")
            }
            Expr::Binary { op: op @ (BinaryOp::Min | BinaryOp::Max), lhs, rhs } => {
                f.write_str(if *op == BinaryOp::Min { "min(" } else { "max(" })?;
                self.list(f, &[*lhs, *rhs], here)?;
                f.write_str(")")
            }
            Expr::Binary { op, lhs, rhs } => {
                f.write_str("(")?;
                self.expr(f, *lhs, here)?;
                write!(f, " {} ", name_of(&INFIX, *op))?;
                self.expr(f, *rhs, here)?;
                f.write_str(")")
            }
            Expr::Select { cond, then, otherwise } => {
                f.write_str("(if ")?;
                self.expr(f, *cond, here)?;
                f.write_str(" then ")?;
                self.expr(f, *then, here)?;
                f.write_str(" else ")?;
                self.expr(f, *otherwise, here)?;
                f.write_str(")")
            }
            Expr::Reduce { op, var, set, body } => {
                write!(f, "{}(v{} in ", name_of(&REDUCE, *op), var.0)?;
                self.set_ref(f, *set)?;
                f.write_str(") ")?;
                self.expr(f, *body, here)
            }
            Expr::Sample { dist, args, truncate } => {
                write!(f, "sample {}(", dist.name())?;
                self.list(f, args, here)?;
                f.write_str(")")?;
                if let Some((lo, hi)) = truncate {
                    f.write_str(" truncate(")?;
                    self.list(f, &[*lo, *hi], here)?;
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }

    fn list(&self, f: &mut fmt::Formatter<'_>, items: &[Handle<Expr>], parent: Option<Handle<Expr>>) -> fmt::Result {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            self.expr(f, *item, parent)?;
        }
        Ok(())
    }
}

/// Reads the textual form back; see the module doc for what round-trips. The error says where
/// (`line 3, column 7`) and what was expected there.
pub fn parse(text: &str) -> Result<Module, String> {
    let tokens = lex(text)?;
    let end = tokens.last().map_or(Pos { line: 1, column: 1 }, |t| t.end);
    let end = Token { tok: Tok::End, at: end, end };
    Parser {
        tokens,
        end,
        next: 0,
        sets: Vec::new(),
        set_ids: HashMap::new(),
        buffers: Vec::new(),
        buffer_ids: HashMap::new(),
        exprs: Arena::default(),
        forward: Vec::new(),
    }
    .module()
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Pos {
    line: usize,
    column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare word: a keyword or a name.
    Word(String),
    /// A quoted name, unescaped.
    Quoted(String),
    /// The text of an unsigned number; its meaning depends on where it appears.
    Number(String),
    Punct(&'static str),
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(word) => write!(f, "`{word}`"),
            Tok::Quoted(name) => write!(f, "{name:?}"),
            Tok::Number(text) => write!(f, "`{text}`"),
            Tok::Punct(punct) => write!(f, "`{punct}`"),
            Tok::End => f.write_str("the end of the text"),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    at: Pos,
    /// Just past the token, so that "expected ..." at the end of the text points after the
    /// last token.
    end: Pos,
}

/// Longest first, so that `<=` is not read as `<` and `=`.
const PUNCT: [&str; 23] = [
    "..", "==", "!=", "<=", ">=", "+=", "{", "}", "[", "]", "(", ")", ",", ":", "=", "+", "-", "*", "/", "%", "^", "<",
    ">",
];

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut pos = Pos { line: 1, column: 1 };
    // Advances over `n` chars, keeping the position.
    let advance = |i: &mut usize, pos: &mut Pos, n: usize| {
        for _ in 0..n {
            if chars.get(*i) == Some(&'\n') {
                pos.line += 1;
                pos.column = 1;
            } else {
                pos.column += 1;
            }
            *i += 1;
        }
    };
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        let start = pos;
        let tok = if c.is_whitespace() {
            advance(&mut i, &mut pos, 1);
            continue;
        } else if c == '/' && at(i + 1) == Some('/') {
            while at(i).is_some_and(|c| c != '\n') {
                advance(&mut i, &mut pos, 1);
            }
            continue;
        } else if is_name_start(c) {
            let len = chars.get(i..).unwrap_or_default().iter().take_while(|c| is_name_char(**c)).count();
            let word: String = chars.get(i..i + len).unwrap_or_default().iter().collect();
            advance(&mut i, &mut pos, len);
            Tok::Word(word)
        } else if c.is_ascii_digit() {
            let digits =
                |from: usize| chars.get(from..).unwrap_or_default().iter().take_while(|c| c.is_ascii_digit()).count();
            let mut len = digits(i);
            if at(i + len) == Some('.') && at(i + len + 1).is_some_and(|c| c.is_ascii_digit()) {
                len += 1 + digits(i + len + 1);
            }
            if matches!(at(i + len), Some('e' | 'E')) {
                let sign = usize::from(matches!(at(i + len + 1), Some('+' | '-')));
                let exponent = digits(i + len + 1 + sign);
                if exponent > 0 {
                    len += 1 + sign + exponent;
                }
            }
            let number: String = chars.get(i..i + len).unwrap_or_default().iter().collect();
            advance(&mut i, &mut pos, len);
            Tok::Number(number)
        } else if c == '"' {
            let (name, len) = unquote(chars.get(i..).unwrap_or_default()).map_err(|(offset, why)| {
                let mut pos = start;
                let mut j = i;
                advance(&mut j, &mut pos, offset);
                format!("{pos}: {why}")
            })?;
            advance(&mut i, &mut pos, len);
            Tok::Quoted(name)
        } else if let Some(punct) = PUNCT.iter().find(|p| p.chars().enumerate().all(|(k, pc)| at(i + k) == Some(pc))) {
            advance(&mut i, &mut pos, punct.chars().count());
            Tok::Punct(punct)
        } else {
            return Err(format!("{start}: unexpected character {c:?}"));
        };
        tokens.push(Token { tok, at: start, end: pos });
    }
    Ok(tokens)
}

/// Reads a quoted name starting at `chars[0] == '"'`, undoing the escapes `{:?}` writes. Returns
/// the name and the number of chars read, or the offset and reason of the error.
fn unquote(chars: &[char]) -> Result<(String, usize), (usize, String)> {
    let mut name = String::new();
    let mut i = 1;
    loop {
        match chars.get(i) {
            None => return Err((0, "this quoted name has no closing `\"`".into())),
            Some('"') => return Ok((name, i + 1)),
            Some('\\') => {
                let escaped = match chars.get(i + 1) {
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('0') => '\0',
                    Some(c @ ('\\' | '"' | '\'')) => *c,
                    Some('u') if chars.get(i + 2) == Some(&'{') => {
                        let hex: String =
                            chars.get(i + 3..).unwrap_or_default().iter().take_while(|c| **c != '}').collect();
                        let code = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        match code {
                            Some(c) if chars.get(i + 3 + hex.chars().count()) == Some(&'}') => {
                                name.push(c);
                                i += 4 + hex.chars().count();
                                continue;
                            }
                            _ => return Err((i, "expected a `\\u{...}` escape with a valid code point".into())),
                        }
                    }
                    _ => return Err((i, "unknown escape; use \\n, \\r, \\t, \\0, \\\\, \\\", \\' or \\u{...}".into())),
                };
                name.push(escaped);
                i += 2;
            }
            Some(c) => {
                name.push(*c);
                i += 1;
            }
        }
    }
}

type Parsed<T> = Result<T, String>;

struct Parser {
    tokens: Vec<Token>,
    /// Returned by `peek` past the last token.
    end: Token,
    next: usize,
    sets: Vec<Set>,
    set_ids: HashMap<String, SetId>,
    buffers: Vec<Buffer>,
    buffer_ids: HashMap<String, BufferId>,
    exprs: Arena<Expr>,
    /// Names that may refer to a buffer declared later (`of`, `observe`), resolved at the end.
    forward: Vec<(Forward, String, Pos)>,
}

/// Where a name resolved at the end goes.
#[derive(Clone, Copy)]
enum Forward {
    Of(BufferId),
    Observe(usize),
}

/// What the header and the list of programs hold while the rest of the text is read.
#[derive(Default)]
struct Header {
    horizon: Option<u64>,
    warmup: Option<u64>,
    discount: Option<f64>,
    report: Option<Report>,
    observe: Option<Vec<BufferId>>,
    programs: [Option<Program>; 8],
}

impl Parser {
    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        self.tokens.get(self.next + ahead).unwrap_or(&self.end)
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        self.next += 1;
        token
    }

    fn expected<T>(&self, what: &str) -> Parsed<T> {
        let token = self.peek();
        let at = if token.tok == Tok::End { token.end } else { token.at };
        Err(format!("{at}: expected {what}, found {}", token.tok))
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w == word)
    }

    fn at_punct(&self, punct: &str) -> bool {
        matches!(self.peek().tok, Tok::Punct(p) if p == punct)
    }

    fn word(&mut self, word: &str) -> Parsed<()> {
        if self.at_word(word) {
            self.bump();
            Ok(())
        } else {
            self.expected(&format!("`{word}`"))
        }
    }

    fn punct(&mut self, punct: &str) -> Parsed<()> {
        if self.at_punct(punct) {
            self.bump();
            Ok(())
        } else {
            self.expected(&format!("`{punct}`"))
        }
    }

    /// Eats `punct` if it is next.
    fn eat(&mut self, punct: &str) -> bool {
        let here = self.at_punct(punct);
        if here {
            self.bump();
        }
        here
    }

    /// A name: a quoted string, or a bare word that is not a keyword.
    fn name(&mut self, what: &str) -> Parsed<(String, Pos)> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Quoted(name) => {
                self.bump();
                Ok((name, token.at))
            }
            Tok::Word(word) if !is_reserved(&word) => {
                self.bump();
                Ok((word, token.at))
            }
            Tok::Word(word) => Err(format!(
                "{}: expected {what}, found `{word}`, which is reserved (a name spelled like a keyword or a \
                 variable is written quoted: \"{word}\")",
                token.at
            )),
            _ => self.expected(what),
        }
    }

    fn at_name(&self) -> bool {
        match &self.peek().tok {
            Tok::Quoted(_) => true,
            Tok::Word(word) => !is_reserved(word),
            _ => false,
        }
    }

    fn unsigned(&mut self, what: &str) -> Parsed<u64> {
        let token = self.peek().clone();
        match &token.tok {
            Tok::Number(text) => match text.parse::<u64>() {
                Ok(value) => {
                    self.bump();
                    Ok(value)
                }
                Err(_) => Err(format!("{}: expected {what}, a whole number, found `{text}`", token.at)),
            },
            _ => self.expected(what),
        }
    }

    fn signed(&mut self, what: &str) -> Parsed<i64> {
        let negative = self.eat("-");
        let token = self.peek().clone();
        let magnitude = self.unsigned(what)?;
        let value = if negative { 0i128 - i128::from(magnitude) } else { i128::from(magnitude) };
        i64::try_from(value).map_err(|_| format!("{}: {what} {value} is out of range", token.at))
    }

    /// A finite number, possibly negative. Also refuses `inf` and `NaN`, which `{:?}` prints for
    /// non-finite values: data hold finite numbers only.
    fn number(&mut self, what: &str) -> Parsed<f64> {
        self.number_or_infinity(what, false)
    }

    /// A number; `inf` and `-inf` too when `infinite` (constants: an unbounded piece of an
    /// action's domain has an infinite bound). `NaN` never.
    fn number_or_infinity(&mut self, what: &str, infinite: bool) -> Parsed<f64> {
        let negative = self.eat("-");
        let token = self.peek().clone();
        let magnitude = match &token.tok {
            Tok::Number(text) => match text.parse::<f64>() {
                Ok(value) if value.is_finite() => value,
                _ => return Err(format!("{}: the number `{text}` is too large for an f64", token.at)),
            },
            Tok::Word(word) if word == "inf" && infinite => f64::INFINITY,
            Tok::Word(word) if word == "inf" || word == "NaN" => {
                return Err(format!("{}: `{word}` is not a finite number; the IR holds finite numbers only", token.at));
            }
            _ => return self.expected(what),
        };
        self.bump();
        Ok(if negative { -magnitude } else { magnitude })
    }

    fn var(&mut self) -> Parsed<Var> {
        let token = self.peek().clone();
        match &token.tok {
            Tok::Word(word) if is_var_word(word) => {
                let number = word.get(1..).unwrap_or_default();
                let var = number
                    .parse::<u32>()
                    .map_err(|_| format!("{}: variable number `{number}` is too large", token.at))?;
                self.bump();
                Ok(Var(var))
            }
            _ => self.expected("a variable (`v0`, `v1`, ...)"),
        }
    }

    fn set_ref(&mut self) -> Parsed<SetId> {
        let (name, at) = self.name("a set name")?;
        self.set_ids.get(&name).copied().ok_or_else(|| format!("{at}: unknown set `{name}` (declare it with `set`)"))
    }

    fn buffer_ref(&mut self) -> Parsed<BufferId> {
        let (name, at) = self.name("a buffer name")?;
        self.buffer_ids
            .get(&name)
            .copied()
            .ok_or_else(|| format!("{at}: unknown buffer `{name}` (a buffer is declared before the programs)"))
    }

    fn module(mut self) -> Parsed<Module> {
        self.word("module")?;
        let (name, _) = self.name("the module's name")?;
        let mut header = Header::default();
        loop {
            let token = self.peek().clone();
            let Tok::Word(word) = &token.tok else {
                if token.tok == Tok::End {
                    break;
                }
                return self.expected("a declaration or a program");
            };
            let seen = match word.as_str() {
                "horizon" => {
                    self.bump();
                    header.horizon.replace(self.unsigned("the horizon")?).is_some()
                }
                "warmup" => {
                    self.bump();
                    header.warmup.replace(self.unsigned("the warmup")?).is_some()
                }
                "discount" => {
                    self.bump();
                    header.discount.replace(self.number("the discount")?).is_some()
                }
                "report" => {
                    let report = self.report()?;
                    header.report.replace(report).is_some()
                }
                "observe" => {
                    let observe = self.observe()?;
                    header.observe.replace(observe).is_some()
                }
                "set" => {
                    self.set()?;
                    false
                }
                "noise" if self.peek_at(1).tok != Tok::Punct("{") => {
                    self.buffer()?;
                    false
                }
                "param" | "state" | "next" | "discrete" | "continuous" | "bound" | "piece_bound" | "sum_bound"
                | "regime" | "let" | "cost" | "adjoint" => {
                    self.buffer()?;
                    false
                }
                _ => match PROGRAMS.iter().position(|p| p == word) {
                    Some(which) => {
                        self.bump();
                        let body = self.block(0)?;
                        header.programs.get_mut(which).and_then(|slot| slot.replace(Program { body })).is_some()
                    }
                    None => {
                        return self.expected(
                            "a declaration (`horizon`, `warmup`, `discount`, `report`, `set`, `param`, `state`, \
                             `next`, `noise`, `discrete`, `continuous`, `bound`, `regime`, `let`, `cost`, \
                             `adjoint`, `observe`) or a program (`instance`, `init`, `noise`, `bounds`, `regimes`, \
                             `step`, `vjp`, `bounds_vjp`)",
                        );
                    }
                },
            };
            if seen {
                return Err(format!("{}: `{word}` appears twice", token.at));
            }
        }
        let mut observe = header.observe.unwrap_or_default();
        for (slot, name, at) in std::mem::take(&mut self.forward) {
            let id = *self.buffer_ids.get(&name).ok_or_else(|| format!("{at}: unknown buffer `{name}`"))?;
            match slot {
                Forward::Of(buffer) => match self.buffers.get_mut(buffer).map(|b| &mut b.kind) {
                    Some(BufferKind::Next { of } | BufferKind::Adjoint { of }) => *of = id,
                    Some(
                        BufferKind::Bound { action, .. }
                        | BufferKind::PieceBound { action, .. }
                        | BufferKind::SumBound { action }
                        | BufferKind::Regime { action },
                    ) => *action = id,
                    _ => {}
                },
                Forward::Observe(position) => {
                    if let Some(entry) = observe.get_mut(position) {
                        *entry = id;
                    }
                }
            }
        }
        let Some(horizon) = header.horizon else {
            return Err(format!("{}: the module has no `horizon`", self.end.end));
        };
        let [instance, init, noise, bounds, regimes, step, vjp, bounds_vjp] =
            header.programs.map(Option::unwrap_or_default);
        Ok(Module {
            name,
            sets: self.sets,
            buffers: self.buffers,
            exprs: self.exprs,
            instance,
            init,
            noise,
            bounds,
            regimes,
            step,
            vjp,
            bounds_vjp,
            observe,
            horizon,
            warmup: header.warmup.unwrap_or(0),
            discount: header.discount.unwrap_or(1.0),
            report: header.report.unwrap_or(Report { per_period: false, per_size: Vec::new() }),
        })
    }

    /// `report total` or `report per period per items=10`.
    fn report(&mut self) -> Parsed<Report> {
        self.word("report")?;
        let mut report = Report { per_period: false, per_size: Vec::new() };
        if self.at_word("total") {
            self.bump();
            return Ok(report);
        }
        if !self.at_word("per") {
            return self.expected("`per` or `total`");
        }
        while self.at_word("per") {
            self.bump();
            if self.at_word("period") {
                let token = self.bump();
                if report.per_period {
                    return Err(format!("{}: `per period` appears twice", token.at));
                }
                report.per_period = true;
            } else {
                let (size, _) = self.name("`period` or a size's name")?;
                self.punct("=")?;
                let value = self.signed("the size's value")?;
                report.per_size.push((size, value));
            }
        }
        Ok(report)
    }

    /// `observe a, b, c`, or `observe` alone for none.
    fn observe(&mut self) -> Parsed<Vec<BufferId>> {
        self.word("observe")?;
        let mut observe = Vec::new();
        if !self.at_name() {
            return Ok(observe);
        }
        loop {
            let (name, at) = self.name("a buffer name")?;
            self.forward.push((Forward::Observe(observe.len()), name, at));
            observe.push(0);
            if !self.eat(",") {
                return Ok(observe);
            }
        }
    }

    /// `set I = 0..10`
    fn set(&mut self) -> Parsed<()> {
        self.word("set")?;
        let (name, at) = self.name("a set name")?;
        self.punct("=")?;
        let lo = self.signed("the first element")?;
        self.punct("..")?;
        let hi = self.signed("the end of the range")?;
        if self.set_ids.insert(name.clone(), self.sets.len()).is_some() {
            return Err(format!("{at}: set `{name}` is declared twice"));
        }
        self.sets.push(Set { name, lo, hi });
        Ok(())
    }

    /// `KIND NAME[DIMS]: ELEM {LABELS} (of X | lower of X | upper of X) = data [...]`; `of X` for
    /// `next`, `regime` and `adjoint`.
    fn buffer(&mut self) -> Parsed<()> {
        let kind_token = self.bump();
        let (name, at) = self.name("a buffer name")?;
        let mut dims = Vec::new();
        if self.eat("[") && !self.eat("]") {
            loop {
                dims.push(self.set_ref()?);
                if !self.eat(",") {
                    break;
                }
            }
            self.punct("]")?;
        }
        self.punct(":")?;
        let elem = match &self.peek().tok {
            Tok::Word(word) => item_named(&ELEMS, word),
            _ => None,
        };
        let Some(elem) = elem else { return self.expected("an element type (`real`, `int` or `bool`)") };
        self.bump();
        let mut labels = Vec::new();
        if self.eat("{") && !self.eat("}") {
            loop {
                labels.push(self.name("a label")?.0);
                if !self.eat(",") {
                    break;
                }
            }
            self.punct("}")?;
        }
        let id = self.buffers.len();
        let kind = match &kind_token.tok {
            Tok::Word(word) => match word.as_str() {
                "param" => BufferKind::Param,
                "state" => BufferKind::State,
                "noise" => BufferKind::Noise,
                "discrete" => BufferKind::Discrete,
                "continuous" => BufferKind::Continuous,
                "let" => BufferKind::Let,
                "cost" => BufferKind::Cost,
                "next" => {
                    self.of(id)?;
                    BufferKind::Next { of: 0 }
                }
                "regime" => {
                    self.of(id)?;
                    BufferKind::Regime { action: 0 }
                }
                "sum_bound" => {
                    self.of(id)?;
                    BufferKind::SumBound { action: 0 }
                }
                "adjoint" => {
                    self.of(id)?;
                    BufferKind::Adjoint { of: 0 }
                }
                bound => {
                    let upper = self.at_word("upper");
                    if !upper && !self.at_word("lower") {
                        return self.expected("`lower` or `upper`");
                    }
                    self.bump();
                    self.of(id)?;
                    if bound == "piece_bound" {
                        BufferKind::PieceBound { action: 0, upper }
                    } else {
                        BufferKind::Bound { action: 0, upper }
                    }
                }
            },
            _ => return Err(format!("{}: expected a buffer kind", kind_token.at)),
        };
        let data = if self.eat("=") {
            self.word("data")?;
            self.punct("[")?;
            let mut data = Vec::new();
            if !self.eat("]") {
                loop {
                    data.push(self.number("a number")?);
                    if !self.eat(",") {
                        break;
                    }
                }
                self.punct("]")?;
            }
            Some(data)
        } else {
            None
        };
        if self.buffer_ids.insert(name.clone(), id).is_some() {
            return Err(format!("{at}: buffer `{name}` is declared twice"));
        }
        self.buffers.push(Buffer { name, kind, dims, elem, labels, data });
        Ok(())
    }

    /// `of NAME`, resolved at the end: a next state may be declared before its state.
    fn of(&mut self, buffer: BufferId) -> Parsed<()> {
        self.word("of")?;
        let (name, at) = self.name("a buffer name")?;
        self.forward.push((Forward::Of(buffer), name, at));
        Ok(())
    }

    /// `{ stmt* }`, `depth` blocks deep.
    fn block(&mut self, depth: usize) -> Parsed<Vec<Stmt>> {
        if depth > MAX_DEPTH {
            return Err(format!("{}: `for` and `if` blocks are nested more than {MAX_DEPTH} deep", self.peek().at));
        }
        self.punct("{")?;
        let mut body = Vec::new();
        loop {
            if self.eat("}") {
                return Ok(body);
            }
            if self.at_word("for") {
                self.bump();
                let var = self.var()?;
                self.word("in")?;
                let set = self.set_ref()?;
                let inner = self.block(depth + 1)?;
                body.push(Stmt::For { var, set, body: inner });
            } else if self.at_word("store") {
                self.bump();
                let buffer = self.buffer_ref()?;
                let mut index = Vec::new();
                if self.eat("[") && !self.eat("]") {
                    loop {
                        index.push(self.var()?);
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.punct("]")?;
                }
                self.punct("=")?;
                let value = self.expr(0)?;
                body.push(Stmt::Store { buffer, index, value });
            } else if self.at_word("if") {
                // `if COND { ... } else { ... }`, the `else` part optional.
                self.bump();
                let cond = self.expr(0)?;
                let then = self.block(depth + 1)?;
                let otherwise = if self.at_word("else") {
                    self.bump();
                    self.block(depth + 1)?
                } else {
                    Vec::new()
                };
                body.push(Stmt::If { cond, then, otherwise });
            } else if self.at_word("accumulate") {
                // `accumulate BUFFER[expr, ...] += expr`
                self.bump();
                let buffer = self.buffer_ref()?;
                let mut index = Vec::new();
                if self.eat("[") && !self.eat("]") {
                    loop {
                        index.push(self.expr(0)?);
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.punct("]")?;
                }
                self.punct("+=")?;
                let value = self.expr(0)?;
                body.push(Stmt::Accumulate { buffer, index, value });
            } else {
                return self.expected("`for`, `store`, `if`, `accumulate` or `}`");
            }
        }
    }

    fn push(&mut self, expr: Expr) -> Handle<Expr> {
        self.exprs.push(expr, Span::default())
    }

    /// One expression, its operands pushed before it (left to right), as lowering does.
    fn expr(&mut self, depth: usize) -> Parsed<Handle<Expr>> {
        if depth > MAX_DEPTH {
            return Err(format!("{}: expressions are nested more than {MAX_DEPTH} deep", self.peek().at));
        }
        let token = self.peek().clone();
        let word = match &token.tok {
            Tok::Number(_) | Tok::Punct("-") => {
                let value = self.number_or_infinity("a number (negation is written `neg(...)`)", true)?;
                return Ok(self.push(Expr::Const(value)));
            }
            Tok::Word(word) if word == "inf" || word == "NaN" => {
                let value = self.number_or_infinity("a number", true)?;
                return Ok(self.push(Expr::Const(value)));
            }
            Tok::Punct("(") => return self.parenthesised(depth),
            Tok::Quoted(_) => return self.load(depth),
            Tok::Word(word) => word.as_str(),
            _ => return self.expected("an expression"),
        };
        if is_var_word(word) {
            let var = self.var()?;
            return Ok(self.push(Expr::Var(var)));
        }
        if let Some(op) = UnaryOp::named(word) {
            self.bump();
            self.punct("(")?;
            let arg = self.expr(depth + 1)?;
            self.punct(")")?;
            return Ok(self.push(Expr::Unary { op, arg }));
        }
        if word == "sample" {
            return self.sample(depth);
        }
        if let Some(op) = item_named(&REDUCE, word) {
            // `max(v1 in I) body` is a reduction; `max(a, b)` is the binary operator.
            let is_reduce = matches!(&self.peek_at(2).tok, Tok::Word(v) if is_var_word(v))
                && matches!(&self.peek_at(3).tok, Tok::Word(w) if w == "in");
            self.bump();
            self.punct("(")?;
            if is_reduce {
                let var = self.var()?;
                self.word("in")?;
                let set = self.set_ref()?;
                self.punct(")")?;
                let body = self.expr(depth + 1)?;
                return Ok(self.push(Expr::Reduce { op, var, set, body }));
            }
            let op = match op {
                ReduceOp::Min => BinaryOp::Min,
                ReduceOp::Max => BinaryOp::Max,
                ReduceOp::Sum | ReduceOp::Prod | ReduceOp::ArgMax | ReduceOp::ArgMin => {
                    return self.expected(&format!("`v<number> in SET)`: `{word}` is a reduction"));
                }
            };
            let lhs = self.expr(depth + 1)?;
            self.punct(",")?;
            let rhs = self.expr(depth + 1)?;
            self.punct(")")?;
            return Ok(self.push(Expr::Binary { op, lhs, rhs }));
        }
        if is_reserved(word) {
            return self.expected("an expression");
        }
        self.load(depth)
    }

    /// `NAME` or `NAME[index, ...]`
    fn load(&mut self, depth: usize) -> Parsed<Handle<Expr>> {
        let buffer = self.buffer_ref()?;
        let mut index = Vec::new();
        if self.eat("[") && !self.eat("]") {
            loop {
                index.push(self.expr(depth + 1)?);
                if !self.eat(",") {
                    break;
                }
            }
            self.punct("]")?;
        }
        Ok(self.push(Expr::Load { buffer, index }))
    }

    /// `(a OP b)` or `(if c then a else b)`
    fn parenthesised(&mut self, depth: usize) -> Parsed<Handle<Expr>> {
        self.punct("(")?;
        if self.at_word("if") {
            self.bump();
            let cond = self.expr(depth + 1)?;
            self.word("then")?;
            let then = self.expr(depth + 1)?;
            self.word("else")?;
            let otherwise = self.expr(depth + 1)?;
            self.punct(")")?;
            return Ok(self.push(Expr::Select { cond, then, otherwise }));
        }
        let lhs = self.expr(depth + 1)?;
        let op = match &self.peek().tok {
            Tok::Punct(symbol) => item_named(&INFIX, symbol),
            Tok::Word(word) if word == "and" || word == "or" => item_named(&INFIX, word),
            _ => None,
        };
        let Some(op) = op else {
            return self
                .expected("an operator (`+`, `-`, `*`, `/`, `%`, `^`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`)");
        };
        self.bump();
        let rhs = self.expr(depth + 1)?;
        self.punct(")")?;
        Ok(self.push(Expr::Binary { op, lhs, rhs }))
    }

    /// `sample DIST(args) truncate(lo, hi)`, the truncation optional.
    fn sample(&mut self, depth: usize) -> Parsed<Handle<Expr>> {
        self.word("sample")?;
        let dist = match &self.peek().tok {
            Tok::Word(word) => crate::builtins::distribution(word).map(|d| d.dist),
            _ => None,
        };
        let Some(dist) = dist else {
            let names: Vec<String> = DISTRIBUTIONS.iter().map(|d| format!("`{}`", d.name)).collect();
            return self.expected(&format!("a distribution ({})", names.join(", ")));
        };
        self.bump();
        self.punct("(")?;
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.expr(depth + 1)?);
                if !self.eat(",") {
                    break;
                }
            }
            self.punct(")")?;
        }
        let mut truncate = None;
        if self.at_word("truncate") {
            self.bump();
            self.punct("(")?;
            let lo = self.expr(depth + 1)?;
            self.punct(",")?;
            let hi = self.expr(depth + 1)?;
            self.punct(")")?;
            truncate = Some((lo, hi));
        }
        Ok(self.push(Expr::Sample { dist, args, truncate }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::{Build, accumulate, differentiated, each, minimal, store};
    use super::*;
    use crate::ir::{Dist, validate};

    /// Asserts the round trip every module keeps, and returns the parsed module.
    #[track_caller]
    fn round_trip(m: &Module) -> Module {
        let text = print(m);
        let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
        assert_eq!(print(&parsed), text);
        parsed
    }

    #[track_caller]
    fn parse_error(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("parsed, but should not have:\n{text}\nas:\n{}", print(&m)),
            Err(e) => e,
        }
    }

    #[test]
    fn prints_the_minimal_module() {
        let expected = r#"module tiny
horizon 10
warmup 2
discount 0.99
report per period per items=3

set I = 0..3

param mu[I]: real
param c[I]: real = data [1.0, 2.0, 3.0]
state x[I]: real
next x'[I]: real of x
noise d[I]: int
discrete order: int {skip, buy}
continuous q[I]: real
bound q.lo[I]: real lower of q
regime q.when[I]: bool of q
let post[I]: real
cost holding: real

observe x, mu

instance {
    for v0 in I {
        store mu[v0] = sample uniform(1.0, 2.0)
    }
}

init {
    for v0 in I {
        store x[v0] = c[v0]
    }
}

noise {
    for v0 in I {
        store d[v0] = sample poisson(mu[v0])
    }
}

bounds {
    for v0 in I {
        store q.lo[v0] = neg(x[v0])
    }
}

regimes {
    for v0 in I {
        store q.when[v0] = (order == 1.0)
    }
}

step {
    for v0 in I {
        store post[v0] = ((x[v0] - d[v0]) + q[v0])
        store x'[v0] = post[v0]
    }
    store holding = sum(v1 in I) (c[v1] * max(post[v1], 0.0))
}
"#;
        let m = minimal().m;
        assert_eq!(print(&m), expected);
        assert_eq!(parse(expected), Ok(m));
    }

    #[test]
    fn prints_a_differentiated_module() {
        let expected_buffers = "cost holding: real
adjoint x.adj[I]: real of x
adjoint x'.adj[I]: real of x'
adjoint q.adj[I]: real of q
adjoint post.adj[I]: real of post
adjoint holding.adj: real of holding

observe x, mu
";
        let expected_vjp = "
step {
    for v0 in I {
        store post[v0] = ((x[v0] - d[v0]) + q[v0])
        store x'[v0] = post[v0]
    }
    store holding = sum(v1 in I) (c[v1] * max(post[v1], 0.0))
}

vjp {
    for v0 in I {
        store post[v0] = ((x[v0] - d[v0]) + q[v0])
        store x'[v0] = post[v0]
    }
    store holding = sum(v1 in I) (c[v1] * max(post[v1], 0.0))
    for v1 in I {
        if (post[v1] >= 0.0) {
            accumulate post.adj[v1] += (holding.adj * c[v1])
        }
    }
    for v0 in I {
        accumulate post.adj[v0] += x'.adj[v0]
        accumulate x.adj[v0] += post.adj[v0]
        accumulate q.adj[v0] += post.adj[v0]
    }
}
";
        let m = differentiated().m;
        let text = print(&m);
        assert!(text.contains(expected_buffers), "{text}");
        assert!(text.ends_with(expected_vjp), "{text}");
        assert_eq!(round_trip(&m), m);

        // Not differentiated: no `vjp` section, and a text without one has an empty `vjp`.
        let mut m = differentiated().m;
        m.vjp.body.clear();
        let text = print(&m);
        assert!(!text.contains("vjp"), "{text}");
        let parsed = round_trip(&m);
        assert!(parsed.vjp.body.is_empty());
        assert_eq!(validate(&parsed), Ok(()));
    }

    /// A valid module with every kind of buffer, element type, expression, operator, reduction,
    /// distribution and statement, built in the order `parse` creates nodes.
    fn every_variant() -> Module {
        let mut b = Build::new("every variant");
        let i = b.set("I", 0, 3);
        let c = b.set("C", -1, 1);
        let mu = b.buffer("mu", BufferKind::Param, &[i], ElemType::Real);
        let w = b.buffer("w", BufferKind::Param, &[i, c], ElemType::Real);
        b.m.buffers[w].data = Some(vec![0.5, 1e-7, -0.0, 1e300, 0.1, f64::MIN_POSITIVE]);
        let draws: Vec<BufferId> = DISTRIBUTIONS
            .iter()
            .map(|d| b.buffer(&format!("draw_{}", d.name), BufferKind::Param, &[], ElemType::Real))
            .collect();
        let quoted = b.buffer("cost", BufferKind::Param, &[], ElemType::Int);
        let x = b.buffer("x", BufferKind::State, &[i], ElemType::Real);
        let s = b.buffer("on hand \"now\"\n", BufferKind::State, &[], ElemType::Real);
        let x_next = b.buffer("x'", BufferKind::Next { of: x }, &[i], ElemType::Real);
        let s_next = b.buffer("v3", BufferKind::Next { of: s }, &[], ElemType::Real);
        let noise = b.buffer("demand", BufferKind::Noise, &[i], ElemType::Int);
        let order = b.buffer("order", BufferKind::Discrete, &[], ElemType::Int);
        b.m.buffers[order].labels = vec!["skip".into(), "in".into(), "buy more".into()];
        let q = b.buffer("q", BufferKind::Continuous, &[i], ElemType::Real);
        let lo = b.buffer("q.lo", BufferKind::Bound { action: q, upper: false }, &[i], ElemType::Real);
        let hi = b.buffer("q.hi", BufferKind::Bound { action: q, upper: true }, &[i], ElemType::Real);
        let when = b.buffer("q.when", BufferKind::Regime { action: q }, &[i], ElemType::Bool);
        let post = b.buffer("post", BufferKind::Let, &[i], ElemType::Real);
        let unary = b.buffer("unary", BufferKind::Let, &[], ElemType::Real);
        let binary = b.buffer("binary", BufferKind::Cost, &[], ElemType::Real);
        let reduce = b.buffer("reduce", BufferKind::Cost, &[], ElemType::Real);
        let grid = b.buffer("grid", BufferKind::Let, &[i, c], ElemType::Real);
        let adjoint = |b: &mut Build, name: &str, of: BufferId, dims: &[SetId]| {
            b.buffer(name, BufferKind::Adjoint { of }, dims, ElemType::Real)
        };
        let x_adj = adjoint(&mut b, "x.adj", x, &[i]);
        let x_next_adj = adjoint(&mut b, "x'.adj", x_next, &[i]);
        let q_adj = adjoint(&mut b, "q.adj", q, &[i]);
        let post_adj = adjoint(&mut b, "post.adj", post, &[i]);
        let grid_adj = adjoint(&mut b, "grid.adj", grid, &[i, c]);
        let reduce_adj = adjoint(&mut b, "argmax", reduce, &[]);
        b.m.observe = vec![x, s, mu, quoted];
        b.m.report = Report { per_period: false, per_size: vec![("items".into(), 3), ("per".into(), 2)] };
        b.m.discount = 1.0;

        // instance: one draw per distribution, one truncated.
        let scale = b.sample(Dist::Uniform, &[6.0, 14.0]);
        b.m.instance.body.push(each(0, i, vec![store(mu, &[0], scale)]));
        for (dist, draw) in DISTRIBUTIONS.iter().map(|d| &d.dist).zip(&draws) {
            let args: &[f64] = match dist {
                Dist::Poisson | Dist::Bernoulli => &[0.25],
                Dist::Categorical => &[1.0, 3.0, 4.0, 2.0],
                _ => &[2.0, 0.5],
            };
            let args = args.iter().map(|a| b.num(*a)).collect();
            let truncate = (*dist == Dist::Normal).then(|| (b.num(-1.0), b.num(1.5e-300)));
            let value = b.e(Expr::Sample { dist: *dist, args, truncate });
            b.m.instance.body.push(store(*draw, &[], value));
        }
        let first = b.num(0.0);
        let mean = b.e(Expr::Load { buffer: mu, index: vec![first] });
        let count = b.e(Expr::Sample { dist: Dist::Poisson, args: vec![mean], truncate: None });
        b.m.instance.body.push(store(quoted, &[], count));

        let start = b.load(mu, &[0]);
        b.m.init.body.push(each(0, i, vec![store(x, &[0], start)]));
        let zero = b.num(-0.0);
        b.m.init.body.push(store(s, &[], zero));

        let mean = b.load(mu, &[0]);
        let demand = b.e(Expr::Sample { dist: Dist::Poisson, args: vec![mean], truncate: None });
        b.m.noise.body.push(each(0, i, vec![store(noise, &[0], demand)]));

        let floor = b.load(x, &[0]);
        let cap = b.num(100.0);
        b.m.bounds.body.push(each(0, i, vec![store(lo, &[0], floor), store(hi, &[0], cap)]));

        let chosen = b.load(order, &[]);
        let buy = b.num(2.0);
        let cond = b.bin(BinaryOp::Eq, chosen, buy);
        let yes = b.num(1.0);
        let no = b.num(0.0);
        let mask = b.e(Expr::Select { cond, then: yes, otherwise: no });
        b.m.regimes.body.push(each(0, i, vec![store(when, &[0], mask)]));

        // The step, a function so that `vjp` can recompute it with nodes of its own.
        let step = |b: &mut Build| {
            let stock = b.load(x, &[0]);
            let sold = b.load(noise, &[0]);
            let left = b.bin(BinaryOp::Sub, stock, sold);
            let bought = b.load(q, &[0]);
            let after = b.bin(BinaryOp::Add, left, bought);
            let arrived = b.load(post, &[0]);
            let mut chain = b.load(s, &[]);
            for op in UnaryOp::ALL.iter().rev() {
                chain = b.e(Expr::Unary { op: *op, arg: chain });
            }
            let unary_value = chain;
            let s_now = b.load(s, &[]);
            let mut chain = b.load(unary, &[]);
            let all_binary = [
                BinaryOp::Add,
                BinaryOp::Sub,
                BinaryOp::Mul,
                BinaryOp::Div,
                BinaryOp::Rem,
                BinaryOp::Pow,
                BinaryOp::Min,
                BinaryOp::Max,
                BinaryOp::Eq,
                BinaryOp::Ne,
                BinaryOp::Lt,
                BinaryOp::Le,
                BinaryOp::Gt,
                BinaryOp::Ge,
                BinaryOp::And,
                BinaryOp::Or,
            ];
            for (k, op) in all_binary.into_iter().enumerate() {
                let rhs = b.num(k as f64 - 3.5);
                chain = b.bin(op, chain, rhs);
            }
            let binary_value = chain;
            let weight = b.load(w, &[1, 2]);
            let level = b.load(post, &[3]);
            let product = b.bin(BinaryOp::Mul, weight, level);
            let mut body = product;
            for (op, var, set) in [
                (ReduceOp::ArgMin, 6, i),
                (ReduceOp::ArgMax, 5, c),
                (ReduceOp::Min, 4, c),
                (ReduceOp::Max, 3, i),
                (ReduceOp::Prod, 2, c),
                (ReduceOp::Sum, 1, i),
            ] {
                body = b.e(Expr::Reduce { op, var: Var(var), set, body });
            }
            let cell = b.load(w, &[0, 5]);
            vec![
                each(0, i, vec![store(post, &[0], after), store(x_next, &[0], arrived)]),
                store(unary, &[], unary_value),
                store(s_next, &[], s_now),
                store(binary, &[], binary_value),
                store(reduce, &[], body),
                each(0, i, vec![each(5, c, vec![store(grid, &[0, 5], cell)])]),
            ]
        };
        b.m.step.body = step(&mut b);

        // vjp: the step again, then every kind of `if` and accumulation, nodes in parse order.
        b.m.vjp.body = step(&mut b);
        let level = b.load(post, &[0]);
        let zero = b.num(0.0);
        let above = b.bin(BinaryOp::Ge, level, zero);
        let at = b.var(0);
        let seed = b.load(x_next_adj, &[0]);
        let chosen = b.load(order, &[]);
        let one = b.num(1.0);
        let buying = b.bin(BinaryOp::Eq, chosen, one);
        let stock = b.load(x, &[1]);
        let top = b.e(Expr::Reduce { op: ReduceOp::ArgMax, var: Var(1), set: i, body: stock });
        let one = b.num(1.0);
        let nested = Stmt::If { cond: buying, then: vec![accumulate(x_adj, &[top], one)], otherwise: Vec::new() };
        let then = vec![accumulate(q_adj, &[at], seed), nested];
        let level = b.load(post, &[2]);
        let bottom = b.e(Expr::Reduce { op: ReduceOp::ArgMin, var: Var(2), set: i, body: level });
        let seed = b.load(x_next_adj, &[0]);
        let minus = b.e(Expr::Unary { op: UnaryOp::Neg, arg: seed });
        let otherwise = vec![accumulate(post_adj, &[bottom], minus)];
        let row = b.var(0);
        let weight = b.load(w, &[0, 6]);
        let cheapest = b.e(Expr::Reduce { op: ReduceOp::ArgMin, var: Var(6), set: c, body: weight });
        let half = b.num(0.5);
        let total = b.load(reduce, &[]);
        let chosen = b.load(order, &[]);
        let two = b.num(2.0);
        let skipping = b.bin(BinaryOp::Eq, chosen, two);
        b.m.vjp.body.extend([
            each(0, i, vec![Stmt::If { cond: above, then, otherwise }, accumulate(grid_adj, &[row, cheapest], half)]),
            accumulate(reduce_adj, &[], total),
            Stmt::If { cond: skipping, then: Vec::new(), otherwise: Vec::new() },
        ]);
        b.m
    }

    #[test]
    fn every_variant_round_trips_exactly() {
        let m = every_variant();
        assert_eq!(validate(&m), Ok(()));
        let text = print(&m);
        for needle in [
            "module \"every variant\"",
            "report per items=3 per \"per\"=2",
            "set C = -1..1",
            "param w[I, C]: real = data [0.5, 1e-7, -0.0, 1e300, 0.1, 2.2250738585072014e-308]",
            "param \"cost\": int",
            "state \"on hand \\\"now\\\"\\n\": real",
            "next \"v3\": real of \"on hand \\\"now\\\"\\n\"",
            "discrete order: int {skip, \"in\", \"buy more\"}",
            "bound q.hi[I]: real upper of q",
            "store draw_normal = sample normal(2.0, 0.5) truncate(-1.0, 1.5e-300)",
            "store draw_categorical = sample categorical(1.0, 3.0, 4.0, 2.0)",
            "store \"cost\" = sample poisson(mu[0.0])",
            "store \"on hand \\\"now\\\"\\n\" = -0.0",
            "store q.when[v0] = (if (order == 2.0) then 1.0 else 0.0)",
            "store unary = neg(not(exp(log(sqrt(tanh(sigmoid(softplus(sin(cos(abs(floor(ceil(round(",
            "(unary + -3.5) - -2.5) * -1.5) / -0.5) % 0.5) ^ 1.5), 2.5), 3.5) == 4.5) != 5.5) < 6.5) <= 7.5) > 8.5) >= 9.5) and 10.5) or 11.5)",
            "store reduce = sum(v1 in I) prod(v2 in C) max(v3 in I) min(v4 in C) argmax(v5 in C) argmin(v6 in I) \
             (w[v1, v2] * post[v3])",
            "adjoint x'.adj[I]: real of x'",
            "adjoint grid.adj[I, C]: real of grid",
            "adjoint \"argmax\": real of reduce",
            "\nvjp {\n    for v0 in I {\n        store post[v0] = ((x[v0] - demand[v0]) + q[v0])",
            "        if (post[v0] >= 0.0) {\n            accumulate q.adj[v0] += x'.adj[v0]\n",
            "            if (order == 1.0) {\n                accumulate x.adj[argmax(v1 in I) x[v1]] += 1.0\n",
            "            }\n        } else {\n            accumulate post.adj[argmin(v2 in I) post[v2]] += ",
            "+= neg(x'.adj[v0])\n        }\n",
            "        accumulate grid.adj[v0, argmin(v6 in C) w[v0, v6]] += 0.5\n    }\n",
            "    accumulate \"argmax\" += reduce\n    if (order == 2.0) {\n    }\n}\n",
        ] {
            assert!(text.contains(needle), "{needle}\nnot in:\n{text}");
        }
        assert!(round_trip(&m) == m, "the parsed module differs from the printed one");
    }

    #[test]
    fn shared_and_unused_nodes_round_trip_as_text_only() {
        let mut b = minimal();
        let unused = b.num(7.0);
        let _ = unused;
        let shared = b.m.step.body.iter().find_map(|s| match s {
            Stmt::Store { value, .. } => Some(*value),
            _ => None,
        });
        // The cost's value is stored again, shared, by a second cost.
        let again = b.buffer("again", BufferKind::Cost, &[], ElemType::Real);
        b.m.step.body.push(store(again, &[], shared.unwrap_or(unused)));
        assert_eq!(validate(&b.m), Ok(()));
        let parsed = round_trip(&b.m);
        assert_ne!(parsed, b.m);
        // The unused node is dropped, the shared tree of 8 nodes copied.
        assert_eq!(parsed.exprs.len(), b.m.exprs.len() - 1 + 8);
        assert_eq!(validate(&parsed), Ok(()));
    }

    #[test]
    fn print_marks_what_it_cannot_print() {
        let mut b = minimal();
        let ahead = Handle::new(b.m.exprs.len() + 1);
        let forward = b.e(Expr::Unary { op: UnaryOp::Abs, arg: ahead });
        let looping = Handle::new(b.m.exprs.len());
        let cycle = b.e(Expr::Unary { op: UnaryOp::Abs, arg: looping });
        b.m.step.body.push(store(77, &[], forward));
        b.m.step.body.push(store(10, &[], cycle));
        b.m.step.body.push(store(10, &[], Handle::new(5000)));
        b.m.step.body.push(each(0, 9, Vec::new()));
        b.m.buffers[0].dims = vec![42];
        b.m.buffers[3].kind = BufferKind::Next { of: 99 };
        let text = print(&b.m);
        for needle in [
            &format!("store <buffer #77 out of range> = abs(<{ahead:?} is not an earlier node>)"),
            &format!("store holding = abs(<{looping:?} is not an earlier node>)"),
            "store holding = <%5000 out of range>",
            "for v0 in <set #9 out of range> {",
            "param mu[<set #42 out of range>]: real",
            "next x'[I]: real of <buffer #99 out of range>",
        ] {
            assert!(text.contains(needle), "{needle}\nnot in:\n{text}");
        }
        assert!(parse(&text).is_err());
    }

    #[test]
    fn an_empty_module_round_trips() {
        let mut m = Build::new("").m;
        m.report = Report { per_period: false, per_size: Vec::new() };
        let text = print(&m);
        assert!(text.starts_with("module \"\"\nhorizon 10\nwarmup 2\ndiscount 0.99\nreport total\n"), "{text}");
        assert!(text.contains("\nobserve\n\ninstance {\n}\n"), "{text}");
        assert_eq!(round_trip(&m), m);
    }

    #[test]
    fn hand_written_ir_may_omit_defaults_and_use_comments() {
        let text = "
            // A scalar random walk.
            module walk horizon 5
            set T = 0..1
            noise step_size: real   // declared before its program
            state s: real
            next s': real of s
            observe s
            noise { store step_size = sample normal(0, 1) }
            init { store s = 0 }
            step { store s' = (s + step_size) }
        ";
        let m = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.horizon, m.warmup, m.discount), (5, 0, 1.0));
        assert_eq!(m.report, Report { per_period: false, per_size: Vec::new() });
        assert!(m.instance.body.is_empty() && m.bounds.body.is_empty() && m.vjp.body.is_empty());
        assert_eq!(validate(&m), Ok(()));
        round_trip(&m);
    }

    #[test]
    fn forward_references_in_of_and_observe() {
        let text = "module m horizon 2 observe s next s': real of s adjoint a: real of s state s: real";
        let m = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.buffers[0].kind, BufferKind::Next { of: 2 });
        assert_eq!(m.buffers[1].kind, BufferKind::Adjoint { of: 2 });
        assert_eq!(m.observe, vec![2]);
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        let cases = [
            ("", "line 1, column 1: expected `module`, found the end of the text"),
            ("module m\nhorizon x", "line 2, column 9: expected the horizon, found `x`"),
            ("module m\nhorizon 1.5", "line 2, column 9: expected the horizon, a whole number, found `1.5`"),
            ("module m\nwarmup 1", "line 2, column 9: the module has no `horizon`"),
            ("module m horizon 1 horizon 2", "line 1, column 20: `horizon` appears twice"),
            (
                "module m horizon 1\nset for = 0..3",
                "line 2, column 5: expected a set name, found `for`, which is reserved",
            ),
            ("module m horizon 1\nset I = 0..3\nset I = 0..1", "line 3, column 5: set `I` is declared twice"),
            ("module m horizon 1\nparam a[J]: real", "line 2, column 9: unknown set `J`"),
            ("module m horizon 1\nparam a: float", "line 2, column 10: expected an element type"),
            ("module m horizon 1\nbound a: real of q", "line 2, column 15: expected `lower` or `upper`"),
            ("module m horizon 1\nnext a: real of q", "line 2, column 17: unknown buffer `q`"),
            ("module m horizon 1\nparam a: real = data [1, inf]", "line 2, column 26: `inf` is not a finite number"),
            ("module m horizon 1\nparam a: real\ninit { store a = 1e999 }", "line 3, column 18: the number `1e999`"),
            ("module m horizon 1\nparam a: real\ninit { store a = NaN }", "line 3, column 18: `NaN` is not a finite"),
            ("module m horizon 1\nparam a: real\ninit { store b = 1 }", "line 3, column 14: unknown buffer `b`"),
            (
                "module m horizon 1\nparam a: real\ninit { store a = (1 , 2) }",
                "line 3, column 21: expected an operator",
            ),
            (
                "module m horizon 1\nparam a: real\ninit { store a = -a }",
                "line 3, column 19: expected a number (negation",
            ),
            (
                "module m horizon 1\nparam a: real\ninit { store a = sample beta(1, 2) }",
                "line 3, column 25: expected a distribution",
            ),
            (
                "module m horizon 1\nparam a: real\ninit { store a = sum(1, 2) }",
                "line 3, column 22: expected `v<number> in SET)`",
            ),
            (
                "module m horizon 1\nparam a: real\ninit { store a = 1 ",
                "line 3, column 19: expected `for`, `store`, `if`, `accumulate` or `}`, found the end of the text",
            ),
            ("module m horizon 1\nparam a: real\nadjoint b: real", "line 3, column 16: expected `of`, found the end"),
            ("module m horizon 1\nadjoint b: real of c", "line 2, column 20: unknown buffer `c`"),
            (
                "module m horizon 1\nparam a: real\nvjp { accumulate a = 1 }",
                "line 3, column 20: expected `+=`, found `=`",
            ),
            (
                "module m horizon 1\nparam a: real\nvjp { accumulate a[1, ] += 1 }",
                "line 3, column 23: expected an expression, found `]`",
            ),
            ("module m horizon 1\nparam a: real\nvjp { if a store a = 1 }", "line 3, column 12: expected `{`"),
            (
                "module m horizon 1\nparam a: real\nvjp { if a { } else store a = 1 }",
                "line 3, column 21: expected `{`, found `store`",
            ),
            (
                "module m horizon 1\nparam a: real\nvjp { if { } }",
                "line 3, column 10: expected an expression, found `{`",
            ),
            ("module m horizon 1\nvjp { }\nvjp { }", "line 3, column 1: `vjp` appears twice"),
            (
                "module m horizon 1\nparam a: real\ninit { store a = argmax(1, 2) }",
                "line 3, column 25: expected `v<number> in SET)`: `argmax` is a reduction",
            ),
            (
                "module m horizon 1\nparam a: real\ninit { store a = argmin(v0 in I) 1 }",
                "line 3, column 31: unknown set `I`",
            ),
            ("module m horizon 1\nparam a: real\ninit { for x in I {} }", "line 3, column 12: expected a variable"),
            (
                "module m horizon 1\nparam a: real\ninit { store a = v99999999999 }",
                "line 3, column 18: variable number `99999999999` is too large",
            ),
            ("module m horizon 1\nparam \"a\\q\": real", "line 2, column 9: unknown escape"),
            ("module m horizon 1\nparam \"a: real", "line 2, column 7: this quoted name has no closing"),
            ("module m horizon 1\nparam a: real # b", "line 2, column 15: unexpected character '#'"),
            ("module m horizon 1\nreport per", "line 2, column 11: expected `period` or a size's name, found the end"),
            (
                "module m horizon 1\nset I = 0..99999999999999999999",
                "line 2, column 12: expected the end of the range, a whole",
            ),
            (
                "module m horizon 1\nset I = -9223372036854775809..0",
                "line 2, column 10: the first element -9223372036854775809 is out",
            ),
            ("module m horizon 1\nbogus", "line 2, column 1: expected a declaration"),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(text, expected)| (text, expected, parse_error(text)))
            .filter(|(_, expected, error)| !error.starts_with(**expected))
            .map(|(text, expected, error)| format!("for {text:?}\n  expected: {expected}\n  got:      {error}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for open in ["(", "neg(", "sum(v0 in I) ", "argmax(v0 in I) ", "x["] {
            let text = format!(
                "module m horizon 1\nset I = 0..1\nparam x[I]: real\ninit {{ store x = {} }}",
                open.repeat(100_000)
            );
            assert!(parse_error(&text).contains("nested more than 1000 deep"), "{open}");
        }
        for open in ["{ for v0 in I ", "{ if 1 ", "{ if 1 { } else "] {
            let blocks = format!("module m horizon 1\nset I = 0..1\nvjp {}", open.repeat(100_000));
            assert!(parse_error(&blocks).contains("`for` and `if` blocks are nested more than 1000 deep"), "{open}");
        }
        // The limit itself parses, on a test thread's small stack.
        let deepest = format!(
            "module m horizon 1\nparam x: real\ninit {{ store x = {}1{} }}",
            "neg(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(parse(&deepest).is_ok());
    }

    /// Every prefix and many random edits of a printed module: `parse` returns, never panics,
    /// and whatever it accepts prints and parses back to the same text.
    #[test]
    fn truncated_and_garbled_text_never_panics() {
        let text = print(&every_variant());
        let chars: Vec<char> = text.chars().collect();
        let mut accepted = 0;
        let mut check = |candidate: &str| {
            if let Ok(m) = parse(candidate) {
                accepted += 1;
                // Whatever parses is fuzz for the validator too: it must return, not panic.
                let _ = validate(&m);
                let again = print(&m);
                assert_eq!(parse(&again).map(|m| print(&m)), Ok(again.clone()), "from:\n{candidate}");
            }
        };
        for end in 0..=chars.len() {
            check(&chars[..end].iter().collect::<String>());
        }
        // A fixed linear congruential generator: the same edits every run.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = |below: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % below.max(1)
        };
        let alphabet: Vec<char> = "(){}[],:=.-+*/%^<>!\"\\'# \n0123456789eEvxIinfNaNstore".chars().collect();
        for _ in 0..3000 {
            let mut edited = chars.clone();
            for _ in 0..1 + random(3) {
                let at = random(edited.len());
                match random(3) {
                    0 => {
                        edited.remove(at);
                    }
                    1 => edited.insert(at, alphabet[random(alphabet.len())]),
                    _ => {
                        let other = random(edited.len());
                        edited.swap(at, other);
                    }
                }
            }
            check(&edited.iter().collect::<String>());
        }
        assert!(accepted > 0);
    }
}
