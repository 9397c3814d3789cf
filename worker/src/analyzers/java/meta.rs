//! What a Java archive says about itself: its Maven `pom.properties`, its
//! manifest's main section, its file name. Parsing only; which source wins
//! is decided in `mod.rs`.

use crate::analyzers::common::MAX_FIELD_LEN;

/// Longest group, artifact or version accepted (Maven coordinates are far
/// shorter; anything longer is not one).
const MAX_COORDINATE: usize = 256;

/// What one archive's interesting entries held.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub poms: Vec<Pom>,
    pub manifest: Option<Manifest>,
}

/// One `META-INF/maven/<group>/<artifact>/pom.properties`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pom {
    pub group: String,
    pub artifact: String,
    pub version: String,
}

/// The attributes of a manifest's main section that are read (names are
/// case-insensitive; values with continuation lines joined).
#[derive(Debug, Default)]
pub(super) struct Manifest {
    attributes: Vec<(&'static str, String)>,
}

/// The main-section attributes kept.
const ATTRIBUTES: [&str; 9] = [
    "Implementation-Title",
    "Implementation-Version",
    "Implementation-Vendor-Id",
    "Bundle-SymbolicName",
    "Bundle-Name",
    "Bundle-Version",
    "Specification-Title",
    "Specification-Version",
    "Group-Id",
];

impl Manifest {
    /// A kept attribute's value, when not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// Parses a `pom.properties` (Java properties: `key=value` or `key: value`,
/// `#`/`!` comments); the three coordinates must be there and valid.
pub(super) fn pom_properties(data: &[u8]) -> Result<Pom, String> {
    let text = String::from_utf8_lossy(data);
    let (mut group, mut artifact, mut version) = (None, None, None);
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            continue;
        };
        let value = unescape(line[at + 1..].trim());
        match line[..at].trim_end() {
            "groupId" => group = Some(value),
            "artifactId" => artifact = Some(value),
            "version" => version = Some(value),
            _ => {}
        }
    }
    let field = |name: &str, value: Option<String>, valid: fn(&str) -> bool| {
        let value = value.ok_or_else(|| format!("pom.properties without {name}"))?;
        if valid(&value) {
            Ok(value)
        } else {
            Err(format!(
                "pom.properties: {name} {:?} is not valid",
                super::common::clip(&value)
            ))
        }
    };
    Ok(Pom {
        group: field("groupId", group, is_identifier)?,
        artifact: field("artifactId", artifact, is_identifier)?,
        version: field("version", version, is_version)?,
    })
}

/// Drops the backslash of properties escapes (`\:`, `\=`, `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Parses a manifest's main section (up to its first empty line). `cut`:
/// the bytes stopped at a cap, so the last line may be partial and is
/// dropped.
pub(super) fn manifest(data: &[u8], cut: bool) -> Manifest {
    // Lines end with `\r\n`, `\n` or `\r`.
    let text = String::from_utf8_lossy(data)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut lines: Vec<&str> = text.split('\n').collect();
    if cut {
        lines.pop();
    }
    let mut manifest = Manifest::default();
    let mut current: Option<usize> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if let Some(more) = line.strip_prefix(' ') {
            if let Some(i) = current {
                let value = &mut manifest.attributes[i].1;
                if value.len() + more.len() <= MAX_FIELD_LEN {
                    value.push_str(more);
                }
            }
            continue;
        }
        current = None;
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let Some(known) = ATTRIBUTES.iter().find(|a| a.eq_ignore_ascii_case(name.trim())) else {
            continue;
        };
        if manifest.get(known).is_some() || value.len() > MAX_FIELD_LEN {
            continue;
        }
        manifest.attributes.retain(|(n, _)| n != known);
        current = Some(manifest.attributes.len());
        manifest.attributes.push((known, value.trim_start().to_owned()));
    }
    manifest
}

