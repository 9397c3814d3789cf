//! ruby: installed gems from their specifications, and `Gemfile.lock`.
//!
//! Reads:
//! - `…/specifications/NAME-VERSION[-PLATFORM].gemspec` and the default
//!   gems' `…/specifications/default/*.gemspec` (RubyGems' installed
//!   specifications: `/usr/local/lib/ruby/gems/3.2.0/`,
//!   `/usr/local/bundle/`, `vendor/bundle/ruby/3.2.0/`): evidence
//!   `Installed`. The file name names the gem; the file's `s.name` and
//!   `s.version` lines (as RubyGems writes them, `"x".freeze`) confirm it,
//!   and win when both are there (a file name whose version part is
//!   ambiguous, `name-with-1digit-2.0`, is then still right). A file whose
//!   lines disagree with its name is a warning and yields what the lines
//!   say. The file is never evaluated: a `.gemspec` is Ruby code.
//! - `Gemfile.lock` and `gems.locked` (Bundler): the `specs:` of the `GEM`
//!   and `GIT` sections (evidence `Lockfile`) and of `PATH` sections (the
//!   application's own gems: evidence `App`). A platform suffix
//!   (`nokogiri (1.15.4-x86_64-linux)`) is not part of the version.
//!   Dependencies (six-space lines), `PLATFORMS`, `DEPENDENCIES`,
//!   `CHECKSUMS` are not packages.
//!
//! A `.gemspec` elsewhere (a gem's source tree) is not read: it is code that
//! computes its version. Contract: every problem is a warning naming the
//! file; never an error. Returns empty when handed no files.

mod gemfile_lock;
mod gemspec;

use strata_proto::Ecosystem;

use super::common::{file_name, parent, per_file};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "ruby";
const ECOSYSTEM: Ecosystem = Ecosystem::RubyGems;

/// Largest file we read: a `Gemfile.lock` of a large Rails app is tens of
/// KiB, an installed gemspec a few KiB.
pub(crate) const MAX_FILE_BYTES: u64 = 8 << 20;

pub struct Ruby;

fn is_gemspec(path: &str) -> bool {
    path.ends_with(".gemspec") && {
        let dir = parent(path);
        dir.ends_with("/specifications") || dir.ends_with("/specifications/default")
    }
}

fn is_lock(path: &str) -> bool {
    matches!(file_name(path), "Gemfile.lock" | "gems.locked")
}

impl Analyzer for Ruby {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        is_gemspec(path) || is_lock(path)
    }

    fn max_file_bytes(&self, _path: &str) -> u64 {
        MAX_FILE_BYTES
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let cap = |p: &str| self.wants(p).then_some(MAX_FILE_BYTES);
        Ok(per_file(NAME, files, cap, |file, finds| {
            if is_lock(file.path) {
                gemfile_lock::parse(file.data, finds);
            } else {
                gemspec::parse(file_name(file.path), file.data, finds);
            }
        }))
    }
}

#[cfg(test)]
mod tests;
