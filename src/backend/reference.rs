//! The yardstick: the step and its VJP of two shipped models written by hand in plain Rust, as
//! an engineer would write a simulator without a compiler, so that `hmdpc bench` can say how far
//! a generated kernel is from hand-written code (the JIT's target is within 2x of these).
//!
//! [`for_module`] recognises `joint_replenishment` (models/inventory.hmdp) and `switched_lqr`
//! (models/switched_lqr.hmdp) by their IR interface: the module's name, and every buffer the two
//! kernels touch, looked up once by name and checked for its kind and shape. Any mismatch, such
//! as a renamed buffer or a module that was never differentiated, means no reference. The step's
//! formulas themselves are written here, not read from the IR: a model that kept a shipped
//! model's name and interface but changed its step would be served the shipped step, which is
//! why `tests/reference.rs` checks both kernels against the interpreter at several sizes.
//!
//! Each kernel runs scenario after scenario, with loops over items or coordinates on slices:
//! no unsafe beyond turning the batch's pointers into slices, no SIMD intrinsics. The VJP is
//! reverse mode derived by hand, with the conventions of `passes::ad` at the kinks: `max(a, b)`
//! passes the adjoint to `a` when `a >= b`, `min(a, b)` to `a` when `a <= b`, so at a tie both
//! sides of a clamp, and both `max(post, 0)` and `max(-post, 0)` at `post == 0`, pass it on.
//! Like every backend, `vjp` also writes what `step` writes, and overwrites the adjoints of
//! states, continuous actions and lets.
//!
//! Floating-point order follows the IR where that is the natural order anyway (sums from 0 in
//! index order, adjoints gathered in the reverse order of the step's statements), so both
//! kernels equal the interpreter bit for bit except `switched_lqr`'s `quad`: the IR squares with
//! `pow`, which the C library rounds to within 0.52 ulp rather than exactly, while `x * x` here
//! is correctly rounded. The tests hold the VJP only to 1e-12, leaving the order of its
//! additions free.

use std::ops::Range;
use std::slice;

use super::{Backend, Kernel, Pointers, RunError};
use crate::diagnostics::Span;
use crate::ir::{BufferId, BufferKind, Module, ValidModule};

/// The hand-written reference for `module`, when it is one of the two models this file knows.
pub fn for_module(module: &ValidModule) -> Option<Box<dyn Backend>> {
    match module.name.as_str() {
        "joint_replenishment" => Some(Box::new(Inventory::recognise(module)?)),
        "switched_lqr" => Some(Box::new(SwitchedLqr::recognise(module)?)),
        _ => None,
    }
}

const NAME: &str = "reference";

fn only_step_and_vjp(kernel: Kernel) -> RunError {
    RunError {
        span: Span::default(),
        message: format!("the reference backend implements only the `step` and `vjp` kernels, not `{}`", kernel.name()),
    }
}

/// Element positions of scenario `b` in a per-scenario buffer of `len` elements per scenario.
fn scenario(b: usize, len: usize) -> Range<usize> {
    b * len..(b + 1) * len
}

/// A module's buffers looked up by name, each checked for its kind and shape.
struct Interface<'m> {
    module: &'m Module,
}

impl Interface<'_> {
    /// The number of elements of the set `name`, which must start at 0 (its elements are then
    /// also positions).
    fn size(&self, name: &str) -> Option<usize> {
        let set = self.module.sets.iter().find(|s| s.name == name)?;
        (set.lo == 0).then(|| set.len())
    }

    /// The buffer `name`, if it is of `kind` and its dimensions are sets of these sizes, starting
    /// at 0.
    fn buffer(&self, name: &str, kind: BufferKind, shape: &[usize]) -> Option<BufferId> {
        let id = self.module.buffers.iter().position(|b| b.name == name)?;
        let buffer = &self.module.buffers[id];
        let sizes: Option<Vec<usize>> =
            buffer.dims.iter().map(|&d| self.module.sets.get(d).and_then(|s| (s.lo == 0).then(|| s.len()))).collect();
        (buffer.kind == kind && sizes.as_deref() == Some(shape)).then_some(id)
    }

    /// The adjoint of buffer `of`, named as `passes::ad` names it.
    fn adjoint(&self, of: BufferId) -> Option<BufferId> {
        let original = self.module.buffers.get(of)?;
        let id = self.module.buffers.iter().position(|b| b.name == format!("{}.adj", original.name))?;
        let buffer = &self.module.buffers[id];
        (buffer.kind == BufferKind::Adjoint { of } && buffer.dims == original.dims).then_some(id)
    }

    /// The stored value of the label `label` of the discrete action `action`.
    fn label(&self, action: BufferId, label: &str) -> Option<f64> {
        let position = self.module.buffers.get(action)?.labels.iter().position(|l| l == label)?;
        Some(position as f64)
    }
}

