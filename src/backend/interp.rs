//! The IR interpreter: runs a program on one scenario's buffers. It is the reference every
//! backend is checked against, so it is written for clarity, not speed. [`Interp`] runs it on a
//! [`Batch`](super::Batch) as a backend, scenario by scenario.

use rand::rngs::ChaCha8Rng;
use rand_distr::Distribution;

use super::{Backend, Kernel, Pointers, is_shared, zeroed_by};
use crate::diagnostics::Span;
use crate::ir::{BinaryOp, BufferId, BufferKind, Dist, Expr, Handle, Module, Program, ReduceOp, Stmt, UnaryOp, Var};

/// A failure while running a model: where in the model, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct RunError {
    pub span: Span,
    pub message: String,
}

/// The values of every buffer of a module for one scenario, row-major.
#[derive(Clone, Debug)]
pub struct Buffers {
    pub values: Vec<Vec<f64>>,
}

impl Buffers {
    /// Every buffer zeroed, data-file parameters filled in.
    pub fn new(module: &Module) -> Buffers {
        let values = (0..module.buffers.len())
            .map(|id| match module.buffers.get(id).and_then(|b| b.data.clone()) {
                Some(data) => data,
                None => vec![0.0; module.len(id)],
            })
            .collect();
        Buffers { values }
    }
}

/// Evaluation state: the buffers, the values of loop variables, and the random stream used by
/// `Sample` nodes (absent in the step, which never samples).
pub struct Machine<'a> {
    module: &'a Module,
    pub buffers: &'a mut Buffers,
    vars: Vec<f64>,
    rng: Option<&'a mut ChaCha8Rng>,
}

