//! Composer's `VersionParser::normalize` (composer/semver), without a regex
//! engine: each of its patterns is matched by hand, trying alternatives in
//! the order PCRE's backtracking would.

/// Stability words of `$modifierRegex`, in the regex's alternation order.
const STABILITIES: [&str; 9] = ["stable", "beta", "b", "RC", "alpha", "a", "patch", "pl", "p"];

/// The normalised form of `version`, `None` where Composer throws
/// (`UnexpectedValueException`).
pub fn normalize(version: &str) -> Option<String> {
    let mut v = version.trim();
    if let Some(source) = strip_alias(v) {
        v = source;
    }
    if let Some((rest, flag)) = v.rsplit_once('@')
        && ["stable", "rc", "beta", "alpha", "dev"].contains(&flag.to_ascii_lowercase().as_str())
    {
        v = rest;
    }
    if matches!(v, "master" | "trunk" | "default") {
        return Some(format!("dev-{v}"));
    }
    if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("dev-")) {
        return Some(format!("dev-{}", &v[4..]));
    }
    if let Some((source, build)) = v.split_once('+')
        && !source.is_empty()
        && !source.bytes().any(|b| b == b',' || is_space(b))
        && !build.is_empty()
        && !build.bytes().any(is_space)
    {
        v = source;
    }
    let body = v.strip_prefix(['v', 'V']).unwrap_or(v);
    if let Some(n) = classical(body) {
        return Some(n);
    }
    if let Some(n) = dated(body) {
        return Some(n);
    }
    branch(v)
}

/// PCRE's `\s` without `/u`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// `^([^,\s]++) ++as ++([^,\s]++)$`: the source of `X as Y`.
fn strip_alias(v: &str) -> Option<&str> {
    let (source, rest) = v.split_once(' ')?;
    let rest = rest.trim_start_matches(' ');
    let alias = rest.strip_prefix("as ")?.trim_start_matches(' ');
    let plain = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == b',' || is_space(b));
    (plain(source) && plain(alias)).then_some(source)
}

fn digit_run(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// What `$modifierRegex` captured: stability word, its numbers, `dev`.
struct Modifier<'a> {
    stability: Option<&'a str>,
    numbers: &'a str,
    dev: bool,
}

/// `[._-]?(?:(stable|beta|b|RC|alpha|a|patch|pl|p)((?:[.-]?\d+)*+)?)?([.-]?dev)?$`,
/// case-insensitive, matching all of `r`.
fn modifier(r: &str) -> Option<Modifier<'_>> {
    let mut starts = vec![r];
    if let Some(after) = r.strip_prefix(['.', '_', '-']) {
        starts.insert(0, after);
    }
    for s in starts {
        for word in STABILITIES {
            let Some(head) = s.get(..word.len()) else { continue };
            if !head.eq_ignore_ascii_case(word) {
                continue;
            }
            let after = &s[word.len()..];
            let numbers_len = numbers(after);
            if let Some(dev) = dev_suffix(&after[numbers_len..]) {
                return Some(Modifier {
                    stability: Some(head),
                    numbers: &after[..numbers_len],
                    dev,
                });
            }
        }
        if let Some(dev) = dev_suffix(s) {
            return Some(Modifier {
                stability: None,
                numbers: "",
                dev,
            });
        }
    }
    None
}

/// `(?:[.-]?\d+)*+`: how many bytes it takes (possessive).
fn numbers(s: &str) -> usize {
    let mut at = 0;
    loop {
        let rest = &s[at..];
        let sep = usize::from(rest.starts_with(['.', '-']));
        let n = digit_run(&rest[sep..]);
        if n == 0 {
            return at;
        }
        at += sep + n;
    }
}

/// `([.-]?dev)?$`: `Some(true)` for a dev suffix, `Some(false)` for the end.
fn dev_suffix(s: &str) -> Option<bool> {
    if s.is_empty() {
        return Some(false);
    }
    let s = s.strip_prefix(['.', '-']).unwrap_or(s);
    s.eq_ignore_ascii_case("dev").then_some(true)
}

/// `expandStability`.
fn expand(stability: &str) -> String {
    match stability.to_ascii_lowercase().as_str() {
        "a" => "alpha".into(),
        "b" => "beta".into(),
        "p" | "pl" => "patch".into(),
        "rc" => "RC".into(),
        other => other.into(),
    }
}

