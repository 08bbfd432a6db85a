//! Source text → [`ast::Model`], or a syntax diagnostic.
//!
//! pest does the parsing (`grammar/hmdp.pest`); this module turns pest's parse tree into the AST
//! and pest's errors into a diagnostic that names what was expected in the user's words
//! ("expected an expression or `)`"), never pest's rule names.
//!
//! Invariant: every AST this returns has expressions nested at most [`MAX_EXPR_DEPTH`] levels and
//! at most [`MAX_EXPR_HEIGHT`] operations high, names of at most [`MAX_NAME_LEN`] characters and integer
//! literals of at most 2^53, so the recursive passes after it cannot overflow the stack and no
//! later stage meets a name too long to lay out, whatever the input.

use std::collections::BTreeSet;

use pest::Parser;
use pest::iterators::Pair;

use super::ast::*;
use crate::diagnostics::{Diagnostic, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/hmdp.pest"]
struct HmdpParser;

/// Deeper expressions are rejected with a diagnostic. Hand-written models stay far below it.
/// Nesting is what a reader sees: each parenthesis, call, index, unary operator, power, branch
/// and reduction is a level, and a chain of operators of one precedence (`a + b - c + ...`) is
/// one level however long it is.
pub const MAX_EXPR_DEPTH: usize = 200;

/// The most operations on any path from an expression's root to a leaf, counting each operator
/// of a chain: a sum of 2,001 terms is allowed, and the passes that recurse over the tree stay
/// well inside a 2 MiB stack (the interpreter runs on rayon's threads; 4,000 was measured safe).
pub const MAX_EXPR_HEIGHT: usize = 2_000;

/// Longer names are rejected: no model needs them, and reports lay names out in columns.
pub const MAX_NAME_LEN: usize = 255;

/// The largest integer literal: integers above it are not all exact as `f64`, which is how
/// every number is computed.
const MAX_INTEGER: u64 = 1 << 53;

/// Parses a model. On a syntax error returns the one diagnostic that describes it: pest stops at
/// the first error, and anything reported after it would be a guess.
pub fn parse(source: &str) -> Result<Model, Vec<Diagnostic>> {
    pest::set_error_detail(true);
    let mut pairs = match HmdpParser::parse(Rule::file, source) {
        Ok(pairs) => pairs,
        Err(error) => return Err(vec![syntax_error(source, &error)]),
    };
    let mut builder = Builder { diagnostics: Vec::new() };
    if let Some(long) = pairs.clone().flatten().find(|p| p.as_rule() == Rule::ident && p.as_str().len() > MAX_NAME_LEN)
        && long.as_str().chars().count() > MAX_NAME_LEN
    {
        builder.diagnostics.push(name_too_long(&long));
    }
    let model = match pairs.next() {
        Some(file) => builder.file(file),
        None => None,
    };
    match model {
        Some(model) if builder.diagnostics.is_empty() => Ok(model),
        _ => {
            if builder.diagnostics.is_empty() {
                builder.diagnostics.push(Diagnostic::error(
                    "syntax",
                    "the file is not a model",
                    Span::new(0, 0),
                    "expected `model NAME` here",
                ));
            }
            Err(builder.diagnostics)
        }
    }
}

// ---------------------------------------------------------------- syntax errors

/// What a user would call the thing a rule stands for. `None` hides the rule from "expected"
/// lists (it is never what the user meant to type next).
fn friendly(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident => "a name",
        Rule::number | Rule::integer => "a number",
        Rule::string => "a quoted file name",
        Rule::expr
        | Rule::if_expr
        | Rule::match_expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::not_expr
        | Rule::cmp_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary
        | Rule::pow_expr
        | Rule::paren
        | Rule::bool_lit
        | Rule::reduction
        | Rule::reduce_op
        | Rule::call
        | Rule::access
        | Rule::neg_op
        | Rule::not_op
        | Rule::kw_if
        | Rule::kw_match
        | Rule::kw_not => "an expression",
        Rule::or_op | Rule::kw_or => "`or`",
        Rule::and_op | Rule::kw_and => "`and`",
        Rule::cmp_op => "a comparison",
        Rule::add_op | Rule::mul_op | Rule::pow_op => "an operator",
        Rule::range_op => "`..`",
        Rule::dims | Rule::index_list => "`[`",
        Rule::dim | Rule::binder => "an index such as `i in I`",
        Rule::type_ann => "`:`",
        Rule::scalar_type => "a type (`real`, `int` or `bool`)",
        Rule::value_def => "`=`",
        Rule::random_def => "`~`",
        Rule::file_def | Rule::kw_from => "`from`",
        Rule::choice_type | Rule::kw_choice => "`choice`",
        Rule::state_type => "`:`",
        Rule::real_type | Rule::kw_real => "`real`",
        Rule::kw_int => "`int`",
        Rule::kw_bool => "`bool`",
        Rule::label_list => "`{`",
        Rule::choice_set => "`[`",
        Rule::interval_bound | Rule::kw_in => "`in`",
        Rule::lower_bound => "`>=`",
        Rule::upper_bound => "`<=`",
        Rule::sum_bound | Rule::kw_sum => "`, sum <=`",
        Rule::when_clause | Rule::kw_when => "`when`",
        Rule::let_stmt | Rule::kw_let => "`let`",
        Rule::cost_stmt | Rule::kw_cost => "`cost`",
        Rule::update_stmt => "a state update such as `x'[i] = ...`",
        Rule::prime => "`'`",
        Rule::match_arm | Rule::pattern => "a label",
        Rule::wildcard => "`_`",
        Rule::report_per | Rule::kw_per => "`per`",
        Rule::kw_total => "`total`",
        Rule::model_decl | Rule::kw_model => "`model`",
        Rule::size_decl | Rule::kw_size => "`size`",
        Rule::set_decl | Rule::kw_set => "`set`",
        Rule::param_decl | Rule::kw_param => "`param`",
        Rule::state_decl | Rule::kw_state => "`state`",
        Rule::noise_decl | Rule::kw_noise => "`noise`",
        Rule::action_decl | Rule::kw_action => "`action`",
        Rule::step_block | Rule::kw_step => "`step`",
        Rule::observe_decl | Rule::kw_observe => "`observe`",
        Rule::terminal_block | Rule::kw_terminal => "`terminal`",
        Rule::horizon_decl | Rule::kw_horizon => "`horizon`",
        Rule::warmup_decl | Rule::kw_warmup => "`warmup`",
        Rule::discount_decl | Rule::kw_discount => "`discount`",
        Rule::report_decl | Rule::kw_report => "`report`",
        Rule::policy_decl | Rule::kw_policy => "`policy`",
        Rule::tune_stmt | Rule::kw_tune => "`tune`",
        Rule::assign_stmt => "an action's rule such as `q[i] = ...`",
        Rule::train_block | Rule::kw_train => "`train`",
        Rule::train_entry => "a training setting such as `gamma 0.99`",
        Rule::kw_then => "`then`",
        Rule::kw_else => "`else`",
        Rule::EOI => "end of file",
        _ => return None,
    })
}

