//! The neural networks the trainer fits: multilayer perceptrons with a hand-written backward
//! pass, their optimiser, and the probability heads that turn network outputs into actions.
//!
//! Start from [`gemm::gemm`]: every matrix product in this module goes through it.

pub mod aligned;
pub mod gemm;

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod heads;
pub mod mlp;
pub mod optim;
