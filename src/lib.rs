//! hmdp: a compiler for hybrid discrete–continuous Markov decision processes.
//!
//! Stages, each a module, data flowing one way: [`syntax`] (text → AST) → [`check`] (AST →
//! checked model or diagnostics). See `ARCHITECTURE.md` for the map.

pub mod backend;
pub mod check;
pub mod diagnostics;
pub mod ir;
pub mod nn;
pub mod passes;
pub mod sim;
pub mod syntax;
