//! Go version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    s: Box<str>,
}

impl GoVersion {
    pub fn parse(input: &str) -> Result<GoVersion, VersionError> {
        Err(VersionError::invalid(Scheme::Go, input, "not implemented yet"))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
