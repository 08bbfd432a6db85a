//! The language reference stays true: every example model in `docs/language.md` is checked, and
//! every diagnostic the document shows must be exactly what `hmdpc check model.hmdp` prints today.
//!
//! - An `hmdp` block followed, with only blank lines between, by a `text` block that starts with
//!   `hmdp::` is an *error example* (it need not start with `model`, since that too is an error):
//!   each diagnostic in the text block must appear, whole and exactly, in the checker's rendering.
//!   The document may show only some of them.
//! - Any other `hmdp` block that starts with `model` is a *clean example*: it must check without
//!   errors or warnings. Fragments (blocks that do not start with `model`) are not checked.
//! - A `text` block starting with `hmdp::` that follows no example must say why with
//!   `<!-- unchecked: REASON -->`.
//!
//! Examples are annotated with HTML comments on the lines right before their opening fence:
//!
//! - `<!-- files: NAME = "text"; NAME2 = "..." -->`: data files beside the model (Rust string
//!   escapes, such as `\n`);
//! - `<!-- args: --set NAME=VALUE ... -->`: the options `hmdpc check` is run with;
//! - `<!-- bytes: "..." -->` on a block that shows how the model file is made: the file's raw bytes
//!   (Rust byte-string escapes, such as `\xe9`), for a model that cannot be shown as text; the
//!   output block follows it as it would follow an `hmdp` block;
//! - `<!-- fragment -->`: an `hmdp` block that starts with `model` but is not a whole model;
//! - `<!-- unchecked: REASON -->` on an output block that cannot be reproduced here.
//!
//! `UPDATE_DOCS=1 cargo test --test docs` rewrites every output block that no longer matches from
//! what the checker prints now (the diagnostics of the codes the block showed, in rendered order),
//! so that `git diff docs/` is the review.

use hmdp::check::{self, DataFiles, Options};
use hmdp::diagnostics::{self, Diagnostic};

const DOC: &str = "docs/language.md";

/// The smallest number of examples the document has; fewer means the parser lost track.
const MIN_CHECKED: usize = 80;

#[test]
fn language_reference_examples_are_true() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let text = std::fs::read_to_string(&path).expect("the language reference is readable");
    let update = std::env::var_os("UPDATE_DOCS").is_some_and(|v| v != "0" && !v.is_empty());

    let doc = match Document::parse(&text) {
        Ok(doc) => doc,
        Err(problems) => panic!("{DOC} cannot be read as annotated examples:\n{}", problems.join("\n")),
    };
    let mut outcome = Outcome::default();
    for (k, block) in doc.blocks.iter().enumerate() {
        check_block(&doc, k, block, &mut outcome);
    }

    let rewritten = outcome.rewrites.len();
    if update && rewritten > 0 {
        let mut lines: Vec<String> = doc.lines.clone();
        // From the bottom up, so earlier line numbers stay valid.
        outcome.rewrites.sort_by_key(|r| std::cmp::Reverse(r.first));
        for r in &outcome.rewrites {
            lines.splice(r.first..r.end, r.lines.iter().cloned());
        }
        let mut out = lines.join("\n");
        if text.ends_with('\n') {
            out.push('\n');
        }
        std::fs::write(&path, out).expect("the language reference is writable");
        eprintln!("{DOC}: rewrote {rewritten} output block(s); review them with `git diff docs/`");
    }

    eprintln!(
        "{DOC}: {} error examples, {} clean examples, {} unchecked outputs",
        outcome.error_examples, outcome.clean_examples, outcome.unchecked
    );
    let mut problems = outcome.problems;
    if !update {
        problems.extend(outcome.rewrites.iter().map(|r| r.problem.clone()));
    }
    // Every problem starts with `docs/language.md:LINE:`; report them in the document's order.
    problems.sort_by_key(|p| {
        p.strip_prefix(DOC).and_then(|rest| rest.split(':').nth(1)).and_then(|n| n.parse::<usize>().ok())
    });
    assert!(
        problems.is_empty(),
        "{} problem(s) in {DOC}{}:\n\n{}",
        problems.len(),
        if update { "" } else { " (run `UPDATE_DOCS=1 cargo test --test docs` to rewrite stale outputs)" },
        problems.join("\n\n")
    );
    let checked = outcome.error_examples + outcome.clean_examples;
    assert!(checked >= MIN_CHECKED, "only {checked} examples were checked in {DOC}; has its layout changed?");
}

