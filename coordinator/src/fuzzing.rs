//! Thin entry points for the fuzz targets in `fuzz/` (cargo-fuzz), so the
//! parsers can stay private. Not an API: nothing in the product calls these.

use crate::vulndb::{Db, ImportSummary, normalize};

/// One OSV record through normalisation, alias merging and the database's
/// canonical form, as an import reads it.
pub fn osv_record(bytes: &[u8]) -> bool {
    let mut summary = ImportSummary::default();
    let Some(record) = normalize::record(bytes, "fuzz", &mut summary) else {
        return false;
    };
    let advisories = normalize::merge([&record]);
    let db = Db::from_advisories(advisories, vec!["fuzz".into()]);
    !db.advisories().is_empty()
}
