//! The front end's first stage: `.hmdp` text → [`ast::Model`] with spans (pest grammar in
//! `grammar/hmdp.pest`). It knows nothing about what names mean; that is `check`'s job.

pub mod ast;
mod parse;

pub use parse::{MAX_EXPR_DEPTH, parse};
