//! The neural networks the trainer fits: multilayer perceptrons with a hand-written backward
//! pass, Adam, and the heads that turn network outputs into actions and log-probabilities.
//!
//! A typical step: build an [`mlp::Mlp`] per network (`Mlp::new(&[inputs, 512, 512, outputs],
//! head_gain, &mut rng)`), run `forward` on a batch with a [`mlp::Tape`] per work item, turn the
//! outputs into actions and loss gradients with [`heads`], pull those back with `backward` into
//! a gradient from `Mlp::zero_grad`, then [`optim::clip_grad_norm`] and [`optim::Adam::step`]
//! on the flat parameter slice. Every matrix product goes through [`gemm::gemm`], which picks
//! our AVX-512 kernel or `matrixmultiply`; f32 throughout, except the action squashes (f64, the
//! simulator's precision).
//!
//! Nothing here knows about models, the IR or the simulator: the trainer connects them.

pub mod aligned;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod gemm;
pub mod heads;
pub mod mlp;
pub mod optim;
