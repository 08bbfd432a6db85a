//! Evaluating expressions known at compile time: sizes, set bounds, settings, and distribution
//! parameters that can be checked before anything runs.

use super::checker::*;
use super::model::*;
use crate::syntax::ast::{self, ExprKind, UnaryOp};

impl Checker<'_> {
    /// The value of an expression known at compile time: numbers, sizes, constant parameters,
    /// arithmetic and math functions on them. `None` for anything else.
    pub(super) fn constant(&self, e: &ast::Expr, scope: &Scope) -> Option<f64> {
        self.fold(e, scope, true).filter(|v| v.is_finite())
    }

    /// The value of `e` when infinities and NaN flow through the arithmetic as they do at run
    /// time: `min(1/0, 3)` is 3, `0 * (1/0)` is NaN. `None` when `e` is not known at compile time.
    pub(super) fn value_at_run_time(&self, e: &ast::Expr, scope: &Scope) -> Option<f64> {
        self.fold(e, scope, false)
    }

    /// The innermost part of `e` whose operands are known and finite but whose own value is
    /// infinite or not a number (`1/0`, `log(0)`, `5 % 0`), with that value. `None` when every
    /// part that can be folded is finite.
    pub(super) fn non_finite(&self, e: &ast::Expr, scope: &Scope) -> Option<(ast::Expr, f64)> {
        let inner = match &e.kind {
            ExprKind::Paren(inner) => return self.non_finite(inner, scope),
            ExprKind::Unary { operand, .. } => self.non_finite(operand, scope),
            ExprKind::Binary { lhs, rhs, .. } => self.non_finite(lhs, scope).or_else(|| self.non_finite(rhs, scope)),
            ExprKind::If { cond, then, otherwise } => match self.constant(cond, scope) {
                Some(c) if c != 0.0 => self.non_finite(then, scope),
                Some(_) => self.non_finite(otherwise, scope),
                None => self.non_finite(cond, scope),
            },
            ExprKind::Call { args, .. } => args.iter().find_map(|a| self.non_finite(a, scope)),
            _ => None,
        };
        inner.or_else(|| self.fold(e, scope, true).filter(|v| !v.is_finite()).map(|v| (e.clone(), v)))
    }

    /// The value of `e`, which may be infinite or NaN, from the values of its parts: their
    /// [`Self::constant`] values when `finite_parts`, else their own folded values.
    fn fold(&self, e: &ast::Expr, scope: &Scope, finite_parts: bool) -> Option<f64> {
        let part = |p: &ast::Expr| if finite_parts { self.constant(p, scope) } else { self.fold(p, scope, false) };
        Some(match &e.kind {
            ExprKind::Number { value, .. } => *value,
            ExprKind::Bool(b) => f64::from(u8::from(*b)),
            ExprKind::Paren(inner) => part(inner)?,
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
            ExprKind::Unary { op: UnaryOp::Neg, operand } => -part(operand)?,
            ExprKind::Unary { op: UnaryOp::Not, operand } => f64::from(u8::from(part(operand)? == 0.0)),
            // Folded as the interpreter computes it.
            ExprKind::Binary { op, lhs, rhs } => op.operation().apply(part(lhs)?, part(rhs)?),
            ExprKind::If { cond, then, otherwise } => {
                if part(cond)? != 0.0 {
                    part(then)?
                } else {
                    part(otherwise)?
                }
            }
            ExprKind::Call { func, args } => {
                let function = crate::builtins::function(&func.name)?;
                let v: Vec<f64> = args.iter().map(part).collect::<Option<_>>()?;
                function.fold(&v)?
            }
            _ => return None,
        })
    }
}
