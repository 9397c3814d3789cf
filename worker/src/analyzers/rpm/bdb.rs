//! The BerkeleyDB rpmdb (`/var/lib/rpm/Packages`, RHEL 7/8, CentOS,
//! Amazon Linux 2): a read-only walk of a Berkeley DB *hash* database.
//!
//! Written by hand: no maintained Rust crate reads Berkeley DB files, and
//! only a small part of the format is needed. Page 0 is the hash metadata
//! page (magic 0x061561, page size, last page number). Every page of type
//! HASH holds key/data item pairs; rpm's data items are header blobs, kept
//! on the page (`H_KEYDATA`) or, when large, in a chain of OVERFLOW pages
//! (`H_OFFPAGE`: first page number and total length). Pages are read by
//! number, every offset and length is checked against the page and the
//! file, overflow chains are bounded by the page count (so a cycle ends),
//! and the total length is bounded by the file size.
//!
//! Supported: hash databases in either byte order, unencrypted, page sizes
//! 512–65536. Not supported (an error): btree databases, encryption.

const HASH_MAGIC: u32 = 0x0006_1561;
const PAGE_HASHMETA: u8 = 8;
const PAGE_HASH_UNSORTED: u8 = 2;
const PAGE_HASH: u8 = 13;
const PAGE_OVERFLOW: u8 = 7;

const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;

/// Size of a page header (`lsn, pgno, prev, next, entries, hf_offset,
/// level, type`); the item index follows it.
const PAGE_HEADER: usize = 26;

/// rpm stores a bookkeeping record under key 0; real headers have keys ≥ 1.
const KEY_ZERO: [u8; 4] = [0; 4];

struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
    pages: usize,
    big_endian: bool,
}

impl<'a> Db<'a> {
    fn u32_at(&self, b: &[u8], at: usize) -> Option<u32> {
        let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    fn u16_at(&self, b: &[u8], at: usize) -> Option<u16> {
        let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        })
    }

    fn page(&self, pgno: usize) -> Option<&'a [u8]> {
        if pgno >= self.pages {
            return None;
        }
        let start = pgno.checked_mul(self.page_size)?;
        self.data.get(start..start.checked_add(self.page_size)?)
    }

    /// The bytes of item `i` on a hash page: from its offset to the start
    /// of the previous item (items grow down from the page end).
    fn item(&self, page: &'a [u8], entries: usize, i: usize) -> Option<&'a [u8]> {
        let offset = self.u16_at(page, PAGE_HEADER + 2 * i)? as usize;
        let end = if i == 0 {
            self.page_size
        } else {
            self.u16_at(page, PAGE_HEADER + 2 * (i - 1))? as usize
        };
        let index_end = PAGE_HEADER + 2 * entries;
        if offset < index_end || offset >= end || end > page.len() {
            return None;
        }
        Some(&page[offset..end])
    }

    /// Concatenates an overflow chain starting at `pgno`, `total` bytes.
    /// `budget` is what all overflow reads of one database may still copy,
    /// so items that share one long chain cannot make the work quadratic.
    fn overflow(&self, mut pgno: usize, total: usize, budget: &mut usize) -> Result<Vec<u8>, String> {
        if total > self.data.len() {
            return Err(format!("overflow length {total} larger than the file"));
        }
        if total > *budget {
            return Err("overflow items add up to more than twice the file size".into());
        }
        *budget -= total;
        let mut out = Vec::with_capacity(total);
        for _ in 0..self.pages {
            let page = self
                .page(pgno)
                .ok_or_else(|| format!("overflow page {pgno} outside the file"))?;
            if page[25] != PAGE_OVERFLOW {
                return Err(format!("page {pgno} is type {}, not overflow", page[25]));
            }
            let len = self.u16_at(page, 22).ok_or("short page")? as usize;
            let chunk = page
                .get(PAGE_HEADER..PAGE_HEADER + len)
                .ok_or_else(|| format!("overflow page {pgno} length {len} too large"))?;
            if chunk.is_empty() {
                // Every page must add bytes, so the work stays within the budget.
                return Err(format!("overflow page {pgno} is empty"));
            }
            let take = chunk.len().min(total - out.len());
            out.extend_from_slice(&chunk[..take]);
            if out.len() == total {
                return Ok(out);
            }
            let next = self.u32_at(page, 16).ok_or("short page")? as usize;
            if next == 0 {
                return Err(format!(
                    "overflow chain ended after {} of {total} bytes",
                    out.len()
                ));
            }
            pgno = next;
        }
        Err("overflow chain longer than the file (a cycle)".into())
    }
}

