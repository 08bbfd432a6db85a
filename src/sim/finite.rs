//! Every cost and next state a period produces must be a number: after each step, [`check`]
//! looks at the batch's costs and next states, and the first one that is NaN or infinite stops
//! the run as a [`NonFinite`] that names the scenario, the step and the term, located in the
//! model at the operation that made it so (the interpreter traces it, on any backend). One check
//! for `simulate`, `eval --policy random` and the trainer's rollouts and evaluations.

use super::protocol::World;
use crate::backend::interp::number;
use crate::backend::{Machine, RunError};
use crate::diagnostics::Span;
use crate::ir::{BufferId, BufferKind, Module};
use crate::random::ScenarioSet;

/// A cost term or next state that came out NaN or infinite.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// What it is: "cost `c`", "next state `x'`", "next state `x'[3]`".
    pub what: String,
    pub value: f64,
    /// The scenario (its index in its set) and the period, from 0.
    pub set: ScenarioSet,
    pub scenario: usize,
    pub step: usize,
    /// Where in the model it first became non-finite: the operation whose operands were finite,
    /// or, when the interpreter cannot say, the definition of the term or the update.
    pub span: Span,
    /// What that operation computed, e.g. "`sqrt` of -1 is NaN".
    pub cause: String,
}

impl NonFinite {
    /// "cost `c` is NaN at step 2 of scenario 7 of the test set{during}: `sqrt` of -1 is NaN",
    /// `during` saying when in a longer run it happened (", in update 3").
    pub fn message(&self, during: &str) -> String {
        format!(
            "{} is {} at step {} of scenario {} of the {} set{during}: {}",
            self.what,
            number(self.value),
            self.step,
            self.scenario,
            self.set.name(),
            self.cause
        )
    }
}

impl From<NonFinite> for RunError {
    fn from(e: NonFinite) -> RunError {
        RunError { span: e.span, message: e.message("") }
    }
}

/// Why a run of scenarios stopped: an error of the model, or a value that is not finite.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    Run(RunError),
    NonFinite(NonFinite),
}

impl From<RunError> for Stop {
    fn from(e: RunError) -> Stop {
        Stop::Run(e)
    }
}

impl From<NonFinite> for Stop {
    fn from(e: NonFinite) -> Stop {
        Stop::NonFinite(e)
    }
}

impl From<Stop> for RunError {
    fn from(e: Stop) -> RunError {
        match e {
            Stop::Run(e) => e,
            Stop::NonFinite(e) => e.into(),
        }
    }
}

/// The stop to report of several runs' (in scenario order): the first error of the model; else
/// the value that went non-finite first, at the earliest step and then the lowest scenario. A
/// run stops at its first non-finite step, so this is the same however the scenarios were
/// split into runs (on every backend).
pub fn first(stops: impl IntoIterator<Item = Stop>) -> Option<Stop> {
    let mut earliest: Option<NonFinite> = None;
    for stop in stops {
        match stop {
            Stop::Run(e) => return Some(Stop::Run(e)),
            Stop::NonFinite(e) => {
                if earliest.as_ref().is_none_or(|f| (e.step, e.scenario) < (f.step, f.scenario)) {
                    earliest = Some(e);
                }
            }
        }
    }
    earliest.map(Stop::NonFinite)
}

/// After the step of period `step`: the first scenario of the world (in row order) with a cost,
/// then a next state, that is NaN or infinite, located in the model.
pub fn check<W: World + ?Sized>(module: &Module, world: &W, step: usize) -> Result<(), NonFinite> {
    let watched: Vec<BufferId> =
        module.costs().map(|(id, _)| id).chain(module.next_states().into_iter().map(|(next, _)| next)).collect();
    for row in 0..world.rows() {
        for &id in &watched {
            if let Some(element) = world.get(id, row).iter().position(|v| !v.is_finite()) {
                return Err(locate(module, world, row, step, id, element));
            }
        }
    }
    Ok(())
}

/// The [`NonFinite`] of element `element` of buffer `id` of a world's row, traced by the
/// interpreter on a copy of the row's buffers.
fn locate<W: World + ?Sized>(
    module: &Module,
    world: &W,
    row: usize,
    step: usize,
    id: BufferId,
    element: usize,
) -> NonFinite {
    let value = world.get(id, row)[element];
    let mut buffers = world.buffers(row);
    let origin = Machine::new(module, &mut buffers, None).origin(&module.step, id, element).ok().flatten();
    let (span, cause) = match origin {
        Some(origin) => (origin.span, origin.cause),
        // The interpreter finds the value finite (a backend that disagrees with it): the
        // definition is the place to look.
        None => (definition(module, id), "defined here".to_string()),
    };
    let (set, scenario) = world.scenario(row);
    NonFinite { what: name(module, id, element), value, set, scenario, step, span, cause }
}

/// "cost `c`", "next state `x'`", "next state `x'[3, 1]`": element `element` (row-major) of a cost or next state, by
/// the elements of its sets.
fn name(module: &Module, id: BufferId, element: usize) -> String {
    let b = &module.buffers[id];
    if b.kind == BufferKind::Cost {
        return format!("cost `{}`", b.name);
    }
    if b.dims.is_empty() {
        return format!("next state `{}`", b.name);
    }
    let mut rest = element;
    let mut position = Vec::with_capacity(b.dims.len());
    for &set in b.dims.iter().rev() {
        let set = &module.sets[set];
        let len = set.len().max(1);
        position.push((set.lo + (rest % len) as i64).to_string());
        rest /= len;
    }
    position.reverse();
    format!("next state `{}[{}]`", b.name, position.join(", "))
}

/// Where the step defines a buffer: the expression it stores.
fn definition(module: &Module, id: BufferId) -> Span {
    fn value(stmts: &[crate::ir::Stmt], id: BufferId) -> Option<crate::ir::Handle<crate::ir::Expr>> {
        stmts.iter().find_map(|s| match s {
            crate::ir::Stmt::For { body, .. } => value(body, id),
            crate::ir::Stmt::Store { buffer, value, .. } if *buffer == id => Some(*value),
            _ => None,
        })
    }
    value(&module.step.body, id).map(|v| module.exprs.span(v)).unwrap_or_default()
}
