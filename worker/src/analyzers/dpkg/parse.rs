//! Parser for dpkg's status format (deb822 stanzas), checked the way
//! `dpkg-query` checks it.
//!
//! Contract: [`parse`] returns the packages whose files are on disk (state
//! `installed`, `half-configured`, `unpacked`, `half-installed`,
//! `triggers-awaited`, `triggers-pending`), in file order, one per
//! (name, architecture) with the later stanza winning. It returns an error
//! for what dpkg itself rejects in the fields we read: a line without a
//! colon, an empty field name, a stanza without `Package`, an invalid
//! package name, a bad `Status`, a missing or malformed `Version` on a
//! package that is not `not-installed`, a malformed `Source`. Relationship
//! fields (`Depends`, …) are not read, so their syntax is not checked.

use crate::analyzers::common::{MAX_PACKAGES, clip, field_str, lines};

/// Most stanzas one file may hold. Debian's whole archive is ~70k packages.
pub(crate) const MAX_STANZAS: usize = 200_000;

/// One installed package as the status file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// `source:Package`: the `Source` name, or the package's own name.
    pub source_name: String,
    /// `source:Version`: the version in `Source: foo (1.2-3)`, or `version`.
    pub source_version: String,
    /// The `Status` abbreviation's state letter, for tests and debugging.
    pub state: State,
}

/// dpkg's package states (the third word of `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    NotInstalled,
    ConfigFiles,
    HalfInstalled,
    Unpacked,
    HalfConfigured,
    TriggersAwaited,
    TriggersPending,
    Installed,
}

impl State {
    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "not-installed" => State::NotInstalled,
            "config-files" => State::ConfigFiles,
            "half-installed" => State::HalfInstalled,
            "unpacked" => State::Unpacked,
            "half-configured" => State::HalfConfigured,
            "triggers-awaited" => State::TriggersAwaited,
            "triggers-pending" => State::TriggersPending,
            "installed" => State::Installed,
            _ => return None,
        })
    }

    /// Whether the package's files are (at least partly) on disk: only
    /// `not-installed` and `config-files` leave no binaries behind.
    pub(crate) fn is_present(self) -> bool {
        !matches!(self, State::NotInstalled | State::ConfigFiles)
    }
}

/// What a stanza without a `Status` field means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingStatus {
    /// dpkg's rule for `/var/lib/dpkg/status`: not installed.
    NotInstalled,
    /// Distroless `status.d/*` files describe installed packages and carry
    /// no `Status` field: a stanza with a `Version` is installed, one with
    /// only a name (a placeholder some tools write) is not.
    InstalledIfVersioned,
}

/// Fields of one stanza that we read (first occurrence wins, as in dpkg,
/// which rejects duplicates; we simply ignore them).
#[derive(Default)]
struct Stanza<'a> {
    start_line: usize,
    any_field: bool,
    package: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    source: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
}

