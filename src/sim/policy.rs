//! A policy declared in the model (`policy NAME { ... }`), as a [`Policy`] every simulator path
//! runs: the interpreter's scenarios, a backend's batches ([`super::protocol::Scenariowise`]),
//! `simulate --policy`, `tune` and whatever else scores a policy.
//!
//! The policy's program gives a value to each action the user declared. The compiler's
//! reformulation (`passes::reformulate`) may have added discrete actions of its own — `q.regime`
//! and `q.order` ({zero, positive}: does `q` act at all) and `q.piece` (which piece of `q`'s
//! domain, cut at price breaks) — and the step reads those instead of the comparisons the user
//! wrote. So that a heuristic is scored on the model as written, they are derived from the
//! user's values: `positive` exactly when the value (or, for `order`, any element) is above 0,
//! and the piece that holds the value. At a threshold `c` itself the value is in the piece that
//! starts at `c`, as `q < c` and `q >= c` read it (a model written `q > c` charges the upper
//! price at exactly `c`).
//!
//! An action split into a total and shares (a threshold on its sum, or a bound on its sum) gets
//! the sum of its values as its total and their logarithms as its shares; a total above its
//! bound is clamped, which scales every element alike.
//!
//! A continuous value outside its bounds (which may depend on the state) is clamped into them;
//! a value of an action outside its regime (`when`) is 0, as for every policy.

use rand::rngs::ChaCha8Rng;

use super::Policy;
use crate::backend::{Backend, Buffers, Machine, RunError};
use crate::diagnostics::Span;
use crate::ir::{BufferId, BufferKind, Module, PolicyProgram, TunableParam};
use crate::random::{ScenarioSet, Seeds};

/// How a discrete action the reformulation added is derived from the user's continuous action.
#[derive(Clone, Copy, Debug)]
enum Derived {
    /// `q.regime`, per element: `positive` where `q` is above 0.
    Regime { choice: BufferId, action: BufferId },
    /// `q.order`, one for all elements: `positive` when any element of `q` is above 0.
    Order { choice: BufferId, action: BufferId },
    /// `q.piece`, per element: the piece of `q`'s domain that holds its value.
    Piece { choice: BufferId, action: BufferId, lo: BufferId, hi: BufferId },
}

/// A declared policy with values for its tunables, ready to run.
pub struct DeclaredPolicy {
    pub name: String,
    /// The module's buffers and the policy's own, with the policy's expressions.
    view: Module,
    program: PolicyProgram,
    values: Vec<f64>,
    derived: Vec<Derived>,
    /// The user's actions the reformulation split into a total and shares (now `let`s the step
    /// computes from them), as (action, total, shares).
    splits: Vec<(BufferId, BufferId, BufferId)>,
}

impl DeclaredPolicy {
    /// The policy `program` of `module` with its tunables at `values` (their start values when
    /// `None`). Fails when a value is outside its tunable's bounds, or when the module holds a
    /// discrete action the reformulation made that this policy cannot derive.
    pub fn new(module: &Module, program: &PolicyProgram, values: Option<&[f64]>) -> Result<DeclaredPolicy, String> {
        let values = match values {
            None => program.tunables.iter().map(|t| t.start).collect(),
            Some(v) => {
                if v.len() != program.tunables.len() {
                    return Err(format!(
                        "policy `{}` has {} tunable parameters, but {} values were given",
                        program.name,
                        program.tunables.len(),
                        v.len()
                    ));
                }
                for (t, x) in program.tunables.iter().zip(v) {
                    if !(t.lo..=t.hi).contains(x) {
                        return Err(format!("`{}` = {x} is outside its bounds [{}, {}]", t.name, t.lo, t.hi));
                    }
                }
                v.to_vec()
            }
        };
        let find = |name: String| module.buffers.iter().position(|b| b.name == name);
        let mut derived = Vec::new();
        for (choice, b) in module.buffers.iter().enumerate() {
            if b.kind != BufferKind::Discrete || program.outputs.iter().any(|(a, _)| *a == choice) {
                continue;
            }
            let cannot = || {
                format!(
                    "policy `{}` cannot decide `{}`, which the compiler added; please report this",
                    program.name, b.name
                )
            };
            let (action, what) = b.name.rsplit_once('.').ok_or_else(cannot)?;
            let action = find(action.to_string()).ok_or_else(cannot)?;
            derived.push(match what {
                "regime" => Derived::Regime { choice, action },
                "order" => Derived::Order { choice, action },
                "piece" => {
                    let bound =
                        |upper| module.buffers.iter().position(|x| x.kind == BufferKind::PieceBound { action, upper });
                    let (Some(lo), Some(hi)) = (bound(false), bound(true)) else { return Err(cannot()) };
                    Derived::Piece { choice, action, lo, hi }
                }
                _ => return Err(cannot()),
            });
        }
        let continuous = |name: String| find(name).filter(|&id| module.buffers[id].kind == BufferKind::Continuous);
        let splits = program
            .outputs
            .iter()
            .filter(|(action, _)| module.buffers[*action].kind == BufferKind::Let)
            .filter_map(|&(action, _)| {
                let q = &module.buffers[action].name;
                Some((action, continuous(format!("{q}.total"))?, continuous(format!("{q}.share"))?))
            })
            .collect();
        Ok(DeclaredPolicy {
            name: program.name.clone(),
            view: program.view(module),
            program: program.clone(),
            values,
            derived,
            splits,
        })
    }

