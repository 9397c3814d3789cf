//! Version constraints: the comparison operators, the one parser of an
//! operator prefix, and the comma-joined conjunction the fleet's package
//! query takes (`>=1.2.0, <1.4.1`).
//!
//! Contract: every parser of comparators in the crate reads its operator
//! with [`strip_op`], under the [`Syntax`] it follows: the fleet's version
//! ranges (every operator) and npm ranges (`semver::npm_range`: node-semver's
//! `GTLT`, so no `!=` or `==`). A comparison holds by the version type's
//! own ordering ([`Op::holds`]): constraints know nothing of schemes.

use std::cmp::Ordering;

/// A comparison operator: `version OP bound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    /// Whether `version OP bound` holds, given `version.cmp(bound)`.
    pub fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Gt => o.is_gt(),
            Op::Ge => o.is_ge(),
            Op::Eq => o.is_eq(),
            Op::Ne => o.is_ne(),
        }
    }
}

/// Which operator spellings a comparator syntax accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// `>=`, `<=`, `!=`, `==`, `>`, `<`, `=`: the fleet's version ranges.
    Comparison,
    /// node-semver's `GTLT`: `>=`, `<=`, `>`, `<`, `=` (`==1` reads as `=`
    /// then `=1`, as node-semver reads it).
    Npm,
}

/// Every spelling, two-character ones first so `>=` is not read as `>`.
const SPELLINGS: [(&str, Op); 7] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("!=", Op::Ne),
    ("==", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("=", Op::Eq),
];

impl Syntax {
    fn accepts(self, spelling: &str) -> bool {
        match self {
            Syntax::Comparison => true,
            Syntax::Npm => !matches!(spelling, "!=" | "=="),
        }
    }
}

/// The operator `s` starts with, and the rest of `s` after it (not
/// trimmed); `None` when `s` starts with no operator `syntax` accepts.
pub fn strip_op(s: &str, syntax: Syntax) -> Option<(Op, &str)> {
    SPELLINGS
        .iter()
        .filter(|(spelling, _)| syntax.accepts(spelling))
        .find_map(|(spelling, op)| s.strip_prefix(spelling).map(|rest| (*op, rest)))
}

/// Why a conjunction does not parse: the text that follows the range in
/// an error message (the caller quotes the range and says what it wants).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("longer than {0} bytes")]
    TooLong(usize),
    #[error("comparison {0:?} has no version")]
    NoVersion(String),
    #[error("comparison {0:?} is not one operator and one version")]
    NotOneComparison(String),
    #[error("more than {0} comparisons")]
    TooMany(usize),
}

/// A conjunction of comparisons (`>=1.2.0, <1.4.1`): a version satisfies
/// it when it satisfies every one. Parsed once as text
/// (`Conjunction<String>`), then compiled per version scheme it is used
/// with by [`Conjunction::try_map`].
#[derive(Debug, Clone)]
pub struct Conjunction<V> {
    constraints: Vec<(Op, V)>,
}

impl Conjunction<String> {
    /// Longest conjunction accepted.
    pub const MAX_LEN: usize = 1024;
    /// Comparisons accepted in one conjunction.
    pub const MAX_PARTS: usize = 16;

    /// Parses the shape: comparisons joined by commas, each one operator
    /// (none: `=`) and one version; the versions are checked per scheme
    /// by [`Conjunction::try_map`].
    pub fn parse(range: &str) -> Result<Conjunction<String>, ConstraintError> {
        if range.len() > Self::MAX_LEN {
            return Err(ConstraintError::TooLong(Self::MAX_LEN));
        }
        let mut constraints = Vec::new();
        for part in range.split(',') {
            let part = part.trim();
            let (op, version) = strip_op(part, Syntax::Comparison)
                .map(|(op, v)| (op, v.trim()))
                .unwrap_or((Op::Eq, part));
            if version.is_empty() {
                return Err(ConstraintError::NoVersion(part.to_owned()));
            }
            if version.contains(|c: char| c.is_whitespace() || "<>=!".contains(c)) {
                return Err(ConstraintError::NotOneComparison(part.to_owned()));
            }
            constraints.push((op, version.to_owned()));
        }
        if constraints.len() > Self::MAX_PARTS {
            return Err(ConstraintError::TooMany(Self::MAX_PARTS));
        }
        Ok(Conjunction { constraints })
    }
}