impl<'a> Machine<'a> {
    pub fn new(module: &'a Module, buffers: &'a mut Buffers, rng: Option<&'a mut ChaCha8Rng>) -> Machine<'a> {
        Machine { module, buffers, vars: Vec::new(), rng }
    }

    pub fn run(&mut self, program: &Program) -> Result<(), RunError> {
        for stmt in &program.body {
            self.stmt(stmt)?;
        }
        Ok(())
    }

    fn set_var(&mut self, var: Var, value: f64) {
        let i = var.0 as usize;
        if self.vars.len() <= i {
            self.vars.resize(i + 1, 0.0);
        }
        self.vars[i] = value;
    }

    fn stmt(&mut self, stmt: &Stmt) -> Result<(), RunError> {
        match stmt {
            Stmt::For { var, set, body } => {
                let set = &self.module.sets[*set];
                for element in set.lo..set.hi {
                    self.set_var(*var, element as f64);
                    for s in body {
                        self.stmt(s)?;
                    }
                }
                Ok(())
            }
            Stmt::Store { buffer, index, value } => {
                let v = self.eval(*value)?;
                let position: Vec<f64> = index.iter().map(|var| self.vars[var.0 as usize]).collect();
                let offset = self.offset(*buffer, &position, Span::default())?;
                let b = &self.module.buffers[*buffer];
                // A parameter drawn or computed per instance is read by every step: infinite or
                // NaN, it would spoil every figure without a word.
                if b.kind == BufferKind::Param && !v.is_finite() {
                    let element = if position.is_empty() {
                        String::new()
                    } else {
                        format!("[{}]", position.iter().map(f64::to_string).collect::<Vec<_>>().join(", "))
                    };
                    let what = if v.is_nan() { "not a number (NaN)" } else { "infinite" };
                    return Err(RunError {
                        span: self.module.exprs.span(*value),
                        message: format!("parameter `{}{element}` is {what} in this instance", b.name),
                    });
                }
                self.buffers.values[*buffer][offset] = v;
                Ok(())
            }
            Stmt::If { cond, then, otherwise } => {
                let branch = if self.eval(*cond)? != 0.0 { then } else { otherwise };
                for s in branch {
                    self.stmt(s)?;
                }
                Ok(())
            }
            Stmt::Accumulate { buffer, index, value } => {
                let v = self.eval(*value)?;
                let mut position = Vec::with_capacity(index.len());
                for i in index {
                    position.push(self.eval(*i)?);
                }
                let span = self.module.exprs.span(*value);
                let offset = self.offset(*buffer, &position, span)?;
                self.buffers.values[*buffer][offset] += v;
                Ok(())
            }
        }
    }

    /// The row-major offset of an element, or an error when an index is outside its set.
    fn offset(&self, buffer: usize, index: &[f64], span: Span) -> Result<usize, RunError> {
        let b = &self.module.buffers[buffer];
        let mut offset = 0usize;
        for (k, (&value, &set)) in index.iter().zip(&b.dims).enumerate() {
            let set = &self.module.sets[set];
            let element = value as i64;
            if value.fract() != 0.0 || !value.is_finite() || element < set.lo || element >= set.hi {
                return Err(RunError {
                    span,
                    message: format!(
                        "index {value} of `{}` (dimension {}) is outside `{}` = {}..{}",
                        b.name,
                        k + 1,
                        set.name,
                        set.lo,
                        set.hi
                    ),
                });
            }
            offset = offset * set.len() + (element - set.lo) as usize;
        }
        Ok(offset)
    }

    pub fn eval(&mut self, handle: Handle<Expr>) -> Result<f64, RunError> {
        let module = self.module;
        Ok(match &module.exprs[handle] {
            Expr::Const(v) => *v,
            Expr::Var(var) => self.vars[var.0 as usize],
            Expr::Load { buffer, index } => {
                let mut position = Vec::with_capacity(index.len());
                for i in index {
                    position.push(self.eval(*i)?);
                }
                let offset = self.offset(*buffer, &position, module.exprs.span(handle))?;
                self.buffers.values[*buffer][offset]
            }
            Expr::Unary { op, arg } => unary(*op, self.eval(*arg)?),
            Expr::Binary { op, lhs, rhs } => {
                let a = self.eval(*lhs)?;
                // `and`/`or` short-circuit, like `if`.
                match op {
                    BinaryOp::And if a == 0.0 => return Ok(0.0),
                    BinaryOp::Or if a != 0.0 => return Ok(1.0),
                    _ => {}
                }
                binary(*op, a, self.eval(*rhs)?)
            }
            Expr::Select { cond, then, otherwise } => {
                if self.eval(*cond)? != 0.0 {
                    self.eval(*then)?
                } else {
                    self.eval(*otherwise)?
                }
            }
            Expr::Reduce { op, var, set, body } => {
                let set = &module.sets[*set];
                let mut acc = match op {
                    ReduceOp::Sum => 0.0,
                    ReduceOp::Prod => 1.0,
                    ReduceOp::Max | ReduceOp::ArgMax => f64::NEG_INFINITY,
                    ReduceOp::Min | ReduceOp::ArgMin => f64::INFINITY,
                };
                let mut chosen = set.lo as f64;
                for element in set.lo..set.hi {
                    self.set_var(*var, element as f64);
                    let v = self.eval(*body)?;
                    match op {
                        ReduceOp::Sum => acc += v,
                        ReduceOp::Prod => acc *= v,
                        ReduceOp::Max => acc = acc.max(v),
                        ReduceOp::Min => acc = acc.min(v),
                        // Strict comparisons keep the first extreme on ties.
                        ReduceOp::ArgMax if v > acc => (acc, chosen) = (v, element as f64),
                        ReduceOp::ArgMin if v < acc => (acc, chosen) = (v, element as f64),
                        ReduceOp::ArgMax | ReduceOp::ArgMin => {}
                    }
                }
                if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) { chosen } else { acc }
            }
            Expr::Sample { dist, args, truncate } => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.eval(*a)?);
                }
                let bounds = match truncate {
                    Some((lo, hi)) => Some((self.eval(*lo)?, self.eval(*hi)?)),
                    None => None,
                };
                let span = module.exprs.span(handle);
                let Some(rng) = self.rng.as_deref_mut() else {
                    return Err(RunError { span, message: "a random draw where no randomness is available".into() });
                };
                sample(*dist, &values, bounds, rng).map_err(|message| RunError { span, message })?
            }
        })
    }
}

