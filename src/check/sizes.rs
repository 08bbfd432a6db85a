//! Sizes and sets: constants known at compile time, with `--set` overrides.

use super::checker::*;
use super::model::*;
use crate::diagnostics::Diagnostic;
use crate::syntax::ast::{self};

impl Checker<'_> {
    pub(super) fn override_for(&self, name: &str) -> Option<f64> {
        self.options.overrides.iter().rev().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub(super) fn size(&mut self, d: &ast::SizeDecl) {
        let Some(Global { symbol: Symbol::Size(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let (value, span, what) = match self.override_for(&d.name.name) {
            Some(v) => (Some(v), d.name.span, format!("`--set {}={}`", d.name.name, fmt_num(v))),
            None => {
                let mut scope = Scope::new(Context::Size);
                scope.defined_before = Some(id);
                let ty = self.expr(&d.value, &mut scope);
                if ty == Ty::Error {
                    self.broken.insert(Symbol::Size(id));
                    return;
                }
                (self.constant(&d.value, &scope), d.value.span, "this value".to_string())
            }
        };
        match value {
            Some(v) if v.fract() == 0.0 && (0.0..=1e9).contains(&v) => {
                if let Some(size) = self.m.sizes.get_mut(id) {
                    size.value = v as i64;
                }
            }
            Some(v) => {
                self.broken.insert(Symbol::Size(id));
                self.error(
                    Diagnostic::error(
                        "bad-size",
                        format!(
                            "size `{}` must be a whole number, 0 or more, but {what} is {}",
                            d.name.name,
                            fmt_num(v)
                        ),
                        span,
                        "not a whole number of at least 0",
                    )
                    .with_help(
                        "sizes count things: use a whole number from 0 to 10^9 (0 makes the sets it bounds empty)",
                    ),
                );
            }
            None => {
                self.broken.insert(Symbol::Size(id));
                self.not_constant(&d.value, "a size");
            }
        }
    }

    pub(super) fn not_constant(&mut self, e: &ast::Expr, what: &str) {
        self.error(
            Diagnostic::error(
                "not-constant",
                format!("{what} must be known when the model is compiled"),
                e.span,
                "not a constant",
            )
            .with_help("use numbers, sizes and parameters defined by constants"),
        );
    }

    pub(super) fn set(&mut self, d: &ast::SetDecl) {
        let Some(Global { symbol: Symbol::Set(id), .. }) = self.globals.get(&d.name.name) else { return };
        let id = *id;
        let mut bounds = [0i64; 2];
        for (slot, e) in bounds.iter_mut().zip([&d.lo, &d.hi]) {
            let mut scope = Scope::new(Context::SetBound);
            match self.expr(e, &mut scope) {
                Ty::Error => {
                    self.broken.insert(Symbol::Set(id));
                    return;
                }
                Ty::Int | Ty::Index(_) => {}
                _ => {
                    self.broken.insert(Symbol::Set(id));
                    self.error(Diagnostic::error("type", "a set's bounds must be integers", e.span, "not an integer"));
                    return;
                }
            }
            match self.constant(e, &scope) {
                Some(v) if v.abs() <= 1e12 => *slot = v as i64,
                _ => {
                    self.broken.insert(Symbol::Set(id));
                    self.not_constant(e, "a set's bound");
                    return;
                }
            }
        }
        // A half-open range holds nothing when `hi <= lo`, as in mathematics: `0..lead - 1` is
        // empty for a lead of 0 or 1. The set is then stored as `lo..lo`.
        let [lo, hi] = bounds;
        let hi = hi.max(lo);
        if let Some(set) = self.m.sets.get_mut(id) {
            set.lo = lo;
            set.hi = hi;
        }
    }
}
