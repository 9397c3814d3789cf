//! Maven version ordering: Maven's `ComparableVersion` (maven-artifact, as
//! of Maven 3.9 with MNG-7644: a qualifier after `.` reads as after `-`).
//!
//! Hand-written: no crate implements it. The version is lower-cased and
//! split into items: numbers, qualifiers, and a new sub-list at each `-`
//! and at each switch between digits and letters. Trailing "null" items
//! (`0`, `""`, `ga`, `final`, `release`, empty lists) are dropped, so
//! `1 = 1.0 = 1-ga = 1-final`. Known qualifiers order
//! `alpha < beta < milestone < rc = cr < snapshot < "" < sp`, unknown ones
//! after them (alphabetically); `a1`/`b1`/`m1` mean alpha/beta/milestone
//! when followed by a digit. A number beats a qualifier and a sub-list.
//!
//! Any non-empty string is a Maven version (Maven parses them all); empty
//! strings and control characters are errors.

use std::cmp::Ordering;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
enum Item {
    /// Digits without leading zeros (empty is 0).
    Int(Box<str>),
    /// A qualifier, already aliased (`cr` → `rc`, `ga` → ``).
    Str(Box<str>),
    List(Vec<Item>),
}

const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];
const RELEASE_INDEX: usize = 5;

