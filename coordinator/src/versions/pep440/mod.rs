//! Pep440 version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pep440Version {
    s: Box<str>,
}

impl Pep440Version {
    pub fn parse(input: &str) -> Result<Pep440Version, VersionError> {
        Err(VersionError::invalid(
            Scheme::Pep440,
            input,
            "not implemented yet",
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
