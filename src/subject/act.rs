//! One decision of a subject in a state given as JSON (`hmdpc act`): the state of every state
//! variable by name, and optionally parameters that replace the instance's; out come each
//! discrete action's label and the probability of every label, and each continuous action's
//! value. The decision is one period of the protocol on a batch of one scenario (noise 0, which
//! no bound reads), so it is exactly what the subject does in that state during `eval`.

use rand::rngs::ChaCha8Rng;
use serde_json::{Map, Value, json};

use super::{Decides, Explained, Subject, greedy, rules};
use crate::backend::{Backend, Buffers};
use crate::ir::{BufferId, BufferKind, Module};
use crate::random::{ScenarioSet, policy_stream};
use crate::sim::protocol::{self, Batched};
use crate::train::TrainError;
use crate::train::rollout::Context;

/// Why a decision could not be made.
#[derive(Debug)]
pub enum ActError {
    /// The input is not what `act` reads: the message says what is wrong and how to fix it.
    Input(String),
    /// The model failed on the state (empty bounds, a run-time error).
    Run(TrainError),
}

/// One discrete action's choice: the label of each element and the probability of each label.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub action: String,
    /// A scalar action (one element, shown without a list).
    pub scalar: bool,
    pub labels: Vec<String>,
    pub chosen: Vec<usize>,
    /// Per element, the probability of each label.
    pub probabilities: Vec<Vec<f64>>,
}

/// A subject's decision in one state.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub discrete: Vec<Choice>,
    /// Each continuous action: its name, whether it is a scalar, and its values (0 where it
    /// does not act).
    pub continuous: Vec<(String, bool, Vec<f64>)>,
}

impl Decision {
    /// The JSON `act` prints: `{"discrete": {NAME: {"chosen": LABEL, "probabilities":
    /// {LABEL: P, ...}}}, "continuous": {NAME: VALUE}}`, a list per element for an action with
    /// dimensions.
    pub fn to_json(&self) -> Value {
        let mut discrete = Map::new();
        for choice in &self.discrete {
            let label = |l: usize| Value::from(choice.labels.get(l).cloned().unwrap_or_default());
            let odds = |p: &Vec<f64>| {
                Value::Object(choice.labels.iter().cloned().zip(p.iter().map(|&v| Value::from(v))).collect())
            };
            let (chosen, probabilities) = if choice.scalar {
                (label(choice.chosen[0]), odds(&choice.probabilities[0]))
            } else {
                (
                    Value::Array(choice.chosen.iter().map(|&l| label(l)).collect()),
                    Value::Array(choice.probabilities.iter().map(odds).collect()),
                )
            };
            discrete.insert(choice.action.clone(), json!({ "chosen": chosen, "probabilities": probabilities }));
        }
        let mut continuous = Map::new();
        for (name, scalar, values) in &self.continuous {
            let value = if *scalar { Value::from(values[0]) } else { Value::from(values.clone()) };
            continuous.insert(name.clone(), value);
        }
        json!({ "discrete": discrete, "continuous": continuous })
    }
}

/// The values a JSON object gives, by buffer: every state of the module (required) and any
/// parameter (optional), each a number or a list of numbers (nested lists are read row-major)
/// with one number per element.
pub fn read_state(module: &Module, text: &str) -> Result<Vec<(BufferId, Vec<f64>)>, ActError> {
    let bad = ActError::Input;
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("--state is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad("--state must be a JSON object of states by name, e.g. {\"x\": [1, 2]}".into()));
    };
    let readable = |kind: &BufferKind| matches!(kind, BufferKind::State | BufferKind::Param);
    let mut given = Vec::new();
    for (name, value) in &fields {
        let Some(id) = module.buffers.iter().position(|b| b.name == *name) else {
            let names = module.buffers.iter().filter(|b| readable(&b.kind)).map(|b| b.name.as_str());
            let hint = crate::check::did_you_mean(name, names).map(|h| format!(" ({h})")).unwrap_or_default();
            return Err(bad(format!("--state: the model has no state or parameter `{name}`{hint}")));
        };
        let kind = &module.buffers[id].kind;
        if !readable(kind) {
            return Err(bad(format!(
                "--state: `{name}` is {}; act reads states and parameters",
                match kind {
                    BufferKind::Noise => "noise, drawn after the decision",
                    BufferKind::Discrete | BufferKind::Continuous => "an action, what act answers",
                    _ => "not a state or a parameter",
                }
            )));
        }
        let mut values = Vec::new();
        let labels = &module.buffers[id].labels;
        flatten(value, labels, &mut values).map_err(|what| {
            let list = labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ");
            if labels.is_empty() {
                bad(format!("--state: `{name}` holds {what}; give numbers"))
            } else if labels.iter().all(|l| l.parse::<f64>().is_ok()) {
                bad(format!("--state: `{name}` holds {what}; give elements of its set ({list})"))
            } else {
                bad(format!("--state: `{name}` holds {what}; give its labels ({list}) or their positions from 0"))
            }
        })?;
        let len = module.len(id);
        if values.len() != len {
            return Err(bad(format!(
                "--state: `{name}` has {len} element{}, but {} value{} given",
                if len == 1 { "" } else { "s" },
                values.len(),
                if values.len() == 1 { " is" } else { "s are" }
            )));
        }
        given.push((id, values));
    }
    let missing: Vec<&str> = module
        .buffers_of(|k| *k == BufferKind::State)
        .filter(|(id, _)| !given.iter().any(|(g, _)| g == id))
        .map(|(_, b)| b.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "--state gives no value for {}: act needs every state (bounds may read a state the policy does not observe)",
            missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(given)
}