impl<V> Conjunction<V> {
    /// The same comparisons with each version turned into a `W` (parsed
    /// under a scheme); the first error stops it.
    pub fn try_map<W, E>(&self, mut f: impl FnMut(&V) -> Result<W, E>) -> Result<Conjunction<W>, E> {
        let constraints = self
            .constraints
            .iter()
            .map(|(op, v)| Ok((*op, f(v)?)))
            .collect::<Result<_, E>>()?;
        Ok(Conjunction { constraints })
    }

    /// Whether `v` satisfies every comparison.
    pub fn satisfied_by(&self, v: &V) -> bool
    where
        V: Ord,
    {
        self.constraints.iter().all(|(op, bound)| op.holds(v.cmp(bound)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{self, Scheme};

    #[test]
    fn operators_hold_by_ordering() {
        use Ordering::*;
        let table = [
            (Op::Lt, [true, false, false]),
            (Op::Le, [true, true, false]),
            (Op::Gt, [false, false, true]),
            (Op::Ge, [false, true, true]),
            (Op::Eq, [false, true, false]),
            (Op::Ne, [true, false, true]),
        ];
        for (op, want) in table {
            for (o, w) in [Less, Equal, Greater].into_iter().zip(want) {
                assert_eq!(op.holds(o), w, "{op:?} {o:?}");
            }
        }
    }

    #[test]
    fn operator_prefixes_per_syntax() {
        let c = Syntax::Comparison;
        assert_eq!(strip_op(">=1", c), Some((Op::Ge, "1")));
        assert_eq!(strip_op("<= 1", c), Some((Op::Le, " 1")));
        assert_eq!(strip_op("!=1", c), Some((Op::Ne, "1")));
        assert_eq!(strip_op("==1", c), Some((Op::Eq, "1")));
        assert_eq!(strip_op(">1", c), Some((Op::Gt, "1")));
        assert_eq!(strip_op("<1", c), Some((Op::Lt, "1")));
        assert_eq!(strip_op("=1", c), Some((Op::Eq, "1")));
        assert_eq!(strip_op("1", c), None);
        assert_eq!(strip_op("~1", c), None);
        let n = Syntax::Npm;
        assert_eq!(strip_op(">=1", n), Some((Op::Ge, "1")));
        assert_eq!(strip_op("==1", n), Some((Op::Eq, "=1")));
        assert_eq!(strip_op("!=1", n), None);
        assert_eq!(strip_op("^1", n), None);
    }

    #[test]
    fn conjunctions_parse_and_hold() {
        let r = Conjunction::parse(">=1.2.0, <1.4.1").unwrap();
        let c = r.try_map(|v| versions::parse(Scheme::Semver, v)).unwrap();
        let v = |s| versions::parse(Scheme::Semver, s).unwrap();
        assert!(c.satisfied_by(&v("1.3.0")));
        assert!(c.satisfied_by(&v("1.2.0")));
        assert!(!c.satisfied_by(&v("1.4.1")));
        assert!(!c.satisfied_by(&v("1.1.9")));
        let ne = Conjunction::parse("!=2, 1 ").unwrap();
        assert!(ne.satisfied_by(&"1".to_owned()));
        assert!(!ne.satisfied_by(&"2".to_owned()));
        assert!(
            Conjunction::parse(">=1, <x")
                .unwrap()
                .try_map(|v| versions::parse(Scheme::Semver, v))
                .is_err()
        );
    }

    #[test]
    fn bad_conjunctions_say_why() {
        for bad in [">=", ">= 1, <", "~>1.0", "1.0 2.0", ">=1,<<2"] {
            assert!(Conjunction::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Conjunction::parse(">=1, <").unwrap_err().to_string(),
            "comparison \"<\" has no version"
        );
        assert_eq!(
            Conjunction::parse("1.0 2.0").unwrap_err().to_string(),
            "comparison \"1.0 2.0\" is not one operator and one version"
        );
        let long = "1".repeat(Conjunction::MAX_LEN + 1);
        assert_eq!(
            Conjunction::parse(&long).unwrap_err(),
            ConstraintError::TooLong(1024)
        );
        let many = vec!["1"; Conjunction::MAX_PARTS + 1].join(",");
        assert_eq!(
            Conjunction::parse(&many).unwrap_err().to_string(),
            "more than 16 comparisons"
        );
        assert!(Conjunction::parse(&vec!["1"; Conjunction::MAX_PARTS].join(",")).is_ok());
    }
}