/// Where a value that came out NaN or infinite first became so: the operation whose operands
/// were all finite, and what it computed. A run's costs and next states are checked after each
/// period; the interpreter then says where a non-finite one came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    pub span: Span,
    /// The operation with its operands, e.g. "`sqrt` of -1 is NaN".
    pub cause: String,
}

impl Machine<'_> {
    /// Where element `element` (row-major) of `buffer`, as `program` stores it, first became
    /// NaN or infinite; `None` when it is finite. `program` must have run on these buffers, so
    /// that what the element's store read (the `let`s before it) holds what it read then.
    pub fn origin(&mut self, program: &Program, buffer: BufferId, element: usize) -> Result<Option<Origin>, RunError> {
        let Some((index, value)) = store_of(&program.body, buffer) else { return Ok(None) };
        let b = &self.module.buffers[buffer];
        let mut rest = element;
        for (var, &set) in index.iter().zip(&b.dims).rev() {
            let set = &self.module.sets[set];
            let len = set.len().max(1);
            self.set_var(*var, (set.lo + (rest % len) as i64) as f64);
            rest /= len;
        }
        self.trace(program, value)
    }

    /// Follows a non-finite value down to the first operation that made it so: into the
    /// operand that was already non-finite (the branch taken, the element of a reduction), and
    /// through a load into the store of `program` that wrote the element.
    fn trace(&mut self, program: &Program, handle: Handle<Expr>) -> Result<Option<Origin>, RunError> {
        let module = self.module;
        let value = self.eval(handle)?;
        if value.is_finite() {
            return Ok(None);
        }
        let span = module.exprs.span(handle);
        let made = |cause: String| Ok(Some(Origin { span, cause: format!("{cause} is {}", number(value)) }));
        match &module.exprs[handle] {
            Expr::Load { buffer, index } => {
                let mut position = Vec::with_capacity(index.len());
                for i in index {
                    position.push(self.eval(*i)?);
                }
                let offset = self.offset(*buffer, &position, span)?;
                if let Some(origin) = self.origin(program, *buffer, offset)? {
                    return Ok(Some(origin));
                }
                let b = &module.buffers[*buffer];
                let at = if position.is_empty() {
                    String::new()
                } else {
                    let p: Vec<String> = position.iter().map(|v| number(*v)).collect();
                    format!("[{}]", p.join(", "))
                };
                made(format!("`{}{at}`", b.name))
            }
            Expr::Unary { op, arg } => {
                let x = self.eval(*arg)?;
                if !x.is_finite() {
                    return self.trace(program, *arg);
                }
                made(format!("`{}` of {}", op.name(), number(x)))
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.eval(*lhs)?;
                if !a.is_finite() {
                    return self.trace(program, *lhs);
                }
                let b = self.eval(*rhs)?;
                if !b.is_finite() {
                    return self.trace(program, *rhs);
                }
                made(match op {
                    BinaryOp::Add => format!("{} + {}", number(a), number(b)),
                    BinaryOp::Sub => format!("{} - {}", number(a), number(b)),
                    BinaryOp::Mul => format!("{} * {}", number(a), number(b)),
                    BinaryOp::Div => format!("{} / {}", number(a), number(b)),
                    BinaryOp::Rem => format!("{} % {}", number(a), number(b)),
                    BinaryOp::Pow => format!("{} ^ {}", number(a), number(b)),
                    other => format!("`{}` of {} and {}", format!("{other:?}").to_lowercase(), number(a), number(b)),
                })
            }
            Expr::Select { cond, then, otherwise } => {
                let chosen = if self.eval(*cond)? != 0.0 { *then } else { *otherwise };
                self.trace(program, chosen)
            }
            Expr::Reduce { op, var, set, body } => {
                // A maximum or minimum comes from the element that attains it; a sum or product
                // from its first non-finite element.
                let range = module.sets[*set].lo..module.sets[*set].hi;
                for element in range {
                    self.set_var(*var, element as f64);
                    let v = self.eval(*body)?;
                    let culprit = match op {
                        ReduceOp::Max | ReduceOp::Min => v == value || (v.is_nan() && value.is_nan()),
                        ReduceOp::Sum | ReduceOp::Prod | ReduceOp::ArgMax | ReduceOp::ArgMin => !v.is_finite(),
                    };
                    if culprit {
                        return self.trace(program, *body);
                    }
                }
                let name = if *op == ReduceOp::Prod { "product" } else { "sum" };
                made(format!("the {name} over `{}`", module.sets[*set].name))
            }
            Expr::Const(_) | Expr::Var(_) | Expr::Sample { .. } => made("this value".into()),
        }
    }
}

