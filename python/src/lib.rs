//! `hmdp._hmdp`: the Rust half of the Python module. It exposes the library's own entry points —
//! [`hmdp::pipeline::compile`], the per-period protocol of [`hmdp::sim::protocol`], the trainer
//! [`hmdp::train::run::train`] and the run folder [`hmdp::train::folder::Run`] — on numpy
//! arrays; the Python half (`python/hmdp/`) builds the gymnasium environments and the JAX
//! adapter on top. Nothing here re-implements the pipeline, the trainer or the folder format.

mod env;
mod model;
mod runs;
mod sweep;

use hmdp::backend::RunError;
use hmdp::diagnostics::Diagnostic;
use hmdp::pipeline::{Failure, Source};
use pyo3::prelude::*;

pyo3::create_exception!(
    _hmdp,
    HmdpError,
    pyo3::exceptions::PyException,
    "A model that does not compile, a run folder that cannot be read, or a model that fails while \
     it runs. `str(e)` is what `hmdpc` prints; `e.diagnostics` holds each located diagnostic as a \
     dict (file, line, column, end_line, end_column, severity, code, message, label, help)."
);

/// A JSON value as the equivalent Python object (dicts, lists, floats, strings, None).
fn to_python<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

/// An `HmdpError` with the rendered text and the structured diagnostics.
fn error_with(py: Python<'_>, rendered: String, diagnostics: serde_json::Value) -> PyErr {
    let err = HmdpError::new_err(rendered.trim_end().to_string());
    let attached = to_python(py, &diagnostics).and_then(|d| err.value(py).setattr("diagnostics", d));
    match attached {
        Ok(()) => err,
        Err(e) => e,
    }
}

/// Diagnostics of a source as JSON records.
fn records(diagnostics: &[Diagnostic], source: &Source) -> serde_json::Value {
    diagnostics.iter().map(|d| hmdp::diagnostics::to_json(d, &source.name, &source.text)).collect()
}

/// A compile failure as the exception a user sees: the CLI's text, and its diagnostics.
fn failure(py: Python<'_>, failure: Failure) -> PyErr {
    let rendered = failure.render(false);
    let diagnostics = match &failure {
        Failure::Model { source, diagnostics } => records(diagnostics, source),
        Failure::Read(_) | Failure::Override(_) | Failure::Internal { .. } => serde_json::json!([]),
    };
    error_with(py, rendered, diagnostics)
}

/// A run-time error of a model, located in its source as `hmdpc` prints it.
fn run_error(py: Python<'_>, source: &Source, e: RunError) -> PyErr {
    let d = Diagnostic::error("run", e.message, e.span, "while evaluating this");
    error_with(py, source.render(std::slice::from_ref(&d), false), records(&[d], source))
}

/// An error with no place in a model (a run folder, a setting).
fn plain_error(message: impl std::fmt::Display) -> PyErr {
    Python::attach(|py| error_with(py, format!("error: {message}"), serde_json::json!([])))
}

#[pymodule]
fn _hmdp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("HmdpError", m.py().get_type::<HmdpError>())?;
    m.add_class::<model::Model>()?;
    m.add_class::<env::Simulator>()?;
    m.add_class::<runs::Run>()?;
    m.add_class::<runs::Policy>()?;
    m.add_function(wrap_pyfunction!(model::compile, m)?)?;
    m.add_function(wrap_pyfunction!(runs::train, m)?)?;
    m.add_function(wrap_pyfunction!(runs::open_run, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::sweep_plan, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::sweep_run, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::sweep_search_space, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::sweep_trial, m)?)?;
    Ok(())
}
