//! A batch of scenarios stepped one period at a time by its caller: the core of the gymnasium
//! environments of `hmdp.env`. Each period is the library's protocol
//! ([`hmdp::sim::protocol`]): [`protocol::observe`] (noise, bounds) ends a call, the actions
//! come from Python, [`protocol::act`] and the step kernel run the rest. Scenarios are drawn
//! from the same streams as `hmdpc simulate` and the trainer's sets.

use std::ops::Range;
use std::sync::Arc;

use hmdp::backend::{Backend, Buffers, Interp, Kernel, RunError};
use hmdp::ir::{BufferKind, Module, ValidModule};
use hmdp::random::{ScenarioSet, policy_stream};
use hmdp::sim::finite::{self, Stop};
use hmdp::sim::protocol::{self, Batched, Decide, Scenariowise, World};
use hmdp::train::spec::Spec;
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rand::rngs::ChaCha8Rng;

use super::model::{Model, Shared};
use super::run_error;
use super::runs::Policy;

/// The actions a caller gave, written into the batch: the discrete labels as given, the
/// continuous values clipped into their bounds (the chosen piece's bounds when the action has
/// pieces), as the trainer's policy squashes its outputs into them.
struct Given<'a> {
    spec: &'a Spec,
    discrete: &'a [f64],
    continuous: &'a [f64],
}

impl Decide<Batched<'_>> for Given<'_> {
    type Error = Stop;

    fn discrete(&mut self, world: &mut Batched<'_>, _period: usize) -> Result<(), Stop> {
        let width = self.discrete.len() / world.rows().max(1);
        for b in 0..world.rows() {
            let mut e = 0;
            for head in &self.spec.discrete {
                for k in 0..head.len {
                    world.batch.get_mut(head.buffer, b)[k] = self.discrete[b * width + e];
                    e += 1;
                }
            }
        }
        Ok(())
    }

    fn continuous(&mut self, world: &mut Batched<'_>, _period: usize) -> Result<(), Stop> {
        let width = self.continuous.len() / world.rows().max(1);
        for b in 0..world.rows() {
            let mut e = 0;
            for head in &self.spec.continuous {
                for k in 0..head.len {
                    let lo = head.lower.map_or(f64::NEG_INFINITY, |l| world.batch.get(l, b)[k]);
                    let hi = head.upper.map_or(f64::INFINITY, |h| world.batch.get(h, b)[k]);
                    let active = head.mask.is_none_or(|m| world.batch.get(m, b)[k] != 0.0);
                    if active && lo > hi {
                        return Err(Stop::Run(RunError {
                            span: Default::default(),
                            message: format!("the bounds of continuous action element {k} are empty here: {lo} > {hi}"),
                        }));
                    }
                    let value = self.continuous[b * width + e];
                    world.batch.get_mut(head.buffer, b)[k] = if active { value.max(lo).min(hi) } else { value };
                    e += 1;
                }
            }
        }
        Ok(())
    }
}

/// `num_envs` scenarios of a model stepped together, one period per call (`hmdp.env` builds the
/// gymnasium environments on it).
#[pyclass(unsendable, module = "hmdp")]
pub struct Simulator {
    // Declared first, so dropped first: it borrows `interp` and `shared`.
    world: Option<Batched<'static>>,
    interp: Option<Box<Interp<'static>>>,
    shared: Arc<Shared>,
    spec: Spec,
    rows: usize,
    set: ScenarioSet,
    /// Each scenario's policy stream, for `random_actions`.
    streams: Vec<ChaCha8Rng>,
    period: usize,
}

impl Simulator {
    fn world(&mut self) -> PyResult<&mut Batched<'static>> {
        self.world.as_mut().ok_or_else(|| PyRuntimeError::new_err("call reset() before step()"))
    }

    fn current(&self) -> PyResult<&Batched<'static>> {
        self.world.as_ref().ok_or_else(|| PyRuntimeError::new_err("call reset() first"))
    }

    fn fail(&self, e: impl Into<RunError>) -> PyErr {
        Python::attach(|py| run_error(py, &self.shared.compiled.source, e.into()))
    }

    /// The actions in the batch now, as (discrete labels, continuous values) per row.
    fn actions<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let world = self.current()?;
        let (mut discrete, mut continuous) = (Vec::new(), Vec::new());
        for b in 0..self.rows {
            for head in &self.spec.discrete {
                discrete.extend_from_slice(world.batch.get(head.buffer, b));
            }
            for head in &self.spec.continuous {
                continuous.extend_from_slice(world.batch.get(head.buffer, b));
            }
        }
        Ok((matrix(py, discrete, self.rows)?, matrix(py, continuous, self.rows)?))
    }
}