/// Scenarios `start..end` of a batch, handed out as one slice per buffer.
#[derive(Clone, Copy)]
struct Scenarios<'a> {
    pointers: Pointers<'a>,
    start: usize,
    end: usize,
}

impl<'a> Scenarios<'a> {
    fn count(&self) -> usize {
        self.end - self.start
    }

    /// Parameter `id`, of `len` elements, shared by every scenario.
    ///
    /// # Safety
    /// The contract of [`Backend::run_range`]; `id` is a parameter of `len` elements.
    unsafe fn param(&self, id: BufferId, len: usize) -> &'a [f64] {
        unsafe { slice::from_raw_parts(self.pointers.bases[id], len) }
    }

    /// Per-scenario buffer `id`, of `len` elements per scenario, to read.
    ///
    /// # Safety
    /// The contract of [`Backend::run_range`]; `id` is not shared and has `len` elements per
    /// scenario, and no slice of `id` from [`Scenarios::write`] lives at the same time.
    unsafe fn read(&self, id: BufferId, len: usize) -> &'a [f64] {
        unsafe { slice::from_raw_parts(self.pointers.bases[id].add(self.start * len), self.count() * len) }
    }

    /// Per-scenario buffer `id`, of `len` elements per scenario, to write.
    ///
    /// # Safety
    /// As for [`Scenarios::read`], and no other slice of `id` lives at the same time.
    unsafe fn write(&self, id: BufferId, len: usize) -> &'a mut [f64] {
        unsafe { slice::from_raw_parts_mut(self.pointers.bases[id].add(self.start * len), self.count() * len) }
    }
}

// ---------------------------------------------------------------------------------------------
// joint_replenishment (models/inventory.hmdp)

/// The buffers of `joint_replenishment` that its step and VJP touch.
struct Inventory {
    items: usize,
    lead: usize,
    /// The stored value of `order` that means `buy`.
    buy: f64,
    h: BufferId,
    p: BufferId,
    fixed_cost: BufferId,
    onhand: BufferId,
    pipe: BufferId,
    demand: BufferId,
    order: BufferId,
    q: BufferId,
    post: BufferId,
    onhand_next: BufferId,
    pipe_next: BufferId,
    holding: BufferId,
    shortage: BufferId,
    fixed: BufferId,
    onhand_bar: BufferId,
    pipe_bar: BufferId,
    q_bar: BufferId,
    post_bar: BufferId,
    onhand_next_bar: BufferId,
    pipe_next_bar: BufferId,
    holding_bar: BufferId,
    shortage_bar: BufferId,
}

