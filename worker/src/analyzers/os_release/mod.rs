//! os-release: which distribution and release a layer declares, so matching
//! can tell Debian 12 from 11 and Alpine 3.19 from 3.18.
//!
//! Reads `/etc/os-release`, else `/usr/lib/os-release` (the file
//! `/etc/os-release` usually links to), else the distro files
//! `/etc/alpine-release`, `/etc/redhat-release`, `/etc/debian_version`.
//!
//! Contract: yields no packages. `os_release` is `None` when none of those
//! files is in the layer or none yields an `ID`/version; an unusable file
//! is a warning and the next candidate is tried, never an error. An
//! os-release with assignments but no `ID` gets `ID=linux`, as the spec
//! says. Values are unquoted the way the spec's shell-like syntax says.

use strata_proto::OsRelease;

use super::common::{MAX_FIELD_LEN, lines, warn};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "os-release";

/// In preference order.
const CANDIDATES: &[&str] = &[
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/alpine-release",
    "/etc/redhat-release",
    "/etc/debian_version",
];

/// os-release files are a few hundred bytes; read no further than this.
const MAX_FILE: usize = 64 * 1024;

pub struct OsReleaseAnalyzer;

impl Analyzer for OsReleaseAnalyzer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        CANDIDATES.contains(&path)
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let mut analysis = Analysis::default();
        for candidate in CANDIDATES {
            let Some(file) = files.iter().find(|f| f.path == *candidate) else {
                continue;
            };
            let data = &file.data[..file.data.len().min(MAX_FILE)];
            let parsed = match *candidate {
                "/etc/os-release" | "/usr/lib/os-release" => parse_os_release(data),
                "/etc/alpine-release" => first_line(data).map(|v| simple("alpine", v)),
                "/etc/redhat-release" => first_line(data).and_then(parse_redhat_release),
                _ => first_line(data).map(parse_debian_version),
            };
            match parsed {
                Some(mut os) => {
                    os.path = file.path.to_owned();
                    analysis.os_release = Some(os);
                    break;
                }
                None => warn(
                    &mut analysis.warnings,
                    format!("{NAME}: {}: no usable release", file.path),
                ),
            }
        }
        Ok(analysis)
    }
}

fn simple(id: &str, version_id: &str) -> OsRelease {
    OsRelease {
        id: id.into(),
        version_id: version_id.into(),
        ..OsRelease::default()
    }
}

/// The first line, trimmed, when it is short printable UTF-8.
fn first_line(data: &[u8]) -> Option<&str> {
    let (_, line) = lines(data).next()?;
    let s = std::str::from_utf8(line).ok()?.trim();
    let ok = !s.is_empty() && s.len() <= MAX_FIELD_LEN && !s.chars().any(char::is_control);
    ok.then_some(s)
}

/// `/etc/os-release`: `KEY=value` lines, values possibly quoted.
fn parse_os_release(data: &[u8]) -> Option<OsRelease> {
    let mut os = OsRelease::default();
    let mut any = false;
    let mut id = None;
    for (_, line) in lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let Some(value) = unquote(raw) else { continue };
        if value.len() > MAX_FIELD_LEN {
            continue;
        }
        any = true;
        match key {
            "ID" => id = Some(value),
            "VERSION_ID" => os.version_id = value,
            "VERSION_CODENAME" => os.version_codename = value,
            "PRETTY_NAME" => os.pretty_name = value,
            "ID_LIKE" => {
                os.id_like = value
                    .split_ascii_whitespace()
                    .take(16)
                    .map(str::to_owned)
                    .collect()
            }
            _ => {}
        }
    }
    if !any {
        return None;
    }
    os.id = id.filter(|s| !s.is_empty()).unwrap_or_else(|| "linux".into());
    Some(os)
}

/// Shell-style value: `"…"` (with `\"`, `\\`, `\$`, `` \` `` escapes),
/// `'…'`, or bare (with `\` escapes). `None` for an unterminated quote.
fn unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => out.push(chars.next()?),
            (None, c) if c.is_whitespace() => break,
            (_, c) => out.push(c),
        }
    }
    quote.is_none().then_some(out)
}

/// `/etc/debian_version`: `12.5` → 12; `bookworm/sid` → codename only.
fn parse_debian_version(v: &str) -> OsRelease {
    let major = v.split('.').next().unwrap_or_default();
    if !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) {
        return simple("debian", major);
    }
    let codename = v.split('/').next().unwrap_or_default();
    OsRelease {
        id: "debian".into(),
        version_codename: codename.into(),
        ..OsRelease::default()
    }
}