/// Values of `rows` rows as an array of shape (rows, len / rows).
fn matrix(py: Python<'_>, values: Vec<f64>, rows: usize) -> PyResult<Bound<'_, PyAny>> {
    let width = values.len() / rows.max(1);
    Ok(PyArray1::from_vec(py, values).reshape([rows, width])?.into_any())
}

fn scenario_set(name: &str) -> PyResult<ScenarioSet> {
    match name {
        "train" => Ok(ScenarioSet::Train),
        "dev" => Ok(ScenarioSet::Dev),
        "test" => Ok(ScenarioSet::Test),
        other => {
            Err(PyValueError::new_err(format!("scenario_set must be \"train\", \"dev\" or \"test\", not {other:?}")))
        }
    }
}

#[pymethods]
impl Simulator {
    /// `num_envs` scenarios of `model` from one of its scenario sets, run by the `"jit"` or
    /// `"interp"` kernels (the numbers are the same).
    #[new]
    #[pyo3(signature = (model, num_envs, backend = "jit", scenario_set = "test"))]
    fn new(model: &Model, num_envs: usize, backend: &str, scenario_set: &str) -> PyResult<Simulator> {
        if num_envs == 0 {
            return Err(PyValueError::new_err("num_envs must be at least 1"));
        }
        let shared = model.shared.clone();
        let interp = match backend {
            "jit" => {
                shared.jit()?;
                None
            }
            // SAFETY: the module lives in `shared`, an `Arc` this simulator holds for longer
            // than `interp` (fields drop in order).
            "interp" => Some(Box::new(Interp::new(unsafe { &*(&shared.compiled.module as *const ValidModule) }))),
            other => {
                return Err(PyValueError::new_err(format!("backend must be \"jit\" or \"interp\", not {other:?}")));
            }
        };
        let spec = Spec::of(shared.module());
        Ok(Simulator {
            world: None,
            interp,
            spec,
            rows: num_envs,
            set: self::scenario_set(scenario_set)?,
            streams: Vec::new(),
            period: 0,
            shared,
        })
    }

    /// Starts scenarios `first .. first + num_envs` of the set, drawn with `scenario_seed`
    /// (`hmdpc simulate --scenario-seed`), with the random policy's streams of `policy_seed`
    /// (`--seed`); draws the first period's noise and bounds.
    fn reset(&mut self, scenario_seed: u64, policy_seed: u64, first: usize) -> PyResult<()> {
        self.world = None;
        let indices: Range<usize> = first..first + self.rows;
        // SAFETY: the module, the instance and the kernels live in `shared` and `interp`, which
        // this simulator holds for longer than the world that borrows them (fields drop in order).
        let module: &'static Module = unsafe { &*(self.shared.module() as *const Module) };
        let instance: &'static Buffers = unsafe { &*(&self.shared.instance as *const Buffers) };
        let backend: &'static dyn Backend = match &self.interp {
            Some(interp) => unsafe { &*(interp.as_ref() as *const Interp<'static>) },
            None => unsafe { &*(self.shared.jit()? as *const hmdp::backend::jit::Jit) },
        };
        let mut world = Batched::start(module, instance, backend, scenario_seed, self.set, indices.clone())
            .map_err(|e| self.fail(e))?;
        protocol::observe(&mut world, 0).map_err(|e| self.fail(e))?;
        self.streams = indices.map(|i| policy_stream(policy_seed, self.set, i as u64)).collect();
        self.world = Some(world);
        self.period = 0;
        Ok(())
    }

    /// The observed buffers of every row, concatenated in the model's `observe` order:
    /// shape (num_envs, features).
    fn observation<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rows = self.rows;
        let world = self.current()?;
        let mut values = Vec::new();
        for b in 0..rows {
            for &(id, _) in &self.spec.observe {
                values.extend_from_slice(world.get(id, b));
            }
        }
        matrix(py, values, rows)
    }

    /// The bounds of every continuous action element in the current state, (low, high) each of
    /// shape (num_envs, continuous elements); ±inf where there is no bound.
    fn bounds<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let rows = self.rows;
        let module = self.shared.module();
        let world = self.current()?;
        let (mut low, mut high) = (Vec::new(), Vec::new());
        for b in 0..rows {
            for head in &self.spec.continuous {
                for (upper, out) in [(false, &mut low), (true, &mut high)] {
                    let none = if upper { f64::INFINITY } else { f64::NEG_INFINITY };
                    match module.buffers.iter().position(|x| x.kind == BufferKind::Bound { action: head.buffer, upper })
                    {
                        Some(id) => out.extend_from_slice(world.get(id, b)),
                        None => out.extend(std::iter::repeat_n(none, head.len)),
                    }
                }
            }
        }
        Ok((matrix(py, low, rows)?, matrix(py, high, rows)?))
    }

    /// The period the next `step` runs (0 after `reset`; the horizon when the episode is over).
    #[getter]
    fn period(&self) -> usize {
        self.period
    }

    /// The states of every row, by name, shaped (num_envs, *shape).
    fn states<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rows = self.rows;
        let shared = &self.shared;
        let world = self.current()?;
        let out = PyDict::new(py);
        for (id, b) in shared.module().buffers_of(|k| *k == BufferKind::State) {
            let values: Vec<f64> = (0..rows).flat_map(|r| world.get(id, r).to_vec()).collect();
            out.set_item(&b.name, shared.array(py, id, rows, values)?)?;
        }
        Ok(out)
    }

    /// Runs one period with the given actions — discrete labels (num_envs, discrete elements) and
    /// continuous values (num_envs, continuous elements), clipped into their bounds; a continuous
    /// action outside its regime is 0 — and returns each cost term per row, (num_envs, terms).
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        discrete: PyReadonlyArray2<'py, f64>,
        continuous: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let horizon = self.shared.module().horizon as usize;
        if self.period >= horizon {
            return Err(PyRuntimeError::new_err("the episode is over (the horizon is reached); call reset()"));
        }
        let d_len: usize = self.spec.discrete.iter().map(|d| d.len).sum();
        let c_len: usize = self.spec.continuous.iter().map(|c| c.len).sum();
        if discrete.shape() != [self.rows, d_len] || continuous.shape() != [self.rows, c_len] {
            return Err(PyValueError::new_err(format!(
                "expected discrete actions of shape ({0}, {d_len}) and continuous actions of shape ({0}, {c_len}); got {1:?} and {2:?}",
                self.rows,
                discrete.shape(),
                continuous.shape()
            )));
        }
        let (d, c) = (discrete.as_slice()?, continuous.as_slice()?);
        for b in 0..self.rows {
            let mut e = 0;
            for head in &self.spec.discrete {
                for _ in 0..head.len {
                    let label = d[b * d_len + e];
                    if label.fract() != 0.0 || label < 0.0 || label >= head.labels as f64 {
                        let name = &self.shared.module().buffers[head.buffer].name;
                        return Err(PyValueError::new_err(format!(
                            "`{name}` takes a label from 0 to {}; got {label} (row {b})",
                            head.labels - 1
                        )));
                    }
                    e += 1;
                }
            }
        }
        if let Some(bad) = c.iter().position(|v| v.is_nan()) {
            return Err(PyValueError::new_err(format!(
                "continuous action element {} of row {} is NaN",
                bad % c_len.max(1),
                bad / c_len.max(1)
            )));
        }
        let (period, rows) = (self.period, self.rows);
        let shared = self.shared.clone();
        let spec = self.spec.clone();
        let module = shared.module();
        let world = self.world()?;
        let done = (|| -> Result<Vec<f64>, Stop> {
            protocol::act(world, &mut Given { spec: &spec, discrete: d, continuous: c }, period)?;
            world.run(Kernel::Step)?;
            finite::check(module, world, period)?;
            let costs = (0..rows)
                .flat_map(|b| spec.costs.iter().map(move |&id| (id, b)))
                .map(|(id, b)| world.get(id, b)[0])
                .collect();
            world.advance();
            if period + 1 < horizon {
                protocol::observe(world, period + 1)?;
            }
            Ok(costs)
        })();
        self.period += 1;
        match done {
            Ok(costs) => matrix(py, costs, rows),
            Err(stop) => {
                // The batch is half-way through a period: it must be reset.
                self.world = None;
                Err(self.fail(stop))
            }
        }
    }

    /// The actions `hmdpc simulate --policy random` takes in this period, drawn from each
    /// scenario's policy stream (as `(discrete, continuous)` for `step`).
    fn random_actions<'py>(&mut self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let period = self.period;
        let shared = self.shared.clone();
        let mut streams = std::mem::take(&mut self.streams);
        let world = self.world()?;
        let mut decide =
            Scenariowise { module: shared.module(), policy: &hmdp::sim::RandomPolicy, streams: &mut streams };
        let decided = protocol::act(world, &mut decide, period);
        self.streams = streams;
        decided.map_err(|e| self.fail(e))?;
        self.actions(py)
    }

    /// The actions a trained policy takes in this period (its greedy decision, as in `hmdpc
    /// eval`), as `(discrete, continuous)` for `step`.
    fn policy_actions<'py>(
        &mut self,
        py: Python<'py>,
        policy: &Policy,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let period = self.period;
        let shared = self.shared.clone();
        if policy.model().module() != shared.module() {
            return Err(PyValueError::new_err("the policy was trained on another model (or other --set values)"));
        }
        let backend: &dyn Backend = match &self.interp {
            Some(interp) => interp.as_ref(),
            None => shared.jit()?,
        };
        let ctx = hmdp::train::rollout::Context {
            module: shared.module(),
            spec: &policy.spec,
            backend,
            instance: &shared.instance,
        };
        let world = self.world.as_mut().ok_or_else(|| PyRuntimeError::new_err("call reset() first"))?;
        let decided = hmdp::train::rollout::act_greedy(&ctx, &policy.nets, world, period);
        if let Err(e) = decided {
            return Err(super::runs::train_error(&shared, e));
        }
        self.actions(py)
    }
}