impl Inventory {
    fn recognise(module: &Module) -> Option<Inventory> {
        let m = Interface { module };
        let items = m.size("I")?;
        // The hand-written step has at least one pipeline slot (a lead of 2 or more).
        let lead = m.size("L").filter(|&slots| slots >= 1)?;
        let (item, pipeline, scalar) = (&[items][..], &[items, lead][..], &[][..]);
        let onhand = m.buffer("onhand", BufferKind::State, item)?;
        let pipe = m.buffer("pipe", BufferKind::State, pipeline)?;
        let order = m.buffer("order", BufferKind::Discrete, scalar)?;
        let q = m.buffer("q", BufferKind::Continuous, item)?;
        let post = m.buffer("post", BufferKind::Let, item)?;
        let onhand_next = m.buffer("onhand'", BufferKind::Next { of: onhand }, item)?;
        let pipe_next = m.buffer("pipe'", BufferKind::Next { of: pipe }, pipeline)?;
        let holding = m.buffer("holding", BufferKind::Cost, scalar)?;
        let shortage = m.buffer("shortage", BufferKind::Cost, scalar)?;
        Some(Inventory {
            items,
            lead,
            buy: m.label(order, "buy")?,
            h: m.buffer("h", BufferKind::Param, item)?,
            p: m.buffer("p", BufferKind::Param, item)?,
            fixed_cost: m.buffer("K", BufferKind::Param, scalar)?,
            onhand,
            pipe,
            demand: m.buffer("demand", BufferKind::Noise, item)?,
            order,
            q,
            post,
            onhand_next,
            pipe_next,
            holding,
            shortage,
            fixed: m.buffer("fixed", BufferKind::Cost, scalar)?,
            onhand_bar: m.adjoint(onhand)?,
            pipe_bar: m.adjoint(pipe)?,
            q_bar: m.adjoint(q)?,
            post_bar: m.adjoint(post)?,
            onhand_next_bar: m.adjoint(onhand_next)?,
            pipe_next_bar: m.adjoint(pipe_next)?,
            holding_bar: m.adjoint(holding)?,
            shortage_bar: m.adjoint(shortage)?,
        })
    }

    /// # Safety
    /// The contract of [`Backend::run_range`]. The ids name distinct buffers (they were found by
    /// distinct names), so no two slices alias.
    unsafe fn step_buffers<'a>(&self, s: Scenarios<'a>) -> InventoryStep<'a> {
        let (items, lead) = (self.items, self.lead);
        unsafe {
            InventoryStep {
                items,
                lead,
                buy: self.buy,
                h: s.param(self.h, items),
                p: s.param(self.p, items),
                fixed_cost: s.param(self.fixed_cost, 1)[0],
                onhand: s.read(self.onhand, items),
                pipe: s.read(self.pipe, items * lead),
                demand: s.read(self.demand, items),
                order: s.read(self.order, 1),
                q: s.read(self.q, items),
                post: s.write(self.post, items),
                onhand_next: s.write(self.onhand_next, items),
                pipe_next: s.write(self.pipe_next, items * lead),
                holding: s.write(self.holding, 1),
                shortage: s.write(self.shortage, 1),
                fixed: s.write(self.fixed, 1),
            }
        }
    }

    /// # Safety
    /// As for [`Inventory::step_buffers`].
    unsafe fn adjoint_buffers<'a>(&self, s: Scenarios<'a>) -> InventoryAdjoints<'a> {
        let (items, lead) = (self.items, self.lead);
        unsafe {
            InventoryAdjoints {
                onhand_next: s.read(self.onhand_next_bar, items),
                pipe_next: s.read(self.pipe_next_bar, items * lead),
                holding: s.read(self.holding_bar, 1),
                shortage: s.read(self.shortage_bar, 1),
                onhand: s.write(self.onhand_bar, items),
                pipe: s.write(self.pipe_bar, items * lead),
                q: s.write(self.q_bar, items),
                post: s.write(self.post_bar, items),
            }
        }
    }
}

impl Backend for Inventory {
    fn name(&self) -> &'static str {
        NAME
    }

    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError> {
        let scenarios = Scenarios { pointers, start, end };
        match kernel {
            Kernel::Step => {
                // SAFETY: the caller keeps the contract of `run_range`.
                let mut step = unsafe { self.step_buffers(scenarios) };
                for b in 0..scenarios.count() {
                    step.forward(b);
                }
            }
            Kernel::Vjp => {
                // SAFETY: as above; the step's buffers and the adjoints are distinct buffers.
                let (mut step, mut bar) = unsafe { (self.step_buffers(scenarios), self.adjoint_buffers(scenarios)) };
                for b in 0..scenarios.count() {
                    step.forward(b);
                    step.backward(&mut bar, b);
                }
            }
            Kernel::Bounds | Kernel::Regimes | Kernel::BoundsVjp => return Err(only_step_and_vjp(kernel)),
        }
        Ok(())
    }
}

