//! Platforms (`os/arch[/variant]`) and choosing one manifest from an index.
//!
//! Matching follows containerd's rules where they matter: `arm64` with no
//! variant is `arm64/v8`; a wanted platform without a variant accepts any
//! variant (preferring an entry without one, then the first listed); a
//! wanted variant must be equal. Index entries whose platform is
//! `unknown/unknown` (build attestations) are never chosen nor offered.

use std::fmt;

use super::SourceError;

/// A platform, as in an image index entry. Fields are lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`: the default choice from an index.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64` or `linux/arm/v7`.
    pub fn parse(s: &str) -> Result<Platform, SourceError> {
        let bad = |reason: &str| SourceError::BadReference {
            input: s.chars().take(100).collect(),
            reason: format!("platform: {reason}"),
        };
        if s.len() > 100 {
            return Err(bad("longer than 100 bytes"));
        }
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(bad("expected os/arch or os/arch/variant, e.g. linux/arm64"));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }

    /// The variant with defaults filled in (`arm64` → `v8`), for comparison.
    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Whether an entry offering `self` satisfies a request for `wanted`.
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.normalized_variant() == wanted.normalized_variant())
    }

    fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Chooses the entry of `offered` (index order, `None` for entries without a
/// platform) for `wanted`, and returns its position. `PlatformNotFound`
/// lists every known platform offered.
pub fn choose(offered: &[Option<Platform>], wanted: &Platform) -> Result<usize, SourceError> {
    let matching = || {
        offered.iter().enumerate().filter_map(|(i, p)| {
            p.as_ref()
                .filter(|p| !p.is_unknown() && p.satisfies(wanted))
                .map(|p| (i, p))
        })
    };
    let exact = matching().find(|(_, p)| p.variant == wanted.variant);
    if let Some((i, _)) = exact.or_else(|| matching().next()) {
        return Ok(i);
    }
    let mut listed: Vec<String> = Vec::new();
    for p in offered.iter().flatten().filter(|p| !p.is_unknown()) {
        let s = p.to_string();
        if !listed.contains(&s) {
            listed.push(s);
        }
    }
    Err(SourceError::PlatformNotFound {
        wanted: wanted.to_string(),
        offered: listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(p("linux/amd64"), Platform::linux_amd64());
        assert_eq!(p("Linux/ARM/v7").to_string(), "linux/arm/v7");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "linux/amd 64",
            &"x/".repeat(60),
        ] {
            assert!(
                matches!(Platform::parse(bad), Err(SourceError::BadReference { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn variants() {
        assert!(p("linux/arm64/v8").satisfies(&p("linux/arm64")));
        assert!(p("linux/arm64").satisfies(&p("linux/arm64/v8")));
        assert!(!p("linux/arm/v6").satisfies(&p("linux/arm/v7")));
        assert!(p("linux/arm/v6").satisfies(&p("linux/arm")));
        assert!(!p("linux/amd64").satisfies(&p("windows/amd64")));
    }

    #[test]
    fn choose_prefers_exact_and_skips_unknown() {
        let offered = vec![
            Some(p("linux/arm/v6")),
            Some(p("linux/arm/v7")),
            None,
            Some(p("unknown/unknown")),
            Some(p("linux/amd64")),
            Some(p("linux/arm64/v8")),
        ];
        assert_eq!(choose(&offered, &Platform::linux_amd64()).ok(), Some(4));
        assert_eq!(choose(&offered, &p("linux/arm64")).ok(), Some(5));
        assert_eq!(choose(&offered, &p("linux/arm/v7")).ok(), Some(1));
        assert_eq!(choose(&offered, &p("linux/arm")).ok(), Some(0));
        match choose(&offered, &p("linux/s390x")) {
            Err(SourceError::PlatformNotFound { wanted, offered }) => {
                assert_eq!(wanted, "linux/s390x");
                assert_eq!(
                    offered,
                    ["linux/arm/v6", "linux/arm/v7", "linux/amd64", "linux/arm64/v8"]
                );
            }
            other => panic!("{other:?}"),
        }
        let e = choose(&[Some(p("unknown/unknown"))], &p("linux/amd64"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("platform linux/amd64 not found in the image index; it offers: no platforms")
        );
    }
}
