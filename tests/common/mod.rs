//! Helpers shared by the integration tests: run the front end on a file the way `hmdpc check`
//! does, and render what a user would see.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hmdp::check::{self, DataFiles, Options};
use hmdp::diagnostics::{self, Diagnostic};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Data files relative to a folder, as the command line reads them.
pub struct Folder(pub PathBuf);

impl DataFiles for Folder {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.0.join(path)).map_err(|_| format!("no file at {path}"))
    }
}

/// Checks model bytes with data files beside `path`; returns the source as shown and the
/// diagnostics.
pub fn check_bytes(bytes: Vec<u8>, folder: &Path, options: &Options) -> (String, Vec<Diagnostic>, bool) {
    let (source, encoding) = hmdp::syntax::decode(bytes);
    if let Some(d) = encoding {
        return (source, vec![d], false);
    }
    let outcome = check::check_source(&source, &Folder(folder.to_path_buf()), options);
    (source, outcome.diagnostics, outcome.model.is_some())
}

/// The diagnostics for a model file, rendered without colour as the user sees them.
pub fn rendered(path: &Path) -> (String, String, Vec<Diagnostic>) {
    let bytes = std::fs::read(path).expect("test model is readable");
    let folder = path.parent().expect("test model has a folder");
    let (source, diagnostics, _) = check_bytes(bytes.clone(), folder, &options_in(&bytes));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model.hmdp");
    let text = diagnostics::render(&diagnostics, name, &source, false);
    (source, text, diagnostics)
}

pub fn models() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("models"))
        .expect("models/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hmdp"))
        .collect();
    paths.sort();
    paths
}

/// Options a golden model asks for in its first line: `// args: --set name=value ...`.
pub fn options_in(bytes: &[u8]) -> Options {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next().unwrap_or("");
    let mut overrides = Vec::new();
    if let Some(args) = first.strip_prefix("// args:") {
        let mut words = args.split_whitespace();
        while let Some(word) = words.next() {
            if word == "--set"
                && let Some((name, value)) = words.next().and_then(|a| a.split_once('='))
            {
                overrides.push((name.to_string(), value.parse().expect("numeric --set in a golden model")));
            }
        }
    }
    Options { overrides }
}

/// The compiler's pipeline on model text, as `hmdpc` runs it ([`hmdp::pipeline::compile`]),
/// with data files beside `folder`.
pub fn compiled_text(source: &str, folder: &Path, overrides: &[(&str, f64)]) -> hmdp::pipeline::Compiled {
    let options = Options { overrides: overrides.iter().map(|(n, v)| (n.to_string(), *v)).collect() };
    let source = hmdp::pipeline::Source::new("model.hmdp", source.as_bytes().to_vec());
    hmdp::pipeline::compile(&source, &Folder(folder.to_path_buf()), &options)
        .unwrap_or_else(|failure| panic!("the model compiles:\n{}", failure.render(false)))
}

/// [`compiled_text`]'s module.
pub fn compile_text(source: &str, folder: &Path, overrides: &[(&str, f64)]) -> hmdp::ir::ValidModule {
    compiled_text(source, folder, overrides).module
}

/// [`compiled_text`] on a model file.
pub fn compiled_file(path: &Path, overrides: &[(&str, f64)]) -> hmdp::pipeline::Compiled {
    let source = std::fs::read_to_string(path).expect("model is readable");
    compiled_text(&source, path.parent().expect("model has a folder"), overrides)
}

/// [`compiled_file`]'s module.
pub fn compile_file(path: &Path, overrides: &[(&str, f64)]) -> hmdp::ir::ValidModule {
    compiled_file(path, overrides).module
}
