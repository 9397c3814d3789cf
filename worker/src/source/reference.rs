//! Image reference parsing.
//!
//! Forms accepted:
//! - a registry reference, normalised as Docker does: `alpine` is
//!   `docker.io/library/alpine:latest`; `host[:port]/repo[:tag][@digest]`.
//!   Parsing itself is `oci-spec`'s (the grammar of the distribution project).
//!   A leading `docker://` is accepted and dropped.
//! - `oci-dir:PATH[:TAG]`: an OCI image layout directory. The text after the
//!   last `:` is a tag when it is a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`)
//!   and holds no `/`; otherwise the whole text is the path.
//! - `docker-archive:PATH[:TAG]`: a `docker save` tarball; `TAG` picks one of
//!   several images by its `RepoTags` (same split rule as `oci-dir:`).
//! - `dir:PATH`: an unpacked root filesystem.
//!
//! Errors are [`SourceError::BadReference`], never panics; input longer
//! than [`MAX_REFERENCE_LEN`] is refused before any parsing.

use std::fmt;
use std::path::PathBuf;

use oci_client::Reference;

use super::SourceError;

/// Longest reference accepted (paths included).
pub const MAX_REFERENCE_LEN: usize = 4096;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(Reference),
    OciDir { path: PathBuf, tag: Option<String> },
    DockerArchive { path: PathBuf, tag: Option<String> },
    Dir { path: PathBuf },
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, SourceError> {
        let bad = |reason: &str| SourceError::BadReference {
            input: input.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        if input.len() > MAX_REFERENCE_LEN {
            return Err(bad(&format!("longer than {MAX_REFERENCE_LEN} bytes")));
        }
        if input.trim().is_empty() {
            return Err(bad("empty"));
        }
        if input.chars().any(|c| c.is_control()) {
            return Err(bad("contains control characters"));
        }
        if let Some(rest) = input.strip_prefix("oci-dir:") {
            let (path, tag) = split_tag(rest);
            if path.is_empty() {
                return Err(bad("oci-dir: needs a path"));
            }
            return Ok(ImageRef::OciDir {
                path: PathBuf::from(path),
                tag: tag.map(str::to_owned),
            });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (path, tag) = split_tag(rest);
            if path.is_empty() {
                return Err(bad("docker-archive: needs a path"));
            }
            return Ok(ImageRef::DockerArchive {
                path: PathBuf::from(path),
                tag: tag.map(str::to_owned),
            });
        }
        if let Some(path) = input.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad("dir: needs a path"));
            }
            return Ok(ImageRef::Dir {
                path: PathBuf::from(path),
            });
        }
        let name = input.strip_prefix("docker://").unwrap_or(input);
        // Catch a mistyped transport (`oci:x`, `docker-archve:x`) with a clearer
        // message than the grammar's: a registry host with a port never has a
        // `:` before its first `/` followed by a non-digit.
        if let Some((scheme, _)) = name.split_once(':')
            && !scheme.contains('/')
            && !scheme.contains('.')
            && name[scheme.len() + 1..].starts_with(|c: char| !c.is_ascii_alphanumeric())
        {
            return Err(bad(&format!(
                "unknown transport {scheme:?}: expected a registry reference, oci-dir:, docker-archive: or dir:"
            )));
        }
        let reference = Reference::try_from(name).map_err(|e| bad(&e.to_string()))?;
        // The grammar lets a host-like first component through with capitals
        // (`UPPER/x`) and then treats it as part of the repository.
        if reference.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        Ok(ImageRef::Registry(reference))
    }
}

/// Splits `PATH[:TAG]` at the last `:` when what follows is a valid tag.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once(':') {
        Some((path, tag)) if is_tag(tag) => (path, Some(tag)),
        _ => (s, None),
    }
}