/// Ordering key of a qualifier: its rank, and for unknown ones the text.
fn qualifier_key(q: &str) -> (usize, &str) {
    match QUALIFIERS.iter().position(|k| *k == q) {
        Some(i) => (i, ""),
        None => (QUALIFIERS.len(), q),
    }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Int(n) => n.is_empty(),
            Item::Str(s) => s.is_empty(),
            Item::List(l) => l.is_empty(),
        }
    }

    fn int(digits: &str) -> Item {
        Item::Int(digits.trim_start_matches('0').into())
    }

    fn string(s: &str, followed_by_digit: bool) -> Item {
        let s = match s {
            "a" if followed_by_digit => "alpha",
            "b" if followed_by_digit => "beta",
            "m" if followed_by_digit => "milestone",
            "ga" | "final" | "release" => "",
            "cr" => "rc",
            other => other,
        };
        Item::Str(s.into())
    }

    /// `ComparableVersion`'s `Item.compareTo`, `None` standing for Java's null
    /// (the other list ran out).
    fn cmp_to(&self, other: Option<&Item>) -> Ordering {
        match (self, other) {
            (Item::Int(n), None) => {
                if n.is_empty() {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            (Item::Int(a), Some(Item::Int(b))) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            (Item::Int(_), Some(_)) => Ordering::Greater,
            (Item::Str(s), None) => qualifier_key(s).cmp(&(RELEASE_INDEX, "")),
            (Item::Str(_), Some(Item::Int(_))) => Ordering::Less,
            (Item::Str(a), Some(Item::Str(b))) => qualifier_key(a).cmp(&qualifier_key(b)),
            (Item::Str(_), Some(Item::List(_))) => Ordering::Less,
            (Item::List(l), None) => l.first().map_or(Ordering::Equal, |f| f.cmp_to(None)),
            (Item::List(_), Some(Item::Int(_))) => Ordering::Less,
            (Item::List(_), Some(Item::Str(_))) => Ordering::Greater,
            (Item::List(a), Some(Item::List(b))) => cmp_lists(a, b),
        }
    }
}

fn cmp_lists(a: &[Item], b: &[Item]) -> Ordering {
    for i in 0..a.len().max(b.len()) {
        let o = match (a.get(i), b.get(i)) {
            (Some(l), r) => l.cmp_to(r),
            (None, Some(r)) => r.cmp_to(None).reverse(),
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Drops trailing null items, stopping at the first non-null non-list.
fn normalize(list: &mut Vec<Item>) {
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        if list[i].is_null() {
            list.remove(i);
        } else if !matches!(list[i], Item::List(_)) {
            break;
        }
    }
}

#[derive(Clone, Debug)]
pub struct MavenVersion {
    s: Box<str>,
    items: Vec<Item>,
}

/// Builds the item tree. Lists nest: each new list is the last item of the
/// one before, so a stack of open lists is folded back up at the end.
fn parse_items(v: &str) -> Vec<Item> {
    let b = v.as_bytes();
    let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
    let mut start = 0;
    let mut is_digit = false;
    let push_item = |stack: &mut Vec<Vec<Item>>, item: Item| {
        if let Some(top) = stack.last_mut() {
            top.push(item);
        }
    };
    let item_at = |is_digit: bool, s: &str| {
        if is_digit {
            Item::int(s)
        } else {
            Item::string(s, false)
        }
    };
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'.' | b'-' => {
                let item = if i == start {
                    Item::Int("".into())
                } else {
                    item_at(is_digit, &v[start..i])
                };
                push_item(&mut stack, item);
                start = i + 1;
                if c == b'-' {
                    stack.push(Vec::new());
                }
            }
            c if c.is_ascii_digit() => {
                if !is_digit && i > start {
                    // MNG-7644: `1.0.0.X1 < 1.0.0-X2`, a `.X` qualifier reads as `-X`.
                    if stack.last().is_some_and(|l| !l.is_empty()) {
                        stack.push(Vec::new());
                    }
                    push_item(&mut stack, Item::string(&v[start..i], true));
                    start = i;
                    stack.push(Vec::new());
                }
                is_digit = true;
            }
            _ => {
                if is_digit && i > start {
                    push_item(&mut stack, Item::int(&v[start..i]));
                    start = i;
                    stack.push(Vec::new());
                }
                is_digit = false;
            }
        }
    }
    if v.len() > start {
        if !is_digit && stack.last().is_some_and(|l| !l.is_empty()) {
            stack.push(Vec::new());
        }
        push_item(&mut stack, item_at(is_digit, &v[start..]));
    }
    // Close the open lists innermost first, normalising each.
    while stack.len() > 1 {
        let mut inner = stack.pop().unwrap_or_default();
        normalize(&mut inner);
        push_item(&mut stack, Item::List(inner));
    }
    let mut root = stack.pop().unwrap_or_default();
    normalize(&mut root);
    root
}

impl MavenVersion {
    pub fn parse(input: &str) -> Result<MavenVersion, VersionError> {
        VersionError::check_len(Scheme::Maven, input)?;
        let s = input.trim();
        if s.is_empty() {
            return Err(VersionError::invalid(Scheme::Maven, input, "empty version"));
        }
        if s.chars().any(char::is_control) {
            return Err(VersionError::invalid(Scheme::Maven, input, "control character"));
        }
        let items = parse_items(&s.to_lowercase());
        Ok(MavenVersion { s: s.into(), items })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl Ord for MavenVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_lists(&self.items, &other.items)
    }
}

impl PartialOrd for MavenVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MavenVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MavenVersion {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{compare, parse};

    fn c(a: &str, b: &str) -> Ordering {
        compare(Scheme::Maven, a, b).unwrap()
    }

    fn increasing(list: &[&str]) {
        for w in list.windows(2) {
            assert_eq!(c(w[0], w[1]), Ordering::Less, "{w:?}");
            assert_eq!(c(w[1], w[0]), Ordering::Greater, "{w:?}");
        }
    }

    fn equal(list: &[&str]) {
        for a in list {
            for b in list {
                assert_eq!(c(a, b), Ordering::Equal, "{a} vs {b}");
            }
        }
    }

    /// The qualifier order from `ComparableVersion`'s documentation.
    #[test]
    fn qualifiers() {
        increasing(&[
            "1-alpha",
            "1-beta",
            "1-milestone",
            "1-rc",
            "1-snapshot",
            "1",
            "1-sp",
            "1.1",
        ]);
        equal(&["1-rc", "1-cr"]);
        equal(&[
            "1",
            "1.0",
            "1.0.0",
            "1-ga",
            "1-final",
            "1-release",
            "1.0-GA",
            "1.FINAL",
        ]);
        equal(&["1a1", "1-a1", "1-alpha-1", "1.alpha1", "1.a1"]);
        increasing(&[
            "1-alpha1",
            "1-alpha2",
            "1-alpha10",
            "1-beta1",
            "1-m1",
            "1-rc1",
            "1-SNAPSHOT",
            "1",
        ]);
        // Unknown qualifiers come after the known ones, alphabetically.
        increasing(&["1-sp", "1-abc", "1-xyz"]);
    }

    /// The increasing lists of Maven's `ComparableVersionTest`
    /// (`VERSIONS_QUALIFIER`, `VERSIONS_NUMBER`), and its padding cases.
    #[test]
    fn ordering_table() {
        increasing(&[
            "1-alpha2snapshot",
            "1-alpha2",
            "1-alpha-123",
            "1-beta-2",
            "1-beta123",
            "1-m2",
            "1-m11",
            "1-rc",
            "1-cr2",
            "1-rc123",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-sp2",
            "1-sp123",
            "1-abc",
            "1-def",
            "1-pom-1",
            "1-1-snapshot",
            "1-1",
            "1-2",
            "1-123",
        ]);
        increasing(&[
            "2.0", "2.0.a", "2-1", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1", "2.1.0.1",
            "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11", "11", "11.a", "11b",
            "11c", "11m",
        ]);
        equal(&["1", "1.0", "1.0.0", "1-0", "1.0-0", "1-0-0"]);
        equal(&["1a", "1-a", "1.0-a", "1.0.0-a"]);
        equal(&["1x", "1-x", "1.0-x", "1.0.0-x"]);
        equal(&["01.002", "1.2"]);
        assert_eq!(c("1.0.0.x1", "1.0.0-x2"), Ordering::Less);
        assert_eq!(c("1.0.1", "1.0-sp"), Ordering::Greater);
        assert_eq!(c("2.0.0.RELEASE", "2.0.0"), Ordering::Equal);
        assert_eq!(c("5.3.18", "5.3.9"), Ordering::Greater);
        assert_eq!(
            c("99999999999999999999999.1", "99999999999999999999998.9"),
            Ordering::Greater
        );
    }

    #[test]
    fn invalid_versions_are_errors() {
        assert!(parse(Scheme::Maven, "").is_err());
        assert!(parse(Scheme::Maven, "1.0\u{7}").is_err());
    }
}
