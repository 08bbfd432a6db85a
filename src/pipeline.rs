//! The compiler as one call: model text, its data files and `--set` overrides in; a validated,
//! reformulated, differentiated module out, with its source, what was rewritten, the warnings
//! and the data files it read. Every command, every test and every other front end (the Python
//! module, sweeps) compiles through [`compile`]; nothing else chains the stages.
//!
//! ```text
//! Source ──syntax::parse──▶ AST ──check──▶ CheckedModel ──ir::lower──▶ Module
//!        ──passes::reformulate──▶ ──passes::ad──▶ ──ir::validate──▶ ValidModule
//! ```
//!
//! A failure is data ([`Failure`]): the located diagnostics of a model with errors, a `--set`
//! that names nothing, a file that cannot be read, or — a bug in hmdp — a module the validator
//! refused. [`Failure::render`] gives what a user sees.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use crate::check::{self, CheckedModel, DataFiles, Options};
use crate::diagnostics::{self, Diagnostic, Span};
use crate::ir::ValidModule;
use crate::passes::reformulate::Rewrite;
use crate::resources::TooLarge;
use crate::syntax::ast;

/// The largest model file read: 16 MiB (the largest shipped model is a few KiB; a model's
/// tables belong in data files).
pub const MAX_MODEL_BYTES: u64 = 16 << 20;

/// The largest data file read: 1 GiB.
pub const MAX_DATA_BYTES: u64 = 1 << 30;

/// The bytes of the file at `path`, or `None` when it holds more than `limit` (a device such as
/// `/dev/zero` never ends).
fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// A model's text and the name it is shown under (its path as given).
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
    /// Bytes that are not UTF-8 (the text shows them as replacement characters).
    encoding_error: Option<Diagnostic>,
}

impl Source {
    /// A model from its bytes, shown as `name`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Source {
        let (text, encoding_error) = crate::syntax::decode(bytes);
        Source { name: name.into(), text, encoding_error }
    }

    /// The model file at `path`, or why it cannot be read (a file larger than
    /// [`MAX_MODEL_BYTES`] is not read to its end).
    pub fn read(path: &Path) -> Result<Source, Failure> {
        let cannot = |why: String| Failure::Read(format!("cannot read {}: {why}", path.display()));
        let bytes = read_at_most(path, MAX_MODEL_BYTES).map_err(|e| cannot(describe_io(&e)))?.ok_or_else(|| {
            cannot(format!(
                "it is larger than {}, the most a model file may be",
                crate::resources::human(MAX_MODEL_BYTES.into())
            ))
        })?;
        Ok(Source::new(path.display().to_string(), bytes))
    }

    /// Diagnostics of this source as a user sees them; `color` off gives plain text.
    pub fn render(&self, diagnostics: &[Diagnostic], color: bool) -> String {
        diagnostics::render(diagnostics, &self.name, &self.text, color)
    }
}

/// Why a model did not compile.
#[derive(Debug)]
pub enum Failure {
    /// A file cannot be read; the message names it and says why.
    Read(String),
    /// The model has errors: every diagnostic, located in its source.
    Model { source: Box<Source>, diagnostics: Vec<Diagnostic> },
    /// A `--set` names nothing the model lets `--set` change; the message says why.
    Override(String),
    /// The compiler built a module its own validator refuses: a bug in hmdp.
    Internal { source: Box<Source>, problems: Vec<String> },
}

impl Failure {
    /// What a user sees: rendered diagnostics, or one `error:` line.
    pub fn render(&self, color: bool) -> String {
        match self {
            Failure::Read(message) | Failure::Override(message) => format!("error: {message}\n"),
            Failure::Model { source, diagnostics } => source.render(diagnostics, color),
            Failure::Internal { source, problems } => {
                let mut out = format!(
                    "error: internal error: the compiled model is invalid; please report this with the model {}:\n",
                    source.name
                );
                for p in problems {
                    out.push_str(&format!("  {p}\n"));
                }
                out
            }
        }
    }
}

/// A model that passed the checker, with its warnings.
pub struct Checked {
    pub model: CheckedModel,
    pub warnings: Vec<Diagnostic>,
}

/// The front end alone (what `hmdpc check` runs): parse and check.
pub fn check(source: &Source, files: &dyn DataFiles, options: &Options) -> Result<Checked, Failure> {
    let failed = |diagnostics: Vec<Diagnostic>| Failure::Model { source: Box::new(source.clone()), diagnostics };
    if let Some(d) = &source.encoding_error {
        return Err(failed(vec![d.clone()]));
    }
    let ast = crate::syntax::parse(&source.text).map_err(failed)?;
    unknown_overrides(&ast, options, &source.name)?;
    let outcome = check::check(&ast, files, options);
    match outcome.model {
        Some(model) => Ok(Checked { model, warnings: outcome.diagnostics }),
        None => Err(failed(outcome.diagnostics)),
    }
}

/// A compiled model: what every backend, the simulator and the trainer run.
pub struct Compiled {
    pub module: ValidModule,
    pub source: Source,
    /// What the reformulation rewrote into hybrid form, with the places.
    pub rewrites: Vec<Rewrite>,
    /// The checker's warnings (a compiled model has no errors).
    pub warnings: Vec<Diagnostic>,
    /// Every data file the model read, as (path as written in the model, text), in the order
    /// read: a run folder keeps them, so the model compiles later with exactly these values.
    pub data_files: Vec<(String, String)>,
    /// The model's heuristic policies, lowered against `module` (`sim::policy` runs them).
    pub policies: Vec<crate::ir::PolicyProgram>,
    /// The model's `train { … }` block: its training defaults.
    pub train: crate::check::model::TrainDefaults,
}

