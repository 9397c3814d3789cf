//! RubyGems version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GemVersion {
    s: Box<str>,
}

impl GemVersion {
    pub fn parse(input: &str) -> Result<GemVersion, VersionError> {
        Err(VersionError::invalid(
            Scheme::RubyGems,
            input,
            "not implemented yet",
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
