//! A scan request, and the checks made on it before anything touches the
//! network.

use strata_worker::queue::Priority;

use super::CoordinatorError;
use crate::util::truncate_chars;

/// Longest image reference accepted.
pub const MAX_REFERENCE_LEN: usize = 4096;

/// A scan request.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub reference: String,
    pub platform: String,
    pub background: bool,
    pub insecure_registry: bool,
    /// Registered for continuous rescans (FleetService) rather than a one-off submit.
    pub register: bool,
}

/// Checks a reference's shape before anything touches the network.
pub fn validate_reference(reference: &str) -> Result<String, CoordinatorError> {
    if reference.is_empty() {
        return Err(CoordinatorError::InvalidArgument("empty image reference".into()));
    }
    if reference.len() > MAX_REFERENCE_LEN {
        return Err(CoordinatorError::InvalidArgument(format!(
            "image reference of {} bytes is over the {MAX_REFERENCE_LEN}-byte limit",
            reference.len()
        )));
    }
    if let Some(c) = reference.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(CoordinatorError::InvalidArgument(format!(
            "image reference {:?} contains {c:?}",
            truncate_chars(reference, 200)
        )));
    }
    Ok(reference.to_owned())
}

/// Which queue a request goes to.
pub fn priority_of(background: bool) -> Priority {
    if background {
        Priority::Background
    } else {
        Priority::Ci
    }
}