fn syntax_error(source: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let offset = match error.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let found = found_at(source, offset);
    let span = Span::new(offset, offset + found.as_ref().map_or(0, |(_, len)| *len));
    let found_text = found.map_or("end of file".to_string(), |(text, _)| text);

    if let pest::error::ErrorVariant::CustomError { message } = &error.variant {
        let message = if message.contains("limit reached") {
            "the model is nested too deeply to parse".to_string()
        } else {
            message.clone()
        };
        return Diagnostic::error("syntax", message, span, "here");
    }

    let mut expected: BTreeSet<String> = BTreeSet::new();
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &error.variant {
        expected.extend(positives.iter().filter_map(|r| friendly(*r)).map(str::to_string));
    }
    if let Some(attempts) = error.parse_attempts() {
        // pest does not export its token type; its Display is the literal text for strings.
        for token in attempts.expected_tokens() {
            let text = token.to_string();
            let token = text.trim();
            let is_range = token.chars().count() == 4 && token.get(1..3) == Some("..");
            // Whitespace and comment openers are allowed everywhere; listing them is noise.
            if !token.is_empty() && !is_range && token != "BUILTIN_RULE" && token != "//" && token != "/*" {
                expected.insert(format!("`{token}`"));
            }
        }
    }
    // Right after a name, pest offers `_` as the name's next character; no one means that.
    if source
        .get(..offset)
        .and_then(|before| before.chars().last())
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        expected.remove("`_`");
    }
    summarise(&mut expected);
    let expected: Vec<String> = expected.into_iter().collect();
    let expected_text = join_alternatives(&expected);
    let (message, label) = if expected.is_empty() {
        (format!("unexpected {found_text}"), "not expected here".to_string())
    } else {
        (format!("expected {expected_text}, found {found_text}"), format!("expected {expected_text}"))
    };
    let mut diagnostic = Diagnostic::error("syntax", message, span, label);
    if let Some(help) = syntax_hint(source, offset, &expected) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// A hint for mistakes that are common enough to recognise.
