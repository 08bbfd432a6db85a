//! A compiled model and its instance: the compiler's report as data, the parameters as numpy
//! arrays, and the step and its vector-Jacobian product on batches of numpy arrays.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hmdp::backend::jit::Jit;
use hmdp::backend::{self, Backend, Batch, Buffers, Interp, Kernel};
use hmdp::check::Options;
use hmdp::diagnostics::{Span, line_column};
use hmdp::ir::{BufferId, BufferKind, Expr, Module, Stmt};
use hmdp::pipeline::{self, Compiled};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Value, json};

use super::{failure, records, run_error, to_python};

/// What every object made from one compilation shares: the model, its instance and (compiled
/// on first use) its JIT kernels.
pub struct Shared {
    pub compiled: Compiled,
    pub overrides: Vec<(String, f64)>,
    pub instance_seed: u64,
    pub instance: Buffers,
    jit: OnceLock<Jit>,
}

impl Shared {
    /// The compiled model with the instance of `instance_seed` drawn.
    pub fn new(
        py: Python<'_>,
        compiled: Compiled,
        overrides: Vec<(String, f64)>,
        instance_seed: u64,
    ) -> PyResult<Shared> {
        let instance =
            hmdp::sim::instance(&compiled.module, instance_seed).map_err(|e| run_error(py, &compiled.source, e))?;
        Ok(Shared { compiled, overrides, instance_seed, instance, jit: OnceLock::new() })
    }

    pub fn module(&self) -> &Module {
        &self.compiled.module
    }

    /// The model's JIT kernels, compiled on first use.
    pub fn jit(&self) -> PyResult<&Jit> {
        if let Some(jit) = self.jit.get() {
            return Ok(jit);
        }
        let jit = Jit::compile(&self.compiled.module)
            .map_err(|e| super::plain_error(format!("internal error: {e}; please report this with the model")))?;
        Ok(self.jit.get_or_init(|| jit))
    }

    /// Runs `f` with the kernels a user named: `"jit"` (compiled) or `"interp"` (the reference).
    pub fn with_backend<R>(&self, name: &str, f: impl FnOnce(&dyn Backend) -> R) -> PyResult<R> {
        match name {
            "jit" => Ok(f(self.jit()?)),
            "interp" => Ok(f(&Interp::new(&self.compiled.module))),
            other => Err(PyValueError::new_err(format!("backend must be \"jit\" or \"interp\", not {other:?}"))),
        }
    }

    /// The shape of one scenario's buffer: one length per dimension.
    pub fn shape(&self, id: BufferId) -> Vec<usize> {
        let module = self.module();
        module.buffers[id].dims.iter().map(|&d| module.sets[d].len()).collect()
    }

    /// A batch of `rows` scenarios' values of buffer `id` as an array of shape (rows, *shape).
    pub fn array<'py>(
        &self,
        py: Python<'py>,
        id: BufferId,
        rows: usize,
        values: Vec<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut shape = vec![rows];
        shape.extend(self.shape(id));
        Ok(PyArray1::from_vec(py, values).reshape(shape)?.into_any())
    }
}

/// A compiled model with one instance drawn: what `hmdp.compile` returns.
#[pyclass(frozen, module = "hmdp")]
pub struct Model {
    pub shared: Arc<Shared>,
}

/// Compiles a model file, with `--set`-style overrides of sizes and scalar parameters and the
/// seed of its instance. Raises `HmdpError` with the compiler's diagnostics.
#[pyfunction]
#[pyo3(signature = (path, set = None, instance_seed = 0))]
pub fn compile(py: Python<'_>, path: PathBuf, set: Option<Vec<(String, f64)>>, instance_seed: u64) -> PyResult<Model> {
    let overrides = set.unwrap_or_default();
    let options = Options { overrides: overrides.clone() };
    let compiled = py.detach(|| pipeline::compile_file(&path, &options)).map_err(|f| failure(py, f))?;
    Ok(Model { shared: Arc::new(Shared::new(py, compiled, overrides, instance_seed)?) })
}

/// The inputs of the step: states, noise, discrete and continuous actions.
fn is_step_input(kind: BufferKind) -> bool {
    matches!(kind, BufferKind::State | BufferKind::Noise | BufferKind::Discrete | BufferKind::Continuous)
}

