//! What every stage reports about a model: a [`Diagnostic`] with a code, a one-line reason, the
//! source span it is about, optional secondary spans and a fix.
//!
//! Diagnostics are plain data. Stages push them into a `Vec` and go on; only the command line
//! renders them, as text through miette ([`render`]) or as JSON for editors ([`to_json`]).

use std::fmt;

/// A half-open byte range `[start, end)` into the model source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end: end.max(start) }
    }

    /// The smallest span that covers both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A source span with the text shown under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable kebab-case identifier such as `unknown-name`, shown as `hmdp::unknown-name`.
    pub code: &'static str,
    /// One line: what is wrong.
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    /// How to fix it, where there is a fix to suggest.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: Label { span, text: label.into() },
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message, span, label) }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A diagnostic bound to the file it is about, in the form miette renders.
struct Report<'a> {
    diagnostic: &'a Diagnostic,
    source: miette::NamedSource<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(format!("hmdp::{}", self.diagnostic.code)))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic.help.as_ref().map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let len = self.source.inner().len();
        let clamp = move |span: Span| {
            let start = span.start.min(len);
            miette::SourceSpan::new(start.into(), span.end.min(len) - start)
        };
        let primary = std::iter::once(miette::LabeledSpan::new_primary_with_span(
            Some(self.diagnostic.primary.text.clone()),
            clamp(self.diagnostic.primary.span),
        ));
        let secondary = self
            .diagnostic
            .secondary
            .iter()
            .map(move |l| miette::LabeledSpan::new_with_span(Some(l.text.clone()), clamp(l.span)));
        Some(Box::new(primary.chain(secondary)))
    }
}

/// Renders diagnostics as a user sees them in a terminal. `color` off gives plain text, the form
/// used in golden tests.
pub fn render(diagnostics: &[Diagnostic], file_name: &str, source: &str, color: bool) -> String {
    let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let report = Report { diagnostic, source: miette::NamedSource::new(file_name, source.to_string()) };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
    }
    out
}

/// Line and column (both from 1, column in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let before = source.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(source: &str, mut offset: usize) -> usize {
    while offset > 0 && !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn label_json(source: &str, label: &Label) -> serde_json::Value {
    let (line, column) = line_column(source, label.span.start);
    let (end_line, end_column) = line_column(source, label.span.end);
    serde_json::json!({
        "offset": label.span.start,
        "length": label.span.len(),
        "line": line,
        "column": column,
        "end_line": end_line,
        "end_column": end_column,
        "label": label.text,
    })
}

/// One JSON object per diagnostic, for editors and scripts.
pub fn to_json(diagnostic: &Diagnostic, file_name: &str, source: &str) -> serde_json::Value {
    let mut primary = label_json(source, &diagnostic.primary);
    let secondary: Vec<_> = diagnostic.secondary.iter().map(|l| label_json(source, l)).collect();
    if let Some(object) = primary.as_object_mut() {
        object.insert("file".into(), file_name.into());
        object.insert(
            "severity".into(),
            match diagnostic.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            }
            .into(),
        );
        object.insert("code".into(), format!("hmdp::{}", diagnostic.code).into());
        object.insert("message".into(), diagnostic.message.clone().into());
        object.insert("help".into(), diagnostic.help.clone().into());
        object.insert("related".into(), secondary.into());
    }
    primary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let src = "ab\nçd\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 3), (2, 1));
        // 'ç' is two bytes: byte 5 is after it, the second character of line 2.
        assert_eq!(line_column(src, 5), (2, 2));
        // An offset inside a character is rounded down, past the end is clamped.
        assert_eq!(line_column(src, 4), (2, 1));
        assert_eq!(line_column(src, 99), (3, 1));
    }
}