fn syntax_hint(source: &str, offset: usize, expected: &[String]) -> Option<String> {
    let rest = source.get(offset..)?;
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if offset == 0 || source.get(..offset).is_some_and(|s| s.trim().is_empty()) {
        return Some("a model file starts with `model NAME`".into());
    }
    // pest may stop on the `*` of the opening `/*` itself, so look two bytes past the error.
    let upto = (offset + 2).min(source.len());
    if let Some(comment) = source.get(..upto).and_then(|before| before.rfind("/*"))
        && !source.get(comment..).is_some_and(|from| from.contains("*/"))
    {
        return Some("a `/*` comment is never closed with `*/`".into());
    }
    if rest.starts_with('"') && !rest.get(1..).is_some_and(|r| r.lines().next().is_some_and(|l| l.contains('"'))) {
        return Some("the string is not closed with `\"` on the same line".into());
    }
    if rest.starts_with("**") || (rest.starts_with('*') && source.get(..offset).is_some_and(|b| b.ends_with('*'))) {
        return Some("powers are written `x^2`".into());
    }
    if rest.starts_with("&&") || rest.starts_with("||") {
        return Some("logic is written `and`, `or`, `not`".into());
    }
    if rest.starts_with('!') && !rest.starts_with("!=") {
        return Some("negation is written `not`".into());
    }
    let line = source.get(..offset).map_or("", |before| before.rsplit('\n').next().unwrap_or(before));
    if line.trim_start().starts_with("state ") && line.trim_end().ends_with(':') {
        return Some(
            "a state holds a real number and takes no type (`state x = 0`), or holds a choice: `state last: choice { a, b } = a` or `state last: choice[M] = 0`"
                .into(),
        );
    }
    if rest.starts_with('=') && !rest.starts_with("==") {
        return Some("comparison is written `==`".into());
    }
    let keywords = [
        "model", "size", "set", "param", "state", "noise", "action", "step", "let", "cost", "observe", "horizon",
        "warmup", "discount", "report", "in", "when", "if", "then", "else", "match", "and", "or", "not", "choice",
        "real", "int", "bool", "from", "true", "false",
    ];
    let wants_name = expected.iter().any(|e| e == "a name") && !expected.iter().any(|e| e == "an expression");
    if wants_name && keywords.contains(&word.as_str()) {
        return Some(format!("`{word}` is a keyword and cannot be used as a name"));
    }
    None
}

/// The token at `offset`, for "found ..." in messages, and its length in bytes: a word, a number,
/// an operator, or one character.
fn found_at(source: &str, offset: usize) -> Option<(String, usize)> {
    let rest = source.get(offset..)?;
    let first = rest.chars().next()?;
    if first.is_ascii_alphanumeric() || first == '_' {
        let word: String =
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').take(40).collect();
        let len = word.len();
        return Some((format!("`{word}`"), len));
    }
    let two = rest.get(..2).unwrap_or("");
    if ["==", "!=", "<=", ">=", "=>", "..", "**", "&&", "||"].contains(&two) {
        return Some((format!("`{two}`"), 2));
    }
    let text = match first {
        '\n' | '\r' => "end of line".to_string(),
        c if c.is_control() => format!("the control character {}", c.escape_unicode()),
        c => format!("`{c}`"),
    };
    Some((text, first.len_utf8()))
}

/// Collapses the tokens pest lists into what a user thinks of: every binary operator is "an
/// operator", every way to start an expression is "an expression".
fn summarise(expected: &mut BTreeSet<String>) {
    const OPERATORS: &[&str] = &[
        "`!=`",
        "`%`",
        "`*`",
        "`+`",
        "`-`",
        "`/`",
        "`<=`",
        "`<`",
        "`==`",
        "`>=`",
        "`>`",
        "`^`",
        "`and`",
        "`or`",
        "a comparison",
        "an operator",
    ];
    const EXPRESSION_STARTS: &[&str] = &[
        "`false`", "`true`", "`max`", "`min`", "`sum`", "`prod`", "`if`", "`match`", "`not`", "`(`", "`-`", "a number",
        "a name", "`_`",
    ];
    if expected.contains("an expression") || (expected.contains("a number") && expected.contains("a name")) {
        expected.retain(|e| !EXPRESSION_STARTS.contains(&e.as_str()));
        expected.insert("an expression".into());
    }
    if expected.iter().any(|e| OPERATORS.contains(&e.as_str())) {
        expected.retain(|e| !OPERATORS.contains(&e.as_str()));
        expected.insert("an operator".into());
    }
    if expected.contains("a name") {
        expected.remove("`_`");
    }
}

fn join_alternatives(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

// ---------------------------------------------------------------- parse tree → AST

struct Builder {
    diagnostics: Vec<Diagnostic>,
}

/// A node's span without the whitespace and comments pest attaches after it (implicit
/// whitespace before an optional part that then does not match stays inside the pair).
fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    let mut text = pair.as_str();
    loop {
        let trimmed = text.trim_end();
        let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
        match trimmed.get(line_start..).and_then(|line| line.find("//")) {
            Some(comment) => text = trimmed.get(..line_start + comment).unwrap_or(trimmed),
            None => {
                text = trimmed;
                break;
            }
        }
    }
    Span::new(s.start(), s.start() + text.len())
}