fn adjoint_of(module: &Module, of: BufferId) -> Option<BufferId> {
    module.buffers.iter().position(|b| b.kind == BufferKind::Adjoint { of })
}

/// The buffers a program stores into whose values read only parameters and constants: the
/// bounds that are the same in every state.
fn static_stores(module: &Module, stmts: &[Stmt], out: &mut Vec<BufferId>) {
    fn reads_only_params(module: &Module, e: hmdp::ir::Handle<Expr>) -> bool {
        let node = &module.exprs[e];
        let here = match node {
            Expr::Load { buffer, .. } => module.buffers[*buffer].kind == BufferKind::Param,
            Expr::Sample { .. } => false,
            _ => true,
        };
        here && node.children().into_iter().all(|c| reads_only_params(module, c))
    }
    for s in stmts {
        match s {
            Stmt::For { body, .. } => static_stores(module, body, out),
            Stmt::Store { buffer, value, .. } if reads_only_params(module, *value) => out.push(*buffer),
            _ => {}
        }
    }
}

impl Model {
    fn place(&self, span: Span) -> Value {
        let (line, column) = line_column(&self.shared.compiled.source.text, span.start);
        json!({ "line": line, "column": column })
    }

    /// Builds a batch from named arrays of shape (rows, *shape), one per buffer in `ids`.
    fn batch_from(&self, inputs: &Bound<'_, PyDict>, ids: &[BufferId], rows: Option<usize>) -> PyResult<Batch> {
        let module = self.shared.module();
        let mut batch: Option<Batch> = None;
        for &id in ids {
            let name = &module.buffers[id].name;
            let Some(value) = inputs.get_item(name)? else {
                return Err(PyKeyError::new_err(format!("no array for `{name}`")));
            };
            let array: PyReadonlyArrayDyn<'_, f64> = value.extract()?;
            let n = array.shape().first().copied().unwrap_or(0);
            let expected = self.shared.shape(id);
            if array.shape().get(1..) != Some(expected.as_slice()) || rows.is_some_and(|r| r != n) {
                return Err(PyValueError::new_err(format!(
                    "`{name}` has shape {:?}; expected (batch, {})",
                    array.shape(),
                    expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            let batch = batch.get_or_insert_with(|| Batch::new(module, &self.shared.instance, n));
            if batch.size != n {
                return Err(PyValueError::new_err(format!("`{name}` has {n} rows; the other arrays {}", batch.size)));
            }
            batch.values[id].copy_from_slice(array.as_slice()?);
        }
        Ok(batch.unwrap_or_else(|| Batch::new(module, &self.shared.instance, rows.unwrap_or(1))))
    }

    fn inputs(&self) -> Vec<BufferId> {
        self.shared.module().buffers_of(|k| is_step_input(*k)).map(|(id, _)| id).collect()
    }

    /// Runs the step kernel on named input arrays; the batch after it.
    fn run_step(&self, py: Python<'_>, inputs: &Bound<'_, PyDict>, backend: &str) -> PyResult<Batch> {
        let mut batch = self.batch_from(inputs, &self.inputs(), None)?;
        self.shared
            .with_backend(backend, |b| backend::run(b, Kernel::Step, &mut batch))?
            .map_err(|e| run_error(py, &self.shared.compiled.source, e))?;
        Ok(batch)
    }
}

#[pymethods]
impl Model {
    /// The model's name.
    #[getter]
    fn name(&self) -> String {
        self.shared.module().name.clone()
    }

    /// Periods per scenario.
    #[getter]
    fn horizon(&self) -> u64 {
        self.shared.module().horizon
    }

    /// Periods at the start left out of reported figures.
    #[getter]
    fn warmup(&self) -> u64 {
        self.shared.module().warmup
    }

    /// The seed the instance's parameters were drawn with.
    #[getter]
    fn instance_seed(&self) -> u64 {
        self.shared.instance_seed
    }

    /// The `--set` overrides the model was compiled with, as (name, value) pairs.
    #[getter]
    fn overrides(&self) -> Vec<(String, f64)> {
        self.shared.overrides.clone()
    }

    /// The path the model was read from.
    #[getter]
    fn path(&self) -> String {
        self.shared.compiled.source.name.clone()
    }

    /// The instance's parameters, by name, as numpy arrays shaped by their sets.
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, b) in self.shared.module().buffers_of(|k| *k == BufferKind::Param) {
            let array =
                PyArray1::from_vec(py, self.shared.instance.values[id].clone()).reshape(self.shared.shape(id))?;
            out.set_item(&b.name, array)?;
        }
        Ok(out)
    }

    /// What the compiler made of the model, as data: sets, states, noise, actions (discrete with
    /// their labels, continuous with the regime that makes them act), observed buffers, the
    /// smoothness class of every cost and update with the places that make it so, the rewrites
    /// into hybrid form, the warnings, and `text`, the report `hmdpc compile` prints.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = &self.shared;
        let module = shared.module();
        let source = &shared.compiled.source;
        let analysis = hmdp::passes::smoothness::analyze(module);
        let name = |id: BufferId| module.buffers[id].name.clone();
        let buffers = |kind: fn(&BufferKind) -> bool| -> Vec<Value> {
            module.buffers_of(kind).map(|(id, b)| json!({ "name": b.name, "shape": shared.shape(id) })).collect()
        };
        let actions: Vec<Value> = module
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(id, b)| match b.kind {
                BufferKind::Discrete => Some(json!({
                    "name": b.name, "kind": "discrete", "shape": shared.shape(id), "labels": b.labels,
                })),
                BufferKind::Continuous => {
                    let mask = module.buffers.iter().position(|m| m.kind == BufferKind::Regime { action: id });
                    let pieces =
                        module.buffers.iter().any(|m| m.kind == BufferKind::PieceBound { action: id, upper: false });
                    Some(json!({
                        "name": b.name, "kind": "continuous", "shape": shared.shape(id),
                        "acts_in_some_regimes": mask.is_some(), "pieces": pieces,
                    }))
                }
                _ => None,
            })
            .collect();
        let entry = |e: &hmdp::passes::smoothness::Entry, key: &str, of: String| {
            let sites: Vec<Value> = e
                .sites
                .iter()
                .map(|s| {
                    let mut place = self.place(s.span);
                    place["class"] = s.class.name().into();
                    place["what"] = s.what.clone().into();
                    place
                })
                .collect();
            let regimes: Vec<String> = e.regimes.iter().map(|&r| name(r)).collect();
            let mut v = json!({ "class": e.class.name(), "regimes": regimes, "sites": sites });
            v[key] = of.into();
            v
        };
        let costs: Vec<Value> = analysis.costs.iter().map(|e| entry(e, "cost", name(e.buffer))).collect();
        let updates: Vec<Value> = analysis
            .updates
            .iter()
            .map(|e| {
                let state = match module.buffers[e.buffer].kind {
                    BufferKind::Next { of } => name(of),
                    _ => name(e.buffer),
                };
                entry(e, "state", state)
            })
            .collect();
        let rewrites: Vec<Value> = shared
            .compiled
            .rewrites
            .iter()
            .map(|r| {
                let mut place = self.place(r.span);
                place["action"] = name(r.action).into();
                place["description"] = r.description.clone().into();
                place
            })
            .collect();
        let sets: serde_json::Map<String, Value> =
            module.sets.iter().map(|s| (s.name.clone(), json!([s.lo, s.hi]))).collect();
        let text =
            hmdp::passes::smoothness::render(module, &analysis, &shared.compiled.rewrites, &source.name, &source.text);
        let report = json!({
            "model": module.name,
            "horizon": module.horizon,
            "warmup": module.warmup,
            "discount": module.discount,
            "unit": hmdp::sim::report_unit(module),
            "sets": sets,
            "states": buffers(|k| *k == BufferKind::State),
            "noise": buffers(|k| *k == BufferKind::Noise),
            "actions": actions,
            "observe": module.observe.iter().map(|&id| name(id)).collect::<Vec<_>>(),
            "costs": costs,
            "updates": updates,
            "rewrites": rewrites,
            "warnings": records(&shared.compiled.warnings, source),
            "text": text,
        });
        to_python(py, &report)
    }

