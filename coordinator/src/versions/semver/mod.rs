//! Semver version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SemverVersion {
    s: Box<str>,
}

impl SemverVersion {
    pub fn parse(input: &str) -> Result<SemverVersion, VersionError> {
        Err(VersionError::invalid(
            Scheme::Semver,
            input,
            "not implemented yet",
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