#[derive(Default)]
struct Outcome {
    error_examples: usize,
    clean_examples: usize,
    unchecked: usize,
    /// Problems that rewriting an output block cannot fix.
    problems: Vec<String>,
    rewrites: Vec<Rewrite>,
}

/// A stale output block and what it should say.
struct Rewrite {
    /// The body's lines, `first..end` (0-based), without the fences.
    first: usize,
    end: usize,
    lines: Vec<String>,
    problem: String,
}

fn check_block(doc: &Document, k: usize, block: &Block, outcome: &mut Outcome) {
    let at = format!("{DOC}:{}", block.fence + 1);
    let output = doc.output_after(k);
    let is_output = block.lang == "text" && block.first_line().starts_with("hmdp::");

    if let Some(reason) = &block.notes.unchecked {
        if !is_output || doc.example_before(k) {
            outcome
                .problems
                .push(format!("{at}: `unchecked` ({reason}) belongs on an output block that follows no example"));
        }
        outcome.unchecked += 1;
        return;
    }
    if is_output && !doc.example_before(k) {
        outcome.problems.push(format!(
            "{at}: this output follows no example model; put the model right above it, or say why not with \
             `<!-- unchecked: REASON -->`"
        ));
        return;
    }

    let source = match (&block.notes.bytes, block.lang.as_str()) {
        (Some(bytes), _) => bytes.clone(),
        // As saved by an editor: every line ends with a line break.
        (None, "hmdp") if !block.notes.fragment && (block.starts_with_model() || output.is_some()) => {
            block.body.iter().flat_map(|l| [l.as_bytes(), b"\n"]).flatten().copied().collect()
        }
        _ => {
            if block.notes.has_inputs() {
                outcome.problems.push(format!("{at}: `files` or `args` on a block that is not an example model"));
            }
            return;
        }
    };
    let (rendered, source_text) = run_check(source, &block.notes);

    match output {
        Some(out) => {
            outcome.error_examples += 1;
            let shown = split_diagnostics(&out.body);
            if shown.is_empty() || shown.iter().any(|d| d.code.is_empty()) {
                outcome.problems.push(format!(
                    "{DOC}:{}: an output block must be whole rendered diagnostics, each starting with `hmdp::CODE`",
                    out.fence + 1
                ));
                return;
            }
            if shown.iter().all(|s| rendered.iter().any(|r| r.text == s.text)) {
                return;
            }
            let codes: Vec<&str> = shown.iter().map(|s| s.code.as_str()).collect();
            let kept: Vec<&Shown> = rendered.iter().filter(|r| codes.contains(&r.code.as_str())).collect();
            let expected = out.body.join("\n");
            let actual = kept.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n\n");
            let everything = rendered.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n\n");
            let heading = format!(
                "{DOC}:{}: the output of the example at line {} has changed (- document, + checker):",
                out.fence + 1,
                block.fence + 1
            );
            if kept.is_empty() {
                outcome.problems.push(format!(
                    "{heading}\n{}\nthe checker no longer reports {codes:?} here; it prints:\n{}",
                    diff(&expected, &actual),
                    indent(if everything.is_empty() { "(nothing)" } else { &everything })
                ));
                return;
            }
            outcome.rewrites.push(Rewrite {
                first: out.fence + 1,
                end: out.fence + 1 + out.body.len(),
                lines: actual.lines().map(str::to_string).collect(),
                problem: format!("{heading}\n{}", diff(&expected, &actual)),
            });
        }
        None => {
            outcome.clean_examples += 1;
            if !rendered.is_empty() {
                let all = rendered.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n\n");
                outcome.problems.push(format!(
                    "{at}: this example should check clean (or be followed by the output it gives), but:\n{}\nsource:\n{}",
                    indent(&all),
                    indent(&source_text)
                ));
            }
        }
    }
}