fn name_too_long(pair: &Pair<'_, Rule>) -> Diagnostic {
    let name = pair.as_str();
    let start: String = name.chars().take(20).collect();
    Diagnostic::error(
        "name-too-long",
        format!("the name `{start}…` is {} characters long, more than {MAX_NAME_LEN}", name.chars().count()),
        span_of(pair),
        "this name",
    )
    .with_help(format!("names are at most {MAX_NAME_LEN} characters: shorten it"))
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: span_of(&pair) }
}

/// `choice { a, b }` or `choice[M]`, for an action or a state.
fn choice_type(pair: Pair<'_, Rule>) -> Option<ChoiceType> {
    let body = pair.into_inner().find(|p| matches!(p.as_rule(), Rule::label_list | Rule::choice_set))?;
    match body.as_rule() {
        Rule::label_list => Some(ChoiceType::Labels(body.into_inner().map(ident).collect())),
        _ => Some(ChoiceType::OverSet(ident(body.into_inner().next()?))),
    }
}

/// An expression with its nesting depth ([`MAX_EXPR_DEPTH`]) and the height of its tree
/// ([`MAX_EXPR_HEIGHT`]), so that both are checked without recursing.
struct Built {
    expr: Expr,
    depth: usize,
    height: usize,
}

/// The deepest nesting and the greatest height among an expression's children.
#[derive(Clone, Copy, Default)]
struct Levels {
    depth: usize,
    height: usize,
}

impl Levels {
    fn of(built: &Built) -> Levels {
        Levels { depth: built.depth, height: built.height }
    }

    fn max(self, built: &Built) -> Levels {
        Levels { depth: self.depth.max(built.depth), height: self.height.max(built.height) }
    }
}

