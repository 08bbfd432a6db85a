//! Backends: the per-step programs of a module (`bounds`, `regimes`, `step`, `vjp`, `bounds_vjp`)
//! run on a whole batch of scenarios at once.
//!
//! Every backend works on the same [`Batch`] layout and answers to the same [`Backend`] trait,
//! so the trainer, `simulate`, `gradcheck` and `bench` can swap them:
//!
//! - [`Interp`]: the IR interpreter ([`interp`]), one scenario at a time; the oracle;
//! - [`jit::Jit`]: Cranelift-compiled kernels that loop over the batch in generated code;
//! - [`enzyme::Enzyme`]: the Rust crate [`rust`] emits, whose VJP rustc's autodiff (Enzyme)
//!   generates, built once per model and cached.
//!
//! # Layout
//!
//! A [`Batch`] holds one `Vec<f64>` per buffer of the module. A parameter is shared by every
//! scenario of a batch (they all belong to one instance), so it is stored once. Every other
//! buffer holds `size` consecutive copies, one per scenario: element `k` of scenario `b` is at
//! `b * len + k`, where `len` is the buffer's element count. One scenario's data is contiguous
//! within each buffer, so a kernel that handles scenario after scenario reads memory in order.
//!
//! # Kernel contract
//!
//! [`Kernel::Vjp`] reads the adjoints of next states and costs, and *overwrites* the adjoints of
//! states, continuous actions and lets: a backend zeroes them before accumulating, so the caller
//! never has to. What the adjoints of lets hold afterwards differs between backends (they are
//! scratch), and so do the next states and costs: a backend may store them again or leave them
//! as they were (the JIT leaves them, since the derivative never reads them).
//! [`Kernel::BoundsVjp`] reads the adjoints of the bounds and piece bounds that have one,
//! *overwrites* the adjoints of the states, and adds into the adjoints of bounds that other
//! bounds read (a piece bound's contribution to the action's bound). The other kernels write
//! exactly what their IR program writes.
//!
//! Invariant: a kernel run on scenarios `start..end` touches no other scenario's data and never
//! writes a parameter, so chunks of a batch can run on different threads at once.

pub mod enzyme;
pub mod interp;
pub mod jit;
pub mod reference;
pub mod rust;

use rayon::prelude::*;

use crate::ir::{BufferKind, Module, Program};
pub use interp::{Buffers, Interp, Machine, RunError};

/// The per-step programs a backend compiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Bounds,
    Regimes,
    Step,
    Vjp,
    /// The derivative of the bounds in the states (`bounds_vjp`).
    BoundsVjp,
}

impl Kernel {
    pub const ALL: [Kernel; 5] = [Kernel::Bounds, Kernel::Regimes, Kernel::Step, Kernel::Vjp, Kernel::BoundsVjp];

    pub fn program(self, module: &Module) -> &Program {
        match self {
            Kernel::Bounds => &module.bounds,
            Kernel::Regimes => &module.regimes,
            Kernel::Step => &module.step,
            Kernel::Vjp => &module.vjp,
            Kernel::BoundsVjp => &module.bounds_vjp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Bounds => "bounds",
            Kernel::Regimes => "regimes",
            Kernel::Step => "step",
            Kernel::Vjp => "vjp",
            Kernel::BoundsVjp => "bounds_vjp",
        }
    }
}

/// Whether a buffer is stored once per batch rather than once per scenario.
pub fn is_shared(kind: BufferKind) -> bool {
    matches!(kind, BufferKind::Param)
}

/// Whether [`Kernel::Vjp`] zeroes a buffer before it accumulates into it.
pub fn is_accumulated(module: &Module, kind: BufferKind) -> bool {
    match kind {
        BufferKind::Adjoint { of } => module
            .buffers
            .get(of)
            .is_some_and(|b| matches!(b.kind, BufferKind::State | BufferKind::Continuous | BufferKind::Let)),
        _ => false,
    }
}

/// Whether `kernel` zeroes a buffer before it accumulates into it: for [`Kernel::Vjp`], see
/// [`is_accumulated`]; for [`Kernel::BoundsVjp`], the adjoints of the states.
pub fn zeroed_by(module: &Module, kernel: Kernel, kind: BufferKind) -> bool {
    match (kernel, kind) {
        (Kernel::Vjp, _) => is_accumulated(module, kind),
        (Kernel::BoundsVjp, BufferKind::Adjoint { of }) => {
            module.buffers.get(of).is_some_and(|b| b.kind == BufferKind::State)
        }
        _ => false,
    }
}

/// The buffers of `size` scenarios of one instance, in the layout described in the module docs.
#[derive(Clone, Debug)]
pub struct Batch {
    pub size: usize,
    /// Element count of each buffer for one scenario.
    pub lens: Vec<usize>,
    pub shared: Vec<bool>,
    pub values: Vec<Vec<f64>>,
}

