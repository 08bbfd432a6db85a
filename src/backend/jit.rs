//! The Cranelift JIT backend: each per-step program of a validated module becomes one native
//! function that runs the program for a range of scenarios of a [`Batch`](super::Batch).
//!
//! A kernel has the signature `extern "C" fn(bases: *const *mut f64, start: i64, end: i64) -> i64`:
//! `bases` holds one pointer per buffer of the module, in the batch layout (parameters shared,
//! every other buffer scenario-major). The generated code loops over the scenarios itself, four
//! at a time in lockstep and the rest one at a time (see `emit_kernel`), loops staying loops, so
//! the size of the generated code does not depend on the model's sizes. It returns 0, or 1 when
//! an index fell outside its set; the host then re-runs the interpreter on the same scenarios to report the
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

use super::{Backend, Interp, Kernel, Pointers, RunError, is_shared, zeroed_by};
use crate::ir::{BinaryOp, BufferId, Expr, Handle, Module, ReduceOp, SetId, Stmt, UnaryOp, ValidModule, Var};

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
    module: ValidModule,
    kernels: Vec<(Kernel, KernelFn)>,
    /// Buffers that a kernel zeroes before it accumulates, with their element counts.
    accumulated: Vec<(Kernel, BufferId, usize)>,
    /// Owns the code the kernels point into; never touched after compilation.
    _code: JITModule,
}

// SAFETY: the finalized code is immutable and the kernels share no state: each call writes only
// the scenarios it is given (the invariant of `Backend`). `JITModule` is not touched after
// compilation, only kept alive for as long as the kernel pointers are.
unsafe impl Send for Jit {}
unsafe impl Sync for Jit {}

impl Jit {
    /// Compiles `bounds`, `regimes`, `step`, `vjp` and `bounds_vjp` of a validated module.
    pub fn compile(module: &ValidModule) -> Result<Jit, JitError> {
        let (code, kernels, _) = build(module, false)?;
        let accumulated = Kernel::ALL
            .into_iter()
            .flat_map(|kernel| {
                let module: &Module = module;
                module
                    .buffers
                    .iter()
                    .enumerate()
                    .filter(move |(_, b)| zeroed_by(module, kernel, b.kind))
                    .map(move |(id, _)| (kernel, id, module.len(id)))
            })
            .collect();
        Ok(Jit { module: module.clone(), kernels, accumulated, _code: code })
    }