/// `/etc/redhat-release`: `Red Hat Enterprise Linux release 8.9 (Ootpa)`.
/// The ID and version follow what each distro's os-release says
/// (RHEL `8.9`, CentOS `7`, Fedora `40`).
fn parse_redhat_release(line: &str) -> Option<OsRelease> {
    let (distro, rest) = line.split_once(" release ")?;
    let version = rest.split_ascii_whitespace().next()?;
    if !version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let lower = distro.to_ascii_lowercase();
    let (id, version) = if lower.starts_with("red hat") {
        ("rhel", version)
    } else if lower.starts_with("centos") {
        // CentOS Linux and CentOS Stream both say the major version only.
        ("centos", version.split('.').next().unwrap_or(version))
    } else if lower.starts_with("fedora") {
        ("fedora", version)
    } else if lower.starts_with("rocky") {
        ("rocky", version)
    } else if lower.starts_with("almalinux") {
        ("almalinux", version)
    } else if lower.starts_with("oracle") {
        ("ol", version)
    } else {
        return None;
    };
    let mut os = simple(id, version);
    os.pretty_name = line.to_owned();
    Some(os)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(files: &[(&str, &[u8])]) -> Analysis {
        let files: Vec<_> = files
            .iter()
            .map(|(path, data)| LayerFile { path, data })
            .collect();
        OsReleaseAnalyzer.analyze(&files).unwrap()
    }

    #[test]
    fn debian_os_release_fixture() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/pkgdb/anchore+syft/syft/pkg/cataloger/debian/testdata/",
            "image-dpkg/etc/os-release"
        ))
        .unwrap();
        let os = run(&[("/etc/os-release", &data)]).os_release.unwrap();
        assert_eq!(os.id, "debian");
        assert!(!os.version_id.is_empty());
        assert_eq!(os.path, "/etc/os-release");
    }

    #[test]
    fn quoting_and_id_like() {
        let data = b"NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n\
VERSION_CODENAME=jammy\nPRETTY_NAME='Ubuntu 22.04.4 LTS'\n# comment\n";
        let os = run(&[("/usr/lib/os-release", data)]).os_release.unwrap();
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.version_id, "22.04");
        assert_eq!(os.version_codename, "jammy");
        assert_eq!(os.pretty_name, "Ubuntu 22.04.4 LTS");
        assert_eq!(os.id_like, ["debian"]);
        assert_eq!(unquote(r#""a \"b\" \\c""#).as_deref(), Some(r#"a "b" \c"#));
        assert_eq!(unquote("\"open"), None);
    }

    #[test]
    fn etc_wins_over_usr_lib_over_fallbacks() {
        let a = run(&[
            ("/etc/debian_version", b"11.9\n"),
            ("/usr/lib/os-release", b"ID=alpine\nVERSION_ID=3.18.0\n"),
            ("/etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n"),
        ]);
        assert_eq!(a.os_release.unwrap().version_id, "3.19.1");
        let a = run(&[
            ("/etc/debian_version", b"11.9\n"),
            ("/usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
        ]);
        assert_eq!(a.os_release.unwrap().version_id, "12");
    }

    #[test]
    fn fallback_files() {
        let os = run(&[("/etc/alpine-release", b"3.19.1\n")]).os_release.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("alpine", "3.19.1"));
        let os = run(&[("/etc/debian_version", b"12.5\n")]).os_release.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
        let os = run(&[("/etc/debian_version", b"bookworm/sid\n")])
            .os_release
            .unwrap();
        assert_eq!(
            (os.version_id.as_str(), os.version_codename.as_str()),
            ("", "bookworm")
        );
        let line = b"Red Hat Enterprise Linux release 8.9 (Ootpa)\n";
        let os = run(&[("/etc/redhat-release", line)]).os_release.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("rhel", "8.9"));
        let os = run(&[("/etc/redhat-release", b"CentOS Linux release 7.9.2009 (Core)")])
            .os_release
            .unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("centos", "7"));
    }

    #[test]
    fn garbage_falls_through_to_next_candidate() {
        let a = run(&[
            ("/etc/os-release", b"\xff\xfe garbage\n"),
            ("/etc/alpine-release", b"3.18.4\n"),
        ]);
        assert_eq!(a.os_release.unwrap().version_id, "3.18.4");
        assert_eq!(a.warnings.len(), 1);
        assert_eq!(run(&[]).os_release, None);
    }
}
