//! `pnpm-lock.yaml` v5, v6 and v9, read line by line.
//!
//! Why no YAML parser: we need the keys of one top-level mapping
//! (`packages:`) and the `lockfileVersion`, and pnpm writes its lockfile
//! itself (js-yaml's block style: two-space indentation, one key per line,
//! keys quoted with `'` when YAML needs it). A line scan reads exactly that
//! in one pass, allocates nothing per line, cannot be made to recurse or to
//! expand aliases (YAML's "billion laughs"), and needs no dependency: the
//! well-kept Rust YAML crates parse the whole document into a tree first,
//! and `serde_yaml` is unmaintained. Anything else in the file is ignored.
//!
//! Package keys by version:
//! - v5: `/name/1.0.0`, `/@scope/name/1.0.0_peer@2.0.0` (peer suffix after `_`)
//! - v6: `/name@1.0.0`, `/@scope/name@1.0.0(peer@2.0.0)`
//! - v9: `name@1.0.0`, `'@scope/name@1.0.0'` (peers only under `snapshots:`,
//!   which is not read)
//!
//! Keys of other sources (`github.com/…`, `name@https://…`, `file:`) have no
//! version and are skipped. Files holding several YAML documents (pnpm 11
//! writes the package manager's own lockfile first) are read whole: every
//! document's `packages`.

use strata_proto::Evidence;

use super::{add, split_at_version, unquote};
use crate::analyzers::common::{FileFinds, is_version, lines};

pub(super) fn parse(data: &[u8], finds: &mut FileFinds<'_>) {
    // Before any `lockfileVersion`: the v6+ form (pnpm's current one).
    let mut slash_form = false;
    let mut in_packages = false;
    let mut bad_lines = 0usize;
    for (_, line) in lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            bad_lines += 1;
            continue;
        };
        if line.is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            in_packages = line.trim_end() == "packages:";
            if let Some(v) = line.strip_prefix("lockfileVersion:") {
                let major = unquote(v).split('.').next().unwrap_or_default();
                slash_form = major.parse::<u32>().is_ok_and(|m| m < 6);
            }
            continue;
        }
        if !in_packages {
            continue;
        }
        let Some(rest) = line.strip_prefix("  ").filter(|r| !r.starts_with(' ')) else {
            continue;
        };
        let Some(key) = key_of(rest) else { continue };
        let Some((name, version)) = name_version(key, slash_form) else {
            continue;
        };
        if is_version(version) && !add(finds, name, version, Evidence::Lockfile) {
            return;
        }
    }
    if bad_lines > 0 {
        finds.warn(format_args!("{bad_lines} lines not UTF-8: skipped"));
    }
}

/// The key of a `key:` or `key: value` line, unquoted.
fn key_of(rest: &str) -> Option<&str> {
    let rest = rest.trim_end();
    for q in ['\'', '"'] {
        if let Some(inner) = rest.strip_prefix(q) {
            let end = inner.find(q)?;
            return inner[end + 1..].starts_with(':').then_some(&inner[..end]);
        }
    }
    // `key: value`, or `key:` ending the line (a multi-byte last
    // character is not a colon: found by fuzzing, it was sliced through).
    let key = match rest.find(": ") {
        Some(end) => &rest[..end],
        None => rest.strip_suffix(':')?,
    };
    Some(unquote(key))
}

/// (name, version) of a package key; the version without peer suffixes.
fn name_version(key: &str, slash_form: bool) -> Option<(&str, &str)> {
    let (name, version) = match key.strip_prefix('/') {
        Some(k) if slash_form => {
            // `@scope/name/1.0.0_x` or `name/1.0.0_x`.
            let skip = if k.starts_with('@') { k.find('/')? + 1 } else { 0 };
            let slash = skip + k[skip..].find('/')?;
            (&k[..slash], &k[slash + 1..])
        }
        Some(k) => split_at_version(k)?,
        None if slash_form => return None,
        None => split_at_version(key)?,
    };
    let end = version.find(['(', '_']).unwrap_or(version.len());
    Some((name, &version[..end]))
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys_ending_in_a_multi_byte_character_are_not_sliced_through() {
        // Found by fuzzing (fuzz/seeds/npm): the last byte of `К` was
        // taken for the colon's place, and the slice panicked.
        assert_eq!(key_of("/@sК"), None);
        assert_eq!(key_of("/a@1.0.0:"), Some("/a@1.0.0"));
        assert_eq!(key_of("lockfileVersion: 5.4"), Some("lockfileVersion"));
        assert_eq!(key_of("'/b@2.0.0':"), Some("/b@2.0.0"));
        assert_eq!(key_of("dev: false"), Some("dev"));
        assert_eq!(key_of(""), None);
    }
}