/// Parses a whole status file. `Err` carries a message with the line.
pub(crate) fn parse(data: &[u8], missing_status: MissingStatus) -> Result<Vec<Entry>, String> {
    let mut entries = Entries::default();
    let mut stanzas = 0usize;
    let mut cur = Stanza::default();
    for (n, line) in lines(data) {
        // dpkg treats only an empty line as a separator; a whitespace-only
        // line is accepted here too (a harmless leniency).
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            if cur.any_field {
                stanzas += 1;
                if stanzas > MAX_STANZAS {
                    return Err(format!("more than {MAX_STANZAS} stanzas"));
                }
                finish(&cur, missing_status, &mut entries)?;
            }
            cur = Stanza::default();
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Continuation of a multi-line field (Description, Conffiles…).
            if !cur.any_field {
                return Err(format!("line {n}: continuation line before any field"));
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(format!("line {n}: field name must be followed by a colon"));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() {
            return Err(format!("line {n}: empty field name"));
        }
        if !cur.any_field {
            cur.start_line = n;
            cur.any_field = true;
        }
        let slot = if name.eq_ignore_ascii_case(b"Package") {
            &mut cur.package
        } else if name.eq_ignore_ascii_case(b"Status") {
            &mut cur.status
        } else if name.eq_ignore_ascii_case(b"Version") {
            &mut cur.version
        } else if name.eq_ignore_ascii_case(b"Source") {
            &mut cur.source
        } else if name.eq_ignore_ascii_case(b"Architecture") {
            &mut cur.arch
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }
    if cur.any_field {
        stanzas += 1;
        if stanzas > MAX_STANZAS {
            return Err(format!("more than {MAX_STANZAS} stanzas"));
        }
        finish(&cur, missing_status, &mut entries)?;
    }
    Ok(entries.list)
}

/// The packages found so far, in file order, with an index by (name,
/// architecture): a later stanza replaces an earlier one in constant time
/// (a linear search made 200,000 stanzas take minutes).
#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    by_key: std::collections::HashMap<(String, Option<String>), usize>,
}

/// Checks one stanza and appends its package when it is present on disk.
fn finish(s: &Stanza<'_>, missing_status: MissingStatus, out: &mut Entries) -> Result<(), String> {
    let at = |msg: String| format!("stanza at line {}: {msg}", s.start_line);
    let name = s.package.ok_or_else(|| at("missing Package".into()))?;
    let name = field_str("Package", name).map_err(at)?;
    check_name(name).map_err(|e| at(format!("invalid package name {:?}: {e}", clip(name))))?;
    let at = |msg: String| format!("stanza at line {} (package {}): {msg}", s.start_line, clip(name));
    let state = match s.status {
        Some(v) => parse_status(field_str("Status", v).map_err(at)?).map_err(at)?,
        None => match missing_status {
            MissingStatus::InstalledIfVersioned if s.version.is_some() => State::Installed,
            _ => State::NotInstalled,
        },
    };
    if state == State::NotInstalled {
        // dpkg needs no Version for a package it knows only by name.
        return Ok(());
    }
    let version = s.version.ok_or_else(|| at("missing Version".into()))?;
    let version = field_str("Version", version).map_err(at)?;
    check_version(version).map_err(|e| at(format!("Version {:?}: {e}", clip(version))))?;
    let (source_name, source_version) = match s.source {
        None => (name, version),
        Some(v) => {
            let v = field_str("Source", v).map_err(at)?;
            parse_source(v, version).map_err(|e| at(format!("Source {:?}: {e}", clip(v))))?
        }
    };
    let arch = match s.arch {
        Some(a) => Some(field_str("Architecture", a).map_err(at)?).filter(|a| !a.is_empty()),
        None => None,
    };
    if !state.is_present() {
        return Ok(());
    }
    let entry = Entry {
        name: name.to_owned(),
        version: version.to_owned(),
        arch: arch.map(str::to_owned),
        source_name: source_name.to_owned(),
        source_version: source_version.to_owned(),
        state,
    };
    // dpkg keeps one instance per name and architecture.
    let key = (entry.name.clone(), entry.arch.clone());
    if let Some(&at) = out.by_key.get(&key) {
        out.list[at] = entry;
        return Ok(());
    }
    if out.list.len() >= MAX_PACKAGES {
        return Err(format!("more than {MAX_PACKAGES} installed packages"));
    }
    out.by_key.insert(key, out.list.len());
    out.list.push(entry);
    Ok(())
}

/// dpkg's package-name rule: starts with an alphanumeric, then
/// alphanumerics and `-+._`. (dpkg also lowercases; we keep the text.)
fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("may not be empty string"),
        Some(c) if !c.is_ascii_alphanumeric() => return Err("must start with an alphanumeric character"),
        Some(_) => {}
    }
    if chars.any(|c| !c.is_ascii_alphanumeric() && !"-+._".contains(c)) {
        return Err("character not allowed (only letters, digits and -+._)");
    }
    Ok(())
}

/// `want flag state`, each from dpkg's fixed vocabulary.
fn parse_status(v: &str) -> Result<State, String> {
    let words: Vec<&str> = v.split_ascii_whitespace().take(4).collect();
    let [want, flag, state] = words[..] else {
        return Err(format!("Status {:?}: expected three words", clip(v)));
    };
    if !["unknown", "install", "hold", "deinstall", "purge"].contains(&want) {
        return Err(format!("Status {:?}: unknown want", clip(v)));
    }
    if !["ok", "reinstreq", "hold", "hold-reinstreq"].contains(&flag) {
        return Err(format!("Status {:?}: unknown flag", clip(v)));
    }
    State::parse(state).ok_or_else(|| format!("Status {:?}: unknown state", clip(v)))
}

