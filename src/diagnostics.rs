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
    source: Shown,
}

/// The source text miette is given: the whole file, or — when the file has a line too long to
/// draw — an [`Excerpt`] of it.
enum Shown {
    Whole(miette::NamedSource<String>),
    Excerpt(Excerpt),
}

impl Shown {
    fn len(&self) -> usize {
        match self {
            Shown::Whole(source) => source.inner().len(),
            Shown::Excerpt(excerpt) => excerpt.text.len(),
        }
    }

    /// A span of the model source as a span of the text shown.
    fn span(&self, span: Span) -> miette::SourceSpan {
        let len = self.len();
        let (start, end) = match self {
            Shown::Whole(_) => (span.start.min(len), span.end.min(len)),
            Shown::Excerpt(excerpt) => {
                let start = excerpt.to_shown(span.start);
                (start, excerpt.to_shown(span.end).max(start))
            }
        };
        miette::SourceSpan::new(start.into(), end - start)
    }
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
        Some(match &self.source {
            Shown::Whole(source) => source,
            Shown::Excerpt(excerpt) => excerpt,
        })
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let primary = std::iter::once(miette::LabeledSpan::new_primary_with_span(
            Some(self.diagnostic.primary.text.clone()),
            self.source.span(self.diagnostic.primary.span),
        ));
        let secondary = self
            .diagnostic
            .secondary
            .iter()
            .map(move |l| miette::LabeledSpan::new_with_span(Some(l.text.clone()), self.source.span(l.span)));
        Some(Box::new(primary.chain(secondary)))
    }
}

/// Lines longer than this (in characters) are not drawn whole: miette lays out a label by its
/// column, and cannot past 65,535, and a reader cannot use a line of thousands of characters anyway.
const LONG_LINE: usize = 1000;
/// How much of a long line is drawn: characters before the first label on it, and in all.
const WINDOW_BEFORE: usize = 40;
const WINDOW: usize = 120;

/// The model source with every long line cut down to a window around the labels on it, marked
/// with `…` where text is left out. It has the same lines as the source, so line numbers hold;
/// the column in the header is the source's, in characters as in the JSON output.
struct Excerpt {
    name: String,
    text: String,
    /// The parts of `text` copied from the source, in order.
    pieces: Vec<Piece>,
    /// For each line of `text`: its start in `text` and the column (from 0, in characters) of
    /// its first shown character in the source line.
    lines: Vec<(usize, usize)>,
}

#[derive(Clone, Copy)]
struct Piece {
    shown: usize,
    source: usize,
    len: usize,
}

impl Excerpt {
    /// `None` when no line is long: the source is then shown whole.
    fn new(name: &str, source: &str, diagnostic: &Diagnostic) -> Option<Excerpt> {
        if !source.split('\n').any(|line| line.len() > LONG_LINE && line.chars().count() > LONG_LINE) {
            return None;
        }
        let marks: Vec<usize> = std::iter::once(&diagnostic.primary)
            .chain(&diagnostic.secondary)
            .flat_map(|label| [label.span.start, label.span.end])
            .collect();
        let mut excerpt =
            Excerpt { name: name.to_string(), text: String::new(), pieces: Vec::new(), lines: Vec::new() };
        let mut line_start = 0;
        for line in source.split_inclusive('\n') {
            let content = line.trim_end_matches(['\n', '\r']);
            let line_end = line_start + content.len();
            excerpt.lines.push((excerpt.text.len(), 0));
            if content.len() <= LONG_LINE || content.chars().count() <= LONG_LINE {
                excerpt.copy(source, line_start, line.len());
            } else {
                // The first label on the line anchors the window; the primary label first.
                let anchor =
                    marks.iter().copied().find(|&m| (line_start..=line_end).contains(&m)).unwrap_or(line_start);
                let before = content.get(..anchor - line_start).unwrap_or("");
                let skipped = before.chars().count().saturating_sub(WINDOW_BEFORE);
                let from = line_start + before.char_indices().nth(skipped).map_or(0, |(i, _)| i);
                let rest = content.get(from - line_start..).unwrap_or("");
                let to = from + rest.char_indices().nth(WINDOW).map_or(rest.len(), |(i, _)| i);
                if let Some(last) = excerpt.lines.last_mut() {
                    last.1 = skipped;
                }
                if from > line_start {
                    excerpt.text.push('…');
                    if let Some(last) = excerpt.lines.last_mut() {
                        last.1 = skipped.saturating_sub(1);
                    }
                }
                excerpt.copy(source, from, to - from);
                if to < line_end {
                    excerpt.text.push('…');
                }
                excerpt.copy(source, line_end, line.len() - content.len());
            }
            line_start += line.len();
        }
        if source.ends_with('\n') {
            // The empty last line, where an error at the end of the file points.
            excerpt.lines.push((excerpt.text.len(), 0));
        }
        Some(excerpt)
    }

    fn copy(&mut self, source: &str, from: usize, len: usize) {
        if let Some(text) = source.get(from..from + len) {
            self.pieces.push(Piece { shown: self.text.len(), source: from, len });
            self.text.push_str(text);
        }
    }

    /// Where a source offset is drawn: in its piece, or at the end of the piece before it when
    /// it was left out.
    fn to_shown(&self, offset: usize) -> usize {
        let after = self.pieces.partition_point(|p| p.source <= offset);
        match after.checked_sub(1).and_then(|k| self.pieces.get(k)) {
            Some(p) => p.shown + (offset - p.source).min(p.len),
            None => 0,
        }
    }

    /// The source column (from 0, in characters) of a point of the text shown.
    fn column(&self, shown: usize) -> usize {
        let line = self.lines.partition_point(|&(start, _)| start <= shown).saturating_sub(1);
        let (start, first_column) = self.lines.get(line).copied().unwrap_or((0, 0));
        let drawn = self.text.get(start..shown).map_or(0, |s| s.chars().count());
        first_column + drawn
    }
}

impl miette::SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let contents = self.text.read_span(span, context_lines_before, context_lines_after)?;
        // miette reads a label alone for the `[file:line:column]` header: give the source's column.
        let column = if context_lines_before == 0 && context_lines_after == 0 {
            self.column(span.offset())
        } else {
            contents.column()
        };
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            contents.data(),
            *contents.span(),
            contents.line(),
            column,
            contents.line_count(),
        )))
    }
}

/// Renders diagnostics as a user sees them in a terminal. `color` off gives plain text, the form
/// used in golden tests.
pub fn render(diagnostics: &[Diagnostic], file_name: &str, source: &str, color: bool) -> String {
    let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let source = match Excerpt::new(file_name, source, diagnostic) {
            Some(excerpt) => Shown::Excerpt(excerpt),
            None => Shown::Whole(miette::NamedSource::new(file_name, source.to_string())),
        };
        let report = Report { diagnostic, source };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
    }
    out
}

/// `text` followed by spaces up to `width` characters, for reports that lay names out in
/// columns. Unlike `{:<width$}`, which panics on a width above 65,535, it takes any width.
pub fn pad(text: &str, width: usize) -> String {
    let fill = width.saturating_sub(text.chars().count());
    let mut out = String::with_capacity(text.len() + fill);
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', fill));
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

    #[test]
    fn pad_fills_to_the_width_in_characters_and_takes_any_width() {
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(pad("çd", 3), "çd ");
        assert_eq!(pad("abc", 2), "abc");
        let long = "x".repeat(70_000);
        assert_eq!(pad("", 70_000), " ".repeat(70_000));
        assert_eq!(pad(&long, 70_001).len(), 70_001);
    }
}
