//! The scale of each continuous action, read from the model, so that a policy that nobody tuned
//! starts with actions of the right size. Each raw output of the continuous network starts near 0
//! and is squashed into its action's bounds ([`super::spec::squash`]): an action on a finite
//! interval starts at the interval's centre whatever its size, but an action on a half-line
//! starts `softplus(shift)` scales from its bound, and one on the whole line is its scale times
//! the raw output. That scale is the typical size of what the action acts on, measured on the
//! train set: the largest mean absolute value among the states the action changes (at the start,
//! directly or through other states) and the noise and parameters that enter their equations,
//! which for an inventory is the demand its orders offset (or, when the demand is a mean
//! parameter times a shock of size 1, that mean). A model that says nothing about the size (no
//! such state, noise or parameter, or only zeros) gets 1.

use std::collections::BTreeMap;

use super::scenarios::Scenarios;
use crate::backend::{self, Backend, Batch, Buffers, Kernel, RunError};
use crate::ir::{BufferId, BufferKind, Expr, Handle, Module, Stmt};

/// The scale chosen for one continuous action, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionScale {
    pub action: String,
    /// `None` for an action on a finite interval, which the squash does not scale.
    pub scale: Option<f64>,
    /// Why, in a few words, for `hmdpc train` to print.
    pub why: String,
}

/// The default scale of every continuous action of `module`, in the order of the declarations,
/// from the train set's initial states and noise; the bounds are evaluated on its initial states.
pub fn action_scales(
    module: &Module,
    instance: &Buffers,
    backend: &dyn Backend,
    train_set: &Scenarios,
) -> Result<Vec<ActionScale>, RunError> {
    let bounds = initial_bounds(module, instance, backend, train_set)?;
    let reads = step_reads(module);
    let mut scales = Vec::new();
    for (action, buffer) in module.buffers_of(|k| *k == BufferKind::Continuous) {
        let name = buffer.name.clone();
        let side = |upper: bool| {
            let bound = module
                .buffers_of(|k| matches!(k, BufferKind::Bound { .. }))
                .find(|(_, b)| b.kind == BufferKind::Bound { action, upper });
            bound
                .map(|(id, _)| bounds.get(&id).cloned().unwrap_or_default())
                .filter(|v| v.iter().all(|x| x.is_finite()))
        };
        if let (Some(lo), Some(hi)) = (side(false), side(true)) {
            scales.push(ActionScale { action: name, scale: None, why: interval(&lo, &hi) });
            continue;
        }
        let (size, why) = typical_size(module, &reads, action, instance, train_set);
        scales.push(ActionScale { action: name, scale: Some(size), why });
    }
    Ok(scales)
}

/// "between its bounds [0, 20] at the start", with the range over elements and scenarios when
/// the bounds differ between them.
fn interval(lo: &[f64], hi: &[f64]) -> String {
    let range = |v: &[f64]| {
        let (min, max) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        if min == max { format!("{}", round(min)) } else { format!("{}..{}", round(min), round(max)) }
    };
    format!("squashed between its bounds [{}, {}] at the start; no scale", range(lo), range(hi))
}

/// Three significant digits, for printing.
pub(crate) fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 3 - x.abs().log10().floor() as i32 - 1;
    let factor = 10f64.powi(digits);
    (x * factor).round() / factor
}

/// The largest mean absolute value among the states `action` changes at the start and the noise
/// and parameters in their equations, with the reason; 1 when there is none or all are 0.
fn typical_size(
    module: &Module,
    reads: &BTreeMap<BufferId, Vec<BufferId>>,
    action: BufferId,
    instance: &Buffers,
    train_set: &Scenarios,
) -> (f64, String) {
    // The states whose next value reads the action, then those whose next value reads one of
    // them, and so on.
    let next_of: Vec<(BufferId, BufferId)> = module.next_states();
    let mut changed: Vec<BufferId> = Vec::new();
    let mut frontier = vec![action];
    while let Some(source) = frontier.pop() {
        for &(next, state) in &next_of {
            if !changed.contains(&state) && reads.get(&next).is_some_and(|r| r.contains(&source)) {
                changed.push(state);
                frontier.push(state);
            }
        }
    }
    let mean_abs = |values: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v.abs(), n + 1));
        if n == 0 { 0.0 } else { sum / n as f64 }
    };
    let mut best: Option<(f64, String)> = None;
    let mut consider = |size: f64, why: String| {
        if size.is_finite() && size > 0.0 && best.as_ref().is_none_or(|(b, _)| size > *b) {
            best = Some((size, why));
        }
    };
    for &state in &changed {
        if let Some((_, values)) = train_set.init.iter().find(|(id, _)| *id == state) {
            let size = mean_abs(&mut values.iter().copied());
            let name = &module.buffers[state].name;
            consider(size, format!("the mean size of `{name}` at the start, a state it changes"));
        }
    }
    let mut noises: Vec<BufferId> = Vec::new();
    let mut params: Vec<BufferId> = Vec::new();
    for &(next, state) in &next_of {
        if changed.contains(&state) {
            for &read in reads.get(&next).into_iter().flatten() {
                let found = match module.buffers[read].kind {
                    BufferKind::Noise => &mut noises,
                    BufferKind::Param => &mut params,
                    _ => continue,
                };
                if !found.contains(&read) {
                    found.push(read);
                }
            }
        }
    }
    for param in params {
        let size = mean_abs(&mut instance.values.get(param).into_iter().flatten().copied());
        let name = &module.buffers[param].name;
        consider(size, format!("the mean size of the parameter `{name}`, in the equations of the states it changes"));
    }
    for noise in noises {
        let mut values =
            train_set.noise.iter().flatten().filter(|(id, _)| *id == noise).flat_map(|(_, v)| v.iter().copied());
        let size = mean_abs(&mut values);
        let name = &module.buffers[noise].name;
        consider(size, format!("the mean size of the noise `{name}`, which enters the states it changes"));
    }
    best.unwrap_or_else(|| (1.0, "nothing in the model gives its size".to_string()))
}

