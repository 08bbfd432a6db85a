//! The `train { … }` block: the model's own training defaults, which `hmdpc train` uses for the
//! settings its command line leaves unset. Each key is checked for its name, its number of
//! values and their range; `action_scale` may name a continuous action.

use std::collections::HashMap;

use super::checker::*;
use super::duplicate;
use super::suggest::did_you_mean;
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, Item};

/// The keys a `train` block may set, as `hmdpc train` names the flags (with `_` for `-`).
pub const TRAIN_KEYS: [&str; 9] =
    ["gamma", "buffer_periods", "hidden", "action_scale", "updates", "batch", "lr", "patience", "entropy_half_life"];

impl Checker<'_> {
    pub(super) fn train_block(&mut self, ast: &ast::Model) {
        let mut first_block: Option<Span> = None;
        for item in &ast.items {
            let Item::Train(block) = item else { continue };
            let head = Span::new(block.span.start, block.span.start + "train".len());
            if let Some(first) = first_block {
                self.error(duplicate("block", "train", head, first));
                continue;
            }
            first_block = Some(head);
            let mut seen: HashMap<(String, Option<String>), Span> = HashMap::new();
            for entry in &block.entries {
                let target = entry.target.as_ref().map(|t| t.name.clone());
                let name = match &target {
                    Some(t) => format!("{} {t}", entry.key.name),
                    None => entry.key.name.clone(),
                };
                if let Some(first) = seen.insert((entry.key.name.clone(), target), entry.key.span) {
                    self.error(duplicate("setting", &name, entry.key.span, first));
                    continue;
                }
                self.train_entry(entry);
            }
        }
    }

    fn train_entry(&mut self, entry: &ast::TrainEntry) {
        let key = entry.key.name.as_str();
        if !TRAIN_KEYS.contains(&key) {
            let help = match did_you_mean(key, TRAIN_KEYS) {
                Some(suggestion) => suggestion,
                None => format!("the settings a `train` block may give are {}", TRAIN_KEYS.join(", ")),
            };
            self.error(
                Diagnostic::error(
                    "train-setting",
                    format!("`{key}` is not a training setting"),
                    entry.key.span,
                    "unknown setting",
                )
                .with_help(help),
            );
            return;
        }
        if let Some(target) = &entry.target
            && key != "action_scale"
        {
            self.error(
                Diagnostic::error(
                    "train-setting",
                    format!("`{key}` is one setting for the whole model, not one per action"),
                    target.span,
                    "an action named here",
                )
                .with_help(format!("write `{key} VALUE`; only `action_scale` names an action")),
            );
            return;
        }
        let many = key == "hidden";
        if entry.values.len() != 1 && !many {
            let span = entry.values.get(1).map_or(entry.span, |v| v.span);
            self.error(
                Diagnostic::error("train-setting", format!("`{key}` takes one value"), span, "one value too many")
                    .with_help(format!("write `{key} VALUE`")),
            );
            return;
        }
        let whole = |lo: f64, hi: f64| move |v: f64| v.fract() == 0.0 && (lo..=hi).contains(&v);
        let Some(value) = entry.values.first() else { return };
        match key {
            "gamma" => {
                self.m.train.gamma = self.setting(value, "gamma", |v| (0.0..=1.0).contains(&v), "a number in [0, 1]");
            }
            "buffer_periods" => {
                let v = self.setting(value, "buffer_periods", whole(0.0, 1e9), "a whole number of steps, at least 0");
                self.m.train.buffer_periods = v.map(|v| v as usize);
            }
            "updates" => {
                let v = self.setting(value, "updates", whole(1.0, 1e9), "a whole number, at least 1");
                self.m.train.updates = v.map(|v| v as usize);
            }
            "batch" => {
                let v = self.setting(value, "batch", whole(1.0, 1e7), "a whole number from 1 to 10^7");
                self.m.train.batch = v.map(|v| v as usize);
            }
            "patience" => {
                let v = self.setting(value, "patience", whole(1.0, 1e8), "a whole number of updates, at least 1");
                self.m.train.patience = v.map(|v| v as usize);
            }
            "entropy_half_life" => {
                let v =
                    self.setting(value, "entropy_half_life", whole(1.0, 1e8), "a whole number of updates, at least 1");
                self.m.train.entropy_half_life = v.map(|v| v as usize);
            }
            "lr" => {
                self.m.train.lr = self.setting(value, "lr", |v| v > 0.0 && v.is_finite(), "a positive number");
            }
            "hidden" => {
                let sizes: Vec<Option<f64>> = entry
                    .values
                    .iter()
                    .map(|v| self.setting(v, "hidden", whole(1.0, 65536.0), "a layer size from 1 to 65536"))
                    .collect();
                if sizes.iter().all(Option::is_some) {
                    self.m.train.hidden = Some(sizes.into_iter().flatten().map(|v| v as usize).collect());
                }
            }
            "action_scale" => {
                let scale = self.setting(value, "action_scale", |v| v > 0.0 && v.is_finite(), "a positive number");
                match &entry.target {
                    None => self.m.train.action_scale = scale,
                    Some(target) => {
                        let continuous: Vec<&str> =
                            self.m.actions.iter().filter(|a| !a.is_discrete()).map(|a| a.name.as_str()).collect();
                        if !continuous.contains(&target.name.as_str()) {
                            let mut d = Diagnostic::error(
                                "train-setting",
                                format!("`{}` is not a continuous action of the model", target.name),
                                target.span,
                                "no such continuous action",
                            );
                            d = match did_you_mean(&target.name, continuous.iter().copied()) {
                                Some(help) => d.with_help(help),
                                None => d.with_help(
                                    "`action_scale NAME = VALUE` sets the scale of the continuous action NAME",
                                ),
                            };
                            self.error(d);
                        } else if let Some(scale) = scale {
                            self.m.train.action_scales.insert(target.name.clone(), scale);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
