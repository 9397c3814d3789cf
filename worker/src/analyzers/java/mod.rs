//! Java archives (`.jar`, `.war`, `.ear`, `.jpi`, `.hpi`): the Maven
//! artifacts they hold, read as the file streams past, one pass, never
//! captured whole (a WAR can be hundreds of MB).
//!
//! A file is opened when its path has one of those extensions and its
//! first bytes are a zip local file header (`PK\x03\x04`); a self-executing
//! jar (a shell script before the zip) is not. `zip.rs` walks the local
//! entries as they arrive (see its header for the states, what is inflated
//! and the caps) and stops at the central directory.
//!
//! # What is listed, per archive (precedence)
//! 1. Every `META-INF/maven/<group>/<artifact>/pom.properties`: the primary
//!    source. A shaded (uber) jar has several: each is listed.
//! 2. `META-INF/MANIFEST.MF`'s main section, when no `pom.properties` is
//!    the jar's own (see [`meta::from_manifest`]: version from
//!    `Implementation-Version`, `Bundle-Version`, `Specification-Version`;
//!    artifact from the file name, else a title; group from
//!    `Implementation-Vendor-Id` or the `Bundle-SymbolicName`, else the
//!    artifact). A `pom.properties` is taken for the jar's own when its
//!    artifact is the one the manifest names (or one of its titles), its
//!    version the manifest's (but for trailing `.0`s), or its group the
//!    manifest's (or a prefix of it): Debian's `guice.jar` embeds only cglib's
//!    `pom.properties` (3.2.12) and is listed from its manifest too
//!    (`com.google.inject:guice` 4.2.3), while `maven3-slf4j-provider.jar`,
//!    whose own `pom.properties` has the manifest's version, is not listed
//!    twice.
//! 3. Only when neither gives a package, and the archive was read to its
//!    central directory: the file name (`log4j-core-2.14.1.jar` →
//!    `log4j-core`, `2.14.1`), with [`Evidence::FileName`]. The group is
//!    unknown: as Syft, the artifact stands for it
//!    (`log4j-core:log4j-core`, `pkg:maven/log4j-core/log4j-core@2.14.1`),
//!    which is right for the old artifacts whose group is their name
//!    (`commons-io`, `junit`, `log4j`) and matches nothing otherwise.
//!
//! Nested archives (`WEB-INF/lib/*.jar`, `BOOT-INF/lib/*.jar`, any entry
//! with one of the extensions) are read the same way, recursively, as they
//! are inflated, to [`Limits::max_nesting_depth`](crate::layer::Limits)
//! (deeper: a warning, and the entry is skipped unread). Packages are
//! named `group:artifact` (OSV's Maven names), purl
//! `pkg:maven/<group>/<artifact>@<version>`, path the archive's
//! (`/app.war!/WEB-INF/lib/x.jar` inside another); one artifact listed twice
//! in one archive is listed once.
//!
//! # Not done
//! `pom.xml` (its properties and parents need resolving), manifests'
//! named sections, Syft's table of known groups (`spring-core` →
//! `org.springframework`), archives whose entries are STORED with a data
//! descriptor (needs the central directory, at the end: a warning), and
//! encrypted entries.

mod meta;
mod zip;

use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, Evidence, Package};

use super::common::{self, MAX_PACKAGES};
use super::{Analysis, Analyzer, EntryHead, EntrySink};
use crate::layer::Nesting;
use meta::Found;
use zip::{Archive, Ctx, LOCAL};

/// Most bytes inflated for one top-level archive, nested ones included:
/// past it, reading stops with a warning (a zip bomb, or an absurd WAR).
const MAX_INFLATED: u64 = 1 << 30;

pub struct JavaArchives;

impl Analyzer for JavaArchives {
    fn name(&self) -> &'static str {
        "java-archive"
    }

    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> bool {
        true
    }

    fn open(&self, entry: &EntryHead<'_>) -> Option<Box<dyn EntrySink>> {
        if !entry.head.starts_with(&LOCAL) || !zip::is_archive_name(entry.path) {
            return None;
        }
        Sink::new(entry, MAX_INFLATED).map(|s| Box::new(s) as Box<dyn EntrySink>)
    }
}