    /// The Cranelift IR of every kernel, as text (`hmdpc compile --emit clif`).
    pub fn clif(module: &ValidModule) -> Result<String, JitError> {
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
        for &(_, id, len) in self.accumulated.iter().filter(|(k, _, _)| *k == kernel) {
            // SAFETY: the caller guarantees scenarios start..end of buffer `id` are ours.
            unsafe { std::slice::from_raw_parts_mut(pointers.bases[id].add(start * len), (end - start) * len) }
                .fill(0.0);
        }
        // SAFETY: the kernel was compiled for this module's buffers, which `pointers` holds.
        let status = unsafe { function(pointers.bases.as_ptr(), start as i64, end as i64) };
        if status == 0 {
            return Ok(());
        }
        // The interpreter finds and locates the error: the kernel wrote no input, so it sees what
        // the kernel saw.
        // SAFETY: as for this call.
        unsafe { Interp::new(&self.module).run_range(kernel, pointers, start, end) }?;
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
            emit_kernel(module, kernel, &mut b, imports, pointer)?;
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

/// Scenarios one pass of the lockstep body runs: each value of the program that depends on the
/// scenario is computed once per lane, side by side, so the chains of floating-point work of
/// different scenarios overlap in the CPU instead of each waiting on the one before.
const LANES: usize = 4;

/// Builds one kernel: the loop over scenarios around the program's statements.
///
/// While at least [`LANES`] scenarios remain, the loop runs them through a lockstep copy of the
/// program; the rest run one at a time through a scalar copy. Each lane performs exactly the
/// operations the scalar copy would, in the same order, so the results are the same. When the
/// lanes disagree on a branch, or an index is out of range in any lane, the lockstep pass stops
/// and its scenarios run again through the scalar copy: that copy redoes every store with the same
/// values (a kernel never writes its inputs) and reports the error if there is one. The buffers the
/// pass accumulated into are zeroed again first, as the host zeroed them before the call.
fn emit_kernel(
    module: &Module,
    kernel: Kernel,
    b: &mut FunctionBuilder<'_>,
    hosts: Imports<'_>,
    pointer: clif::Type,
) -> Result<(), JitError> {
    let program = kernel.program(module);
    let vjp = kernel == Kernel::Vjp;
    let entry = b.create_block();
    let header = b.create_block();
    let single = b.create_block();
    let scalar = b.create_block();
    let exit = b.create_block();
    let error = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (table, start, end) = (params[0], params[1], params[2]);

    // Every buffer's base pointer, loaded once.
    let used = buffers_used(module, &program.body);
    let written = buffers_written(&program.body);
    let mut table_entries = vec![None; module.buffers.len()];
    for &id in &used {
        let p = b.ins().load(pointer, invariant(), table, (id * 8) as i32);
        table_entries[id] = Some(p);
    }
    let scenario = b.declare_var(types::I64);
    let stop = b.declare_var(types::I64);
    b.def_var(scenario, start);
    b.ins().jump(header, &[]);

    // Lockstep is sound only when re-running a pass's scenarios redoes all of its work: no store
    // into a buffer the scenarios share, and no accumulation into a buffer the host did not zero.
    let lockstep = written.iter().all(|&(id, accumulated)| {
        !is_shared(module.buffers[id].kind) && (!accumulated || zeroed_by(module, kernel, module.buffers[id].kind))
    });
    let context = Context { module, written: &written, vjp };

    b.switch_to_block(header);
    let mut hosts = hosts;
    if lockstep {
        let (lock, bail) = (b.create_block(), b.create_block());
        let s = b.use_var(scenario);
        let last = b.ins().iadd_imm_s(s, LANES as i64);
        let room = b.ins().icmp(IntCC::SignedLessThanOrEqual, last, end);
        b.ins().brif(room, lock, &[], single, &[]);

        b.switch_to_block(lock);
        let s = b.use_var(scenario);
        let bases = scenario_bases(module, b, &table_entries, s, LANES);
        let mut emitter = Emitter::new(context, b, hosts, bases, bail, LANES);
        emitter.stmts(&program.body)?;
        hosts = emitter.hosts;
        let s = b.use_var(scenario);
        let next = b.ins().iadd_imm_s(s, LANES as i64);
        b.def_var(scenario, next);
        b.ins().jump(header, &[]);

        b.switch_to_block(bail);
        let s = b.use_var(scenario);
        for &(id, accumulated) in &written {
            if let (true, Some(base)) = (accumulated, table_entries[id]) {
                zero_scenarios(b, base, s, module.len(id));
            }
        }
        let last = b.ins().iadd_imm_s(s, LANES as i64);
        b.def_var(stop, last);
        b.ins().jump(scalar, &[]);
    } else {
        b.ins().jump(single, &[]);
    }

    // One scenario, if any remain.
    b.switch_to_block(single);
    let s = b.use_var(scenario);
    let last = b.ins().iadd_imm_s(s, 1);
    b.def_var(stop, last);
    let more = b.ins().icmp(IntCC::SignedLessThan, s, end);
    b.ins().brif(more, scalar, &[], exit, &[]);

    // Scenarios `scenario..stop`, one at a time.
    b.switch_to_block(scalar);
    let s = b.use_var(scenario);
    let bases = scenario_bases(module, b, &table_entries, s, 1);
    let mut emitter = Emitter::new(context, b, hosts, bases, error, 1);
    emitter.stmts(&program.body)?;
    let s = b.use_var(scenario);
    let next = b.ins().iadd_imm_s(s, 1);
    b.def_var(scenario, next);
    let until = b.use_var(stop);
    let more = b.ins().icmp(IntCC::SignedLessThan, next, until);
    b.ins().brif(more, scalar, &[], header, &[]);

    b.switch_to_block(exit);
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().return_(&[zero]);

    b.switch_to_block(error);
    let one = b.ins().iconst(types::I64, 1);
    b.ins().return_(&[one]);
    Ok(())
}

/// Flags of a load from memory no kernel writes while it runs, at an address valid wherever the
/// code computing it is: Cranelift may then hoist it out of loops and share it.
fn invariant() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

/// Each used buffer's base address for `lanes` scenarios from `s` on: one address for a shared
/// buffer, one per lane for the others.
fn scenario_bases(
    module: &Module,
    b: &mut FunctionBuilder<'_>,
    table_entries: &[Option<clif::Value>],
    s: clif::Value,
    lanes: usize,
) -> Vec<Option<Lanes>> {
    let mut bases = vec![None; module.buffers.len()];
    for (id, entry) in table_entries.iter().enumerate() {
        let Some(p) = *entry else { continue };
        bases[id] = Some(if is_shared(module.buffers[id].kind) {
            vec![p]
        } else {
            let bytes = (module.len(id) * 8) as i64;
            let first = b.ins().imul_imm_s(s, bytes);
            let first = b.ins().iadd(p, first);
            (0..lanes).map(|k| if k == 0 { first } else { b.ins().iadd_imm_s(first, k as i64 * bytes) }).collect()
        });
    }
    bases
}

/// Stores `+0.0` into the `LANES` scenarios from `s` on of a buffer of `len` elements each.
fn zero_scenarios(b: &mut FunctionBuilder<'_>, base: clif::Value, s: clif::Value, len: usize) {
    let bytes = (len * 8) as i64;
    let first = b.ins().imul_imm_s(s, bytes);
    let first = b.ins().iadd(base, first);
    let last = b.ins().iadd_imm_s(first, LANES as i64 * bytes);
    let (header, body, after) = (b.create_block(), b.create_block(), b.create_block());
    let at = b.append_block_param(header, types::I64);
    b.ins().jump(header, &[BlockArg::Value(first)]);
    b.switch_to_block(header);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, at, last);
    b.ins().brif(more, body, &[], after, &[]);
    b.switch_to_block(body);
    let zero = b.ins().f64const(0.0);
    b.ins().store(MemFlagsData::trusted(), zero, at, 0);
    let next = b.ins().iadd_imm_s(at, 8);
    b.ins().jump(header, &[BlockArg::Value(next)]);
    b.switch_to_block(after);
}

/// The buffers a program stores or accumulates into, each once, with whether it accumulates.
fn buffers_written(stmts: &[Stmt]) -> Vec<(BufferId, bool)> {
    fn walk(stmts: &[Stmt], out: &mut Vec<(BufferId, bool)>) {
        for s in stmts {
            let (buffer, accumulated) = match s {
                Stmt::For { body, .. } => {
                    walk(body, out);
                    continue;
                }
                Stmt::If { then, otherwise, .. } => {
                    walk(then, out);
                    walk(otherwise, out);
                    continue;
                }
                Stmt::Store { buffer, .. } => (*buffer, false),
                Stmt::Accumulate { buffer, .. } => (*buffer, true),
            };
            match out.iter_mut().find(|(b, _)| *b == buffer) {
                Some(entry) => entry.1 |= accumulated,
                None => out.push((buffer, accumulated)),
            }
        }
    }
    let mut out = Vec::new();
    walk(stmts, &mut out);
    out
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

/// A value of the program in each lane of a pass: one value when it is the same in every lane
/// (it reads nothing that differs between scenarios), else one per lane.
type Lanes = Vec<clif::Value>;

/// Lane `k` of a value.
fn lane(v: &Lanes, k: usize) -> clif::Value {
    if v.len() == 1 { v[0] } else { v[k] }
}

/// What every copy of a kernel's program shares.
#[derive(Clone, Copy)]
struct Context<'a> {
    module: &'a Module,
    /// The buffers the program writes (see [`buffers_written`]).
    written: &'a [(BufferId, bool)],
    /// Whether this is the `vjp` kernel.
    vjp: bool,
}

struct Emitter<'a, 'b, 'c> {
    module: &'a Module,
    written: &'a [(BufferId, bool)],
    b: &'a mut FunctionBuilder<'b>,
    hosts: Imports<'c>,
    /// Scenarios run side by side: [`LANES`] in the lockstep copy, 1 in the scalar one.
    lanes: usize,
    /// The base address of each used buffer for the current scenarios.
    bases: Vec<Option<Lanes>>,
    /// Bound loop and reduction variables: the Cranelift variable holding the element, and its set.
    vars: HashMap<Var, (Variable, SetId)>,
    /// Where an index out of range goes: the error exit, or the scalar re-run of a lockstep pass
    /// (which also takes lanes that disagree on a branch).
    error: clif::Block,
    /// Whether this is the `vjp` kernel.
    vjp: bool,
    /// Inside a branch whose condition differs between lanes: which lanes take it. Both sides of
    /// such a branch run, each storing only in its own lanes.
    mask: Option<Lanes>,
    /// Values already computed, by expression, one map per enclosing scope (a loop body, a
    /// branch): a value computed in a scope may be reused anywhere inside it, because the scope's
    /// first block dominates the rest of it. An entry is dropped when a buffer it read is written.
    known: Vec<HashMap<Handle<Expr>, Lanes>>,
    /// For each expression, the first expression of the arena that computes the same thing
    /// (same operation on the same operands): the key of `known`, so that a subexpression the
    /// differentiation pass wrote twice is computed once.
    canonical: Vec<Handle<Expr>>,
    /// The buffers each expression reads.
    reads: HashMap<Handle<Expr>, Vec<BufferId>>,
    /// The value of each expression that reads no buffer and no variable.
    constants: HashMap<Handle<Expr>, Option<f64>>,
    /// Whether each expression's value can differ between scenarios.
    varying: HashMap<Handle<Expr>, bool>,
}

