//! The Cranelift JIT backend: each per-step program of a validated module becomes one native
//! function that runs the program for a range of scenarios of a [`Batch`](super::Batch).
//!
//! A kernel has the signature `extern "C" fn(bases: *const *mut f64, start: i64, end: i64) -> i64`:
//! `bases` holds one pointer per buffer of the module, in the batch layout (parameters shared,
//! every other buffer scenario-major). The generated code loops over the scenarios itself; for
//! each one it runs the program as scalar `f64` code, loops staying loops, so the size of the
//! generated code does not depend on the model's sizes. It returns 0, or 1 when an index fell
//! outside its set; the host then re-runs the interpreter on the same scenarios to report the
//! error with its place in the model (the kernels never write an input, so the re-run sees the
//! same inputs).
//!
//! Transcendental functions call the same Rust functions as the interpreter (`f64::exp`, ...),
//! registered as host symbols, and every other operation is the IEEE operation the interpreter
//! performs, in the same order, so results agree bit for bit. `max`/`min` follow Rust's rule on
//! NaN (the other operand wins), not Cranelift's `fmax`/`fmin`, which propagate NaN.
//!
//! Invariant: the JIT reads the IR and nothing upstream of it; it never defends against IR the
//! validator would reject.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{self as clif, AbiParam, BlockArg, InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module as _, default_libcall_names};

use super::{Backend, Interp, Kernel, Pointers, is_accumulated, is_shared};
use crate::ir::{BinaryOp, BufferId, Expr, Handle, Module, ReduceOp, SetId, Stmt, UnaryOp, Var};
use crate::sim::RunError;

type KernelFn = unsafe extern "C" fn(*const *mut f64, i64, i64) -> i64;

/// Host functions the generated code calls: the very functions the interpreter uses.
extern "C" fn host_exp(x: f64) -> f64 {
    x.exp()
}
extern "C" fn host_ln(x: f64) -> f64 {
    x.ln()
}
extern "C" fn host_ln_1p(x: f64) -> f64 {
    x.ln_1p()
}
extern "C" fn host_tanh(x: f64) -> f64 {
    x.tanh()
}
extern "C" fn host_sin(x: f64) -> f64 {
    x.sin()
}
extern "C" fn host_cos(x: f64) -> f64 {
    x.cos()
}
extern "C" fn host_round(x: f64) -> f64 {
    x.round()
}
extern "C" fn host_rem(a: f64, b: f64) -> f64 {
    a % b
}
extern "C" fn host_pow(a: f64, b: f64) -> f64 {
    a.powf(b)
}

const UNARY_HOSTS: [(&str, extern "C" fn(f64) -> f64); 7] = [
    ("hmdp_exp", host_exp),
    ("hmdp_ln", host_ln),
    ("hmdp_ln_1p", host_ln_1p),
    ("hmdp_tanh", host_tanh),
    ("hmdp_sin", host_sin),
    ("hmdp_cos", host_cos),
    ("hmdp_round", host_round),
];
const BINARY_HOSTS: [(&str, extern "C" fn(f64, f64) -> f64); 2] = [("hmdp_rem", host_rem), ("hmdp_pow", host_pow)];

/// A failure to compile a module: a bug in this backend, never in the user's model.
#[derive(Debug)]
pub struct JitError(pub String);

impl std::fmt::Display for JitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the JIT could not compile the model: {}", self.0)
    }
}

fn fail(what: impl std::fmt::Display) -> JitError {
    JitError(what.to_string())
}

/// A module's per-step programs, compiled.
pub struct Jit {
    module: Module,
    kernels: Vec<(Kernel, KernelFn)>,
    /// Buffers that [`Kernel::Vjp`] zeroes before it accumulates, with their element counts.
    accumulated: Vec<(BufferId, usize)>,
    /// Owns the code the kernels point into; never touched after compilation.
    _code: JITModule,
}

// SAFETY: the finalized code is immutable and the kernels share no state: each call writes only
// the scenarios it is given (the invariant of `Backend`). `JITModule` is not touched after
// compilation, only kept alive for as long as the kernel pointers are.
unsafe impl Send for Jit {}
unsafe impl Sync for Jit {}

impl Jit {
    /// Compiles `bounds`, `regimes`, `step` and `vjp` of a validated module.
    pub fn compile(module: &Module) -> Result<Jit, JitError> {
        let (code, kernels, _) = build(module, false)?;
        let accumulated = module
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| is_accumulated(module, b.kind))
            .map(|(id, _)| (id, module.len(id)))
            .collect();
        Ok(Jit { module: module.clone(), kernels, accumulated, _code: code })
    }

    /// The Cranelift IR of every kernel, as text (`hmdpc compile --emit clif`).
    pub fn clif(module: &Module) -> Result<String, JitError> {
        let (_, _, text) = build(module, true)?;
        Ok(text)
    }

    fn kernel(&self, kernel: Kernel) -> Option<KernelFn> {
        self.kernels.iter().find(|(k, _)| *k == kernel).map(|(_, f)| *f)
    }
}

