//! `Gemfile.lock`: Bundler's sections, read line by line.

use strata_proto::Evidence;

use super::ECOSYSTEM;
use crate::analyzers::common::{FileFinds, is_version, lines};

pub(super) fn parse(data: &[u8], finds: &mut FileFinds<'_>) {
    // The evidence of the current section's specs, if it has packages.
    let mut section: Option<Evidence> = None;
    let mut in_specs = false;
    for (_, line) in lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if !line.starts_with(' ') {
            section = match line.trim_end() {
                "GEM" | "GIT" => Some(Evidence::Lockfile),
                "PATH" => Some(Evidence::App),
                _ => None,
            };
            in_specs = false;
            continue;
        }
        let Some(evidence) = section else { continue };
        if let Some(field) = line.strip_prefix("  ").filter(|f| !f.starts_with(' ')) {
            in_specs = field.trim_end() == "specs:";
            continue;
        }
        let Some(spec) = line.strip_prefix("    ").filter(|s| !s.starts_with(' ')) else {
            continue;
        };
        if !in_specs {
            continue;
        }
        // `name (version[-platform])`
        let Some((name, rest)) = spec.split_once(" (") else {
            continue;
        };
        let Some(version) = rest.trim_end().strip_suffix(')') else {
            continue;
        };
        let version = version.split('-').next().unwrap_or(version);
        if is_version(version) && !finds.add(ECOSYSTEM, name, version, evidence) {
            return;
        }
    }
}