/// A name and version from an archive's file name
/// (`log4j-core-2.14.1.jar` → `log4j-core`, `2.14.1`): the version starts at
/// the first `-` followed by a digit; without one the whole stem is the
/// name and there is no version.
#[derive(Debug, PartialEq)]
pub(super) struct FileName {
    pub name: Option<String>,
    pub version: Option<String>,
}

pub(super) fn file_name(path: &str) -> FileName {
    let base = path.rsplit(['/', '!']).next().unwrap_or_default();
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    let split = stem
        .char_indices()
        .find(|&(i, c)| c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| i);
    let (name, version) = match split {
        Some(i) => (&stem[..i], Some(&stem[i + 1..])),
        None => (stem, None),
    };
    let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic()) && is_identifier(name);
    FileName {
        name: name_ok.then(|| name.to_owned()),
        version: version.filter(|v| is_version(v)).map(str::to_owned),
    }
}

/// Group, artifact and version from a manifest, or `None` when it gives no
/// version or no artifact can be named.
///
/// - artifact: the file name's name (as Syft: manifests name projects, not
///   artifacts), else the first of `Implementation-Title`, `Bundle-Name`,
///   `Specification-Title` that is a valid artifact id (no spaces);
/// - version: `Implementation-Version`, `Bundle-Version`,
///   `Specification-Version`;
/// - group: [`manifest_group`], else the artifact itself (as Syft does:
///   right for `commons-io:commons-io`, `junit:junit`, `log4j:log4j`).
pub(super) fn from_manifest(m: &Manifest, file: &FileName) -> Option<(String, String, String)> {
    let version = [
        "Implementation-Version",
        "Bundle-Version",
        "Specification-Version",
    ]
    .iter()
    .filter_map(|a| m.get(a))
    .find(|v| is_version(v))?;
    let artifact = file.name.clone().or_else(|| {
        ["Implementation-Title", "Bundle-Name", "Specification-Title"]
            .iter()
            .filter_map(|a| m.get(a))
            .find(|v| is_identifier(v))
            .map(str::to_owned)
    })?;
    let group = manifest_group(m, &artifact).unwrap_or_else(|| artifact.clone());
    Some((group, artifact, version.to_owned()))
}

/// The group a manifest suggests for `artifact`:
/// 1. `Implementation-Vendor-Id` (Maven's archiver writes the group id
///    there), then `Group-Id`;
/// 2. `Bundle-SymbolicName` (OSGi directives dropped), undoing the Maven
///    bundle plugin's default naming: `<group>.<artifact>`
///    (`com.fasterxml.jackson.core.jackson-databind`) and `<group>.<rest>`
///    where the artifact is `<last group segment>-<rest>`
///    (`org.apache.logging.log4j.core` for `log4j-core`) give the group;
///    any other dotted name is taken whole, as Syft takes it.
fn manifest_group(m: &Manifest, artifact: &str) -> Option<String> {
    if let Some(id) = ["Implementation-Vendor-Id", "Group-Id"]
        .iter()
        .filter_map(|a| m.get(a))
        .find(|v| is_identifier(v))
    {
        return Some(id.to_owned());
    }
    let bsn = m.get("Bundle-SymbolicName")?;
    let bsn = bsn.split(';').next().unwrap_or_default().trim();
    if !bsn.contains('.') || !is_identifier(bsn) {
        return None;
    }
    let (prefix, last) = bsn.rsplit_once('.')?;
    let parent = prefix.rsplit('.').next().unwrap_or(prefix);
    let joined = |sep: &str| artifact == format!("{parent}{sep}{last}");
    if !prefix.is_empty() && (last == artifact || joined("-") || joined(".")) {
        return Some(prefix.to_owned());
    }
    Some(bsn.to_owned())
}

/// A Maven group or artifact id: `[A-Za-z0-9_.-]+`, bounded.
pub(super) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_COORDINATE
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A version: no spaces or controls, no unexpanded `${property}`, bounded.
pub(super) fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_COORDINATE
        && !s.contains("${")
        && s.chars().all(|c| !c.is_whitespace() && !c.is_control())
}