/// The errors dpkg's version parser raises (its warnings are not errors
/// here either): `[epoch:]upstream[-revision]`.
fn check_version(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("version string is empty");
    }
    if v.chars().any(char::is_whitespace) {
        return Err("version string has embedded spaces");
    }
    let rest = match v.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                return Err("epoch in version is not number");
            }
            if epoch.parse::<i32>().is_err() {
                return Err("epoch in version is too big");
            }
            if rest.is_empty() {
                return Err("nothing after colon in version number");
            }
            rest
        }
        None => v,
    };
    if let Some((upstream, revision)) = rest.rsplit_once('-') {
        if upstream.is_empty() {
            return Err("version number is empty");
        }
        if revision.is_empty() {
            return Err("revision number is empty");
        }
    }
    Ok(())
}

/// `Source: name` or `Source: name (version)`.
fn parse_source<'a>(v: &'a str, version: &'a str) -> Result<(&'a str, &'a str), String> {
    let (name, rest) = match v.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((n, r)) => (n, r.trim()),
        None => (v, ""),
    };
    check_name(name).map_err(|e| format!("invalid source name: {e}"))?;
    if rest.is_empty() {
        return Ok((name, version));
    }
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or("expected 'name (version)'")?
        .trim();
    check_version(inner).map_err(|e| format!("source version: {e}"))?;
    Ok((name, inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 150,000 stanzas (a 5 MB status file), each package listed twice:
    /// the later stanza wins, in file order. With a linear search per
    /// stanza this took minutes (hostile-input report, issue 16); with
    /// the index, well under a second in a debug build.
    #[test]
    fn many_stanzas_are_parsed_in_linear_time_and_later_ones_win() {
        let n = 75_000;
        let mut data = String::new();
        for round in 0..2 {
            for i in 0..n {
                data += &format!(
                    "Package: p{i}\nStatus: install ok installed\nVersion: 1.{round}\nArchitecture: amd64\n\n"
                );
            }
        }
        let got = parse(data.as_bytes(), MissingStatus::NotInstalled).unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got[0].name, "p0");
        assert_eq!(got[n - 1].name, format!("p{}", n - 1));
        assert!(got.iter().all(|e| e.version == "1.1"));
    }

    #[test]
    fn reads_source_with_its_own_version() {
        let data = b"Package: libpq5\nStatus: install ok installed\nVersion: 15.3-0+deb12u1\n\
Architecture: amd64\nSource: postgresql-15 (15.3-0+deb12u1a)\nDescription: x\n more\n";
        let got = parse(data, MissingStatus::NotInstalled).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].source_name, "postgresql-15");
        assert_eq!(got[0].source_version, "15.3-0+deb12u1a");
        assert_eq!(got[0].arch.as_deref(), Some("amd64"));
    }

    #[test]
    fn skips_config_files_and_not_installed() {
        let data = b"Package: a\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: b\nStatus: purge ok not-installed\n\nPackage: c\nStatus: install ok unpacked\nVersion: 2\n";
        let got = parse(data, MissingStatus::NotInstalled).unwrap();
        let names: Vec<_> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn missing_status_follows_the_file_kind() {
        let data = b"Package: dash\nVersion: 0.5.8-2.4\nArchitecture: amd64\n";
        assert!(parse(data, MissingStatus::NotInstalled).unwrap().is_empty());
        assert_eq!(parse(data, MissingStatus::InstalledIfVersioned).unwrap().len(), 1);
        let name_only = b"Package: debconf1\n\nPackage: x\nVersion: 1\n";
        assert_eq!(
            parse(name_only, MissingStatus::InstalledIfVersioned)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn rejects_what_dpkg_rejects() {
        let cases: &[&[u8]] = &[
            b"Package:\n",
            b"Version: 1\n",
            b"Package: -x\nStatus: install ok installed\nVersion: 1\n",
            b"Package: x\nStatus: install ok installed\n",
            b"Package: x\nStatus: install ok installed\nVersion: a1.0-\n",
            b"Package: x\nStatus: install ok installed\nVersion: x:1\n",
            b"Package: x\nStatus: bogus ok installed\nVersion: 1\n",
            b"Package: x\nStatus: install ok installed\nVersion: 1\nSource: y (1\n",
            b"Package: x\nno colon here\n",
            b" leading continuation\n",
            b"Package: x\n: value\n",
        ];
        for c in cases {
            assert!(
                parse(c, MissingStatus::InstalledIfVersioned).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn later_duplicate_replaces_earlier() {
        let data = b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
Package: a\nStatus: install ok installed\nVersion: 2\nArchitecture: amd64\n\n\
Package: a\nStatus: install ok installed\nVersion: 2\nArchitecture: i386\n";
        let got = parse(data, MissingStatus::NotInstalled).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].version, "2");
    }
}
