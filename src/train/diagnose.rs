//! What a run shows besides its cost: the quantities that explain training, written as extra
//! columns of `curve.csv` at every dev evaluation, and the warnings in words when the policy
//! collapses to one regime, when its actions pile up at a bound, or when the dev cost has not
//! improved for a long stretch (each said once per run).
//!
//! Two sources feed them. The updates since the last dev evaluation ([`Window`]): the entropy of
//! each discrete action, the approximate KL divergence and clip fraction of the score-function
//! steps, and the norm of each parameter group's gradient before clipping, as means over the
//! window. The greedy policy on the dev set ([`Behaviour`]): how often each label is chosen, the
//! mean of each continuous action in each of its regimes, how often it sits at a bound, and the
//! share of each cost term in the total.

use std::collections::BTreeMap;

use super::Algo;
use super::rollout::Trajectory;
use super::spec::{RegimeSource, Spec};
use super::update::{GROUPS, Stats};
use crate::ir::Module;

/// Labels of a discrete action with more than this many are summarised by the share of the
/// most chosen one instead of one column each.
const LABEL_COLUMNS: usize = 8;

/// A label chosen at least this often on dev, with a training entropy under
/// [`SURE`] of the uniform one, is a collapse to one regime.
const COLLAPSED: f64 = 0.99;
const SURE: f64 = 0.1;

/// Actions at a bound at least this often on dev pile up there.
const PILED: f64 = 0.9;

/// Dev evaluations without an improvement before the trainer says so (and at least a quarter of
/// the run).
const PLATEAU_EVALUATIONS: usize = 10;

/// How the greedy policy behaves on a scenario set, from the period `from` on.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Per discrete action, how often each label is chosen.
    pub labels: Vec<BTreeMap<u32, u64>>,
    /// Per continuous action and regime, the sum of its values and their count.
    pub actions: Vec<Vec<(f64, u64)>>,
    /// Per continuous action, how many of its values sit at a bound, of how many.
    pub pinned: Vec<(u64, u64)>,
}

impl Behaviour {
    pub fn new(spec: &Spec) -> Behaviour {
        Behaviour {
            labels: vec![BTreeMap::new(); spec.discrete.len()],
            actions: spec.continuous.iter().map(|c| vec![(0.0, 0); c.regime.labels()]).collect(),
            pinned: vec![(0, 0); spec.continuous.len()],
        }
    }

    /// Counts the choices and actions of the steps of `traj` from `from` on.
    pub fn add(&mut self, spec: &Spec, traj: &Trajectory, from: usize) {
        let discrete_len: usize = spec.discrete.iter().map(|d| d.len).sum();
        let continuous_len: usize = spec.continuous.iter().map(|c| c.len).sum();
        for step in traj.steps.iter().skip(from) {
            for b in 0..traj.rows {
                let mut e = 0;
                for (h, head) in spec.discrete.iter().enumerate() {
                    for _ in 0..head.len {
                        *self.labels[h].entry(step.chosen[b * discrete_len + e]).or_default() += 1;
                        e += 1;
                    }
                }
                let mut e = 0;
                for (h, head) in spec.continuous.iter().enumerate() {
                    for _ in 0..head.len {
                        let used = step.used[b * continuous_len + e];
                        if let Some(o) = used.output {
                            let regime = (o as usize - head.offset) % head.regime.labels();
                            let (sum, count) = &mut self.actions[h][regime];
                            *sum += used.value;
                            *count += 1;
                            self.pinned[h].1 += 1;
                            self.pinned[h].0 += u64::from(used.pinned);
                        }
                        e += 1;
                    }
                }
            }
        }
    }

    /// The share of the choices of discrete action `h` that picked each label, by label.
    fn shares(&self, h: usize) -> impl Iterator<Item = (u32, f64)> + '_ {
        let total = self.labels[h].values().sum::<u64>().max(1) as f64;
        self.labels[h].iter().map(move |(&label, &n)| (label, n as f64 / total))
    }

    /// The most chosen label of discrete action `h` and its share.
    fn top(&self, h: usize) -> (u32, f64) {
        self.shares(h).fold((0, 0.0), |best, (label, share)| if share > best.1 { (label, share) } else { best })
    }

    fn pinned_share(&self, h: usize) -> f64 {
        let (at, of) = self.pinned[h];
        if of == 0 { f64::NAN } else { at as f64 / of as f64 }
    }
}