    /// How the environment lays out observations and actions (used by `hmdp.env`): the observed
    /// buffers, the discrete actions with their labels, the continuous actions with the bounds
    /// that are the same in every state (±inf where a bound depends on the state), the cost
    /// terms, and the factor reported figures are divided by.
    fn layout<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = &self.shared;
        let module = shared.module();
        let spec = hmdp::train::spec::Spec::of(module);
        let mut fixed = Vec::new();
        static_stores(module, &module.bounds.body, &mut fixed);
        // The bounds that read only parameters, evaluated on the instance.
        let mut batch = Batch::new(module, &shared.instance, 1);
        backend::run(&Interp::new(&shared.compiled.module), Kernel::Bounds, &mut batch)
            .map_err(|e| run_error(py, &shared.compiled.source, e))?;
        let bound = |id: BufferId, upper: bool| -> Vec<f64> {
            let found = module.buffers.iter().position(|b| b.kind == BufferKind::Bound { action: id, upper });
            let none = if upper { f64::INFINITY } else { f64::NEG_INFINITY };
            match found {
                Some(b) if fixed.contains(&b) => batch.get(b, 0).to_vec(),
                _ => vec![none; module.len(id)],
            }
        };
        // JSON has no infinity: bounds travel as strings that Python's float() reads.
        let text = |v: Vec<f64>| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let observe: Vec<Value> = spec
            .observe
            .iter()
            .map(|&(id, _)| json!({"name": module.buffers[id].name, "shape": shared.shape(id)}))
            .collect();
        let discrete: Vec<Value> = spec
            .discrete
            .iter()
            .map(|d| json!({"name": module.buffers[d.buffer].name, "shape": shared.shape(d.buffer), "labels": module.buffers[d.buffer].labels}))
            .collect();
        let continuous: Vec<Value> = spec
            .continuous
            .iter()
            .map(|c| {
                json!({"name": module.buffers[c.buffer].name, "shape": shared.shape(c.buffer),
                       "low": text(bound(c.buffer, false)), "high": text(bound(c.buffer, true))})
            })
            .collect();
        let costs: Vec<String> = spec.costs.iter().map(|&c| module.buffers[c].name.clone()).collect();
        let states: Vec<Value> = module
            .buffers_of(|k| *k == BufferKind::State)
            .map(|(id, b)| json!({"name": b.name, "shape": shared.shape(id)}))
            .collect();
        let layout = json!({
            "model": module.name, "horizon": module.horizon, "warmup": module.warmup,
            "report_scale": hmdp::sim::report_scale(module), "unit": hmdp::sim::report_unit(module),
            "observe": observe, "features": spec.features, "discrete": discrete, "continuous": continuous,
            "costs": costs, "states": states,
        });
        to_python(py, &layout)
    }

    /// The step on a batch: `inputs` maps the name of every state, noise, discrete action
    /// (label positions, as floats) and continuous action to an array of shape (batch, *shape).
    /// Returns `(next_states, costs)`: dicts by state name and by cost term of arrays shaped
    /// (batch, *shape) and (batch,). Continuous actions are used as given (the environment is
    /// what applies bounds and regimes).
    #[pyo3(signature = (inputs, backend = "jit"))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyDict>,
        backend: &str,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let batch = self.run_step(py, inputs, backend)?;
        let module = self.shared.module();
        let (next, costs) = (PyDict::new(py), PyDict::new(py));
        for (n, state) in module.next_states() {
            next.set_item(&module.buffers[state].name, self.shared.array(py, n, batch.size, batch.values[n].clone())?)?;
        }
        for (id, b) in module.costs() {
            costs.set_item(&b.name, PyArray1::from_vec(py, batch.values[id].clone()))?;
        }
        Ok((next, costs))
    }

    /// The vector-Jacobian product of the step at `inputs` (as for `step`): given cotangents
    /// of the next states (by state name) and of the costs (by term; a missing one is 0), the
    /// gradient of `Σ cotangent · output` with respect to every state and continuous action, as
    /// a dict of arrays shaped like them. Kinks take the compiler's one-sided derivative.
    #[pyo3(signature = (inputs, next_states, costs, backend = "jit"))]
    fn vjp<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyDict>,
        next_states: &Bound<'py, PyDict>,
        costs: &Bound<'py, PyDict>,
        backend: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let module = self.shared.module();
        let mut batch = self.run_step(py, inputs, backend)?;
        let rows = batch.size;
        for (n, state) in module.next_states() {
            let name = &module.buffers[state].name;
            if let (Some(value), Some(adjoint)) = (next_states.get_item(name)?, adjoint_of(module, n)) {
                let array: PyReadonlyArrayDyn<'_, f64> = value.extract()?;
                let values = array.as_slice()?;
                if values.len() != batch.values[adjoint].len() {
                    return Err(PyValueError::new_err(format!(
                        "the cotangent of `{name}` has {} values; expected {}",
                        values.len(),
                        batch.values[adjoint].len()
                    )));
                }
                batch.values[adjoint].copy_from_slice(values);
            }
        }
        for (id, b) in module.costs() {
            if let (Some(value), Some(adjoint)) = (costs.get_item(&b.name)?, adjoint_of(module, id)) {
                let array: PyReadonlyArrayDyn<'_, f64> = value.extract()?;
                let values = array.as_slice()?;
                if values.len() != rows {
                    return Err(PyValueError::new_err(format!(
                        "the cotangent of cost `{}` has {} values; expected {rows}",
                        b.name,
                        values.len()
                    )));
                }
                batch.values[adjoint].copy_from_slice(values);
            }
        }
        self.shared
            .with_backend(backend, |b| backend::run(b, Kernel::Vjp, &mut batch))?
            .map_err(|e| run_error(py, &self.shared.compiled.source, e))?;
        let out = PyDict::new(py);
        for (id, b) in module.buffers_of(|k| matches!(k, BufferKind::State | BufferKind::Continuous)) {
            let values =
                adjoint_of(module, id).map_or_else(|| vec![0.0; rows * module.len(id)], |a| batch.values[a].clone());
            out.set_item(&b.name, self.shared.array(py, id, rows, values)?)?;
        }
        Ok(out)
    }

    /// The points `hmdpc gradcheck --seed SEED --points COUNT` checks the gradient at, on a
    /// model compiled with `instance_seed=SEED` (the command draws its instance with its seed): the
    /// step's inputs (as for `step`, batch = COUNT) and the random weights on its outputs
    /// (`(next_states, costs)` as `vjp` takes them).
    #[pyo3(signature = (seed = 0, count = 8))]
    fn gradcheck_points<'py>(
        &self,
        py: Python<'py>,
        seed: u64,
        count: usize,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let shared = &self.shared;
        let module = shared.module();
        let points = hmdp::sim::gradcheck::points(module, &shared.instance, seed, count)
            .map_err(|e| run_error(py, &shared.compiled.source, e))?;
        let gather = |id: BufferId, of: &dyn Fn(&hmdp::sim::gradcheck::Point) -> Vec<f64>| {
            shared.array(py, id, count, points.iter().flat_map(of).collect())
        };
        let inputs = PyDict::new(py);
        for &id in &self.inputs() {
            inputs.set_item(&module.buffers[id].name, gather(id, &|p| p.buffers.values[id].clone())?)?;
        }
        let weight = |p: &hmdp::sim::gradcheck::Point, id: BufferId| {
            p.weights.iter().find(|(w, _)| *w == id).map_or_else(|| vec![0.0; module.len(id)], |(_, w)| w.clone())
        };
        let (next, costs) = (PyDict::new(py), PyDict::new(py));
        for (n, state) in module.next_states() {
            next.set_item(&module.buffers[state].name, gather(n, &|p| weight(p, n))?)?;
        }
        for (id, b) in module.costs() {
            costs.set_item(&b.name, PyArray1::from_vec(py, points.iter().flat_map(|p| weight(p, id)).collect()))?;
        }
        Ok((inputs, next, costs))
    }

    fn __repr__(&self) -> String {
        let module = self.shared.module();
        format!(
            "<hmdp.Model {} from {}, instance seed {}>",
            module.name, self.shared.compiled.source.name, self.shared.instance_seed
        )
    }
}