impl Builder {
    fn file(&mut self, pair: Pair<'_, Rule>) -> Option<Model> {
        let mut name = None;
        let mut items = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::model_decl => name = child.into_inner().find(|p| p.as_rule() == Rule::ident).map(ident),
                Rule::EOI => {}
                _ => {
                    if let Some(item) = self.item(child) {
                        items.push(item);
                    }
                }
            }
        }
        Some(Model { name: name?, items })
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule())).peekable();
        Some(match rule {
            Rule::size_decl => {
                let name = ident(inner.next()?);
                let value = self.expr(inner.next()?);
                Item::Size(SizeDecl { name, value, span })
            }
            Rule::set_decl => {
                let name = ident(inner.next()?);
                let lo = self.expr(inner.next()?);
                let _range = inner.next()?;
                let hi = self.expr(inner.next()?);
                Item::Set(SetDecl { name, lo, hi, span })
            }
            Rule::param_decl => {
                let name = ident(inner.next()?);
                let dims = self.optional_dims(&mut inner);
                let ty = match inner.peek().map(|p| p.as_rule()) {
                    Some(Rule::type_ann) => inner.next().and_then(scalar_type),
                    _ => None,
                };
                let def = self.definition(inner.next()?)?;
                Item::Param(ParamDecl { name, dims, ty, def, span })
            }
            Rule::state_decl => {
                let name = ident(inner.next()?);
                let dims = self.optional_dims(&mut inner);
                let choice = match inner.peek().map(|p| p.as_rule()) {
                    Some(Rule::state_type) => {
                        let ty = inner.next()?;
                        let at = span_of(&ty);
                        ty.into_inner().next().and_then(choice_type).map(|c| (c, at))
                    }
                    _ => None,
                };
                let def = self.definition(inner.next()?)?;
                Item::State(StateDecl { name, dims, choice, def, span })
            }
            Rule::noise_decl => {
                let name = ident(inner.next()?);
                let dims = self.optional_dims(&mut inner);
                let def = self.definition(inner.next()?)?;
                Item::Noise(NoiseDecl { name, dims, def, span })
            }
            Rule::action_decl => {
                let name = ident(inner.next()?);
                let dims = self.optional_dims(&mut inner);
                let kind = self.action_kind(inner.next()?)?;
                let when = inner.next().and_then(|w| w.into_inner().find(|p| p.as_rule() == Rule::expr));
                let when = when.map(|e| self.expr(e));
                Item::Action(ActionDecl { name, dims, kind, when, span })
            }
            Rule::step_block => {
                let statements = inner.filter_map(|s| self.statement(s)).collect();
                Item::Step(StepBlock { statements, span })
            }
            Rule::terminal_block => {
                let costs = inner.filter_map(|s| self.statement(s)).collect();
                Item::Terminal(TerminalBlock { costs, span })
            }
            Rule::policy_decl => {
                let name = ident(inner.next()?);
                let statements = inner.filter_map(|s| self.policy_statement(s)).collect();
                Item::Policy(PolicyDecl { name, statements, span })
            }
            Rule::observe_decl => Item::Observe(ObserveDecl { names: inner.map(ident).collect(), span }),
            Rule::horizon_decl => Item::Horizon(Setting { value: self.expr(inner.next()?), span }),
            Rule::warmup_decl => Item::Warmup(Setting { value: self.expr(inner.next()?), span }),
            Rule::discount_decl => Item::Discount(Setting { value: self.expr(inner.next()?), span }),
            Rule::report_decl => {
                let per = inner
                    .filter(|p| p.as_rule() == Rule::report_per)
                    .filter_map(|p| p.into_inner().find(|q| q.as_rule() == Rule::ident).map(ident))
                    .collect();
                Item::Report(ReportDecl { per, span })
            }
            Rule::train_block => {
                let entries = inner
                    .filter(|p| p.as_rule() == Rule::train_entry)
                    .filter_map(|entry| {
                        let span = span_of(&entry);
                        let mut parts = entry.into_inner();
                        let key = ident(parts.next()?);
                        let mut parts = parts.peekable();
                        let target = match parts.peek().map(|p| p.as_rule()) {
                            Some(Rule::train_target) => parts.next()?.into_inner().next().map(ident),
                            _ => None,
                        };
                        let values = parts.filter(|p| p.as_rule() == Rule::expr).map(|e| self.expr(e)).collect();
                        Some(TrainEntry { key, target, values, span })
                    })
                    .collect();
                Item::Train(TrainBlock { entries, span })
            }
            _ => return None,
        })
    }

    fn optional_dims<'i>(&mut self, inner: &mut std::iter::Peekable<impl Iterator<Item = Pair<'i, Rule>>>) -> Vec<Dim> {
        if inner.peek().map(|p| p.as_rule()) != Some(Rule::dims) {
            return Vec::new();
        }
        let Some(dims) = inner.next() else { return Vec::new() };
        dims.into_inner()
            .filter_map(|dim| {
                let span = span_of(&dim);
                let mut parts = dim.into_inner().filter(|p| p.as_rule() == Rule::ident);
                let first = ident(parts.next()?);
                let set = parts.next().map(ident);
                Some(Dim { first, set, span })
            })
            .collect()
    }

    fn definition(&mut self, pair: Pair<'_, Rule>) -> Option<Definition> {
        let rule = pair.as_rule();
        let inner = pair.into_inner().find(|p| matches!(p.as_rule(), Rule::expr | Rule::string))?;
        Some(match rule {
            Rule::value_def => Definition::Value(self.expr(inner)),
            Rule::random_def => Definition::Random(self.expr(inner)),
            Rule::file_def => {
                let span = span_of(&inner);
                let quoted = inner.as_str();
                let path = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or("").to_string();
                Definition::File { path, span }
            }
            _ => return None,
        })
    }

    fn action_kind(&mut self, pair: Pair<'_, Rule>) -> Option<ActionKind> {
        match pair.as_rule() {
            Rule::choice_type => match choice_type(pair)? {
                ChoiceType::Labels(labels) => Some(ActionKind::Labels(labels)),
                ChoiceType::OverSet(set) => Some(ActionKind::OverSet(set)),
            },
            Rule::real_type => {
                let mut lo = None;
                let mut hi = None;
                let mut sum = None;
                for bound in pair.into_inner().filter(|p| p.as_rule() != Rule::kw_real) {
                    let rule = bound.as_rule();
                    let mut exprs = bound.into_inner().filter(|p| p.as_rule() == Rule::expr);
                    match rule {
                        Rule::interval_bound => {
                            lo = exprs.next().map(|e| self.expr(e));
                            hi = exprs.next().map(|e| self.expr(e));
                        }
                        Rule::lower_bound => lo = exprs.next().map(|e| self.expr(e)),
                        Rule::upper_bound => hi = exprs.next().map(|e| self.expr(e)),
                        Rule::sum_bound => sum = exprs.next().map(|e| Box::new(self.expr(e))),
                        _ => {}
                    }
                }
                Some(ActionKind::Real { lo, hi, sum })
            }
            _ => None,
        }
    }

    fn policy_statement(&mut self, pair: Pair<'_, Rule>) -> Option<PolicyStatement> {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule())).peekable();
        Some(match rule {
            Rule::tune_stmt => {
                let name = ident(inner.next()?);
                let lo = self.expr(inner.next()?);
                let hi = self.expr(inner.next()?);
                let start = self.expr(inner.next()?);
                PolicyStatement::Tune { name, lo, hi, start, span }
            }
            Rule::let_stmt => {
                let name = ident(inner.next()?);
                let dims = self.optional_dims(&mut inner);
                let value = self.expr(inner.next()?);
                PolicyStatement::Let { name, dims, value, span }
            }
            Rule::assign_stmt => {
                let name = ident(inner.next()?);
                let indices = match inner.peek().map(|p| p.as_rule()) {
                    Some(Rule::index_list) => inner.next()?.into_inner().map(|e| self.expr(e)).collect(),
                    _ => Vec::new(),
                };
                let value = self.expr(inner.next()?);
                PolicyStatement::Assign { name, indices, value, span }
            }
            _ => return None,
        })
    }

    fn statement(&mut self, pair: Pair<'_, Rule>) -> Option<Statement> {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule())).peekable();
        Some(match rule {
            Rule::let_stmt => {
                let name = ident(inner.next()?);
                let dims = self.optional_dims(&mut inner);
                let value = self.expr(inner.next()?);
                Statement::Let { name, dims, value, span }
            }
            Rule::cost_stmt => {
                let name = ident(inner.next()?);
                let value = self.expr(inner.next()?);
                Statement::Cost { name, value, span }
            }
            Rule::update_stmt => {
                let name = ident(inner.next()?);
                let _prime = inner.next()?;
                let indices = match inner.peek().map(|p| p.as_rule()) {
                    Some(Rule::index_list) => inner.next()?.into_inner().map(|e| self.expr(e)).collect(),
                    _ => Vec::new(),
                };
                let value = self.expr(inner.next()?);
                Statement::Update { name, indices, value, span }
            }
            _ => return None,
        })
    }

    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        self.build(pair, 0).expr
    }

    fn too_deep(&mut self, span: Span) -> Built {
        if !self.diagnostics.iter().any(|d| d.code == "too-deep") {
            self.diagnostics.push(
                Diagnostic::error(
                    "too-deep",
                    format!("expression nested more than {MAX_EXPR_DEPTH} levels deep"),
                    span,
                    "this expression",
                )
                .with_help("split it into several `let` bindings"),
            );
        }
        leaf(ExprKind::Error, span)
    }

    fn too_long(&mut self, span: Span) -> Built {
        if !self.diagnostics.iter().any(|d| d.code == "too-deep") {
            self.diagnostics.push(
                Diagnostic::error(
                    "too-deep",
                    format!("expression with more than {MAX_EXPR_HEIGHT} operations in a chain"),
                    span,
                    "this expression",
                )
                .with_help("split it into several `let` bindings, each a part of the chain"),
            );
        }
        leaf(ExprKind::Error, span)
    }

    /// Gives up on a node that is nested or chained too far.
    fn bounded(&mut self, built: Built, span: Span) -> Built {
        if built.depth > MAX_EXPR_DEPTH {
            self.too_deep(span)
        } else if built.height > MAX_EXPR_HEIGHT {
            self.too_long(span)
        } else {
            built
        }
    }

    /// Builds any expression-level rule. `nesting` counts the Rust frames above, so that deep
    /// input stops here before it can exhaust the stack: one level of nesting, such as a
    /// parenthesis, goes through one frame for each precedence level of the grammar.
    fn build(&mut self, pair: Pair<'_, Rule>, nesting: usize) -> Built {
        let span = span_of(&pair);
        if nesting > FRAMES_PER_LEVEL * (MAX_EXPR_DEPTH + 1) {
            return self.too_deep(span);
        }
        let nesting = nesting + 1;
        let rule = pair.as_rule();
        let built = match rule {
            Rule::expr => match pair.into_inner().next() {
                Some(inner) => self.build(inner, nesting),
                None => self.error_node(span),
            },
            Rule::paren => {
                let inner = match pair.into_inner().next() {
                    Some(inner) => self.build(inner, nesting),
                    None => self.error_node(span),
                };
                let levels = Levels::of(&inner);
                node(ExprKind::Paren(Box::new(inner.expr)), span, levels)
            }
            Rule::if_expr => {
                let mut parts = pair.into_inner().filter(|p| p.as_rule() == Rule::expr);
                let mut next = |b: &mut Builder| match parts.next() {
                    Some(p) => b.build(p, nesting),
                    None => b.error_node(span),
                };
                let cond = next(self);
                let then = next(self);
                let otherwise = next(self);
                let levels = Levels::of(&cond).max(&then).max(&otherwise);
                node(
                    ExprKind::If {
                        cond: Box::new(cond.expr),
                        then: Box::new(then.expr),
                        otherwise: Box::new(otherwise.expr),
                    },
                    span,
                    levels,
                )
            }
            Rule::match_expr => {
                let mut parts = pair.into_inner().filter(|p| p.as_rule() != Rule::kw_match);
                let scrutinee = match parts.next() {
                    Some(p) => self.build(p, nesting),
                    None => self.error_node(span),
                };
                let mut levels = Levels::of(&scrutinee);
                let mut arms = Vec::new();
                for arm in parts {
                    let mut arm_parts = arm.into_inner();
                    let (Some(pattern), Some(value)) = (arm_parts.next(), arm_parts.next()) else { continue };
                    let value = self.build(value, nesting);
                    levels = levels.max(&value);
                    arms.push(MatchArm { pattern: self.pattern(pattern), value: value.expr });
                }
                node(ExprKind::Match { scrutinee: Box::new(scrutinee.expr), arms }, span, levels)
            }
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::add_expr | Rule::mul_expr => {
                self.left_fold(pair, nesting)
            }
            Rule::not_expr | Rule::unary => {
                let mut ops = Vec::new();
                let mut operand = None;
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::not_op => ops.push((UnaryOp::Not, span_of(&child))),
                        Rule::neg_op => ops.push((UnaryOp::Neg, span_of(&child))),
                        _ => operand = Some(self.build(child, nesting)),
                    }
                }
                let mut built = operand.unwrap_or_else(|| self.error_node(span));
                for (op, op_span) in ops.into_iter().rev() {
                    let span = op_span.to(built.expr.span);
                    let levels = Levels::of(&built);
                    built = node(ExprKind::Unary { op, operand: Box::new(built.expr) }, span, levels);
                    if built.depth > MAX_EXPR_DEPTH || built.height > MAX_EXPR_HEIGHT {
                        return self.bounded(built, span);
                    }
                }
                built
            }
            Rule::pow_expr => {
                let mut parts = pair.into_inner().filter(|p| p.as_rule() != Rule::pow_op);
                let base = match parts.next() {
                    Some(p) => self.build(p, nesting),
                    None => self.error_node(span),
                };
                match parts.next() {
                    Some(exponent) => {
                        let exponent = self.build(exponent, nesting);
                        let levels = Levels::of(&base).max(&exponent);
                        node(
                            ExprKind::Binary {
                                op: BinaryOp::Pow,
                                lhs: Box::new(base.expr),
                                rhs: Box::new(exponent.expr),
                            },
                            span,
                            levels,
                        )
                    }
                    None => base,
                }
            }
            Rule::number => {
                let text = pair.as_str();
                let is_int = !text.contains(['.', 'e', 'E']);
                // An integer is judged by its digits: as a float, 2^53 + 1 rounds to 2^53.
                let exact = !is_int || text.parse::<u64>().is_ok_and(|n| n <= MAX_INTEGER);
                match text.parse::<f64>() {
                    Ok(value) if value.is_finite() && exact => leaf(ExprKind::Number { value, is_int }, span),
                    _ => {
                        self.diagnostics.push(Diagnostic::error(
                            "number-too-large",
                            format!("the number `{text}` is too large"),
                            span,
                            "out of range",
                        ));
                        leaf(ExprKind::Error, span)
                    }
                }
            }
            Rule::bool_lit => leaf(ExprKind::Bool(pair.as_str() == "true"), span),
            Rule::access => {
                let mut name = None;
                let mut primed = false;
                let mut indices = Vec::new();
                let mut levels = Levels::default();
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::ident => name = Some(ident(child)),
                        Rule::prime => primed = true,
                        Rule::index_list => {
                            for index in child.into_inner() {
                                let built = self.build(index, nesting);
                                levels = levels.max(&built);
                                indices.push(built.expr);
                            }
                        }
                        _ => {}
                    }
                }
                match name {
                    Some(name) if indices.is_empty() => leaf(ExprKind::Access { name, primed, indices }, span),
                    Some(name) => node(ExprKind::Access { name, primed, indices }, span, levels),
                    None => self.error_node(span),
                }
            }
            Rule::call => {
                let mut parts = pair.into_inner();
                let Some(func) = parts.next().map(ident) else { return self.error_node(span) };
                let mut levels = Levels::default();
                let args = parts
                    .map(|arg| {
                        let built = self.build(arg, nesting);
                        levels = levels.max(&built);
                        built.expr
                    })
                    .collect();
                node(ExprKind::Call { func, args }, span, levels)
            }
            Rule::reduction => {
                let mut op = ReduceOp::Sum;
                let mut binders = Vec::new();
                let mut body = None;
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::reduce_op => {
                            op = match child.as_str() {
                                "prod" => ReduceOp::Prod,
                                "max" => ReduceOp::Max,
                                "min" => ReduceOp::Min,
                                _ => ReduceOp::Sum,
                            }
                        }
                        Rule::binder => {
                            let mut names = child.into_inner().filter(|p| p.as_rule() == Rule::ident);
                            if let (Some(var), Some(set)) = (names.next(), names.next()) {
                                binders.push(Binder { var: ident(var), set: ident(set) });
                            }
                        }
                        _ => body = Some(self.build(child, nesting)),
                    }
                }
                let body = body.unwrap_or_else(|| self.error_node(span));
                let levels = Levels::of(&body);
                node(ExprKind::Reduce { op, binders, body: Box::new(body.expr) }, span, levels)
            }
            _ => self.error_node(span),
        };
        self.bounded(built, span)
    }

    /// `a op b op c` → `((a op b) op c)`, built in a loop so long chains cost no stack. The
    /// chain is one level of nesting above its deepest operand, however long it is; each of its
    /// operators adds to the tree's height.
    fn left_fold(&mut self, pair: Pair<'_, Rule>, nesting: usize) -> Built {
        let span = span_of(&pair);
        let mut parts = pair.into_inner();
        let mut acc = match parts.next() {
            Some(first) => self.build(first, nesting),
            None => return self.error_node(span),
        };
        let mut operands = Levels::of(&acc);
        while let Some(op_pair) = parts.next() {
            let op = binary_op(op_pair.as_str());
            let rhs = match parts.next() {
                Some(p) => self.build(p, nesting),
                None => self.error_node(span),
            };
            let span = acc.expr.span.to(rhs.expr.span);
            operands = operands.max(&rhs);
            let built = Built {
                depth: operands.depth + 1,
                height: acc.height.max(rhs.height) + 1,
                expr: Expr { kind: ExprKind::Binary { op, lhs: Box::new(acc.expr), rhs: Box::new(rhs.expr) }, span },
            };
            if built.depth > MAX_EXPR_DEPTH || built.height > MAX_EXPR_HEIGHT {
                return self.bounded(built, span);
            }
            acc = built;
        }
        acc
    }

    fn pattern(&mut self, pair: Pair<'_, Rule>) -> Pattern {
        let span = span_of(&pair);
        match pair.into_inner().next() {
            Some(p) if p.as_rule() == Rule::ident => Pattern::Label(ident(p)),
            Some(p) if p.as_rule() == Rule::integer => match p.as_str().parse::<i64>() {
                Ok(n) if n.unsigned_abs() <= MAX_INTEGER => Pattern::Number(n, span),
                _ => {
                    self.diagnostics.push(Diagnostic::error(
                        "number-too-large",
                        format!("the number `{}` is too large", p.as_str()),
                        span,
                        "out of range",
                    ));
                    Pattern::Wildcard(span)
                }
            },
            _ => Pattern::Wildcard(span),
        }
    }

    fn error_node(&mut self, span: Span) -> Built {
        if !self.diagnostics.iter().any(|d| d.span_is(span)) {
            self.diagnostics.push(Diagnostic::error("syntax", "malformed expression", span, "here"));
        }
        leaf(ExprKind::Error, span)
    }
}

