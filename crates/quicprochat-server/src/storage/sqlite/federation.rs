//! Federation state in SQLite: the domain this database's names and groups
//! belong to (`server_meta`).

use rusqlite::{params, Connection, OptionalExtension};

use super::SqlResultExt;
use crate::storage::StoreError;

pub(super) fn pin_domain(connection: &Connection, domain: &str) -> Result<Option<String>, StoreError> {
    const OPERATION: &str = "pin_domain";
    let recorded: Option<String> = connection
        .query_row("SELECT value FROM server_meta WHERE key = 'domain'", [], |row| row.get(0))
        .optional()
        .during(OPERATION)?;
    match recorded {
        Some(recorded) if recorded == domain => Ok(None),
        Some(recorded) => Ok(Some(recorded)),
        None => {
            connection
                .execute("INSERT INTO server_meta (key, value) VALUES ('domain', ?1)", params![domain])
                .during(OPERATION)?;
            Ok(None)
        }
    }
}