    pub fn tunables(&self) -> &[TunableParam] {
        &self.program.tunables
    }

    /// The tunables' values this policy runs with.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Runs the policy's program on one scenario's buffers and writes each action's value into
    /// its buffer: a discrete action's label, a continuous action's value clamped into its bounds.
    fn decide(&self, module: &Module, buffers: &mut Buffers) -> Result<(), RunError> {
        let own = module.buffers.len();
        buffers.values.extend(self.program.buffers.iter().enumerate().map(|(k, _)| vec![0.0; self.view.len(own + k)]));
        for (t, v) in self.program.tunables.iter().zip(&self.values) {
            buffers.values[t.buffer][0] = *v;
        }
        let ran = Machine::new(&self.view, buffers, None).run(&self.program.program);
        let outputs: Vec<Vec<f64>> = buffers.values.drain(own..).collect();
        ran?;
        for &(action, output) in &self.program.outputs {
            let values = &outputs[output - own];
            let b = &module.buffers[action];
            if b.kind == BufferKind::Discrete {
                let labels = b.labels.len() as f64;
                if let Some(v) = values.iter().find(|v| !(v.fract() == 0.0 && **v >= 0.0 && **v < labels)) {
                    return Err(RunError {
                        span: self.rule_span(output),
                        message: format!(
                            "policy `{}` chose {} for `{}`, which is not one of its labels",
                            self.name, v, b.name
                        ),
                    });
                }
                buffers.values[action].copy_from_slice(values);
            } else {
                if let Some(k) = values.iter().position(|v| v.is_nan()) {
                    return Err(RunError {
                        span: self.rule_span(output),
                        message: format!(
                            "policy `{}` gave `{}` (element {k}) a value that is not a number",
                            self.name, b.name
                        ),
                    });
                }
                buffers.values[action].copy_from_slice(values);
                clamp(module, buffers, action, false);
            }
        }
        // A split action: its total is the sum of the values (clamped into the total's bounds
        // with the other continuous actions, which scales every element alike) and its shares
        // their logarithms, so the step's `q.total * softmax(q.share)` gives the values back.
        for &(action, total, shares) in &self.splits {
            let values: Vec<f64> = buffers.values[action].iter().map(|v| v.max(0.0)).collect();
            let sum: f64 = values.iter().sum();
            buffers.values[total].fill(sum);
            for (s, v) in buffers.values[shares].iter_mut().zip(&values) {
                *s = if sum > 0.0 { v.max(f64::MIN_POSITIVE).ln() } else { 0.0 };
            }
        }
        Ok(())
    }

    /// Where the rule that writes `output` is written.
    fn rule_span(&self, output: BufferId) -> Span {
        fn find(stmts: &[crate::ir::Stmt], output: BufferId) -> Option<crate::ir::Handle<crate::ir::Expr>> {
            stmts.iter().find_map(|s| match s {
                crate::ir::Stmt::For { body, .. } => find(body, output),
                crate::ir::Stmt::Store { buffer, value, .. } if *buffer == output => Some(*value),
                _ => None,
            })
        }
        find(&self.program.program.body, output).map_or_else(Span::default, |v| self.view.exprs.span(v))
    }

