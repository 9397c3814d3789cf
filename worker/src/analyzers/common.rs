//! Small helpers shared by the OS package analysers: purls, line splitting,
//! and the caps every analyser applies to what the input controls.

use strata_proto::Ecosystem;
use strata_proto::purl::Purl;

/// Most packages one database may yield; more is treated as hostile input.
pub(crate) const MAX_PACKAGES: usize = 200_000;

/// Longest name, version, architecture or source field we accept. Real
/// values are far shorter; a longer one is a broken or hostile database.
pub(crate) const MAX_FIELD_LEN: usize = 4096;

/// At most this many warnings per analysis, so a garbage file cannot make
/// the warning list as large as the input.
pub(crate) const MAX_WARNINGS: usize = 100;

/// Adds a warning unless the cap is reached (then one final note).
pub(crate) fn warn(warnings: &mut Vec<String>, msg: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(msg);
    } else if warnings.len() == MAX_WARNINGS {
        warnings.push("further warnings suppressed".into());
    }
}

/// A value shortened for an error message (input may be hostile).
pub(crate) fn clip(s: &str) -> String {
    strata_proto::text::cut_marked(s, 80)
}

/// The purl of an OS package (`pkg:deb/debian/NAME@VERSION?arch=ARCH`):
/// type and namespace are the ecosystem's, from the ecosystem table, built
/// by `strata_proto::purl`. The error is a message for a warning.
pub(crate) fn os_purl(
    ecosystem: Ecosystem,
    name: &str,
    version: &str,
    arch: Option<&str>,
) -> Result<String, String> {
    Purl::package(ecosystem, name, version, arch)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

/// Lines of `data` without their `\n` (and a `\r` before it), numbered
/// from 1. A final line without a newline is still yielded.
pub(crate) fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let mut iter = (!data.is_empty()).then(|| data.split(|b| *b == b'\n'));
    std::iter::from_fn(move || iter.as_mut()?.next())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// A field value as UTF-8, trimmed, bounded by [`MAX_FIELD_LEN`].
pub(crate) fn field_str<'a>(field: &str, value: &'a [u8]) -> Result<&'a str, String> {
    if value.len() > MAX_FIELD_LEN {
        return Err(format!("{field} longer than {MAX_FIELD_LEN} bytes"));
    }
    let s = std::str::from_utf8(value).map_err(|_| format!("{field} is not valid UTF-8"))?;
    Ok(s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_encodes_epoch_and_sorts_qualifiers() {
        let p = os_purl(Ecosystem::Debian, "git-core", "1:2.14.2-1", Some("all")).unwrap();
        assert_eq!(p, "pkg:deb/debian/git-core@1:2.14.2-1?arch=all");
        let p = os_purl(Ecosystem::Alpine, "musl", "1.2.3-r5", None).unwrap();
        assert_eq!(p, "pkg:apk/alpine/musl@1.2.3-r5");
        assert!(os_purl(Ecosystem::Debian, "", "1", None).is_err());
        let p = os_purl(
            Ecosystem::Debian,
            "libpam-runtime",
            "1.5.2-6+deb12u1~x",
            Some("all"),
        )
        .unwrap();
        assert_eq!(p, "pkg:deb/debian/libpam-runtime@1.5.2-6%2Bdeb12u1~x?arch=all");
    }

    #[test]
    fn lines_handles_crlf_and_missing_final_newline() {
        let got: Vec<_> = lines(b"a\r\nb\n\nc").collect();
        assert_eq!(got, vec![(1, &b"a"[..]), (2, b"b"), (3, b""), (4, b"c")]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n").count(), 0);
    }
}
