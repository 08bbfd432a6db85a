//! The front end's first stage: `.hmdp` text → [`ast::Model`] with spans (pest grammar in
//! `grammar/hmdp.pest`). It knows nothing about what names mean; that is `check`'s job.

// Broken input is data: nothing here may panic on what a user wrote (STYLE.md).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod ast;
mod parse;

pub use parse::{MAX_EXPR_DEPTH, parse};

use crate::diagnostics::{Diagnostic, Span};

/// A model file's bytes as text. Bytes that are not UTF-8 give a diagnostic at the first bad
/// byte, and the text with replacement characters so that it can still be shown.
pub fn decode(bytes: Vec<u8>) -> (String, Option<Diagnostic>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let d = Diagnostic::error(
                "encoding",
                "the file is not valid UTF-8 text",
                Span::new(at, at + 1),
                "invalid byte here",
            )
            .with_help("save the model as UTF-8");
            (text, Some(d))
        }
    }
}
