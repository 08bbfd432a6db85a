//! Passes over the IR: analyses and transformations between lowering and the backends.
//!
//! - [`smoothness`] classifies how each cost and update depends on the active inputs.
//! - [`reformulate`] turns jumps in continuous actions at their lower bound into discrete
//!   choices (a fixed ordering cost becomes `{zero, positive}`).
//! - [`ad`] adds the `vjp` program: reverse-mode differentiation of the step.
//!
//! Invariant: a pass takes a validated module and leaves a validated module.

pub mod ad;
pub mod reformulate;
pub mod smoothness;