fn is_tag(s: &str) -> bool {
    let mut bytes = s.bytes();
    let Some(first) = bytes.next() else { return false };
    s.len() <= 128
        && (first.is_ascii_alphanumeric() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{r}"),
            ImageRef::OciDir { path, tag: Some(t) } => write!(f, "oci-dir:{}:{t}", path.display()),
            ImageRef::OciDir { path, tag: None } => write!(f, "oci-dir:{}", path.display()),
            ImageRef::DockerArchive { path, tag: Some(t) } => {
                write!(f, "docker-archive:{}:{t}", path.display())
            }
            ImageRef::DockerArchive { path, tag: None } => write!(f, "docker-archive:{}", path.display()),
            ImageRef::Dir { path } => write!(f, "dir:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn reg(s: &str) -> Reference {
        match ImageRef::parse(s) {
            Ok(ImageRef::Registry(r)) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn short_names_are_docker_hub_library() {
        let r = reg("alpine");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(reg("docker.io/library/alpine:3.19").tag(), Some("3.19"));
        assert_eq!(
            reg("docker://alpine:3.19").to_string(),
            "docker.io/library/alpine:3.19"
        );
        assert_eq!(reg("someone/app:1").repository(), "someone/app");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let r = reg(&format!("ghcr.io/o/r@{D}"));
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("ghcr.io", "o/r", None, Some(D))
        );
        let r = reg("localhost:5000/x:y");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "x", Some("y"))
        );
        let r = reg(&format!("127.0.0.1:5000/a/b:v1@{D}"));
        assert_eq!((r.tag(), r.digest()), (Some("v1"), Some(D)));
    }

    #[test]
    fn local_forms() {
        assert_eq!(
            ImageRef::parse("oci-dir:/tmp/img").ok(),
            Some(ImageRef::OciDir {
                path: "/tmp/img".into(),
                tag: None
            })
        );
        assert_eq!(
            ImageRef::parse("oci-dir:/tmp/img:v1.2").ok(),
            Some(ImageRef::OciDir {
                path: "/tmp/img".into(),
                tag: Some("v1.2".into())
            })
        );
        // After the last ':' comes a path, not a tag.
        assert_eq!(
            ImageRef::parse("oci-dir:/tmp/a:b/c").ok(),
            Some(ImageRef::OciDir {
                path: "/tmp/a:b/c".into(),
                tag: None
            })
        );
        assert_eq!(
            ImageRef::parse("docker-archive:img.tar").ok(),
            Some(ImageRef::DockerArchive {
                path: "img.tar".into(),
                tag: None
            })
        );
        assert_eq!(
            ImageRef::parse("docker-archive:img.tar:3.19").ok(),
            Some(ImageRef::DockerArchive {
                path: "img.tar".into(),
                tag: Some("3.19".into())
            })
        );
        assert_eq!(
            ImageRef::parse("dir:/").ok(),
            Some(ImageRef::Dir { path: "/".into() })
        );
        assert_eq!(
            ImageRef::parse("oci-dir:/x:t")
                .map(|r| r.to_string())
                .ok()
                .as_deref(),
            Some("oci-dir:/x:t")
        );
    }

    #[test]
    fn bad_references_are_errors() {
        let long = "a".repeat(MAX_REFERENCE_LEN + 1);
        for bad in [
            "",
            "   ",
            "UPPER/case",
            "alpine:",
            "alpine@sha256:short",
            "alpine@md5:0123456789abcdef0123456789abcdef",
            "a b",
            "alpine\n",
            "oci-dir:",
            "docker-archive:",
            "dir:",
            "oci:/tmp/x",
            "docker-archve:/tmp/x.tar",
            "http://example.com/x",
            long.as_str(),
            &format!("{}/x", "h".repeat(300)),
        ] {
            match ImageRef::parse(bad) {
                Err(SourceError::BadReference { input, reason }) => {
                    assert!(input.len() <= 800 && !reason.is_empty(), "{bad:?}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn tag_grammar() {
        assert!(is_tag("latest") && is_tag("_x") && is_tag("1.0-rc.1"));
        assert!(!is_tag("") && !is_tag("-x") && !is_tag(".x") && !is_tag("a/b") && !is_tag(&"a".repeat(129)));
    }
}