/// Appends the numbers of a JSON number or (nested) list, or says what else it holds. A choice
/// state (with `labels`) holds the position of its label: an element is given by its label, by
/// its position (a number) for labels that are names, or by the element of its set (a number or
/// its text) for a `choice[SET]`, whose labels are the set's elements.
fn flatten(value: &Value, labels: &[String], out: &mut Vec<f64>) -> Result<(), String> {
    let over_set = !labels.is_empty() && labels.iter().all(|l| l.parse::<f64>().is_ok());
    let position = |text: &str| match labels.iter().position(|l| l == text) {
        Some(k) => Ok(k as f64),
        None => Err(format!("`{text}`, which is not one of its labels")),
    };
    match value {
        Value::Number(n) if over_set => {
            let v = n.as_f64().ok_or("a number out of range")?;
            match labels.iter().position(|l| l.parse::<f64>().is_ok_and(|e| e == v)) {
                Some(k) => out.push(k as f64),
                None => return Err(format!("{v}, which is not an element of its set")),
            }
        }
        Value::Number(n) => out.push(n.as_f64().ok_or("a number out of range")?),
        Value::Array(items) => {
            for item in items {
                flatten(item, labels, out)?;
            }
        }
        Value::String(text) if !labels.is_empty() => out.push(position(text)?),
        Value::Null => return Err("null".into()),
        Value::Bool(_) => return Err("a boolean".into()),
        Value::String(_) => return Err("a string".into()),
        Value::Object(_) => return Err("an object".into()),
    }
    Ok(())
}

/// The decision of a subject in a state (from [`read_state`]) of an instance. `sample` draws
/// the discrete labels from the policy's probabilities with that seed instead of taking the
/// most likely; a rule (the random policy) draws on a stream of seed `sample` (or 0).
pub fn act(
    subject: &Subject,
    module: &Module,
    instance: &Buffers,
    backend: &dyn Backend,
    state: &[(BufferId, Vec<f64>)],
    sample: Option<u64>,
) -> Result<Decision, ActError> {
    let mut instance = instance.clone();
    let mut init = Vec::new();
    for (id, values) in state {
        match module.buffers[*id].kind {
            BufferKind::Param => instance.values[*id].clone_from(values),
            _ => init.push((*id, values.clone())),
        }
    }
    let noise =
        vec![module.buffers_of(|k| *k == BufferKind::Noise).map(|(id, _)| (id, vec![0.0; module.len(id)])).collect()];
    let rows = [0];
    let mut world = Batched::drawn(module, &instance, backend, ScenarioSet::Test, &init, &noise, &rows);
    let discrete: Vec<BufferId> = module.buffers_of(|k| *k == BufferKind::Discrete).map(|(id, _)| id).collect();
    let stream = |seed: u64| policy_stream(seed, ScenarioSet::Test, 0);
    let mut probabilities = Vec::new();
    match subject.decides() {
        Decides::Networks { nets, spec } => {
            let ctx = Context { module, spec, backend, instance: &instance };
            let mut rng = stream(sample.unwrap_or(0));
            let mut decider = greedy::decider(&ctx, nets, sample.is_some(), &mut rng);
            decide(&mut world, &mut decider, &mut probabilities)?;
        }
        Decides::Rule { policy, odds } => {
            let mut streams: Vec<ChaCha8Rng> = vec![stream(sample.unwrap_or(0))];
            let mut decider = rules(module, policy, odds, &mut streams, &discrete);
            decide(&mut world, &mut decider, &mut probabilities)?;
        }
    }
    let mut p = probabilities.into_iter();
    let discrete = discrete
        .iter()
        .map(|&id| {
            let buffer = &module.buffers[id];
            let chosen: Vec<usize> = world.batch.get(id, 0).iter().map(|&l| l as usize).collect();
            let probabilities = chosen.iter().map(|_| p.by_ref().take(buffer.labels.len()).collect()).collect();
            Choice {
                action: buffer.name.clone(),
                scalar: buffer.dims.is_empty(),
                labels: buffer.labels.clone(),
                chosen,
                probabilities,
            }
        })
        .collect();
    let continuous = module
        .buffers_of(|k| *k == BufferKind::Continuous)
        .map(|(id, b)| (b.name.clone(), b.dims.is_empty(), world.batch.get(id, 0).to_vec()))
        .collect();
    Ok(Decision { discrete, continuous })
}

/// One period's decision on a world, and the probabilities the decider gave.
fn decide<'w, D: Explained<Batched<'w>, Error = TrainError>>(
    world: &mut Batched<'w>,
    decider: &mut D,
    probabilities: &mut Vec<f64>,
) -> Result<(), ActError> {
    protocol::decide(world, decider, 0).map_err(ActError::Run)?;
    decider.probabilities(world, 0, probabilities);
    Ok(())
}