/// The training statistics of the updates since the last dev evaluation, summed.
#[derive(Clone, Debug, Default)]
pub struct Window {
    updates: usize,
    kl: f64,
    clip_fraction: f64,
    head_entropy: Vec<f64>,
    grad_norms: BTreeMap<&'static str, (f64, usize)>,
    /// The sum of the updates' value fits, and how many were not NaN.
    value_fit: (f64, usize),
}

impl Window {
    pub fn add(&mut self, stats: &Stats) {
        self.updates += 1;
        self.kl += stats.approx_kl;
        self.clip_fraction += stats.clip_fraction;
        self.head_entropy.resize(stats.head_entropy.len(), 0.0);
        for (sum, h) in self.head_entropy.iter_mut().zip(&stats.head_entropy) {
            *sum += h;
        }
        for &(group, norm) in &stats.grad_norms {
            let (sum, count) = self.grad_norms.entry(group).or_default();
            *sum += norm;
            *count += 1;
        }
        if !stats.value_fit.is_nan() {
            self.value_fit.0 += stats.value_fit;
            self.value_fit.1 += 1;
        }
    }

    /// The mean entropy of discrete action `h` over the window; NaN before any update.
    fn entropy(&self, h: usize) -> f64 {
        match self.head_entropy.get(h) {
            Some(sum) if self.updates > 0 => sum / self.updates as f64,
            _ => f64::NAN,
        }
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.updates == 0 { f64::NAN } else { sum / self.updates as f64 }
    }
}

/// The name of label `label` of the discrete buffer `buffer`.
fn label_name(module: &Module, buffer: usize, label: u32) -> String {
    module.buffers[buffer].labels.get(label as usize).cloned().unwrap_or_else(|| label.to_string())
}

/// The parameter groups whose gradient norms a run of `algo` records.
fn groups(algo: Algo) -> &'static [&'static str] {
    if algo == Algo::Ppo { &GROUPS } else { &GROUPS[..3] }
}

/// The diagnostic columns of one curve row, by name, in the order `curve.csv` writes them:
/// from the updates of `window` (NaN without updates) and the greedy policy's `behaviour` and
/// mean cost per term `terms` on dev.
pub fn columns(
    module: &Module,
    spec: &Spec,
    algo: Algo,
    window: &Window,
    behaviour: &Behaviour,
    terms: &[f64],
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (h, head) in spec.discrete.iter().enumerate() {
        out.push((format!("entropy_{}", module.buffers[head.buffer].name), window.entropy(h)));
    }
    out.push(("kl".to_string(), window.mean(window.kl)));
    out.push(("clip_fraction".to_string(), window.mean(window.clip_fraction)));
    for &group in groups(algo) {
        let norm = window.grad_norms.get(group).map_or(f64::NAN, |&(sum, n)| sum / n.max(1) as f64);
        out.push((format!("grad_{group}"), norm));
    }
    let (sum, n) = window.value_fit;
    out.push(("value_fit".to_string(), if n == 0 { f64::NAN } else { sum / n as f64 }));
    for (h, head) in spec.discrete.iter().enumerate() {
        let name = &module.buffers[head.buffer].name;
        if head.labels <= LABEL_COLUMNS {
            let shares: BTreeMap<u32, f64> = behaviour.shares(h).collect();
            for label in 0..head.labels as u32 {
                let share = shares.get(&label).copied().unwrap_or(0.0);
                out.push((format!("chosen_{name}_{}", label_name(module, head.buffer, label)), share));
            }
        } else {
            out.push((format!("chosen_{name}_top"), behaviour.top(h).1));
        }
    }
    for (h, head) in spec.continuous.iter().enumerate() {
        let name = &module.buffers[head.buffer].name;
        let regime_buffer = match head.regime {
            RegimeSource::None => None,
            RegimeSource::Shared { buffer, .. } | RegimeSource::Elementwise { buffer, .. } => Some(buffer),
        };
        for (regime, &(sum, count)) in behaviour.actions[h].iter().enumerate() {
            let mean = if count == 0 { f64::NAN } else { sum / count as f64 };
            let column = match regime_buffer {
                None => format!("action_{name}"),
                Some(buffer) => format!("action_{name}_{}", label_name(module, buffer, regime as u32)),
            };
            out.push((column, mean));
        }
        out.push((format!("at_bound_{name}"), behaviour.pinned_share(h)));
    }
    let total: f64 = terms.iter().map(|t| t.abs()).sum();
    for (&term, &cost) in spec.costs.iter().zip(terms) {
        let share = if total > 0.0 { cost / total } else { f64::NAN };
        out.push((format!("share_{}", module.buffers[term].name), share));
    }
    out
}