/// Runs the front end as `hmdpc check model.hmdp` does, with the example's data files and
/// options; returns each diagnostic rendered on its own, and the source as decoded.
fn run_check(bytes: Vec<u8>, notes: &Notes) -> (Vec<Shown>, String) {
    let (source, encoding) = hmdp::syntax::decode(bytes);
    let diagnostics: Vec<Diagnostic> = match encoding {
        Some(d) => vec![d],
        None => {
            let options = Options { overrides: notes.overrides.clone() };
            check::check_source(&source, &Memory(&notes.files), &options).diagnostics
        }
    };
    let shown = diagnostics
        .iter()
        .map(|d| {
            let text = normalise(&diagnostics::render(std::slice::from_ref(d), "model.hmdp", &source, false));
            Shown { code: d.code.to_string(), text }
        })
        .collect();
    (shown, source)
}

/// Data files from an example's `files` annotation; a missing file is reported as the command
/// line reports it for a model in the current folder.
struct Memory<'a>(&'a [(String, String)]);

impl DataFiles for Memory<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0.iter().find(|(name, _)| name == path).map(|(_, text)| text.clone()).ok_or(format!("no file at {path}"))
    }
}

/// One rendered diagnostic: its code and its text, with trailing spaces and blank lines removed.
struct Shown {
    code: String,
    text: String,
}

fn normalise(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').to_string()
}

/// Splits an output block into diagnostics at their `hmdp::CODE` header lines.
fn split_diagnostics(body: &[String]) -> Vec<Shown> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    for line in body {
        let header = line.trim_end().strip_prefix("hmdp::").filter(|c| is_code(c));
        match (header, out.last_mut()) {
            (Some(code), _) => out.push((code.to_string(), vec![line.as_str()])),
            (None, Some((_, lines))) => lines.push(line),
            (None, None) if line.trim().is_empty() => {}
            (None, None) => out.push((String::new(), vec![line.as_str()])),
        }
    }
    out.into_iter().map(|(code, lines)| Shown { code, text: normalise(&lines.join("\n")) }).collect()
}

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// A line diff (longest common subsequence): ` ` kept, `-` only in `old`, `+` only in `new`.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("     {}", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("   - {}", a[i]));
            i += 1;
        } else {
            out.push(format!("   + {}", b[j]));
            j += 1;
        }
    }
    out.join("\n")
}

// ------------------------------------------------------------------ reading the document

/// The fenced blocks of the document, with their annotations.
struct Document {
    lines: Vec<String>,
    blocks: Vec<Block>,
}

struct Block {
    lang: String,
    /// The line of the opening fence (0-based); the body follows it.
    fence: usize,
    body: Vec<String>,
    notes: Notes,
}

impl Block {
    fn first_line(&self) -> &str {
        self.body.iter().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or("")
    }

    /// Whether the block, after blank and comment lines, starts with `model`.
    fn starts_with_model(&self) -> bool {
        self.body
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !l.starts_with("//"))
            .is_some_and(|l| l == "model" || l.starts_with("model "))
    }

    fn end(&self) -> usize {
        self.fence + self.body.len() + 1
    }
}

#[derive(Default)]
struct Notes {
    files: Vec<(String, String)>,
    overrides: Vec<(String, f64)>,
    bytes: Option<Vec<u8>>,
    fragment: bool,
    unchecked: Option<String>,
}

impl Notes {
    fn has_inputs(&self) -> bool {
        !self.files.is_empty() || !self.overrides.is_empty()
    }
}

