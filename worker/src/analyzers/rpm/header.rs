//! The rpm header blob stored in every rpmdb backend: the few tags we need.
//!
//! Layout (all integers big-endian): `il: u32`, `dl: u32`, then `il` index
//! entries of 16 bytes (`tag, type, offset, count`), then `dl` bytes of
//! data store that the offsets point into. Written by hand because no
//! maintained crate reads a bare header blob from memory; every offset is
//! bounds-checked and the counts are capped, so a hostile blob is an error,
//! never a panic or a large allocation.

use crate::analyzers::common::MAX_FIELD_LEN;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own limits (`hdrchkTags`, `hdrchkData`).
const MAX_INDEX_ENTRIES: usize = 0xffff;
const MAX_DATA_LEN: usize = 0x0fff_ffff;

/// The lead-in of a header as it appears in package files; the rpmdb
/// stores headers without it, but tolerate it.
const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub name: String,
    pub version: String,
    pub release: String,
    pub epoch: Option<u32>,
    pub arch: Option<String>,
    pub source_rpm: Option<String>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Parses the tags we need out of a header blob.
pub(crate) fn parse(blob: &[u8]) -> Result<Header, String> {
    let blob = blob.strip_prefix(&HEADER_MAGIC[..]).unwrap_or(blob);
    let il = be32(blob, 0).ok_or("header shorter than 8 bytes")? as usize;
    let dl = be32(blob, 4).ok_or("header shorter than 8 bytes")? as usize;
    if il == 0 || il > MAX_INDEX_ENTRIES {
        return Err(format!("header index count {il} out of range"));
    }
    if dl > MAX_DATA_LEN {
        return Err(format!("header data length {dl} out of range"));
    }
    let data_start = 8 + il * 16; // il ≤ 0xffff: cannot overflow
    let data_end = data_start + dl;
    if data_end > blob.len() {
        return Err(format!("header needs {data_end} bytes, blob has {}", blob.len()));
    }
    let index = &blob[8..data_start];
    let store = &blob[data_start..data_end];

    let (mut name, mut version, mut release, mut epoch, mut arch, mut source_rpm) =
        (None, None, None, None, None, None);
    for entry in index.chunks_exact(16) {
        let (Some(tag), Some(ty), Some(offset), Some(count)) =
            (be32(entry, 0), be32(entry, 4), be32(entry, 8), be32(entry, 12))
        else {
            continue;
        };
        let offset = offset as usize;
        let slot = match tag {
            TAG_NAME => &mut name,
            TAG_VERSION => &mut version,
            TAG_RELEASE => &mut release,
            TAG_ARCH => &mut arch,
            TAG_SOURCERPM => &mut source_rpm,
            TAG_EPOCH => {
                if ty != TYPE_INT32 || count == 0 {
                    return Err(format!("EPOCH has type {ty} count {count}, want one INT32"));
                }
                epoch = Some(be32(store, offset).ok_or("EPOCH offset outside the data store")?);
                continue;
            }
            _ => continue,
        };
        if ty != TYPE_STRING && ty != TYPE_I18NSTRING {
            return Err(format!("tag {tag} has type {ty}, want STRING"));
        }
        *slot = Some(string_at(store, offset).map_err(|e| format!("tag {tag}: {e}"))?);
    }
    let name: String = name.ok_or("missing NAME")?;
    if name.is_empty() {
        return Err("empty NAME".into());
    }
    Ok(Header {
        name,
        version: version.ok_or("missing VERSION")?,
        release: release.ok_or("missing RELEASE")?,
        epoch,
        arch: arch.filter(|a| !a.is_empty()),
        source_rpm: source_rpm.filter(|s| !s.is_empty()),
    })
}

/// A NUL-terminated UTF-8 string at `offset` in the data store.
fn string_at(store: &[u8], offset: usize) -> Result<String, String> {
    let rest = store.get(offset..).ok_or("offset outside the data store")?;
    let rest = &rest[..rest.len().min(MAX_FIELD_LEN + 1)];
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or("string not terminated (or too long)")?;
    let s = std::str::from_utf8(&rest[..end]).map_err(|_| "string is not UTF-8")?;
    Ok(s.to_owned())
}

/// `name-version-release.src.rpm` → (`name`, `version-release`).
pub(crate) fn split_source_rpm(srpm: &str) -> Option<(&str, &str)> {
    let base = srpm
        .strip_suffix(".src.rpm")
        .or_else(|| srpm.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = base.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    if name.is_empty() || version.is_empty() || release.is_empty() {
        return None;
    }
    Some((name, &base[name.len() + 1..]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a header blob from (tag, type, payload) entries.
    pub(crate) fn build(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store = Vec::new();
        for (tag, ty, payload) in entries {
            while *ty == TYPE_INT32 && store.len() % 4 != 0 {
                store.push(0);
            }
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&ty.to_be_bytes());
            index.extend_from_slice(&(store.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            store.extend_from_slice(payload);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(store.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(store);
        blob
    }

    #[test]
    fn reads_tags() {
        let blob = build(&[
            (TAG_NAME, TYPE_STRING, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, b"5.1.8\0"),
            (TAG_RELEASE, TYPE_STRING, b"9.el9\0"),
            (TAG_EPOCH, TYPE_INT32, &3u32.to_be_bytes()),
            (TAG_ARCH, TYPE_STRING, b"x86_64\0"),
            (TAG_SOURCERPM, TYPE_STRING, b"bash-5.1.8-9.el9.src.rpm\0"),
        ]);
        let h = parse(&blob).unwrap();
        assert_eq!(
            (h.name.as_str(), h.version.as_str(), h.release.as_str()),
            ("bash", "5.1.8", "9.el9")
        );
        assert_eq!(h.epoch, Some(3));
        assert_eq!(h.arch.as_deref(), Some("x86_64"));
        assert_eq!(h.source_rpm.as_deref(), Some("bash-5.1.8-9.el9.src.rpm"));
    }

    #[test]
    fn rejects_out_of_bounds_offsets_and_missing_tags() {
        let mut blob = build(&[
            (TAG_NAME, TYPE_STRING, b"x\0"),
            (TAG_VERSION, TYPE_STRING, b"1\0"),
        ]);
        assert_eq!(parse(&blob).unwrap_err(), "missing RELEASE");
        // Point VERSION's offset past the store.
        blob[8 + 16 + 8..8 + 16 + 12].copy_from_slice(&1000u32.to_be_bytes());
        assert!(parse(&blob).is_err());
        let blob = build(&[(TAG_NAME, TYPE_STRING, b"unterminated")]);
        assert!(parse(&blob).is_err());
        assert!(parse(&[0, 0, 0, 1]).is_err());
        assert!(parse(&[0xff; 64]).is_err());
    }

    #[test]
    fn splits_source_rpm() {
        assert_eq!(
            split_source_rpm("bash-5.1.8-9.el9.src.rpm"),
            Some(("bash", "5.1.8-9.el9"))
        );
        assert_eq!(
            split_source_rpm("python3-pip-21.2.3-8.el9.src.rpm"),
            Some(("python3-pip", "21.2.3-8.el9"))
        );
        assert_eq!(split_source_rpm("nodash.src.rpm"), None);
        assert_eq!(split_source_rpm("a-1-2.rpm"), None);
    }
}