/// The statement of `body` that stores into `buffer`: its index variables and its value.
fn store_of(body: &[Stmt], buffer: BufferId) -> Option<(&[Var], Handle<Expr>)> {
    body.iter().find_map(|s| match s {
        Stmt::For { body, .. } => store_of(body, buffer),
        Stmt::Store { buffer: b, index, value } if *b == buffer => Some((index.as_slice(), *value)),
        _ => None,
    })
}

/// A number as a message shows it: whole numbers without a fraction, very large and very small
/// ones with an exponent.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 { format!("{v}") } else { format!("{v:?}") }
}

pub fn unary(op: UnaryOp, x: f64) -> f64 {
    op.apply(x)
}

pub fn binary(op: BinaryOp, a: f64, b: f64) -> f64 {
    op.apply(a, b)
}

/// Rejection sampling gives up after this many tries, so a truncation to a region of tiny
/// probability is an error rather than a hang.
const MAX_REJECTIONS: usize = 10_000;

/// One draw from `dist(args)`, by rejection within `bounds` when given.
pub fn sample(dist: Dist, args: &[f64], bounds: Option<(f64, f64)>, rng: &mut ChaCha8Rng) -> Result<f64, String> {
    for _ in 0..MAX_REJECTIONS {
        let x = draw(dist, args, rng)?;
        match bounds {
            Some((lo, hi)) if x < lo || x > hi => continue,
            _ => return Ok(x),
        }
    }
    Err(format!("no draw within the truncation bounds after {MAX_REJECTIONS} tries"))
}