/// The diagnostic columns as one line, `name value, …`, those without a value left out.
pub fn summary(columns: &[(String, f64)]) -> String {
    let parts: Vec<String> =
        columns.iter().filter(|(_, v)| v.is_finite()).map(|(name, v)| format!("{name} {}", significant(*v))).collect();
    parts.join(", ")
}

/// `v` to three significant digits.
fn significant(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{v:.digits$}")
}

/// The share of each cost term, for the progress line: `holding 41%, shortage 9%, fixed 50%`.
/// A share is the term over the sum of the terms' sizes, so that a gain (a negative term) has a
/// negative share and the sizes add up to 100%.
pub fn cost_shares(module: &Module, spec: &Spec, terms: &[f64]) -> String {
    let total: f64 = terms.iter().map(|t| t.abs()).sum();
    if total == 0.0 || !total.is_finite() || terms.len() < 2 {
        return String::new();
    }
    let parts: Vec<String> = spec
        .costs
        .iter()
        .zip(terms)
        .map(|(&term, cost)| format!("{} {:.0}%", module.buffers[term].name, 100.0 * cost / total))
        .collect();
    parts.join(", ")
}

/// What the trainer has already warned about: each warning is given once per run.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    collapsed: Vec<bool>,
    piled: Vec<bool>,
    plateau: bool,
}

/// Where the run stands at a dev evaluation.
pub struct Standing {
    /// Updates done.
    pub update: usize,
    pub dev: f64,
    pub best: f64,
    pub best_update: usize,
    pub eval_every: usize,
    /// The updates the run is to make.
    pub updates: usize,
}

impl Watch {
    /// The warnings, in words, that this dev evaluation raises for the first time.
    pub fn check(
        &mut self,
        module: &Module,
        spec: &Spec,
        window: &Window,
        behaviour: &Behaviour,
        at: &Standing,
    ) -> Vec<String> {
        let mut said = Vec::new();
        self.collapsed.resize(spec.discrete.len(), false);
        self.piled.resize(spec.continuous.len(), false);
        if at.update == 0 {
            return said;
        }
        for (h, head) in spec.discrete.iter().enumerate() {
            let (label, share) = behaviour.top(h);
            let entropy = window.entropy(h);
            let uniform = (head.labels as f64).ln();
            if self.collapsed[h]
                || head.labels < 2
                || share < COLLAPSED
                || entropy.is_nan()
                || entropy >= SURE * uniform
            {
                continue;
            }
            self.collapsed[h] = true;
            let name = &module.buffers[head.buffer].name;
            said.push(format!(
                "after {} updates the policy chooses `{}` for `{name}` in {:.1}% of its dev decisions and is sure of it \
                 (entropy {entropy:.3} nats of at most {uniform:.3}): it may have collapsed to one regime{}",
                at.update,
                label_name(module, head.buffer, label),
                100.0 * share,
                worse(at),
            ));
        }
        for (h, head) in spec.continuous.iter().enumerate() {
            let share = behaviour.pinned_share(h);
            if self.piled[h] || share.is_nan() || share < PILED {
                continue;
            }
            self.piled[h] = true;
            let name = &module.buffers[head.buffer].name;
            let hint = if head.lower.is_some() && head.upper.is_some() {
                String::new()
            } else {
                format!(" (its output scale is {}; `--action-scale` changes it)", super::defaults::round(head.scale))
            };
            said.push(format!(
                "after {} updates `{name}` is at one of its bounds in {:.1}% of its dev decisions: actions pile up at a \
                 bound{hint}; if the optimum is not there, the policy may be stuck{}",
                at.update,
                100.0 * share,
                worse(at),
            ));
        }
        let stalled = at.update.saturating_sub(at.best_update);
        if !self.plateau && stalled >= (PLATEAU_EVALUATIONS * at.eval_every).max(at.updates / 4) {
            self.plateau = true;
            said.push(format!(
                "the dev cost has not improved for {stalled} updates (best {:.4} at update {}): more updates may not \
                 help (`--patience` stops a run on such a plateau)",
                at.best, at.best_update
            ));
        }
        said
    }
}

