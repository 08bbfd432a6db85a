//! The second stage: AST → [`CheckedModel`], or every mistake found, each as a diagnostic.
//!
//! The checker resolves names, evaluates sizes and sets, infers element types, checks shapes and
//! index sets, enforces where each kind of name may be read (a parameter cannot read the state;
//! a state is updated exactly once; a primed name is never read) and validates what it can
//! evaluate at compile time (positive sizes, distribution parameters, non-empty bounds).
//!
//! It never stops at the first error: each declaration and statement is checked on its own, and a
//! broken part is given the type `Error`, which silences follow-on errors about it.
//!
//! Invariant: the checker does no IO. Data files are read through the [`DataFiles`] the caller
//! passes, so tests give it files from memory.

// Broken input is data: nothing here may panic on what a user wrote (STYLE.md).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod calls;
mod checker;
mod choice;
mod constant;
mod data;
mod decls;
mod exprs;
pub mod model;
mod policy;
mod settings;
mod sizes;
mod step;
mod suggest;
mod train;

pub use model::*;

use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, Item};

/// Reads data files named in `from "..."`, relative to the model file.
pub trait DataFiles {
    fn read(&self, path: &str) -> Result<String, String>;
}

/// No data files: every `from` fails with a clear message.
pub struct NoFiles;

impl DataFiles for NoFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        Err(format!("cannot read `{path}`: no data files are available here"))
    }
}

/// What the command line can change: `--set name=value` for sizes and scalar parameters.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub overrides: Vec<(String, f64)>,
}

/// The names `--set` may change in this model: its sizes and its scalar parameters.
pub fn overridable_names(model: &ast::Model) -> Vec<String> {
    model
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Size(s) => Some(s.name.name.clone()),
            Item::Param(p) if p.dims.is_empty() => Some(p.name.name.clone()),
            _ => None,
        })
        .collect()
}

/// Everything the checker found: the model when there was no error, and all diagnostics
/// (warnings come with a model too).
pub struct Outcome {
    pub model: Option<CheckedModel>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and checks a model source in one call: the front end as a whole.
pub fn check_source(source: &str, files: &dyn DataFiles, options: &Options) -> Outcome {
    match crate::syntax::parse(source) {
        Ok(ast) => check(&ast, files, options),
        Err(diagnostics) => Outcome { model: None, diagnostics },
    }
}

/// Checks a parsed model.
pub fn check(ast: &ast::Model, files: &dyn DataFiles, options: &Options) -> Outcome {
    let mut checker = checker::Checker::new(files, options);
    let model = checker.model(ast);
    let mut diagnostics = checker.diagnostics;
    diagnostics.sort_by_key(|d| (d.primary.span.start, d.primary.span.end));
    let has_error = diagnostics.iter().any(Diagnostic::is_error);
    Outcome { model: if has_error { None } else { Some(model) }, diagnostics }
}

/// A one-line description of a checked model for `hmdpc check`.
pub fn summary(model: &CheckedModel) -> String {
    let plural = |n: usize, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
    let values = |dims: &[Dimension]| model.count(dims);
    let state_values: usize = model.states.iter().map(|s| values(&s.dims)).sum();
    let discrete: Vec<&Action> = model.actions.iter().filter(|a| a.is_discrete()).collect();
    let continuous: Vec<&Action> = model.actions.iter().filter(|a| !a.is_discrete()).collect();
    let continuous_values: usize = continuous.iter().map(|a| values(&a.dims)).sum();
    let regimes: Vec<String> = discrete
        .iter()
        .map(|a| match &a.ty {
            ActionType::Discrete { .. } => {
                let n = model.label_count(a);
                let copies = values(&a.dims);
                if copies == 1 { format!("{n}") } else { format!("{copies}×{n}") }
            }
            ActionType::Continuous { .. } => String::new(),
        })
        .collect();
    let with_values = |count: usize, word: &str, values: usize| {
        if count == 0 { plural(0, word) } else { format!("{} ({})", plural(count, word), plural(values, "value")) }
    };
    let terminal = match model.terminal.len() {
        0 => String::new(),
        n => format!(", {}", plural(n, "terminal cost")),
    };
    format!(
        "model {}: {}, {}{}, {}, {}, horizon {}{}",
        model.name,
        with_values(model.states.len(), "state", state_values),
        plural(discrete.len(), "discrete action"),
        if regimes.is_empty() { String::new() } else { format!(" ({} choices)", regimes.join(", ")) },
        with_values(continuous.len(), "continuous action", continuous_values),
        plural(model.costs.len(), "cost term"),
        model.horizon,
        terminal,
    )
}

pub(crate) fn duplicate(kind: &str, name: &str, span: Span, first: Span) -> Diagnostic {
    let (message, help) = match kind {
        "setting" | "block" => (format!("`{name}` is given twice"), "keep one".to_string()),
        "arm" => (format!("label `{name}` has two arms"), "remove one of them".to_string()),
        "observation" => (format!("`{name}` is observed twice"), "list it once".to_string()),
        _ => (format!("`{name}` is declared twice"), "rename one of them".to_string()),
    };
    Diagnostic::error("duplicate", message, span, format!("second {kind} `{name}`"))
        .with_label(first, "first here")
        .with_help(help)
}

/// A cost named like an earlier declaration or `let`, or a `let` named like an earlier cost: each
/// becomes a named value of the compiled model, so costs share the one namespace of declarations.
pub(crate) fn name_taken(kind: &str, name: &str, span: Span, first_kind: &str, first: Span) -> Diagnostic {
    Diagnostic::error(
        "duplicate",
        format!("`{name}` names both a {first_kind} and a {kind}"),
        span,
        format!("{kind} `{name}`"),
    )
    .with_label(first, format!("{first_kind} `{name}`"))
    .with_help("declarations, `let`s and costs share one namespace: rename one of them")
}

pub(crate) use data::{parse_csv, parse_json};
pub use suggest::did_you_mean;