impl Batch {
    /// A batch whose parameters are the instance's and every other buffer is zero.
    pub fn new(module: &Module, instance: &Buffers, size: usize) -> Batch {
        let lens: Vec<usize> = (0..module.buffers.len()).map(|id| module.len(id)).collect();
        let shared: Vec<bool> = module.buffers.iter().map(|b| is_shared(b.kind)).collect();
        let values = (0..module.buffers.len())
            .map(|id| if shared[id] { instance.values[id].clone() } else { vec![0.0; lens[id] * size] })
            .collect();
        Batch { size, lens, shared, values }
    }

    /// Buffer `id` of scenario `b`.
    pub fn get(&self, id: usize, b: usize) -> &[f64] {
        if self.shared[id] { &self.values[id] } else { &self.values[id][b * self.lens[id]..(b + 1) * self.lens[id]] }
    }

    /// Buffer `id` of scenario `b`, to write. A parameter is shared by all scenarios.
    pub fn get_mut(&mut self, id: usize, b: usize) -> &mut [f64] {
        let len = self.lens[id];
        if self.shared[id] { &mut self.values[id] } else { &mut self.values[id][b * len..(b + 1) * len] }
    }

    /// A copy of scenario `b`'s buffers, as the interpreter holds them.
    pub fn scenario(&self, b: usize) -> Buffers {
        Buffers { values: (0..self.values.len()).map(|id| self.get(id, b).to_vec()).collect() }
    }

    /// Overwrites `buffers`, which hold a scenario of this batch, with scenario `b`'s, parameters
    /// excepted: they are the same for every scenario, so a large table is not copied again.
    pub fn load_scenario(&self, b: usize, buffers: &mut Buffers) {
        for (id, values) in buffers.values.iter_mut().enumerate() {
            if !self.shared[id] {
                values.copy_from_slice(self.get(id, b));
            }
        }
    }

    /// Writes scenario `b`'s buffers from `buffers`, parameters excepted.
    pub fn set_scenario(&mut self, b: usize, buffers: &Buffers) {
        for (id, values) in buffers.values.iter().enumerate() {
            if !self.shared[id] {
                self.get_mut(id, b).copy_from_slice(values);
            }
        }
    }
}

/// Base pointers of a batch's buffers, handed to kernels that run on disjoint scenario ranges.
#[derive(Clone, Copy)]
pub struct Pointers<'a> {
    pub bases: &'a [*mut f64],
}

// SAFETY: kernels run on disjoint scenario ranges write disjoint memory and only read the shared
// parameters (the invariant in the module docs), so the pointers may be used from many threads.
unsafe impl Send for Pointers<'_> {}
unsafe impl Sync for Pointers<'_> {}

/// A way of running the per-step programs on a batch.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Runs `kernel` on scenarios `start..end` of the batch behind `pointers`, on this thread.
    ///
    /// # Safety
    /// `pointers` must point at the buffers of a live [`Batch`] of this backend's module, of at
    /// least `end` scenarios, that nothing else reads or writes for those scenarios meanwhile.
    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError>;
}

/// Scenarios per parallel task: large enough to amortise scheduling, small enough to balance.
pub const CHUNK: usize = 64;

/// Runs `kernel` on every scenario of `batch`, in chunks of [`CHUNK`] scenarios spread over the
/// rayon pool. The first error, by scenario order, is returned.
pub fn run(backend: &dyn Backend, kernel: Kernel, batch: &mut Batch) -> Result<(), RunError> {
    run_chunked(backend, kernel, batch, CHUNK, true)
}

/// [`run`] with an explicit chunk size, optionally on this thread only.
pub fn run_chunked(
    backend: &dyn Backend,
    kernel: Kernel,
    batch: &mut Batch,
    chunk: usize,
    parallel: bool,
) -> Result<(), RunError> {
    let bases: Vec<*mut f64> = batch.values.iter_mut().map(|v| v.as_mut_ptr()).collect();
    let pointers = Pointers { bases: &bases };
    let size = batch.size;
    let chunk = chunk.max(1);
    let ranges: Vec<(usize, usize)> =
        (0..size.div_ceil(chunk)).map(|c| (c * chunk, ((c + 1) * chunk).min(size))).collect();
    // SAFETY: `bases` points into `batch`, which this function borrows mutably for the duration,
    // and the ranges are disjoint.
    let one = |&(start, end): &(usize, usize)| unsafe { backend.run_range(kernel, pointers, start, end) };
    if parallel { ranges.par_iter().try_for_each(one) } else { ranges.iter().try_for_each(one) }
}