impl Compiled {
    /// The declared policy called `name`.
    pub fn policy(&self, name: &str) -> Option<&crate::ir::PolicyProgram> {
        self.policies.iter().find(|p| p.name == name)
    }
}

/// The whole pipeline: check, lower, reformulate, differentiate, validate.
pub fn compile(source: &Source, files: &dyn DataFiles, options: &Options) -> Result<Compiled, Failure> {
    let recording = Recording { inner: files, seen: RefCell::default() };
    let Checked { model, warnings } = check(source, &recording, options)?;
    let mut module = crate::ir::lower::lower(&model);
    let rewrites = crate::passes::reformulate::reformulate(&mut module);
    crate::passes::ad::differentiate(&mut module);
    let module = ValidModule::new(module)
        .map_err(|problems| Failure::Internal { source: Box::new(source.clone()), problems })?;
    let policies = model.policies.iter().map(|p| crate::ir::lower::lower_policy(&model, &module, p)).collect();
    Ok(Compiled {
        module,
        source: source.clone(),
        rewrites,
        warnings,
        data_files: recording.seen.into_inner(),
        policies,
        train: model.train,
    })
}

/// A command refused for the memory it would need ([`crate::resources`]), as a diagnostic at
/// the declaration of the buffer that makes the need largest (the model's name when that is a
/// `let` or a cost).
pub fn too_large(compiled: &Compiled, refused: TooLarge) -> Failure {
    let model = crate::syntax::parse(&compiled.source.text).ok();
    let declared = |name: &str| {
        model.as_ref()?.items.iter().find_map(|item| {
            let ident = match item {
                ast::Item::Size(d) => &d.name,
                ast::Item::Set(d) => &d.name,
                ast::Item::Param(d) => &d.name,
                ast::Item::State(d) => &d.name,
                ast::Item::Noise(d) => &d.name,
                ast::Item::Action(d) => &d.name,
                _ => return None,
            };
            (ident.name == name).then_some(ident.span)
        })
    };
    let located = refused.buffer.as_deref().and_then(|name| declared(name).map(|span| (name, span)));
    let (span, label) = match located {
        Some((name, span)) => (span, format!("`{name}` makes it this large")),
        None => (model.as_ref().map_or(Span::new(0, 0), |m| m.name.span), "in this model".to_string()),
    };
    let help =
        format!("{}; {}, or set HMDP_MEMORY to the bytes this process may use", refused.parts.join("; "), refused.fix);
    let diagnostic = Diagnostic::error("too-large", refused.message, span, label).with_help(help);
    Failure::Model { source: Box::new(compiled.source.clone()), diagnostics: vec![diagnostic] }
}

/// [`compile`] on a model file, reading its data files from the file's folder.
pub fn compile_file(path: &Path, options: &Options) -> Result<Compiled, Failure> {
    compile(&Source::read(path)?, &Folder::beside(path), options)
}

/// Data files read relative to a folder: the model file's, as the command line reads them.
pub struct Folder(pub PathBuf);

impl Folder {
    /// The folder a model file's data files are read from.
    pub fn beside(model: &Path) -> Folder {
        Folder(model.parent().map(Path::to_path_buf).unwrap_or_default())
    }
}

impl DataFiles for Folder {
    fn read(&self, path: &str) -> Result<String, String> {
        let full = self.0.join(path);
        let bytes = read_at_most(&full, MAX_DATA_BYTES)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("no file at {}", full.display()),
                _ => format!("{}: {}", full.display(), describe_io(&e)),
            })?
            .ok_or_else(|| {
                format!(
                    "{} is larger than {}, the most a data file may be",
                    full.display(),
                    crate::resources::human(MAX_DATA_BYTES.into())
                )
            })?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", full.display()))
    }
}

/// Data files served from memory, by the path the model names: a run folder's `data.json`, so
/// a model compiles with exactly the values it was trained on, wherever the files are now.
pub struct Snapshot(pub Vec<(String, String)>);

impl DataFiles for Snapshot {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, text)| text.clone())
            .ok_or_else(|| format!("the run folder's data.json holds no file `{path}`"))
    }
}

/// Data files read through another reader, remembered with their text.
struct Recording<'a> {
    inner: &'a dyn DataFiles,
    seen: RefCell<Vec<(String, String)>>,
}

impl DataFiles for Recording<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        let text = self.inner.read(path)?;
        let mut seen = self.seen.borrow_mut();
        if !seen.iter().any(|(p, _)| p == path) {
            seen.push((path.to_string(), text.clone()));
        }
        Ok(text)
    }
}

/// A `--set` naming nothing in the model, or an array parameter, with the closest name.
fn unknown_overrides(ast: &ast::Model, options: &Options, file: &str) -> Result<(), Failure> {
    let names = check::overridable_names(ast);
    for (name, _) in &options.overrides {
        let is_array = ast
            .items
            .iter()
            .any(|item| matches!(item, ast::Item::Param(p) if p.name.name == *name && !p.dims.is_empty()));
        if is_array {
            return Err(Failure::Override(format!(
                "--set {name}=...: `{name}` in {file} is an array parameter; --set changes sizes and scalar parameters"
            )));
        }
        if !names.contains(name) {
            let hint = check::did_you_mean(name, names.iter().map(String::as_str))
                .map(|hint| format!(" ({hint})"))
                .unwrap_or_default();
            return Err(Failure::Override(format!(
                "--set {name}=...: {file} has no size or scalar parameter `{name}`{hint}"
            )));
        }
    }
    Ok(())
}

/// An IO error in a user's words.
pub fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}