impl<'a, 'b, 'c> Emitter<'a, 'b, 'c> {
    fn new(
        context: Context<'a>,
        b: &'a mut FunctionBuilder<'b>,
        hosts: Imports<'c>,
        bases: Vec<Option<Lanes>>,
        error: clif::Block,
        lanes: usize,
    ) -> Self {
        Emitter {
            module: context.module,
            written: context.written,
            b,
            hosts,
            lanes,
            bases,
            vars: HashMap::new(),
            error,
            vjp: context.vjp,
            mask: None,
            known: vec![HashMap::new()],
            canonical: value_numbers(context.module),
            reads: HashMap::new(),
            constants: HashMap::new(),
            varying: HashMap::new(),
        }
    }
}

impl Emitter<'_, '_, '_> {
    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), JitError> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

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

    fn lookup(&self, h: Handle<Expr>) -> Option<Lanes> {
        let key = self.canonical.get(h.index()).copied().unwrap_or(h);
        self.known.iter().rev().find_map(|scope| scope.get(&key).cloned())
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

    /// Whether an expression's value can differ between scenarios: it loads from a buffer that is
    /// not shared, or at an index that can differ.
    fn is_varying(&mut self, h: Handle<Expr>) -> bool {
        if let Some(&v) = self.varying.get(&h) {
            return v;
        }
        let own = match &self.module.exprs[h] {
            Expr::Load { buffer, .. } => !is_shared(self.module.buffers[*buffer].kind),
            Expr::Sample { .. } => true,
            _ => false,
        };
        let v = own || self.module.exprs[h].children().into_iter().any(|c| self.is_varying(c));
        self.varying.insert(h, v);
        v
    }

    /// The number of values an expression has in this copy: one, or one per lane.
    fn width(&mut self, h: Handle<Expr>) -> usize {
        if self.lanes > 1 && self.is_varying(h) { self.lanes } else { 1 }
    }

    /// `v` with `width` values.
    fn widen(v: &Lanes, width: usize) -> Lanes {
        if v.len() == width { v.clone() } else { (0..width).map(|k| lane(v, k)).collect() }
    }

    /// `f` applied lane by lane: one value when every argument has one, else one per lane.
    fn map(
        &mut self,
        args: &[&Lanes],
        mut f: impl FnMut(&mut Self, &[clif::Value]) -> Result<clif::Value, JitError>,
    ) -> Result<Lanes, JitError> {
        let width = args.iter().map(|a| a.len()).max().unwrap_or(1);
        (0..width)
            .map(|k| {
                let xs: Vec<clif::Value> = args.iter().map(|a| lane(a, k)).collect();
                f(self, &xs)
            })
            .collect()
    }

    /// Whether `v` is nonzero, per lane.
    fn nonzero(&mut self, v: &Lanes) -> Lanes {
        v.iter()
            .map(|&x| {
                let zero = self.b.ins().f64const(0.0);
                self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
            })
            .collect()
    }

    /// The value of an expression built from constants alone, folded as the interpreter computes it.
    fn constant(&mut self, h: Handle<Expr>) -> Option<f64> {
        if let Some(known) = self.constants.get(&h) {
            return *known;
        }
        let value = match &self.module.exprs[h] {
            Expr::Const(c) => Some(*c),
            Expr::Unary { op, arg } => self.constant(*arg).map(|x| super::interp::unary(*op, x)),
            Expr::Binary { op, lhs, rhs } => match (self.constant(*lhs), self.constant(*rhs)) {
                (Some(a), Some(b)) => Some(super::interp::binary(*op, a, b)),
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
            Stmt::For { var, set, body } => self.for_each(*var, *set, |e| e.stmts(body)),
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
                let addresses = self.address(*buffer, &positions)?;
                self.written(*buffer);
                for (k, &address) in addresses.iter().enumerate() {
                    let new = lane(&v, k);
                    let new = self.unless_masked(k, new, address);
                    self.b.ins().store(MemFlagsData::trusted(), new, address, 0);
                }
                Ok(())
            }
            Stmt::If { cond, then, otherwise } => {
                let c = self.expr(*cond)?;
                if c.len() > 1 {
                    return self.masked_if(&c, then, otherwise);
                }
                let zero = self.b.ins().f64const(0.0);
                let taken = self.b.ins().fcmp(FloatCC::NotEqual, c[0], zero);
                let (yes, no, after) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
                self.b.ins().brif(taken, yes, &[], no, &[]);
                for (block, stmts) in [(yes, then), (no, otherwise)] {
                    self.b.switch_to_block(block);
                    self.scoped(|e| e.stmts(stmts))?;
                    self.b.ins().jump(after, &[]);
                }
                self.b.switch_to_block(after);
                Ok(())
            }
            Stmt::Accumulate { buffer, index, value } => {
                let v = self.expr(*value)?;
                let positions = self.positions(*buffer, index)?;
                let addresses = self.address(*buffer, &positions)?;
                self.written(*buffer);
                for (k, &address) in addresses.iter().enumerate() {
                    let old = self.b.ins().load(types::F64, MemFlagsData::trusted(), address, 0);
                    let mut sum = self.b.ins().fadd(old, lane(&v, k));
                    if let Some(mask) = &self.mask {
                        sum = self.b.ins().select(mask[k], sum, old);
                    }
                    self.b.ins().store(MemFlagsData::trusted(), sum, address, 0);
                }
                Ok(())
            }
        }
    }

    /// `if cond { then } else { otherwise }` when the lanes may disagree on `cond`: each side
    /// runs for the lanes that take it (skipped when none does), storing only in those lanes.
    fn masked_if(&mut self, cond: &Lanes, then: &[Stmt], otherwise: &[Stmt]) -> Result<(), JitError> {
        let zero = self.b.ins().f64const(0.0);
        for (stmts, cc) in [(then, FloatCC::NotEqual), (otherwise, FloatCC::Equal)] {
            if stmts.is_empty() {
                continue;
            }
            let mut mask = Vec::with_capacity(cond.len());
            for (k, &c) in cond.iter().enumerate() {
                let takes = self.b.ins().fcmp(cc, c, zero);
                mask.push(match &self.mask {
                    Some(outer) => self.b.ins().band(outer[k], takes),
                    None => takes,
                });
            }
            let mut any = mask[0];
            for &m in &mask[1..] {
                any = self.b.ins().bor(any, m);
            }
            let (run, after) = (self.b.create_block(), self.b.create_block());
            self.b.ins().brif(any, run, &[], after, &[]);
            self.b.switch_to_block(run);
            let outer = self.mask.replace(mask);
            let done = self.scoped(|e| e.stmts(stmts));
            self.mask = outer;
            done?;
            self.b.ins().jump(after, &[]);
            self.b.switch_to_block(after);
        }
        Ok(())
    }

    /// What lane `k` stores at `address`: `new`, or the value already there when the lane is
    /// masked off.
    fn unless_masked(&mut self, k: usize, new: clif::Value, address: clif::Value) -> clif::Value {
        match &self.mask {
            Some(mask) => {
                let m = mask[k];
                let old = self.b.ins().load(types::F64, MemFlagsData::trusted(), address, 0);
                self.b.ins().select(m, new, old)
            }
            None => new,
        }
    }

    /// Branches to the error exit unless `ok`.
    fn require(&mut self, ok: clif::Value) {
        let cont = self.b.create_block();
        self.b.ins().brif(ok, cont, &[], self.error, &[]);
        self.b.switch_to_block(cont);
    }

    /// Branches to the error exit unless `ok` in every lane.
    fn require_all(&mut self, ok: &Lanes) {
        let mut all = ok[0];
        for &o in &ok[1..] {
            all = self.b.ins().band(all, o);
        }
        self.require(all);
    }

    /// The position (element minus the set's first element) of a loop variable in `dim`.
    fn var_position(&mut self, var: Var, dim: SetId) -> Result<Lanes, JitError> {
        let &(v, set) = self.vars.get(&var).ok_or_else(|| fail(format!("unbound variable {var:?}")))?;
        let x = self.b.use_var(v);
        if set == dim {
            return Ok(vec![self.b.ins().iadd_imm_s(x, -self.module.sets[dim].lo)]);
        }
        self.checked_position(&vec![x], dim)
    }

    /// The position of element `x` (an i64 per lane) in `dim`, with a range check.
    fn checked_position(&mut self, x: &Lanes, dim: SetId) -> Result<Lanes, JitError> {
        let (lo, len) = (self.module.sets[dim].lo, self.module.sets[dim].len() as i64);
        let position: Lanes = x.iter().map(|&x| self.b.ins().iadd_imm_s(x, -lo)).collect();
        let ok: Lanes = position.iter().map(|&p| self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, p, len)).collect();
        self.require_all(&ok);
        Ok(position)
    }

    fn positions(&mut self, buffer: BufferId, index: &[Handle<Expr>]) -> Result<Vec<Lanes>, JitError> {
        let mut positions = Vec::with_capacity(index.len());
        for (k, i) in index.iter().enumerate() {
            let dim = self.module.buffers[buffer].dims[k];
            positions.push(self.index_position(*i, dim)?);
        }
        Ok(positions)
    }

    /// The position of an index expression in `dim`, checked unless it is a variable of `dim`.
    fn index_position(&mut self, index: Handle<Expr>, dim: SetId) -> Result<Lanes, JitError> {
        if let Expr::Var(var) = self.module.exprs[index] {
            return self.var_position(var, dim);
        }
        if let Some(x) = self.integer(index)? {
            return self.checked_position(&vec![x], dim);
        }
        // A computed index: it must be a whole number.
        let value = self.expr(index)?;
        let mut xs = Vec::with_capacity(value.len());
        let mut whole = Vec::with_capacity(value.len());
        for &v in &value {
            let x = self.b.ins().fcvt_to_sint_sat(types::I64, v);
            let back = self.b.ins().fcvt_from_sint(types::F64, x);
            whole.push(self.b.ins().fcmp(FloatCC::Equal, back, v));
            xs.push(x);
        }
        self.require_all(&whole);
        self.checked_position(&xs, dim)
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

    /// The address of an element from its positions, row-major: one per lane, or one when the
    /// buffer is shared and the positions are the same in every lane.
    fn address(&mut self, buffer: BufferId, positions: &[Lanes]) -> Result<Lanes, JitError> {
        let base = self.bases[buffer].clone().ok_or_else(|| fail(format!("buffer {buffer} has no base")))?;
        let dims = &self.module.buffers[buffer].dims;
        let mut offset: Option<Lanes> = None;
        for (k, p) in positions.iter().enumerate() {
            let stride: usize = dims[k + 1..].iter().map(|d| self.module.sets[*d].len()).product();
            let term: Lanes =
                p.iter().map(|&p| if stride == 1 { p } else { self.b.ins().imul_imm_s(p, stride as i64) }).collect();
            offset = Some(match offset {
                Some(o) => self.map(&[&o, &term], |e, x| Ok(e.b.ins().iadd(x[0], x[1])))?,
                None => term,
            });
        }
        match offset {
            Some(o) => self.map(&[&base, &o], |e, x| {
                let bytes = e.b.ins().ishl_imm_s(x[1], 3);
                Ok(e.b.ins().iadd(x[0], bytes))
            }),
            None => Ok(base),
        }
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

    /// Whether a load needs no index check: every index is a loop variable of its own dimension.
    fn unchecked(&self, buffer: BufferId, index: &[Handle<Expr>]) -> bool {
        index.iter().enumerate().all(|(k, i)| match self.module.exprs[*i] {
            Expr::Var(var) => self.vars.get(&var).is_some_and(|(_, set)| *set == self.module.buffers[buffer].dims[k]),
            _ => false,
        })
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
            Expr::Load { buffer, index } => self.unchecked(*buffer, index),
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

    /// `if cond != 0 then then() else otherwise()`, as a branch taken when every lane agrees.
    fn branch(
        &mut self,
        h: Handle<Expr>,
        cond: &Lanes,
        then: Handle<Expr>,
        otherwise: Handle<Expr>,
    ) -> Result<Lanes, JitError> {
        if cond.len() > 1 {
            // Lanes may disagree: both arms, then each lane picks its own.
            let t = self.scoped(|e| e.expr(then))?;
            let o = self.scoped(|e| e.expr(otherwise))?;
            return self.map(&[cond, &t, &o], |e, x| {
                let zero = e.b.ins().f64const(0.0);
                let taken = e.b.ins().fcmp(FloatCC::NotEqual, x[0], zero);
                Ok(e.b.ins().select(taken, x[1], x[2]))
            });
        }
        let zero = self.b.ins().f64const(0.0);
        let taken = self.b.ins().fcmp(FloatCC::NotEqual, cond[0], zero);
        let width = self.width(h);
        let (yes, no, after) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        let result: Lanes = (0..width).map(|_| self.b.append_block_param(after, types::F64)).collect();
        self.b.ins().brif(taken, yes, &[], no, &[]);
        for (block, arm) in [(yes, then), (no, otherwise)] {
            self.b.switch_to_block(block);
            let v = self.scoped(|e| e.expr(arm))?;
            let args: Vec<BlockArg> = Self::widen(&v, width).into_iter().map(BlockArg::Value).collect();
            self.b.ins().jump(after, &args);
        }
        self.b.switch_to_block(after);
        Ok(result)
    }

    /// The value of an expression: reused when already known in this scope, else computed.
    fn expr(&mut self, h: Handle<Expr>) -> Result<Lanes, JitError> {
        if let Some(v) = self.lookup(h) {
            return Ok(v);
        }
        if let Some(c) = self.constant(h) {
            return Ok(vec![self.b.ins().f64const(c)]);
        }
        let v = self.compute(h)?;
        if !matches!(self.module.exprs[h], Expr::Const(_) | Expr::Var(_)) {
            self.buffers_read(h);
            let key = self.canonical.get(h.index()).copied().unwrap_or(h);
            self.buffers_read(key);
            if let Some(scope) = self.known.last_mut() {
                scope.insert(key, v.clone());
            }
        }
        Ok(v)
    }

    fn compute(&mut self, h: Handle<Expr>) -> Result<Lanes, JitError> {
        let module = self.module;
        Ok(match &module.exprs[h] {
            Expr::Const(c) => vec![self.b.ins().f64const(*c)],
            Expr::Var(var) => {
                let &(v, _) = self.vars.get(var).ok_or_else(|| fail(format!("unbound variable {var:?}")))?;
                let x = self.b.use_var(v);
                vec![self.b.ins().fcvt_from_sint(types::F64, x)]
            }
            Expr::Load { buffer, index } => {
                let positions = self.positions(*buffer, index)?;
                let addresses = self.address(*buffer, &positions)?;
                // A buffer this program never writes is constant while it runs; at an index that
                // needs no check, its load may move anywhere its address is known.
                let still = !self.written.iter().any(|(b, _)| b == buffer) && self.unchecked(*buffer, index);
                let flags = if still { invariant() } else { MemFlagsData::trusted() };
                addresses.iter().map(|&a| self.b.ins().load(types::F64, flags, a, 0)).collect()
            }
            Expr::Unary { op, arg } => {
                let x = self.expr(*arg)?;
                self.map(&[&x], |e, x| e.unary(*op, x[0]))?
            }
            Expr::Binary { op: op @ (BinaryOp::And | BinaryOp::Or), lhs, rhs } => {
                // Short-circuit, as the interpreter does: `rhs` may index out of range otherwise.
                let a = self.expr(*lhs)?;
                let mut budget = 16;
                if self.speculable(*rhs, &mut budget) {
                    let c = self.expr(*rhs)?;
                    self.map(&[&a, &c], |e, x| e.binary(*op, x[0], x[1]))?
                } else if a.len() > 1 {
                    // Lanes may disagree on `lhs`: `rhs` in every lane (a lane whose `rhs` fails
                    // an index check sends the pass to the scalar re-run, which short-circuits).
                    let c = self.scoped(|e| e.expr(*rhs))?;
                    self.map(&[&a, &c], |e, x| e.binary(*op, x[0], x[1]))?
                } else {
                    let zero = self.b.ins().f64const(0.0);
                    let a_true = self.b.ins().fcmp(FloatCC::NotEqual, a[0], zero);
                    let width = self.width(h);
                    let (more, after) = (self.b.create_block(), self.b.create_block());
                    let result: Lanes = (0..width).map(|_| self.b.append_block_param(after, types::F64)).collect();
                    let settled = self.b.ins().f64const(if *op == BinaryOp::And { 0.0 } else { 1.0 });
                    let settled = vec![BlockArg::Value(settled); width];
                    if *op == BinaryOp::And {
                        self.b.ins().brif(a_true, more, &[], after, &settled);
                    } else {
                        self.b.ins().brif(a_true, after, &settled, more, &[]);
                    }
                    self.b.switch_to_block(more);
                    let c = self.scoped(|e| e.expr(*rhs))?;
                    let c_true = self.nonzero(&c);
                    let t: Lanes = c_true.iter().map(|&c| self.truth(c)).collect();
                    let args: Vec<BlockArg> = Self::widen(&t, width).into_iter().map(BlockArg::Value).collect();
                    self.b.ins().jump(after, &args);
                    self.b.switch_to_block(after);
                    result
                }
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.expr(*lhs)?;
                if *op == BinaryOp::Pow
                    && let Some(k) = self.constant(*rhs)
                    && matches!(k, 1.0 | 2.0)
                {
                    return self.map(&[&a], |e, x| Ok(e.small_power(x[0], k)));
                }
                let c = self.expr(*rhs)?;
                self.map(&[&a, &c], |e, x| e.binary(*op, x[0], x[1]))?
            }
            Expr::Select { cond, then, otherwise } => {
                let c = self.expr(*cond)?;
                let mut budget = 16;
                if self.speculable(*then, &mut budget) && self.speculable(*otherwise, &mut budget) {
                    let t = self.expr(*then)?;
                    let o = self.expr(*otherwise)?;
                    self.map(&[&c, &t, &o], |e, x| {
                        let zero = e.b.ins().f64const(0.0);
                        let taken = e.b.ins().fcmp(FloatCC::NotEqual, x[0], zero);
                        Ok(e.b.ins().select(taken, x[1], x[2]))
                    })?
                } else {
                    self.branch(h, &c, *then, *otherwise)?
                }
            }
            Expr::Reduce { op, var, set, body } => self.reduce(*op, *var, *set, *body)?,
            Expr::Sample { .. } => return Err(fail("a random draw in a per-step program")),
        })
    }

    /// `x^1` and `x^2` without a call: `powf` returns `x` and the correctly rounded `x * x` for
    /// them (to within its own rounding for the square).
    fn small_power(&mut self, x: clif::Value, k: f64) -> clif::Value {
        if k == 1.0 { x } else { self.b.ins().fmul(x, x) }
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

    fn reduce(&mut self, op: ReduceOp, var: Var, set: SetId, body: Handle<Expr>) -> Result<Lanes, JitError> {
        let width = self.width(body);
        let acc: Vec<Variable> = (0..width).map(|_| self.b.declare_var(types::F64)).collect();
        let chosen: Vec<Variable> = (0..width).map(|_| self.b.declare_var(types::F64)).collect();
        let initial = match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Prod => 1.0,
            ReduceOp::Max | ReduceOp::ArgMax => f64::NEG_INFINITY,
            ReduceOp::Min | ReduceOp::ArgMin => f64::INFINITY,
        };
        for k in 0..width {
            let init = self.b.ins().f64const(initial);
            self.b.def_var(acc[k], init);
            let first = self.b.ins().f64const(self.module.sets[set].lo as f64);
            self.b.def_var(chosen[k], first);
        }
        self.for_each(var, set, |e| {
            let v = e.expr(body)?;
            for k in 0..width {
                let (v, a) = (lane(&v, k), e.b.use_var(acc[k]));
                match op {
                    ReduceOp::Sum => {
                        let s = e.b.ins().fadd(a, v);
                        e.b.def_var(acc[k], s);
                    }
                    ReduceOp::Prod => {
                        let s = e.b.ins().fmul(a, v);
                        e.b.def_var(acc[k], s);
                    }
                    ReduceOp::Max | ReduceOp::Min => {
                        let s = e.rust_extreme(a, v, op == ReduceOp::Min);
                        e.b.def_var(acc[k], s);
                    }
                    ReduceOp::ArgMax | ReduceOp::ArgMin => {
                        // Strict comparisons keep the first extreme on ties.
                        let cc = if op == ReduceOp::ArgMax { FloatCC::GreaterThan } else { FloatCC::LessThan };
                        let better = e.b.ins().fcmp(cc, v, a);
                        let s = e.b.ins().select(better, v, a);
                        e.b.def_var(acc[k], s);
                        let &(element, _) = e.vars.get(&var).ok_or_else(|| fail("unbound reduction variable"))?;
                        let x = e.b.use_var(element);
                        let x = e.b.ins().fcvt_from_sint(types::F64, x);
                        let c = e.b.use_var(chosen[k]);
                        let pick = e.b.ins().select(better, x, c);
                        e.b.def_var(chosen[k], pick);
                    }
                }
            }
            Ok(())
        })?;
        let result = if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) { &chosen } else { &acc };
        Ok(result.iter().map(|&v| self.b.use_var(v)).collect())
    }
}
