//! The SQLite rpmdb (`rpmdb.sqlite`, rpm ≥ 4.16: RHEL 9, Fedora, UBI 9),
//! opened from memory: the bytes are deserialized into an in-memory
//! SQLite database, nothing touches the disk.
//!
//! rpm keeps the database in WAL mode (header bytes 18–19 = 2), which an
//! in-memory database cannot open; our private copy is switched to the
//! rollback-journal format (1). A checkpointed WAL database is then an
//! ordinary one; rows still in an uncheckpointed `-wal` file are not seen.

use std::io::Read;

use rusqlite::{Connection, OpenFlags};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Calls `each` with every header blob in the `Packages` table, in
/// `hnum` order. At most `max_rows` rows are read; more is an error.
pub(crate) fn for_each_blob(data: &[u8], max_rows: usize, mut each: impl FnMut(&[u8])) -> Result<(), String> {
    if data.len() < 100 || !data.starts_with(MAGIC) {
        return Err("not an SQLite database".into());
    }
    let mut head = [0u8; 100];
    head.copy_from_slice(&data[..100]);
    // File format read/write versions: 2 = WAL, which memdb cannot open.
    for b in &mut head[18..20] {
        if *b == 2 {
            *b = 1;
        }
    }
    let sql_err = |e: rusqlite::Error| format!("sqlite: {e}");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_in_memory_with_flags(flags).map_err(sql_err)?;
    let reader = (&head[..]).chain(&data[100..]);
    conn.deserialize_read_exact(rusqlite::MAIN_DB, reader, data.len(), true)
        .map_err(sql_err)?;
    // Never run code the database itself defines (views, triggers,
    // virtual tables): only a plain table is read.
    conn.pragma_update(None, "trusted_schema", false)
        .map_err(sql_err)?;
    // Any temporary b-tree stays in memory too: nothing is written to disk.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sql_err)?;
    let kind: Option<(String, String)> = conn
        .query_row(
            "SELECT type, sql FROM sqlite_schema WHERE name = 'Packages'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(sql_err)?;
    match kind {
        None => return Err("no Packages table".into()),
        Some((ty, sql))
            if ty != "table" || !sql.trim_start().to_ascii_uppercase().starts_with("CREATE TABLE") =>
        {
            return Err(format!("Packages is a {ty}, not a plain table"));
        }
        Some(_) => {}
    }
    let mut stmt = conn
        .prepare("SELECT blob FROM Packages ORDER BY hnum")
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut n = 0usize;
    while let Some(row) = rows.next().map_err(sql_err)? {
        n += 1;
        if n > max_rows {
            return Err(format!("more than {max_rows} rows in Packages"));
        }
        match row.get_ref(0).map_err(sql_err)?.as_blob() {
            Ok(blob) => each(blob),
            // A non-blob cell is one bad record: hand on nothing parseable.
            Err(_) => each(&[]),
        }
    }
    Ok(())
}