/// One top-level archive being read.
struct Sink {
    archive: Option<Archive>,
    ctx: Ctx,
}

impl Sink {
    /// `None` when the nesting cap allows no archive at all.
    fn new(entry: &EntryHead<'_>, max_inflated: u64) -> Option<Sink> {
        let nesting = Nesting::default().enter(entry.limits, "", entry.path).ok()?;
        Some(Sink {
            archive: Some(Archive::new(entry.path.to_owned(), nesting)),
            ctx: Ctx {
                limits: *entry.limits,
                inflated: 0,
                max_inflated,
                exhausted: false,
                warnings: Vec::new(),
                packages: Vec::new(),
            },
        })
    }
}

impl EntrySink for Sink {
    fn write(&mut self, chunk: &[u8]) -> bool {
        self.archive
            .as_mut()
            .is_some_and(|a| a.write(chunk, &mut self.ctx))
    }

    fn finish(mut self: Box<Self>, _complete: bool) -> Analysis {
        // A cut file shows as an archive without its central directory.
        if let Some(archive) = self.archive.take() {
            archive.finish(&mut self.ctx);
        }
        let mut packages = std::mem::take(&mut self.ctx.packages);
        // Outer archives first (a path sorts before its nested ones).
        packages.sort_by(|a, b| (&a.path, &a.name, &a.version).cmp(&(&b.path, &b.name, &b.version)));
        Analysis {
            packages,
            os_release: None,
            warnings: self.ctx.warnings,
        }
    }
}

/// One archive was read: its packages, by the precedence in the module
/// header, join `ctx.packages`. `complete`: read to its central directory.
fn archive_packages(path: &str, found: &Found, complete: bool, ctx: &mut Ctx) {
    let mut listed: Vec<(String, String, Evidence)> = found
        .poms
        .iter()
        .map(|p| {
            (
                format!("{}:{}", p.group, p.artifact),
                p.version.clone(),
                Evidence::Installed,
            )
        })
        .collect();
    let file = meta::file_name(path);
    if let Some(m) = &found.manifest
        && let Some((group, artifact, version)) = meta::from_manifest(m, &file)
    {
        let titles = ["Implementation-Title", "Bundle-Name", "Specification-Title"].map(|t| m.get(t));
        let own = |p: &meta::Pom| {
            p.artifact == artifact
                || titles.contains(&Some(&p.artifact))
                || same_release(&p.version, &version)
                || group
                    .strip_prefix(&p.group)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        if !found.poms.iter().any(own) {
            listed.push((format!("{group}:{artifact}"), version, Evidence::Installed));
        }
    }
    if listed.is_empty()
        && complete
        && let (Some(name), Some(version)) = (&file.name, &file.version)
    {
        listed.push((format!("{name}:{name}"), version.clone(), Evidence::FileName));
    }
    let mut seen = std::collections::HashSet::new();
    listed.retain(|(name, version, _)| seen.insert((name.clone(), version.clone())));
    for (name, version, evidence) in listed {
        if ctx.packages.len() >= MAX_PACKAGES {
            ctx.warn(format!(
                "{path}: more than {MAX_PACKAGES} packages, the rest not listed"
            ));
            return;
        }
        match Purl::package(Ecosystem::Maven, &name, &version, None) {
            Ok(purl) => ctx.packages.push(Package {
                ecosystem: Ecosystem::Maven,
                purl: purl.to_string(),
                name,
                version,
                source_name: None,
                source_version: None,
                arch: None,
                path: path.to_owned(),
                layer: None,
                evidence,
            }),
            Err(e) => ctx.warn(format!("{path}: {}: {e}", common::clip(&name))),
        }
    }
}

/// Versions equal but for trailing `.0`s (OSGi's `Bundle-Version` has
/// three parts: `1.3.0` for Maven's `1.3`).
fn same_release(a: &str, b: &str) -> bool {
    let trim = |v: &str| {
        let mut v = v;
        while let Some(shorter) = v.strip_suffix(".0") {
            v = shorter;
        }
        v.to_owned()
    };
    trim(a) == trim(b)
}

#[cfg(test)]
mod tests;
