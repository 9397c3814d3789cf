//! Maven version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MavenVersion {
    s: Box<str>,
}

impl MavenVersion {
    pub fn parse(input: &str) -> Result<MavenVersion, VersionError> {
        Err(VersionError::invalid(Scheme::Maven, input, "not implemented yet"))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
