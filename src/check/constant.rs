//! Evaluating expressions known at compile time: sizes, set bounds, settings, and distribution
//! parameters that can be checked before anything runs.

use super::checker::*;
use super::model::*;
use crate::syntax::ast::{self, BinaryOp, ExprKind, UnaryOp};

impl Checker<'_> {
    /// The value of an expression known at compile time: numbers, sizes, constant parameters,
    /// arithmetic and math functions on them. `None` for anything else.
    pub(super) fn constant(&self, e: &ast::Expr, scope: &Scope) -> Option<f64> {
        let value = match &e.kind {
            ExprKind::Number { value, .. } => *value,
            ExprKind::Bool(b) => f64::from(u8::from(*b)),
            ExprKind::Paren(inner) => self.constant(inner, scope)?,
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
            ExprKind::Unary { op: UnaryOp::Neg, operand } => -self.constant(operand, scope)?,
            ExprKind::Unary { op: UnaryOp::Not, operand } => f64::from(u8::from(self.constant(operand, scope)? == 0.0)),
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.constant(lhs, scope)?;
                let b = self.constant(rhs, scope)?;
                let truth = |c: bool| f64::from(u8::from(c));
                match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div => a / b,
                    BinaryOp::Rem => a % b,
                    BinaryOp::Pow => a.powf(b),
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
            ExprKind::If { cond, then, otherwise } => {
                if self.constant(cond, scope)? != 0.0 {
                    self.constant(then, scope)?
                } else {
                    self.constant(otherwise, scope)?
                }
            }
            ExprKind::Call { func, args } => {
                let function = crate::builtins::function(&func.name)?;
                let v: Vec<f64> = args.iter().map(|a| self.constant(a, scope)).collect::<Option<_>>()?;
                function.fold(&v)?
            }
            _ => return None,
        };
        value.is_finite().then_some(value)
    }
}