impl Backend for Jit {
    fn name(&self) -> &'static str {
        "jit"
    }

    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError> {
        let Some(function) = self.kernel(kernel) else {
            return Err(RunError { span: Default::default(), message: format!("no `{}` kernel", kernel.name()) });
        };
        if kernel == Kernel::Vjp {
            for &(id, len) in &self.accumulated {
                // SAFETY: the caller guarantees scenarios start..end of buffer `id` are ours.
                unsafe { std::slice::from_raw_parts_mut(pointers.bases[id].add(start * len), (end - start) * len) }
                    .fill(0.0);
            }
        }
        // SAFETY: the kernel was compiled for this module's buffers, which `pointers` holds.
        let status = unsafe { function(pointers.bases.as_ptr(), start as i64, end as i64) };
        if status == 0 {
            return Ok(());
        }
        // The interpreter finds and locates the error: the kernel wrote no input, so it sees what
        // the kernel saw.
        // SAFETY: as for this call.
        unsafe { Interp { module: &self.module }.run_range(kernel, pointers, start, end) }?;
        Err(RunError {
            span: Default::default(),
            message: format!("the JIT's `{}` kernel failed where the interpreter did not", kernel.name()),
        })
    }
}

type Built = (JITModule, Vec<(Kernel, KernelFn)>, String);

fn build(module: &Module, keep_text: bool) -> Result<Built, JitError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(fail)?;
    flags.set("use_colocated_libcalls", "false").map_err(fail)?;
    flags.set("is_pic", "false").map_err(fail)?;
    let isa = cranelift_native::builder().map_err(fail)?.finish(settings::Flags::new(flags)).map_err(fail)?;
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    for (name, f) in UNARY_HOSTS {
        jb.symbol(name, f as *const u8);
    }
    for (name, f) in BINARY_HOSTS {
        jb.symbol(name, f as *const u8);
    }
    let mut jit = JITModule::new(jb);
    let pointer = jit.target_config().pointer_type();

    let mut hosts: HashMap<&'static str, FuncId> = HashMap::new();
    for (name, arity) in UNARY_HOSTS.iter().map(|(n, _)| (*n, 1)).chain(BINARY_HOSTS.iter().map(|(n, _)| (*n, 2))) {
        let mut sig = jit.make_signature();
        for _ in 0..arity {
            sig.params.push(AbiParam::new(types::F64));
        }
        sig.returns.push(AbiParam::new(types::F64));
        let id = jit.declare_function(name, Linkage::Import, &sig).map_err(fail)?;
        hosts.insert(name, id);
    }

    let mut ctx = jit.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut text = String::new();
    let mut ids = Vec::new();
    for kernel in Kernel::ALL {
        let mut sig = jit.make_signature();
        sig.params.push(AbiParam::new(pointer));
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        sig.returns.push(AbiParam::new(types::I64));
        let name = format!("{}_{}", module.name, kernel.name());
        let id = jit.declare_function(&name, Linkage::Export, &sig).map_err(fail)?;
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let imports = Imports { jit: &mut jit, ids: &hosts, refs: HashMap::new() };
            emit_kernel(module, kernel.program(module), &mut b, imports, pointer, kernel == Kernel::Vjp)?;
            b.seal_all_blocks();
            b.finalize(jit.target_config());
        }
        if keep_text {
            text.push_str(&format!(
                "; kernel `{}` of model `{}`\n{}\n",
                kernel.name(),
                module.name,
                ctx.func.display()
            ));
        }
        jit.define_function(id, &mut ctx).map_err(|e| fail(format!("{e:?}")))?;
        jit.clear_context(&mut ctx);
        ids.push((kernel, id));
    }
    jit.finalize_definitions().map_err(fail)?;
    let kernels = ids
        .into_iter()
        .map(|(kernel, id)| {
            let code = jit.get_finalized_function(id);
            // SAFETY: the function was declared with exactly this signature above.
            (kernel, unsafe { std::mem::transmute::<*const u8, KernelFn>(code) })
        })
        .collect();
    Ok((jit, kernels, text))
}

/// The host functions a kernel calls, imported into it on first use (so the CLIF text lists
/// them in a fixed order).
struct Imports<'j> {
    jit: &'j mut JITModule,
    ids: &'j HashMap<&'static str, FuncId>,
    refs: HashMap<&'static str, clif::FuncRef>,
}

