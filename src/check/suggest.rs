//! "Did you mean ...?": the closest known name to a misspelt one.

/// Levenshtein distance between two short strings, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let delete = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// The candidate closest to `name`, if it is close enough to be a plausible typo: two edits for
/// names of three to eight characters, a third of the length for longer ones, one for shorter
/// ones; or the same name in another case.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = name.chars().count();
    let limit = if length >= 3 { (length / 3).max(2) } else { 1 };
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(name) { 0 } else { distance(name, c) };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// " did you mean `x`?" or nothing, ready to append to a message.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_close_names_and_ignores_far_ones() {
        let names = ["onhand", "pipe", "demand", "h"];
        assert_eq!(closest("onhnad", names), Some("onhand"));
        assert_eq!(closest("pipes", names), Some("pipe"));
        assert_eq!(closest("OnHand", names), Some("onhand"));
        assert_eq!(closest("inventory", names), None);
        assert_eq!(closest("x", names), Some("h"));
        assert_eq!(closest("bye", ["skip", "buy"]), Some("buy"));
        assert_eq!(closest("ab", ["xy"]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
