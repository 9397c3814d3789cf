//! Rpm version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RpmVersion {
    s: Box<str>,
}

impl RpmVersion {
    pub fn parse(input: &str) -> Result<RpmVersion, VersionError> {
        Err(VersionError::invalid(Scheme::Rpm, input, "not implemented yet"))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
