//! An installed `.gemspec`, as RubyGems writes it
//! (`Gem::Specification#to_ruby`): `s.name = "x".freeze`,
//! `s.version = "1.0"`, one per line. Never evaluated.

use strata_proto::Evidence;

use super::ECOSYSTEM;
use crate::analyzers::common::{FileFinds, lines};

pub(super) fn parse(file_name: &str, data: &[u8], finds: &mut FileFinds<'_>) {
    let stem = file_name.strip_suffix(".gemspec").unwrap_or(file_name);
    let (mut name, mut version) = (None, None);
    for (_, line) in lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let line = line.trim();
        if let Some(v) = assigned(line, "name") {
            name.get_or_insert(v);
        } else if let Some(v) = assigned(line, "version") {
            version.get_or_insert(v);
        }
        if name.is_some() && version.is_some() {
            break;
        }
    }
    let (name, version) = match (name, version) {
        (Some(n), Some(v)) => {
            if stem != format!("{n}-{v}") && !stem.starts_with(&format!("{n}-{v}-")) {
                finds.warn(format_args!("file name disagrees with the gemspec's {n} {v}"));
            }
            (n, v)
        }
        _ => match from_file_name(stem) {
            Some(nv) => nv,
            None => return finds.warn("no name and version in the file name or the gemspec: skipped"),
        },
    };
    finds.add(ECOSYSTEM, name, version, Evidence::Installed);
}

/// The string of `s.FIELD = "value"` (`.freeze`, `'value'`,
/// `Gem::Version.new("value")` allowed), or `None` for any other line.
fn assigned<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let rest = line
        .strip_prefix("s.")?
        .strip_prefix(field)?
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("Gem::Version.new(").unwrap_or(rest);
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let inner = &rest[1..];
    let end = inner.find(q)?;
    Some(&inner[..end])
}

/// `NAME-VERSION[-PLATFORM]`: the version is the first `-`-separated part
/// that starts with a digit (gem versions have no `-`; platforms start with
/// a letter: `x86_64-linux`, `java`).
fn from_file_name(stem: &str) -> Option<(&str, &str)> {
    let mut start = 0;
    while let Some(i) = stem[start..].find('-') {
        let dash = start + i;
        let rest = &stem[dash + 1..];
        if rest.starts_with(|c: char| c.is_ascii_digit()) && dash > 0 {
            let version = rest.split('-').next().unwrap_or(rest);
            return Some((&stem[..dash], version));
        }
        start = dash + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_assignments() {
        assert_eq!(from_file_name("rack-2.2.8"), Some(("rack", "2.2.8")));
        assert_eq!(
            from_file_name("nokogiri-1.15.4-x86_64-linux"),
            Some(("nokogiri", "1.15.4"))
        );
        assert_eq!(
            from_file_name("aws-sdk-core-3.1.0"),
            Some(("aws-sdk-core", "3.1.0"))
        );
        assert_eq!(from_file_name("bundler"), None);
        assert_eq!(from_file_name("-1.0"), None);
        assert_eq!(assigned(r#"s.name = "json".freeze"#, "name"), Some("json"));
        assert_eq!(assigned("s.version = '2.6.3'", "version"), Some("2.6.3"));
        assert_eq!(
            assigned(r#"s.version = Gem::Version.new("1.0")"#, "version"),
            Some("1.0")
        );
        assert_eq!(assigned("s.version = JSON::VERSION", "version"), None);
        assert_eq!(assigned(r#"s.name_x = "a""#, "name"), None);
        assert_eq!(assigned(r#"s.summary = "a""#, "name"), None);
    }
}
