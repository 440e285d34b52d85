//! The move of a profile's earlier layout, its MLS state in a database file
//! of its own (`mls.db`), into the state database: the rows copied in one
//! transaction, the old file then replaced by a tombstone older versions
//! refuse to open.

use std::io::{Read, Write};
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::Connection;

use super::provider::run_migrations;
use super::state_db::{Savepoint, StateDb};

/// What replaces an earlier layout's MLS database once its rows moved: not
/// an SQLite file, so a `qpc` of that layout fails at open instead of
/// starting with no MLS state.
const TOMBSTONE: &[u8] = b"quicprochat: this profile's MLS state moved into client.db; \
this file is kept so that an older qpc refuses the profile instead of starting without it.\n";

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Copies every row of OpenMLS's tables in the database at `legacy` into
/// `db` in one transaction, then replaces `legacy` by [`TOMBSTONE`]. The
/// legacy file is held exclusively from the copy to the replacement: an
/// older `qpc` still running on the profile keeps it open, and the move is
/// refused then (both would otherwise use one ratchet from two copies). A
/// crash before the replacement copies the rows again at the next open,
/// replacing what the first copy wrote.
pub(super) fn merge_legacy(db: &StateDb, legacy: &Path) -> Result<(), String> {
    let mut head = Vec::with_capacity(TOMBSTONE.len() + 1);
    match std::fs::File::open(legacy) {
        Ok(file) => {
            file.take(TOMBSTONE.len() as u64 + 1).read_to_end(&mut head).map_err(|err| err.to_string())?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.to_string()),
    }
    if head.is_empty() {
        return replace_by_tombstone(legacy);
    }
    if head == TOMBSTONE {
        return Ok(());
    }
    if !head.starts_with(SQLITE_HEADER) {
        return Err("neither an MLS database nor the mark of one moved into client.db; left as it is".to_owned());
    }
    // Its schema as ours, should it come from an older storage version.
    run_migrations(legacy)?;
    let in_use = || "the profile is open in an older qpc (mls.db is in use): close it, then open the profile again";
    let exclusive = Connection::open(legacy).map_err(|err| err.to_string())?;
    // Leaving WAL needs every other connection to the file closed.
    let mode: String =
        exclusive.query_row("PRAGMA journal_mode=DELETE", [], |row| row.get(0)).map_err(|_| in_use().to_owned())?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(in_use().to_owned());
    }
    exclusive
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .and_then(|()| exclusive.execute_batch("BEGIN EXCLUSIVE"))
        .map_err(|_| in_use().to_owned())?;
    copy_legacy_rows(&exclusive, &db.lock()).map_err(|err| err.to_string())?;
    replace_by_tombstone(legacy)?;
    drop(exclusive);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = legacy.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.to_string()),
            _ => {}
        }
    }
    Ok(())
}

/// Every row of `legacy`'s OpenMLS tables into the same tables of `main`
/// (emptied first), in one transaction of `main`.
fn copy_legacy_rows(legacy: &Connection, main: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = {
        let mut statement = legacy.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             AND name <> 'openmls_sqlite_storage_migrations' ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| row.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let transaction = Savepoint::begin(main)?;
    for table in &tables {
        let quoted = table.replace('"', "\"\"");
        let mut select = legacy.prepare(&format!("SELECT * FROM \"{quoted}\""))?;
        let columns = select.column_count();
        let placeholders = vec!["?"; columns].join(", ");
        transaction.execute(&format!("DELETE FROM main.\"{quoted}\""), [])?;
        let mut insert = transaction.prepare(&format!("INSERT INTO main.\"{quoted}\" VALUES ({placeholders})"))?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let values = (0..columns).map(|index| row.get::<_, Value>(index)).collect::<rusqlite::Result<Vec<_>>>()?;
            insert.execute(rusqlite::params_from_iter(values))?;
        }
    }
    transaction.commit()
}

/// Replaces `path` by [`TOMBSTONE`] durably: a temporary file, fsynced,
/// renamed over it, and the directory fsynced.
fn replace_by_tombstone(path: &Path) -> Result<(), String> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".moving");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(|err| err.to_string())?;
    file.write_all(TOMBSTONE).and_then(|()| file.sync_all()).map_err(|err| err.to_string())?;
    std::fs::rename(&temporary, path).map_err(|err| err.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|err| err.to_string())?;
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::provider::ClientProvider;
    use crate::client::state_db::open_connection;

    fn group_rows(connection: &Connection) -> Vec<(Vec<u8>, String, Vec<u8>)> {
        let mut statement = connection
            .prepare("SELECT group_id, data_type, group_data FROM openmls_group_data ORDER BY data_type")
            .expect("select");
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).expect("rows");
        rows.collect::<rusqlite::Result<_>>().expect("read")
    }

    /// A profile of the earlier layout: its MLS rows move into the state
    /// database once, and the old file becomes a tombstone that SQLite (and
    /// so an older qpc) refuses.
    #[test]
    fn an_earlier_mls_database_moves_in_once_and_leaves_a_tombstone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join("mls.db");
        run_migrations(&legacy).expect("the earlier layout's tables");
        Connection::open(&legacy)
            .expect("open")
            .execute(
                "INSERT INTO openmls_group_data (provider_version, group_id, data_type, group_data) VALUES (1, ?1, 'tree', ?2)",
                rusqlite::params![b"g1".to_vec(), b"{\"tree\":1}".to_vec()],
            )
            .expect("a row of MLS state");
        let path = dir.path().join("client.db");
        let provider = ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).expect("moved");
        let expected = vec![(b"g1".to_vec(), "tree".to_owned(), b"{\"tree\":1}".to_vec())];
        assert_eq!(group_rows(&provider.db().lock()), expected);
        assert_eq!(std::fs::read(&legacy).expect("tombstone"), TOMBSTONE);
        assert!(
            Connection::open(&legacy).and_then(|c| c.query_row("PRAGMA user_version", [], |_| Ok(()))).is_err(),
            "an older qpc cannot open the moved database"
        );
        drop(provider);
        // A second open finds the tombstone and moves nothing again.
        let provider = ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).expect("again");
        assert_eq!(group_rows(&provider.db().lock()), expected);
    }

    /// An older qpc still running on the profile holds its `mls.db` open:
    /// the move is refused (with the reason) rather than done under it, and
    /// done once it is closed.
    #[test]
    fn an_earlier_mls_database_in_use_is_not_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join("mls.db");
        run_migrations(&legacy).expect("the earlier layout's tables");
        let older_qpc = open_connection(&legacy).expect("an older qpc's connection");
        let _: i64 =
            older_qpc.query_row("SELECT count(*) FROM openmls_group_data", [], |row| row.get(0)).expect("read");
        let path = dir.path().join("client.db");
        let refused = ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).err().expect("refused");
        assert!(refused.to_string().contains("older qpc"), "{refused}");
        assert!(std::fs::read(&legacy).expect("mls.db").starts_with(SQLITE_HEADER), "left as it was");
        drop(older_qpc);
        ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).expect("moved once it is closed");
        assert_eq!(std::fs::read(&legacy).expect("tombstone"), TOMBSTONE);
    }

    #[test]
    fn a_foreign_file_in_place_of_mls_db_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join("mls.db");
        std::fs::write(&legacy, b"not ours").expect("write");
        let path = dir.path().join("client.db");
        assert!(ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).is_err());
        assert_eq!(std::fs::read(&legacy).expect("kept"), b"not ours");
    }
}