impl Diagnostic {
    fn span_is(&self, span: Span) -> bool {
        self.primary.span == span
    }
}

/// Frames of [`Builder::build`] per level of nesting: a parenthesis is reached through
/// `expr`, the six precedence levels, `unary`, `pow_expr` and `paren`.
const FRAMES_PER_LEVEL: usize = 10;

/// A leaf is one level deep, and its height (operations on the way down) is 0.
fn leaf(kind: ExprKind, span: Span) -> Built {
    Built { expr: Expr { kind, span }, depth: 1, height: 0 }
}

fn node(kind: ExprKind, span: Span, children: Levels) -> Built {
    Built { expr: Expr { kind, span }, depth: children.depth + 1, height: children.height + 1 }
}

fn binary_op(text: &str) -> BinaryOp {
    match text {
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        "%" => BinaryOp::Rem,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "and" => BinaryOp::And,
        _ => BinaryOp::Or,
    }
}

fn scalar_type(pair: Pair<'_, Rule>) -> Option<(ScalarType, Span)> {
    let span = span_of(&pair);
    let ty = pair.into_inner().next()?.into_inner().next()?;
    Some((
        match ty.as_rule() {
            Rule::kw_int => ScalarType::Int,
            Rule::kw_bool => ScalarType::Bool,
            _ => ScalarType::Real,
        },
        span,
    ))
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_model
            | Rule::kw_terminal
            | Rule::kw_size
            | Rule::kw_set
            | Rule::kw_param
            | Rule::kw_state
            | Rule::kw_noise
            | Rule::kw_action
            | Rule::kw_step
            | Rule::kw_let
            | Rule::kw_cost
            | Rule::kw_observe
            | Rule::kw_horizon
            | Rule::kw_warmup
            | Rule::kw_discount
            | Rule::kw_report
            | Rule::kw_in
            | Rule::kw_when
            | Rule::kw_from
            | Rule::kw_policy
            | Rule::kw_tune
            | Rule::kw_total
            | Rule::kw_per
    )
}
