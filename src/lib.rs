//! hmdp: a compiler for hybrid discrete–continuous Markov decision processes.
//!
//! Stages, each a module, data flowing one way: [`syntax`] (text → AST) → [`check`] (AST →
//! checked model or diagnostics) → [`ir`] (lowering, validation) → [`passes`] (reformulation,
//! smoothness, reverse-mode AD) → [`backend`] (kernels over batches: interpreter, Cranelift JIT)
//! → [`sim`] (scenarios, rollouts) → [`train`] (HPO and PPO on [`nn`]). [`random`] holds every
//! random stream. See `ARCHITECTURE.md`.

pub mod backend;
pub mod bench;
pub mod builtins;
pub mod check;
pub mod diagnostics;
pub mod ir;
pub mod nn;
pub mod passes;
pub mod pipeline;
pub mod random;
pub mod resources;
pub mod sim;
pub mod subject;
pub mod sweep;
pub mod syntax;
pub mod train;
pub mod tune;