/// Builds one kernel: the loop over scenarios around the program's statements.
fn emit_kernel(
    module: &Module,
    program: &crate::ir::Program,
    b: &mut FunctionBuilder<'_>,
    hosts: Imports<'_>,
    pointer: clif::Type,
    vjp: bool,
) -> Result<(), JitError> {
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    let error = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (table, start, end) = (params[0], params[1], params[2]);

    // Every buffer's base pointer, loaded once.
    let used = buffers_used(module, &program.body);
    let mut table_entries = vec![None; module.buffers.len()];
    for &id in &used {
        let p = b.ins().load(pointer, MemFlagsData::trusted(), table, (id * 8) as i32);
        table_entries[id] = Some(p);
    }
    let scenario = b.declare_var(types::I64);
    b.def_var(scenario, start);
    b.ins().jump(header, &[]);

    b.switch_to_block(header);
    let s = b.use_var(scenario);
    let more = b.ins().icmp(IntCC::SignedLessThan, s, end);
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let s = b.use_var(scenario);
    let mut bases = vec![None; module.buffers.len()];
    for &id in &used {
        let Some(p) = table_entries[id] else { continue };
        bases[id] = Some(if is_shared(module.buffers[id].kind) {
            p
        } else {
            let bytes = b.ins().imul_imm_s(s, (module.len(id) * 8) as i64);
            b.ins().iadd(p, bytes)
        });
    }
    let mut emitter = Emitter {
        module,
        b,
        hosts,
        bases,
        vars: HashMap::new(),
        error,
        known: vec![HashMap::new()],
        canonical: value_numbers(module),
        vjp,
        reads: HashMap::new(),
        constants: HashMap::new(),
    };
    for stmt in &program.body {
        emitter.stmt(stmt)?;
    }
    let b = emitter.b;
    let s = b.use_var(scenario);
    let next = b.ins().iadd_imm_s(s, 1);
    b.def_var(scenario, next);
    b.ins().jump(header, &[]);

    b.switch_to_block(exit);
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().return_(&[zero]);

    b.switch_to_block(error);
    let one = b.ins().iconst(types::I64, 1);
    b.ins().return_(&[one]);
    Ok(())
}

/// The buffers a program reads or writes.
fn buffers_used(module: &Module, stmts: &[Stmt]) -> Vec<BufferId> {
    fn expr(module: &Module, h: Handle<Expr>, seen: &mut Vec<bool>, out: &mut Vec<bool>) {
        if std::mem::replace(&mut seen[h.index()], true) {
            return;
        }
        if let Expr::Load { buffer, .. } = &module.exprs[h] {
            out[*buffer] = true;
        }
        for c in module.exprs[h].children() {
            expr(module, c, seen, out);
        }
    }
    fn walk(module: &Module, stmts: &[Stmt], seen: &mut Vec<bool>, out: &mut Vec<bool>) {
        for s in stmts {
            match s {
                Stmt::For { body, .. } => walk(module, body, seen, out),
                Stmt::Store { buffer, value, .. } => {
                    out[*buffer] = true;
                    expr(module, *value, seen, out);
                }
                Stmt::If { cond, then, otherwise } => {
                    expr(module, *cond, seen, out);
                    walk(module, then, seen, out);
                    walk(module, otherwise, seen, out);
                }
                Stmt::Accumulate { buffer, index, value } => {
                    out[*buffer] = true;
                    for i in index {
                        expr(module, *i, seen, out);
                    }
                    expr(module, *value, seen, out);
                }
            }
        }
    }
    let mut seen = vec![false; module.exprs.len()];
    let mut out = vec![false; module.buffers.len()];
    walk(module, stmts, &mut seen, &mut out);
    out.iter().enumerate().filter(|(_, used)| **used).map(|(id, _)| id).collect()
}

/// Value numbering of the arena: expressions are pushed after their operands, so one pass that
/// rewrites each node's operands to their canonical handles finds every repeated computation.
fn value_numbers(module: &Module) -> Vec<Handle<Expr>> {
    let mut canonical: Vec<Handle<Expr>> = Vec::with_capacity(module.exprs.len());
    let mut seen: HashMap<String, Handle<Expr>> = HashMap::new();
    for (h, e) in module.exprs.iter() {
        let mut e = e.clone();
        for c in e.children_mut() {
            *c = canonical.get(c.index()).copied().unwrap_or(*c);
        }
        // Random draws are never the same draw twice.
        let key = if matches!(e, Expr::Sample { .. }) { format!("{h:?}") } else { format!("{e:?}") };
        canonical.push(*seen.entry(key).or_insert(h));
    }
    canonical
}

struct Emitter<'a, 'b, 'c> {
    module: &'a Module,
    b: &'a mut FunctionBuilder<'b>,
    hosts: Imports<'c>,
    /// The base address of each used buffer for the current scenario.
    bases: Vec<Option<clif::Value>>,
    /// Bound loop and reduction variables: the Cranelift variable holding the element, and its set.
    vars: HashMap<Var, (Variable, SetId)>,
    error: clif::Block,
    /// Whether this is the `vjp` kernel.
    vjp: bool,
    /// Values already computed, by expression, one map per enclosing scope (a loop body, a
    /// branch): a value computed in a scope may be reused anywhere inside it, because the scope's
    /// first block dominates the rest of it. An entry is dropped when a buffer it read is written.
    known: Vec<HashMap<Handle<Expr>, clif::Value>>,
    /// For each expression, the first expression of the arena that computes the same thing
    /// (same operation on the same operands): the key of `known`, so that a subexpression the
    /// differentiation pass wrote twice is computed once.
    canonical: Vec<Handle<Expr>>,
    /// The buffers each expression reads.
    reads: HashMap<Handle<Expr>, Vec<BufferId>>,
    /// The value of each expression that reads no buffer and no variable.
    constants: HashMap<Handle<Expr>, Option<f64>>,
}

