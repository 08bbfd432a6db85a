//! The neural networks the trainer fits: multilayer perceptrons with a hand-written backward
//! pass, and Adam.
//!
//! A typical step: build an [`mlp::Mlp`] per network (`Mlp::new(&[inputs, 512, 512, outputs],
//! head_gain, &mut rng)`), run `forward` on a batch with a [`mlp::Tape`] per work item, pull a
//! gradient on the outputs back with `backward` into a gradient from `Mlp::zero_grad`, then
//! [`optim::Adam::step_clipped`] on the flat parameter slice. Backpropagation through time pulls
//! back one step at a time with `backward_stacked` and forms the parameter gradient of all steps
//! at the end (`add_stacked_grad`). Every matrix product goes through [`gemm::gemm`] or
//! [`gemm::gemm_parallel`], which pick our AVX-512 kernel or `matrixmultiply`; f32 throughout.
//! What turns outputs into actions and losses (softmax, squashes, Gaussians) is the trainer's.
//!
//! Nothing here knows about models, the IR or the simulator: the trainer connects them.

pub mod aligned;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod gemm;
pub mod mlp;
pub mod optim;