/// For each buffer the step writes (lets, next states, costs), the buffers its value reads,
/// through the lets it reads.
fn step_reads(module: &Module) -> BTreeMap<BufferId, Vec<BufferId>> {
    fn loads(module: &Module, expr: Handle<Expr>, out: &mut Vec<BufferId>) {
        let Some(node) = module.exprs.get(expr) else { return };
        if let Expr::Load { buffer, .. } = node
            && !out.contains(buffer)
        {
            out.push(*buffer);
        }
        for child in node.children() {
            loads(module, child, out);
        }
    }
    fn stores(module: &Module, stmts: &[Stmt], direct: &mut BTreeMap<BufferId, Vec<BufferId>>) {
        for stmt in stmts {
            match stmt {
                Stmt::For { body, .. } => stores(module, body, direct),
                Stmt::Store { buffer, value, .. } => loads(module, *value, direct.entry(*buffer).or_default()),
                Stmt::If { then, otherwise, .. } => {
                    stores(module, then, direct);
                    stores(module, otherwise, direct);
                }
                Stmt::Accumulate { .. } => {}
            }
        }
    }
    let mut direct = BTreeMap::new();
    stores(module, &module.step.body, &mut direct);
    // A let is stored before it is read, so one pass in order of the buffers may miss a let that
    // reads a later one: expand until nothing changes.
    let mut reads = direct.clone();
    loop {
        let mut grew = false;
        for (target, read) in reads.clone() {
            let mut all = read.clone();
            for r in read {
                if module.buffers[r].kind == BufferKind::Let {
                    for &inner in reads.get(&r).into_iter().flatten() {
                        if !all.contains(&inner) {
                            all.push(inner);
                        }
                    }
                }
            }
            if all.len() > reads[&target].len() {
                reads.insert(target, all);
                grew = true;
            }
        }
        if !grew {
            return reads;
        }
    }
}

/// The values of every action's bounds in the first period of each train scenario.
fn initial_bounds(
    module: &Module,
    instance: &Buffers,
    backend: &dyn Backend,
    set: &Scenarios,
) -> Result<BTreeMap<BufferId, Vec<f64>>, RunError> {
    let mut batch = Batch::new(module, instance, set.count);
    for (id, values) in set.init.iter().chain(set.noise.first().into_iter().flatten()) {
        batch.values[*id].copy_from_slice(values);
    }
    backend::run(backend, Kernel::Bounds, &mut batch)?;
    // Bounds that read a discrete action: under the first label of every choice.
    backend::run(backend, Kernel::Regimes, &mut batch)?;
    Ok(module
        .buffers_of(|k| matches!(k, BufferKind::Bound { .. }))
        .map(|(id, _)| (id, batch.values[id].clone()))
        .collect())
}

/// The scale of each action with one: `--action-scale` when given, else the one the settings name
/// (a run's `run.json`, or the model's `train` block), else the one derived from the model; and one
/// line per scale derived, or named with `given_by` saying where from, saying why.
pub fn resolve(
    action_scale: Option<f64>,
    given: &BTreeMap<String, f64>,
    derived: &[ActionScale],
    given_by: Option<&str>,
) -> (BTreeMap<String, f64>, Vec<String>) {
    let mut scales = BTreeMap::new();
    let mut lines = Vec::new();
    for d in derived {
        let Some(own) = d.scale else {
            lines.push(format!("action {}: {}", d.action, d.why));
            continue;
        };
        let scale = match (action_scale, given.get(&d.action)) {
            (Some(all), _) => all,
            (None, Some(&named)) => {
                if let Some(why) = given_by {
                    lines.push(format!("action scale: {} {}{why}", d.action, round(named)));
                }
                named
            }
            (None, None) => {
                lines.push(format!("action scale: {} {} ({})", d.action, round(own), d.why));
                own
            }
        };
        scales.insert(d.action.clone(), scale);
    }
    (scales, lines)
}