/// Calls `each` with every value (rpm header blob) in the hash database,
/// in page order. A damaged record yields a warning through `warn`; a file
/// that is not a readable hash database is an error.
pub(crate) fn for_each_blob(
    data: &[u8],
    max_records: usize,
    mut each: impl FnMut(&[u8]),
    mut warn: impl FnMut(String),
) -> Result<(), String> {
    if data.len() < 512 {
        return Err("not a Berkeley DB file (shorter than one page)".into());
    }
    let le = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
    let big_endian = match le {
        HASH_MAGIC => false,
        m if m.swap_bytes() == HASH_MAGIC => true,
        0x0005_3162 | 0x6231_0500 => return Err("Berkeley DB btree databases are not supported".into()),
        _ => return Err("not a Berkeley DB hash database (bad magic)".into()),
    };
    let mut db = Db {
        data,
        page_size: 0,
        pages: 0,
        big_endian,
    };
    let page_size = db.u32_at(data, 20).ok_or("short metadata page")? as usize;
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(format!("bad page size {page_size}"));
    }
    if data[24] != 0 {
        return Err("encrypted Berkeley DB is not supported".into());
    }
    if data[25] != PAGE_HASHMETA {
        return Err(format!("page 0 is type {}, not hash metadata", data[25]));
    }
    let last_pgno = db.u32_at(data, 32).ok_or("short metadata page")? as usize;
    db.page_size = page_size;
    db.pages = (data.len() / page_size).min(last_pgno.saturating_add(1));

    let mut records = 0usize;
    let mut budget = data.len().saturating_mul(2);
    for pgno in 1..db.pages {
        let Some(page) = db.page(pgno) else { break };
        if page[25] != PAGE_HASH && page[25] != PAGE_HASH_UNSORTED {
            continue;
        }
        let entries = db.u16_at(page, 20).unwrap_or(0) as usize;
        if PAGE_HEADER + 2 * entries > page_size {
            warn(format!("page {pgno}: {entries} entries do not fit"));
            continue;
        }
        // Items alternate key, data.
        for pair in 0..entries / 2 {
            let (Some(key), Some(value)) = (
                db.item(page, entries, 2 * pair),
                db.item(page, entries, 2 * pair + 1),
            ) else {
                warn(format!("page {pgno}: item {} out of bounds", 2 * pair));
                continue;
            };
            if key.first() == Some(&H_KEYDATA) && key[1..] == KEY_ZERO {
                continue;
            }
            records += 1;
            if records > max_records {
                return Err(format!("more than {max_records} records"));
            }
            match value[0] {
                H_KEYDATA => each(&value[1..]),
                H_OFFPAGE => {
                    // HOFFPAGE: type, 3 unused bytes, pgno, total length.
                    let (Some(first), Some(total)) = (db.u32_at(value, 4), db.u32_at(value, 8)) else {
                        warn(format!("page {pgno}: short off-page item"));
                        continue;
                    };
                    match db.overflow(first as usize, total as usize, &mut budget) {
                        Ok(blob) => each(&blob),
                        Err(e) => warn(format!("page {pgno}: {e}")),
                    }
                }
                t => warn(format!("page {pgno}: unsupported item type {t}")),
            }
        }
    }
    Ok(())
}