impl Document {
    fn parse(text: &str) -> Result<Document, Vec<String>> {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut blocks = Vec::new();
        let mut problems = Vec::new();
        let mut n = 0;
        while n < lines.len() {
            let Some(lang) = lines[n].strip_prefix("```") else {
                n += 1;
                continue;
            };
            let fence = n;
            let close = (n + 1..lines.len()).find(|&m| lines[m].trim_end() == "```");
            let Some(close) = close else {
                problems.push(format!("{DOC}:{}: the block is never closed", fence + 1));
                break;
            };
            // The annotations are the comment lines right above the fence.
            let mut notes = Notes::default();
            let mut above = fence;
            while above > 0 && lines[above - 1].trim_start().starts_with("<!--") {
                above -= 1;
            }
            for (m, line) in lines.iter().enumerate().take(fence).skip(above) {
                if let Err(e) = annotate(&mut notes, line) {
                    problems.push(format!("{DOC}:{}: {e}", m + 1));
                }
            }
            blocks.push(Block { lang: lang.trim().to_string(), fence, body: lines[fence + 1..close].to_vec(), notes });
            n = close + 1;
        }
        if problems.is_empty() { Ok(Document { lines, blocks }) } else { Err(problems) }
    }

    /// Whether only blank lines separate block `k` from the one before it.
    fn adjacent(&self, k: usize) -> bool {
        k > 0 && self.lines[self.blocks[k - 1].end() + 1..self.blocks[k].fence].iter().all(|l| l.trim().is_empty())
    }

    /// The output block right after block `k`, when there is one.
    fn output_after(&self, k: usize) -> Option<&Block> {
        let next = self.blocks.get(k + 1)?;
        (self.adjacent(k + 1) && next.lang == "text" && next.first_line().starts_with("hmdp::")).then_some(next)
    }

    /// Whether block `k` directly follows an example: an `hmdp` block or a `bytes` block.
    fn example_before(&self, k: usize) -> bool {
        self.adjacent(k) && {
            let before = &self.blocks[k - 1];
            before.notes.bytes.is_some() || (before.lang == "hmdp" && !before.notes.fragment)
        }
    }
}

/// Reads one `<!-- key: value -->` line into `notes`.
fn annotate(notes: &mut Notes, line: &str) -> Result<(), String> {
    let inner = line
        .trim()
        .strip_prefix("<!--")
        .and_then(|l| l.strip_suffix("-->"))
        .ok_or("an annotation is one line, `<!-- key: value -->`")?
        .trim();
    let (key, value) = inner.split_once(':').map_or((inner, ""), |(k, v)| (k.trim(), v.trim()));
    match key {
        "files" => {
            let mut rest = value;
            while !rest.trim().is_empty() {
                let (name, after) = rest.split_once('=').ok_or("expected `NAME = \"text\"` in `files`")?;
                let (bytes, after) = string_literal(after)?;
                let text = String::from_utf8(bytes).map_err(|_| "a data file must be UTF-8 text")?;
                notes.files.push((name.trim().to_string(), text));
                let after = after.trim_start();
                rest = after.strip_prefix(';').unwrap_or(after);
                if !after.is_empty() && !after.starts_with(';') {
                    return Err(format!("expected `;` between files, found `{after}`"));
                }
            }
        }
        "args" => {
            let mut words = value.split_whitespace();
            while let Some(word) = words.next() {
                let setting = match word.strip_prefix("--set=") {
                    Some(s) => s,
                    None if word == "--set" => words.next().ok_or("`--set` needs NAME=VALUE")?,
                    None => return Err(format!("unsupported option `{word}` in `args`")),
                };
                let (name, value) = setting.split_once('=').ok_or(format!("expected NAME=VALUE, found `{setting}`"))?;
                let value: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
                notes.overrides.push((name.to_string(), value));
            }
        }
        "bytes" => {
            let (bytes, rest) = string_literal(value)?;
            if !rest.trim().is_empty() {
                return Err(format!("unexpected `{rest}` after the bytes"));
            }
            notes.bytes = Some(bytes);
        }
        "fragment" => notes.fragment = true,
        "unchecked" if !value.is_empty() => notes.unchecked = Some(value.to_string()),
        "unchecked" => return Err("say why an output is unchecked: `<!-- unchecked: REASON -->`".into()),
        other => return Err(format!("unknown annotation `{other}`")),
    }
    Ok(())
}

