//! A trained policy written so that it runs without hmdp (`hmdpc export`): the networks as
//! safetensors (`policy.safetensors`) and a JSON description (`policy.json`) of everything
//! around them — the features in order with their shapes and normalisation, the layers, the
//! discrete heads, and for each continuous action its output, its regime, its squash and its
//! bounds. `docs/export_loader.py` is a numpy loader of the pair; `tests/inspect.rs` checks that
//! it reproduces `hmdpc act`.
//!
//! What the model computes rather than the networks is written as values for the instance when
//! it does not depend on the state: a bound that reads only parameters, the bounds of each piece
//! of a reformulated action, and the labels under which an action acts (its `when`). A bound
//! that reads a state is an object marked `"given"`: the model's expression as written (its
//! text, line and the states and parameters it reads), which the caller evaluates in the state
//! and passes to the loader (`bounds=` of `docs/export_loader.py`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Subject;
use crate::backend::{Buffers, Machine};
use crate::ir::{BufferId, BufferKind, Expr, Handle, Module, Program, Stmt};
use crate::nn::mlp::Mlp;
use crate::train::folder::write_atomic;
use crate::train::spec::{RegimeSource, Spec};

/// The files `export` writes.
pub const TENSORS: &str = "policy.safetensors";
pub const DESCRIPTION: &str = "policy.json";

