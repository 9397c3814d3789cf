//! `yarn.lock`, v1 (classic) and berry (v2+), read line by line.
//!
//! Both write one entry per resolved package: an unindented header listing
//! the specifiers it satisfies (`"a@^1.0.0", "a@^1.1.0":` or berry's
//! `"a@npm:^1.0.0, a@npm:^1.1.0":`), then two-space-indented fields:
//! `version "1.2.0"` (v1) or `version: 1.2.0` and
//! `resolution: "a@npm:1.2.0"` (berry). The name is the resolution's, else
//! the first specifier's; an alias (`x@npm:real@^1`) names the real package.
//! Skipped: berry's `__metadata`, and `workspace:`, `link:`, `portal:`,
//! `file:`, `exec:` and `patch:` entries (the project's own code, or a
//! patched copy of a package the lockfile also lists plainly).

use strata_proto::Evidence;

use super::{add, split_at_version, unquote};
use crate::analyzers::common::{FileFinds, is_version, lines};

const LOCAL_PROTOCOLS: &[&str] = &["workspace:", "link:", "portal:", "file:", "exec:", "patch:"];

#[derive(Default)]
struct Entry<'a> {
    header: &'a str,
    version: Option<&'a str>,
    resolution: Option<&'a str>,
}

pub(super) fn parse(data: &[u8], finds: &mut FileFinds<'_>) {
    let mut entry: Option<Entry<'_>> = None;
    let mut bad_lines = 0usize;
    for (_, line) in lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            bad_lines += 1;
            continue;
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            if let Some(e) = entry.take()
                && !finish(&e, finds)
            {
                return;
            }
            entry = line.strip_suffix(':').map(|header| Entry {
                header,
                ..Entry::default()
            });
            continue;
        }
        let Some(e) = entry.as_mut() else { continue };
        let Some(field) = line.strip_prefix("  ").filter(|f| !f.starts_with(' ')) else {
            continue;
        };
        if let Some(v) = field
            .strip_prefix("version:")
            .or_else(|| field.strip_prefix("version "))
        {
            e.version.get_or_insert(unquote(v));
        } else if let Some(r) = field.strip_prefix("resolution:") {
            e.resolution.get_or_insert(unquote(r));
        }
    }
    if let Some(e) = entry {
        finish(&e, finds);
    }
    if bad_lines > 0 {
        finds.warn(format_args!("{bad_lines} lines not UTF-8: skipped"));
    }
}

/// Adds the entry's package; false when the cap says stop.
fn finish(e: &Entry<'_>, finds: &mut FileFinds<'_>) -> bool {
    if e.header.starts_with("__metadata") {
        return true;
    }
    let Some(version) = e.version.filter(|v| is_version(v)) else {
        return true;
    };
    let first = unquote(e.header.split(", ").next().unwrap_or_default());
    let spec = e.resolution.unwrap_or(first);
    let Some((mut name, mut range)) = split_at_version(spec) else {
        return true;
    };
    // An alias: `x@npm:real@^1` (v1) or `x@npm:real@npm:^1`; berry's own
    // `a@npm:^1` names `a`.
    if let Some(real) = range.strip_prefix("npm:")
        && (real.starts_with('@') || !real.starts_with(|c: char| c.is_ascii_digit() || "^~<>=*".contains(c)))
        && !real.is_empty()
    {
        match split_at_version(real) {
            Some((n, r)) => (name, range) = (n, r),
            None => (name, range) = (real, ""),
        }
    }
    if LOCAL_PROTOCOLS.iter().any(|p| range.starts_with(p)) {
        return true;
    }
    add(finds, name, version, Evidence::Lockfile)
}
