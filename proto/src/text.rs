//! Small helpers every crate shares, written once: the clock in Unix
//! milliseconds (the unit of every stored timestamp), and outside input cut
//! down for messages (input may be hostile: an error must stay small).

/// Milliseconds since the Unix epoch; 0 for a clock before it.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The first `n` characters of `s` (all of it when shorter), with no mark
/// where it was cut: for quoting input inside a message that says more.
pub fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The first `n` characters of `s`, followed by `…` when it was longer.
pub fn cut_marked(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `s` on one line (runs of white space and control characters become one
/// space), at most `n` characters, `…` where it was cut: a server's message
/// or a file's line inside ours.
pub fn one_line(s: &str, n: usize) -> String {
    let flat = s
        .split(|c: char| c.is_whitespace() || hidden(c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    cut_marked(&flat, n)
}

/// `s` safe to print on a terminal: control characters (ESC, which starts
/// colour and cursor sequences, and the rest) and the Unicode bidirectional
/// overrides, which reorder what a reader sees, written as `\u{..}`
/// escapes. For messages that may quote outside text (a tar path, a tag).
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(hidden) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` would act on a terminal rather than show: a control
/// character, or a Unicode bidirectional override or isolate.
pub fn hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An error and its sources, `: `-joined, skipping a source whose text the
/// message already carries (some errors print their source inline, some
/// hide the useful part there: reqwest, rustls).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape_controls("plain ü"), "plain ü");
        assert_eq!(
            escape_controls("tag\u{1b}[31mred\u{7}\u{202e}x"),
            "tag\\u{1b}[31mred\\u{7}\\u{202e}x"
        );
    }

    #[test]
    fn cuts_on_characters_not_bytes() {
        assert_eq!(cut("héllo", 2), "hé");
        assert_eq!(cut("hi", 5), "hi");
        assert_eq!(cut_marked("héllo", 2), "hé…");
        assert_eq!(cut_marked("hi", 2), "hi");
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line(" a \n b\t\u{7}c ", 10), "a b c");
        assert_eq!(one_line(&"x".repeat(1000), 300).chars().count(), 301);
        assert_eq!(one_line("", 3), "");
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "connect: refused",
            Some(Box::new(E("refused", Some(Box::new(E("os error 111", None)))))),
        );
        assert_eq!(error_chain(&e), "connect: refused: os error 111");
    }

    #[test]
    fn the_clock_is_after_2024() {
        assert!(now_unix_ms() > 1_700_000_000_000);
    }
}