/// What the step reads and writes, for a range of scenarios.
struct InventoryStep<'a> {
    items: usize,
    lead: usize,
    buy: f64,
    h: &'a [f64],
    p: &'a [f64],
    fixed_cost: f64,
    onhand: &'a [f64],
    pipe: &'a [f64],
    demand: &'a [f64],
    order: &'a [f64],
    q: &'a [f64],
    post: &'a mut [f64],
    onhand_next: &'a mut [f64],
    pipe_next: &'a mut [f64],
    holding: &'a mut [f64],
    shortage: &'a mut [f64],
    fixed: &'a mut [f64],
}

/// The adjoints the VJP reads (of next states and costs) and writes (of states, `q` and `post`).
struct InventoryAdjoints<'a> {
    onhand_next: &'a [f64],
    pipe_next: &'a [f64],
    holding: &'a [f64],
    shortage: &'a [f64],
    onhand: &'a mut [f64],
    pipe: &'a mut [f64],
    q: &'a mut [f64],
    post: &'a mut [f64],
}

impl InventoryStep<'_> {
    /// The step of scenario `b`.
    fn forward(&mut self, b: usize) {
        let (items, lead) = (self.items, self.lead);
        let buy = self.order[b] == self.buy;
        let onhand = &self.onhand[scenario(b, items)];
        let demand = &self.demand[scenario(b, items)];
        let q = &self.q[scenario(b, items)];
        let pipe = &self.pipe[scenario(b, items * lead)];
        let post = &mut self.post[scenario(b, items)];
        let onhand_next = &mut self.onhand_next[scenario(b, items)];
        let pipe_next = &mut self.pipe_next[scenario(b, items * lead)];
        let mut holding = 0.0;
        let mut shortage = 0.0;
        for i in 0..items {
            let left = onhand[i] - demand[i];
            post[i] = left;
            // Orders in transit move one period closer: the first arrives, and this period's
            // order, if any, joins at the far end.
            let (row, next_row) = (&pipe[scenario(i, lead)], &mut pipe_next[scenario(i, lead)]);
            onhand_next[i] = left + row[0];
            next_row[..lead - 1].copy_from_slice(&row[1..]);
            next_row[lead - 1] = if buy { q[i] } else { 0.0 };
            holding += self.h[i] * left.max(0.0);
            shortage += self.p[i] * (-left).max(0.0);
        }
        self.holding[b] = holding;
        self.shortage[b] = shortage;
        self.fixed[b] = if buy { self.fixed_cost } else { 0.0 };
    }

    /// The adjoints of scenario `b`, after [`InventoryStep::forward`] has computed its `post`.
    fn backward(&self, bar: &mut InventoryAdjoints<'_>, b: usize) {
        let (items, lead) = (self.items, self.lead);
        let buy = self.order[b] == self.buy;
        let post = &self.post[scenario(b, items)];
        let (holding_bar, shortage_bar) = (bar.holding[b], bar.shortage[b]);
        let onhand_next_bar = &bar.onhand_next[scenario(b, items)];
        let pipe_next_bar = &bar.pipe_next[scenario(b, items * lead)];
        let onhand_bar = &mut bar.onhand[scenario(b, items)];
        let pipe_bar = &mut bar.pipe[scenario(b, items * lead)];
        let q_bar = &mut bar.q[scenario(b, items)];
        let post_bar = &mut bar.post[scenario(b, items)];
        for i in 0..items {
            // The step's uses of `post`, last first: shortage, holding, onhand'. At post == 0
            // both max(-post, 0) and max(post, 0) pass the adjoint on.
            let mut g = 0.0;
            if post[i] <= 0.0 {
                g -= shortage_bar * self.p[i];
            }
            if post[i] >= 0.0 {
                g += holding_bar * self.h[i];
            }
            g += onhand_next_bar[i];
            post_bar[i] = g;
            onhand_bar[i] = g;
            // pipe[i, 0] went into onhand', pipe[i, l + 1] into pipe'[i, l], and q (when
            // buying) into the last slot of pipe'.
            let (row_bar, next_row_bar) = (&mut pipe_bar[scenario(i, lead)], &pipe_next_bar[scenario(i, lead)]);
            row_bar[0] = onhand_next_bar[i];
            row_bar[1..].copy_from_slice(&next_row_bar[..lead - 1]);
            q_bar[i] = if buy { next_row_bar[lead - 1] } else { 0.0 };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// switched_lqr (models/switched_lqr.hmdp)

/// The model's `clamp(…, -100, 100)` on the next state.
const LIMIT: f64 = 100.0;

/// The model's `clamp(v, -100, 100)` as the IR has it, `min(max(v, -100), 100)`: unlike
/// `f64::clamp`, it sends a NaN to the lower end, as the interpreter does.
#[allow(clippy::manual_clamp)]
fn clamp(v: f64) -> f64 {
    v.max(-LIMIT).min(LIMIT)
}

/// The buffers of `switched_lqr` that its step and VJP touch.
struct SwitchedLqr {
    n: usize,
    modes: usize,
    a: BufferId,
    gains: BufferId,
    x: BufferId,
    mode: BufferId,
    u: BufferId,
    x_next: BufferId,
    quad: BufferId,
    x_bar: BufferId,
    u_bar: BufferId,
    x_next_bar: BufferId,
    quad_bar: BufferId,
}

impl SwitchedLqr {
    fn recognise(module: &Module) -> Option<SwitchedLqr> {
        let m = Interface { module };
        let n = m.size("D")?;
        let modes = m.size("M")?;
        let x = m.buffer("x", BufferKind::State, &[n])?;
        let u = m.buffer("u", BufferKind::Continuous, &[n])?;
        let mode = m.buffer("mode", BufferKind::Discrete, &[])?;
        let x_next = m.buffer("x'", BufferKind::Next { of: x }, &[n])?;
        let quad = m.buffer("quad", BufferKind::Cost, &[])?;
        // The stored value of `mode` is its label's position, which is also its row of `B`.
        if module.buffers[mode].labels.len() != modes {
            return None;
        }
        Some(SwitchedLqr {
            n,
            modes,
            a: m.buffer("A", BufferKind::Param, &[n, n])?,
            gains: m.buffer("B", BufferKind::Param, &[modes, n])?,
            x,
            mode,
            u,
            x_next,
            quad,
            x_bar: m.adjoint(x)?,
            u_bar: m.adjoint(u)?,
            x_next_bar: m.adjoint(x_next)?,
            quad_bar: m.adjoint(quad)?,
        })
    }

    /// # Safety
    /// The contract of [`Backend::run_range`]. The ids name distinct buffers (they were found by
    /// distinct names), so no two slices alias.
    unsafe fn step_buffers<'a>(&self, s: Scenarios<'a>) -> LqrStep<'a> {
        let (n, modes) = (self.n, self.modes);
        unsafe {
            LqrStep {
                n,
                modes,
                a: s.param(self.a, n * n),
                gains: s.param(self.gains, modes * n),
                x: s.read(self.x, n),
                mode: s.read(self.mode, 1),
                u: s.read(self.u, n),
                x_next: s.write(self.x_next, n),
                quad: s.write(self.quad, 1),
            }
        }
    }

    /// # Safety
    /// As for [`SwitchedLqr::step_buffers`].
    unsafe fn adjoint_buffers<'a>(&self, s: Scenarios<'a>) -> LqrAdjoints<'a> {
        let n = self.n;
        unsafe {
            LqrAdjoints {
                x_next: s.read(self.x_next_bar, n),
                quad: s.read(self.quad_bar, 1),
                x: s.write(self.x_bar, n),
                u: s.write(self.u_bar, n),
            }
        }
    }
}