impl Emitter<'_, '_, '_> {
    /// Whether the `vjp` kernel leaves a buffer's store out: next states and costs, which the
    /// derivative never reads.
    fn skips(&self, buffer: BufferId) -> bool {
        matches!(self.module.buffers[buffer].kind, crate::ir::BufferKind::Next { .. } | crate::ir::BufferKind::Cost)
    }

    /// Runs `emit` in a new scope of known values.
    fn scoped<T>(&mut self, emit: impl FnOnce(&mut Self) -> Result<T, JitError>) -> Result<T, JitError> {
        self.known.push(HashMap::new());
        let result = emit(self);
        self.known.pop();
        result
    }

    fn lookup(&self, h: Handle<Expr>) -> Option<clif::Value> {
        let key = self.canonical.get(h.index()).copied().unwrap_or(h);
        self.known.iter().rev().find_map(|scope| scope.get(&key).copied())
    }

    fn buffers_read(&mut self, h: Handle<Expr>) -> &[BufferId] {
        if !self.reads.contains_key(&h) {
            let mut out = Vec::new();
            if let Expr::Load { buffer, .. } = &self.module.exprs[h] {
                out.push(*buffer);
            }
            for c in self.module.exprs[h].children() {
                for b in self.buffers_read(c).to_vec() {
                    if !out.contains(&b) {
                        out.push(b);
                    }
                }
            }
            self.reads.insert(h, out);
        }
        self.reads.get(&h).map_or(&[], |v| v.as_slice())
    }

    /// Forgets every known value that read `buffer`, which is about to change.
    fn written(&mut self, buffer: BufferId) {
        let reads = &self.reads;
        for scope in &mut self.known {
            scope.retain(|h, _| reads.get(h).is_some_and(|r| !r.contains(&buffer)));
        }
    }

    /// The value of an expression built from constants alone, folded as the interpreter computes it.
    fn constant(&mut self, h: Handle<Expr>) -> Option<f64> {
        if let Some(known) = self.constants.get(&h) {
            return *known;
        }
        let value = match &self.module.exprs[h] {
            Expr::Const(c) => Some(*c),
            Expr::Unary { op, arg } => self.constant(*arg).map(|x| crate::sim::eval::unary(*op, x)),
            Expr::Binary { op, lhs, rhs } => match (self.constant(*lhs), self.constant(*rhs)) {
                (Some(a), Some(b)) => Some(crate::sim::eval::binary(*op, a, b)),
                _ => None,
            },
            _ => None,
        };
        self.constants.insert(h, value);
        value
    }

    fn bind(&mut self, var: Var, set: SetId) -> Variable {
        let v = self.b.declare_var(types::I64);
        self.vars.insert(var, (v, set));
        v
    }

    /// Emits `for var in set { body }` with `body` generating the loop's work.
    fn for_each(
        &mut self,
        var: Var,
        set: SetId,
        mut body: impl FnMut(&mut Self) -> Result<(), JitError>,
    ) -> Result<(), JitError> {
        let (lo, hi) = (self.module.sets[set].lo, self.module.sets[set].hi);
        let saved = self.vars.get(&var).copied();
        let v = self.bind(var, set);
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let after = self.b.create_block();
        let first = self.b.ins().iconst(types::I64, lo);
        self.b.def_var(v, first);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let x = self.b.use_var(v);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, hi);
        self.b.ins().brif(more, inner, &[], after, &[]);
        self.b.switch_to_block(inner);
        self.scoped(|e| body(e))?;
        let x = self.b.use_var(v);
        let next = self.b.ins().iadd_imm_s(x, 1);
        self.b.def_var(v, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(after);
        match saved {
            Some(old) => self.vars.insert(var, old),
            None => self.vars.remove(&var),
        };
        Ok(())
    }

    fn stmt(&mut self, stmt: &Stmt) -> Result<(), JitError> {
        match stmt {
            Stmt::For { var, set, body } => self.for_each(*var, *set, |e| {
                for s in body {
                    e.stmt(s)?;
                }
                Ok(())
            }),
            // The VJP recomputes the step only for the lets the derivative reads; the next states
            // and costs it would store again are left as the step wrote them.
            Stmt::Store { buffer, .. } if self.vjp && self.skips(*buffer) => Ok(()),
            Stmt::Store { buffer, index, value } => {
                let v = self.expr(*value)?;
                let mut positions = Vec::with_capacity(index.len());
                for (k, var) in index.iter().enumerate() {
                    let dim = self.module.buffers[*buffer].dims[k];
                    positions.push(self.var_position(*var, dim)?);
                }
                let address = self.address(*buffer, &positions)?;
                self.written(*buffer);
                self.b.ins().store(MemFlagsData::trusted(), v, address, 0);
                Ok(())
            }
            Stmt::If { cond, then, otherwise } => {
                let c = self.expr(*cond)?;
                let zero = self.b.ins().f64const(0.0);
                let taken = self.b.ins().fcmp(FloatCC::NotEqual, c, zero);
                let (yes, no, after) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
                self.b.ins().brif(taken, yes, &[], no, &[]);
                for (block, stmts) in [(yes, then), (no, otherwise)] {
                    self.b.switch_to_block(block);
                    self.scoped(|e| {
                        for s in stmts {
                            e.stmt(s)?;
                        }
                        Ok(())
                    })?;
                    self.b.ins().jump(after, &[]);
                }
                self.b.switch_to_block(after);
                Ok(())
            }
            Stmt::Accumulate { buffer, index, value } => {
                let v = self.expr(*value)?;
                let positions = self.positions(*buffer, index)?;
                let address = self.address(*buffer, &positions)?;
                self.written(*buffer);
                let old = self.b.ins().load(types::F64, MemFlagsData::trusted(), address, 0);
                let sum = self.b.ins().fadd(old, v);
                self.b.ins().store(MemFlagsData::trusted(), sum, address, 0);
                Ok(())
            }
        }
    }

    /// Branches to the error exit unless `ok`.
    fn require(&mut self, ok: clif::Value) {
        let cont = self.b.create_block();
        self.b.ins().brif(ok, cont, &[], self.error, &[]);
        self.b.switch_to_block(cont);
    }

    /// The position (element minus the set's first element) of a loop variable in `dim`.
    fn var_position(&mut self, var: Var, dim: SetId) -> Result<clif::Value, JitError> {
        let &(v, set) = self.vars.get(&var).ok_or_else(|| fail(format!("unbound variable {var:?}")))?;
        let x = self.b.use_var(v);
        if set == dim {
            return Ok(self.b.ins().iadd_imm_s(x, -self.module.sets[dim].lo));
        }
        self.checked_position(x, dim)
    }

    /// The position of element `x` (an i64) in `dim`, with a range check.
    fn checked_position(&mut self, x: clif::Value, dim: SetId) -> Result<clif::Value, JitError> {
        let set = &self.module.sets[dim];
        let position = self.b.ins().iadd_imm_s(x, -set.lo);
        let ok = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, position, set.len() as i64);
        self.require(ok);
        Ok(position)
    }

    fn positions(&mut self, buffer: BufferId, index: &[Handle<Expr>]) -> Result<Vec<clif::Value>, JitError> {
        let mut positions = Vec::with_capacity(index.len());
        for (k, i) in index.iter().enumerate() {
            let dim = self.module.buffers[buffer].dims[k];
            positions.push(self.index_position(*i, dim)?);
        }
        Ok(positions)
    }

    /// The position of an index expression in `dim`, checked unless it is a variable of `dim`.
    fn index_position(&mut self, index: Handle<Expr>, dim: SetId) -> Result<clif::Value, JitError> {
        if let Expr::Var(var) = self.module.exprs[index] {
            return self.var_position(var, dim);
        }
        if let Some(x) = self.integer(index)? {
            return self.checked_position(x, dim);
        }
        // A computed index: it must be a whole number.
        let value = self.expr(index)?;
        let x = self.b.ins().fcvt_to_sint_sat(types::I64, value);
        let back = self.b.ins().fcvt_from_sint(types::F64, x);
        let whole = self.b.ins().fcmp(FloatCC::Equal, back, value);
        self.require(whole);
        self.checked_position(x, dim)
    }

    /// An index expression built from variables, whole constants, `+`, `-` and `*`, as an i64.
    fn integer(&mut self, h: Handle<Expr>) -> Result<Option<clif::Value>, JitError> {
        if !self.is_integer(h) {
            return Ok(None);
        }
        Ok(Some(match &self.module.exprs[h] {
            Expr::Const(c) => self.b.ins().iconst(types::I64, *c as i64),
            Expr::Var(var) => {
                let &(v, _) = self.vars.get(var).ok_or_else(|| fail(format!("unbound variable {var:?}")))?;
                self.b.use_var(v)
            }
            Expr::Binary { op, lhs, rhs } => {
                let (Some(a), Some(c)) = (self.integer(*lhs)?, self.integer(*rhs)?) else {
                    return Err(fail("integer operand"));
                };
                match op {
                    BinaryOp::Add => self.b.ins().iadd(a, c),
                    BinaryOp::Sub => self.b.ins().isub(a, c),
                    _ => self.b.ins().imul(a, c),
                }
            }
            _ => return Err(fail("integer expression")),
        }))
    }

    fn is_integer(&self, h: Handle<Expr>) -> bool {
        match &self.module.exprs[h] {
            // Small enough that i64 arithmetic on it is exact, as it is in f64.
            Expr::Const(c) => c.fract() == 0.0 && c.abs() < 1e9,
            Expr::Var(_) => true,
            Expr::Binary { op: BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul, lhs, rhs } => {
                self.is_integer(*lhs) && self.is_integer(*rhs)
            }
            _ => false,
        }
    }

    /// The address of an element from its positions, row-major.
    fn address(&mut self, buffer: BufferId, positions: &[clif::Value]) -> Result<clif::Value, JitError> {
        let base = self.bases[buffer].ok_or_else(|| fail(format!("buffer {buffer} has no base")))?;
        let dims = &self.module.buffers[buffer].dims;
        let mut offset: Option<clif::Value> = None;
        for (k, &p) in positions.iter().enumerate() {
            let stride: usize = dims[k + 1..].iter().map(|d| self.module.sets[*d].len()).product();
            let term = if stride == 1 { p } else { self.b.ins().imul_imm_s(p, stride as i64) };
            offset = Some(match offset {
                Some(o) => self.b.ins().iadd(o, term),
                None => term,
            });
        }
        Ok(match offset {
            Some(o) => {
                let bytes = self.b.ins().ishl_imm_s(o, 3);
                self.b.ins().iadd(base, bytes)
            }
            None => base,
        })
    }

    fn call(&mut self, name: &'static str, args: &[clif::Value]) -> Result<clif::Value, JitError> {
        let f = match self.hosts.refs.get(name) {
            Some(f) => *f,
            None => {
                let id = *self.hosts.ids.get(name).ok_or_else(|| fail(format!("no host function {name}")))?;
                let f = self.hosts.jit.declare_func_in_func(id, self.b.func);
                self.hosts.refs.insert(name, f);
                f
            }
        };
        let call = self.b.ins().call(f, args);
        Ok(self.b.inst_results(call)[0])
    }

    fn truth(&mut self, c: clif::Value) -> clif::Value {
        let one = self.b.ins().f64const(1.0);
        let zero = self.b.ins().f64const(0.0);
        self.b.ins().select(c, one, zero)
    }

    /// Rust's `a.max(b)` (or `min` with `less`): the other operand when one is NaN.
    fn rust_extreme(&mut self, a: clif::Value, b: clif::Value, less: bool) -> clif::Value {
        let cc = if less { FloatCC::LessThan } else { FloatCC::GreaterThan };
        let beats = self.b.ins().fcmp(cc, b, a);
        let a_nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let pick_b = self.b.ins().bor(beats, a_nan);
        self.b.ins().select(pick_b, b, a)
    }

    /// Whether an expression is cheap and safe to evaluate even when its value is not used: no
    /// calls, no checked indices, no loops, and small.
    fn speculable(&self, h: Handle<Expr>, budget: &mut u32) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match &self.module.exprs[h] {
            Expr::Const(_) | Expr::Var(_) => true,
            Expr::Load { buffer, index } => index.iter().enumerate().all(|(k, i)| match self.module.exprs[*i] {
                Expr::Var(var) => {
                    self.vars.get(&var).is_some_and(|(_, set)| *set == self.module.buffers[*buffer].dims[k])
                }
                _ => false,
            }),
            Expr::Unary { op, arg } => {
                matches!(
                    op,
                    UnaryOp::Neg | UnaryOp::Not | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Floor | UnaryOp::Ceil
                ) && self.speculable(*arg, budget)
            }
            Expr::Binary { op, lhs, rhs } => {
                !matches!(op, BinaryOp::Rem | BinaryOp::Pow)
                    && self.speculable(*lhs, budget)
                    && self.speculable(*rhs, budget)
            }
            Expr::Select { cond, then, otherwise } => {
                self.speculable(*cond, budget) && self.speculable(*then, budget) && self.speculable(*otherwise, budget)
            }
            Expr::Reduce { .. } | Expr::Sample { .. } => false,
        }
    }

    /// `if cond != 0 then then() else otherwise()`, as a branch.
    fn branch(
        &mut self,
        cond: clif::Value,
        then: Handle<Expr>,
        otherwise: Handle<Expr>,
    ) -> Result<clif::Value, JitError> {
        let zero = self.b.ins().f64const(0.0);
        let taken = self.b.ins().fcmp(FloatCC::NotEqual, cond, zero);
        let (yes, no, after) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        let result = self.b.append_block_param(after, types::F64);
        self.b.ins().brif(taken, yes, &[], no, &[]);
        for (block, h) in [(yes, then), (no, otherwise)] {
            self.b.switch_to_block(block);
            let v = self.scoped(|e| e.expr(h))?;
            self.b.ins().jump(after, &[BlockArg::Value(v)]);
        }
        self.b.switch_to_block(after);
        Ok(result)
    }

    /// The value of an expression: reused when already known in this scope, else computed.
    fn expr(&mut self, h: Handle<Expr>) -> Result<clif::Value, JitError> {
        if let Some(v) = self.lookup(h) {
            return Ok(v);
        }
        if let Some(c) = self.constant(h) {
            return Ok(self.b.ins().f64const(c));
        }
        let v = self.compute(h)?;
        if !matches!(self.module.exprs[h], Expr::Const(_) | Expr::Var(_)) {
            self.buffers_read(h);
            let key = self.canonical.get(h.index()).copied().unwrap_or(h);
            self.buffers_read(key);
            if let Some(scope) = self.known.last_mut() {
                scope.insert(key, v);
            }
        }
        Ok(v)
    }

    fn compute(&mut self, h: Handle<Expr>) -> Result<clif::Value, JitError> {
        let module = self.module;
        Ok(match &module.exprs[h] {
            Expr::Const(c) => self.b.ins().f64const(*c),
            Expr::Var(var) => {
                let &(v, _) = self.vars.get(var).ok_or_else(|| fail(format!("unbound variable {var:?}")))?;
                let x = self.b.use_var(v);
                self.b.ins().fcvt_from_sint(types::F64, x)
            }
            Expr::Load { buffer, index } => {
                let positions = self.positions(*buffer, index)?;
                let address = self.address(*buffer, &positions)?;
                self.b.ins().load(types::F64, MemFlagsData::trusted(), address, 0)
            }
            Expr::Unary { op, arg } => {
                let x = self.expr(*arg)?;
                self.unary(*op, x)?
            }
            Expr::Binary { op: op @ (BinaryOp::And | BinaryOp::Or), lhs, rhs } => {
                // Short-circuit, as the interpreter does: `rhs` may index out of range otherwise.
                let a = self.expr(*lhs)?;
                let mut budget = 16;
                if self.speculable(*rhs, &mut budget) {
                    let c = self.expr(*rhs)?;
                    let zero = self.b.ins().f64const(0.0);
                    let a_true = self.b.ins().fcmp(FloatCC::NotEqual, a, zero);
                    let c_true = self.b.ins().fcmp(FloatCC::NotEqual, c, zero);
                    let both = if *op == BinaryOp::And {
                        self.b.ins().band(a_true, c_true)
                    } else {
                        self.b.ins().bor(a_true, c_true)
                    };
                    self.truth(both)
                } else {
                    let zero = self.b.ins().f64const(0.0);
                    let a_true = self.b.ins().fcmp(FloatCC::NotEqual, a, zero);
                    let (more, after) = (self.b.create_block(), self.b.create_block());
                    let result = self.b.append_block_param(after, types::F64);
                    let settled = self.b.ins().f64const(if *op == BinaryOp::And { 0.0 } else { 1.0 });
                    if *op == BinaryOp::And {
                        self.b.ins().brif(a_true, more, &[], after, &[BlockArg::Value(settled)]);
                    } else {
                        self.b.ins().brif(a_true, after, &[BlockArg::Value(settled)], more, &[]);
                    }
                    self.b.switch_to_block(more);
                    let c = self.scoped(|e| e.expr(*rhs))?;
                    let zero = self.b.ins().f64const(0.0);
                    let c_true = self.b.ins().fcmp(FloatCC::NotEqual, c, zero);
                    let t = self.truth(c_true);
                    self.b.ins().jump(after, &[BlockArg::Value(t)]);
                    self.b.switch_to_block(after);
                    result
                }
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.expr(*lhs)?;
                if *op == BinaryOp::Pow
                    && let Some(k) = self.constant(*rhs)
                    && let Some(v) = self.small_power(a, k)
                {
                    return Ok(v);
                }
                let c = self.expr(*rhs)?;
                self.binary(*op, a, c)?
            }
            Expr::Select { cond, then, otherwise } => {
                let c = self.expr(*cond)?;
                let mut budget = 16;
                if self.speculable(*then, &mut budget) && self.speculable(*otherwise, &mut budget) {
                    let t = self.expr(*then)?;
                    let o = self.expr(*otherwise)?;
                    let zero = self.b.ins().f64const(0.0);
                    let taken = self.b.ins().fcmp(FloatCC::NotEqual, c, zero);
                    self.b.ins().select(taken, t, o)
                } else {
                    self.branch(c, *then, *otherwise)?
                }
            }
            Expr::Reduce { op, var, set, body } => self.reduce(*op, *var, *set, *body)?,
            Expr::Sample { .. } => return Err(fail("a random draw in a per-step program")),
        })
    }

    /// `x^1` and `x^2` without a call: `powf` returns `x` and the correctly rounded `x * x` for
    /// them (to within its own rounding for the square).
    fn small_power(&mut self, x: clif::Value, k: f64) -> Option<clif::Value> {
        match k {
            1.0 => Some(x),
            2.0 => Some(self.b.ins().fmul(x, x)),
            _ => None,
        }
    }

    fn unary(&mut self, op: UnaryOp, x: clif::Value) -> Result<clif::Value, JitError> {
        Ok(match op {
            UnaryOp::Neg => self.b.ins().fneg(x),
            UnaryOp::Not => {
                let zero = self.b.ins().f64const(0.0);
                let is_zero = self.b.ins().fcmp(FloatCC::Equal, x, zero);
                self.truth(is_zero)
            }
            UnaryOp::Exp => self.call("hmdp_exp", &[x])?,
            UnaryOp::Log => self.call("hmdp_ln", &[x])?,
            UnaryOp::Sqrt => self.b.ins().sqrt(x),
            UnaryOp::Tanh => self.call("hmdp_tanh", &[x])?,
            UnaryOp::Sigmoid => {
                let neg = self.b.ins().fneg(x);
                let e = self.call("hmdp_exp", &[neg])?;
                let one = self.b.ins().f64const(1.0);
                let denominator = self.b.ins().fadd(one, e);
                self.b.ins().fdiv(one, denominator)
            }
            UnaryOp::Softplus => {
                let zero = self.b.ins().f64const(0.0);
                let positive = self.rust_extreme(x, zero, false);
                let abs = self.b.ins().fabs(x);
                let neg = self.b.ins().fneg(abs);
                let e = self.call("hmdp_exp", &[neg])?;
                let l = self.call("hmdp_ln_1p", &[e])?;
                self.b.ins().fadd(positive, l)
            }
            UnaryOp::Sin => self.call("hmdp_sin", &[x])?,
            UnaryOp::Cos => self.call("hmdp_cos", &[x])?,
            UnaryOp::Abs => self.b.ins().fabs(x),
            UnaryOp::Floor => self.b.ins().floor(x),
            UnaryOp::Ceil => self.b.ins().ceil(x),
            // Rust rounds half away from zero; Cranelift's `nearest` rounds half to even.
            UnaryOp::Round => self.call("hmdp_round", &[x])?,
        })
    }

    fn binary(&mut self, op: BinaryOp, a: clif::Value, c: clif::Value) -> Result<clif::Value, JitError> {
        let compare = |e: &mut Self, cc: FloatCC| {
            let t = e.b.ins().fcmp(cc, a, c);
            e.truth(t)
        };
        Ok(match op {
            BinaryOp::Add => self.b.ins().fadd(a, c),
            BinaryOp::Sub => self.b.ins().fsub(a, c),
            BinaryOp::Mul => self.b.ins().fmul(a, c),
            BinaryOp::Div => self.b.ins().fdiv(a, c),
            BinaryOp::Rem => self.call("hmdp_rem", &[a, c])?,
            BinaryOp::Pow => self.call("hmdp_pow", &[a, c])?,
            BinaryOp::Min => self.rust_extreme(a, c, true),
            BinaryOp::Max => self.rust_extreme(a, c, false),
            BinaryOp::Eq => compare(self, FloatCC::Equal),
            // Rust's `!=` is true when either side is NaN, as is Cranelift's `ne`.
            BinaryOp::Ne => compare(self, FloatCC::NotEqual),
            BinaryOp::Lt => compare(self, FloatCC::LessThan),
            BinaryOp::Le => compare(self, FloatCC::LessThanOrEqual),
            BinaryOp::Gt => compare(self, FloatCC::GreaterThan),
            BinaryOp::Ge => compare(self, FloatCC::GreaterThanOrEqual),
            BinaryOp::And | BinaryOp::Or => {
                let zero = self.b.ins().f64const(0.0);
                let x = self.b.ins().fcmp(FloatCC::NotEqual, a, zero);
                let y = self.b.ins().fcmp(FloatCC::NotEqual, c, zero);
                let both = if op == BinaryOp::And { self.b.ins().band(x, y) } else { self.b.ins().bor(x, y) };
                self.truth(both)
            }
        })
    }

    fn reduce(&mut self, op: ReduceOp, var: Var, set: SetId, body: Handle<Expr>) -> Result<clif::Value, JitError> {
        let acc = self.b.declare_var(types::F64);
        let chosen = self.b.declare_var(types::F64);
        let initial = match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Prod => 1.0,
            ReduceOp::Max | ReduceOp::ArgMax => f64::NEG_INFINITY,
            ReduceOp::Min | ReduceOp::ArgMin => f64::INFINITY,
        };
        let init = self.b.ins().f64const(initial);
        self.b.def_var(acc, init);
        let first = self.b.ins().f64const(self.module.sets[set].lo as f64);
        self.b.def_var(chosen, first);
        self.for_each(var, set, |e| {
            let v = e.expr(body)?;
            let a = e.b.use_var(acc);
            match op {
                ReduceOp::Sum => {
                    let s = e.b.ins().fadd(a, v);
                    e.b.def_var(acc, s);
                }
                ReduceOp::Prod => {
                    let s = e.b.ins().fmul(a, v);
                    e.b.def_var(acc, s);
                }
                ReduceOp::Max | ReduceOp::Min => {
                    let s = e.rust_extreme(a, v, op == ReduceOp::Min);
                    e.b.def_var(acc, s);
                }
                ReduceOp::ArgMax | ReduceOp::ArgMin => {
                    // Strict comparisons keep the first extreme on ties.
                    let cc = if op == ReduceOp::ArgMax { FloatCC::GreaterThan } else { FloatCC::LessThan };
                    let better = e.b.ins().fcmp(cc, v, a);
                    let s = e.b.ins().select(better, v, a);
                    e.b.def_var(acc, s);
                    let &(element, _) = e.vars.get(&var).ok_or_else(|| fail("unbound reduction variable"))?;
                    let x = e.b.use_var(element);
                    let x = e.b.ins().fcvt_from_sint(types::F64, x);
                    let c = e.b.use_var(chosen);
                    let pick = e.b.ins().select(better, x, c);
                    e.b.def_var(chosen, pick);
                }
            }
            Ok(())
        })?;
        Ok(if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) { self.b.use_var(chosen) } else { self.b.use_var(acc) })
    }
}