/// A double-quoted literal with Rust byte-string escapes (`\n`, `\t`, `\r`, `\0`, `\\`, `\"`,
/// `\xNN`) and `\u{...}`; returns its bytes and the text after it.
fn string_literal(text: &str) -> Result<(Vec<u8>, &str), String> {
    let body = text.trim_start().strip_prefix('"').ok_or("expected a string in double quotes")?;
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[at + 1..])),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('r') => out.push(b'\r'),
                Some('0') => out.push(0),
                Some('\\') => out.push(b'\\'),
                Some('"') => out.push(b'"'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).map(|(_, h)| h).collect();
                    out.push(u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape `\\x{hex}`"))?);
                }
                Some('u') => {
                    let code: String = chars.by_ref().map(|(_, h)| h).take_while(|&h| h != '}').collect();
                    let c = code
                        .strip_prefix('{')
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .ok_or(format!("bad escape `\\u{code}}}`"))?;
                    out.extend(c.to_string().as_bytes());
                }
                other => return Err(format!("unknown escape `\\{}`", other.unwrap_or(' '))),
            },
            c => out.extend(c.to_string().as_bytes()),
        }
    }
    Err("the string is not closed".into())
}

/// The rows of the first table under `heading`: each row's cells, without the header.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let section = text.split_once(heading).map_or("", |(_, rest)| rest);
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| row.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect())
        .collect()
}

/// The names called in a cell: `exp(x)`, `log(x)` gives `exp` and `log`.
fn called(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.split_once('('))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The language reference lists exactly the built-in functions and distributions of the table
/// every stage reads (`src/builtins.rs`), with the type of their results; the distributions in
/// the table's order.
#[test]
fn the_reference_lists_the_built_ins_of_the_table() {
    use hmdp::builtins::{DISTRIBUTIONS, FUNCTIONS, Returns};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let text = std::fs::read_to_string(&path).expect("the language reference is readable");

    let mut documented = Vec::new();
    for row in table_after(&text, "### 4.7 Functions") {
        let result = row.last().cloned().unwrap_or_default();
        for name in called(row.first().map_or("", String::as_str)) {
            let function = FUNCTIONS.iter().find(|f| f.name == name);
            let returns = match result.as_str() {
                "real" => Some(Returns::Real),
                "int" => Some(Returns::Int),
                r if r.starts_with("int if") => Some(Returns::IntIfAllInt),
                _ => None,
            };
            assert_eq!(
                function.map(|f| f.returns),
                returns,
                "{DOC} lists `{name}` with result `{result}`, but the table of built-ins says {:?}",
                function.map(|f| f.returns)
            );
            documented.push(name);
        }
    }
    let mut table: Vec<String> = FUNCTIONS.iter().map(|f| f.name.to_string()).collect();
    documented.sort();
    table.sort();
    assert_eq!(documented, table, "{DOC} section 4.7 must list the functions of src/builtins.rs");

    documented.clear();
    for row in table_after(&text, "## 5. Distributions") {
        let name = called(row.first().map_or("", String::as_str)).into_iter().next().unwrap_or_default();
        if name != "truncated" {
            let integer = DISTRIBUTIONS.iter().find(|d| d.name == name).map(|d| d.integer);
            let result = row.get(2).map_or("", String::as_str);
            assert_eq!(integer, Some(result == "int"), "{DOC} lists `{name}` with result `{result}`");
        }
        documented.push(name);
    }
    table = DISTRIBUTIONS.iter().map(|d| d.name.to_string()).chain(["truncated".to_string()]).collect();
    assert_eq!(documented, table, "{DOC} section 5 must list the distributions of src/builtins.rs, in its order");
}