impl Backend for SwitchedLqr {
    fn name(&self) -> &'static str {
        NAME
    }

    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError> {
        let scenarios = Scenarios { pointers, start, end };
        // The value of each coordinate before the clamp, kept for the backward pass.
        let mut drive = vec![0.0; self.n];
        match kernel {
            Kernel::Step => {
                // SAFETY: the caller keeps the contract of `run_range`.
                let mut step = unsafe { self.step_buffers(scenarios) };
                for b in 0..scenarios.count() {
                    step.forward(b, &mut drive)?;
                }
            }
            Kernel::Vjp => {
                // SAFETY: as above; the step's buffers and the adjoints are distinct buffers.
                let (mut step, mut bar) = unsafe { (self.step_buffers(scenarios), self.adjoint_buffers(scenarios)) };
                for b in 0..scenarios.count() {
                    step.forward(b, &mut drive)?;
                    step.backward(&mut bar, b, &drive)?;
                }
            }
            Kernel::Bounds | Kernel::Regimes | Kernel::BoundsVjp => return Err(only_step_and_vjp(kernel)),
        }
        Ok(())
    }
}

/// What the step reads and writes, for a range of scenarios.
struct LqrStep<'a> {
    n: usize,
    modes: usize,
    a: &'a [f64],
    /// `B[mode, i]`, row-major.
    gains: &'a [f64],
    x: &'a [f64],
    mode: &'a [f64],
    u: &'a [f64],
    x_next: &'a mut [f64],
    quad: &'a mut [f64],
}