    /// The reformulation's choices from the user's values: first the regimes the user's own
    /// discrete actions allow (an action outside its `when` is 0), then `positive` where the
    /// value is above 0 and the piece that holds it.
    fn derive(&self, module: &Module, buffers: &mut Buffers) -> Result<(), RunError> {
        if self.derived.is_empty() {
            return Ok(());
        }
        for d in &self.derived {
            match *d {
                Derived::Regime { choice, .. } | Derived::Order { choice, .. } => buffers.values[choice].fill(1.0),
                Derived::Piece { choice, .. } => buffers.values[choice].fill(0.0),
            }
        }
        Machine::new(module, buffers, None).run(&module.regimes)?;
        for (mask, b) in module.buffers.iter().enumerate() {
            if let BufferKind::Regime { action } = b.kind {
                for k in 0..buffers.values[action].len() {
                    if buffers.values[mask][k] == 0.0 {
                        buffers.values[action][k] = 0.0;
                    }
                }
            }
        }
        for d in &self.derived {
            match *d {
                Derived::Regime { choice, action } => {
                    for k in 0..buffers.values[action].len() {
                        buffers.values[choice][k] = f64::from(u8::from(buffers.values[action][k] > 0.0));
                    }
                }
                Derived::Order { choice, action } => {
                    let any = buffers.values[action].iter().any(|v| *v > 0.0);
                    buffers.values[choice].fill(f64::from(u8::from(any)));
                }
                Derived::Piece { .. } => {}
            }
        }
        // Each piece's bounds, read by running `regimes` with every element in that piece.
        for d in &self.derived {
            let Derived::Piece { choice, action, lo, hi } = *d else { continue };
            let pieces = module.buffers[choice].labels.len();
            let n = buffers.values[action].len();
            let mut point = vec![f64::NAN; n];
            let mut last = vec![f64::NAN; n];
            for piece in 0..pieces {
                buffers.values[choice].fill(piece as f64);
                Machine::new(module, buffers, None).run(&module.regimes)?;
                for k in 0..n {
                    let (x, l, h) = (buffers.values[action][k], buffers.values[lo][k], buffers.values[hi][k]);
                    if l <= x && x <= h {
                        last[k] = piece as f64;
                        if l == h && point[k].is_nan() {
                            point[k] = piece as f64;
                        }
                    }
                }
            }
            // A single point (`zero`) holding the value wins; else the last piece holding it.
            let chosen: Vec<f64> = point.iter().zip(&last).map(|(p, l)| if p.is_nan() { *l } else { *p }).collect();
            if let Some(k) = chosen.iter().position(|c| c.is_nan()) {
                return Err(RunError {
                    span: Span::default(),
                    message: format!(
                        "policy `{}`: no piece of `{}` holds its value {} (element {k})",
                        self.name, module.buffers[action].name, buffers.values[action][k]
                    ),
                });
            }
            buffers.values[choice].copy_from_slice(&chosen);
        }
        Ok(())
    }
}

/// Clamps a continuous action into its piece bounds (`pieces`) or its bounds.
fn clamp(module: &Module, buffers: &mut Buffers, action: BufferId, pieces: bool) {
    let find = |upper: bool| {
        let piece = pieces
            .then(|| module.buffers.iter().position(|x| x.kind == BufferKind::PieceBound { action, upper }))
            .flatten();
        piece.or_else(|| module.buffers.iter().position(|x| x.kind == BufferKind::Bound { action, upper }))
    };
    let (lo, hi) = (find(false), find(true));
    for k in 0..buffers.values[action].len() {
        let mut v = buffers.values[action][k];
        if let Some(h) = hi {
            v = v.min(buffers.values[h][k]);
        }
        if let Some(l) = lo {
            v = v.max(buffers.values[l][k]);
        }
        buffers.values[action][k] = v;
    }
}

impl Policy for DeclaredPolicy {
    fn discrete(&self, module: &Module, buffers: &mut Buffers, _rng: &mut ChaCha8Rng) -> Result<(), RunError> {
        self.decide(module, buffers)?;
        self.derive(module, buffers)
    }

    /// The values were computed with the discrete actions; here they only meet the chosen
    /// piece's bounds, which hold them already unless rounding moved an end.
    fn continuous(&self, module: &Module, buffers: &mut Buffers, _rng: &mut ChaCha8Rng) -> Result<(), RunError> {
        for (action, b) in module.buffers.iter().enumerate() {
            if b.kind == BufferKind::Continuous {
                clamp(module, buffers, action, true);
            }
        }
        Ok(())
    }
}

/// A policy's figures on a scenario set: per scenario, each cost term's reported figure (as
/// `simulate` and `eval` report it), on the interpreter or a backend's kernels — the same
/// numbers either way.
pub fn score(
    module: &Module,
    instance: &Buffers,
    backend: Option<&dyn Backend>,
    policy: &dyn Policy,
    seeds: Seeds,
    set: ScenarioSet,
    scenarios: usize,
) -> Result<Vec<Vec<f64>>, RunError> {
    match backend {
        Some(backend) => super::simulate_on_backend(module, instance, backend, policy, seeds, set, scenarios),
        None => super::simulate_on_interpreter(module, instance, policy, seeds, set, scenarios),
    }
}