/// ` (dev cost X, above the best Y at update B)` when the policy is worse than the best.
fn worse(at: &Standing) -> String {
    if at.dev > at.best {
        format!(" (dev cost {:.4}, above the best {:.4} at update {})", at.dev, at.best, at.best_update)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_averages_its_updates_and_is_nan_when_empty() {
        let mut window = Window::default();
        assert!(window.entropy(0).is_nan() && window.mean(window.kl).is_nan());
        for (kl, h) in [(0.01, 0.6), (0.03, 0.2)] {
            let stats = Stats {
                approx_kl: kl,
                head_entropy: vec![h],
                grad_norms: vec![("discrete", 2.0 * h)],
                ..Stats::default()
            };
            window.add(&stats);
        }
        assert!((window.mean(window.kl) - 0.02).abs() < 1e-12);
        assert!((window.entropy(0) - 0.4).abs() < 1e-12);
        assert_eq!(window.grad_norms.get("discrete").map(|g| g.1), Some(2));
    }

    #[test]
    fn each_warning_is_given_once_and_only_when_it_applies() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/battery.hmdp");
        let compiled = crate::pipeline::compile_file(&path, &Default::default()).expect("battery compiles");
        let module = &compiled.module;
        let spec = Spec::of(module);
        let mut window = Window::default();
        window.add(&Stats { head_entropy: vec![0.01], ..Stats::default() });
        let mut behaviour = Behaviour::new(&spec);
        behaviour.labels[0] = [(0, 995), (2, 5)].into_iter().collect();
        behaviour.pinned[0] = (95, 100);
        behaviour.pinned[1] = (10, 100);
        let at =
            |update, best_update| Standing { update, dev: 2.0, best: 1.0, best_update, eval_every: 1, updates: 200 };
        let mut watch = Watch::default();
        // Nothing is said of the untrained policy.
        assert!(watch.check(module, &spec, &window, &behaviour, &at(0, 0)).is_empty());
        let said = watch.check(module, &spec, &window, &behaviour, &at(10, 5));
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("chooses `idle` for `mode` in 99.5%") && said[0].contains("collapsed"), "{said:?}");
        assert!(said[0].contains("above the best 1.0000 at update 5"), "{said:?}");
        assert!(said[1].contains("`buy` is at one of its bounds in 95.0%"), "{said:?}");
        // Said once; the plateau comes after a quarter of the run without improvement.
        assert!(watch.check(module, &spec, &window, &behaviour, &at(54, 5)).is_empty());
        let said = watch.check(module, &spec, &window, &behaviour, &at(55, 5));
        assert!(said.len() == 1 && said[0].contains("not improved for 50 updates"), "{said:?}");
        // A sure policy that spreads its choices, or an unsure one, has not collapsed.
        let mut unsure = Window::default();
        unsure.add(&Stats { head_entropy: vec![0.5], ..Stats::default() });
        assert!(Watch::default().check(module, &spec, &unsure, &Behaviour::new(&spec), &at(10, 10)).is_empty());
    }
}
