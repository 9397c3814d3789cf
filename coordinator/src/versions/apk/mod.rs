//! Apk version ordering (not implemented yet: every parse is an error).

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApkVersion {
    s: Box<str>,
}

impl ApkVersion {
    pub fn parse(input: &str) -> Result<ApkVersion, VersionError> {
        Err(VersionError::invalid(Scheme::Apk, input, "not implemented yet"))
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}
