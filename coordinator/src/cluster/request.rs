//! A scan request, and the checks made on it before anything touches the
//! network.

use strata_worker::queue::Priority;

use super::CoordinatorError;
use strata_proto::text::cut;

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
            cut(reference, 200)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(reference: &str) -> String {
        match validate_reference(reference) {
            Err(CoordinatorError::InvalidArgument(m)) => m,
            other => panic!("{reference:?}: {other:?}"),
        }
    }

    #[test]
    fn references_are_bounded_in_length() {
        assert_eq!(invalid(""), "empty image reference");
        let longest = format!("reg.test/{}", "a".repeat(MAX_REFERENCE_LEN - "reg.test/".len()));
        assert_eq!(validate_reference(&longest).unwrap(), longest);
        let over = format!("{longest}b");
        assert_eq!(
            invalid(&over),
            format!("image reference of 4097 bytes is over the {MAX_REFERENCE_LEN}-byte limit")
        );
        // Bytes, not characters: 2,048 two-byte characters fit, one more does not.
        assert!(validate_reference(&"é".repeat(MAX_REFERENCE_LEN / 2)).is_ok());
        assert!(validate_reference(&"é".repeat(MAX_REFERENCE_LEN / 2 + 1)).is_err());
    }

    #[test]
    fn references_with_blanks_or_control_characters_are_refused() {
        assert_eq!(
            invalid("reg.test/app:v1\n"),
            r#"image reference "reg.test/app:v1\n" contains '\n'"#
        );
        assert_eq!(
            invalid("reg.test/a pp"),
            r#"image reference "reg.test/a pp" contains ' '"#
        );
        for bad in [
            "reg.test/app\0",
            "\treg.test/app",
            "reg.test/\u{7f}app",
            "reg.test/app\u{a0}",
        ] {
            assert!(validate_reference(bad).is_err(), "{bad:?}");
        }
        // The reference is quoted cut to 200 characters.
        let long = format!("{}\u{1}", "x".repeat(1000));
        let m = invalid(&long);
        assert!(
            m.starts_with(&format!("image reference \"{}\" contains", "x".repeat(200))),
            "{m}"
        );
        assert!(m.len() < 250, "{m}");
        // What a registry reference may hold passes as given.
        let fine = "127.0.0.1:5000/team/app_1.2-x@sha256:0123abcd";
        assert_eq!(validate_reference(fine).unwrap(), fine);
    }

    #[test]
    fn background_requests_go_to_the_background_queue() {
        assert_eq!(priority_of(true), Priority::Background);
        assert_eq!(priority_of(false), Priority::Ci);
    }
}