/// The modifier appended to the numeric part, as `normalize` does.
fn with_modifier(mut version: String, m: &Modifier<'_>) -> String {
    if let Some(st) = m.stability {
        if st == "stable" {
            return version;
        }
        version.push('-');
        version.push_str(&expand(st));
        version.push_str(m.numbers.trim_start_matches(['.', '-']));
    }
    if m.dev {
        version.push_str("-dev");
    }
    version
}

/// `^v?(\d{1,5}+)(\.\d++)?(\.\d++)?(\.\d++)?$modifierRegex$`, `v` already
/// stripped: padded to four parts.
fn classical(body: &str) -> Option<String> {
    let major = digit_run(body);
    if !(1..=5).contains(&major) {
        return None;
    }
    let mut version = body[..major].to_owned();
    let mut at = major;
    let mut parts = 1;
    while parts < 4 {
        let rest = &body[at..];
        let Some(after) = rest.strip_prefix('.') else {
            break;
        };
        let n = digit_run(after);
        if n == 0 {
            break;
        }
        version.push_str(&rest[..n + 1]);
        at += n + 1;
        parts += 1;
    }
    let m = modifier(&body[at..])?;
    for _ in parts..4 {
        version.push_str(".0");
    }
    Some(with_modifier(version, &m))
}

/// `^v?(\d{4}(?:[.:-]?\d{2}){1,6}(?:[.:-]?\d{1,3}){0,2})$modifierRegex$`,
/// `v` already stripped: non-digits become `.`.
fn dated(body: &str) -> Option<String> {
    let b = body.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut ends = Vec::new();
    date_groups(b, 4, 0, &mut ends);
    for end in ends {
        if let Some(m) = modifier(&body[end..]) {
            let version: String = body[..end]
                .chars()
                .map(|c| if c.is_ascii_digit() { c } else { '.' })
                .collect();
            return Some(with_modifier(version, &m));
        }
    }
    None
}

/// Where an optional `[.:-]` then exactly `n` digits at `at` end.
fn sep_digits(b: &[u8], at: usize, n: usize) -> Option<usize> {
    let at = at + usize::from(matches!(b.get(at), Some(b'.' | b':' | b'-')));
    let digits = b.get(at..at + n)?;
    digits.iter().all(u8::is_ascii_digit).then_some(at + n)
}

/// End positions of the date group in backtracking order (greedy first):
/// `(?:[.:-]?\d{2}){1,6}` groups, then up to two `[.:-]?\d{1,3}`.
fn date_groups(b: &[u8], at: usize, count: usize, ends: &mut Vec<usize>) {
    if count < 6
        && let Some(next) = sep_digits(b, at, 2)
    {
        date_groups(b, next, count + 1, ends);
    }
    if count >= 1 {
        date_tail(b, at, 0, ends);
    }
}

fn date_tail(b: &[u8], at: usize, count: usize, ends: &mut Vec<usize>) {
    if count < 2 {
        for n in [3, 2, 1] {
            if let Some(next) = sep_digits(b, at, n) {
                date_tail(b, next, count + 1, ends);
            }
        }
    }
    ends.push(at);
}

/// `(.*?)[.-]?dev$` then `normalizeBranch`: only numeric branches
/// (`1.x-dev` → `1.9999999.9999999.9999999-dev`) are versions here.
fn branch(v: &str) -> Option<String> {
    let cut = v.len().checked_sub(3)?;
    if !v.get(cut..)?.eq_ignore_ascii_case("dev") {
        return None;
    }
    let name = v[..cut].strip_suffix(['.', '-']).unwrap_or(&v[..cut]).trim();
    let name = name.strip_prefix(['v', 'V']).unwrap_or(name);
    let major = digit_run(name);
    if major == 0 {
        return None;
    }
    let mut version = name[..major].to_owned();
    let mut rest = &name[major..];
    let mut parts = 1;
    while parts < 4 && !rest.is_empty() {
        let after = rest.strip_prefix('.')?;
        let n = digit_run(after);
        let take = if n > 0 {
            n
        } else if after.starts_with(['x', 'X', '*']) {
            1
        } else {
            return None;
        };
        version.push('.');
        version.push_str(&after[..take].replace(['X', '*'], "x"));
        rest = &after[take..];
        parts += 1;
    }
    if !rest.is_empty() {
        return None;
    }
    for _ in parts..4 {
        version.push_str(".x");
    }
    Some(format!("{}-dev", version.replace('x', "9999999")))
}
