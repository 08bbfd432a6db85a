//! Calls of built-in functions and distributions: arity, argument types, and the parameters of
//! a distribution known at compile time.

use super::checker::*;
use super::did_you_mean;
use crate::builtins::{self, Arity, DISTRIBUTIONS, FUNCTIONS, Returns};
use crate::diagnostics::Diagnostic;
use crate::syntax::ast::{self, ExprKind};

impl Checker<'_> {
    pub(super) fn call(&mut self, e: &ast::Expr, func: &ast::Ident, args: &[ast::Expr], scope: &mut Scope) -> Ty {
        let name = func.name.as_str();
        if name == "truncated" || builtins::distribution(name).is_some() {
            return self.distribution(e, func, args, scope);
        }
        let Some(function) = builtins::function(name) else {
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
                let functions: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
                let mut known = functions.clone();
                if scope.random {
                    known.extend(DISTRIBUTIONS.iter().map(|d| d.name));
                    known.push("truncated");
                }
                let mut d = Diagnostic::error(
                    "unknown-function",
                    format!("unknown function `{name}`"),
                    func.span,
                    "not a function",
                );
                d = match did_you_mean(name, known.iter().copied()) {
                    Some(hint) => d.with_help(hint),
                    None => d.with_help(format!("functions: {}", functions.join(", "))),
                };
                self.error(d);
            }
            return Ty::Error;
        };
        if !function.arity.accepts(args.len()) {
            let expected = match function.arity {
                Arity::Exactly(n) => plural(n, "argument"),
                Arity::AtLeast(n) => format!("at least {}", plural(n, "argument")),
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
                    format!("call it as `{}`", function.signature)
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
        match function.returns {
            Returns::Int => Ty::Int,
            Returns::IntIfAllInt if all_int => Ty::Int,
            Returns::Real | Returns::IntIfAllInt => Ty::Real,
        }
    }

    pub(super) fn distribution(
        &mut self,
        e: &ast::Expr,
        func: &ast::Ident,
        args: &[ast::Expr],
        scope: &mut Scope,
    ) -> Ty {
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
            let is_dist =
                matches!(&inner.kind, ExprKind::Call { func, .. } if builtins::distribution(&func.name).is_some());
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
        let Some(distribution) = builtins::distribution(name) else { return Ty::Error };
        let params = distribution.params;
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
                    .with_help(format!("`{}`", distribution.signature)),
            );
            return Ty::Error;
        }
        if distribution.integer { Ty::Int } else { Ty::Real }
    }
}