/// The adjoints the VJP reads (of `x'` and `quad`) and writes (of `x` and `u`).
struct LqrAdjoints<'a> {
    x_next: &'a [f64],
    quad: &'a [f64],
    x: &'a mut [f64],
    u: &'a mut [f64],
}

impl LqrStep<'_> {
    /// The row of `B` that scenario `b`'s mode selects, or the error the interpreter would give
    /// for a mode outside `M`.
    fn gain_row(&self, b: usize) -> Result<Range<usize>, RunError> {
        let mode = self.mode[b];
        if mode.fract() == 0.0 && (0.0..self.modes as f64).contains(&mode) {
            Ok(scenario(mode as usize, self.n))
        } else {
            Err(RunError {
                span: Span::default(),
                message: format!("index {mode} of `B` (dimension 1) is outside `M` = 0..{}", self.modes),
            })
        }
    }

    /// The step of scenario `b`; `drive` receives each coordinate's value before the clamp.
    fn forward(&mut self, b: usize, drive: &mut [f64]) -> Result<(), RunError> {
        let n = self.n;
        let gain = &self.gains[self.gain_row(b)?];
        let x = &self.x[scenario(b, n)];
        let u = &self.u[scenario(b, n)];
        let mut squares = 0.0;
        for xi in x {
            squares += xi * xi;
        }
        let mut effort = 0.0;
        for ui in u {
            effort += ui * ui;
        }
        self.quad[b] = squares + 0.1 * effort;
        let x_next = &mut self.x_next[scenario(b, n)];
        for (i, row) in self.a.chunks_exact(n).enumerate() {
            let mut ax = 0.0;
            for (aij, xj) in row.iter().zip(x) {
                ax += aij * xj;
            }
            drive[i] = ax + gain[i] * u[i];
            x_next[i] = clamp(drive[i]);
        }
        Ok(())
    }

    /// The adjoints of scenario `b`, given the values before the clamp from
    /// [`LqrStep::forward`].
    fn backward(&self, bar: &mut LqrAdjoints<'_>, b: usize, drive: &[f64]) -> Result<(), RunError> {
        let n = self.n;
        let gain = &self.gains[self.gain_row(b)?];
        let x = &self.x[scenario(b, n)];
        let u = &self.u[scenario(b, n)];
        let quad_bar = bar.quad[b];
        let x_next_bar = &bar.x_next[scenario(b, n)];
        let x_bar = &mut bar.x[scenario(b, n)];
        let u_bar = &mut bar.u[scenario(b, n)];
        x_bar.fill(0.0);
        for (i, row) in self.a.chunks_exact(n).enumerate() {
            // The clamp passes the adjoint on [-LIMIT, LIMIT], both ends included.
            if (-LIMIT..=LIMIT).contains(&drive[i]) {
                let g = x_next_bar[i];
                for (xj_bar, aij) in x_bar.iter_mut().zip(row) {
                    *xj_bar += g * aij;
                }
                u_bar[i] = g * gain[i];
            } else {
                u_bar[i] = 0.0;
            }
        }
        // quad = Σ x² + 0.1 Σ u².
        for (xi_bar, xi) in x_bar.iter_mut().zip(x) {
            *xi_bar += 2.0 * quad_bar * xi;
        }
        for (ui_bar, ui) in u_bar.iter_mut().zip(u) {
            *ui_bar += 0.2 * quad_bar * ui;
        }
        Ok(())
    }
}