/// Writes a subject's networks and their description into `folder` (created if need be);
/// returns the files written. Only a trained policy has networks.
/// `source` is the model's text, which a bound that reads the state quotes.
pub fn export(
    subject: &Subject,
    module: &Module,
    instance: &Buffers,
    source: &str,
    folder: &Path,
) -> Result<Vec<PathBuf>, String> {
    let Subject::Trained { nets, spec, checkpoint } = subject else {
        return Err(format!("{} has no networks to export; export a trained run", subject.label()));
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut networks = serde_json::Map::new();
    for (name, mlp, used) in
        [("discrete", &nets.discrete, spec.logits > 0), ("continuous", &nets.continuous, spec.outputs > 0)]
    {
        networks.insert(name.to_string(), if used { layers(name, mlp, &mut tensors) } else { Value::Null });
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| format!("internal error: tensor {name}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| format!("internal error: safetensors: {e}"))?;
    let description = json!({
        "format": "hmdp-policy",
        "version": 1,
        "model": module.name,
        "checkpoint": checkpoint.file().trim_end_matches(".ckpt"),
        "features": features(module, spec, instance),
        "normalisation": {
            "rule": "feature = float32((value - center) / scale), features in the order listed",
            "center": nets.normalizer.center(),
            "scale": nets.normalizer.scale(),
        },
        "networks": networks,
        "discrete": discrete(module, spec),
        "continuous": continuous(module, spec, instance, source),
    });
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create {}: {}", folder.display(), crate::pipeline::describe_io(&e)))?;
    let files = [(folder.join(TENSORS), bytes), (folder.join(DESCRIPTION), format!("{description:#}\n").into_bytes())];
    for (path, bytes) in &files {
        write_atomic(path, bytes).map_err(|e| format!("cannot write {e}"))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// A network's layers in the description, their tensors appended: `NAME.L.weight` (`fan_in ×
/// fan_out`, so a layer is `x @ weight + bias`) and `NAME.L.bias`; tanh between layers, none
/// after the last.
fn layers(name: &str, mlp: &Mlp, tensors: &mut Vec<(String, Vec<usize>, Vec<u8>)>) -> Value {
    let sizes = mlp.sizes();
    let le = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let mut out = Vec::new();
    for l in 0..mlp.layers() {
        let (weight, bias) = (format!("{name}.{l}.weight"), format!("{name}.{l}.bias"));
        tensors.push((weight.clone(), vec![sizes[l], sizes[l + 1]], le(mlp.weights(l))));
        tensors.push((bias.clone(), vec![sizes[l + 1]], le(mlp.bias(l))));
        let activation = if l + 1 < mlp.layers() { "tanh" } else { "identity" };
        out.push(json!({ "weight": weight, "bias": bias, "activation": activation }));
    }
    json!({ "inputs": sizes[0], "outputs": sizes[sizes.len() - 1], "layers": out })
}

/// The shape of a buffer: the size of each of its sets.
fn shape(module: &Module, id: BufferId) -> Vec<usize> {
    module.buffers[id].dims.iter().map(|&s| module.sets[s].len()).collect()
}

fn features(module: &Module, spec: &Spec, instance: &Buffers) -> Value {
    let mut offset = 0;
    let mut out = Vec::new();
    for &(id, len) in &spec.observe {
        let buffer = &module.buffers[id];
        let mut feature = json!({ "name": buffer.name, "shape": shape(module, id), "offset": offset, "len": len });
        if buffer.kind == BufferKind::Param {
            feature["kind"] = "parameter".into();
            feature["value"] = instance.values[id].clone().into();
        } else {
            feature["kind"] = "state".into();
        }
        if !buffer.labels.is_empty() {
            // A choice state: the feature is the position of its label among these.
            feature["labels"] = buffer.labels.clone().into();
        }
        out.push(feature);
        offset += len;
    }
    Value::Array(out)
}

fn discrete(module: &Module, spec: &Spec) -> Value {
    let heads = spec.discrete.iter().map(|head| {
        json!({
            "action": module.buffers[head.buffer].name,
            "shape": shape(module, head.buffer),
            "len": head.len,
            "labels": module.buffers[head.buffer].labels,
            "offset": head.offset,
            "rule": "element k's logits are outputs offset + k*labels ..; its probabilities their softmax; the policy takes the first most likely label",
        })
    });
    Value::Array(heads.collect())
}

fn continuous(module: &Module, spec: &Spec, instance: &Buffers, source: &str) -> Value {
    let mut out = Vec::new();
    for head in &spec.continuous {
        let id = head.buffer;
        let regime = match head.regime {
            RegimeSource::None => Value::Null,
            RegimeSource::Shared { buffer, labels } => {
                json!({ "action": module.buffers[buffer].name, "per_element": false, "labels": labels })
            }
            RegimeSource::Elementwise { buffer, labels } => {
                json!({ "action": module.buffers[buffer].name, "per_element": true, "labels": labels })
            }
        };
        let find = |kind: BufferKind| module.buffers.iter().position(|b| b.kind == kind);
        let bound = |upper: bool| bound_of(module, instance, source, find(BufferKind::Bound { action: id, upper }));
        let pieces = match (find(BufferKind::PieceBound { action: id, upper: false }), head.regime) {
            (Some(_), RegimeSource::Elementwise { buffer, .. }) => pieces(module, instance, id, buffer),
            _ => Value::Null,
        };
        out.push(json!({
            "action": module.buffers[id].name,
            "shape": shape(module, id),
            "len": head.len,
            "offset": head.offset,
            "regime": regime,
            "rule": "element k's raw output is output offset + k*regimes + (label of the regime action, of element k when per_element), regimes = 1 without one; squashed into [lower, upper] (the chosen piece's bounds when pieces is given); 0 where it does not act",
            "squash": {
                "scale": head.scale,
                "shift": head.shift,
                "rule": "both bounds: lower + (upper - lower) * sigmoid(z); lower only: lower + scale * softplus(z + shift); upper only: upper - scale * softplus(shift - z); none: scale * z",
            },
            "lower": bound(false),
            "upper": bound(true),
            "pieces": pieces,
            "active_when": active_when(module, instance, id),
        }));
    }
    Value::Array(out)
}

/// Every buffer a program's stores into `target` read, through the buffers the same program
/// stores into before.
fn reads(module: &Module, program: &Program, target: BufferId) -> BTreeSet<BufferId> {
    fn stores(stmts: &[Stmt], target: BufferId, out: &mut Vec<Handle<Expr>>) {
        for stmt in stmts {
            match stmt {
                Stmt::For { body, .. } => stores(body, target, out),
                Stmt::Store { buffer, value, .. } if *buffer == target => out.push(*value),
                _ => {}
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(buffer) = todo.pop() {
        let mut values = Vec::new();
        stores(&program.body, buffer, &mut values);
        while let Some(h) = values.pop() {
            let expr = &module.exprs[h];
            if let Expr::Load { buffer, .. } = expr
                && seen.insert(*buffer)
            {
                todo.push(*buffer);
            }
            values.extend(expr.children());
        }
    }
    seen
}

/// Whether any of `buffers` is a state.
fn reads_state(module: &Module, buffers: &BTreeSet<BufferId>) -> bool {
    buffers.iter().any(|&b| module.buffers[b].kind == BufferKind::State)
}

/// A finite value, or null for an infinite one.
fn finite(v: f64) -> Value {
    if v.is_finite() { v.into() } else { Value::Null }
}

/// A bound in the description: null without one, `{"values": [...]}` per element when it reads
/// no state, else what the caller computes it from ([`given`]).
fn bound_of(module: &Module, instance: &Buffers, source: &str, bound: Option<BufferId>) -> Value {
    let Some(bound) = bound else { return Value::Null };
    let read = reads(module, &module.bounds, bound);
    if reads_state(module, &read) {
        return given(module, source, bound, &read);
    }
    let mut buffers = instance.clone();
    match Machine::new(module, &mut buffers, None).run(&module.bounds) {
        Ok(()) => json!({ "values": buffers.values[bound].iter().map(|&v| finite(v)).collect::<Vec<_>>() }),
        Err(_) => "given".into(),
    }
}

/// A bound that reads the state, for the caller to compute: `{"given": "state", "expression":
/// TEXT, "line": N, "reads": {"states": [...], "parameters": [...]}, "pass": HOW}` — the model's
/// expression as written (null when the compiler made it), the states and parameters it reads
/// (a parameter's values are in the instance: `hmdpc instance`), and how the loader takes the
/// values computed in the state.
fn given(module: &Module, source: &str, bound: BufferId, read: &BTreeSet<BufferId>) -> Value {
    fn store(stmts: &[Stmt], target: BufferId) -> Option<Handle<Expr>> {
        stmts.iter().find_map(|stmt| match stmt {
            Stmt::For { body, .. } => store(body, target),
            Stmt::Store { buffer, value, .. } if *buffer == target => Some(*value),
            _ => None,
        })
    }
    let span = store(&module.bounds.body, bound).map(|h| module.exprs.span(h)).filter(|s| !s.is_empty());
    let text = span.and_then(|s| source.get(s.start..s.end));
    let line = span.map(|s| source.get(..s.start).map_or(0, |before| before.matches('\n').count()) + 1);
    let names = |kind: &BufferKind| -> Vec<&str> {
        read.iter().filter(|&&b| module.buffers[b].kind == *kind).map(|&b| module.buffers[b].name.as_str()).collect()
    };
    let (side, action) = match module.buffers[bound].kind {
        BufferKind::Bound { action, upper } => (if upper { "upper" } else { "lower" }, action),
        _ => ("bound", bound),
    };
    json!({
        "given": "state",
        "expression": text,
        "line": line,
        "reads": { "states": names(&BufferKind::State), "parameters": names(&BufferKind::Param) },
        "pass": format!(
            "the {side} bound of each element of `{}`, computed from the expression in the state (parameters from the instance), as bounds={{\"{}\": [[lower per element], [upper per element]]}}",
            module.buffers[action].name, module.buffers[action].name
        ),
    })
}

/// The bounds of each piece of a reformulated action, per label and element, when they read no
/// state: `{"lower": [[...]], "upper": [[...]]}` (label-major), else `"given"`.
fn pieces(module: &Module, instance: &Buffers, action: BufferId, piece: BufferId) -> Value {
    let find = |upper: bool| module.buffers.iter().position(|b| b.kind == BufferKind::PieceBound { action, upper });
    let (Some(lo), Some(hi)) = (find(false), find(true)) else { return "given".into() };
    let read: BTreeSet<BufferId> =
        reads(module, &module.regimes, lo).union(&reads(module, &module.regimes, hi)).copied().collect();
    let bounds_read: BTreeSet<BufferId> = module
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b.kind, BufferKind::Bound { .. }))
        .filter(|(id, _)| read.contains(id))
        .flat_map(|(id, _)| reads(module, &module.bounds, id))
        .collect();
    if reads_state(module, &read) || reads_state(module, &bounds_read) {
        return "given".into();
    }
    let (mut lower, mut upper) = (Vec::new(), Vec::new());
    for label in 0..module.buffers[piece].labels.len() {
        let mut buffers = instance.clone();
        buffers.values[piece].iter_mut().for_each(|v| *v = label as f64);
        let ran = Machine::new(module, &mut buffers, None)
            .run(&module.bounds)
            .and_then(|()| Machine::new(module, &mut buffers, None).run(&module.regimes));
        if ran.is_err() {
            return "given".into();
        }
        lower.push(buffers.values[lo].iter().map(|&v| finite(v)).collect::<Vec<_>>());
        upper.push(buffers.values[hi].iter().map(|&v| finite(v)).collect::<Vec<_>>());
    }
    json!({ "action": module.buffers[piece].name, "lower": lower, "upper": upper })
}

/// Where an action acts: null when it always does; `{"action": D, "labels": [[...] per
/// element]}` when its `when` reads one discrete action D (the labels of D under which each
/// element acts, D's elements all set to the label); `"given"` when it reads several.
fn active_when(module: &Module, instance: &Buffers, action: BufferId) -> Value {
    let Some(mask) = module.buffers.iter().position(|b| b.kind == BufferKind::Regime { action }) else {
        return Value::Null;
    };
    let read = reads(module, &module.regimes, mask);
    let choices: Vec<BufferId> =
        read.iter().copied().filter(|&b| module.buffers[b].kind == BufferKind::Discrete).collect();
    let [choice] = choices.as_slice() else { return "given".into() };
    let labels = &module.buffers[*choice].labels;
    let mut per_element = vec![Vec::new(); module.len(action)];
    for (label, name) in labels.iter().enumerate() {
        let mut buffers = instance.clone();
        buffers.values[*choice].iter_mut().for_each(|v| *v = label as f64);
        let ran = Machine::new(module, &mut buffers, None)
            .run(&module.bounds)
            .and_then(|()| Machine::new(module, &mut buffers, None).run(&module.regimes));
        if ran.is_err() {
            return "given".into();
        }
        for (k, acts) in per_element.iter_mut().enumerate() {
            if buffers.values[mask][k] != 0.0 {
                acts.push(name.clone());
            }
        }
    }
    json!({ "action": module.buffers[*choice].name, "labels": per_element })
}
