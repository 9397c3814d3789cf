//! apk: Alpine packages from `/lib/apk/db/installed`.
//!
//! The database is blank-line-separated records of `X:value` lines; we read
//! `P` (name), `V` (version), `A` (arch) and `o` (origin, the source
//! package), first value of each per record. Every record in `installed` is
//! an installed package.
//!
//! Contract: never an error for a malformed file: a record without `P` or
//! `V` is skipped with a warning, a line that is not `X:value` is skipped
//! with a warning, so a damaged database still yields its good records.
//! `source_name` is the origin, or the package's own name when the record
//! has none (apk's rule: a package is its own origin). The ecosystem is
//! always `Alpine` (composition may switch Wolfi/Chainguard images from
//! os-release). Returns empty when handed no files.

use strata_proto::{Ecosystem, Package};

use super::common::{MAX_PACKAGES, field_str, lines, os_purl, warn};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "apk";
const INSTALLED: &str = "/lib/apk/db/installed";

pub struct Apk;

/// One record's fields of interest, as raw bytes.
#[derive(Default)]
struct Record<'a> {
    start_line: usize,
    any_field: bool,
    name: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
}

impl Analyzer for Apk {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        path == INSTALLED
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let mut analysis = Analysis::default();
        for file in files.iter().filter(|f| self.wants(f.path)) {
            parse_file(file, &mut analysis)?;
        }
        Ok(analysis)
    }
}

fn parse_file(file: &LayerFile<'_>, out: &mut Analysis) -> Result<(), AnalyzeError> {
    let mut rec = Record::default();
    for (n, line) in lines(file.data) {
        if line.is_empty() {
            finish(file.path, &rec, out)?;
            rec = Record::default();
            continue;
        }
        if line.len() < 2 || line[1] != b':' {
            warn(
                &mut out.warnings,
                format!("{NAME}: {}: line {n}: not a 'X:value' line", file.path),
            );
            continue;
        }
        if !rec.any_field {
            rec.any_field = true;
            rec.start_line = n;
        }
        let value = &line[2..];
        let slot = match line[0] {
            b'P' => &mut rec.name,
            b'V' => &mut rec.version,
            b'A' => &mut rec.arch,
            b'o' => &mut rec.origin,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    finish(file.path, &rec, out)
}

/// Turns one record into a package, or a warning when it is unusable.
fn finish(path: &str, rec: &Record<'_>, out: &mut Analysis) -> Result<(), AnalyzeError> {
    if !rec.any_field {
        return Ok(());
    }
    let skip = |out: &mut Analysis, why: String| {
        warn(
            &mut out.warnings,
            format!("{NAME}: {path}: record at line {}: {why}", rec.start_line),
        );
    };
    let field = |name: &str, v: Option<&[u8]>| -> Result<Option<String>, String> {
        match v {
            None => Ok(None),
            Some(v) => Ok(Some(field_str(name, v)?.to_owned()).filter(|s| !s.is_empty())),
        }
    };
    let parsed = (|| {
        Ok::<_, String>((
            field("P", rec.name)?.ok_or("missing P (name)")?,
            field("V", rec.version)?.ok_or("missing V (version)")?,
            field("A", rec.arch)?,
            field("o", rec.origin)?,
        ))
    })();
    let (name, version, arch, origin) = match parsed {
        Ok(p) => p,
        Err(why) => {
            skip(out, why);
            return Ok(());
        }
    };
    let purl = match os_purl(Ecosystem::Alpine, &name, &version, arch.as_deref()) {
        Ok(p) => p,
        Err(why) => {
            skip(out, why);
            return Ok(());
        }
    };
    if out.packages.len() >= MAX_PACKAGES {
        return Err(AnalyzeError {
            analyzer: NAME,
            path: path.to_owned(),
            reason: format!("more than {MAX_PACKAGES} packages"),
        });
    }
    out.packages.push(Package {
        ecosystem: Ecosystem::Alpine,
        source_name: Some(origin.unwrap_or_else(|| name.clone())),
        name,
        version,
        source_version: None,
        arch,
        purl,
        path: path.to_owned(),
        layer: None,
        evidence: Default::default(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze(data: &[u8]) -> Analysis {
        Apk.analyze(&[LayerFile {
            path: INSTALLED,
            data,
        }])
        .unwrap()
    }

    #[test]
    fn reads_name_version_arch_origin() {
        let a = analyze(
            b"C:Q1x=\nP:libcrypto3\nV:3.1.4-r5\nA:aarch64\no:openssl\nF:lib\nR:x\n\nP:musl\nV:1.2.4-r2\n",
        );
        assert_eq!(a.packages.len(), 2);
        let p = &a.packages[0];
        assert_eq!((p.name.as_str(), p.version.as_str()), ("libcrypto3", "3.1.4-r5"));
        assert_eq!(p.source_name.as_deref(), Some("openssl"));
        assert_eq!(p.arch.as_deref(), Some("aarch64"));
        assert_eq!(p.purl, "pkg:apk/alpine/libcrypto3@3.1.4-r5?arch=aarch64");
        assert_eq!(p.ecosystem, Ecosystem::Alpine);
        // No origin: the package is its own origin.
        assert_eq!(a.packages[1].source_name.as_deref(), Some("musl"));
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn bad_records_are_warnings() {
        let a = analyze(b"asdf\n\nP:nover\nA:x86_64\n\nP:ok\nV:1-r0\n");
        assert_eq!(a.packages.len(), 1);
        assert_eq!(a.packages[0].name, "ok");
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
    }

    #[test]
    fn ignores_other_paths() {
        let a = Apk
            .analyze(&[LayerFile {
                path: "/etc/apk/world",
                data: b"P:x\nV:1\n",
            }])
            .unwrap();
        assert!(a.packages.is_empty());
    }
}