fn draw(dist: Dist, args: &[f64], rng: &mut ChaCha8Rng) -> Result<f64, String> {
    let arg = |k: usize| args.get(k).copied().unwrap_or(f64::NAN);
    let bad = |what: &str| format!("{what} (arguments {args:?})");
    Ok(match dist {
        Dist::Uniform => {
            let (lo, hi) = (arg(0), arg(1));
            // Written so that NaN fails too.
            if !lo.is_finite() || !hi.is_finite() || lo >= hi {
                return Err(bad("`uniform` needs finite low < high"));
            }
            lo + (hi - lo) * crate::random::unit(rng)
        }
        Dist::Normal => rand_distr::Normal::new(arg(0), arg(1))
            .map_err(|_| bad("`normal` needs a finite mean and sd >= 0"))?
            .sample(rng),
        Dist::LogNormal => rand_distr::LogNormal::new(arg(0), arg(1))
            .map_err(|_| bad("`lognormal` needs a finite mu and sigma >= 0"))?
            .sample(rng),
        Dist::Poisson => poisson(arg(0), rng).ok_or_else(|| bad("`poisson` needs a finite rate >= 0"))?,
        Dist::Binomial => {
            let (n, p) = (arg(0), arg(1));
            if !(n >= 0.0 && n.fract() == 0.0 && (0.0..=1.0).contains(&p)) {
                return Err(bad("`binomial` needs whole trials >= 0 and 0 <= p <= 1"));
            }
            rand_distr::Binomial::new(n as u64, p).map_err(|e| bad(&e.to_string()))?.sample(rng) as f64
        }
        Dist::NegBinomial => {
            // Failures before the r-th success: a Poisson whose rate is Gamma(r, (1 - p) / p).
            let (r, p) = (arg(0), arg(1));
            if !(r > 0.0 && p > 0.0 && p <= 1.0) {
                return Err(bad("`negbinomial` needs r > 0 and 0 < p <= 1"));
            }
            if p == 1.0 {
                0.0
            } else {
                let rate = rand_distr::Gamma::new(r, (1.0 - p) / p).map_err(|e| bad(&e.to_string()))?.sample(rng);
                poisson(rate, rng).ok_or_else(|| bad("`negbinomial` rate overflow"))?
            }
        }
        Dist::Gamma => rand_distr::Gamma::new(arg(0), arg(1))
            .map_err(|_| bad("`gamma` needs shape > 0 and scale > 0"))?
            .sample(rng),
        Dist::Bernoulli => {
            let p = arg(0);
            if !(0.0..=1.0).contains(&p) {
                return Err(bad("`bernoulli` needs 0 <= p <= 1"));
            }
            f64::from(u8::from(crate::random::unit(rng) < p))
        }
        Dist::Categorical => {
            let total: f64 = args.iter().sum();
            if args.iter().any(|w| !w.is_finite() || *w < 0.0) || total.is_nan() || total <= 0.0 {
                return Err(bad("`categorical` needs weights >= 0 with a positive sum"));
            }
            let mut u = crate::random::unit(rng) * total;
            let mut chosen = args.len() - 1;
            for (k, w) in args.iter().enumerate() {
                if u < *w {
                    chosen = k;
                    break;
                }
                u -= w;
            }
            chosen as f64
        }
    })
}

fn poisson(rate: f64, rng: &mut ChaCha8Rng) -> Option<f64> {
    if rate == 0.0 {
        return Some(0.0);
    }
    Some(rand_distr::Poisson::new(rate).ok()?.sample(rng))
}

/// The interpreter as a backend: copies each scenario out of the batch, runs the IR program on
/// it, and copies it back. Slow, and the reference every other backend is checked against.
pub struct Interp<'m> {
    module: &'m Module,
}

impl<'m> Interp<'m> {
    /// The interpreter's kernels for a validated module.
    pub fn new(module: &'m crate::ir::ValidModule) -> Interp<'m> {
        Interp { module }
    }
}

impl Backend for Interp<'_> {
    fn name(&self) -> &'static str {
        "interp"
    }

    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError> {
        let module = self.module;
        let shared: Vec<bool> = module.buffers.iter().map(|b| is_shared(b.kind)).collect();
        let program = kernel.program(module);
        for b in start..end {
            let slices: Vec<(*mut f64, usize)> = (0..module.buffers.len())
                .map(|id| {
                    let len = module.len(id);
                    // SAFETY: the caller guarantees the batch has scenario `b` of every buffer.
                    let base = unsafe { if shared[id] { pointers.bases[id] } else { pointers.bases[id].add(b * len) } };
                    (base, len)
                })
                .collect();
            // SAFETY: as above; each slice is one buffer of one scenario.
            let read = |&(p, n): &(*mut f64, usize)| unsafe { std::slice::from_raw_parts(p, n) }.to_vec();
            let mut buffers = Buffers { values: slices.iter().map(read).collect() };
            for (id, buffer) in module.buffers.iter().enumerate() {
                if zeroed_by(module, kernel, buffer.kind) {
                    buffers.values[id].iter_mut().for_each(|v| *v = 0.0);
                }
            }
            Machine::new(module, &mut buffers, None).run(program)?;
            for (id, &(p, n)) in slices.iter().enumerate() {
                if !shared[id] {
                    // SAFETY: scenario `b` of a per-scenario buffer belongs to this call alone.
                    unsafe { std::slice::from_raw_parts_mut(p, n) }.copy_from_slice(&buffers.values[id]);
                }
            }
        }
        Ok(())
    }
}
